// SPDX-License-Identifier: MIT
// The squall command-line tool: one binary, one subcommand per job.
//
// `serve` is the HTTP server (serve.cpp); `echo` the smallest TCP server, `resolve` one DNS
// lookup; `version` and `help` tell what this build has.
#include <signal.h>
#include <sys/socket.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "squall/config.hpp"
#include "squall/fiber.hpp"
#include "squall/io_loop.hpp"
#include "squall/log.hpp"
#include "squall/resolver.hpp"
#include "squall/tcp_server.hpp"
#include "tool.hpp"

namespace {

void usage(std::FILE* out) {
  std::fprintf(out,
               "usage: squall <command> [options]\n"
               "\n"
               "commands:\n"
               "  serve [--host H] [--port N] [--root DIR] [--workers N] [--gzip] [--quiet]\n"
               "                                     an HTTP server (default 127.0.0.1:8888)\n"
               "  get URL [-X M] [-H 'K: V']... [-d DATA] [-o FILE] [-v] [--timeout S]\n"
               "                                     fetch URL; the body to stdout\n"
               "  ws URL [-H 'K: V']... [--subprotocol P]... [--compress]\n"
               "                                     a WebSocket client: stdin lines out\n"
               "  echo [--port N] [--host H]         a TCP echo server (default 127.0.0.1:8007)\n"
               "  resolve NAME [--family 4|6] [--server IP:PORT]\n"
               "                                     look NAME up; print addresses and the time\n"
               "  version                            print the version and the backends built\n"
               "  help                               this text\n");
}

int cmd_version() {
  std::printf("squall %s (backends:%s%s%s)\n", SQUALL_VERSION,
              SQUALL_HAVE_IO_URING ? " io_uring" : "", SQUALL_HAVE_EPOLL ? " epoll" : "",
              SQUALL_HAVE_KQUEUE ? " kqueue" : "");
  return 0;
}

// SIGINT/SIGTERM stop the loop; SIGUSR1 prints every live fiber and what it waits for.
void add_signal_handlers(squall::io_loop& loop) {
  auto quit = [&loop](int signo) {
    squall::log(squall::log_level::info, "squall", "%s: stopping", strsignal(signo));
    loop.stop();
  };
  loop.add_signal_handler(SIGINT, quit);
  loop.add_signal_handler(SIGTERM, quit);
  loop.add_signal_handler(SIGUSR1, [&loop](int) {
    std::string dump = squall::dump_fibers(loop);
    std::fprintf(stderr, "--- %zu live fibers ---\n%s---\n", squall::fiber_count(loop),
                 dump.c_str());
  });
}

void remove_signal_handlers(squall::io_loop& loop) {
  for (int s : {SIGINT, SIGTERM, SIGUSR1})
    loop.remove_signal_handler(s);
}

// The smallest complete squall server: each connection echoes what it reads, in its own fiber.
int cmd_echo(int argc, char** argv) {
  std::string host = "127.0.0.1";
  long port = 8007;
  for (int i = 0; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "--port" && i + 1 < argc) {
      port = std::strtol(argv[++i], nullptr, 10);
    } else if (a == "--host" && i + 1 < argc) {
      host = argv[++i];
    } else {
      std::fprintf(stderr, "squall echo: unknown option '%s'\n", argv[i]);
      return 2;
    }
  }
  if (port < 0 || port > 65535) {
    std::fprintf(stderr, "squall echo: bad port %ld\n", port);
    return 2;
  }
  squall::io_loop loop;
  squall::tcp_server server(loop, [](squall::io_stream& s, const squall::address&) {
    for (;;) {
      std::string_view data = s.read_some();
      if (data.empty()) return;  // the peer closed
      s.write(data);             // sent when the next read has to wait
    }
  });
  server.listen(static_cast<std::uint16_t>(port), host);
  for (const auto& a : server.addresses())
    std::printf("squall echo listening on %s (%s backend)\n", a.to_string().c_str(),
                loop.backend_name());
  std::fflush(stdout);
  add_signal_handlers(loop);
  loop.run();
  remove_signal_handlers(loop);
  return 0;
}

// One lookup through squall's resolver: each address on a line, then the time it took.
int cmd_resolve(int argc, char** argv) {
  std::string name;
  int family = AF_UNSPEC;
  squall::resolver_options opts;
  for (int i = 0; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "--family" && i + 1 < argc) {
      std::string_view f = argv[++i];
      if (f != "4" && f != "6") {
        std::fprintf(stderr, "squall resolve: --family is 4 or 6\n");
        return 2;
      }
      family = f == "4" ? AF_INET : AF_INET6;
    } else if (a == "--server" && i + 1 < argc) {
      opts.servers.emplace_back(argv[++i]);
    } else if (!a.starts_with("--") && name.empty()) {
      name = a;
    } else {
      std::fprintf(stderr, "squall resolve: unknown option '%s'\n", argv[i]);
      return 2;
    }
  }
  if (name.empty()) {
    std::fprintf(stderr, "usage: squall resolve NAME [--family 4|6] [--server IP:PORT]\n");
    return 2;
  }
  squall::io_loop loop;
  squall::resolver r(loop, opts);
  auto start = squall::clock::now();
  try {
    auto addrs = squall::run_sync(loop, [&] { return r.resolve(name, 0, family); });
    auto took = std::chrono::duration<double, std::milli>(squall::clock::now() - start).count();
    for (const auto& a : addrs)
      std::printf("%s\n", a.host().c_str());
    std::printf("%zu address%s in %.2f ms (%s)\n", addrs.size(), addrs.size() == 1 ? "" : "es",
                took, r.servers().c_str());
  } catch (const std::system_error& e) {
    auto took = std::chrono::duration<double, std::milli>(squall::clock::now() - start).count();
    std::fprintf(stderr, "%s (after %.2f ms)\n", e.what(), took);
    return 1;
  }
  return 0;
}

}  // namespace

namespace squall::tool {

bool parse_backend(std::string_view s, backend_kind& out) {
  for (auto k : {backend_kind::io_uring, backend_kind::epoll, backend_kind::kqueue}) {
    if (s == to_string(k)) {
      out = k;
      return true;
    }
  }
  return false;
}

}  // namespace squall::tool

int main(int argc, char** argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  std::string_view cmd = argv[1];
  try {
#if SQUALL_HAVE_HTTP
    if (cmd == "serve") return squall::tool::serve_main(argc - 2, argv + 2);
    if (cmd == "get") return squall::tool::get_main(argc - 1, argv + 1);
#endif
#if SQUALL_HAVE_WEBSOCKET
    if (cmd == "ws") return squall::tool::ws_main(argc - 1, argv + 1);
#endif
    if (cmd == "echo") return cmd_echo(argc - 2, argv + 2);
    if (cmd == "resolve") return cmd_resolve(argc - 2, argv + 2);
    if (cmd == "version" || cmd == "--version") return cmd_version();
    if (cmd == "help" || cmd == "--help" || cmd == "-h") {
      usage(stdout);
      return 0;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "squall %s: %s\n", argv[1], e.what());
    return 1;
  }
  std::fprintf(stderr, "squall: unknown command '%s'\n", argv[1]);
  usage(stderr);
  return 2;
}
