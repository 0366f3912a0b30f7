// SPDX-License-Identifier: MIT
// echo_asio: the Boost.Asio echo server of perf/run_net, with completion callbacks (the shape of
// Asio's own async_tcp_echo_server example, with a 64 KiB buffer):
//
//   echo_asio [--port P]        (listens on 127.0.0.1:P, default 8007; prints "listening")
//
//   - io_context with concurrency hint 1, run by the main thread (epoll reactor);
//   - a session per connection (shared_ptr, TCP_NODELAY) with a 64 KiB buffer: async_read_some,
//     then async_write of what was read, then the next read: one operation in flight at a time;
//   - EOF or an error ends the session.
//
// SIGTERM/SIGINT end it (default action).
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
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

class session : public std::enable_shared_from_this<session> {
 public:
  explicit session(tcp::socket s) : socket_(std::move(s)), data_(new char[buffer_size]) {}

  void start() { read(); }

 private:
  void read() {
    auto self = shared_from_this();
    socket_.async_read_some(asio::buffer(data_.get(), buffer_size),
                            [this, self](boost::system::error_code ec, std::size_t n) {
                              if (!ec) write(n);
                            });
  }

  void write(std::size_t n) {
    auto self = shared_from_this();
    asio::async_write(socket_, asio::buffer(data_.get(), n),
                      [this, self](boost::system::error_code ec, std::size_t) {
                        if (!ec) read();
                      });
  }

  tcp::socket socket_;
  std::unique_ptr<char[]> data_;
};

class server {
 public:
  server(asio::io_context& io, unsigned short port)
      : acceptor_(io, tcp::endpoint(asio::ip::make_address_v4("127.0.0.1"), port)) {
    accept();
  }

 private:
  void accept() {
    acceptor_.async_accept([this](boost::system::error_code ec, tcp::socket s) {
      if (!ec) {
        boost::system::error_code ignored;
        s.set_option(tcp::no_delay(true), ignored);
        std::make_shared<session>(std::move(s))->start();
      }
      accept();
    });
  }

  tcp::acceptor acceptor_;
};

}  // namespace

int main(int argc, char** argv) {
  int port = 8007;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--port") == 0 && i + 1 < argc) {
      port = std::atoi(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: echo_asio [--port P]\n");
      return 2;
    }
  }
  try {
    asio::io_context io(1);
    server s(io, static_cast<unsigned short>(port));
    std::printf("echo_asio listening on 127.0.0.1:%d (callbacks)\n", port);
    std::fflush(stdout);
    io.run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "echo_asio: %s\n", e.what());
    return 1;
  }
  return 0;
}
