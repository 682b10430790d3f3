// The gRPC server end to end: a real server on 127.0.0.1, real clients.
#include <atomic>
#include <cstring>
#include <thread>

#include "engine/model/safetensors.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "tests/catch.h"
#include "tests/server/server_fixture.h"
#include "tests/test_support.h"

namespace blip2::testing {
namespace {

using grpc::StatusCode;

struct StreamResult {
  grpc::Status status;
  std::vector<v1::GenerateResponse> messages;
  std::string request_id;
};

StreamResult ReadStream(v1::Blip2::Stub& stub, const v1::GenerateRequest& request,
                        std::function<void(grpc::ClientContext&)> setup = nullptr) {
  grpc::ClientContext ctx;
  if (setup) setup(ctx);
  StreamResult out;
  auto reader = stub.Generate(&ctx, request);
  v1::GenerateResponse message;
  while (reader->Read(&message)) out.messages.push_back(message);
  out.status = reader->Finish();
  auto id = ctx.GetServerInitialMetadata().find("x-request-id");
  if (id != ctx.GetServerInitialMetadata().end()) out.request_id = std::string(id->second.data(), id->second.size());
  return out;
}

std::string Series(const std::string& rpc, const std::string& code) {
  return "blip2_requests_total{rpc=\"" + rpc + "\",code=\"" + code + "\"}";
}

// The model-independent tests run on both language models: the tiny OPT and
// the tiny Flan-T5 (Catch2 runs the test case once per generated value).
#define SERVED_MODEL() GENERATE(as<std::string>{}, "opt", "t5")

// The fixture folder for a served model; `long_context`: one that can
// generate ~1000 tokens (OPT's positions stretched; T5 has no position limit).
std::string ModelDir(const std::string& kind, bool long_context = false) {
  if (kind == "t5") return FixturesDir() + "/blip2-tiny-flan-t5";
  return long_context ? LongContextModelDir() : FixturesDir() + "/blip2-tiny-opt";
}

grpc::Status CaptionWith(TestServer& server, const v1::DecodingOptions& options, v1::Completion* out = nullptr) {
  grpc::ClientContext ctx;
  v1::CaptionRequest request;
  request.mutable_image()->set_data(ImageBytes("coffee.jpg"));
  *request.mutable_options() = options;
  v1::Completion completion;
  return server.stub().Caption(&ctx, request, out ? out : &completion);
}

TEST_CASE("Generate streams deltas in order, then exactly one final message") {
  const std::string model = SERVED_MODEL();
  INFO(model);
  TestServer server(TestConfig(ModelDir(model)));
  v1::GenerateRequest request;
  request.mutable_image()->set_data(ImageBytes("chelsea.jpg"));
  request.set_prompt("a photo of");
  request.mutable_options()->set_max_new_tokens(40);
  const StreamResult r = ReadStream(server.stub(), request, [](grpc::ClientContext& ctx) {
    ctx.AddMetadata("x-request-id", "test-request-7");
  });
  REQUIRE(r.status.ok());
  CHECK(r.request_id == "test-request-7");
  REQUIRE(r.messages.size() >= 2);
  std::string text;
  std::vector<int64_t> ids;
  for (size_t i = 0; i + 1 < r.messages.size(); ++i) {
    CHECK_FALSE(r.messages[i].has_final());
    text += r.messages[i].text();
    ids.insert(ids.end(), r.messages[i].token_ids().begin(), r.messages[i].token_ids().end());
  }
  const v1::GenerateResponse& last = r.messages.back();
  REQUIRE(last.has_final());
  CHECK(last.text().empty());
  CHECK(last.token_ids().empty());
  REQUIRE(last.final().sequences_size() == 1);
  const v1::Sequence& seq = last.final().sequences(0);
  CHECK(text == seq.text());
  CHECK(ids == std::vector<int64_t>(seq.token_ids().begin(), seq.token_ids().end()));
  const v1::Usage& u = last.final().usage();
  CHECK(u.image_tokens() == 8);
  CHECK(u.prompt_tokens() > 1);  // </s> and the words
  CHECK(u.generated_tokens() == seq.token_ids_size());
  CHECK(u.queue_ms() >= 0);
  CHECK(u.time_to_first_token_ms() >= u.queue_ms());
  CHECK(u.total_ms() >= u.time_to_first_token_ms());
  CHECK((seq.finish_reason() == v1::FINISH_REASON_LENGTH || seq.finish_reason() == v1::FINISH_REASON_EOS));
  CHECK(server.Metric(Series("Generate", "OK")) == 1);
}

TEST_CASE("Caption and Answer use the released prompt conventions") {
  const std::string model = SERVED_MODEL();
  INFO(model);
  TestServer server(TestConfig(ModelDir(model)));
  v1::Completion caption;
  REQUIRE(CaptionWith(server, v1::DecodingOptions(), &caption).ok());
  REQUIRE(caption.sequences_size() == 1);
  CHECK(caption.usage().prompt_tokens() == 1);  // only </s>

  grpc::ClientContext ctx;
  v1::AnswerRequest answer;
  answer.mutable_image()->set_data(ImageBytes("coffee.jpg"));
  answer.set_question("what is in the cup?");
  v1::Completion answered;
  REQUIRE(server.stub().Answer(&ctx, answer, &answered).ok());
  // The same as Generate with "Question: ... Answer:".
  v1::GenerateRequest same;
  same.mutable_image()->set_data(ImageBytes("coffee.jpg"));
  same.set_prompt("Question: what is in the cup? Answer:");
  const StreamResult streamed = ReadStream(server.stub(), same);
  REQUIRE(streamed.status.ok());
  CHECK(streamed.messages.back().final().sequences(0).token_ids_size() == answered.sequences(0).token_ids_size());
  CHECK(streamed.messages.back().final().sequences(0).text() == answered.sequences(0).text());
  CHECK(answered.usage().prompt_tokens() == streamed.messages.back().final().usage().prompt_tokens());
}

TEST_CASE("A slow reader gets tokens coalesced into fewer messages, the engine does not wait for it") {
  const std::string model = SERVED_MODEL();
  INFO(model);
  TestServer server(TestConfig(ModelDir(model, /*long_context=*/true)));
  // A client that reads nothing for a while, with a small HTTP/2 window: the
  // server's writes back up quickly.
  grpc::ChannelArguments args;
  args.SetInt("grpc.http2.lookahead_bytes", 1024);
  args.SetInt("grpc.http2.bdp_probe", 0);
  auto channel = grpc::CreateCustomChannel(server.target(), grpc::InsecureChannelCredentials(), args);
  auto stub = v1::Blip2::NewStub(channel);
  grpc::ClientContext ctx;
  auto reader = stub->Generate(&ctx, LongRequest(900));
  // The whole generation ends in the engine before the client reads a byte.
  REQUIRE(server.WaitForMetric("blip2_generated_tokens_total", 900) == 900);
  CHECK(server.WaitForMetric("blip2_requests_running", 0) == 0);
  CHECK(server.Metric("blip2_kv_cache_blocks_used") == 0);
  std::vector<v1::GenerateResponse> messages;
  v1::GenerateResponse message;
  while (reader->Read(&message)) messages.push_back(message);
  REQUIRE(reader->Finish().ok());
  std::vector<int64_t> ids;
  std::string text;
  for (size_t i = 0; i + 1 < messages.size(); ++i) {
    ids.insert(ids.end(), messages[i].token_ids().begin(), messages[i].token_ids().end());
    text += messages[i].text();
  }
  REQUIRE(messages.back().has_final());
  const v1::Sequence& seq = messages.back().final().sequences(0);
  CHECK(ids.size() == 900);
  CHECK(ids == std::vector<int64_t>(seq.token_ids().begin(), seq.token_ids().end()));
  CHECK(text == seq.text());
  INFO(messages.size() << " messages for 900 tokens");
  CHECK(messages.size() < 450);  // coalesced: at least two tokens per message on average
}

TEST_CASE("Cancelling mid-stream ends the request and frees its KV blocks") {
  const std::string model = SERVED_MODEL();
  INFO(model);
  TestServer server(TestConfig(ModelDir(model, /*long_context=*/true)));
  grpc::ClientContext ctx;
  auto reader = server.stub().Generate(&ctx, LongRequest(900));
  v1::GenerateResponse first;
  REQUIRE(reader->Read(&first));
  // The gauge moves at the end of each engine step: poll rather than race it.
  CHECK(server.WaitForMetric("blip2_kv_cache_blocks_used", [](double v) { return v > 0; }) > 0);
  ctx.TryCancel();
  v1::GenerateResponse rest;
  while (reader->Read(&rest)) CHECK_FALSE(rest.has_final());
  CHECK(reader->Finish().error_code() == StatusCode::CANCELLED);
  CHECK(server.WaitForMetric("blip2_kv_cache_blocks_used", 0) == 0);
  CHECK(server.WaitForMetric(Series("Generate", "CANCELLED"), 1) == 1);
  CHECK(server.Metric("blip2_requests_running") == 0);
}

TEST_CASE("A deadline shorter than the generation ends it with DEADLINE_EXCEEDED") {
  const std::string model = SERVED_MODEL();
  INFO(model);
  TestServer server(TestConfig(ModelDir(model, /*long_context=*/true)));
  const StreamResult r = ReadStream(server.stub(), LongRequest(900), [](grpc::ClientContext& ctx) {
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(100));
  });
  CHECK(r.status.error_code() == StatusCode::DEADLINE_EXCEEDED);
  for (const auto& m : r.messages) CHECK_FALSE(m.has_final());
  CHECK(server.WaitForMetric("blip2_kv_cache_blocks_used", 0) == 0);
  CHECK(server.WaitForMetric(Series("Generate", "DEADLINE_EXCEEDED"), 1) == 1);
}

TEST_CASE("Overload gets RESOURCE_EXHAUSTED while admitted requests complete") {
  SECTION("max_concurrent_streams") {
    config::ServerConfig cfg = TestConfig(LongContextModelDir());
    cfg.mutable_limits()->set_max_concurrent_streams(1);
    TestServer server(cfg);
    grpc::ClientContext ctx;
    auto admitted = server.stub().Generate(&ctx, LongRequest(600));
    v1::GenerateResponse message;
    REQUIRE(admitted->Read(&message));  // running
    const StreamResult refused = ReadStream(server.stub(), LongRequest(10));
    CHECK(refused.status.error_code() == StatusCode::RESOURCE_EXHAUSTED);
    CHECK_THAT(refused.status.error_message(), Catch::Contains("max_concurrent_streams"));
    CHECK(refused.messages.empty());
    const StreamEnd end = ReadToEnd(*admitted, message.token_ids_size());
    CHECK(end.status.ok());
    CHECK(end.ended_final);
    CHECK(end.tokens == 600);
  }
  SECTION("max_queued_requests") {
    config::ServerConfig cfg = TestConfig(LongContextModelDir());
    cfg.mutable_batching()->set_max_num_seqs(1);  // a second request waits for the first
    cfg.mutable_limits()->set_max_queued_requests(1);
    TestServer server(cfg);
    grpc::ClientContext ctx1, ctx2;
    auto running = server.stub().Generate(&ctx1, LongRequest(600));
    v1::GenerateResponse message;
    REQUIRE(running->Read(&message));
    auto waiting = server.stub().Generate(&ctx2, LongRequest(5));
    REQUIRE(server.WaitForMetric("blip2_admission_queue_requests", 1) == 1);
    const StreamResult refused = ReadStream(server.stub(), LongRequest(5));
    CHECK(refused.status.error_code() == StatusCode::RESOURCE_EXHAUSTED);
    CHECK_THAT(refused.status.error_message(), Catch::Contains("max_queued_requests"));
    CHECK(ReadToEnd(*running).status.ok());
    const StreamEnd waited = ReadToEnd(*waiting);
    CHECK(waited.status.ok());
    CHECK(waited.ended_final);
  }
  SECTION("priorities: a more urgent request pushes out the least urgent, newest waiting one and runs first") {
    config::ServerConfig cfg = TestConfig(LongContextModelDir());
    cfg.mutable_batching()->set_max_num_seqs(1);
    cfg.mutable_limits()->set_max_queued_requests(2);
    TestServer server(cfg);
    grpc::ClientContext running_ctx;
    auto running = server.stub().Generate(&running_ctx, LongRequest(900));
    v1::GenerateResponse message;
    REQUIRE(running->Read(&message));
    auto with_priority = [](int priority, int tokens = 5) {
      v1::GenerateRequest request = LongRequest(tokens);
      request.set_priority(priority);
      return request;
    };
    // Each waiting call is read on its own thread, which notes when it ended.
    struct Waiting {
      grpc::ClientContext ctx;
      StreamResult result;
      std::chrono::steady_clock::time_point ended;
      std::thread reader;
      ~Waiting() {  // a failed REQUIRE leaves early
        if (!reader.joinable()) return;
        ctx.TryCancel();
        reader.join();
      }
    };
    auto start = [&](Waiting& w, int priority, int tokens = 5) {
      w.reader = std::thread([&w, &server, request = with_priority(priority, tokens)] {
        auto reader = server.stub().Generate(&w.ctx, request);
        v1::GenerateResponse m;
        while (reader->Read(&m)) w.result.messages.push_back(m);
        w.result.status = reader->Finish();
        w.ended = std::chrono::steady_clock::now();
      });
    };
    Waiting older_low, newer_low, urgent;
    start(older_low, 5, /*tokens=*/300);  // long: if it ran first, `urgent` would end well after it
    REQUIRE(server.WaitForMetric("blip2_admission_queue_requests", 1) == 1);
    start(newer_low, 5);
    REQUIRE(server.WaitForMetric("blip2_admission_queue_requests", 2) == 2);
    // Full, and nobody waiting is less urgent than priority 5.
    const StreamResult refused = ReadStream(server.stub(), with_priority(5));
    CHECK(refused.status.error_code() == StatusCode::RESOURCE_EXHAUSTED);
    CHECK_THAT(refused.status.error_message(), Catch::Contains("max_queued_requests 2"));
    // Priority 0 gets in; the newer priority 5 request is shed.
    start(urgent, 0);
    newer_low.reader.join();
    CHECK(newer_low.result.status.error_code() == StatusCode::RESOURCE_EXHAUSTED);
    CHECK_THAT(newer_low.result.status.error_message(), Catch::Contains("shed"));
    CHECK(newer_low.result.messages.empty());
    CHECK(server.WaitForMetric("blip2_requests_shed_total", 1) == 1);
    // Both survivors reach the engine before the running request ends.
    REQUIRE(server.WaitForMetric("blip2_requests_waiting", 2) == 2);
    running_ctx.TryCancel();
    CHECK(ReadToEnd(*running).status.error_code() == StatusCode::CANCELLED);
    urgent.reader.join();
    older_low.reader.join();
    CHECK(urgent.result.status.ok());
    CHECK(older_low.result.status.ok());
    CHECK(urgent.ended < older_low.ended);  // one sequence at a time: priority 0 ran first
    CHECK(server.WaitForMetric("blip2_admission_queue_requests", 0) == 0);
  }
}

TEST_CASE("Bad input gets INVALID_ARGUMENT naming the problem, and the server goes on") {
  const std::string model = SERVED_MODEL();
  INFO(model);
  config::ServerConfig cfg = TestConfig(ModelDir(model));
  cfg.mutable_limits()->set_max_message_bytes(96 * 1024);  // coffee.jpg is 72 KB
  cfg.mutable_limits()->set_max_prompt_tokens(16);
  TestServer server(cfg);

  SECTION("an oversized message") {
    grpc::ClientContext ctx;
    v1::CaptionRequest request;
    request.mutable_image()->set_data(std::string(150 * 1024, 'x'));
    v1::Completion out;
    const grpc::Status s = server.stub().Caption(&ctx, request, &out);
    CHECK(s.error_code() == StatusCode::INVALID_ARGUMENT);
    CHECK_THAT(s.error_message(), Catch::Contains("max_message_bytes"));
  }
  SECTION("a corrupt image") {
    grpc::ClientContext ctx;
    v1::CaptionRequest request;
    std::string jpeg = ImageBytes("chelsea.jpg");
    request.mutable_image()->set_data(jpeg.substr(0, jpeg.size() / 3));
    v1::Completion out;
    const grpc::Status s = server.stub().Caption(&ctx, request, &out);
    CHECK(s.error_code() == StatusCode::INVALID_ARGUMENT);
    CHECK_THAT(s.error_message(), Catch::Contains("image.data"));
  }
  SECTION("no image, a malformed or unknown image id") {
    grpc::ClientContext c1, c2, c3;
    v1::CaptionRequest request;
    v1::Completion out;
    grpc::Status s = server.stub().Caption(&c1, request, &out);
    CHECK(s.error_code() == StatusCode::INVALID_ARGUMENT);
    CHECK_THAT(s.error_message(), Catch::Contains("image is required"));
    request.mutable_image()->set_image_id("not-an-id");
    s = server.stub().Caption(&c2, request, &out);
    CHECK(s.error_code() == StatusCode::INVALID_ARGUMENT);
    CHECK_THAT(s.error_message(), Catch::Contains("image_id"));
    request.mutable_image()->set_image_id("0123456789abcdef");
    s = server.stub().Caption(&c3, request, &out);
    CHECK(s.error_code() == StatusCode::NOT_FOUND);
    CHECK_THAT(s.error_message(), Catch::Contains("0123456789abcdef"));
  }
  SECTION("each invalid decoding option") {
    struct Case {
      std::function<void(v1::DecodingOptions&)> set;
      const char* field;
    };
    const std::vector<Case> cases = {
        {[](auto& o) { o.set_max_new_tokens(0); }, "options.max_new_tokens"},
        {[](auto& o) { o.set_max_new_tokens(5000); }, "options.max_new_tokens"},
        {[](auto& o) { o.set_min_new_tokens(-1); }, "options.min_new_tokens"},
        {[](auto& o) { o.set_num_beams(0); }, "options.num_beams"},
        {[](auto& o) { o.set_num_beams(100); }, "options.num_beams"},
        {[](auto& o) { o.set_temperature(-1); }, "options.temperature"},
        {[](auto& o) { o.set_temperature(std::numeric_limits<float>::infinity()); }, "options.temperature"},
        {[](auto& o) { o.set_top_p(1.5f); }, "options.top_p"},
        {[](auto& o) { o.set_top_p(0); }, "options.top_p"},
        {[](auto& o) { o.set_top_k(-3); }, "options.top_k"},
        {[](auto& o) { o.set_repetition_penalty(0); }, "options.repetition_penalty"},
        {[](auto& o) { o.set_no_repeat_ngram_size(-1); }, "options.no_repeat_ngram_size"},
        {[](auto& o) { o.set_length_penalty(std::numeric_limits<float>::quiet_NaN()); }, "options.length_penalty"},
        {[](auto& o) { o.set_num_return_sequences(3); }, "options.num_return_sequences"},
        {[](auto& o) { o.add_stop(""); }, "options.stop"},
        {[](auto& o) {
           for (int i = 0; i < 20; ++i) o.add_stop("x" + std::to_string(i));
         },
         "options.stop"},
    };
    for (const Case& c : cases) {
      v1::DecodingOptions options;
      c.set(options);
      const grpc::Status s = CaptionWith(server, options);
      INFO(c.field << ": " << s.error_message());
      CHECK(s.error_code() == StatusCode::INVALID_ARGUMENT);
      CHECK_THAT(s.error_message(), Catch::Contains(c.field));
    }
  }
  SECTION("a prompt over max_prompt_tokens, invalid UTF-8, an empty question, an empty batch") {
    v1::GenerateRequest request;
    request.mutable_image()->set_data(ImageBytes("coffee.jpg"));
    std::string long_prompt;
    for (int i = 0; i < 40; ++i) long_prompt += "word ";
    request.set_prompt(long_prompt);
    StreamResult r = ReadStream(server.stub(), request);
    CHECK(r.status.error_code() == StatusCode::INVALID_ARGUMENT);
    CHECK_THAT(r.status.error_message(), Catch::Contains("max_prompt_tokens"));
    request.set_prompt("bad \xff byte");
    // proto3 strings must be UTF-8: the client library refuses to send it, or
    // the server refuses it; either way nothing runs.
    r = ReadStream(server.stub(), request);
    CHECK_FALSE(r.status.ok());

    grpc::ClientContext c1, c2;
    v1::AnswerRequest answer;
    answer.mutable_image()->set_data(ImageBytes("coffee.jpg"));
    v1::Completion out;
    grpc::Status s = server.stub().Answer(&c1, answer, &out);
    CHECK(s.error_code() == StatusCode::INVALID_ARGUMENT);
    CHECK_THAT(s.error_message(), Catch::Contains("question"));

    auto batch = server.stub().GenerateBatch(&c2, v1::GenerateBatchRequest());
    v1::BatchItemResult item;
    CHECK_FALSE(batch->Read(&item));
    s = batch->Finish();
    CHECK(s.error_code() == StatusCode::INVALID_ARGUMENT);
    CHECK_THAT(s.error_message(), Catch::Contains("items"));
  }
  // Whatever came before, the server still captions.
  CHECK(CaptionWith(server, v1::DecodingOptions()).ok());
}

TEST_CASE("An image over max_image_pixels is refused before decoding") {
  config::ServerConfig cfg = TestConfig(FixturesDir() + "/blip2-tiny-opt");
  cfg.set_max_image_pixels(100 * 100);
  TestServer server(cfg);
  grpc::ClientContext ctx;
  v1::CaptionRequest request;
  request.mutable_image()->set_data(ImageBytes("chelsea.jpg"));  // 451x300
  v1::Completion out;
  const grpc::Status s = server.stub().Caption(&ctx, request, &out);
  CHECK(s.error_code() == StatusCode::INVALID_ARGUMENT);
  CHECK_THAT(s.error_message(), Catch::Contains("over the limit of 10000"));
  grpc::ClientContext small_ctx;
  request.mutable_image()->set_data(ImageBytes("tiny_upscale.png"));
  CHECK(server.stub().Caption(&small_ctx, request, &out).ok());
}

TEST_CASE("GenerateBatch streams each item's own result, a bad item fails only itself") {
  const std::string model = SERVED_MODEL();
  INFO(model);
  TestServer server(TestConfig(ModelDir(model)));
  v1::GenerateBatchRequest request;
  request.add_items()->mutable_image()->set_data(ImageBytes("chelsea.jpg"));
  request.add_items()->mutable_image()->set_data("this is not an image");
  v1::BatchItem* third = request.add_items();
  third->mutable_image()->set_data(ImageBytes("coffee.jpg"));
  third->set_prompt("Question: what is in the cup? Answer:");
  request.mutable_options()->set_max_new_tokens(12);
  grpc::ClientContext ctx;
  auto reader = server.stub().GenerateBatch(&ctx, request);
  std::map<int, v1::BatchItemResult> results;
  v1::BatchItemResult result;
  while (reader->Read(&result)) {
    CHECK(results.count(result.index()) == 0);
    results[result.index()] = result;
  }
  REQUIRE(reader->Finish().ok());
  REQUIRE(results.size() == 3);
  CHECK(results[0].code() == 0);
  CHECK(results[0].completion().sequences_size() == 1);
  CHECK(results[1].code() == static_cast<int>(StatusCode::INVALID_ARGUMENT));
  CHECK_THAT(results[1].message(), Catch::Contains("image.data"));
  CHECK(results[2].code() == 0);
  CHECK(results[2].completion().usage().prompt_tokens() > 1);

  // Each item is what Generate computes for it alone.
  v1::GenerateRequest alone;
  alone.mutable_image()->set_data(ImageBytes("chelsea.jpg"));
  alone.mutable_options()->set_max_new_tokens(12);
  const StreamResult r = ReadStream(server.stub(), alone);
  REQUIRE(r.status.ok());
  CHECK(r.messages.back().final().sequences(0).text() == results[0].completion().sequences(0).text());
}

TEST_CASE("A registered image skips decoding and the encoder, release forgets it") {
  const std::string model = SERVED_MODEL();
  INFO(model);
  TestServer server(TestConfig(ModelDir(model)));
  grpc::ClientContext c1, c2;
  v1::RegisterImageRequest reg;
  reg.set_data(ImageBytes("astronaut.png"));
  v1::RegisterImageResponse id1, id2;
  REQUIRE(server.stub().RegisterImage(&c1, reg, &id1).ok());
  REQUIRE(server.stub().RegisterImage(&c2, reg, &id2).ok());
  CHECK(id1.image_id().size() == 16);
  CHECK(id1.image_id() == id2.image_id());
  CHECK(server.Metric("blip2_registered_images") == 1);
  const double misses = server.Metric("blip2_image_cache_misses_total");
  const double hits = server.Metric("blip2_image_cache_hits_total");
  CHECK(misses == 1);  // encoded once

  v1::CaptionRequest by_id;
  by_id.mutable_image()->set_image_id(id1.image_id());
  by_id.mutable_options()->set_max_new_tokens(10);
  v1::Completion first, second, by_bytes;
  grpc::ClientContext c3, c4, c5;
  REQUIRE(server.stub().Caption(&c3, by_id, &first).ok());
  REQUIRE(server.stub().Caption(&c4, by_id, &second).ok());
  CHECK(server.Metric("blip2_image_cache_misses_total") == misses);  // no new encoder run
  CHECK(server.Metric("blip2_image_cache_hits_total") == hits + 2);
  // The same caption as sending the bytes.
  v1::CaptionRequest with_bytes = by_id;
  with_bytes.mutable_image()->set_data(ImageBytes("astronaut.png"));
  REQUIRE(server.stub().Caption(&c5, with_bytes, &by_bytes).ok());
  CHECK(first.sequences(0).text() == by_bytes.sequences(0).text());
  CHECK(second.sequences(0).text() == by_bytes.sequences(0).text());
  // The calls are done: only the registration holds a pin (one per image, however many registrations).
  CHECK(server.WaitForMetric("blip2_image_cache_pins", 1) == 1);

  grpc::ClientContext c6, c7, c8;
  v1::ReleaseImageRequest release;
  release.set_image_id(id1.image_id());
  v1::ReleaseImageResponse released;
  // Two registrations: the first release leaves the image to the second.
  CHECK(server.Metric("blip2_image_registrations") == 2);
  REQUIRE(server.stub().ReleaseImage(&c6, release, &released).ok());
  CHECK(server.Metric("blip2_image_registrations") == 1);
  grpc::ClientContext c_still, c_second;
  v1::Completion still;
  REQUIRE(server.stub().Caption(&c_still, by_id, &still).ok());
  REQUIRE(server.stub().ReleaseImage(&c_second, release, &released).ok());
  CHECK(server.stub().ReleaseImage(&c7, release, &released).error_code() == StatusCode::NOT_FOUND);
  CHECK(server.WaitForMetric("blip2_registered_images", 0) == 0);
  CHECK(server.WaitForMetric("blip2_image_cache_pins", 0) == 0);
  v1::Completion after;
  const grpc::Status s = server.stub().Caption(&c8, by_id, &after);
  CHECK(s.error_code() == StatusCode::NOT_FOUND);
  CHECK_THAT(s.error_message(), Catch::Contains(id1.image_id()));
}

TEST_CASE("Clients registering the same image share it: no one's release pulls it from another") {
  TestServer server(TestConfig(ModelDir("opt")));
  constexpr int kClients = 8, kRounds = 12;
  std::atomic<int> ok{0}, failed{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&] {
      for (int round = 0; round < kRounds; ++round) {
        grpc::ClientContext reg_ctx, cap_ctx, rel_ctx;
        v1::RegisterImageRequest reg;
        reg.set_data(ImageBytes("chelsea.jpg"));
        v1::RegisterImageResponse id;
        v1::CaptionRequest caption;
        v1::Completion completion;
        v1::ReleaseImageRequest release;
        v1::ReleaseImageResponse released;
        const bool flow = server.stub().RegisterImage(&reg_ctx, reg, &id).ok() &&
                          (caption.mutable_image()->set_image_id(id.image_id()),
                           caption.mutable_options()->set_max_new_tokens(3),
                           server.stub().Caption(&cap_ctx, caption, &completion).ok()) &&
                          (release.set_image_id(id.image_id()), server.stub().ReleaseImage(&rel_ctx, release, &released).ok());
        ++(flow ? ok : failed);
      }
    });
  }
  for (std::thread& t : clients) t.join();
  CHECK(failed == 0);
  CHECK(ok == kClients * kRounds);
  CHECK(server.WaitForMetric("blip2_registered_images", 0) == 0);
  CHECK(server.Metric("blip2_image_registrations") == 0);
}

TEST_CASE("An unreleased registration expires after its ttl_seconds, and GetModelInfo counts it") {
  config::ServerConfig cfg = TestConfig(ModelDir("opt"));
  cfg.mutable_limits()->set_max_registration_ttl_seconds(60);
  cfg.mutable_limits()->set_registration_ttl_seconds(30);
  TestServer server(cfg);
  v1::RegisterImageRequest reg;
  reg.set_data(ImageBytes("chelsea.jpg"));
  reg.set_ttl_seconds(61);
  v1::RegisterImageResponse id;
  grpc::ClientContext too_long, by_default, short_lease;
  const grpc::Status refused = server.stub().RegisterImage(&too_long, reg, &id);
  CHECK(refused.error_code() == StatusCode::INVALID_ARGUMENT);
  CHECK_THAT(refused.error_message(), Catch::Contains("ttl_seconds"));
  reg.clear_ttl_seconds();
  REQUIRE(server.stub().RegisterImage(&by_default, reg, &id).ok());
  CHECK(id.ttl_seconds() == 30);
  reg.set_data(ImageBytes("coffee.jpg"));
  reg.set_ttl_seconds(1);
  REQUIRE(server.stub().RegisterImage(&short_lease, reg, &id).ok());
  CHECK(id.ttl_seconds() == 1);
  CHECK(server.WaitForMetric("blip2_image_registrations_expired_total", 1) == 1);
  CHECK(server.Metric("blip2_registered_images") == 1);  // the 30 s one stays
  grpc::ClientContext info_ctx, cap_ctx;
  v1::ModelInfo info;
  REQUIRE(server.stub().GetModelInfo(&info_ctx, v1::GetModelInfoRequest(), &info).ok());
  CHECK(info.image_registrations_expired() == 1);
  CHECK(info.image_registrations() == 1);
  CHECK(info.registered_images() == 1);
  CHECK(info.limits().registration_ttl_seconds() == 30);
  CHECK(info.limits().max_registration_ttl_seconds() == 60);
  v1::CaptionRequest caption;
  caption.mutable_image()->set_image_id(id.image_id());
  v1::Completion completion;
  CHECK(server.stub().Caption(&cap_ctx, caption, &completion).error_code() == StatusCode::NOT_FOUND);
}

TEST_CASE("GetModelInfo describes the model and the limits") {
  config::ServerConfig cfg = TestConfig(FixturesDir() + "/blip2-tiny-opt");
  cfg.mutable_limits()->set_max_new_tokens(77);
  TestServer server(cfg);
  grpc::ClientContext ctx;
  v1::ModelInfo info;
  REQUIRE(server.stub().GetModelInfo(&ctx, v1::GetModelInfoRequest(), &info).ok());
  CHECK(info.model_type() == "blip2-opt");
  CHECK(info.model_name() == "blip2-tiny-opt");
  CHECK(info.num_query_tokens() == 8);
  CHECK(info.max_position_embeddings() == 128);
  CHECK(info.device() == "cpu");
  CHECK(info.dtype() == "float32");
  CHECK(info.kv_cache_blocks() > 0);
  CHECK(info.limits().max_new_tokens() == 77);
  CHECK(info.limits().max_message_bytes() == 32 << 20);
  CHECK_FALSE(info.server_version().empty());
  CHECK(info.architecture() == "Blip2ForConditionalGeneration");
  CHECK(info.text_encoder_layers() == 0);
}

TEST_CASE("GetModelInfo and the metrics report prefix-cache hits when one image gets the same question twice") {
  TestServer server(TestConfig(FixturesDir() + "/blip2-tiny-opt"));
  std::vector<std::vector<int64_t>> ids;
  for (int i = 0; i < 2; ++i) {
    grpc::ClientContext ctx;
    v1::AnswerRequest answer;
    answer.mutable_image()->set_data(ImageBytes("coffee.jpg"));
    answer.set_question("what is in the cup on the table?");  // with the image rows, more than one block
    v1::Completion out;
    REQUIRE(server.stub().Answer(&ctx, answer, &out).ok());
    ids.emplace_back(out.sequences(0).token_ids().begin(), out.sequences(0).token_ids().end());
  }
  CHECK(ids[0] == ids[1]);
  grpc::ClientContext ctx;
  v1::ModelInfo info;
  REQUIRE(server.stub().GetModelInfo(&ctx, v1::GetModelInfoRequest(), &info).ok());
  CHECK(info.prefix_caching());
  CHECK(info.prefix_cache_hits() > 0);
  CHECK(info.prefix_cache_misses() > 0);
  CHECK(info.kv_cache_blocks_used() == 0);
  CHECK(info.kv_cache_blocks_cached() > 0);
  CHECK(server.Metric("blip2_prefix_cache_blocks_total{outcome=\"hit\"}") == info.prefix_cache_hits());
  CHECK(server.Metric("blip2_kv_cache_blocks_cached") == info.kv_cache_blocks_cached());
}

TEST_CASE("GetModelInfo describes a Flan-T5 model: its family, encoder and decoder depth, no position limit") {
  TestServer server(TestConfig(ModelDir("t5")));
  grpc::ClientContext ctx;
  v1::ModelInfo info;
  REQUIRE(server.stub().GetModelInfo(&ctx, v1::GetModelInfoRequest(), &info).ok());
  CHECK(info.model_type() == "blip2-t5");
  CHECK(info.architecture() == "Blip2ForConditionalGeneration");
  CHECK(info.model_name() == "blip2-tiny-flan-t5");
  CHECK(info.text_hidden_size() == 32);
  CHECK(info.text_layers() == 2);
  CHECK(info.text_encoder_layers() == 2);
  CHECK(info.vocab_size() == 216);
  CHECK(info.max_position_embeddings() == 0);
  CHECK(info.kv_cache_blocks() > 0);
}

TEST_CASE("Draining: health goes NOT_SERVING, new calls get UNAVAILABLE, streams in flight complete") {
  TestServer server(TestConfig(LongContextModelDir()));
  auto health = grpc::health::v1::Health::NewStub(server.channel());
  auto check = [&] {
    grpc::ClientContext ctx;
    grpc::health::v1::HealthCheckResponse response;
    const grpc::Status s = health->Check(&ctx, grpc::health::v1::HealthCheckRequest(), &response);
    return s.ok() ? response.status() : grpc::health::v1::HealthCheckResponse::UNKNOWN;
  };
  REQUIRE(check() == grpc::health::v1::HealthCheckResponse::SERVING);
  CHECK(server.HttpGet("/healthz") == "SERVING\n");

  // Watch: the current status at once, then every change.
  grpc::ClientContext watch_ctx;
  auto watch = health->Watch(&watch_ctx, grpc::health::v1::HealthCheckRequest());
  grpc::health::v1::HealthCheckResponse watched;
  REQUIRE(watch->Read(&watched));
  CHECK(watched.status() == grpc::health::v1::HealthCheckResponse::SERVING);

  grpc::ClientContext ctx;
  auto stream = server.stub().Generate(&ctx, LongRequest(900));
  v1::GenerateResponse message;
  REQUIRE(stream->Read(&message));
  std::thread drain([&] { server.server().Drain(std::chrono::seconds(30)); });
  REQUIRE(watch->Read(&watched));
  CHECK(watched.status() == grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  watch_ctx.TryCancel();
  watch->Finish();
  CHECK(check() == grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  CHECK(server.HttpGet("/healthz") == "NOT_SERVING\n");
  const grpc::Status refused = CaptionWith(server, v1::DecodingOptions());
  CHECK(refused.error_code() == StatusCode::UNAVAILABLE);
  const StreamEnd end = ReadToEnd(*stream);
  CHECK(end.status.ok());
  CHECK(end.ended_final);
  drain.join();
}

}  // namespace
}  // namespace blip2::testing

namespace blip2::testing {
namespace {

// The retrieval fixture's transformers numbers for image `row` (ITC similarity to each text).
std::vector<float> ReferenceSimilarities(int row) {
  auto file = engine::SafetensorsFile::Open(FixturesDir() + "/blip2-tiny-itm/reference.safetensors");
  REQUIRE(file.ok());
  const engine::TensorView& v = (*file)->tensors().at("itc.logits_per_image");
  std::vector<float> all(v.numel());
  REQUIRE(v.dtype == engine::DType::kF32);
  std::memcpy(all.data(), v.data, v.nbytes);
  const int64_t cols = v.shape[1];
  return std::vector<float>(all.begin() + row * cols, all.begin() + (row + 1) * cols);
}

const std::vector<std::string> kFixtureTexts = {"a photo of a cat", "a cup of coffee on a saucer",
                                                "an astronaut in a space suit"};

TEST_CASE("Match scores and ranks the fixture texts for a fixture image as transformers does") {
  TestServer server(TestConfig(FixturesDir() + "/blip2-tiny-itm"));
  const std::vector<std::pair<std::string, int>> images = {{"chelsea.jpg", 0}, {"coffee.jpg", 1}, {"astronaut.png", 2}};
  for (const auto& [image, row] : images) {
    grpc::ClientContext ctx;
    v1::MatchRequest request;
    request.mutable_image()->set_data(ImageBytes(image));
    for (const std::string& t : kFixtureTexts) request.add_texts(t);
    v1::MatchResponse response;
    REQUIRE(server.stub().Match(&ctx, request, &response).ok());
    REQUIRE(response.matches_size() == 3);
    const std::vector<float> want = ReferenceSimilarities(row);
    for (int t = 0; t < 3; ++t) {
      INFO(image << " text " << t);
      CHECK(response.matches(t).index() == t);
      CHECK(response.matches(t).similarity() == Approx(want[t]).margin(1e-4));
      CHECK(response.matches(t).match_probability() > 0);
      CHECK(response.matches(t).match_probability() < 1);
      CHECK_FALSE(response.matches(t).truncated());
    }
    CHECK(response.usage().prompt_tokens() > 3);
  }
  CHECK(server.Metric(Series("Match", "OK")) == 3);
}

TEST_CASE("Embed returns normalised image and text embeddings, and Q-Former features on request") {
  TestServer server(TestConfig(FixturesDir() + "/blip2-tiny-itm"));
  grpc::ClientContext ctx;
  v1::EmbedRequest request;
  request.add_images()->set_data(ImageBytes("chelsea.jpg"));
  request.add_images()->set_data(ImageBytes("coffee.jpg"));
  request.add_texts("a photo of a cat");
  request.set_include_features(true);
  v1::EmbedResponse response;
  REQUIRE(server.stub().Embed(&ctx, request, &response).ok());
  REQUIRE(response.images_size() == 2);
  REQUIRE(response.texts_size() == 1);
  const v1::Matrix& e = response.images(0).embeddings();
  CHECK(e.rows() == 8);
  CHECK(e.cols() == 16);
  double norm = 0;
  for (int k = 0; k < e.cols(); ++k) norm += e.values(k) * e.values(k);
  CHECK(norm == Approx(1.0).margin(1e-4));
  CHECK(response.images(0).features().rows() == 8);
  CHECK(response.texts(0).embedding_size() == 16);
  CHECK(response.texts(0).tokens() == 7);
  CHECK(response.texts(0).features().rows() == 7);
  // The text embedding against image 0's rows gives Match's similarity.
  double best = -2;
  for (int q = 0; q < e.rows(); ++q) {
    double dot = 0;
    for (int k = 0; k < e.cols(); ++k) dot += e.values(q * e.cols() + k) * response.texts(0).embedding(k);
    best = std::max(best, dot);
  }
  CHECK(best == Approx(ReferenceSimilarities(0)[0]).margin(1e-4));
}

TEST_CASE("Retrieval bad input, and calls for a model the server has not loaded") {
  config::ServerConfig cfg = TestConfig(FixturesDir() + "/blip2-tiny-itm");
  cfg.mutable_limits()->set_max_texts(2);
  TestServer server(cfg);
  const auto match = [&](const std::vector<std::string>& texts, bool with_image) {
    grpc::ClientContext ctx;
    v1::MatchRequest request;
    if (with_image) request.mutable_image()->set_data(ImageBytes("coffee.jpg"));
    for (const auto& t : texts) request.add_texts(t);
    v1::MatchResponse response;
    return server.stub().Match(&ctx, request, &response);
  };
  grpc::Status s = match({}, true);
  CHECK(s.error_code() == StatusCode::INVALID_ARGUMENT);
  CHECK_THAT(s.error_message(), Catch::Contains("texts is empty"));
  s = match({"a", "b", "c"}, true);
  CHECK(s.error_code() == StatusCode::INVALID_ARGUMENT);
  CHECK_THAT(s.error_message(), Catch::Contains("max_texts"));
  s = match({"a"}, false);
  CHECK(s.error_code() == StatusCode::INVALID_ARGUMENT);
  CHECK_THAT(s.error_message(), Catch::Contains("image is required"));
  grpc::ClientContext c1;
  v1::EmbedResponse embedded;
  s = server.stub().Embed(&c1, v1::EmbedRequest(), &embedded);
  CHECK(s.error_code() == StatusCode::INVALID_ARGUMENT);
  CHECK_THAT(s.error_message(), Catch::Contains("give images, texts or both"));
  // Generation on a retrieval checkpoint.
  v1::Completion out;
  s = CaptionWith(server, v1::DecodingOptions(), &out);
  CHECK(s.error_code() == StatusCode::FAILED_PRECONDITION);
  CHECK_THAT(s.error_message(), Catch::Contains("retrieval checkpoint"));
  CHECK(match({"a cup"}, true).ok());  // and the server goes on

  // Retrieval on a generation-only server.
  TestServer opt(TestConfig(FixturesDir() + "/blip2-tiny-opt"));
  grpc::ClientContext c2;
  v1::MatchRequest request;
  request.mutable_image()->set_data(ImageBytes("coffee.jpg"));
  request.add_texts("a cup");
  v1::MatchResponse response;
  s = opt.stub().Match(&c2, request, &response);
  CHECK(s.error_code() == StatusCode::FAILED_PRECONDITION);
  CHECK_THAT(s.error_message(), Catch::Contains("needs a retrieval checkpoint"));
}

TEST_CASE("A server with a generation and a retrieval checkpoint serves both") {
  config::ServerConfig cfg = TestConfig(FixturesDir() + "/blip2-tiny-opt");
  cfg.set_retrieval_model_dir(FixturesDir() + "/blip2-tiny-itm");
  TestServer server(cfg);
  v1::Completion caption;
  REQUIRE(CaptionWith(server, v1::DecodingOptions(), &caption).ok());
  grpc::ClientContext ctx;
  v1::MatchRequest request;
  request.mutable_image()->set_data(ImageBytes("chelsea.jpg"));
  for (const std::string& t : kFixtureTexts) request.add_texts(t);
  v1::MatchResponse response;
  REQUIRE(server.stub().Match(&ctx, request, &response).ok());
  CHECK(response.matches(0).similarity() == Approx(ReferenceSimilarities(0)[0]).margin(1e-4));
  grpc::ClientContext info_ctx;
  v1::ModelInfo info;
  REQUIRE(server.stub().GetModelInfo(&info_ctx, v1::GetModelInfoRequest(), &info).ok());
  CHECK(info.serves_size() == 2);
  CHECK(info.model_type() == "blip2-opt");
  CHECK(info.retrieval_model_name() == "blip2-tiny-itm");
  CHECK(info.embedding_size() == 16);
  CHECK(info.max_text_tokens() == 64);
  // An image registered for captioning is not the retrieval model's: NOT_FOUND saying so.
  grpc::ClientContext reg_ctx;
  v1::RegisterImageRequest reg;
  reg.set_data(ImageBytes("chelsea.jpg"));
  v1::RegisterImageResponse registered;
  REQUIRE(server.stub().RegisterImage(&reg_ctx, reg, &registered).ok());
  grpc::ClientContext by_id_ctx;
  v1::MatchRequest by_id = request;
  by_id.mutable_image()->set_image_id(registered.image_id());
  const grpc::Status s = server.stub().Match(&by_id_ctx, by_id, &response);
  CHECK(s.error_code() == StatusCode::NOT_FOUND);
  CHECK_THAT(s.error_message(), Catch::Contains("retrieval model"));
}

}  // namespace
}  // namespace blip2::testing
