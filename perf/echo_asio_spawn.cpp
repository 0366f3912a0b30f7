// SPDX-License-Identifier: MIT
// echo_asio_spawn: the Boost.Asio echo server of perf/run_net with stackful coroutines
// (boost::asio::spawn on Boost.Coroutine, Boost 1.74), the nearest thing in Asio to squall's
// fiber per connection:
//
//   echo_asio_spawn [--port P]        (listens on 127.0.0.1:P, default 8007; prints "listening")
//
//   - io_context with concurrency hint 1, run by the main thread (epoll reactor);
//   - an accept coroutine; a coroutine per connection (Boost.Coroutine's default stack: malloc'd,
//     no guard page), TCP_NODELAY, a 64 KiB heap buffer, and the loop
//       n = async_read_some(buffer, yield); async_write(socket, buffer(data, n), yield);
//   - EOF or an error ends the coroutine.
//
// SIGTERM/SIGINT end it (default action).
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/spawn.hpp>
#include <boost/asio/write.hpp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <utility>

namespace asio = boost::asio;
using asio::ip::tcp;

namespace {

constexpr std::size_t buffer_size = 64 * 1024;

void serve(tcp::socket socket, asio::yield_context yield) {
  std::unique_ptr<char[]> data(new char[buffer_size]);
  boost::system::error_code ec;
  for (;;) {
    std::size_t n = socket.async_read_some(asio::buffer(data.get(), buffer_size), yield[ec]);
    if (ec) return;
    asio::async_write(socket, asio::buffer(data.get(), n), yield[ec]);
    if (ec) return;
  }
}

}  // namespace

int main(int argc, char** argv) {
  int port = 8007;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--port") == 0 && i + 1 < argc) {
      port = std::atoi(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: echo_asio_spawn [--port P]\n");
      return 2;
    }
  }
  try {
    asio::io_context io(1);
    tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::make_address_v4("127.0.0.1"),
                                             static_cast<unsigned short>(port)));
    asio::spawn(io, [&io, &acceptor](asio::yield_context yield) {
      for (;;) {
        boost::system::error_code ec;
        tcp::socket s(io);
        acceptor.async_accept(s, yield[ec]);
        if (ec) continue;
        s.set_option(tcp::no_delay(true), ec);
        asio::spawn(io,
                    [s = std::move(s)](asio::yield_context y) mutable { serve(std::move(s), y); });
      }
    });
    std::printf("echo_asio_spawn listening on 127.0.0.1:%d (stackful coroutines)\n", port);
    std::fflush(stdout);
    io.run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "echo_asio_spawn: %s\n", e.what());
    return 1;
  }
  return 0;
}
