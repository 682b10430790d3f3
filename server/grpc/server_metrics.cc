#include "server/grpc/server_metrics.h"

namespace blip2::server {
namespace {

const std::vector<double> kLatencyBounds = ExponentialBounds(0.001, 2, 16);  // 1 ms .. 33 s
const std::vector<double> kTokenBounds = ExponentialBounds(0.0005, 2, 14);   // 0.5 ms .. 4 s

}  // namespace

ServerMetrics::ServerMetrics(const engine::Engine* engine)
    : requests(registry.Counter("blip2_requests_total", "Calls by method (gRPC) or route (HTTP, \"POST /v1/chat/completions\") and final status code.",
                                {"rpc", "code"})),
      time_to_first_token(registry.AddHistogram("blip2_time_to_first_token_seconds",
                                                "From receiving a call to its first generated token.", {},
                                                kLatencyBounds)),
      inter_token_latency(registry.AddHistogram("blip2_inter_token_latency_seconds",
                                                "Between consecutive generated tokens of one request.", {},
                                                kTokenBounds)),
      request_duration(registry.AddHistogram("blip2_request_duration_seconds",
                                             "End-to-end latency of gRPC calls, by method.", {"rpc"},
                                             kLatencyBounds)),
      queue_time(registry.AddHistogram("blip2_queue_time_seconds",
                                       "From receiving a request until its generation starts.", {},
                                       kLatencyBounds)),
      calls_in_flight(registry.Gauge("blip2_calls_in_flight", "Model calls admitted and not yet finished.")),
      admission_queue(registry.Gauge("blip2_admission_queue_requests",
                                     "Requests admitted that have not produced a token yet.")),
      requests_shed(registry.Counter("blip2_requests_shed_total",
                                     "Queued requests pushed out (RESOURCE_EXHAUSTED) by more urgent ones.")),
      admission_drain_rate(registry.Gauge("blip2_admission_drain_rate",
                                          "Requests per second starting while others wait (0 until measured).")) {
  ScalarFamily& running = registry.Gauge("blip2_requests_running", "Requests generating in the engine.");
  ScalarFamily& waiting = registry.Gauge("blip2_requests_waiting", "Requests waiting in the engine (image or KV).");
  ScalarFamily& kv_used = registry.Gauge("blip2_kv_cache_blocks_used", "KV cache blocks held by requests.");
  ScalarFamily& kv_total = registry.Gauge("blip2_kv_cache_blocks_capacity", "KV cache blocks in all.");
  Histogram& vision_batch = registry.AddHistogram("blip2_vision_batch_size", "Images per vision-encoder forward.",
                                                  {}, {1, 2, 4, 8, 16, 32, 64, 128});
  ScalarFamily& hits = registry.Counter("blip2_image_cache_hits_total", "Requests whose image was already encoded.");
  ScalarFamily& misses = registry.Counter("blip2_image_cache_misses_total", "Images run through the vision encoder.");
  ScalarFamily& cache_bytes = registry.Gauge("blip2_image_cache_bytes", "Bytes of cached image embeddings.");
  ScalarFamily& pins = registry.Gauge("blip2_image_cache_pins",
                                      "Image-cache pins held by requests in flight and registrations.");
  ScalarFamily& registered = registry.Gauge("blip2_registered_images", "Images held by RegisterImage.");
  ScalarFamily& registrations = registry.Gauge("blip2_image_registrations",
                                               "RegisterImage leases held (an image registered twice holds two).");
  ScalarFamily& expired = registry.Counter("blip2_image_registrations_expired_total",
                                           "RegisterImage leases that lapsed without a release.");
  ScalarFamily& tokens = registry.Counter("blip2_generated_tokens_total", "Tokens generated.");
  ScalarFamily& images = registry.Counter("blip2_images_processed_total",
                                          "Images through the vision stage (encoded or from cache).");
  ScalarFamily& preemptions = registry.Counter("blip2_preemptions_total",
                                               "Requests preempted to free KV blocks (recomputed later).");
  ScalarFamily& kv_cached = registry.Gauge("blip2_kv_cache_blocks_cached",
                                           "KV blocks kept for the prefix cache (held by no request).");
  ScalarFamily& prefix = registry.Counter("blip2_prefix_cache_blocks_total",
                                          "Prompt KV blocks at admission, by outcome (hit: reused; miss: computed).",
                                          {"outcome"});
  ScalarFamily& prefix_evictions = registry.Counter("blip2_prefix_cache_evictions_total",
                                                    "Cached KV blocks given to new content.");
  ScalarFamily& copies = registry.Counter("blip2_kv_block_copies_total",
                                          "Copy-on-write copies of shared KV blocks (beams and samples diverging).");
  registry.OnCollect([=, &running, &waiting, &kv_used, &kv_total, &vision_batch, &hits, &misses, &cache_bytes, &pins,
                      &registered, &registrations, &expired, &tokens, &images, &preemptions, &kv_cached, &prefix, &prefix_evictions, &copies] {
    const engine::EngineStats s = engine->Stats();
    running.Set({}, static_cast<double>(s.running));
    waiting.Set({}, static_cast<double>(s.waiting));
    kv_used.Set({}, static_cast<double>(s.kv_blocks_used));
    kv_total.Set({}, static_cast<double>(s.kv_blocks_total));
    std::map<double, int64_t> sizes;
    for (const auto& [size, n] : s.vision_batch_sizes) sizes[static_cast<double>(size)] = n;
    vision_batch.SetFromCounts({}, sizes);
    hits.Set({}, static_cast<double>(s.image_cache_hits));
    misses.Set({}, static_cast<double>(s.images_encoded));
    cache_bytes.Set({}, static_cast<double>(s.image_cache_bytes));
    pins.Set({}, static_cast<double>(s.image_cache_pins));
    registered.Set({}, static_cast<double>(s.registered_images));
    registrations.Set({}, static_cast<double>(s.image_registrations));
    expired.Set({}, static_cast<double>(s.image_registrations_expired));
    tokens.Set({}, static_cast<double>(s.generated_tokens));
    images.Set({}, static_cast<double>(s.images_encoded + s.image_cache_hits));
    preemptions.Set({}, static_cast<double>(s.preemptions));
    kv_cached.Set({}, static_cast<double>(s.kv_blocks_cached));
    prefix.Set({"hit"}, static_cast<double>(s.prefix_cache_hits));
    prefix.Set({"miss"}, static_cast<double>(s.prefix_cache_misses));
    prefix_evictions.Set({}, static_cast<double>(s.prefix_cache_evictions));
    copies.Set({}, static_cast<double>(s.block_copies));
  });
}

}  // namespace blip2::server
