// SPDX-License-Identifier: MIT
// Connecting: one address, several (Happy Eyeballs), or a Unix socket.
#include "squall/tcp_client.hpp"

#include <netinet/in.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <stdexcept>
#include <vector>

#include "squall/locks.hpp"
#include "squall/resolver.hpp"

namespace squall {
namespace {

async_fd open_socket(int family, const connect_options& opts) {
  int fd = ::socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::system_error(errno, std::system_category(), "squall: socket");
  async_fd afd(this_fiber::loop(), fd);
  if (opts.source && ::bind(fd, opts.source->data(), opts.source->size()) != 0)
    throw std::system_error(errno, std::system_category(),
                            "squall: bind to " + opts.source->to_string());
  return afd;
}

// RFC 8305 section 4: alternate address families, starting with the family of the first.
std::vector<address> interleave(std::span<const address> in) {
  std::vector<address> first, other, out;
  int fam = in.front().family();
  for (const auto& a : in)
    (a.family() == fam ? first : other).push_back(a);
  for (std::size_t i = 0; i < std::max(first.size(), other.size()); ++i) {
    if (i < first.size()) out.push_back(first[i]);
    if (i < other.size()) out.push_back(other[i]);
  }
  return out;
}

}  // namespace

io_stream tcp_connect(const address& to, const connect_options& opts) {
  async_fd afd = open_socket(to.family(), opts);
  afd.connect(to, opts.deadline);
  io_stream s(std::move(afd), opts.stream);
  if (opts.nodelay && to.family() != AF_UNIX) s.set_nodelay(true);
  return s;
}

io_stream tcp_connect(std::string_view host, std::uint16_t port, const connect_options& opts) {
  std::vector<address> addrs = resolve(host, port, AF_UNSPEC, opts.deadline);
  return tcp_connect(std::span<const address>(addrs), opts);
}

io_stream unix_connect(const std::string& path, const connect_options& opts) {
  return tcp_connect(address::unix_path(path), opts);
}

io_stream tcp_connect(std::span<const address> addresses, const connect_options& opts) {
  if (addresses.empty()) throw std::invalid_argument("squall: tcp_connect: no address");
  if (addresses.size() == 1) return tcp_connect(addresses[0], opts);

  std::vector<address> order = interleave(addresses);
  // Shared by the attempts (fibers) and this fiber. Each attempt holds a reference, so the state
  // outlives this call even if an attempt outlives it (a loop shutdown unwinding this fiber).
  struct race_state {
    std::optional<io_stream> winner;
    std::error_code last_error;
    std::size_t failed = 0;
    condition changed;
  };
  auto shared = std::make_shared<race_state>();
  race_state& race = *shared;
  std::vector<fiber<void>> attempts;

  // However this call ends, the losing attempts are cancelled (closing their sockets) and,
  // unless this fiber is being unwound, waited for.
  struct reaper {
    std::vector<fiber<void>>& attempts;
    ~reaper() {
      for (auto& f : attempts)
        f.cancel();
      for (auto& f : attempts) {
        for (;;) {
          try {
            f.join();
            break;
          } catch (const std::system_error& e) {
            if (e.code() == error::cancelled && !f.done()) continue;  // our own wait was cut
            break;
          } catch (const fiber_unwind&) {
            return;  // loop shutdown: the attempts own their state and are unwound too
          } catch (...) {
            break;
          }
        }
      }
    }
  } reap{attempts};

  io_loop& loop = this_fiber::loop();
  for (std::size_t i = 0; i < order.size() && !race.winner; ++i) {
    attempts.push_back(spawn(loop, [shared, opts, to = order[i]] {
      race_state& race = *shared;
      try {
        io_stream s = tcp_connect(to, opts);
        if (!race.winner) race.winner.emplace(std::move(s));
      } catch (const std::system_error& e) {
        if (e.code() == error::cancelled) return;  // lost the race
        race.last_error = e.code();
        ++race.failed;
      }
      race.changed.notify_all();
    }));
    // Give this attempt `attempt_delay` before starting the next, unless it fails sooner.
    std::size_t failed_before = race.failed;
    time_point next_at = std::min(clock::now() + opts.attempt_delay, opts.deadline);
    while (!race.winner && race.failed == failed_before) {
      try {
        race.changed.wait(next_at);
      } catch (const std::system_error& e) {
        if (e.code() != error::timed_out) throw;
        break;
      }
    }
    if (clock::now() >= opts.deadline && !race.winner) break;
  }
  // Every attempt has started: wait for a winner or for all to fail.
  while (!race.winner && race.failed < attempts.size()) {
    try {
      race.changed.wait(opts.deadline);
    } catch (const std::system_error& e) {
      if (e.code() != error::timed_out) throw;
      throw std::system_error(error::timed_out, "squall: tcp_connect: no address answered in time");
    }
  }
  if (race.winner) return std::move(*race.winner);
  throw std::system_error(race.last_error ? race.last_error : make_error_code(error::timed_out),
                          "squall: tcp_connect: every address failed");
}

}  // namespace squall
