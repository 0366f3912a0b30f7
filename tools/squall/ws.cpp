// SPDX-License-Identifier: MIT
// `squall ws`: a wscat-like WebSocket client. Each line of stdin goes out as a text message;
// each message received is printed on stdout (text as it is, one per line; binary as
// "<binary N bytes>"). Both directions run at once, each in its own fiber: stdin is read through
// the loop (an async_fd on a pipe or terminal; through the thread pool for a file or /dev/null,
// which cannot be polled).
//
// The end: when stdin ends, a close (1000) is sent and the tool waits for the server's (SIGINT or
// SIGTERM do the same with 1001; a second one ends the process at once); when the server
// closes, the tool stops reading stdin. Either way the close code and reason go to stderr
// ("closed: 1000 bye").
//
// Exit status: 0 after a normal close (1000, 1001, or a close without a code), 1 for any other
// end (a protocol error, the connection dropped, the handshake refused), 2 for bad usage.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "squall/async_fd.hpp"
#include "squall/fiber.hpp"
#include "squall/io_loop.hpp"
#include "squall/websocket/websocket.hpp"
#include "tool.hpp"

namespace squall::tool {
namespace {

constexpr const char* ws_usage =
    "usage: squall ws URL [-H 'Name: value']... [--subprotocol P]... [--compress]\n"
    "  URL                ws://host[:port]/path\n"
    "  -H 'Name: value'   add a header to the handshake request (repeatable)\n"
    "  --subprotocol P    offer subprotocol P (repeatable, in order of preference)\n"
    "  --compress         offer permessage-deflate\n"
    "stdin lines are sent as text messages; messages received are printed on stdout.\n";

struct ws_args {
  std::string url;
  websocket::options opts;
};

bool parse_ws_args(int argc, char** argv, ws_args& a) {
  for (int i = 1; i < argc; ++i) {
    std::string_view o = argv[i];
    bool has_value = i + 1 < argc;
    if (o == "-H" && has_value) {
      std::string_view h = argv[++i];
      std::size_t colon = h.find(':');
      if (colon == std::string_view::npos || colon == 0) {
        std::fprintf(stderr, "squall ws: -H wants 'Name: value', not '%s'\n", argv[i]);
        return false;
      }
      std::string_view value = h.substr(colon + 1);
      while (!value.empty() && (value.front() == ' ' || value.front() == '\t'))
        value.remove_prefix(1);
      a.opts.headers.emplace_back(h.substr(0, colon), value);
    } else if (o == "--subprotocol" && has_value) {
      a.opts.subprotocols.emplace_back(argv[++i]);
    } else if (o == "--compress") {
      a.opts.compression = true;
    } else if ((o == "-h" || o == "--help")) {
      std::fputs(ws_usage, stdout);
      std::exit(0);
    } else if (!o.starts_with("-") && a.url.empty()) {
      a.url = o;
    } else {
      std::fprintf(stderr, "squall ws: unknown option '%s'\n%s", argv[i], ws_usage);
      return false;
    }
  }
  if (a.url.empty()) {
    std::fputs(ws_usage, stderr);
    return false;
  }
  return true;
}

// Lines from stdin, read without blocking the loop.
class stdin_lines {
 public:
  explicit stdin_lines(io_loop& loop) : loop_(loop), saved_flags_(::fcntl(0, F_GETFL)) {}
  // async_fd makes the (shared) file description non-blocking: the shell gets it back as it was.
  ~stdin_lines() {
    afd_.reset();
    if (saved_flags_ >= 0) ::fcntl(0, F_SETFL, saved_flags_);
  }
  stdin_lines(const stdin_lines&) = delete;
  stdin_lines& operator=(const stdin_lines&) = delete;

  // The next line without its end of line, or nothing at the end of input.
  std::optional<std::string> next() {
    for (;;) {
      std::size_t nl = buf_.find('\n');
      if (nl != std::string::npos) {
        std::string line = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        if (!line.empty() && line.back() == '\r') line.pop_back();
        return line;
      }
      if (eof_) {
        if (buf_.empty()) return std::nullopt;
        return std::exchange(buf_, {});
      }
      std::string piece = read_some();
      if (piece.empty())
        eof_ = true;
      else
        buf_ += piece;
    }
  }

 private:
  std::string read_some() {
    if (!blocking_) {
      try {
        if (!afd_) {
          int fd = ::dup(0);
          if (fd < 0) throw std::system_error(errno, std::system_category(), "dup(stdin)");
          try {
            afd_.emplace(loop_, fd);
          } catch (...) {
            ::close(fd);
            throw;
          }
        }
        char tmp[16384];
        std::size_t n = afd_->read_some(tmp, sizeof tmp);
        return std::string(tmp, n);
      } catch (const std::system_error& e) {
        // Regular files and /dev/null cannot be watched (EPERM); they never block either.
        if (e.code() != std::errc::operation_not_permitted) throw;
        afd_.reset();
        blocking_ = true;
      }
    }
    return this_fiber::run_in_executor([] {
      char tmp[16384];
      ssize_t r;
      do {
        r = ::read(0, tmp, sizeof tmp);
      } while (r < 0 && errno == EINTR);
      if (r < 0) throw std::system_error(errno, std::system_category(), "read(stdin)");
      return std::string(tmp, static_cast<std::size_t>(r));
    });
  }

  io_loop& loop_;
  int saved_flags_;
  std::optional<async_fd> afd_;
  bool blocking_ = false;
  bool eof_ = false;
  std::string buf_;
};

void print_message(const websocket::message& m) {
  if (m.is_text()) {
    std::fwrite(m.data.data(), 1, m.data.size(), stdout);
    std::fputc('\n', stdout);
  } else {
    std::fprintf(stdout, "<binary %zu bytes>\n", m.data.size());
  }
  std::fflush(stdout);
}

}  // namespace

int ws_main(int argc, char** argv) {
  ws_args a;
  if (!parse_ws_args(argc, argv, a)) return 2;
  io_loop loop;
  int status = 1;
  try {
    run_sync(loop, [&] {
      websocket::connection c = websocket::connect(a.url, std::move(a.opts));
      if (!c.subprotocol().empty())
        std::fprintf(stderr, "subprotocol: %s\n", c.subprotocol().c_str());
      if (c.compressed()) std::fprintf(stderr, "compression: permessage-deflate\n");
      std::fflush(stderr);
      stdin_lines in(loop);
      bool interrupted = false;
      // stdin -> messages; at its end (or on Ctrl-C), the close handshake (this fiber reads
      // meanwhile).
      auto sender = spawn(loop,
                          [&] {
                            std::uint16_t code = websocket::close_code::normal;
                            try {
                              while (auto line = in.next()) {
                                if (c.closed()) return;
                                c.send_text(*line);
                              }
                            } catch (const std::system_error& e) {
                              if (e.code() != error::cancelled || !interrupted) {
                                if (e.code() != error::closed && e.code() != error::cancelled)
                                  std::fprintf(stderr, "squall ws: %s\n", e.what());
                                return;
                              }
                              code = websocket::close_code::going_away;
                            }
                            try {
                              c.close(code);
                            } catch (const std::system_error&) {
                            }
                          },
                          {.name = "ws-stdin"});
      auto on_signal = [&](int) {
        interrupted = true;
        for (int s : {SIGINT, SIGTERM})
          loop.remove_signal_handler(s);  // a second one ends the process at once
        sender.cancel();
      };
      loop.add_signal_handler(SIGINT, on_signal);
      loop.add_signal_handler(SIGTERM, on_signal);
      while (auto m = c.receive())
        print_message(*m);
      if (!interrupted)
        for (int s : {SIGINT, SIGTERM})
          loop.remove_signal_handler(s);
      sender.cancel();  // the server closed: stop reading stdin
      try {
        sender.join();
      } catch (const std::system_error&) {
      }
      std::uint16_t code = c.close_code();
      std::fprintf(stderr, "closed: %u%s%s\n", unsigned(code), c.close_reason().empty() ? "" : " ",
                   c.close_reason().c_str());
      status = code == websocket::close_code::normal || code == websocket::close_code::going_away ||
                       code == websocket::close_code::no_status
                   ? 0
                   : 1;
    });
  } catch (const websocket::handshake_error& e) {
    std::fprintf(stderr, "squall ws: %s\n", e.what());
    return 1;
  } catch (const std::system_error& e) {
    std::fprintf(stderr, "squall ws: %s\n", e.what());
    return 1;
  }
  return status;
}

}  // namespace squall::tool
