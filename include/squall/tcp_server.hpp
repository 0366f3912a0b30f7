// SPDX-License-Identifier: MIT
// Listening sockets and tcp_server: accept connections, run each in its own fiber.
//
//   squall::tcp_server server(loop, [](squall::io_stream& s, const squall::address& peer) {
//     for (;;) {
//       auto data = s.read_some();
//       if (data.empty()) return;          // the peer closed
//       s.write(data);
//     }
//   });
//   server.listen(8888, "127.0.0.1");
//   loop.run();
//
// The handler runs in a fiber per connection, with the connection's io_stream; when it returns
// (or throws) the connection is flushed and closed. error::closed / error::reset from the
// stream end a connection quietly (debug log); any other exception is logged as an error.
// Works the same for Unix domain listening sockets (bind_unix_socket).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "squall/io_stream.hpp"

namespace squall {

// Creates listening sockets for `host` ("" or "*": every local address, IPv4 and IPv6;
// "localhost": 127.0.0.1 and ::1; otherwise a numeric address) on `port` (0 picks a free port,
// shared by all families). `family` is AF_UNSPEC, AF_INET or AF_INET6. Sockets are non-blocking,
// close-on-exec, SO_REUSEADDR, IPV6_V6ONLY for IPv6, and SO_REUSEPORT if asked (several
// processes or loops sharing a port). Returns one fd per address family; the caller owns them.
// Throws std::system_error (EADDRINUSE, ...) or std::invalid_argument for a non-numeric host.
std::vector<int> bind_sockets(std::uint16_t port, std::string_view host = "",
                              int family = AF_UNSPEC, int backlog = 1024, bool reuse_port = false);

// A listening Unix domain stream socket at `path` (an existing socket file there is replaced).
int bind_unix_socket(const std::string& path, int backlog = 1024);

struct tcp_server_options {
  // Connections served at once; 0 is unlimited. When full, the server stops accepting until one
  // ends (connections wait in the kernel's backlog).
  std::size_t max_connections = 0;
  io_stream_options stream{};
  // Stack size of connection fibers (0: the loop's default).
  std::size_t stack_size = 0;
  // Disable Nagle on accepted TCP connections.
  bool nodelay = true;
};

class tcp_server {
 public:
  using handler = unique_function<void(io_stream& stream, const address& peer)>;

  tcp_server(io_loop& loop, handler h, tcp_server_options opts = {});
  // Stops accepting and cancels the connections still open (see shutdown() for a graceful end).
  ~tcp_server();
  tcp_server(const tcp_server&) = delete;
  tcp_server& operator=(const tcp_server&) = delete;

  // bind_sockets() + add_sockets().
  void listen(std::uint16_t port, std::string_view host = "", bool reuse_port = false);
  // Starts accepting on listening sockets (takes ownership). Loop thread only.
  void add_sockets(const std::vector<int>& fds);
  // The addresses being listened on (to learn the port after listen(0)).
  std::vector<address> addresses() const;

  // Stops accepting: closes the listening sockets. Open connections go on. Idempotent.
  void stop();
  // Graceful end, from a fiber: stop accepting, wait for the open connections to finish until
  // `deadline`, then cancel those left and wait for them to unwind.
  void shutdown(time_point deadline);

  std::size_t connection_count() const noexcept;
  // Connections accepted so far.
  std::uint64_t accepted() const noexcept;

  struct state;

 private:
  std::shared_ptr<state> st_;
};

}  // namespace squall
