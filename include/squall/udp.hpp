// SPDX-License-Identifier: MIT
// udp_socket: datagrams from fibers (bind, send_to, recv_from).
#pragma once

#include <cstddef>

#include "squall/async_fd.hpp"

namespace squall {

class udp_socket {
 public:
  udp_socket() = default;
  // A socket bound to `local` (port 0 picks one). In a fiber or not; loop thread only.
  static udp_socket bind(io_loop& loop, const address& local);
  // An unbound socket of `family` (the kernel binds it on the first send).
  static udp_socket open(io_loop& loop, int family);

  // Each suspends the calling fiber; see async_fd for the errors. A datagram longer than `len`
  // is truncated (the rest is lost, as with recvfrom).
  std::size_t recv_from(void* buf, std::size_t len, address* from,
                        time_point deadline = time_point::max()) {
    return fd_.recv_from(buf, len, from, deadline);
  }
  std::size_t send_to(const void* buf, std::size_t len, const address& to,
                      time_point deadline = time_point::max()) {
    return fd_.send_to(buf, len, to, deadline);
  }

  address local_address() const;
  void close() noexcept { fd_.close(); }
  int fd() const noexcept { return fd_.fd(); }

 private:
  explicit udp_socket(async_fd fd) : fd_(std::move(fd)) {}
  async_fd fd_;
};

}  // namespace squall
