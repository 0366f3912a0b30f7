// SPDX-License-Identifier: MIT
// The seam between io_loop and the kernel's multiplexer: one small interface, one file per
// mechanism (epoll.cpp, io_uring.cpp, kqueue.cpp), chosen at run time by make_backend().
//
// Everything here is level-triggered readiness for fds the loop watches, plus one blocking wait.
// Calls return 0 / a count on success and -errno on failure; nothing throws. A backend is used
// from one thread at a time (the loop's).
#pragma once

#include <cstdint>
#include <memory>

#include "squall/io_loop.hpp"

namespace squall::detail {

// One ready fd: `events` is a mask of io_loop::read / write / error.
struct ready_event {
  int fd;
  unsigned events;
};

class backend {
 public:
  virtual ~backend() = default;

  virtual backend_kind kind() const noexcept = 0;

  // Start, change, or stop watching `fd`. `events` is a non-empty mask of io_loop::read and
  // io_loop::write; the loop never passes 0 (it removes instead, because an fd watched for
  // nothing would still report hang-ups, level-triggered, forever).
  virtual int add(int fd, unsigned events) noexcept = 0;
  virtual int modify(int fd, unsigned events) noexcept = 0;
  virtual int remove(int fd) noexcept = 0;

  // Waits until at least one watched fd is ready or `timeout_ns` passes (-1: no limit, 0: just
  // look), then stores up to `capacity` ready fds in `out` and returns how many (0 on timeout or
  // EINTR). Submits any work the backend has queued.
  virtual int wait(std::int64_t timeout_ns, ready_event* out, int capacity) noexcept = 0;

  // Pushes queued work to the kernel without waiting (the loop calls this before it hands
  // control back to an embedding program). A no-op where nothing is ever queued.
  virtual void flush() noexcept {}

  // An fd that is readable whenever wait() would find something. Created on first call where it
  // costs something to keep (io_uring). Returns -errno on failure.
  virtual int pollable_fd() noexcept = 0;
};

// Builds the backend `kind` names (never automatic). Returns nullptr and sets `err` (an errno
// value, or ENOSYS for a backend not compiled in) if it cannot be set up.
std::unique_ptr<backend> make_epoll_backend(int& err);
std::unique_ptr<backend> make_io_uring_backend(int& err);
std::unique_ptr<backend> make_kqueue_backend(int& err);

// Resolves `automatic` (SQUALL_BACKEND, then the platform default), builds the backend, and
// falls back from io_uring to epoll with one log line. Throws std::system_error on failure.
std::unique_ptr<backend> make_backend(backend_kind requested);

}  // namespace squall::detail
