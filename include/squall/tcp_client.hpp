// SPDX-License-Identifier: MIT
// Connecting: TCP to one address, to several (Happy Eyeballs, RFC 8305) or to a host name, and
// Unix sockets.
//
// All calls run in a fiber and return a connected io_stream, or throw std::system_error:
// error::timed_out when the deadline passes, the kernel's error (ECONNREFUSED, ENETUNREACH...)
// otherwise; with several addresses, the error of the last attempt that failed.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "squall/io_stream.hpp"

namespace squall {

struct connect_options {
  time_point deadline = time_point::max();
  // Bind to this local address before connecting (port 0 for any).
  std::optional<address> source{};
  // Happy Eyeballs: how long an attempt runs before the next address is tried in parallel
  // (RFC 8305's "Connection Attempt Delay"; Tornado uses 300 ms).
  duration attempt_delay = std::chrono::milliseconds(250);
  bool nodelay = true;
  io_stream_options stream{};
};

// Connects to one numeric address.
io_stream tcp_connect(const address& to, const connect_options& opts = {});

// Connects to the first of `addresses` that answers, Happy Eyeballs style: the list is reordered
// to alternate families starting with the first one's (RFC 8305 section 4), the first attempt
// starts at once and each next one after `attempt_delay` or as soon as the previous fails; the
// first to connect wins and the others are cancelled and closed.
io_stream tcp_connect(std::span<const address> addresses, const connect_options& opts = {});

// Resolves `host` (squall/resolver.hpp: the loop's resolver, both families, within
// opts.deadline) and connects to its addresses as above. A numeric host skips the lookup.
// Resolution errors (error::not_found, no_data, server_failure, bad_name, timed_out) name the host.
io_stream tcp_connect(std::string_view host, std::uint16_t port, const connect_options& opts = {});

// Connects to a Unix domain stream socket.
io_stream unix_connect(const std::string& path, const connect_options& opts = {});

}  // namespace squall
