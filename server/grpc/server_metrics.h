// The metrics the server exports on /metrics, by name. Request metrics are
// recorded as calls happen; engine gauges and counters are copied from
// Engine::Stats at every scrape.
#pragma once

#include <string>

#include "engine/runtime/engine.h"
#include "server/grpc/metrics.h"

namespace blip2::server {

struct ServerMetrics {
  explicit ServerMetrics(const engine::Engine* engine);

  MetricsRegistry registry;
  // Calls, by RPC method and final gRPC status code name.
  ScalarFamily& requests;
  Histogram& time_to_first_token;  // seconds, from receiving the call
  Histogram& inter_token_latency;  // seconds between tokens of one request
  Histogram& request_duration;     // seconds, by RPC
  Histogram& queue_time;           // seconds, receiving the call -> generation starts
  ScalarFamily& calls_in_flight;   // model calls admitted and not finished
  ScalarFamily& admission_queue;   // engine requests admitted and not yet generating
  ScalarFamily& requests_shed;     // queued requests pushed out by more urgent ones
  ScalarFamily& admission_drain_rate;  // requests/s the queue drains at (0: not measured yet)
};

}  // namespace blip2::server
