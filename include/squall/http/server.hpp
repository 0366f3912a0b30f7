// SPDX-License-Identifier: MIT
// HTTP/1.1 server: a handler per request, run in the connection's fiber.
//
//   squall::http::router routes;
//   routes.get("/", [](squall::http::request&, squall::http::response& resp) {
//     resp.send("Hello, World!\n");
//   });
//   routes.post("/upload/{name}", [](auto& req, auto& resp) {
//     std::string_view body = req.body();          // reads the whole body (bounded)
//     resp.send(std::string(req.param("name")) + ": " + std::to_string(body.size()) + "\n");
//   });
//   squall::http::server server(loop, std::move(routes));
//   server.listen(8888, "127.0.0.1");
//   loop.run();
//
// Each connection is one fiber reading requests one after the other (keep-alive and pipelining:
// pipelined requests are answered in order, and the responses to one batch go out in one send).
// The handler may block its fiber (wait on a lock, fetch from another server, sleep); other
// connections go on.
//
// Request bodies are pulled by the handler, as in Go's net/http: body() reads and returns the
// whole body (Tornado's default), read_body_some() streams it piece by piece (Tornado's
// stream_request_body). "100 Continue" is sent when the handler first reads the body of a request
// that asked for it, so a handler that refuses (401, 413...) without reading never receives the
// body. A body left unread when the handler returns is read and dropped if small, otherwise the
// connection is closed after the response.
//
// Responses: send(body) writes a complete response with Content-Length; write()/flush() stream
// one (chunked in HTTP/1.1, unless the handler set a Content-Length; close-delimited in HTTP/1.0).
// When the handler returns, an unfinished response is finished (an untouched one becomes an empty
// 200). HEAD responses carry the headers of the matching GET and no body.
//
// Errors: a malformed request is answered with its status (see parser.hpp) and the connection
// closed. An exception escaping a handler is logged with its message and becomes "500 Internal
// Server Error" (the message is not sent) if the response had not started; the connection stays
// usable. If it had started, the connection is closed (the client sees a truncated response).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "squall/http/parser.hpp"
#include "squall/io_loop.hpp"
#include "squall/io_stream.hpp"
#include "squall/net.hpp"
#include "squall/unique_function.hpp"

namespace squall::http {

namespace detail {
struct connection;
}

class request {
 public:
  std::string_view method() const noexcept;
  // The request target as received ("/a/b?x=1"), its path ("/a/b", still percent-encoded) and
  // query ("x=1", without the '?').
  std::string_view target() const noexcept;
  std::string_view path() const noexcept;
  std::string_view query() const noexcept;
  int minor_version() const noexcept;  // HTTP/1.<minor_version>
  const message_head& head() const noexcept;
  // The first header named `name` (case-insensitive), or an empty view.
  std::string_view header(std::string_view name) const noexcept;

  // The peer's address, and its IP as text. With server_options::xheaders, remote_ip() comes
  // from X-Real-IP or the last X-Forwarded-For entry, and protocol() from X-Forwarded-Proto or
  // X-Scheme ("http" or "https" only), when those hold valid values (Tornado's xheaders).
  const address& peer() const noexcept;
  std::string_view remote_ip() const;  // formats the address on first use: may allocate
  std::string_view protocol() const noexcept;

  // A capture of the route that matched ("{name}" in the pattern), or an empty view.
  std::string_view param(std::string_view name) const noexcept;
  // The part of the path after a prefix route's prefix ("" for the prefix itself). A null view
  // (data() == nullptr) when the request was not routed through a prefix route.
  std::string_view path_rest() const noexcept;

  // The whole body (empty if none), decompressed when the server decompresses requests. Reads it
  // on the first call (sending 100 Continue first if asked), later calls return the same view.
  // Throws http::request_error (413 past max_body_size, 400 for a malformed chunked or gzip body,
  // 408 on body_timeout) which the server answers: let it propagate.
  std::string_view body();
  // Streams the body instead: the next piece (valid until the next call), or an empty view at
  // its end. Do not mix with body().
  std::string_view read_body_some();
  // The whole body has been read.
  bool body_done() const noexcept;

 private:
  friend struct detail::connection;
  friend class router;
  explicit request(detail::connection& c) : c_(c) {}
  detail::connection& c_;
};

class response {
 public:
  // Before the head is sent. The reason defaults to the standard phrase.
  void set_status(int code, std::string_view reason = {});
  int status() const noexcept;
  // Adds a header field (several with one name are allowed). Throws std::invalid_argument for a
  // name that is not a token or a value with CR, LF or NUL. Date, Server, Content-Length,
  // Transfer-Encoding and Connection are written by the server (set_content_length and
  // close_connection control the last ones).
  void add_header(std::string_view name, std::string_view value);
  // Replaces every field named `name`.
  void set_header(std::string_view name, std::string_view value);
  // For a streamed response whose length is known: sent as Content-Length instead of chunked.
  void set_content_length(std::uint64_t n);
  // The connection closes after this response.
  void close_connection() noexcept;

  // A complete response with this body (Content-Length). Ends the response.
  void send(std::string_view body);
  // Streams: writes the head (first call), then this piece of body.
  void write(std::string_view data);
  // Sends what has been written so far to the client now.
  void flush();
  // Ends a streamed response (the final chunk). Called by the server if the handler did not.
  void finish();
  // An error page: status, text/plain body "<code> <reason>\n".
  void send_error(int code);

  bool started() const noexcept;   // the head has been written
  bool finished() const noexcept;  // the response is complete

  // Takes the connection over for another protocol (WebSocket, a CONNECT tunnel): writes the
  // head as set so far (typically 101 with Upgrade and Connection fields; no framing fields are
  // added) and returns the stream, positioned after this request's head. Bytes the client sent
  // after the head are in the stream's buffer. The handler keeps the stream for as long as it
  // runs; when it returns, the server closes the connection (no further HTTP requests).
  io_stream& hijack();
  bool hijacked() const noexcept;

 private:
  friend struct detail::connection;
  explicit response(detail::connection& c) : c_(c) {}
  detail::connection& c_;
};

// A handler may throw this to answer with `status` (and close the connection if asked).
class request_error : public std::runtime_error {
 public:
  request_error(int status, const std::string& what, bool close = true)
      : std::runtime_error(what), status_(status), close_(close) {}
  int status() const noexcept { return status_; }
  bool close() const noexcept { return close_; }

 private:
  int status_;
  bool close_;
};

using handler = unique_function<void(request&, response&)>;

// Routes by method and path. Patterns: an exact path ("/about"), a prefix ("/static/*": the rest
// is request::path_rest()), or segments with captures ("/user/{id}/posts/{post}", each capture
// matching one non-empty segment). The first route that matches the path wins; if its method
// differs from the request's (and no later route matches both), the answer is 405 with Allow;
// no matching path is 404. HEAD is served by GET routes. Patterns are matched against the raw
// (percent-encoded) path.
class router {
 public:
  router();
  router(router&&) noexcept;
  router& operator=(router&&) noexcept;
  ~router();

  // `method` "*" matches every method.
  router& add(std::string_view method, std::string_view pattern, handler h);
  router& get(std::string_view pattern, handler h) { return add("GET", pattern, std::move(h)); }
  router& post(std::string_view pattern, handler h) { return add("POST", pattern, std::move(h)); }
  router& put(std::string_view pattern, handler h) { return add("PUT", pattern, std::move(h)); }
  router& del(std::string_view pattern, handler h) { return add("DELETE", pattern, std::move(h)); }

  // Serves a request (the router is itself a handler).
  void operator()(request& req, response& resp);

  struct route;

 private:
  route* exact_route(std::string_view path) const noexcept;
  void scan(request& req, response& resp);

  std::vector<std::unique_ptr<route>> routes_;
  // Exact paths to the index of the first route with that pattern (views of the routes' own
  // patterns, which do not move): most requests are routed with one lookup instead of a match
  // against every route before theirs.
  std::unordered_map<std::string_view, std::size_t> exact_;
  std::size_t first_general_ = SIZE_MAX;  // the first prefix or segments route
};

struct server_options {
  parse_limits limits{};
  // Waiting for the next request on a kept-alive connection (nginx's keepalive_timeout).
  duration idle_timeout = std::chrono::seconds(75);
  // From the first byte of a request to the end of its head (slowloris); 408 then close.
  duration header_timeout = std::chrono::seconds(30);
  // Longest wait between two reads of a request body (nginx's client_body_timeout); 408.
  duration body_timeout = std::chrono::seconds(60);
  // Connections served at once; further ones wait in the kernel's backlog. 0: unlimited.
  std::size_t max_connections = 10000;
  // Requests served on one connection before it is closed (0: unlimited).
  std::uint64_t max_requests_per_connection = 0;
  // An unread body up to this size is read and dropped so the connection can be reused; a larger
  // one closes the connection after the response.
  std::size_t max_discard = 256 * 1024;
  // Honour X-Real-IP / X-Forwarded-For / X-Forwarded-Proto / X-Scheme (behind a trusted proxy).
  bool xheaders = false;
  // gzip responses with a compressible Content-Type of at least gzip_min_length bytes when the
  // client accepts it (needs zlib).
  bool gzip = false;
  std::size_t gzip_min_length = 1024;
  // Decode request bodies sent with Content-Encoding: gzip (needs zlib).
  bool decompress_request = false;
  // The Server header ("" for none).
  std::string server_name = "squall";
  // After an error response, read and drop what the client still sends for at most this long
  // before closing, so the client gets to read the response instead of a reset.
  duration linger_timeout = std::chrono::seconds(2);
  // Stack size of connection fibers (0: the loop's default).
  std::size_t stack_size = 0;
  // Called after each response (access log): request, status, body bytes sent, time taken.
  unique_function<void(const request&, int status, std::uint64_t bytes, duration took)> on_response;
};

class server {
 public:
  server(io_loop& loop, handler h, server_options opts = {});
  // Stops accepting and cancels open connections (shutdown() is the graceful way).
  ~server();
  server(const server&) = delete;
  server& operator=(const server&) = delete;

  void listen(std::uint16_t port, std::string_view host = "", bool reuse_port = false);
  // Takes listening sockets (see bind_sockets in tcp_server.hpp). Loop thread only.
  void add_sockets(const std::vector<int>& fds);
  std::vector<address> addresses() const;

  // Stops accepting. Open connections go on.
  void stop();
  // From a fiber: stop accepting, close idle keep-alive connections now, let requests in flight
  // finish (their responses say Connection: close) until `deadline`, then cancel what is left.
  void shutdown(time_point deadline);

  std::size_t connection_count() const noexcept;
  std::uint64_t requests_served() const noexcept;

  struct state;

 private:
  std::shared_ptr<state> st_;
};

// The standard reason phrase of a status code ("Unknown" if none).
std::string_view reason_phrase(int status) noexcept;

}  // namespace squall::http
