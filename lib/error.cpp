// SPDX-License-Identifier: MIT
// squall's error category and the throw helpers.
#include "squall/error.hpp"

namespace squall {
namespace {

class category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "squall"; }
  std::string message(int ev) const override {
    switch (static_cast<error>(ev)) {
      case error::closed:
        return "stream closed";
      case error::reset:
        return "connection reset by peer";
      case error::timed_out:
        return "timed out";
      case error::buffer_full:
        return "buffer full";
      case error::cancelled:
        return "cancelled";
      case error::not_found:
        return "not found";
      case error::already_watched:
        return "already watched";
      case error::not_watched:
        return "not watched";
      case error::wrong_thread:
        return "called from a thread that does not own the loop";
      case error::loop_running:
        return "loop is already running";
      case error::bad_backend:
        return "backend not available";
      case error::no_data:
        return "no address of the family asked for";
      case error::server_failure:
        return "name server failure";
      case error::bad_name:
        return "not a valid host name";
    }
    return "unknown squall error";
  }
};

}  // namespace

const std::error_category& error_category() noexcept {
  static const category c;
  return c;
}

void throw_error(error e, const std::string& what) {
  throw std::system_error(e, what);
}

void throw_errno(int errno_value, const std::string& what) {
  throw std::system_error(errno_value, std::system_category(), what);
}

}  // namespace squall
