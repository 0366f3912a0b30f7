// SPDX-License-Identifier: MIT
// The seam between io_loop and the kernel's multiplexer: one small interface, one file per
// mechanism (epoll.cpp, io_uring.cpp, kqueue.cpp), chosen at run time by make_backend().
//
// Everything here is level-triggered readiness for fds the loop watches, plus one blocking wait.
// Calls return 0 / a count on success and -errno on failure; nothing throws. A backend is used
// from one thread at a time (the loop's).
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <memory>

struct msghdr;
struct sockaddr;

#include "squall/io_loop.hpp"

namespace squall::detail {

// io_completion, the fiber I/O seam's completion record, is in squall/io_loop.hpp (io_stream
// embeds one).

// Runs io->deferred(io) at the end of the loop's current iteration, after its callbacks and
// before it polls again (readiness backends send the iteration's writes together there, as
// io_uring submits them together). forget_io() takes it back.
void defer_io(io_loop& loop, io_completion* io);

// Prefetches what resuming a fiber suspended at `p` (a record on its stack) will touch: from
// `below` bytes under `p` up to the end of p's page. Stacks grow down from a page-aligned top,
// so the rest of that page is the fiber's own frames (with a connection's state near the top);
// the next page up may already be past the top.
inline void prefetch_stack(const void* p, std::size_t below) noexcept {
  auto a = reinterpret_cast<std::uintptr_t>(p) & ~std::uintptr_t{63};
  std::uintptr_t end = (a | 4095) + 1;
  // Unrolled: a loop step per line was three instructions of bookkeeping for each prefetch,
  // about a hundred a resumed fiber.
#pragma GCC unroll 4
  for (std::uintptr_t c = a - below; c < end; c += 64)
    __builtin_prefetch(reinterpret_cast<const void*>(c));
}

// One report from wait(): a ready fd with an fd handler (`io` null; `events` is a mask of
// io_loop::read / write / error), or an event for an io_completion (`io` set).
struct ready_event {
  int fd = -1;
  unsigned events = 0;
  io_completion* io = nullptr;
  int res = 0;
  unsigned flags = 0;
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

  // --- The fiber I/O seam ---------------------------------------------------------------------
  // Readiness backends (epoll, kqueue) try the syscall in the calling fiber and, on EAGAIN, wait
  // for the readiness that add_io() reports. Completion backends (io_uring) queue the operation
  // itself with submit_*() and report its result. Each backend does what it is good at; the
  // fiber layer (async_fd.cpp) picks the path with completion_based().

  virtual bool completion_based() const noexcept { return false; }

  // Readiness: watch `fd` for read and write readiness, edge-triggered, registered once for the
  // fd's life (an epoll_ctl per operation would double the syscalls). Reports go to `io`.
  virtual int add_io(int fd, io_completion* io) noexcept {
    (void)fd, (void)io;
    return -ENOSYS;
  }
  virtual int remove_io(int fd) noexcept {
    (void)fd;
    return -ENOSYS;
  }

  // Completion: queue an operation whose result goes to `op`. The operation reaches the kernel
  // with the next wait(). -errno if it cannot be queued.
  // `expect_empty`: the caller expects no data yet (it just sent a request, or its last read
  // drained the socket), so the kernel may wait for readiness before trying (io_uring's
  // RECVSEND_POLL_FIRST) instead of trying once in vain.
  virtual int submit_recv(int fd, void* buf, std::size_t len, int flags, bool expect_empty,
                          io_completion* op) noexcept;
  virtual int submit_sendmsg(int fd, const struct msghdr* msg, int flags,
                             io_completion* op) noexcept;
  virtual int submit_recvmsg(int fd, struct msghdr* msg, int flags, io_completion* op) noexcept;
  virtual int submit_accept(int fd, struct sockaddr* addr, unsigned* addrlen, int flags,
                            io_completion* op) noexcept;
  virtual int submit_connect(int fd, const struct sockaddr* addr, unsigned addrlen,
                             io_completion* op) noexcept;
  // Provided buffers (io_uring's buffer rings): a receive whose buffer the kernel picks only
  // when the bytes arrive, from a region the backend owns, so that a connection waiting for
  // its next request holds no buffer of its own (see io_uring.cpp, provided_region).
  // provides_buffers() sets it up on first use and says whether the kernel can;
  // shares_receives() also asks that the loop have `shared_from` open sockets
  // (io_loop::options::shared_receive_from), which async_fd counts in `ring_sockets`.
  virtual bool provides_buffers() noexcept { return false; }
  bool shares_receives() noexcept { return ring_sockets >= shared_from && provides_buffers(); }
  std::size_t ring_sockets = 0;
  std::size_t shared_from = 0;
  // An async_fd socket whose operations go on the ring, from its adoption until it is closed
  // or given back (after any queued operation on it went to the kernel). Counted in
  // `ring_sockets`; io_uring also enters the fd in a table registered with the kernel (fixed
  // files), so that no operation on it has to look it up in the process's fd table.
  void adopt_socket(int fd) noexcept {
    ++ring_sockets;
    register_file(fd);
  }
  // Given back: the fd stays open, with no entry left.
  void forget_socket(int fd) noexcept {
    --ring_sockets;
    unregister_file(fd);
  }
  // Closes the fd and its entry; the socket is closed when this returns, as with close().
  void close_socket(int fd) noexcept {
    --ring_sockets;
    close_file(fd);
  }
  // Queues a receive of up to `len` bytes into the region. A result of -ENOBUFS means the
  // region was full: receive into a buffer of your own this time.
  virtual int submit_recv_provided(int fd, std::size_t len, bool expect_empty,
                                   io_completion* op) noexcept;
  // Where a provided receive's `res` bytes are, from its completion's `events` and `flags`;
  // null if it carries none. Valid until the loop waits again: copy them out before that.
  virtual const char* provided_bytes(int res, unsigned events, unsigned flags) const noexcept {
    (void)res, (void)events, (void)flags;
    return nullptr;
  }
  // One-shot readiness of `fd` (io_loop::read / write) as an operation.
  virtual int submit_poll(int fd, unsigned events, io_completion* op) noexcept;
  // Asks the kernel to cancel `op`; `op` still gets its completion (-ECANCELED, or its result if
  // it finished first).
  virtual int submit_cancel(io_completion* op) noexcept;

  // Cancels the backend may still have to try again (io_uring: see cancelling_ there). The loop
  // calls dispatched() for each completion it hands to its operation while any are pending: an
  // operation is done with at dispatch, not when its completion is harvested, since a cancel
  // can be asked for in between (by a fiber an earlier completion of the batch resumed).
  bool cancels_pending() const noexcept { return cancels_pending_ != 0; }
  virtual void dispatched(io_completion* op, unsigned flags) noexcept { (void)op, (void)flags; }

 protected:
  std::size_t cancels_pending_ = 0;

 private:
  virtual void register_file(int fd) noexcept { (void)fd; }
  virtual void unregister_file(int fd) noexcept { (void)fd; }
  virtual void close_file(int fd) noexcept;
};

// The backend of `loop` (for the fiber I/O layer).
backend& backend_of(io_loop& loop) noexcept;

// Builds the backend `kind` names (never automatic). Returns nullptr and sets `err` (an errno
// value, or ENOSYS for a backend not compiled in) if it cannot be set up.
std::unique_ptr<backend> make_epoll_backend(int& err);
// defer: io_loop::options::defer_completions.
std::unique_ptr<backend> make_io_uring_backend(int& err, bool defer);
std::unique_ptr<backend> make_kqueue_backend(int& err);

// Resolves `automatic` (SQUALL_BACKEND, then the platform default), builds the backend, and
// falls back from io_uring to epoll with one log line. Throws std::system_error on failure.
std::unique_ptr<backend> make_backend(backend_kind requested, bool defer_completions);

}  // namespace squall::detail
