// SPDX-License-Identifier: MIT
// resolver: asynchronous DNS for fibers, on c-ares, driven by the loop (no thread, no polling).
//
//   // in a fiber
//   std::vector<squall::address> addrs = squall::resolve("db.internal", 5432);
//   squall::io_stream s = squall::tcp_connect("db.internal", 5432);   // resolve + Happy Eyeballs
//
// c-ares's sockets are watched with the loop's fd handlers and its timeouts run on loop timers,
// so a lookup costs no thread and the loop never polls. Lookups share a c-ares channel; a
// cancelled one (the fiber cancelled, or a deadline passing) has its retries dropped at the
// socket layer, so it sends nothing more (docs/resolver.md). At most 64 lookups are on the wire
// at once; the rest queue.
// Pooled channels keep their UDP socket open (c-ares's STAYOPEN), so a busy resolver does not
// open and close a socket per lookup; the resolver's destructor closes them.
//
// Answers come back ordered for connecting (RFC 6724's destination rules, simplified): IPv6
// first where this host has IPv6 to reach it with, loopback before global. tcp_connect then
// interleaves the families (RFC 8305).
//
// Errors: std::system_error whose message names the host, with
//   error::not_found       the name does not exist (NXDOMAIN, or not in the hosts file)
//   error::no_data         the name exists but has no address of the family asked for
//   error::server_failure  the server answered SERVFAIL, refused, or sent a broken answer
//   error::bad_name        not a valid host name (empty label, label > 63, name > 253, ...)
//   error::timed_out       no answer in time; the message names the server(s) tried
//   error::cancelled       the fiber was cancelled, or the resolver destroyed
//   std::errc::connection_refused  every server refused the connection (ICMP unreachable)
#pragma once

#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "squall/io_loop.hpp"
#include "squall/net.hpp"

namespace squall {

namespace detail {
struct resolver_impl;
}

struct resolver_options {
  // DNS servers, each "IP" or "IP:PORT" ("10.0.0.2", "127.0.0.1:5353", "[::1]:53"). Empty: the
  // nameservers of resolv.conf. std::invalid_argument if one is not numeric.
  std::vector<std::string> servers{};
  // How long one try waits for an answer, and how many tries each server gets. Zero: what
  // resolv.conf says (`options timeout:` / `attempts:`), else c-ares's defaults (5 s, 4 tries).
  duration timeout = duration::zero();
  int tries = 0;
  // Search domains and ndots. nullopt / -1: resolv.conf's. An empty list turns searching off.
  std::optional<std::vector<std::string>> search{};
  int ndots = -1;
  // Read this file instead of /etc/resolv.conf (empty: the system's).
  std::string resolv_conf{};
  // Look in /etc/hosts before asking DNS.
  bool hosts_file = true;
  // Resolve with the system's getaddrinfo() on the loop's thread pool instead of c-ares, for
  // deployments that need NSS modules (mDNS, LDAP...). servers, timeout, tries, search, ndots and
  // resolv_conf are then the system's; a cancelled or timed-out lookup still finishes on its
  // worker thread and its answer is dropped.
  bool use_getaddrinfo = false;
  // Cache answers for their TTL (capped at cache_max_ttl); 0 entries = no cache (the default).
  // Least recently used entries go first when it is full. Failures are not cached.
  std::size_t cache_size = 0;
  duration cache_max_ttl = std::chrono::minutes(5);
  // Fixed answers, asked of nobody (Tornado's OverrideResolver): host name (case-insensitive,
  // without a trailing dot) -> addresses. An address with port 0 gets the port asked for.
  std::map<std::string, std::vector<address>, std::less<>> overrides{};
  // c-ares channels kept for reuse once their lookup has finished (each keeps a UDP socket).
  std::size_t max_idle_channels = 64;
};

class resolver {
 public:
  // A resolver whose lookups run on `loop`. Reads resolv.conf now (and each time it opens a
  // channel). Throws std::invalid_argument for a bad server, std::system_error if c-ares cannot
  // start. Loop thread only.
  explicit resolver(io_loop& loop, resolver_options opts = {});
  // Cancels the lookups in flight: their fibers get error::cancelled.
  ~resolver();
  resolver(const resolver&) = delete;
  resolver& operator=(const resolver&) = delete;

  // Resolves `host` to addresses with `port`, for `family` (AF_UNSPEC for both, AF_INET,
  // AF_INET6), ordered for connecting. Numeric addresses, "localhost" (and names under
  // .localhost, RFC 6761), overrides and cached answers come back without suspending; the rest
  // suspends the calling fiber until the answer, `deadline`, or a cancellation. Throws
  // std::invalid_argument for another family, std::logic_error outside a fiber of this loop
  // when a query is needed, and the errors listed at the top of this file.
  std::vector<address> resolve(std::string_view host, std::uint16_t port, int family = AF_UNSPEC,
                               time_point deadline = time_point::max());

  // Adds or replaces / removes one override (see resolver_options::overrides).
  void set_override(std::string_view host, std::vector<address> addresses);
  void remove_override(std::string_view host);

  void clear_cache();
  std::size_t cache_entries() const noexcept;
  // Lookups waiting for an answer.
  std::size_t in_flight() const noexcept;
  // c-ares channels open (busy and idle).
  std::size_t channels() const noexcept;
  // The servers asked, as text for messages ("127.0.0.1:5353, [::1]:53").
  const std::string& servers() const noexcept;
  io_loop& loop() const noexcept;

 private:
  std::shared_ptr<detail::resolver_impl> impl_;
};

// The loop's own resolver, created with default options on first use. Loop thread only.
resolver& get_resolver(io_loop& loop);
// Replaces the loop's resolver with one built from `opts`. Lookups in flight on the old one end
// with error::cancelled, and references from get_resolver() to it dangle.
void set_resolver_options(io_loop& loop, resolver_options opts);

// In a fiber: resolves with the resolver of the fiber's loop (get_resolver).
std::vector<address> resolve(std::string_view host, std::uint16_t port, int family = AF_UNSPEC,
                             time_point deadline = time_point::max());

// Sorts `addrs` in place for connecting (RFC 6724 section 6, rules 1, 6 and 8; stable
// otherwise): destinations this host has no source address for go last, then by the policy
// table's precedence (::1 > IPv6 > IPv4 > 6to4 > Teredo > ULA > deprecated), then smaller scope
// first. `have_ipv4` / `have_ipv6`: whether the host has a non-loopback address of that family.
// resolve() calls it with what getifaddrs() reports (checked at most every 10 s).
void sort_for_connect(std::vector<address>& addrs, bool have_ipv4, bool have_ipv6);

}  // namespace squall
