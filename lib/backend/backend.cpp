// SPDX-License-Identifier: MIT
// Backend selection: the option, then SQUALL_BACKEND, then the platform default; io_uring falls
// back to epoll when the ring cannot be set up (old kernel, seccomp, io_uring_disabled).
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

#include "backend/backend.hpp"
#include "squall/config.hpp"
#include "squall/log.hpp"

namespace squall::detail {

// Readiness backends never queue operations.
int backend::submit_recv(int, void*, std::size_t, int, bool, io_completion*) noexcept {
  return -ENOSYS;
}
int backend::submit_recv_provided(int, std::size_t, bool, io_completion*) noexcept {
  return -ENOSYS;
}
int backend::submit_sendmsg(int, const msghdr*, int, io_completion*) noexcept {
  return -ENOSYS;
}
int backend::submit_recvmsg(int, msghdr*, int, io_completion*) noexcept {
  return -ENOSYS;
}
int backend::submit_accept(int, sockaddr*, unsigned*, int, io_completion*) noexcept {
  return -ENOSYS;
}
int backend::submit_connect(int, const sockaddr*, unsigned, io_completion*) noexcept {
  return -ENOSYS;
}
int backend::submit_poll(int, unsigned, io_completion*) noexcept {
  return -ENOSYS;
}
int backend::submit_cancel(io_completion*) noexcept {
  return -ENOSYS;
}

void backend::close_file(int fd) noexcept {
  ::close(fd);
}

#if !SQUALL_HAVE_IO_URING
std::unique_ptr<backend> make_io_uring_backend(int& err, bool) {
  err = ENOSYS;
  return nullptr;
}
#endif
#if !SQUALL_HAVE_EPOLL
std::unique_ptr<backend> make_epoll_backend(int& err) {
  err = ENOSYS;
  return nullptr;
}
#endif
#if !SQUALL_HAVE_KQUEUE
std::unique_ptr<backend> make_kqueue_backend(int& err) {
  err = ENOSYS;
  return nullptr;
}
#endif

namespace {

// The default when nothing asks for a backend. epoll on Linux: for readiness work it costs
// fewer instructions per event than io_uring's POLL_ADD round trip (docs/performance.md).
constexpr backend_kind platform_default = SQUALL_HAVE_EPOLL    ? backend_kind::epoll
                                          : SQUALL_HAVE_KQUEUE ? backend_kind::kqueue
                                                               : backend_kind::io_uring;

backend_kind from_environment() {
  const char* env = std::getenv("SQUALL_BACKEND");
  if (!env || !*env) return backend_kind::automatic;
  for (auto k : {backend_kind::io_uring, backend_kind::epoll, backend_kind::kqueue})
    if (std::strcmp(env, to_string(k)) == 0) return k;
  if (std::strcmp(env, "auto") == 0 || std::strcmp(env, "automatic") == 0)
    return backend_kind::automatic;
  throw_error(error::bad_backend, std::string("SQUALL_BACKEND=") + env +
                                      " is not a backend (use io_uring, epoll or kqueue)");
}

std::unique_ptr<backend> build(backend_kind kind, bool defer, int& err) {
  switch (kind) {
    case backend_kind::io_uring:
      return make_io_uring_backend(err, defer);
    case backend_kind::epoll:
      return make_epoll_backend(err);
    case backend_kind::kqueue:
      return make_kqueue_backend(err);
    case backend_kind::automatic:
      break;
  }
  err = EINVAL;
  return nullptr;
}

}  // namespace

std::unique_ptr<backend> make_backend(backend_kind requested, bool defer_completions) {
  backend_kind kind = requested;
  if (kind == backend_kind::automatic) kind = from_environment();
  if (kind == backend_kind::automatic) kind = platform_default;

  int err = 0;
  std::unique_ptr<backend> b = build(kind, defer_completions, err);
  if (b) return b;
  if (err == ENOSYS)
    throw_error(error::bad_backend,
                std::string(to_string(kind)) + " backend is not available in this build");
  if (kind == backend_kind::io_uring && SQUALL_HAVE_EPOLL) {
    log(log_level::warn, "loop", "io_uring set-up failed (%s); falling back to epoll",
        std::strerror(err));
    b = build(backend_kind::epoll, false, err);
    if (b) return b;
  }
  throw_errno(err, std::string("cannot set up the ") + to_string(kind) + " backend");
}

}  // namespace squall::detail
