// SPDX-License-Identifier: MIT
// Listening sockets and tcp_server: an accept fiber per listening socket, a fiber per connection.
//
// The server's state is shared by the server object and every fiber it starts, so a connection
// that is still unwinding when the server object is destroyed never touches freed memory.
#include "squall/tcp_server.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <unordered_map>

#include "squall/locks.hpp"
#include "squall/log.hpp"

namespace squall {

// --- Binding -----------------------------------------------------------------------------------

namespace {

int make_listener(const address& a, int backlog, bool reuse_port) {
  int fd = ::socket(a.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  int one = 1;
  if (a.family() != AF_UNIX) ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (a.family() == AF_INET6) ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  if (reuse_port && ::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
    int e = errno;
    ::close(fd);
    return -e;
  }
  if (::bind(fd, a.data(), a.size()) != 0 || ::listen(fd, backlog) != 0) {
    int e = errno;
    ::close(fd);
    return -e;
  }
  return fd;
}

std::vector<address> bind_targets(std::string_view host, std::uint16_t port, int family) {
  std::vector<address> out;
  auto want = [family](int f) { return family == AF_UNSPEC || family == f; };
  if (host.empty() || host == "*") {
    if (want(AF_INET6)) out.push_back(address::any(AF_INET6, port));
    if (want(AF_INET)) out.push_back(address::any(AF_INET, port));
  } else if (host == "localhost") {
    if (want(AF_INET6)) out.push_back(address::ip("::1", port));
    if (want(AF_INET)) out.push_back(address::ip("127.0.0.1", port));
  } else {
    out.push_back(address::ip(host, port));  // DNS names come with the resolver
  }
  return out;
}

void set_port(address& a, std::uint16_t port) {
  if (a.family() == AF_INET) reinterpret_cast<sockaddr_in*>(a.data())->sin_port = htons(port);
  if (a.family() == AF_INET6) reinterpret_cast<sockaddr_in6*>(a.data())->sin6_port = htons(port);
}

}  // namespace

std::vector<int> bind_sockets(std::uint16_t port, std::string_view host, int family, int backlog,
                              bool reuse_port) {
  std::vector<int> fds;
  int last_error = 0;
  std::uint16_t chosen = port;
  for (address a : bind_targets(host, port, family)) {
    // Port 0: the first socket picks a free port, the other families take the same one.
    if (chosen != 0) set_port(a, chosen);
    int fd = make_listener(a, backlog, reuse_port);
    if (fd < 0) {
      // A family the machine does not have (no IPv6) is skipped if another one works.
      if (-fd == EAFNOSUPPORT || -fd == EADDRNOTAVAIL) {
        last_error = -fd;
        continue;
      }
      for (int f : fds)
        ::close(f);
      throw std::system_error(-fd, std::system_category(), "squall: bind_sockets " + a.to_string());
    }
    if (chosen == 0) chosen = local_address(fd).port();
    fds.push_back(fd);
  }
  if (fds.empty())
    throw std::system_error(last_error ? last_error : EADDRNOTAVAIL, std::system_category(),
                            "squall: bind_sockets: no address to listen on");
  return fds;
}

int bind_unix_socket(const std::string& path, int backlog) {
  address a = address::unix_path(path);
  struct stat st;
  // A stale socket file from an earlier run would make bind fail; anything else is left alone.
  if (path[0] != '@' && ::lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode))
    ::unlink(path.c_str());
  int fd = make_listener(a, backlog, false);
  if (fd < 0) throw std::system_error(-fd, std::system_category(), "squall: bind " + path);
  return fd;
}

// --- tcp_server --------------------------------------------------------------------------------

struct tcp_server::state {
  state(io_loop& l, handler h, tcp_server_options o) : loop(l), fn(std::move(h)), opts(o) {}
  io_loop& loop;
  handler fn;
  tcp_server_options opts;
  std::vector<std::unique_ptr<async_fd>> listeners;
  std::vector<address> addrs;
  std::vector<fiber<void>> acceptors;
  std::unordered_map<std::uint64_t, fiber<void>> connections;
  std::size_t live = 0;
  std::uint64_t accepted = 0;
  std::uint64_t next_conn = 1;
  condition slot_free;  // a connection ended (max_connections)
  condition all_done;   // live reached 0
  bool stopped = false;
  bool accept_failing = false;
};

namespace {

using state_ptr = std::shared_ptr<tcp_server::state>;

bool is_quiet(const std::error_code& ec) {
  return ec == error::closed || ec == error::reset || ec == error::cancelled;
}

// A connection leaves the books: one fewer live, maybe room for the accept loop, maybe the
// last one a shutdown waits for.
void finish_books(const state_ptr& st, std::uint64_t id) {
  --st->live;
  st->slot_free.notify_one();
  if (st->live == 0) st->all_done.notify_all();
  st->connections.erase(id);  // drops our handle; the fiber itself goes on to its end
}

// An accepted connection until its fiber takes it over. If the fiber never runs (cancelled
// before it started: a server destroyed or shut down in the same iteration as the accept),
// destroying this closes the fd and keeps the books, as the end of serve_connection would.
struct pending_connection {
  state_ptr st;
  std::uint64_t id;
  int fd;
  address peer;
  bool nodelay_inherited;  // from the listener (see add_sockets)
  pending_connection(state_ptr s, std::uint64_t i, int f, const address& p, bool inherited)
      : st(std::move(s)), id(i), fd(f), peer(p), nodelay_inherited(inherited) {}
  pending_connection(const pending_connection&) = delete;
  pending_connection& operator=(const pending_connection&) = delete;
  ~pending_connection() {
    if (fd < 0) return;
    ::close(fd);
    finish_books(st, id);
  }
};

// How a connection's fiber ended, in the log. Out of line: the address's text would otherwise
// take room in serve_connection's frame, at the top of every connection's stack, which the loop
// prefetches each time it resumes the fiber (async_fd.cpp).
[[gnu::noinline, gnu::cold]] void log_end(const address& peer, log_level level, const char* how,
                                          const char* what) {
  log(level, "tcp", "connection from %s %s: %s", peer.to_string().c_str(), how, what);
}

void serve_connection(pending_connection& pc) {
  const state_ptr st = pc.st;
  const std::uint64_t id = pc.id;
  // The pending connection lives as long as this fiber's function: no copy of the address.
  const address& peer = pc.peer;
  int fd = std::exchange(pc.fd, -1);  // ours now
  // However this ends (return, exception, unwinding at loop shutdown), the books are kept.
  struct done_guard {
    const state_ptr& st;
    std::uint64_t id;
    ~done_guard() { finish_books(st, id); }
  } guard{st, id};
  // Made in place (a stream assigned from a temporary would take a second one's room in
  // this frame, at the top of every connection's stack).
  io_stream stream = [&] {
    try {
      return io_stream(async_fd(st->loop, fd, async_fd::origin::accepted), st->opts.stream);
    } catch (...) {
      ::close(fd);
      throw;
    }
  }();
  if (st->opts.nodelay && peer.family() != AF_UNIX && !pc.nodelay_inherited) {
    try {
      stream.set_nodelay(true);
    } catch (const std::system_error&) {
    }
  }
  try {
    st->fn(stream, peer);
    stream.close();
  } catch (const std::system_error& e) {
    if (is_quiet(e.code()))
      log_end(peer, log_level::debug, "ended", e.what());
    else
      log_end(peer, log_level::error, "failed", e.what());
  } catch (const std::exception& e) {
    log_end(peer, log_level::error, "threw", e.what());
  }
}

void start_connection(const state_ptr& st, int fd, const address& peer, bool nodelay_inherited) {
  std::uint64_t id = st->next_conn++;
  ++st->live;
  ++st->accepted;
  auto pc = std::make_unique<pending_connection>(st, id, fd, peer, nodelay_inherited);
  try {
    auto f = spawn(st->loop, [pc = std::move(pc)]() mutable { serve_connection(*pc); },
                   {.name = "conn " + peer.to_string(), .stack_size = st->opts.stack_size});
    st->connections.emplace(id, std::move(f));
  } catch (const std::exception& e) {
    // No stack for it (ENOMEM: see docs/fibers.md): refuse this connection, keep serving. The
    // pending connection was destroyed with the failed spawn: fd closed, books kept.
    log(log_level::error, "tcp", "cannot start a fiber for %s: %s", peer.to_string().c_str(),
        e.what());
  }
}

bool out_of_resources(const std::error_code& ec) {
  return ec.category() == std::system_category() && (ec.value() == EMFILE || ec.value() == ENFILE ||
                                                     ec.value() == ENOBUFS || ec.value() == ENOMEM);
}

void accept_loop(state_ptr st, async_fd* listener, bool nodelay_inherited) {
  auto backoff = std::chrono::milliseconds(10);
  for (;;) {
    while (st->opts.max_connections && st->live >= st->opts.max_connections)
      st->slot_free.wait();
    address peer;
    int fd;
    try {
      fd = listener->accept(&peer);
    } catch (const std::system_error& e) {
      if (e.code() == error::closed || e.code() == error::cancelled || st->stopped) return;
      if (out_of_resources(e.code())) {
        // Out of fds: the pending connection stays in the backlog. Log once, back off instead
        // of spinning, and try again when fds may have been freed.
        if (!st->accept_failing)
          log(log_level::warn, "tcp", "accept: %s; backing off until it works again", e.what());
        st->accept_failing = true;
        this_fiber::sleep_for(backoff);
        backoff = std::min(backoff * 2, std::chrono::milliseconds(1000));
        continue;
      }
      // ECONNABORTED and the like concern one connection only.
      log(log_level::debug, "tcp", "accept: %s", e.what());
      continue;
    }
    if (st->accept_failing) {
      log(log_level::info, "tcp", "accept works again");
      st->accept_failing = false;
    }
    backoff = std::chrono::milliseconds(10);
    start_connection(st, fd, peer, nodelay_inherited);
  }
}

// Linux copies TCP_NODELAY (with the rest of the socket's state) from a listening socket to
// the connections it accepts: set once there, it spares each connection a setsockopt. Other
// systems differ, so there each connection sets it. True if the connections will have it.
bool nodelay_on_listener(int fd, const address& local) {
#ifdef __linux__
  if (local.family() != AF_INET && local.family() != AF_INET6) return false;
  int on = 1;
  return ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on) == 0;
#else
  (void)fd, (void)local;
  return false;
#endif
}

}  // namespace

tcp_server::tcp_server(io_loop& loop, handler h, tcp_server_options opts)
    : st_(std::make_shared<state>(loop, std::move(h), opts)) {}

tcp_server::~tcp_server() {
  stop();
  for (auto& [id, f] : st_->connections)
    f.cancel();
}

void tcp_server::listen(std::uint16_t port, std::string_view host, bool reuse_port) {
  add_sockets(bind_sockets(port, host, AF_UNSPEC, 1024, reuse_port));
}

void tcp_server::add_sockets(const std::vector<int>& fds) {
  for (int fd : fds) {
    st_->addrs.push_back(local_address(fd));
    bool inherited = st_->opts.nodelay && nodelay_on_listener(fd, st_->addrs.back());
    st_->listeners.push_back(std::make_unique<async_fd>(st_->loop, fd));
    async_fd* l = st_->listeners.back().get();
    st_->acceptors.push_back(spawn(st_->loop,
                                   [st = st_, l, inherited] { accept_loop(st, l, inherited); },
                                   {.name = "accept " + st_->addrs.back().to_string()}));
  }
  st_->stopped = false;
}

std::vector<address> tcp_server::addresses() const {
  return st_->addrs;
}

void tcp_server::stop() {
  st_->stopped = true;
  for (auto& f : st_->acceptors)
    f.cancel();
  for (auto& l : st_->listeners)
    l->close();
  st_->acceptors.clear();
}

void tcp_server::shutdown(time_point deadline) {
  stop();
  while (st_->live > 0) {
    try {
      st_->all_done.wait(deadline);
    } catch (const std::system_error& e) {
      if (e.code() != error::timed_out) throw;
      break;
    }
  }
  for (auto& [id, f] : st_->connections)
    f.cancel();
  while (st_->live > 0)
    st_->all_done.wait();
}

std::size_t tcp_server::connection_count() const noexcept {
  return st_->live;
}
std::uint64_t tcp_server::accepted() const noexcept {
  return st_->accepted;
}

}  // namespace squall
