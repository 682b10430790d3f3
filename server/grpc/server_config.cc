#include "server/grpc/server_config.h"

#include <google/protobuf/text_format.h>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "common/file_util.h"
#include "common/status_macros.h"

namespace blip2::server {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::TextFormat;

// Fields the text sets replace the defaults (even with 0 or false); others stay.
absl::Status ParseText(const std::string& text, const std::string& source, config::ServerConfig* cfg) {
  config::ServerConfig merged = *cfg;
  if (!TextFormat::MergeFromString(text, &merged)) {
    return absl::InvalidArgumentError(source + ": not a valid blip2.config.ServerConfig in text format");
  }
  *cfg = std::move(merged);
  return absl::OkStatus();
}

// `--a.b value` as the text-format fragment "a { b: value }".
absl::StatusOr<std::string> OverrideText(const std::string& path, const std::string& value) {
  const Descriptor* message = config::ServerConfig::descriptor();
  std::vector<std::string> parts = absl::StrSplit(path, '.');
  std::string open, close;
  for (size_t i = 0; i < parts.size(); ++i) {
    const FieldDescriptor* field = message ? message->FindFieldByName(parts[i]) : nullptr;
    if (field == nullptr) return absl::InvalidArgumentError(absl::StrCat("--", path, ": no such configuration field"));
    const bool last = i + 1 == parts.size();
    if (field->type() == FieldDescriptor::TYPE_MESSAGE) {
      if (last) return absl::InvalidArgumentError(absl::StrCat("--", path, " is a group of fields; name one of them"));
      open += parts[i] + " { ";
      close += " }";
      message = field->message_type();
      continue;
    }
    if (!last) return absl::InvalidArgumentError(absl::StrCat("--", path, ": ", parts[i], " has no fields"));
    const std::string literal =
        field->type() == FieldDescriptor::TYPE_STRING ? "\"" + absl::CEscape(value) + "\"" : value;
    return open + parts[i] + ": " + literal + close;
  }
  return absl::InvalidArgumentError("empty flag name");
}

absl::Status Positive(int64_t value, const char* name) {
  if (value <= 0) return absl::InvalidArgumentError(absl::StrCat(name, " must be positive, got ", value));
  return absl::OkStatus();
}

}  // namespace

config::ServerConfig DefaultServerConfig() {
  config::ServerConfig c;
  c.set_device("cpu");
  c.set_dtype("float32");
  c.set_max_image_pixels(50'000'000);
  c.set_host("0.0.0.0");
  c.set_port(50051);
  c.set_metrics_port(9090);
  c.set_http_port(-1);
  c.set_http_threads(2);
  c.set_log_level("info");
  c.set_drain_grace_seconds(30);
  c.set_preprocess_threads(2);
  c.set_warmup(true);
  const engine::EngineConfig e;
  c.mutable_batching()->set_max_num_seqs(e.max_num_seqs);
  c.mutable_batching()->set_max_batched_tokens(e.max_batched_tokens);
  c.mutable_batching()->set_vision_max_batch(e.vision_max_batch);
  c.mutable_batching()->set_vision_max_queue_delay_us(e.vision_max_queue_delay.count());
  c.mutable_kv_cache()->set_block_size(e.kv_block_size);
  c.mutable_kv_cache()->set_cache_mb(e.kv_cache_bytes >> 20);
  c.mutable_kv_cache()->set_blocks(0);
  c.mutable_kv_cache()->set_prefix_caching(e.prefix_caching);
  c.set_image_cache_mb(e.image_cache_bytes >> 20);
  config::Limits* l = c.mutable_limits();
  l->set_max_message_bytes(32 << 20);
  l->set_max_prompt_tokens(e.max_prompt_tokens);
  l->set_max_new_tokens(e.limits.max_new_tokens);
  l->set_max_num_beams(e.limits.max_num_beams);
  l->set_max_stop_strings(e.limits.max_stop_strings);
  l->set_max_concurrent_streams(1024);
  l->set_max_queued_requests(512);
  l->set_max_batch_items(256);
  l->set_max_registered_images(e.max_registered_images);
  l->set_registration_ttl_seconds(e.registration_ttl.count());
  l->set_max_registration_ttl_seconds(e.max_registration_ttl.count());
  l->set_max_texts(e.max_texts);
  l->set_max_text_tokens(e.max_text_tokens);
  c.mutable_security()->set_tls_refresh_seconds(60);
  c.mutable_image_urls()->set_timeout_ms(5000);
  c.mutable_image_urls()->set_max_bytes(20 << 20);
  return c;
}

absl::StatusOr<config::ServerConfig> ServerConfigFromArgs(const std::vector<std::string>& args,
                                                          const std::vector<std::string>& own_flags,
                                                          std::map<std::string, std::string>* own) {
  // Pairs (name, value), in order.
  std::vector<std::pair<std::string, std::string>> flags;
  for (size_t i = 0; i < args.size(); ++i) {
    if (!absl::StartsWith(args[i], "--") || args[i].size() == 2) {
      return absl::InvalidArgumentError("unexpected argument \"" + args[i] + "\"");
    }
    std::string name = args[i].substr(2), value;
    if (const size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name.resize(eq);
    } else if (i + 1 < args.size()) {
      value = args[++i];
    } else {
      return absl::InvalidArgumentError("--" + name + " needs a value");
    }
    name = absl::StrReplaceAll(name, {{"-", "_"}});
    if (name == "model") name = "model_dir";
    flags.emplace_back(name, value);
  }
  config::ServerConfig cfg = DefaultServerConfig();
  for (const auto& [name, value] : flags) {
    if (name != "config") continue;
    ASSIGN_OR_RETURN(const std::string text, common::ReadFile(value));
    RETURN_IF_ERROR(ParseText(text, value, &cfg));
  }
  for (const auto& [name, value] : flags) {
    if (name == "config") continue;
    if (std::find(own_flags.begin(), own_flags.end(), name) != own_flags.end()) {
      (*own)[name] = value;
      continue;
    }
    ASSIGN_OR_RETURN(const std::string text, OverrideText(name, value));
    if (!ParseText(text, "", &cfg).ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--", name, ": \"", value, "\" is not a valid value"));
    }
  }
  return cfg;
}

absl::Status ValidateServerConfig(const config::ServerConfig& c) {
  if (c.model_dir().empty()) return absl::InvalidArgumentError("model_dir is required (--model DIR or in --config)");
  RETURN_IF_ERROR(Positive(c.max_image_pixels(), "max_image_pixels"));
  if (c.port() < 0 || c.port() > 65535) return absl::InvalidArgumentError(absl::StrCat("port out of range: ", c.port()));
  if (c.metrics_port() < -1 || c.metrics_port() > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("metrics_port out of range: ", c.metrics_port()));
  }
  if (c.http_port() < -1 || c.http_port() > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("http_port out of range: ", c.http_port()));
  }
  RETURN_IF_ERROR(Positive(c.http_threads(), "http_threads"));
  if (c.drain_grace_seconds() < 0) return absl::InvalidArgumentError("drain_grace_seconds must not be negative");
  RETURN_IF_ERROR(Positive(c.preprocess_threads(), "preprocess_threads"));
  if (c.intra_op_threads() < 0) return absl::InvalidArgumentError("intra_op_threads must not be negative");
  if (!c.quantization().empty() && c.quantization() != "none" && c.quantization() != "int8") {
    return absl::InvalidArgumentError(absl::StrCat("quantization must be \"none\" or \"int8\", got \"",
                                                   c.quantization(), "\""));
  }
  RETURN_IF_ERROR(Positive(c.batching().max_num_seqs(), "batching.max_num_seqs"));
  RETURN_IF_ERROR(Positive(c.batching().max_batched_tokens(), "batching.max_batched_tokens"));
  RETURN_IF_ERROR(Positive(c.batching().vision_max_batch(), "batching.vision_max_batch"));
  if (c.batching().vision_max_queue_delay_us() < 0) {
    return absl::InvalidArgumentError("batching.vision_max_queue_delay_us must not be negative");
  }
  RETURN_IF_ERROR(Positive(c.kv_cache().block_size(), "kv_cache.block_size"));
  if (c.kv_cache().blocks() == 0) RETURN_IF_ERROR(Positive(c.kv_cache().cache_mb(), "kv_cache.cache_mb"));
  if (c.kv_cache().blocks() < 0) return absl::InvalidArgumentError("kv_cache.blocks must not be negative");
  if (c.image_cache_mb() < 0) return absl::InvalidArgumentError("image_cache_mb must not be negative");
  const config::Limits& l = c.limits();
  RETURN_IF_ERROR(Positive(l.max_message_bytes(), "limits.max_message_bytes"));
  if (l.max_message_bytes() > INT32_MAX) return absl::InvalidArgumentError("limits.max_message_bytes must be below 2 GiB");
  RETURN_IF_ERROR(Positive(l.max_prompt_tokens(), "limits.max_prompt_tokens"));
  RETURN_IF_ERROR(Positive(l.max_new_tokens(), "limits.max_new_tokens"));
  RETURN_IF_ERROR(Positive(l.max_num_beams(), "limits.max_num_beams"));
  if (l.max_stop_strings() < 0) return absl::InvalidArgumentError("limits.max_stop_strings must not be negative");
  RETURN_IF_ERROR(Positive(l.max_concurrent_streams(), "limits.max_concurrent_streams"));
  RETURN_IF_ERROR(Positive(l.max_queued_requests(), "limits.max_queued_requests"));
  if (l.max_queue_wait_ms() < 0) return absl::InvalidArgumentError("limits.max_queue_wait_ms must not be negative");
  RETURN_IF_ERROR(Positive(l.max_batch_items(), "limits.max_batch_items"));
  RETURN_IF_ERROR(Positive(l.max_registered_images(), "limits.max_registered_images"));
  RETURN_IF_ERROR(Positive(l.max_registration_ttl_seconds(), "limits.max_registration_ttl_seconds"));
  if (l.registration_ttl_seconds() < 1 || l.registration_ttl_seconds() > l.max_registration_ttl_seconds()) {
    return absl::InvalidArgumentError(absl::StrCat("limits.registration_ttl_seconds must be in [1, ",
                                                   l.max_registration_ttl_seconds(), "], got ",
                                                   l.registration_ttl_seconds()));
  }
  RETURN_IF_ERROR(Positive(l.max_texts(), "limits.max_texts"));
  RETURN_IF_ERROR(Positive(c.image_urls().timeout_ms(), "image_urls.timeout_ms"));
  RETURN_IF_ERROR(Positive(c.image_urls().max_bytes(), "image_urls.max_bytes"));
  for (const std::string& domain : c.image_urls().allowed_domains()) {
    const std::string host = absl::StartsWith(domain, "*.") ? domain.substr(2) : domain;
    if (host.empty() || host.find_first_of("*/:@ ") != std::string::npos) {
      return absl::InvalidArgumentError("image_urls.allowed_domains: \"" + domain +
                                        "\" is not a host name or \"*.\" followed by one");
    }
  }
  if (l.max_text_tokens() != 0 && l.max_text_tokens() < 3) {
    return absl::InvalidArgumentError("limits.max_text_tokens must be 0 (the model's) or at least 3");
  }
  return absl::OkStatus();
}

engine::EngineOptions ToEngineOptions(const config::ServerConfig& c) { return {c.model_dir(), c.device(), c.dtype(), c.quantization()}; }

engine::EngineConfig ToEngineConfig(const config::ServerConfig& c) {
  engine::EngineConfig e;
  e.intra_op_threads = c.intra_op_threads();
  e.kv_block_size = c.kv_cache().block_size();
  e.kv_blocks = c.kv_cache().blocks();
  e.kv_cache_bytes = c.kv_cache().cache_mb() << 20;
  e.prefix_caching = c.kv_cache().prefix_caching();
  e.max_num_seqs = c.batching().max_num_seqs();
  e.max_batched_tokens = c.batching().max_batched_tokens();
  e.vision_max_batch = c.batching().vision_max_batch();
  e.vision_max_queue_delay = std::chrono::microseconds(c.batching().vision_max_queue_delay_us());
  e.image_cache_bytes = c.image_cache_mb() << 20;
  // Admission control lives in the server (max_queued_requests); the inbox
  // only needs room for everything the server admits.
  e.inbox_capacity = c.limits().max_concurrent_streams() * std::max<int64_t>(1, c.limits().max_batch_items());
  e.max_prompt_tokens = c.limits().max_prompt_tokens();
  e.max_registered_images = c.limits().max_registered_images();
  e.registration_ttl = std::chrono::seconds(c.limits().registration_ttl_seconds());
  e.max_registration_ttl = std::chrono::seconds(c.limits().max_registration_ttl_seconds());
  e.max_texts = c.limits().max_texts();
  e.max_text_tokens = c.limits().max_text_tokens();
  e.limits.max_new_tokens = c.limits().max_new_tokens();
  e.limits.max_num_beams = c.limits().max_num_beams();
  e.limits.max_stop_strings = c.limits().max_stop_strings();
  return e;
}

}  // namespace blip2::server
