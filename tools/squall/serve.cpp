// SPDX-License-Identifier: MIT
// `squall serve`: the HTTP server a user meets first. GET / says hello; with --root, files are
// served from a directory (see static_files.hpp); one log line per request.
//
// --workers N forks N processes after binding (Tornado's fork_processes): the kernel spreads
// connections over them, each runs its own loop. The parent only waits, and passes SIGINT and
// SIGTERM on to the workers.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "squall/config.hpp"
#include "squall/http/server.hpp"
#include "squall/http/static_files.hpp"
#include "squall/io_loop.hpp"
#include "squall/log.hpp"
#include "squall/tcp_server.hpp"
#include "tool.hpp"

namespace squall::tool {
namespace {

struct serve_args {
  std::string host = "127.0.0.1";
  long port = 8888;
  std::string root;
  long workers = 1;
  bool log_requests = true;
  bool gzip = false;
  io_loop::options loop;
};

const char serve_usage[] =
    "usage: squall serve [--host H] [--port N] [--root DIR] [--workers N] [--gzip] [--quiet]\n"
    "                    [--backend io_uring|epoll]\n";

bool parse_serve_args(int argc, char** argv, serve_args& a) {
  for (int i = 0; i < argc; ++i) {
    std::string_view o = argv[i];
    bool has_value = i + 1 < argc;
    if (o == "--host" && has_value) {
      a.host = argv[++i];
    } else if (o == "--port" && has_value) {
      a.port = std::strtol(argv[++i], nullptr, 10);
    } else if (o == "--root" && has_value) {
      a.root = argv[++i];
    } else if (o == "--workers" && has_value) {
      a.workers = std::strtol(argv[++i], nullptr, 10);
    } else if (o == "--backend" && has_value) {
      if (!parse_backend(argv[++i], a.loop.backend)) {
        std::fprintf(stderr, "squall serve: unknown backend '%s'\n", argv[i]);
        return false;
      }
    } else if (o == "--quiet") {
      a.log_requests = false;
    } else if (o == "--gzip") {
      a.gzip = true;
    } else {
      std::fprintf(stderr, "squall serve: unknown option '%s'\n%s", argv[i], serve_usage);
      return false;
    }
  }
  if (a.port < 0 || a.port > 65535 || a.workers < 0) {
    std::fprintf(stderr, "squall serve: bad --port or --workers\n");
    return false;
  }
  if (a.workers == 0) a.workers = sysconf(_SC_NPROCESSORS_ONLN);
  return true;
}

http::handler make_app(const serve_args& a) {
  http::router routes;
#if SQUALL_HAVE_WEBSOCKET
  add_ws_routes(routes);  // before --root's catch-all "/*"
#endif
  if (!a.root.empty()) {
    http::static_options so;
    so.root = a.root;
    routes.add("*", "/*", http::static_files(so));
  } else {
    routes.get("/", [](http::request&, http::response& resp) {
      resp.add_header("Content-Type", "text/plain; charset=utf-8");
      resp.send("Hello, World!\n");
    });
  }
  return routes;
}

// Serves on `fds` until SIGINT/SIGTERM, then shuts down gracefully (in-flight requests finish).
int run_worker(const serve_args& a, const std::vector<int>& fds) {
  io_loop::options lo = a.loop;
  lo.defer_completions = true;  // this thread alone runs the loop, and no other poller drives it
  io_loop loop(lo);
  http::server_options opts;
  opts.gzip = a.gzip;
  if (a.log_requests)
    opts.on_response = [](const http::request& req, int status, std::uint64_t bytes,
                          duration took) {
      double ms = std::chrono::duration<double, std::milli>(took).count();
      log(log_level::info, "http", "%d %.*s %.*s (%.*s) %llu bytes %.2fms", status,
          int(req.method().size()), req.method().data(), int(req.target().size()),
          req.target().data(), int(req.remote_ip().size()), req.remote_ip().data(),
          static_cast<unsigned long long>(bytes), ms);
    };
  http::server server(loop, make_app(a), std::move(opts));
  server.add_sockets(fds);
  for (const auto& addr : server.addresses())
    std::printf("squall %s serving http://%s/ on the %s backend (pid %d)\n", SQUALL_VERSION,
                addr.to_string().c_str(), loop.backend_name(), int(getpid()));
  std::fflush(stdout);
  auto quit = [&](int signo) {
    log(log_level::info, "squall", "%s: stopping", strsignal(signo));
    for (int s : {SIGINT, SIGTERM})
      loop.remove_signal_handler(s);  // a second Ctrl-C then ends the process at once
    spawn(loop, [&] {
      server.shutdown(io_loop::now() + std::chrono::seconds(10));
      loop.stop();
    });
  };
  loop.add_signal_handler(SIGINT, quit);
  loop.add_signal_handler(SIGTERM, quit);
  loop.run();
  return 0;
}

// The parent of --workers: forwards stop signals, waits for every worker.
int supervise(const std::vector<pid_t>& kids, const sigset_t& set) {
  std::size_t left = kids.size();
  int status = 0;
  while (left > 0) {
    int sig = 0;
    sigwait(&set, &sig);
    if (sig == SIGINT || sig == SIGTERM) {
      for (pid_t k : kids)
        kill(k, SIGTERM);
      continue;
    }
    int ws;
    while (waitpid(-1, &ws, WNOHANG) > 0) {
      --left;
      if (!WIFEXITED(ws) || WEXITSTATUS(ws) != 0) status = 1;
    }
  }
  return status;
}

}  // namespace

int serve_main(int argc, char** argv) {
  serve_args a;
  if (!parse_serve_args(argc, argv, a)) return 2;
  std::vector<int> fds = bind_sockets(static_cast<std::uint16_t>(a.port), a.host);
  if (a.workers <= 1) return run_worker(a, fds);
  // Blocked before forking so that a signal cannot slip in before the parent waits for it.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGCHLD);
  sigprocmask(SIG_BLOCK, &set, nullptr);
  std::vector<pid_t> kids;
  for (long i = 0; i < a.workers; ++i) {
    pid_t pid = fork();
    if (pid < 0) {
      std::perror("squall serve: fork");
      break;
    }
    if (pid == 0) {
      sigprocmask(SIG_UNBLOCK, &set, nullptr);
      std::_Exit(run_worker(a, fds));  // each worker makes its own loop
    }
    kids.push_back(pid);
  }
  for (int fd : fds)
    close(fd);
  return supervise(kids, set);
}

}  // namespace squall::tool
