// SPDX-License-Identifier: MIT
// io_loop: the iteration (wait, fd handlers, timers, callbacks) and everything that feeds it.
//
// One iteration, in order: compute how long we may sleep; wait in the backend; run handlers of
// ready fds; run due timers; run queued callbacks. Callbacks queued while callbacks run are
// run in further rounds of the same iteration, up to `callback_rounds`, so a chain of
// callbacks does not pay a backend syscall per link, while I/O still gets its turn.
#include "squall/io_loop.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <stdexcept>
#include <string>

#include "backend/backend.hpp"
#include "buffer_pool.hpp"
#include "signals.hpp"
#include "squall/log.hpp"
#include "timer_heap.hpp"

namespace squall {
namespace detail {

constexpr int max_ready = 256;
// Callbacks added while callbacks run are run in further rounds of the same iteration, up to
// this many, before the loop looks at I/O again: a chain of callbacks then costs one backend
// wait per 64 links instead of one per link, and I/O cannot be starved.
constexpr std::size_t callback_rounds = 64;

struct fd_entry {
  // Boxed, so that moving it to the zombie slot (a handler removing itself) leaves the running
  // callable where it is: unique_function relocates small targets when it moves.
  std::unique_ptr<unique_function<void(int, unsigned)>> handler;
  std::source_location where;
  unsigned events = 0;
  bool active = false;
};

// Handlers indexed by fd, in fixed-size chunks that never move: a handler may add a handler for
// a larger fd while it runs, and its own entry must stay where it is.
struct fd_table {
  static constexpr std::size_t chunk = 256;
  std::vector<std::unique_ptr<fd_entry[]>> chunks;
  std::size_t count = 0;
  int dispatching_fd = -1;
  // The handler of the fd being dispatched, if that handler removed itself: destroyed after it
  // returns, not under its own feet.
  std::unique_ptr<unique_function<void(int, unsigned)>> zombie;
  ready_event ready[max_ready];
  int ready_pos = 0;    // index being dispatched in `ready`
  int ready_count = 0;  // entries of `ready` in the batch being dispatched (0 outside dispatch)
  // defer_io(): queued for the end of this iteration, and the batch being run (whose entries
  // forget_io() clears like those of `ready`).
  std::vector<io_completion*> deferred, deferring;

  fd_entry* find(int fd) noexcept {
    std::size_t c = static_cast<std::size_t>(fd) / chunk;
    if (c >= chunks.size() || !chunks[c]) return nullptr;
    return &chunks[c][static_cast<std::size_t>(fd) % chunk];
  }
  fd_entry& get(int fd) {
    std::size_t c = static_cast<std::size_t>(fd) / chunk;
    if (c >= chunks.size()) chunks.resize(c + 1);
    if (!chunks[c]) chunks[c] = std::make_unique<fd_entry[]>(chunk);
    return chunks[c][static_cast<std::size_t>(fd) % chunk];
  }
};

backend& backend_of(io_loop& loop) noexcept {
  return *loop.backend_;
}

buffer_pool& buffer_pool_of(io_loop& loop) noexcept {
  return *loop.buffers_;
}

// Thread ids come from a counter (a thread-local's address would be reused by a thread started
// after another exited).
__attribute__((tls_model("initial-exec"))) thread_local std::uintptr_t t_thread_id = 0;
std::uintptr_t assign_thread_id() noexcept {
  static std::atomic<std::uintptr_t> next{0};
  return t_thread_id = ++next;
}

// An io_completion is going away (its socket was closed): reports for it still ahead in the
// batch being dispatched must not reach it.
void forget_io(io_loop& loop, io_completion* io) noexcept {
  fd_table& t = *loop.fds_;
  for (int i = t.ready_pos + 1; i < t.ready_count; ++i)
    if (t.ready[i].io == io) t.ready[i] = ready_event{};
  for (auto* v : {&t.deferred, &t.deferring})
    for (io_completion*& d : *v)
      if (d == io) d = nullptr;
}

void defer_io(io_loop& loop, io_completion* io) {
  loop.fds_->deferred.push_back(io);
}

void* line_aligned_new(std::size_t n) {
  constexpr std::size_t line = 64;
  // The ordinary allocator aligns to at least 16, so the first line boundary past the slot for
  // the original pointer lies within `line` bytes of the block's start.
  void* raw = ::operator new(n + line);
  auto at = (reinterpret_cast<std::uintptr_t>(raw) + sizeof(void*) + line - 1) & ~(line - 1);
  void* p = reinterpret_cast<void*>(at);
  static_cast<void**>(p)[-1] = raw;
  return p;
}

void line_aligned_delete(void* p) noexcept {
  if (p) ::operator delete(static_cast<void**>(p)[-1]);
}

}  // namespace detail

namespace {

thread_local io_loop* t_current = nullptr;
thread_local std::unique_ptr<io_loop> t_default_loop;

std::uintptr_t self_id() noexcept {
  return detail::thread_id();
}

std::int64_t ns(time_point t) noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

std::string describe(const std::source_location& w) {
  return std::string(w.file_name()) + ":" + std::to_string(w.line()) + " (" + w.function_name() +
         ")";
}

}  // namespace

const char* to_string(backend_kind kind) noexcept {
  switch (kind) {
    case backend_kind::automatic:
      return "automatic";
    case backend_kind::io_uring:
      return "io_uring";
    case backend_kind::epoll:
      return "epoll";
    case backend_kind::kqueue:
      return "kqueue";
  }
  return "?";
}

// --- timer_handle ----------------------------------------------------------------------------

bool timer_handle::cancel() {
  return loop_ && loop_->cancel_timer(slot_, gen_);
}
bool timer_handle::pending() const {
  return loop_ && loop_->timer_pending(slot_, gen_);
}

// --- Construction ----------------------------------------------------------------------------

io_loop::io_loop() : io_loop(options{}) {}

io_loop::io_loop(const options& opts)
    : opts_(opts),
      backend_(detail::make_backend(opts.backend, opts.defer_completions)),
      timers_(std::make_unique<detail::timer_heap>()),
      fds_(std::make_unique<detail::fd_table>()),
      buffers_(std::make_unique<detail::buffer_pool>(opts.free_buffers)),
      signals_(std::make_unique<detail::signal_slot>()) {
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd_ < 0) throw_errno(errno, "squall: eventfd for the loop's wake-up");
  if (int r = backend_->add(wake_fd_, read); r < 0) {
    ::close(wake_fd_);
    throw_errno(-r, "squall: watching the loop's wake-up fd");
  }
  signals_->wake_fd = wake_fd_;
  backend_->shared_from = opts.shared_receive_from;
  owner_thread_.store(self_id(), std::memory_order_relaxed);
  if (opts.make_current && !t_current) t_current = this;
  log(log_level::debug, "loop", "new loop on %s", backend_name());
}

io_loop::~io_loop() {
  // Layers above the loop wind down first, while everything below them still works. An
  // extension's entry stays (empty) while it is destroyed, so nothing can register it anew.
  destroying_ = true;
  for (auto it = extensions_.rbegin(); it != extensions_.rend(); ++it)
    it->second.reset();
  extensions_.clear();
  // Workers may still post results; join them while the loop can take the posts.
  executor_.reset();
  for (int s = 1; s <= detail::max_signal; ++s)
    if (signals_->watched & (std::uint64_t{1} << (s - 1)))
      detail::signal_unwatch(s, signals_.get());
  if (t_current == this) t_current = nullptr;
  backend_->remove(wake_fd_);
  ::close(wake_fd_);
}

io_loop& io_loop::current() {
  if (t_current) return *t_current;
  // A default loop handed out earlier may have been displaced by another loop since: it is
  // still alive (callers may hold it), so it becomes current again.
  if (!t_default_loop) t_default_loop = std::make_unique<io_loop>();
  t_current = t_default_loop.get();
  return *t_current;
}

io_loop* io_loop::current_or_null() noexcept {
  return t_current;
}
void io_loop::make_current() noexcept {
  t_current = this;
}
backend_kind io_loop::backend() const noexcept {
  return backend_->kind();
}

bool io_loop::in_loop_thread() const noexcept {
  return owner_thread_.load(std::memory_order_relaxed) == self_id();
}

bool io_loop::on_running_thread() const noexcept {
  return running_thread_.load(std::memory_order_acquire) == self_id();
}

void io_loop::check_thread([[maybe_unused]] const char* what) const {
#ifndef NDEBUG
  if (!in_loop_thread())
    throw_error(error::wrong_thread,
                std::string("squall: io_loop::") + what +
                    " called off the loop's thread (only add_callback and stop are thread-safe)");
#endif
}

// --- Running ---------------------------------------------------------------------------------

void io_loop::enter_run() {
  if (running_)
    throw_error(error::loop_running, "squall: io_loop::run re-entered or running elsewhere");
  owner_thread_.store(self_id(), std::memory_order_relaxed);
  running_thread_.store(self_id(), std::memory_order_release);
  running_ = true;
}

void io_loop::leave_run() {
  running_ = false;
  running_thread_.store(0, std::memory_order_release);
  sleeping_.store(true, std::memory_order_seq_cst);
}

void io_loop::run() {
  enter_run();
  io_loop* previous = t_current;
  t_current = this;
  try {
    do {
      iterate(forever);
    } while (!stop_requested_);
  } catch (...) {
    t_current = previous;
    leave_run();
    throw;
  }
  stop_requested_ = false;
  t_current = previous;
  leave_run();
}

void io_loop::run_once(duration max_wait) {
  if (max_wait < duration::zero()) max_wait = duration::zero();
  enter_run();
  try {
    iterate(max_wait);
    // stop() only ends run(); when the loop is driven by run_once it has nothing to end.
    stop_requested_ = false;
    // An embedding program is about to poll our fd: queued changes must be in the kernel first.
    backend_->flush();
  } catch (...) {
    leave_run();
    throw;
  }
  leave_run();
}

void io_loop::stop() {
  // Off the running thread (or before run() started) the flag is set by a callback, so that a
  // thread that is about to run the loop cannot race with it.
  if (!on_running_thread()) {
    post_remote(
        queued_callback{[this] { stop_requested_ = true; }, std::source_location::current()});
    return;
  }
  stop_requested_ = true;
}

// Work the next iteration has to do at once: the backend wait must not block.
bool io_loop::work_pending() const noexcept {
  return stop_requested_ || !queues_[adding_].empty() || !fds_->deferred.empty();
}

duration io_loop::compute_wait(duration max_wait) {
  if (work_pending()) return duration::zero();
  if (timers_->empty()) return max_wait;
  std::int64_t until = timers_->earliest() - ns(now());
  if (until <= 0) return duration::zero();
  duration d = std::chrono::nanoseconds(until);
  return d < max_wait ? d : max_wait;
}

void io_loop::iterate(duration max_wait) {
  duration wait = compute_wait(max_wait);
  // `sleeping_` is true here (set at the end of the previous iteration, or initially). Checking
  // for remote posts after it was set pairs with post_remote(): either we see their callback,
  // or they see us sleeping and write the wake fd.
  if (wait != duration::zero() && remote_pending_.load(std::memory_order_seq_cst))
    wait = duration::zero();
  std::int64_t timeout_ns =
      wait == forever ? -1 : std::chrono::duration_cast<std::chrono::nanoseconds>(wait).count();

  int n = backend_->wait(timeout_ns, fds_->ready, detail::max_ready);
  if (n < 0) throw_errno(-n, std::string("squall: ") + backend_name() + " wait failed");
  sleeping_.store(false, std::memory_order_relaxed);
  // Whatever happens below (an exception from a log sink, bad_alloc), the loop must come out
  // consistent: no half-run batch left to run twice, and posters told to wake us again.
  struct restore {
    io_loop& l;
    ~restore() {
      l.fds_->ready_count = 0;
      l.sleeping_.store(true, std::memory_order_seq_cst);
    }
  } guard{*this};

  // One clock read per iteration serves the timers and every time() below (a wait's deadline
  // check, a request's start): with a dozen ready connections per poll, reading the clock at
  // each was 3 to 4 vDSO calls per HTTP request (docs/performance.md).
  time_ = clock::now();
  run_ready_events(n);
  if (!timers_->empty()) {
    run_timers(time_);
  }
  run_callbacks();
  if (!fds_->deferred.empty()) run_deferred();
}

namespace {

// With many connections, each entry of a batch (a ready event, a deferred send) touches memory
// last used a whole batch ago: its fd state, its fiber's stack. Loading the record two entries
// ahead, and what it points to one entry ahead, overlaps those misses with the current entry's
// work (measured on 1,000 keep-alive HTTP connections, docs/performance.md).
inline void warm_ahead(const detail::io_completion* two, const detail::io_completion* one,
                       bool for_deferred) {
  if (two) {
    // Both lines of an fd's state (async_fd.cpp): one->warm() reads the second.
    __builtin_prefetch(two);
    __builtin_prefetch(reinterpret_cast<const char*>(two) + 64);
  }
  if (one && one->warm) one->warm(one, for_deferred);
}

}  // namespace

// What defer_io() queued this iteration. What those calls queue in turn (a fiber they resumed
// wrote again) runs in further rounds; past the last, at the end of the next iteration, which
// then does not block.
void io_loop::run_deferred() {
  for (int round = 0; round < 16 && !fds_->deferred.empty(); ++round) {
    std::swap(fds_->deferred, fds_->deferring);
    const std::size_t n = fds_->deferring.size();
    detail::io_completion* const* q = fds_->deferring.data();
    for (std::size_t i = 0; i < n; ++i) {
      // A whole batch of connections ran since each entry was queued: its record and its
      // fiber's stack (where a deferred send's vector lies) are cold again.
      warm_ahead(i + 2 < n ? q[i + 2] : nullptr, i + 1 < n ? q[i + 1] : nullptr, true);
      if (detail::io_completion* io = q[i]) io->deferred(io);
    }
    fds_->deferring.clear();
  }
}

void io_loop::run_ready_events(int n) {
  fds_->ready_count = n;
  const detail::ready_event* ready = fds_->ready;
  for (int i = 0; i < n; ++i) {
    fds_->ready_pos = i;
    const detail::ready_event& ev = ready[i];
    warm_ahead(i + 2 < n ? ready[i + 2].io : nullptr, i + 1 < n ? ready[i + 1].io : nullptr, false);
    if (ev.io) {
      // Fiber I/O: readiness of a registered socket, or a finished io_uring operation.
      if (backend_->cancels_pending()) backend_->dispatched(ev.io, ev.flags);
      ev.io->complete(ev.io, ev.events, ev.res, ev.flags);
      continue;
    }
    if (ev.fd == wake_fd_) {
      drain_wakeups();
      continue;
    }
    if (ev.fd < 0) continue;  // invalidated by remove_handler
    detail::fd_entry* e = fds_->find(ev.fd);
    // Removed or paused by an earlier handler in this batch.
    if (!e || !e->active || e->events == 0) continue;
    unsigned mask = ev.events & (e->events | error);
    if (mask == 0) continue;
    fds_->dispatching_fd = ev.fd;
    try {
      (*e->handler)(ev.fd, mask);
    } catch (...) {
      report_exception("fd handler added", e->where);
    }
    fds_->dispatching_fd = -1;
    fds_->zombie.reset();
  }
  fds_->ready_count = 0;
}

void io_loop::run_timers(time_point iteration_now) {
  std::int64_t now_ns = ns(iteration_now);
  detail::timer_heap::fired t;
  // Timers scheduled by these callbacks are due at a later `now()` than iteration_now, so a
  // timer that re-arms itself with zero delay runs once per iteration, not forever.
  while (timers_->pop_due(now_ns, t)) {
    try {
      t.fn();
    } catch (...) {
      report_exception("timer scheduled", t.where);
    }
    t.fn.reset();
  }
}

void io_loop::run_callbacks() {
  for (std::size_t round = 0; round < detail::callback_rounds; ++round) {
    take_remote();
    std::vector<queued_callback>& batch = queues_[adding_];
    if (batch.empty()) return;
    adding_ ^= 1;  // what this batch adds goes to the other queue, for the next round
    // Cleared however the batch ends, so a callback never runs twice.
    struct clear_batch {
      std::vector<queued_callback>& q;
      ~clear_batch() { q.clear(); }  // keeps the capacity: no allocation next time
    } done{batch};
    for (auto& cb : batch) {
      try {
        cb.fn();
      } catch (...) {
        report_exception("callback added", cb.where);
      }
    }
  }
}

// Moves callbacks posted from other threads to the end of the local queue.
void io_loop::take_remote() {
  if (!remote_pending_.load(std::memory_order_acquire)) return;
  std::lock_guard<std::mutex> lock(remote_mu_);
  for (auto& cb : remote_q_)
    queues_[adding_].push_back(std::move(cb));
  remote_q_.clear();
  remote_pending_.store(false, std::memory_order_relaxed);
}

void io_loop::drain_wakeups() {
  // Read first, then clear the flag. Cleared first, a poster's write could land between the
  // two and be swallowed by the read, leaving the flag set with nothing written: every later
  // poster would skip its write and a sleeping loop would never hear of them. A post between
  // the read and the clear is safe: it set remote_pending_, which we check before sleeping.
  eventfd_t v;
  (void)::eventfd_read(wake_fd_, &v);
  wake_sent_.store(false, std::memory_order_seq_cst);
  if (signals_->watched != 0) process_signals();
}

void io_loop::report_exception(const char* kind, const std::source_location& where) {
  try {
    throw;
  } catch (const std::exception& e) {
    log(log_level::error, "loop", "Exception in %s at %s: %s", kind, describe(where).c_str(),
        e.what());
  } catch (...) {
    log(log_level::error, "loop", "Exception in %s at %s: unknown exception", kind,
        describe(where).c_str());
  }
}

// --- Callbacks -------------------------------------------------------------------------------

void io_loop::post_remote(queued_callback cb) {
  {
    std::lock_guard<std::mutex> lock(remote_mu_);
    remote_q_.push_back(std::move(cb));
    remote_pending_.store(true, std::memory_order_seq_cst);
  }
  if (sleeping_.load(std::memory_order_seq_cst) &&
      !wake_sent_.exchange(true, std::memory_order_seq_cst))
    wake();
}

void io_loop::post_executor_result(unique_function<void()> deliver) {
  post_remote(queued_callback{std::move(deliver), std::source_location::current()});
}

void io_loop::wake() {
  // EAGAIN means the counter is saturated, which still wakes the loop.
  (void)::eventfd_write(wake_fd_, 1);
}

std::size_t io_loop::pending_callbacks() const noexcept {
  std::size_t n = queues_[adding_].size();
  if (remote_pending_.load(std::memory_order_acquire)) {
    std::lock_guard<std::mutex> lock(remote_mu_);
    n += remote_q_.size();
  }
  return n;
}

// --- Timers ----------------------------------------------------------------------------------

timer_handle io_loop::call_later(duration delay, unique_function<void()> fn,
                                 std::source_location where) {
  time_point t = now();
  // Saturate: call_later(forever) must mean "never", not wrap around into the past.
  time_point when = delay >= time_point::max() - t ? time_point::max() : t + delay;
  return call_at(when, std::move(fn), where);
}

timer_handle io_loop::call_at(time_point when, unique_function<void()> fn,
                              std::source_location where) {
  check_thread("call_at");
  std::uint32_t gen;
  std::uint32_t slot = timers_->push(ns(when), std::move(fn), where, gen);
  return timer_handle(this, slot, gen);
}

bool io_loop::cancel(timer_handle handle) {
  return handle.cancel();
}

bool io_loop::cancel_timer(std::uint32_t slot, std::uint32_t gen) {
  check_thread("cancel");
  return timers_->cancel(slot, gen);
}

bool io_loop::timer_pending(std::uint32_t slot, std::uint32_t gen) const {
  return timers_->pending(slot, gen);
}

std::size_t io_loop::timer_count() const noexcept {
  return timers_->size();
}

// --- fd handlers -----------------------------------------------------------------------------

void io_loop::add_handler(int fd, unsigned events, unique_function<void(int, unsigned)> handler,
                          std::source_location where) {
  check_thread("add_handler");
  if (fd < 0) throw std::invalid_argument("squall: add_handler: negative fd");
  if (events & ~(read | write))
    throw std::invalid_argument("squall: add_handler: events must be read and/or write");
  if (!handler) throw std::invalid_argument("squall: add_handler: empty handler");
  if (detail::fd_entry* old = fds_->find(fd); old && old->active)
    throw_error(error::already_watched,
                "squall: add_handler: fd " + std::to_string(fd) + " already has a handler");
  // The backend first: it rejects fds that are not open (EBADF) before the table grows for them.
  if (events != 0) {
    if (int r = backend_->add(fd, events); r < 0)
      throw_errno(-r, "squall: add_handler: cannot watch fd " + std::to_string(fd));
  }
  detail::fd_entry* ep;
  std::unique_ptr<unique_function<void(int, unsigned)>> box;
  try {
    box = std::make_unique<unique_function<void(int, unsigned)>>(std::move(handler));
    ep = &fds_->get(fd);
  } catch (...) {
    if (events != 0) backend_->remove(fd);
    throw;
  }
  detail::fd_entry& e = *ep;
  e.handler = std::move(box);
  e.where = where;
  e.events = events;
  e.active = true;
  ++fds_->count;
}

void io_loop::update_handler(int fd, unsigned events) {
  check_thread("update_handler");
  if (events & ~(read | write))
    throw std::invalid_argument("squall: update_handler: events must be read and/or write");
  detail::fd_entry* e = fd >= 0 ? fds_->find(fd) : nullptr;
  if (!e || !e->active)
    throw_error(error::not_watched,
                "squall: update_handler: fd " + std::to_string(fd) + " has no handler");
  if (events == e->events) return;
  int r = 0;
  if (e->events == 0)
    r = backend_->add(fd, events);
  else if (events == 0)
    r = backend_->remove(fd);
  else
    r = backend_->modify(fd, events);
  if (r < 0) throw_errno(-r, "squall: update_handler: fd " + std::to_string(fd));
  e->events = events;
}

void io_loop::remove_handler(int fd) {
  check_thread("remove_handler");
  detail::fd_entry* e = fd >= 0 ? fds_->find(fd) : nullptr;
  if (!e || !e->active)
    throw_error(error::not_watched,
                "squall: remove_handler: fd " + std::to_string(fd) + " has no handler");
  if (e->events != 0) {
    // EBADF / ENOENT: the fd was closed before its handler was removed. epoll has dropped it
    // already; nothing is left to undo.
    if (int r = backend_->remove(fd); r < 0 && r != -EBADF && r != -ENOENT)
      log(log_level::warn, "loop", "removing fd %d from %s: %s", fd, backend_name(),
          std::system_category().message(-r).c_str());
  }
  e->active = false;
  e->events = 0;
  // The running handler (the first one removed for the fd being dispatched) must outlive its
  // own call; any later one, added and removed inside that call, is not running.
  if (fds_->dispatching_fd == fd && !fds_->zombie)
    fds_->zombie = std::move(e->handler);
  else
    e->handler.reset();
  --fds_->count;
  // Reports for this fd still ahead in the batch being dispatched are about the fd that was
  // just removed; if the number is reused (closed and re-opened), they must not reach the new
  // handler.
  for (int i = fds_->ready_pos + 1; i < fds_->ready_count; ++i)
    if (fds_->ready[i].fd == fd) fds_->ready[i].fd = -1;
}

std::size_t io_loop::handler_count() const noexcept {
  return fds_->count;
}

// --- Signals ---------------------------------------------------------------------------------

void io_loop::add_signal_handler(int signo, unique_function<void(int)> handler,
                                 std::source_location where) {
  check_thread("add_signal_handler");
  if (signo <= 0 || signo > detail::max_signal)
    throw std::invalid_argument("squall: signal " + std::to_string(signo) + " out of range");
  std::uint64_t bit = std::uint64_t{1} << (signo - 1);
  if (signals_->watched & bit)
    throw_error(error::already_watched,
                "squall: add_signal_handler: signal " + std::to_string(signo) + " already watched");
  detail::signal_watch(signo, signals_.get());
  signals_->handlers[signo] = std::move(handler);
  signals_->where[signo] = where;
  signals_->watched |= bit;
}

void io_loop::remove_signal_handler(int signo) {
  check_thread("remove_signal_handler");
  std::uint64_t bit =
      signo > 0 && signo <= detail::max_signal ? std::uint64_t{1} << (signo - 1) : 0;
  if (!(signals_->watched & bit))
    throw_error(error::not_watched,
                "squall: remove_signal_handler: signal " + std::to_string(signo) + " not watched");
  detail::signal_unwatch(signo, signals_.get());
  signals_->watched &= ~bit;
  signals_->pending.fetch_and(~bit);
  signals_->handlers[signo] = nullptr;
}

std::size_t io_loop::signal_handler_count() const noexcept {
  return static_cast<std::size_t>(__builtin_popcountll(signals_->watched));
}

void io_loop::process_signals() {
  std::uint64_t pending = signals_->pending.exchange(0) & signals_->watched;
  while (pending) {
    int signo = __builtin_ctzll(pending) + 1;
    pending &= pending - 1;
    // Moved out while it runs: the handler may remove (destroy) or replace itself.
    auto h = std::move(signals_->handlers[signo]);
    if (!h) continue;
    try {
      h(signo);
    } catch (...) {
      report_exception("signal handler added", signals_->where[signo]);
    }
    std::uint64_t bit = std::uint64_t{1} << (signo - 1);
    if ((signals_->watched & bit) && !signals_->handlers[signo])
      signals_->handlers[signo] = std::move(h);
  }
}

// --- Executor --------------------------------------------------------------------------------

thread_pool& io_loop::executor() {
  if (!executor_) {
    unsigned n = opts_.executor_threads;
    if (n == 0) {
      n = std::thread::hardware_concurrency();
      if (n < 4) n = 4;
    }
    executor_ = std::make_unique<thread_pool>(n);
  }
  return *executor_;
}

// --- Extensions ------------------------------------------------------------------------------

io_loop::extension* io_loop::find_extension(const void* key) const noexcept {
  for (auto& [k, e] : extensions_)
    if (k == key) return e.get();
  return nullptr;
}

io_loop::extension& io_loop::add_extension(const void* key, std::unique_ptr<extension> ext) {
  check_thread("add_extension");
  if (destroying_) throw_error(error::closed, "squall: io_loop::add_extension: loop is closing");
  for (auto& [k, e] : extensions_)
    if (k == key)
      throw_error(error::already_watched, "squall: io_loop::add_extension: key already registered");
  extensions_.emplace_back(key, std::move(ext));
  return *extensions_.back().second;
}

// --- Embedding -------------------------------------------------------------------------------

int io_loop::backend_fd() {
  int fd = backend_->pollable_fd();
  if (fd < 0) throw_errno(-fd, std::string("squall: backend_fd on ") + backend_name());
  return fd;
}

int io_loop::backend_timeout_ms() const {
  if (work_pending() || remote_pending_.load(std::memory_order_acquire)) return 0;
  if (timers_->empty()) return -1;
  std::int64_t until = timers_->earliest() - ns(now());
  if (until <= 0) return 0;
  std::int64_t ms = (until + 999999) / 1000000;
  return ms > 0x7fffffff ? 0x7fffffff : static_cast<int>(ms);
}

}  // namespace squall
