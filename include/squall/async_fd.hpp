// SPDX-License-Identifier: MIT
// async_fd: an fd owned by a loop, with operations that suspend the calling fiber until done.
//
// This is the seam between fibers and backends. On epoll (and kqueue) each call tries the
// syscall first, which usually succeeds on a busy socket, and only on EAGAIN waits for the
// readiness reported by an edge-triggered registration made once, when the fd is adopted. On
// io_uring each call is an operation on the ring: the fiber suspends and resumes on its
// completion. Both give the same results.
//
// Every call takes an absolute deadline (default: never), must run in a fiber on the fd's loop,
// and throws std::system_error: error::timed_out, error::cancelled, error::closed (the fd was
// closed by another fiber while this one waited), error::reset (ECONNRESET, EPIPE), or the
// errno the kernel gave (ECONNREFUSED, ...). A cancelled or timed-out io_uring operation is
// cancelled in the kernel and its completion awaited before the call returns, so no operation
// outlives the buffer it was given; data it had already received is returned, not lost.
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <memory>

#include "squall/fiber.hpp"
#include "squall/net.hpp"

namespace squall {

namespace detail {
struct fd_state;
}

// Told by write_all_read_some() as soon as its send is complete, while the receive may still
// be waiting: from then on the caller's send buffers are free (io_stream lets other writers
// in). Called at most once, from the loop or from the calling fiber; must not throw.
struct send_notice {
  void (*sent)(send_notice* self) noexcept = nullptr;
};

// Where a read puts its bytes, asked for only when the read is about to happen (libuv's
// alloc_cb). On epoll and kqueue that is once the fd is readable, so a caller that lends
// buffers from a pool (io_stream) holds none while it waits; on io_uring it is when the
// receive is submitted, and the kernel has the buffer until the receive completes. `get`
// returns the buffer and sets `*len`; it may throw (std::bad_alloc), and for one read it may be
// called more than once (a readiness edge that found nothing): each time it must return the
// same buffer. `hint`, if set, is where the buffer will probably be: the loop prefetches it
// with the fd's next event.
//
// `at_most`, if set, promises that get() gives at least that many bytes of room: the read then
// asks for no more. On io_uring with buffer rings (see async_fd::provides_read_buffers()) it
// also lets the kernel pick where the bytes land while the read waits, in a region the loop
// shares among its connections; get() is then called once they are there, and they are
// copied in.
struct read_target {
  void* (*get)(read_target* self, std::size_t* len) = nullptr;
  const void* hint = nullptr;
  std::size_t at_most = 0;
};

class async_fd {
 public:
  // What the caller knows of an fd it hands over. `accepted`: it came from accept() on an
  // async_fd of the same loop, so it is a stream socket already in the mode the loop wants
  // (blocking on io_uring, non-blocking elsewhere), and adopting it costs no syscall (the
  // general case asks the kernel what the fd is, fstat, and sets its mode, fcntl).
  enum class origin { unknown, accepted };

  async_fd() noexcept;
  // Adopts `fd` (closes it on destruction) and registers it with `loop`'s backend.
  async_fd(io_loop& loop, int fd, origin how = origin::unknown);
  async_fd(async_fd&&) noexcept;
  async_fd& operator=(async_fd&&) noexcept;
  ~async_fd();

  bool is_open() const noexcept;
  int fd() const noexcept;
  io_loop& loop() const;

  // Closes the fd. Fibers waiting on it end with error::closed. Idempotent.
  void close() noexcept;
  // Unregisters and gives the fd back without closing it.
  int release() noexcept;

  // Memory that the code waiting on this fd touches when it resumes, and that is not on the
  // waiting fiber's stack (io_stream passes its per-call record). The loop prefetches it, with
  // the fd's own state and the fiber's stack, one event ahead (docs/design.md, "Fibers").
  // Only a hint: null, or memory that stays valid while the fd is open.
  void set_warm_hint(const void* p) noexcept;

  // Whether a read takes its buffer when it is submitted (io_uring, for sockets) rather than
  // when its bytes are there: read_target::get() is then called before the wait.
  bool reads_at_submit() const noexcept;
  // Whether a read can leave the choice of its buffer to the kernel until its bytes arrive
  // (read_target::at_most): io_uring sockets, on kernels with incremental buffer rings (6.12).
  bool provides_read_buffers() const noexcept;

  // Reads up to `len` bytes; returns how many, 0 at end of stream.
  std::size_t read_some(void* buf, std::size_t len, time_point deadline = time_point::max());
  // The same, into the buffer `target` gives when the bytes can be read.
  std::size_t read_some(read_target& target, time_point deadline = time_point::max());
  // Writes some of the buffers (at least one byte unless all are empty); returns how many bytes.
  std::size_t write_some(const iovec* iov, int iovcnt, time_point deadline = time_point::max());
  std::size_t write_some(const void* buf, std::size_t len, time_point deadline = time_point::max());
  // Writes everything (looping over partial writes).
  void write_all(const iovec* iov, int iovcnt, time_point deadline = time_point::max());

  // write_all(iov) then read_some(buf, len), as one step: the request/response turn of a
  // protocol. On io_uring the send and the receive go to the kernel together, in one
  // io_uring_enter, and the fiber suspends once. On epoll and kqueue, when the socket has no
  // unread data, the send is made by the loop at the end of its iteration, together with the
  // other connections' sends of that iteration, while the fiber already waits for the answer;
  // otherwise it is the two calls. Either way the send is complete when this returns. Returns what
  // read_some returns. If the send fails or is cut short (deadline, cancel) after the receive
  // already got bytes, those bytes are not dropped: with `send_error` given they are returned
  // and the send's error is stored there; without it the call throws. `notice`, if given, hears
  // when the send is complete (see send_notice). On io_uring a send that goes out whole does
  // not resume the fiber: only the answer does.
  std::size_t write_all_read_some(const iovec* iov, int iovcnt, void* buf, std::size_t len,
                                  time_point deadline = time_point::max(),
                                  std::error_code* send_error = nullptr,
                                  send_notice* notice = nullptr);
  // The same, reading into the buffer `target` gives (on epoll and kqueue, once the answer's
  // bytes are there).
  std::size_t write_all_read_some(const iovec* iov, int iovcnt, read_target& target,
                                  time_point deadline = time_point::max(),
                                  std::error_code* send_error = nullptr,
                                  send_notice* notice = nullptr);
  // Sends what the socket takes right now, without waiting; usable from the loop itself (no
  // fiber needed). Returns the bytes sent, or -errno (-EAGAIN: the socket buffer is full).
  // Must not race another send on the fd.
  long try_write(const iovec* iov, int iovcnt) noexcept;

  // Accepts a connection on a listening socket: returns the new fd (close-on-exec; blocking on
  // io_uring, non-blocking elsewhere: adopt it with origin::accepted, or set its mode before
  // using it outside the loop) and sets `peer` if given.
  int accept(address* peer = nullptr, time_point deadline = time_point::max());
  // Connects a socket.
  void connect(const address& to, time_point deadline = time_point::max());

  // Datagrams.
  std::size_t recv_from(void* buf, std::size_t len, address* from,
                        time_point deadline = time_point::max());
  std::size_t send_to(const void* buf, std::size_t len, const address& to,
                      time_point deadline = time_point::max());

  // Waits until the fd is readable / writable.
  void wait_readable(time_point deadline = time_point::max());
  void wait_writable(time_point deadline = time_point::max());

 private:
  static constexpr int max_exchange_iov = 16;
  int detach() noexcept;  // release() and close(): all but giving back or closing the fd
  std::size_t deferred_exchange(const iovec* iov, int iovcnt, read_target& target,
                                time_point deadline, send_notice* notice);
  // deferred_exchange's rare end: the loop did not send it all (from byte `done` on).
  void send_rest(const iovec* iov, int iovcnt, std::size_t done, std::error_code ec,
                 time_point deadline, send_notice* notice);
  std::unique_ptr<detail::fd_state> st_;
};

}  // namespace squall
