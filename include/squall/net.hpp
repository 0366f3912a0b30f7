// SPDX-License-Identifier: MIT
// Socket addresses (IPv4, IPv6, Unix) and the errno-to-squall error mapping used by sockets.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

namespace squall {

// A socket address of any family, stored inline.
class address {
 public:
  address() noexcept = default;
  address(const sockaddr* sa, socklen_t len) noexcept;

  // A numeric IPv4 or IPv6 address ("127.0.0.1", "::1", "[::1]") and a port. No name lookup:
  // std::invalid_argument if `host` is not numeric.
  static address ip(std::string_view host, std::uint16_t port);
  // Same, or nullopt instead of throwing.
  static std::optional<address> parse_ip(std::string_view host, std::uint16_t port) noexcept;
  // The wildcard address of a family (0.0.0.0 or ::).
  static address any(int family, std::uint16_t port) noexcept;
  // A Unix domain socket path (std::invalid_argument if too long). A leading '@' makes an
  // abstract-namespace address (Linux).
  static address unix_path(std::string_view path);

  int family() const noexcept { return storage_.ss_family; }
  std::uint16_t port() const noexcept;  // 0 for Unix addresses
  // The host part: "127.0.0.1", "::1", or the Unix path.
  std::string host() const;
  // "127.0.0.1:80", "[::1]:80", or the Unix path.
  std::string to_string() const;

  const sockaddr* data() const noexcept { return reinterpret_cast<const sockaddr*>(&storage_); }
  sockaddr* data() noexcept { return reinterpret_cast<sockaddr*>(&storage_); }
  socklen_t size() const noexcept { return len_; }
  socklen_t* size_ptr() noexcept { return &len_; }
  static constexpr socklen_t capacity = sizeof(sockaddr_storage);

  bool operator==(const address& o) const noexcept;

 private:
  sockaddr_storage storage_{};
  socklen_t len_ = 0;
};

// The local address a socket is bound to (getsockname); an empty address if it fails.
address local_address(int fd) noexcept;

// The error_code for an errno value from a socket call: ECONNRESET and EPIPE become
// error::reset (the peer is gone and data may be lost), ETIMEDOUT stays the system's, and so on.
std::error_code socket_error(int errno_value) noexcept;

}  // namespace squall
