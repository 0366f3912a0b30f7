// SPDX-License-Identifier: MIT
// async_fd: fiber I/O on one fd, over a readiness backend (try the syscall, wait for the edge)
// or a completion backend (an io_uring operation per call).
//
// Each fd has at most one waiting reader and one waiting writer (a slot each), which is what
// lets close() find and end the waits of other fibers. A waiter's `data` points at the fd's
// state while the state lives; close() clears it, so a fiber resuming after its fd was closed
// and freed by another fiber never touches the freed state.
#include "squall/async_fd.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>
#include <utility>

#include "backend/backend.hpp"
#include "squall/log.hpp"

namespace squall {
namespace detail {

// Two cache lines, aligned: every request on a connection touches both (the event, the
// wait, the deferred send), and a 136-byte record at malloc's alignment spanned three. The
// first line has what dispatching an event reads.
struct alignas(64) fd_state final : io_completion, line_aligned {
  int fd = -1;
  bool ring = false;        // operations go on the io_uring ring
  bool socket = false;      // sockets use send/recv (MSG_NOSIGNAL); others read/write
  bool registered = false;  // add_io() done (readiness backends)
  // Edge-triggered hints: false once a read (write) came up short or hit EAGAIN, true again
  // when the next edge arrives. While false, the next call waits for the edge instead of
  // trying a syscall that would only say EAGAIN: an echo round trip then costs epoll_wait,
  // recv and send, like hand-written epoll code, instead of four syscalls.
  bool may_read = true;
  bool may_write = true;
  // The peer hung up or the socket has an error: sticky, because end of stream (or the error)
  // is reported by the next syscall without another edge.
  bool hup = false;
  // A send deferred to the end of the loop iteration (see deferred_exchange()): how the loop's
  // attempt went, the caller's vector, and what to tell when it is all sent.
  enum class send_state : std::uint8_t { none, queued, sent, partial, failed };
  send_state dsend = send_state::none;
  waiter* reader = nullptr;
  waiter* writer = nullptr;
  int dsend_iovcnt = 0;
  int dsend_errno = 0;  // failed
  // Second line.
  io_loop* loop = nullptr;
  backend* be = nullptr;
  // For warm_readiness(): the fiber that last waited here and the buffer a waiting read will
  // fill, so that both are in the cache when the edge is dispatched.
  const void* last_fiber = nullptr;
  const void* read_buf = nullptr;
  const iovec* dsend_iov = nullptr;
  std::size_t dsend_done = 0;           // bytes the loop sent (partial)
  send_notice* dsend_notice = nullptr;  // told when the loop has sent it all
  const void* warm_hint = nullptr;      // set_warm_hint()
};
static_assert(sizeof(fd_state) == 128);

}  // namespace detail

namespace {

using detail::fd_state;
using detail::waiter;
using slot_ptr = waiter* fd_state::*;

[[noreturn]] void fail(std::error_code ec, const char* what) {
  throw std::system_error(ec, what);
}
[[noreturn]] void fail_errno(int e, const char* what) {
  fail(socket_error(e), what);
}

fd_state& state(const std::unique_ptr<fd_state>& st, const char* what) {
  if (!st || st->fd < 0) fail(error::closed, what);
  return *st;
}

// Takes the reader or writer slot for `w`; two fibers waiting to read one fd is a bug.
void claim(fd_state& st, slot_ptr slot, waiter& w) {
  if (st.*slot)
    throw std::logic_error("squall: another fiber is already waiting on fd " +
                           std::to_string(st.fd) + " in the same direction");
  st.*slot = &w;
  st.last_fiber = detail::current_fiber();
  w.data = &st;
  w.fd = st.fd;
  // Dumps show the operation ("read"), not the error-message prefix: every `what` in this file
  // is "squall: <operation>".
  w.what += sizeof("squall: ") - 1;
}

// After a wait: give the slot back, unless close() took it (and maybe freed the state).
void unclaim(slot_ptr slot, waiter& w) {
  if (auto* st = static_cast<fd_state*>(w.data))
    if (st->*slot == &w) st->*slot = nullptr;
}

// Unclaims when the wait's frame goes, however it goes: loop shutdown throws fiber_unwind out
// of suspend(), and a slot left pointing at the unwound waiter would be woken (or abandoned by
// a later close) through a dead frame.
struct claim_guard {
  slot_ptr slot;
  waiter& w;
  ~claim_guard() { unclaim(slot, w); }
};

// --- Readiness backends ------------------------------------------------------------------------

// Edge-triggered reports for a registered fd: wake whoever waits in that direction.
void on_readiness(detail::io_completion* c, unsigned events, int, unsigned) {
  auto* st = static_cast<fd_state*>(c);
  if (events & io_loop::error) st->hup = true;
  if (events & (io_loop::read | io_loop::error)) st->may_read = true;
  if (events & (io_loop::write | io_loop::error)) st->may_write = true;
  waiter* r = events & (io_loop::read | io_loop::error) ? st->reader : nullptr;
  waiter* w = events & (io_loop::write | io_loop::error) ? st->writer : nullptr;
  // Both slots are read before either fiber runs: the first may close and free the state.
  // The second waiter is still valid then (its fiber can only be resumed by us or later).
  if (r) detail::wake_now(*r);
  if (w) detail::wake_now(*w);
}

// Resuming a fiber runs its stack from the switch back up through its callers. The switch's
// saved registers sit 150-400 bytes under the waiter (measured: the readiness wait, the ring
// receive, the ring send-and-receive); more would only fill the CPU's miss buffers, which
// makes the prefetches themselves stall.
constexpr std::size_t warm_below = 448;

void warm_readiness(const detail::io_completion* c, bool for_deferred) noexcept {
  auto* st = static_cast<const fd_state*>(c);
  if (for_deferred) {
    // flush_deferred_send() reads the queued vector and tells the notice, both in the fiber's
    // frames above the wait; the fiber itself does not run, so its stack is not swept (that
    // sweep was a tenth of a request's instructions when done for the send as well).
    __builtin_prefetch(st->dsend_iov);
    __builtin_prefetch(st->dsend_notice);
    __builtin_prefetch(st->warm_hint);  // the notice ends the stream's send there
    return;
  }
  if (!st->reader && !st->writer) return;
  __builtin_prefetch(st->last_fiber);
  __builtin_prefetch(st->warm_hint);
  if (st->reader) {
    detail::prefetch_stack(st->reader, warm_below);
    if (st->read_buf) __builtin_prefetch(st->read_buf, 1);  // the recv() writes there
  }
  if (st->writer) detail::prefetch_stack(st->writer, warm_below);
}

// A ring operation's record lives on the waiting fiber's stack. Its completion also touches
// the fd's state (the wait gives its slot back) and the fiber's record (the switch): on
// readiness backends the fd's state is the completion record itself, here it is not.
void warm_ring_target(const detail::io_completion* c, const void* state,
                      const void* fiber) noexcept {
  detail::prefetch_stack(c, warm_below);
  if (state) {
    __builtin_prefetch(state);
    __builtin_prefetch(static_cast<const char*>(state) + 64);
  }
  __builtin_prefetch(fiber);
}

void wait_edge(fd_state& st, slot_ptr slot, const char* what, time_point deadline) {
  waiter w;
  w.what = what;
  w.abandon = [](waiter& me) { detail::wake(me, me.abandon_reason); };
  claim(st, slot, w);
  claim_guard guard{slot, w};
  std::error_code ec = detail::suspend(w, deadline);
  if (ec) fail(ec, what);
}

void wait_ring_poll(fd_state& st, slot_ptr slot, const char* what, time_point deadline);

// Tries `sys()`; on EAGAIN waits for the next edge (or, for a non-socket fd on io_uring, a poll
// operation) and tries again. `want` is how many bytes were asked for (read after each `sys()`,
// which may set it): a shorter result means the kernel's buffer was drained (or filled), so
// the next call waits for the edge first. 0 means a result says nothing about the next call
// (accept, datagrams).
template <class Sys>
std::size_t readiness_op(fd_state& st, slot_ptr slot, const char* what, time_point deadline,
                         const std::size_t& want, Sys sys) {
  bool& may = slot == &fd_state::reader ? st.may_read : st.may_write;
  for (;;) {
    if (may || st.hup || st.ring) {
      ssize_t r = sys();
      if (r >= 0) {
        // 0 is end of stream for a read and says nothing about the next call.
        if (r > 0 && static_cast<std::size_t>(r) < want) may = false;
        return static_cast<std::size_t>(r);
      }
      int e = errno;
      if (e == EINTR) continue;
      if (e != EAGAIN && e != EWOULDBLOCK) fail_errno(e, what);
      may = false;
    }
    if (st.ring)
      wait_ring_poll(st, slot, what, deadline);
    else
      wait_edge(st, slot, what, deadline);
  }
}

// --- Completion backend (io_uring) ----------------------------------------------------------

// An operation the fiber's cancel could not stop (it completed first) still reports its result,
// but the cancel must not be used up by it: the fiber's next wait ends with it, as it would have
// on a readiness backend, where the cancel ends the wait before the operation is tried. (A
// sender cancelled between two sends of a large write would otherwise send on until its
// deadline.)
void keep_cancel(std::error_code reason) noexcept {
  if (reason != error::cancelled) return;  // a deadline that passed stays passed
  if (detail::fiber_record* f = detail::current_fiber()) detail::cancel(f);
}

struct ring_op final : detail::io_completion, waiter {
  detail::backend* be = nullptr;
  int res = 0;
  unsigned cflags = 0;
  unsigned events = 0;  // a provided receive's offset (backend::provided_bytes())
};

void warm_ring_op(const detail::io_completion* c, bool) noexcept {
  auto* op = static_cast<const ring_op*>(c);
  warm_ring_target(c, op->data, op->fiber);
}

void on_ring_complete(detail::io_completion* c, unsigned events, int res, unsigned flags) {
  auto* op = static_cast<ring_op*>(c);
  op->res = res;
  op->cflags = flags;
  op->events = events;
  waiter& w = *op;
  // A cancelled operation ends with ECANCELED, or with EINTR when it had gone to a kernel
  // worker (a send the socket could not take): either way the wait's own reason (a deadline, a
  // cancel) is the answer, not the errno.
  if ((res == -ECANCELED || res == -EINTR) && w.abandoning)
    detail::wake_now(w, w.abandon_reason);
  else
    detail::wake_now(w);
}

// Ending a ring wait early means cancelling the operation in the kernel; the fiber stays
// suspended until the operation's own completion arrives, because the kernel may write into
// the buffers (and the record on the fiber's stack) until then.
void abandon_ring(waiter& w) {
  auto& op = static_cast<ring_op&>(w);
  if (int r = op.be->submit_cancel(&op); r < 0)
    log(log_level::warn, "io", "cannot cancel an io_uring operation on fd %d: %s", w.fd,
        std::system_category().message(-r).c_str());
}

struct no_after {
  void operator()(ring_op&) const noexcept {}
};

// Runs one ring operation; `submit(op)` queues it. Returns its non-negative result. If
// `still_open` is given, it says whether the fd's state still exists afterwards (another fiber
// may have closed the fd while this one waited; a result it got first is still returned).
// `after(op)`, if given, sees the completion first, whatever it is (a provided receive's
// bytes are copied out there), and may change op.res.
template <class Submit, class After = no_after>
int ring_run(fd_state& st, slot_ptr slot, const char* what, time_point deadline, Submit submit,
             bool* still_open = nullptr, After after = {}) {
  ring_op op;
  op.complete = on_ring_complete;
  op.warm = warm_ring_op;
  op.be = st.be;
  op.what = what;
  op.abandon = abandon_ring;
  claim(st, slot, op);
  if (int r = submit(static_cast<detail::io_completion*>(&op)); r < 0) {
    unclaim(slot, op);
    fail_errno(-r, what);
  }
  std::error_code ec;
  {
    claim_guard guard{slot, op};
    ec = detail::suspend(op, deadline);
    if (still_open) *still_open = op.data != nullptr;
  }
  after(op);
  // A result that arrived despite a cancel (it finished first) is kept: the data is real.
  if (op.res >= 0) {
    if (op.abandoning) keep_cancel(op.abandon_reason);
    return op.res;
  }
  if (ec) fail(ec, what);
  fail_errno(-op.res, what);
}

void wait_ring_poll(fd_state& st, slot_ptr slot, const char* what, time_point deadline) {
  unsigned dir = slot == &fd_state::reader ? io_loop::read : io_loop::write;
  ring_run(st, slot, what, deadline, [&](auto* op) { return st.be->submit_poll(st.fd, dir, op); });
}

int set_nonblocking(int fd, bool on) {
  int fl = ::fcntl(fd, F_GETFL);
  if (fl < 0) return -errno;
  int want = on ? (fl | O_NONBLOCK) : (fl & ~O_NONBLOCK);
  if (want != fl && ::fcntl(fd, F_SETFL, want) < 0) return -errno;
  return 0;
}

bool waits_on_ring(const fd_state& st) {
  return st.ring && st.socket;
}

}  // namespace

// --- async_fd ----------------------------------------------------------------------------------

async_fd::async_fd() noexcept = default;
async_fd::async_fd(async_fd&&) noexcept = default;
async_fd& async_fd::operator=(async_fd&& o) noexcept {
  if (this != &o) {
    close();
    st_ = std::move(o.st_);
  }
  return *this;
}
async_fd::~async_fd() {
  close();
}

async_fd::async_fd(io_loop& loop, int fd, origin how) : st_(std::make_unique<fd_state>()) {
  if (fd < 0) throw std::invalid_argument("squall: async_fd: negative fd");
  fd_state& st = *st_;
  st.loop = &loop;
  st.be = &detail::backend_of(loop);
  st.fd = fd;
  st.ring = st.be->completion_based();
  if (how == origin::accepted) {
    st.socket = true;  // and accept() left it in the mode set_nonblocking() would set
  } else {
    struct stat sb;
    if (::fstat(fd, &sb) != 0) fail_errno(errno, "squall: async_fd");
    st.socket = S_ISSOCK(sb.st_mode);
    // Ring operations on sockets block in the kernel, not in us, and an O_NONBLOCK socket
    // would make them fail with EAGAIN instead; everything else is driven by non-blocking
    // syscalls. (accept() makes its sockets so: see there.)
    if (int r = set_nonblocking(fd, !waits_on_ring(st)); r < 0) fail_errno(-r, "squall: async_fd");
  }
  if (waits_on_ring(st)) st.be->adopt_socket(fd);
  if (!st.ring) {
    st.complete = on_readiness;
    st.warm = warm_readiness;
    if (int r = st.be->add_io(fd, &st); r < 0) fail_errno(-r, "squall: async_fd: register");
    st.registered = true;
  }
}

void async_fd::set_warm_hint(const void* p) noexcept {
  if (st_) st_->warm_hint = p;
}

bool async_fd::reads_at_submit() const noexcept {
  return st_ && waits_on_ring(*st_);
}

bool async_fd::provides_read_buffers() const noexcept {
  return st_ && waits_on_ring(*st_) && st_->be->shares_receives();
}

bool async_fd::is_open() const noexcept {
  return st_ && st_->fd >= 0;
}
int async_fd::fd() const noexcept {
  return st_ ? st_->fd : -1;
}
io_loop& async_fd::loop() const {
  if (!st_) throw std::logic_error("squall: empty async_fd");
  return *st_->loop;
}

int async_fd::detach() noexcept {
  if (!st_ || st_->fd < 0) return -1;
  fd_state& st = *st_;
  // End the waits of other fibers first: they must not use the fd once it is given away.
  bool ring_waits = false;
  for (slot_ptr slot : {&fd_state::reader, &fd_state::writer}) {
    if (waiter* w = st.*slot) {
      st.*slot = nullptr;
      w->data = nullptr;
      ring_waits = ring_waits || st.ring;
      detail::abandon(*w, error::closed);
    }
  }
  // A ring operation queued this iteration names the fd by number; it only reaches the kernel
  // at the next submit. Submit it (and its cancel) now, while the number still means this
  // file: after close() it could name a new socket that reused the number.
  if (ring_waits) st.be->flush();
  if (st.registered) {
    st.be->remove_io(st.fd);
    detail::forget_io(*st.loop, &st);
    st.registered = false;
  }
  int fd = st.fd;
  st.fd = -1;
  return fd;
}

int async_fd::release() noexcept {
  int fd = detach();
  if (fd >= 0 && waits_on_ring(*st_)) st_->be->forget_socket(fd);  // after detach()'s flush
  st_.reset();
  return fd;
}

void async_fd::close() noexcept {
  int fd = detach();
  if (fd < 0) return;
  if (waits_on_ring(*st_))
    st_->be->close_socket(fd);
  else
    ::close(fd);
  st_.reset();
}

namespace {

// A read_target for a buffer the caller already has.
struct fixed_target final : read_target {
  void* buf;
  std::size_t len;
  fixed_target(void* b, std::size_t n) : buf(b), len(n) {
    hint = b;
    get = [](read_target* t, std::size_t* n) {
      auto* f = static_cast<fixed_target*>(t);
      *n = f->len;
      return f->buf;
    };
  }
};

// A provided receive's bytes (see backend::provided_bytes()): copied into the target's
// buffer, asked for now that they are there. Returns false when the region was full
// (-ENOBUFS), having read nothing. get() may throw (std::bad_alloc): the bytes are then lost
// with the stream.
bool deliver(detail::backend& be, read_target& target, int res, unsigned events, unsigned flags) {
  if (res == -ENOBUFS) return false;
  if (res <= 0) return true;
  const char* bytes = be.provided_bytes(res, events, flags);
  std::size_t len = 0;
  void* buf = target.get(&target, &len);
  if (!bytes || len < static_cast<std::size_t>(res))
    throw std::logic_error("squall: a provided receive's bytes do not fit where they belong");
  std::memcpy(buf, bytes, static_cast<std::size_t>(res));
  return true;
}

// What a receive into the loop's region asks for at most. Requests, WebSocket messages and
// replies of the usual sizes fit; the first piece of a larger one is copied, and since it filled
// the receive, the rest is read straight into the target's buffer (a bulk transfer is not
// copied twice, nor does it use up the region).
constexpr std::size_t provided_read_max = 4096;

std::size_t provided_len(const read_target& target) noexcept {
  return std::min(target.at_most, provided_read_max);
}

// A receive whose buffer the kernel picks when the bytes come (read_target::at_most).
// Returns false, having read nothing, when the region was full: the caller reads into
// target.get() instead.
bool read_provided(fd_state& st, read_target& target, time_point deadline, std::size_t& n) {
  static constexpr const char* what = "squall: read";
  detail::backend* be = st.be;
  const std::size_t want = provided_len(target);
  bool open = false;
  bool ran_dry = false;
  n = static_cast<std::size_t>(ring_run(
      st, &fd_state::reader, what, deadline,
      [&](auto* op) { return be->submit_recv_provided(st.fd, want, true, op); }, &open,
      [&](ring_op& op) {
        // Closed while it waited: the target may be gone with its stream, and the bytes with it.
        // (ring_run then throws: error::closed.)
        if (!open && (op.res >= 0 || op.res == -ENOBUFS)) op.res = -ECANCELED;
        ran_dry = !deliver(*be, target, op.res, op.events, op.cflags);
        if (ran_dry) op.res = 0;  // not an error: the caller reads again
      }));
  if (ran_dry) {
    st.may_read = true;  // the bytes are there: the next receive need not wait for them
    return false;
  }
  st.may_read = n >= want;
  return true;
}

}  // namespace

std::size_t async_fd::read_some(void* buf, std::size_t len, time_point deadline) {
  fixed_target t(buf, len);
  return read_some(t, deadline);
}

std::size_t async_fd::read_some(read_target& target, time_point deadline) {
  static constexpr const char* what = "squall: read";
  fd_state& st = state(st_, what);
  std::size_t len = 0;
  if (waits_on_ring(st)) {
    // After a read that drained the socket, the next one most likely waits: the kernel picks
    // its buffer once the bytes come. (One that filled its buffer reads into the target's
    // straight away.)
    if (target.at_most && !st.may_read && st.be->shares_receives()) {
      std::size_t n = 0;
      if (read_provided(st, target, deadline, n)) return n;
    }
    void* buf = target.get(&target, &len);
    // On the ring `may_read` only remembers whether the last receive filled its buffer: if
    // not, the socket was drained and this one will most likely find nothing yet.
    bool open = false;
    auto n = static_cast<std::size_t>(ring_run(
        st, &fd_state::reader, what, deadline,
        [&](auto* op) { return st.be->submit_recv(st.fd, buf, len, 0, !st.may_read, op); }, &open));
    if (open) st.may_read = n >= len;
    return n;
  }
  st.read_buf = target.hint;
  return readiness_op(st, &fd_state::reader, what, deadline, len, [&] {
    void* buf = target.get(&target, &len);
    return st.socket ? ::recv(st.fd, buf, len, 0) : ::read(st.fd, buf, len);
  });
}

namespace {

// A send and a receive in flight together on the ring, for write_all_read_some. The fiber
// suspends on one waiter at a time; each completion wakes the current one, and the fiber looks
// at both operations again. It returns only once neither is in the kernel any more: both use
// memory on its stack.
struct duplex {
  struct op final : detail::io_completion {
    duplex* d = nullptr;
    const void* state = nullptr;  // for warm(): the fd's state and the fiber's record
    const void* fiber = nullptr;
    int res = 0;
    unsigned cflags = 0;
    unsigned events = 0;  // a provided receive's offset (backend::provided_bytes())
    bool busy = false;    // submitted, completion not seen yet
  };
  struct wait final : waiter {
    duplex* d = nullptr;
  };
  op send, recv;
  wait* current = nullptr;  // the wait the fiber is in, if any
  detail::backend* be = nullptr;
  int fd = -1;
  std::size_t send_left = 0;  // bytes of the send in flight
  bool sent_all = false;
  bool ending = false;  // ending early: every completion goes to the fiber
  send_notice* notice = nullptr;
  const void* notice_hint = nullptr;  // what the notice touches (the fd's warm hint: a stream)

  void all_sent() noexcept {
    sent_all = true;
    if (send_notice* n = std::exchange(notice, nullptr)) n->sent(n);
  }
  // A send that went out whole while the receive still waits is taken here, in the loop: the
  // fiber sleeps on until its answer (one resume per exchange instead of two).
  static void on_complete(detail::io_completion* c, unsigned events, int res, unsigned flags) {
    auto* o = static_cast<op*>(c);
    duplex* d = o->d;
    o->res = res;
    o->cflags = flags;
    o->events = events;
    o->busy = false;
    if (o == &d->send && d->recv.busy && !d->ending && res >= 0 &&
        static_cast<std::size_t>(res) == d->send_left) {
      d->all_sent();
      return;
    }
    if (wait* w = d->current) detail::wake_now(*w);
  }
  void cancel_busy() {
    ending = true;
    for (op* o : {&send, &recv})
      if (o->busy) be->submit_cancel(o);
  }
  // Deadline, cancellation or close(): ask the kernel to cancel what is still in flight; the
  // fiber keeps waiting until both completions are in.
  static void abandon(waiter& w) { static_cast<wait&>(w).d->cancel_busy(); }
};

void warm_duplex_op(const detail::io_completion* c, bool) noexcept {
  auto* o = static_cast<const duplex::op*>(c);
  const duplex* d = o->d;
  if (o == &d->send && d->recv.busy && !d->ending) {
    // A send that ends while its receive waits is usually taken in the loop (on_complete): it
    // tells the notice (in the caller's frame) and the fiber sleeps on, so its stack is not
    // swept. That sweep, for a fiber that did not run, was a tenth of an io_uring request's
    // instructions.
    __builtin_prefetch(d->notice);
    if (d->notice_hint) {
      __builtin_prefetch(d->notice_hint);
      __builtin_prefetch(static_cast<const char*>(d->notice_hint) + 64);
    }
    return;
  }
  warm_ring_target(c, o->state, o->fiber);
}

std::size_t iov_bytes(const iovec* iov, int iovcnt) noexcept {
  std::size_t n = 0;
  for (int i = 0; i < iovcnt; ++i)
    n += iov[i].iov_len;
  return n;
}

// One buffer goes by send(): sendmsg() copies the msghdr and the iovec array in from user
// space first, which costs about 0.25 us a call here (perf: copy_msghdr_from_user and
// import_iovec, on a 147-byte HTTP response), a few percent of a small request's whole cost.
ssize_t send_iov(int fd, const iovec* iov, int iovcnt, int flags) noexcept {
  msghdr msg{};
  msg.msg_iov = const_cast<iovec*>(iov);
  msg.msg_iovlen = static_cast<std::size_t>(iovcnt);
  ssize_t r;
  do
    r = iovcnt == 1 ? ::send(fd, iov[0].iov_base, iov[0].iov_len, MSG_NOSIGNAL | flags)
                    : ::sendmsg(fd, &msg, MSG_NOSIGNAL | flags);
  while (r < 0 && errno == EINTR);
  return r;
}

// The end of the loop's iteration: send what deferred_exchange() queued. A send that does not
// go out whole (a full socket buffer) or fails wakes the fiber, which finishes it or reports
// it; a whole send leaves the fiber waiting for its answer.
void flush_deferred_send(detail::io_completion* c) noexcept {
  auto* st = static_cast<fd_state*>(c);
  if (st->dsend != fd_state::send_state::queued) return;
  ssize_t r = send_iov(st->fd, st->dsend_iov, st->dsend_iovcnt, 0);
  if (r >= 0 && static_cast<std::size_t>(r) == iov_bytes(st->dsend_iov, st->dsend_iovcnt)) {
    st->dsend = fd_state::send_state::sent;
    if (send_notice* n = std::exchange(st->dsend_notice, nullptr)) n->sent(n);
    return;
  }
  if (r >= 0 || errno == EAGAIN || errno == EWOULDBLOCK) {
    st->dsend = fd_state::send_state::partial;
    st->dsend_done = r > 0 ? static_cast<std::size_t>(r) : 0;
    st->may_write = false;
  } else {
    st->dsend = fd_state::send_state::failed;
    st->dsend_errno = errno;
  }
  if (st->reader) detail::wake_now(*st->reader);
}

// The rest of `iov` after its first `done` bytes, into `out` (at least iovcnt entries).
int skip_bytes(const iovec* iov, int iovcnt, std::size_t done, iovec* out) {
  int n = 0;
  for (int i = 0; i < iovcnt; ++i) {
    if (done >= iov[i].iov_len) {
      done -= iov[i].iov_len;
      continue;
    }
    out[n].iov_base = static_cast<char*>(iov[i].iov_base) + done;
    out[n].iov_len = iov[i].iov_len - done;
    done = 0;
    ++n;
  }
  return n;
}

}  // namespace

// write_all_read_some on a readiness backend, when the answer cannot be there yet (the last
// read drained the socket and no edge came since): the send is handed to the loop, which makes
// it at the end of the iteration together with every other connection's, and the fiber waits
// for the answer's edge at once. Sending a batch together matters on loopback and on busy
// hosts: each send wakes the peer, and a peer woken once per batch stays awake for the rest of
// it instead of being woken again for every message (io_uring batches the same way, by
// submitting the iteration's sends in one io_uring_enter). Returns what read_some would.
std::size_t async_fd::deferred_exchange(const iovec* iov, int iovcnt, read_target& target,
                                        time_point deadline, send_notice* notice) {
  static constexpr const char* what = "squall: write and read";
  fd_state& st = *st_;
  st.dsend = fd_state::send_state::queued;
  st.dsend_iov = iov;
  st.dsend_iovcnt = iovcnt;
  st.dsend_done = 0;
  st.dsend_notice = notice;
  st.deferred = flush_deferred_send;
  detail::defer_io(*st.loop, &st);
  waiter w;
  w.what = what;
  w.abandon = [](waiter& me) { detail::wake(me, me.abandon_reason); };
  claim(st, &fd_state::reader, w);
  std::error_code ec;
  {
    claim_guard guard{&fd_state::reader, w};
    try {
      ec = detail::suspend(w, deadline);
    } catch (...) {
      // fiber_unwind (loop shutdown): the caller's vector is about to go; the loop must not
      // send from it.
      if (w.data) {
        st.dsend = fd_state::send_state::none;
        st.dsend_notice = nullptr;
      }
      throw;
    }
  }
  if (!w.data) fail(error::closed, what);  // closed by another fiber: the state is gone
  fd_state::send_state how = std::exchange(st.dsend, fd_state::send_state::none);
  st.dsend_notice = nullptr;
  if (how == fd_state::send_state::failed) fail_errno(st.dsend_errno, what);
  if (how != fd_state::send_state::sent)
    send_rest(iov, iovcnt, how == fd_state::send_state::partial ? st.dsend_done : 0, ec, deadline,
              notice);
  if (ec) fail(ec, what);
  return read_some(target, deadline);
}

// Not (all) sent by the loop: woken before its turn (an edge, a deadline, a cancel), or the
// socket buffer was full. The rest is still ours to send, and comes first. (The loop's entry, if
// still queued, finds `none` and does nothing.) Out of line: its vector would otherwise sit in
// every waiting connection's stack frame, which the loop prefetches when it resumes the fiber.
[[gnu::noinline]] void async_fd::send_rest(const iovec* iov, int iovcnt, std::size_t done,
                                           std::error_code ec, time_point deadline,
                                           send_notice* notice) {
  iovec rest[max_exchange_iov];
  int n = skip_bytes(iov, iovcnt, done, rest);
  if (ec) {
    // The wait already ended (and used up a cancel): one attempt that does not wait, then
    // the wait's error, as a cancelled write_all would have ended.
    (void)send_iov(st_->fd, rest, n, MSG_DONTWAIT);
    fail(ec, "squall: write and read");
  }
  write_all(rest, n, deadline);
  if (notice) notice->sent(notice);
}

std::size_t async_fd::write_all_read_some(const iovec* iov, int iovcnt, void* buf, std::size_t len,
                                          time_point deadline, std::error_code* send_error,
                                          send_notice* notice) {
  fixed_target t(buf, len);
  return write_all_read_some(iov, iovcnt, t, deadline, send_error, notice);
}

std::size_t async_fd::write_all_read_some(const iovec* iov, int iovcnt, read_target& target,
                                          time_point deadline, std::error_code* send_error,
                                          send_notice* notice) {
  static constexpr const char* what = "squall: write and read";
  fd_state& st = state(st_, what);
  constexpr int max_iov = max_exchange_iov;
  bool ring = waits_on_ring(st);
  if (!ring && st.socket && !st.may_read && !st.hup && st.may_write && !st.reader && !st.writer &&
      iovcnt <= max_iov && iovcnt > 0)
    return deferred_exchange(iov, iovcnt, target, deadline, notice);
  if (!ring || iovcnt > max_iov) {
    write_all(iov, iovcnt, deadline);
    if (notice) notice->sent(notice);
    return read_some(target, deadline);
  }
  // The kernel picks the receive's buffer when its bytes come (read_target::at_most), or it
  // gets the target's buffer now.
  bool provided = target.at_most && st.be->shares_receives();
  bool delivered = false;  // the provided receive's bytes were copied to the target
  std::size_t len = 0;
  void* buf = provided ? nullptr : target.get(&target, &len);
  duplex d;
  d.be = st.be;
  d.fd = st.fd;
  d.notice = notice;
  d.notice_hint = st.warm_hint;
  d.send.d = d.recv.d = &d;
  d.send.complete = d.recv.complete = duplex::on_complete;
  d.send.warm = d.recv.warm = warm_duplex_op;
  d.send.state = d.recv.state = st_.get();
  d.send.fiber = d.recv.fiber = detail::current_fiber();
  // The send goes from the caller's vector; only a short send (rare: a full socket buffer)
  // copies what is left, to the heap. A copy on the stack would be 256 bytes of every waiting
  // connection's frame, which the loop prefetches each time it resumes the fiber.
  std::unique_ptr<iovec[]> left;
  iovec* cur = const_cast<iovec*>(iov);  // the kernel only reads it
  int cur_n = iovcnt;
  msghdr msg{};
  auto submit_send = [&] {
    msg.msg_iov = cur;
    msg.msg_iovlen = static_cast<std::size_t>(cur_n);
    d.send_left = iov_bytes(cur, cur_n);
    int r = d.be->submit_sendmsg(d.fd, &msg, MSG_NOSIGNAL, &d.send);
    d.send.busy = r == 0;
    return r;
  };
  std::error_code failed;  // why the exchange ended early, if it did
  auto end_early = [&](std::error_code ec) {
    if (!failed) failed = ec;
    d.cancel_busy();
  };
  if (int r = submit_send(); r < 0) fail_errno(-r, what);
  // The request has only just been sent: its answer cannot be there yet.
  if (int r = provided ? d.be->submit_recv_provided(d.fd, provided_len(target), true, &d.recv)
                       : d.be->submit_recv(d.fd, buf, len, 0, true, &d.recv);
      r < 0)
    end_early(socket_error(-r));
  else
    d.recv.busy = true;

  bool closed = false;     // another fiber closed the fd: its state may be gone, do not touch it
  bool unwinding = false;  // fiber_unwind arrived; rethrown once nothing is in flight
  for (;;) {
    if (provided && !d.recv.busy && !delivered) {
      // The receive is done: its bytes go where the target says, before the loop waits again.
      // Nothing here may throw while the send is still in the kernel. Closed while it waited:
      // the target may be gone with its stream, and the bytes with it.
      delivered = true;
      if (closed && d.recv.res >= 0) d.recv.res = -ECANCELED;
      try {
        if (!deliver(*d.be, target, d.recv.res, d.recv.events, d.recv.cflags) && !failed) {
          // The region was full: this once, into the target's own buffer.
          buf = target.get(&target, &len);
          if (int r = d.be->submit_recv(d.fd, buf, len, 0, false, &d.recv); r < 0)
            end_early(socket_error(-r));
          else
            d.recv.busy = true;
        }
      } catch (const std::bad_alloc&) {
        d.recv.res = 0;
        end_early(std::make_error_code(std::errc::not_enough_memory));
      } catch (const std::exception&) {
        d.recv.res = 0;
        end_early(std::make_error_code(std::errc::io_error));
      }
    }
    if (!d.send.busy && !d.sent_all && !failed) {
      if (d.send.res < 0) {
        end_early(socket_error(-d.send.res));
      } else {
        // Advance past what was sent; a short send goes on from there.
        std::size_t done = static_cast<std::size_t>(d.send.res);
        while (cur_n > 0 && done >= cur->iov_len) {
          done -= cur->iov_len;
          ++cur;
          --cur_n;
        }
        if (cur_n == 0) {
          d.all_sent();
        } else {
          if (!left) {
            // Nothing is in flight that reads the caller's vector: the copy can start now.
            // (Out of memory here would leave the receive in flight: it is cancelled first.)
            left.reset(new (std::nothrow) iovec[static_cast<std::size_t>(cur_n)]);
            if (!left) {
              end_early(std::make_error_code(std::errc::not_enough_memory));
              continue;
            }
            std::copy(cur, cur + cur_n, left.get());
            cur = left.get();
          }
          cur->iov_base = static_cast<char*>(cur->iov_base) + done;
          cur->iov_len -= done;
          if (int r = submit_send(); r < 0) end_early(socket_error(-r));
        }
      }
    }
    if (!d.send.busy && !d.recv.busy) break;
    duplex::wait w;
    w.d = &d;
    w.what = what;
    w.abandon = duplex::abandon;
    if (!closed) claim(*st_, &fd_state::reader, w);
    d.current = &w;
    try {
      detail::suspend(w, deadline);
    } catch (const fiber_unwind&) {
      // Loop shutdown. The other operation may still be in the kernel, writing into or reading
      // from this frame: cancel it and wait for it before the stack unwinds.
      unwinding = true;
      end_early(error::cancelled);
    }
    d.current = nullptr;
    if (!closed) {
      if (w.data) {
        unclaim(&fd_state::reader, w);
      } else {
        closed = true;
        end_early(error::closed);
      }
    }
    if (w.abandoning) end_early(w.abandon_reason);
  }
  if (unwinding) throw fiber_unwind{};
  // A provided receive that filled its (small) request: more is likely there, and the next
  // read takes it straight into the target's buffer (see provided_read_max).
  if (!closed && provided && d.recv.res > 0)
    st_->may_read = static_cast<std::size_t>(d.recv.res) >= provided_len(target);
  if (failed) {
    // Data that arrived is returned, not lost. If the send did not finish, the caller hears of
    // it through `send_error` (io_stream makes it the answer to its next write); without one,
    // the received bytes are returned only if everything was sent.
    if (d.recv.res > 0 && (d.sent_all || send_error)) {
      if (!d.sent_all) *send_error = failed;
      keep_cancel(failed);
      return static_cast<std::size_t>(d.recv.res);
    }
    fail(failed, what);
  }
  if (d.recv.res >= 0) return static_cast<std::size_t>(d.recv.res);
  fail_errno(-d.recv.res, what);
}

std::size_t async_fd::write_some(const iovec* iov, int iovcnt, time_point deadline) {
  static constexpr const char* what = "squall: write";
  fd_state& st = state(st_, what);
  if (waits_on_ring(st)) {
    msghdr msg{};
    msg.msg_iov = const_cast<iovec*>(iov);
    msg.msg_iovlen = static_cast<std::size_t>(iovcnt);
    return static_cast<std::size_t>(ring_run(st, &fd_state::writer, what, deadline, [&](auto* op) {
      return st.be->submit_sendmsg(st.fd, &msg, MSG_NOSIGNAL, op);
    }));
  }
  // Another fiber's send, queued for the end of the iteration, was asked for first: it goes
  // first. (Writers that share one async_fd must still take turns themselves, as with any send
  // that has to wait; io_stream does.)
  if (st.dsend == fd_state::send_state::queued) flush_deferred_send(&st);
  return readiness_op(st, &fd_state::writer, what, deadline, iov_bytes(iov, iovcnt), [&] {
    return st.socket ? send_iov(st.fd, iov, iovcnt, 0) : ::writev(st.fd, iov, iovcnt);
  });
}

long async_fd::try_write(const iovec* iov, int iovcnt) noexcept {
  if (!st_ || st_->fd < 0) return -EBADF;
  fd_state& st = *st_;
  if (st.dsend == fd_state::send_state::queued) flush_deferred_send(&st);  // it was first
  ssize_t r = st.socket ? send_iov(st.fd, iov, iovcnt, MSG_DONTWAIT) : ::writev(st.fd, iov, iovcnt);
  if (r >= 0) {
    if (static_cast<std::size_t>(r) < iov_bytes(iov, iovcnt)) st.may_write = false;
    return r;
  }
  int e = errno;
  if (e == EAGAIN || e == EWOULDBLOCK) {
    st.may_write = false;
    return -EAGAIN;
  }
  return -e;
}

std::size_t async_fd::write_some(const void* buf, std::size_t len, time_point deadline) {
  iovec v{const_cast<void*>(buf), len};
  return write_some(&v, 1, deadline);
}

void async_fd::write_all(const iovec* iov, int iovcnt, time_point deadline) {
  // Copy the vector so partial writes can advance it.
  constexpr int max_iov = 64;
  iovec local[max_iov];
  while (iovcnt > 0) {
    int n = iovcnt < max_iov ? iovcnt : max_iov;
    for (int i = 0; i < n; ++i)
      local[i] = iov[i];
    iovec* cur = local;
    int left = n;
    while (left > 0) {
      std::size_t done = write_some(cur, left, deadline);
      while (left > 0 && done >= cur->iov_len) {
        done -= cur->iov_len;
        ++cur;
        --left;
      }
      if (left > 0) {
        cur->iov_base = static_cast<char*>(cur->iov_base) + done;
        cur->iov_len -= done;
      }
    }
    iov += n;
    iovcnt -= n;
  }
}

int async_fd::accept(address* peer, time_point deadline) {
  static constexpr const char* what = "squall: accept";
  fd_state& st = state(st_, what);
  address tmp;
  address& a = peer ? *peer : tmp;
  *a.size_ptr() = address::capacity;
  // In the mode the async_fd constructor sets for a socket (origin::accepted relies on it):
  // blocking for the ring, non-blocking for readiness.
  if (waits_on_ring(st))
    return ring_run(st, &fd_state::reader, what, deadline, [&](auto* op) {
      return st.be->submit_accept(st.fd, a.data(), reinterpret_cast<unsigned*>(a.size_ptr()),
                                  SOCK_CLOEXEC, op);
    });
  return static_cast<int>(readiness_op(st, &fd_state::reader, what, deadline, 0, [&] {
    return ::accept4(st.fd, a.data(), a.size_ptr(), SOCK_NONBLOCK | SOCK_CLOEXEC);
  }));
}

void async_fd::connect(const address& to, time_point deadline) {
  static constexpr const char* what = "squall: connect";
  fd_state& st = state(st_, what);
  if (waits_on_ring(st)) {
    ring_run(st, &fd_state::writer, what, deadline,
             [&](auto* op) { return st.be->submit_connect(st.fd, to.data(), to.size(), op); });
    return;
  }
  if (::connect(st.fd, to.data(), to.size()) == 0) return;
  if (errno != EINPROGRESS && errno != EINTR) fail_errno(errno, what);
  wait_edge(st, &fd_state::writer, what, deadline);
  int err = 0;
  socklen_t len = sizeof err;
  if (::getsockopt(st.fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
  if (err != 0) fail_errno(err, what);
}

std::size_t async_fd::recv_from(void* buf, std::size_t len, address* from, time_point deadline) {
  static constexpr const char* what = "squall: recv_from";
  fd_state& st = state(st_, what);
  address tmp;
  address& a = from ? *from : tmp;
  iovec v{buf, len};
  msghdr msg{};
  msg.msg_name = a.data();
  msg.msg_namelen = address::capacity;
  msg.msg_iov = &v;
  msg.msg_iovlen = 1;
  std::size_t n;
  if (waits_on_ring(st)) {
    n = static_cast<std::size_t>(ring_run(st, &fd_state::reader, what, deadline, [&](auto* op) {
      return st.be->submit_recvmsg(st.fd, &msg, 0, op);
    }));
  } else {
    n = readiness_op(st, &fd_state::reader, what, deadline, 0,
                     [&] { return ::recvmsg(st.fd, &msg, 0); });
  }
  *a.size_ptr() = msg.msg_namelen;
  return n;
}

std::size_t async_fd::send_to(const void* buf, std::size_t len, const address& to,
                              time_point deadline) {
  static constexpr const char* what = "squall: send_to";
  fd_state& st = state(st_, what);
  iovec v{const_cast<void*>(buf), len};
  msghdr msg{};
  msg.msg_name = const_cast<sockaddr*>(to.data());
  msg.msg_namelen = to.size();
  msg.msg_iov = &v;
  msg.msg_iovlen = 1;
  if (waits_on_ring(st))
    return static_cast<std::size_t>(ring_run(st, &fd_state::writer, what, deadline, [&](auto* op) {
      return st.be->submit_sendmsg(st.fd, &msg, MSG_NOSIGNAL, op);
    }));
  return readiness_op(st, &fd_state::writer, what, deadline, 0,
                      [&] { return ::sendmsg(st.fd, &msg, MSG_NOSIGNAL); });
}

namespace {
void wait_for(fd_state& st, slot_ptr slot, unsigned dir, const char* what, time_point deadline) {
  if (st.ring) {
    wait_ring_poll(st, slot, what, deadline);
    return;
  }
  // Edge-triggered: an edge that came before this call is not repeated, so look first.
  pollfd p{st.fd, static_cast<short>(dir == io_loop::read ? POLLIN : POLLOUT), 0};
  if (::poll(&p, 1, 0) == 1) return;
  wait_edge(st, slot, what, deadline);
}
}  // namespace

void async_fd::wait_readable(time_point deadline) {
  wait_for(state(st_, "squall: wait_readable"), &fd_state::reader, io_loop::read,
           "squall: wait_readable", deadline);
}

void async_fd::wait_writable(time_point deadline) {
  wait_for(state(st_, "squall: wait_writable"), &fd_state::writer, io_loop::write,
           "squall: wait_writable", deadline);
}

}  // namespace squall
