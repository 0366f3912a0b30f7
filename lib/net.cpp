// SPDX-License-Identifier: MIT
// Socket addresses and the errno mapping.
#include "squall/net.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "squall/error.hpp"

namespace squall {

address::address(const sockaddr* sa, socklen_t len) noexcept {
  if (len > sizeof storage_) len = sizeof storage_;
  std::memcpy(&storage_, sa, len);
  len_ = len;
}

std::optional<address> address::parse_ip(std::string_view host, std::uint16_t port) noexcept {
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  char buf[INET6_ADDRSTRLEN + 1];
  if (host.size() >= sizeof buf) return std::nullopt;
  std::memcpy(buf, host.data(), host.size());
  buf[host.size()] = '\0';
  address a;
  sockaddr_in v4{};
  if (::inet_pton(AF_INET, buf, &v4.sin_addr) == 1) {
    v4.sin_family = AF_INET;
    v4.sin_port = htons(port);
    return address(reinterpret_cast<sockaddr*>(&v4), sizeof v4);
  }
  sockaddr_in6 v6{};
  if (::inet_pton(AF_INET6, buf, &v6.sin6_addr) == 1) {
    v6.sin6_family = AF_INET6;
    v6.sin6_port = htons(port);
    return address(reinterpret_cast<sockaddr*>(&v6), sizeof v6);
  }
  return std::nullopt;
}

address address::ip(std::string_view host, std::uint16_t port) {
  if (auto a = parse_ip(host, port)) return *a;
  throw std::invalid_argument("squall: '" + std::string(host) + "' is not a numeric IP address");
}

address address::any(int family, std::uint16_t port) noexcept {
  if (family == AF_INET6) {
    sockaddr_in6 v6{};
    v6.sin6_family = AF_INET6;
    v6.sin6_addr = in6addr_any;
    v6.sin6_port = htons(port);
    return address(reinterpret_cast<sockaddr*>(&v6), sizeof v6);
  }
  sockaddr_in v4{};
  v4.sin_family = AF_INET;
  v4.sin_addr.s_addr = htonl(INADDR_ANY);
  v4.sin_port = htons(port);
  return address(reinterpret_cast<sockaddr*>(&v4), sizeof v4);
}

address address::unix_path(std::string_view path) {
  sockaddr_un un{};
  if (path.empty() || path.size() >= sizeof un.sun_path)
    throw std::invalid_argument("squall: Unix socket path is empty or too long: " +
                                std::string(path));
  un.sun_family = AF_UNIX;
  std::memcpy(un.sun_path, path.data(), path.size());
  socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size());
  if (path[0] == '@') {
    un.sun_path[0] = '\0';  // abstract namespace: no trailing NUL, length says where it ends
  } else {
    len += 1;
  }
  return address(reinterpret_cast<sockaddr*>(&un), len);
}

std::uint16_t address::port() const noexcept {
  if (family() == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in*>(&storage_)->sin_port);
  if (family() == AF_INET6)
    return ntohs(reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_port);
  return 0;
}

namespace {

// Writes `n` (0-65535) in decimal at `out`; returns the end. inet_ntop and std::to_string go
// through snprintf, and a server formats every accepted peer (its fiber's name, the HTTP
// server's remote_ip): that was about 1.4% of the CPU of a connection-per-request load.
char* put_decimal(char* out, unsigned n) noexcept {
  char digits[5];
  int k = 0;
  do {
    digits[k++] = static_cast<char>('0' + n % 10);
    n /= 10;
  } while (n != 0);
  while (k > 0)
    *out++ = digits[--k];
  return out;
}

// "a.b.c.d" at `out` (room for 15 bytes); returns the end.
char* put_ipv4(char* out, const in_addr& a) noexcept {
  const auto* b = reinterpret_cast<const unsigned char*>(&a.s_addr);
  for (int i = 0; i < 4; ++i) {
    if (i > 0) *out++ = '.';
    out = put_decimal(out, b[i]);
  }
  return out;
}

}  // namespace

std::string address::host() const {
  char buf[INET6_ADDRSTRLEN];
  if (family() == AF_INET) {
    char* end = put_ipv4(buf, reinterpret_cast<const sockaddr_in*>(&storage_)->sin_addr);
    return std::string(buf, end);
  }
  if (family() == AF_INET6) {
    ::inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_addr, buf,
                sizeof buf);
    return buf;
  }
  if (family() == AF_UNIX) {
    const auto* un = reinterpret_cast<const sockaddr_un*>(&storage_);
    std::size_t n =
        len_ > offsetof(sockaddr_un, sun_path) ? len_ - offsetof(sockaddr_un, sun_path) : 0;
    if (n > 0 && un->sun_path[0] == '\0') return "@" + std::string(un->sun_path + 1, n - 1);
    return std::string(un->sun_path, strnlen(un->sun_path, n));
  }
  return "?";
}

std::string address::to_string() const {
  if (family() == AF_INET) {
    char buf[24];  // "255.255.255.255:65535"
    char* end = put_ipv4(buf, reinterpret_cast<const sockaddr_in*>(&storage_)->sin_addr);
    *end++ = ':';
    end = put_decimal(end, port());
    return std::string(buf, end);
  }
  if (family() == AF_INET6) return "[" + host() + "]:" + std::to_string(port());
  return host();
}

bool address::operator==(const address& o) const noexcept {
  return len_ == o.len_ && std::memcmp(&storage_, &o.storage_, len_) == 0;
}

address local_address(int fd) noexcept {
  address a;
  *a.size_ptr() = address::capacity;
  if (::getsockname(fd, a.data(), a.size_ptr()) != 0) return {};
  return a;
}

std::error_code socket_error(int e) noexcept {
  switch (e) {
    case ECONNRESET:
    case EPIPE:
      return error::reset;
    case ECANCELED:
      return error::cancelled;
    default:
      return {e, std::system_category()};
  }
}

}  // namespace squall
