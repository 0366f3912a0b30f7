// SPDX-License-Identifier: MIT
// WebSocket connections (RFC 6455, permessage-deflate RFC 7692), server and client, for fibers.
//
// Server side, from an HTTP handler:
//
//   routes.get("/ws/echo", [](squall::http::request& req, squall::http::response& resp) {
//     auto ws = squall::websocket::accept(req, resp);      // the 101 handshake
//     while (auto m = ws.receive())                         // empty once the peer closed
//       ws.send(m->data, m->type);
//   });
//
// Client side, from a fiber:
//
//   auto ws = squall::websocket::connect("ws://127.0.0.1:8888/ws/echo");
//   ws.send_text("hello");
//   auto m = ws.receive();
//
// One fiber reads (receive); any fiber may send at the same time (sends are serialised, a frame
// is never interleaved with another). receive() answers pings and handles the close handshake;
// a protocol violation by the peer closes the connection with the right code (1002, 1007, 1009)
// and receive() then returns empty, with close_code() telling what happened.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "squall/io_loop.hpp"
#include "squall/unique_function.hpp"
#include "squall/websocket/frame.hpp"

namespace squall {
class io_stream;
namespace http {
class request;
class response;
}  // namespace http
}  // namespace squall

namespace squall::websocket {

struct options {
  // Largest message, after reassembly and decompression (Tornado's default): 1009 past it.
  std::size_t max_message_size = 10 * 1024 * 1024;
  // Send a ping this often when nothing else is heard (0: never), and close the connection
  // (1006 locally, 1011 sent) if no pong or other frame arrives within ping_timeout (0: as long
  // as max(3 * ping_interval, 30 s), Tornado's rule).
  duration ping_interval = duration::zero();
  duration ping_timeout = duration::zero();
  // After sending a close, how long to wait for the peer's close before dropping the connection.
  duration close_timeout = std::chrono::seconds(5);
  // permessage-deflate: offered (client) / accepted (server) when true.
  bool compression = false;
  deflate_params deflate{};
  // Messages shorter than this are sent uncompressed even when compression is on.
  std::size_t compression_threshold = 64;
  int compression_level = 6;
  // Subprotocols: the server picks the first of these the client offered; the client offers
  // them in this order.
  std::vector<std::string> subprotocols;

  // Server: accepts or refuses a handshake by its Origin header (empty if none was sent). The
  // default (unset) is Tornado's: refuse (403) when Origin is present and its host differs from
  // the Host header.
  unique_function<bool(std::string_view origin, const http::request& req)> check_origin;

  // Client: extra request headers, and the time allowed for connecting and the handshake.
  std::vector<std::pair<std::string, std::string>> headers;
  duration connect_timeout = std::chrono::seconds(20);
};

struct message {
  opcode type = opcode::text;  // text or binary
  std::string_view data;       // valid until the next receive()
  bool is_text() const noexcept { return type == opcode::text; }
};

class connection {
 public:
  connection(connection&&) noexcept;
  connection& operator=(connection&&) noexcept;
  // Drops the connection (no close handshake: call close() for that).
  ~connection();

  // The next text or binary message, or nothing once the connection is closed (by either side,
  // or by a protocol error, a timeout, or the peer vanishing; see close_code()). Throws
  // error::timed_out if `deadline` passes first (the connection stays usable).
  std::optional<message> receive(time_point deadline = time_point::max());

  // Sends a whole message. Waits while the peer does not read (backpressure: the unsent data
  // stays bounded by the stream's high-water mark). Throws error::closed once closed.
  void send(std::string_view data, opcode type = opcode::text);
  void send_text(std::string_view text) { send(text, opcode::text); }
  void send_binary(std::string_view data) { send(data, opcode::binary); }
  void ping(std::string_view payload = {});

  // Starts the close handshake (if not started) and waits (up to close_timeout) for the peer's
  // close; then the connection is closed. Idempotent.
  void close(std::uint16_t code = close_code::normal, std::string_view reason = {});

  bool closed() const noexcept;
  // The code from the peer's close frame (or close_code::no_status if it had none), or the code
  // we closed with after a protocol error, or close_code::abnormal if the connection dropped.
  std::uint16_t close_code() const noexcept;
  const std::string& close_reason() const noexcept;
  // The negotiated subprotocol ("" if none) and whether permessage-deflate is in use.
  const std::string& subprotocol() const noexcept;
  bool compressed() const noexcept;

  struct state;

 private:
  friend connection accept(http::request&, http::response&, options);
  friend connection connect(std::string_view, options);
  explicit connection(std::shared_ptr<state> st);
  std::shared_ptr<state> st_;
};

// Server: validates the upgrade request (GET, HTTP/1.1, Upgrade: websocket, Connection:
// upgrade, Sec-WebSocket-Version: 13 (else 426 with the version we speak), a valid
// Sec-WebSocket-Key, the origin check), negotiates subprotocol and compression, sends the 101,
// and returns the connection over the hijacked stream. A bad handshake throws
// http::request_error (400, 403, 426), which the HTTP server answers. The connection is valid
// while the handler runs.
connection accept(http::request& req, http::response& resp, options opts = {});

// Client: connects to a ws:// URL (wss:// needs TLS: not built yet), handshakes, and returns the
// connection. Throws std::system_error for transport errors, websocket::handshake_error when the
// server refuses or answers wrongly. From a fiber.
connection connect(std::string_view url, options opts = {});

class handshake_error : public std::runtime_error {
 public:
  handshake_error(const std::string& what, int status = 0)
      : std::runtime_error(what), status_(status) {}
  int status() const noexcept { return status_; }  // the HTTP status the server answered, or 0

 private:
  int status_;
};

}  // namespace squall::websocket
