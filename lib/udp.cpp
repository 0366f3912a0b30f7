// SPDX-License-Identifier: MIT
// udp_socket: a datagram socket adopted by an async_fd.
#include "squall/udp.hpp"

#include <netinet/in.h>
#include <unistd.h>

#include <cerrno>

namespace squall {

udp_socket udp_socket::open(io_loop& loop, int family) {
  int fd = ::socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::system_error(errno, std::system_category(), "squall: udp socket");
  return udp_socket(async_fd(loop, fd));
}

udp_socket udp_socket::bind(io_loop& loop, const address& local) {
  udp_socket s = open(loop, local.family());
  if (local.family() == AF_INET6) {
    int one = 1;
    ::setsockopt(s.fd(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  }
  if (::bind(s.fd(), local.data(), local.size()) != 0)
    throw std::system_error(errno, std::system_category(), "squall: bind " + local.to_string());
  return s;
}

address udp_socket::local_address() const {
  return squall::local_address(fd_.fd());
}

}  // namespace squall
