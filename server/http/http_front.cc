#include "server/http/http_front.h"

#include <pthread.h>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast.hpp>
#include <boost/beast/ssl.hpp>
#include <array>
#include <chrono>
#include <deque>
#include <thread>

#include <spdlog/spdlog.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/grpc/api_convert.h"
#include "server/grpc/engine_job.h"
#include "server/grpc/retrieval_calls.h"
#include "server/http/image_fetch.h"
#include "server/http/openai_api.h"

namespace blip2::server {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;

constexpr auto kReadTimeout = std::chrono::seconds(30);  // a request's headers and body (slow clients)
constexpr const char* kChatPath = "/v1/chat/completions";
constexpr const char* kEmbeddingsPath = "/v1/embeddings";

const char* CodeName(int http_status) {
  switch (http_status) {
    case 200: return "OK";
    case 400: case 413: return "INVALID_ARGUMENT";
    case 401: return "UNAUTHENTICATED";
    case 404: return "NOT_FOUND";
    case 429: return "RESOURCE_EXHAUSTED";
    case 503: return "UNAVAILABLE";
    case 504: return "DEADLINE_EXCEEDED";
    case 499: return "CANCELLED";
    default: return "INTERNAL";
  }
}

int64_t UnixSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// What every connection of the front reads and nobody changes after Start.
struct Site {
  std::string model;            // the generation model's name (clients' "model"); "" when none
  std::string retrieval_model;  // the retrieval model's; "" when none
  int64_t created = UnixSeconds();
  ImageUrlPolicy image_urls;
  std::shared_ptr<net::ssl::context> fetch_tls;  // verifies https image origins
};

using PlainStream = beast::tcp_stream;
using TlsStream = beast::ssl_stream<beast::tcp_stream>;

// One connection: reads a request, answers it (at once, after the engine, or
// as an event stream), then reads the next. Runs on its strand. `Stream` is
// plaintext or TLS.
template <class Stream>
class Session : public std::enable_shared_from_this<Session<Stream>> {
 public:
  // Plaintext.
  Session(tcp::socket socket, ServiceCore* core, const Site* site)
      : stream_(std::move(socket)), core_(core), site_(site) {}
  // TLS, with the context it keeps for as long as it lives (a reload replaces
  // the context new connections get, not this one's).
  Session(tcp::socket socket, ServiceCore* core, const Site* site, std::shared_ptr<net::ssl::context> tls)
      : tls_(std::move(tls)),
        stream_(std::move(socket), *tls_),
        core_(core),
        site_(site) {}

  void Start() {
    beast::error_code ec;
    Socket().non_blocking(true, ec);  // WatchForHangUp's peek must never wait
    net::dispatch(stream_.get_executor(), [self = this->shared_from_this()] {
      if constexpr (std::is_same_v<Stream, TlsStream>) {
        beast::get_lowest_layer(self->stream_).expires_after(kReadTimeout);
        self->stream_.async_handshake(net::ssl::stream_base::server, [self](beast::error_code ec) {
          if (ec) return self->Close();  // plaintext, an untrusted client certificate, a timeout
          self->Read();
        });
      } else {
        self->Read();
      }
    });
  }

 private:
  using std::enable_shared_from_this<Session<Stream>>::shared_from_this;
  tcp::socket& Socket() { return beast::get_lowest_layer(stream_).socket(); }

  using Request = http::request<http::string_body>;

  void Read() {
    parser_.emplace();
    // The body holds a base64 image: allowed up to the gRPC message limit.
    parser_->body_limit(static_cast<uint64_t>(core_->cfg.limits().max_message_bytes()));
    beast::get_lowest_layer(stream_).expires_after(kReadTimeout);
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this()](beast::error_code ec, size_t) { self->OnRead(ec); });
  }

  void OnRead(beast::error_code ec) {
    if (ec == http::error::body_limit) {
      keep_alive_ = false;
      linger_ = true;  // the client is still sending its body
      return Reply(413, ErrorJson(absl::InvalidArgumentError(absl::StrCat(
                            "the request body is larger than max_message_bytes (",
                            core_->cfg.limits().max_message_bytes(), ")"))));
    }
    if (ec) return Close();  // end of stream, timeout, reset, bad HTTP
    beast::get_lowest_layer(stream_).expires_never();
    request_ = parser_->release();
    keep_alive_ = request_.keep_alive();
    start_ = Clock::now();
    // A kept-alive connection serves one request after another: nothing of
    // the previous one carries over.
    id_.clear();
    stream_mode_ = include_usage_ = sent_role_ = headers_sent_ = ending_ = false;
    single_ = true;
    pending_.clear();
    token_text_ = nullptr;
    pending_logprobs_.clear();
    Route();
  }

  void Route() {
    const std::string target(request_.target());
    const std::string path = target.substr(0, target.find('?'));
    route_ = absl::StrCat(std::string(request_.method_string()), " ", path);
    if (path == "/v1/models" || path == kChatPath || path == kEmbeddingsPath) {
      const auto auth = request_.find(http::field::authorization);
      const absl::Status key =
          core_->Authenticate(auth == request_.end() ? absl::string_view()
                                                     : absl::string_view(auth->value().data(), auth->value().size()));
      if (!key.ok()) return Fail(key);
    }
    if (path == "/v1/models") {
      if (request_.method() != http::verb::get) return Fail(absl::InvalidArgumentError("use GET on /v1/models"));
      bool held = false;  // not a model call: only refused while draining, as GetModelInfo is
      if (const absl::Status admitted = core_->Admit(CallKind::kInfo, &held); !admitted.ok()) return Fail(admitted);
      std::vector<std::string> models;
      for (const std::string& m : {site_->model, site_->retrieval_model}) {
        if (!m.empty() && std::find(models.begin(), models.end(), m) == models.end()) models.push_back(m);
      }
      return Reply(200, ModelsJson(models, site_->created));
    }
    if (path == kChatPath || path == kEmbeddingsPath) {
      if (request_.method() != http::verb::post) return Fail(absl::InvalidArgumentError("use POST on " + path));
      return path == kChatPath ? Chat() : Embeddings();
    }
    return Fail(absl::NotFoundError(absl::StrCat("no such endpoint: ", path, " (this server has /v1/models, ", kChatPath,
                                                 " and ", kEmbeddingsPath, ")")));
  }

  // NOT_FOUND unless `asked` is `served`, naming what is served for `what`.
  absl::Status CheckModel(const std::string& asked, const std::string& served, const std::string& what) {
    if (!served.empty() && asked == served) return absl::OkStatus();
    if (served.empty()) {
      return absl::NotFoundError(absl::StrCat("this server has no model for ", what, " (GET /v1/models)"));
    }
    const bool known = asked == site_->model || asked == site_->retrieval_model;
    return absl::NotFoundError(absl::StrCat("the model \"", asked, known ? "\" does not serve " : "\" is not served here, nor ",
                                            what, "; \"", served, "\" does (GET /v1/models)"));
  }

  void Embeddings() {
    auto request = ParseEmbeddingsRequest(request_.body());
    if (!request.ok()) return Fail(request.status());
    if (absl::Status s = RetrievalAvailable(*core_, kEmbeddingsPath); !s.ok()) return Fail(s);
    if (absl::Status s = CheckModel(request->model, site_->retrieval_model, kEmbeddingsPath); !s.ok()) return Fail(s);
    const absl::Status admitted = core_->Admit(CallKind::kModel, &held_);
    if (!admitted.ok()) {
      ReleaseSlot();
      return Fail(admitted);
    }
    id_ = absl::StrCat("embd-", core_->next_request.fetch_add(1));
    auto shared = std::make_shared<EmbeddingsRequest>(std::move(*request));
    auto build = [core = core_, shared](engine::Engine& engine) {
      return BuildEmbedRequests(*core, engine, shared->embed);
    };
    RunRetrieval(core_, std::move(build),
                 [self = shared_from_this(), shared](absl::StatusOr<std::vector<engine::RetrievalResult>> results) {
                   net::post(self->stream_.get_executor(), [self, shared, results = std::move(results)] {
                     self->ReleaseSlot();
                     if (!results.ok()) return self->Fail(results.status());
                     const v1::EmbedResponse response =
                         EmbedResponseFromResults(*results, shared->embed.images_size());
                     int64_t tokens = 0;
                     for (const v1::TextEmbedding& t : response.texts()) tokens += t.tokens();
                     self->Record(200, tokens, "");
                     self->Reply(200, EmbeddingsJson(response, shared->model, shared->base64), /*recorded=*/true);
                   });
                 });
  }

  void Chat() {
    auto chat = ParseChatRequest(request_.body());
    if (!chat.ok()) return Fail(chat.status());
    if (absl::Status s = CheckModel(chat->model, site_->model, kChatPath); !s.ok()) return Fail(s);
    // The image: a data: URL's bytes now; an http(s) URL is checked against
    // the policy now and fetched once the request is admitted.
    const std::string field = "messages[0].content image_url.url";
    std::string bytes;
    std::optional<ImageUrl> remote;
    if (absl::StartsWithIgnoreCase(chat->image_url, "data:")) {
      auto decoded = DecodeDataUrl(chat->image_url, field);
      if (!decoded.ok()) return Fail(decoded.status());
      bytes = std::move(*decoded);
    } else {
      auto url = CheckImageUrl(chat->image_url, site_->image_urls, field);
      if (!url.ok()) return Fail(url.status());
      remote = std::move(*url);
    }
    const absl::Status admitted = core_->Admit(CallKind::kGeneration, &held_);
    if (!admitted.ok()) {
      ReleaseSlot();  // refused at max_concurrent_streams after taking one
      return Fail(admitted);
    }
    // The OpenAI API has no priority: chat requests queue at 0.
    auto tickets = core_->EnterQueue(/*priority=*/0, 1);
    if (!tickets.ok()) {
      ReleaseSlot();
      return Fail(tickets.status());
    }
    const AdmissionQueue::Ticket ticket = tickets->front();
    id_ = absl::StrCat("chatcmpl-", core_->next_request.fetch_add(1));
    if (!remote) return StartJob(std::move(*chat), std::move(bytes), ticket);
    FetchImage(beast::get_lowest_layer(stream_).get_executor(), *remote, site_->image_urls, site_->fetch_tls, field,
               [self = shared_from_this(), chat = std::move(*chat), ticket](absl::StatusOr<std::string> fetched) mutable {
                 if (!fetched.ok()) {
                   self->core_->LeaveQueue(ticket, /*started=*/false);
                   self->ReleaseSlot();
                   return self->Fail(fetched.status());
                 }
                 self->StartJob(std::move(chat), std::move(*fetched), ticket);
               });
  }

  void StartJob(ChatRequest chat, std::string image_bytes, AdmissionQueue::Ticket ticket) {
    stream_mode_ = chat.stream;
    include_usage_ = chat.include_usage;
    // Several sequences (n, beams) arrive whole at the end; one streams.
    single_ = chat.options.num_return_sequences() <= 1 && chat.options.num_beams() <= 1;
    JobInput input;
    input.image.set_data(std::move(image_bytes));
    input.prompt = chat.prompt;
    input.options = chat.options;
    JobCallbacks callbacks;
    auto self = shared_from_this();
    if (chat.logprobs) {
      token_text_ = [engine = core_->engine](int64_t token) { return engine->TokenText(token); };
    }
    if (stream_mode_ && single_) {
      callbacks.on_text = [self](const std::string& text) {
        net::post(self->stream_.get_executor(), [self, text] { self->SendDelta(text); });
      };
      if (chat.logprobs) {
        // Each token's log-probability goes out with the next text delta
        // (text can lag its tokens: a character split across tokens).
        callbacks.on_token = [self](int64_t, const engine::TokenLogprob* logprob) {
          if (logprob == nullptr) return;
          v1::TokenLogprob lp;
          FillLogprob(*logprob, &lp);
          net::post(self->stream_.get_executor(),
                    [self, lp = std::move(lp)] { self->pending_logprobs_.push_back(lp); });
        };
      }
    }
    callbacks.on_done = [self](absl::StatusOr<v1::Completion> result) {
      net::post(self->stream_.get_executor(), [self, result = std::move(result)] { self->Done(result); });
    };
    job_ = EngineJob::Start(core_, std::move(input), std::move(callbacks), start_, id_, ticket);
    WatchForHangUp();
  }

  // A client that closes its connection while waiting cancels its request.
  void WatchForHangUp() {
    const int64_t request = ++requests_;
    Socket().async_wait(tcp::socket::wait_read, [self = shared_from_this(), request](beast::error_code ec) {
      if (ec || !self->job_ || request != self->requests_) return;  // a later request's turn
      // Readable while we answer: the peer closed (or pipelined, which we do
      // not serve). The socket is non-blocking: a peek with nothing to read
      // returns would_block instead of stalling this thread.
      char byte;
      beast::error_code peek_ec;
      const size_t n = self->Socket().receive(net::buffer(&byte, 1), tcp::socket::message_peek, peek_ec);
      if ((peek_ec && peek_ec != net::error::would_block) || (!peek_ec && n == 0)) {
        self->gone_ = true;
        self->job_->Cancel();
      }
    });
  }

  // --- Event streams ---
  // The 200 and its headers go out with the first event, so a request that
  // fails before producing anything (an image that does not decode, options
  // the engine refuses) still gets its own status and a JSON error.
  void StartEvents() {
    headers_sent_ = true;
    auto header = std::make_shared<http::response<http::empty_body>>(http::status::ok, request_.version());
    header->set(http::field::content_type, "text/event-stream");
    header->set(http::field::cache_control, "no-cache");
    header->set("x-request-id", id_);
    header->keep_alive(keep_alive_);
    header->chunked(true);
    auto serializer = std::make_shared<http::response_serializer<http::empty_body>>(*header);
    writing_ = true;
    http::async_write_header(stream_, *serializer,
                             [self = shared_from_this(), header, serializer](beast::error_code ec, size_t) {
                               self->OnWritten(ec);
                             });
  }

  void SendDelta(const std::string& text) {
    if (text.empty()) return;
    QueueEvent(ChatChunkJson(id_, site_->model, site_->created, 0, !sent_role_, text, "", pending_logprobs_, token_text_));
    pending_logprobs_.clear();
    sent_role_ = true;
  }

  void QueueEvent(const std::string& json) { Queue("data: " + json + "\n\n"); }

  void Queue(std::string chunk) {
    if (gone_) return;
    if (!headers_sent_) StartEvents();
    pending_.push_back(std::move(chunk));
    if (!writing_) WriteNext();
  }

  void WriteNext() {
    if (pending_.empty()) {
      if (ending_) FinishEvents();
      return;
    }
    writing_ = true;
    current_ = std::move(pending_.front());
    pending_.pop_front();
    net::async_write(stream_, http::make_chunk(net::buffer(current_)),
                     [self = shared_from_this()](beast::error_code ec, size_t) { self->OnWritten(ec); });
  }

  void OnWritten(beast::error_code ec) {
    writing_ = false;
    if (ec) {
      gone_ = true;
      if (job_) job_->Cancel();
      pending_.clear();
      if (ending_) Close();
      return;
    }
    WriteNext();
  }

  void FinishEvents() {
    ending_ = false;
    writing_ = true;
    net::async_write(stream_, http::make_chunk_last(), [self = shared_from_this()](beast::error_code ec, size_t) {
      self->writing_ = false;
      if (ec || !self->keep_alive_) return self->Close();
      self->Read();
    });
  }

  // --- The end of a request ---
  void ReleaseSlot() {
    if (held_) core_->Leave();
    held_ = false;
  }

  void Done(const absl::StatusOr<v1::Completion>& result) {
    job_.reset();
    ReleaseSlot();
    // 499: the client closed the connection first (nginx's convention).
    Record(gone_ ? 499 : result.ok() ? 200 : HttpStatusOf(result.status()),
           result.ok() ? result->usage().generated_tokens() : 0, gone_ ? "the client went away" : std::string(result.status().message()));
    if (gone_) return Close();
    if (!stream_mode_) {
      if (!result.ok()) return Reply(HttpStatusOf(result.status()), ErrorJson(result.status()), /*recorded=*/true);
      return Reply(200, ChatCompletionJson(*result, id_, site_->model, site_->created, token_text_), /*recorded=*/true);
    }
    if (!result.ok() && !headers_sent_) {
      return Reply(HttpStatusOf(result.status()), ErrorJson(result.status()), /*recorded=*/true);
    }
    if (!result.ok()) {
      QueueEvent(ErrorJson(result.status()));  // after some text: an error event, then [DONE]
    } else {
      const v1::Completion& c = *result;
      for (int i = 0; i < c.sequences_size(); ++i) {
        const v1::Sequence& s = c.sequences(i);
        // Several sequences come whole; a single one has streamed its text.
        if (!single_) {
          const std::vector<v1::TokenLogprob> all(s.logprobs().begin(), s.logprobs().end());
          QueueEvent(ChatChunkJson(id_, site_->model, site_->created, i, true, s.text(), "", all, token_text_));
        }
        if (single_ && !sent_role_) QueueEvent(ChatChunkJson(id_, site_->model, site_->created, i, true, "", "", {}, token_text_));
        // A single sequence's tokens whose text never came (an end token).
        QueueEvent(ChatChunkJson(id_, site_->model, site_->created, i, false, "", OpenAiFinishReason(s.finish_reason()),
                                 single_ ? pending_logprobs_ : std::vector<v1::TokenLogprob>{}, token_text_));
        pending_logprobs_.clear();
      }
      if (include_usage_) QueueEvent(UsageChunkJson(id_, site_->model, site_->created, c.usage()));
    }
    Queue("data: [DONE]\n\n");
    ending_ = true;
    if (!writing_) WriteNext();
  }

  void Fail(const absl::Status& status) {
    Record(HttpStatusOf(status), 0, std::string(status.message()));
    Reply(HttpStatusOf(status), ErrorJson(status), /*recorded=*/true);
  }

  // A whole JSON response; then the next request on a kept-alive connection.
  void Reply(int status, std::string body, bool recorded = false) {
    if (!recorded) Record(status, 0, "");
    auto response = std::make_shared<http::response<http::string_body>>(static_cast<http::status>(status),
                                                                         request_.version() ? request_.version() : 11);
    response->set(http::field::content_type, "application/json");
    if (!id_.empty()) response->set("x-request-id", id_);
    if (status == 401) response->set(http::field::www_authenticate, "Bearer");
    response->keep_alive(keep_alive_);
    response->body() = std::move(body);
    response->prepare_payload();
    http::async_write(stream_, *response, [self = shared_from_this(), response](beast::error_code ec, size_t) {
      if (ec || !self->keep_alive_) return self->Close();
      self->Read();
    });
  }

  // Metrics and the access log, as for gRPC calls: rpc "POST /v1/...", and
  // the canonical code name, so one alert on RESOURCE_EXHAUSTED covers both
  // fronts. The log line has the HTTP status too.
  void Record(int status, int64_t tokens, const std::string& error) {
    if (route_.empty()) route_ = "HTTP";
    const double seconds = std::chrono::duration<double>(Clock::now() - start_).count();
    const std::string code = absl::StrCat(CodeName(status), " ", status);
    core_->metrics->requests.Add({route_, CodeName(status)});
    core_->metrics->request_duration.Observe({route_}, seconds);
    beast::error_code ec;
    const auto peer = Socket().remote_endpoint(ec);
    spdlog::info("[{}] {} {} {:.1f} ms tokens={} peer={}{}{}", id_.empty() ? "-" : id_, route_, code, seconds * 1000,
                 tokens, ec ? std::string("?") : absl::StrCat(peer.address().to_string(), ":", peer.port()),
                 error.empty() ? "" : " error=", error);
  }

  void Close() {
    beast::error_code ec;
    if (linger_) return Linger();
    Socket().shutdown(tcp::socket::shutdown_both, ec);
    Socket().close(ec);
  }

  // After refusing a request whose body is still arriving (413): stop
  // sending, then read and drop what the client sends for a while before
  // closing. Closing at once would reset the connection under the client's
  // unsent bytes, and many clients then report a reset instead of our answer
  // (nginx's lingering_close).
  void Linger() {
    linger_ = false;
    beast::error_code ec;
    Socket().shutdown(tcp::socket::shutdown_send, ec);
    beast::get_lowest_layer(stream_).expires_after(std::chrono::seconds(5));
    DrainSome();
  }
  void DrainSome() {
    auto scratch = std::make_shared<std::array<char, 16384>>();
    beast::get_lowest_layer(stream_).async_read_some(
        net::buffer(*scratch), [self = shared_from_this(), scratch](beast::error_code ec, size_t) {
          if (!ec) return self->DrainSome();
          self->Close();  // end of stream, the 5 s limit, or an error
        });
  }

  std::shared_ptr<net::ssl::context> tls_;  // TLS only; before stream_, which uses it
  Stream stream_;
  ServiceCore* core_;
  const Site* site_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  Request request_;
  bool keep_alive_ = true;
  Clock::time_point start_ = Clock::now();
  std::string route_;
  std::string id_;
  bool held_ = false;  // an admission slot
  bool linger_ = false;  // drain the client's unread body before closing
  int64_t requests_ = 0;  // requests that reached the engine on this connection
  std::shared_ptr<EngineJob> job_;
  bool gone_ = false;  // the client closed the connection
  // Event streams.
  bool stream_mode_ = false;
  bool include_usage_ = false;
  bool single_ = true;
  bool sent_role_ = false;
  bool writing_ = false;
  bool ending_ = false;
  bool headers_sent_ = false;
  std::deque<std::string> pending_;
  TokenText token_text_;                          // set when the request asked for logprobs
  std::vector<v1::TokenLogprob> pending_logprobs_;  // streamed tokens whose text is not out yet
  std::string current_;
};

}  // namespace

// A TLS context from the security settings' files (TLS 1.2 and up; with a
// client CA, clients must present a certificate it signed).
absl::StatusOr<std::shared_ptr<net::ssl::context>> MakeTlsContext(const config::Security& s) {
  auto ctx = std::make_shared<net::ssl::context>(net::ssl::context::tls_server);
  ctx->set_options(net::ssl::context::default_workarounds | net::ssl::context::no_sslv2 |
                   net::ssl::context::no_sslv3 | net::ssl::context::no_tlsv1 | net::ssl::context::no_tlsv1_1);
  beast::error_code ec;
  ctx->use_certificate_chain_file(s.tls_cert_file(), ec);
  if (ec) return absl::InvalidArgumentError("security.tls_cert_file: " + ec.message());
  ctx->use_private_key_file(s.tls_key_file(), net::ssl::context::pem, ec);
  if (ec) return absl::InvalidArgumentError("security.tls_key_file: " + ec.message());
  if (!s.tls_client_ca_file().empty()) {
    ctx->load_verify_file(s.tls_client_ca_file(), ec);
    if (ec) return absl::InvalidArgumentError("security.tls_client_ca_file: " + ec.message());
    ctx->set_verify_mode(net::ssl::verify_peer | net::ssl::verify_fail_if_no_peer_cert);
  }
  return ctx;
}

struct HttpFront::Impl {
  ServiceCore* core = nullptr;
  Site site;
  net::io_context ioc;
  tcp::acceptor acceptor{ioc};
  std::vector<std::thread> threads;
  int port = 0;
  config::Security security;
  // The TLS context new connections use (null: plaintext). Replaced whole by
  // Reload; connections keep the one they started with.
  std::mutex tls_mu;
  std::shared_ptr<net::ssl::context> tls;
  std::unique_ptr<net::steady_timer> reload_timer;

  std::shared_ptr<net::ssl::context> Tls() {
    std::lock_guard<std::mutex> lock(tls_mu);
    return tls;
  }

  absl::Status Reload() {
    if (!Tls()) return absl::OkStatus();
    auto fresh = MakeTlsContext(security);
    if (!fresh.ok()) {
      spdlog::warn("HTTP TLS certificate not reloaded, the one in use stays: {}", std::string(fresh.status().message()));
      return fresh.status();
    }
    std::lock_guard<std::mutex> lock(tls_mu);
    tls = *fresh;
    return absl::OkStatus();
  }

  // Re-reads the certificate files every tls_refresh_seconds, as gRPC's watcher does.
  void ScheduleReload() {
    reload_timer->expires_after(std::chrono::seconds(security.tls_refresh_seconds()));
    reload_timer->async_wait([this](beast::error_code ec) {
      if (ec) return;
      Reload().IgnoreError();  // logged
      ScheduleReload();
    });
  }

  void Accept() {
    acceptor.async_accept(net::make_strand(ioc), [this](beast::error_code ec, tcp::socket socket) {
      if (ec == net::error::operation_aborted) return;
      if (!ec) {
        socket.set_option(tcp::no_delay(true), ec);
        if (auto ctx = Tls()) {
          std::make_shared<Session<TlsStream>>(std::move(socket), core, &site, std::move(ctx))->Start();
        } else {
          std::make_shared<Session<PlainStream>>(std::move(socket), core, &site)->Start();
        }
      }
      Accept();
    });
  }
};

HttpFront::HttpFront(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpFront::~HttpFront() {
  beast::error_code ec;
  impl_->acceptor.close(ec);
  if (impl_->reload_timer) impl_->reload_timer->cancel();
  impl_->ioc.stop();
  for (std::thread& t : impl_->threads) t.join();
}

int HttpFront::port() const { return impl_->port; }

absl::Status HttpFront::Reload() { return impl_->Reload(); }

absl::StatusOr<std::unique_ptr<HttpFront>> HttpFront::Start(ServiceCore* core, const std::string& host, int port,
                                                            int threads, const std::string& model,
                                                            const std::string& retrieval_model,
                                                            const config::Security& security) {
  auto impl = std::make_unique<Impl>();
  impl->core = core;
  impl->site.model = model;
  impl->site.retrieval_model = retrieval_model;
  impl->site.image_urls = ImageUrlPolicyFromConfig(core->cfg.image_urls());
  if (!impl->site.image_urls.allowed_domains.empty()) impl->site.fetch_tls = MakeClientTlsContext();
  impl->security = security;
  if (!security.tls_cert_file().empty()) {
    auto tls = MakeTlsContext(security);
    if (!tls.ok()) return tls.status();
    impl->tls = *tls;
    impl->reload_timer = std::make_unique<net::steady_timer>(impl->ioc);
    impl->ScheduleReload();
  }
  beast::error_code ec;
  const auto address = net::ip::make_address(host == "localhost" ? "127.0.0.1" : host, ec);
  if (ec) return absl::InvalidArgumentError("host \"" + host + "\" is not an IP address");
  const tcp::endpoint endpoint(address, static_cast<uint16_t>(port));
  impl->acceptor.open(endpoint.protocol(), ec);
  if (!ec) impl->acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) impl->acceptor.bind(endpoint, ec);
  if (!ec) impl->acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("HTTP: cannot listen on ", host, ":", port, ": ", ec.message()));
  impl->port = impl->acceptor.local_endpoint().port();
  impl->Accept();
  Impl* raw = impl.get();
  for (int i = 0; i < std::max(1, threads); ++i) {
    raw->threads.emplace_back([raw] { raw->ioc.run(); });
    pthread_setname_np(raw->threads.back().native_handle(), "blip2-openai");
  }
  return std::unique_ptr<HttpFront>(new HttpFront(std::move(impl)));
}

}  // namespace blip2::server
