// SPDX-License-Identifier: MIT
// squall's error codes: one std::error_category for every failure squall itself names.
//
// Fiber-facing calls throw std::system_error carrying one of these (or a plain errno code from
// std::system_category() when the kernel said no). Compare with `e.code() == squall::error::x`.
#pragma once

#include <string>
#include <system_error>

namespace squall {

enum class error {
  // Streams and operations (used from the fibers/IOStream layer on).
  closed = 1,   // the stream was closed, by the peer or by us
  reset,        // the peer reset the connection
  timed_out,    // a deadline passed
  buffer_full,  // a buffer limit was reached
  cancelled,    // the operation or its fiber was cancelled
  not_found,    // a name or object does not exist
  // Misuse of the loop API.
  already_watched,  // add_handler on an fd that already has a handler
  not_watched,      // update_handler / remove_handler on an fd without a handler
  wrong_thread,     // a loop method that is not thread-safe was called off the loop's thread
  loop_running,     // run() or run_once() re-entered, or the loop is running on another thread
  bad_backend,      // an unknown backend name, or one that cannot be built on this platform
  // Name resolution (not_found above is NXDOMAIN).
  no_data,         // the name exists but has no address of the family asked for
  server_failure,  // the DNS server failed (SERVFAIL), refused, or answered nonsense
  bad_name,        // not a valid host name
};

const std::error_category& error_category() noexcept;

inline std::error_code make_error_code(error e) noexcept {
  return {static_cast<int>(e), error_category()};
}

// Throws std::system_error(e, what). Out of line so callers stay small.
[[noreturn]] void throw_error(error e, const std::string& what);

// Throws std::system_error(errno_value, std::system_category(), what).
[[noreturn]] void throw_errno(int errno_value, const std::string& what);

}  // namespace squall

template <>
struct std::is_error_code_enum<squall::error> : std::true_type {};
