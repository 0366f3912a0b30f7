// SPDX-License-Identifier: MIT
// io_loop: one event loop per thread, with callbacks, timers, fd handlers, signals and an executor.
//
// The loop multiplexes I/O through a backend chosen at run time (io_uring or epoll on Linux,
// kqueue on BSD/macOS). Everything the loop does runs on the thread that runs it; the one door
// in from other threads is add_callback() (and stop(), which is built on it).
//
//   squall::io_loop loop;
//   loop.call_later(std::chrono::seconds(1), [&] { std::puts("tick"); loop.stop(); });
//   loop.run();
//
// Thread-safety: unless a method says otherwise it must be called on the loop's thread: the
// thread that created the loop, or the thread currently inside run()/run_once(). Builds without
// NDEBUG check this and throw std::system_error(error::wrong_thread).
//
// Exceptions: an exception escaping a callback, timer, fd handler or signal handler is caught,
// logged as "Exception in callback <where it was scheduled>: <what>", and the loop goes on.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <new>
#include <source_location>
#include <type_traits>
#include <utility>
#include <vector>

#include "squall/error.hpp"
#include "squall/thread_pool.hpp"
#include "squall/unique_function.hpp"

namespace squall {

class io_loop;

namespace detail {
class backend;
class buffer_pool;
class timer_heap;
struct fd_table;
struct signal_slot;

// The fiber I/O seam's completion record. Readiness backends report an fd registered with
// add_io() to it (`events`); completion backends report a finished operation to it (`res` is
// the operation's result or -errno, `flags` the CQE flags). Called on the loop's thread.
struct io_completion {
  void (*complete)(io_completion* self, unsigned events, int res, unsigned flags) = nullptr;
  // Optional: starts loading (prefetching) what the next call will touch: complete(), or with
  // `for_deferred` set, deferred(). The loop calls it for the next entry of a batch while it
  // runs the current one.
  void (*warm)(const io_completion* self, bool for_deferred) noexcept = nullptr;
  // Set by whoever calls defer_io(): the loop runs it at the end of the iteration.
  void (*deferred)(io_completion* self) noexcept = nullptr;
};

// A base for records that must start on a cache line (a fiber's, a socket's): `new` gives them
// memory through line_aligned_new. C++17's aligned new goes to glibc's memalign, which carves
// the block out of a larger chunk and frees the rest: about 600 instructions a call, twice per
// accepted connection. line_aligned_new asks the ordinary allocator (its fast paths) for one
// line more and aligns within it.
void* line_aligned_new(std::size_t n);
void line_aligned_delete(void* p) noexcept;
struct line_aligned {
  static void* operator new(std::size_t n) { return line_aligned_new(n); }
  static void* operator new(std::size_t n, std::align_val_t) { return line_aligned_new(n); }
  static void operator delete(void* p) noexcept { line_aligned_delete(p); }
  static void operator delete(void* p, std::align_val_t) noexcept { line_aligned_delete(p); }
};

backend& backend_of(io_loop& loop) noexcept;
buffer_pool& buffer_pool_of(io_loop& loop) noexcept;
void forget_io(io_loop& loop, io_completion* io) noexcept;
void defer_io(io_loop& loop, io_completion* io);

// The calling thread's id for the loop's thread checks: never reused, 0 until first asked.
// Inline with initial-exec TLS, because add_callback reads it on every call.
extern __attribute__((tls_model("initial-exec"))) thread_local std::uintptr_t t_thread_id;
std::uintptr_t assign_thread_id() noexcept;
inline std::uintptr_t thread_id() noexcept {
  std::uintptr_t id = t_thread_id;
  return __builtin_expect(id != 0, 1) ? id : assign_thread_id();
}
}  // namespace detail

// The loop's clock: monotonic, nanosecond resolution.
using clock = std::chrono::steady_clock;
using duration = clock::duration;
using time_point = clock::time_point;

enum class backend_kind { automatic, io_uring, epoll, kqueue };

// "io_uring", "epoll", "kqueue" or "automatic".
const char* to_string(backend_kind kind) noexcept;

// A cancellable reference to a scheduled timer. Cheap to copy; it owns nothing, so dropping it
// does not cancel the timer. Once the timer has fired or been cancelled, the handle is stale and
// cancel() does nothing (slots are reused, but a generation count keeps old handles from
// touching a newer timer).
class timer_handle {
 public:
  timer_handle() noexcept = default;

  // Cancels the timer if it is still pending: returns true if it was, false if it had already
  // fired, been cancelled, or the handle is empty. Loop thread only.
  bool cancel();

  // True if the timer is still pending. Loop thread only.
  bool pending() const;

 private:
  friend class io_loop;
  timer_handle(io_loop* loop, std::uint32_t slot, std::uint32_t gen) noexcept
      : loop_(loop), slot_(slot), gen_(gen) {}
  io_loop* loop_ = nullptr;
  std::uint32_t slot_ = 0;
  std::uint32_t gen_ = 0;
};

class io_loop {
 public:
  // Interest and readiness bits for fd handlers (Tornado's READ, WRITE, ERROR).
  static constexpr unsigned read = 1;
  static constexpr unsigned write = 2;
  // Reported, never requested: the fd has an error or was hung up. It comes together with the
  // interest bits the handler asked for, so a handler that reads will see the EOF or error.
  static constexpr unsigned error = 4;

  // run_once() with this timeout blocks until something happens.
  static constexpr duration forever = duration::max();

  struct options {
    // Which backend to use. `automatic` reads SQUALL_BACKEND (io_uring, epoll, kqueue) and
    // otherwise uses the platform default (see docs/performance.md for why). If io_uring is
    // asked for but the ring cannot be set up, the loop falls back to epoll and logs one line
    // saying why; backend() tells which one runs.
    backend_kind backend = backend_kind::automatic;
    // Threads in the executor used by run_in_executor(); 0 means max(4, hardware threads).
    // The pool is started on first use.
    unsigned executor_threads = 0;
    // Make this loop the thread's current loop if the thread has none yet.
    bool make_current = true;
    // Free I/O buffers (64 KiB each, resident only as far as streams wrote into them) the loop
    // keeps for its streams to reuse; past this many a returned buffer is freed. A stream holds
    // a buffer only while there are bytes in it (io_stream_options::lend_buffers), so this is
    // about how many streams read or write at once, not how many are open. On io_uring a
    // server's sends are all in flight together at the end of an iteration: with 1,000 busy
    // connections a pool of 256 kept freeing and allocating blocks (10,000 times in 5 s).
    std::size_t free_buffers = 1024;
    // io_uring (Linux 6.12): from this many open sockets on the loop, a receive that waits for
    // the peer takes no buffer; the kernel packs the bytes, when they come, into a 2 MiB region
    // the loop shares among its connections, and the stream copies them out (docs/networking.md).
    // It saves each idle connection its read buffer's touched page (about 4 KiB), and costs
    // about 1% more CPU per request at 100 connections (the copy and the kernel's buffer
    // bookkeeping), none measured at 1,000. 0: always; SIZE_MAX: never.
    std::size_t shared_receive_from = 512;
    // io_uring (Linux 6.1): the kernel's completion work runs only when the loop waits for it,
    // an iteration's all together (IORING_SETUP_DEFER_TASKRUN), instead of whenever the loop
    // enters the kernel. About 4% less CPU per request for a busy HTTP server at 100
    // connections (docs/performance.md); `squall serve` sets it. The ring then belongs to the
    // thread that first runs the loop: run the loop and destroy it on that thread only (it may
    // be made on another). A foreign poller could not be woken by it, so backend_fd() fails
    // (EOPNOTSUPP). Ignored by the other backends; older kernels run without it.
    bool defer_completions = false;
  };

  io_loop();
  explicit io_loop(const options& opts);
  ~io_loop();

  io_loop(const io_loop&) = delete;
  io_loop& operator=(const io_loop&) = delete;

  // The calling thread's current loop, created with default options on first use (like
  // Tornado's IOLoop.current()). It lives until the thread exits.
  static io_loop& current();
  // The calling thread's current loop, or nullptr if it has none.
  static io_loop* current_or_null() noexcept;
  // Makes this loop the calling thread's current loop.
  void make_current() noexcept;

  // The backend actually in use (never `automatic`).
  backend_kind backend() const noexcept;
  const char* backend_name() const noexcept { return to_string(backend()); }

  // --- Running -------------------------------------------------------------------------------

  // Runs until stop() is called. If stop() was called while the loop was not running, run()
  // does one iteration and returns. Throws error::loop_running if the loop is already running.
  void run();

  // Runs one iteration: waits up to `max_wait` for I/O (not at all if callbacks are pending or a
  // timer is due), then runs ready fd handlers, due timers and queued callbacks. Use
  // run_once(duration::zero()) to drive the loop from a foreign event loop (see backend_fd()).
  void run_once(duration max_wait = forever);

  // Makes run() return after the current iteration. Thread-safe: from another thread it is
  // add_callback([this] { stop(); }).
  void stop();

  bool running() const noexcept { return running_; }

  // True if the calling thread is the loop's thread.
  bool in_loop_thread() const noexcept;

  // --- Callbacks -----------------------------------------------------------------------------

  // Queues `fn` to run on the loop's thread in a later iteration, in FIFO order with every
  // other add_callback. THREAD-SAFE: the only loop method that may be called from any thread
  // (and from a signal-free context only: it takes a mutex when called off the loop's thread).
  // A sleeping loop is woken promptly. Never blocks, never runs `fn` inline.
  template <class F>
  requires std::is_invocable_v < std::decay_t<F>
  & > void add_callback(F&& fn, std::source_location where = std::source_location::current()) {
    // The unlocked queue belongs to the thread inside run()/run_once(). Before the loop runs,
    // every post takes the locked path: the thread that will run it may be starting right now.
    // On the fast path the callable is built in place in the queue: no copy, no move.
    if (running_thread_.load(std::memory_order_relaxed) == detail::thread_id())
      queues_[adding_].emplace_back(std::forward<F>(fn), where);
    else
      post_remote(queued_callback(std::forward<F>(fn), where));
  }

  // --- Timers --------------------------------------------------------------------------------

  // Runs `fn` once after `delay` (from now, on the monotonic clock) / at `when`. Timers with the
  // same deadline fire in the order they were scheduled. Allocation-free once the timer pool has
  // grown to the program's peak timer count.
  timer_handle call_later(duration delay, unique_function<void()> fn,
                          std::source_location where = std::source_location::current());
  timer_handle call_at(time_point when, unique_function<void()> fn,
                       std::source_location where = std::source_location::current());

  // Same as handle.cancel(): true if the timer was pending.
  bool cancel(timer_handle handle);

  // The loop's clock (Tornado's IOLoop.time()).
  static time_point now() noexcept { return clock::now(); }

  // The time the current iteration's poll returned, read once per iteration (libuv's
  // uv_now()): no clock read, so hot paths use it for deadlines, such as a connection's idle
  // and header timeouts. It lags now() by the time the iteration has run so far, so a deadline
  // of time() + t can end a wait up to that lag before t has passed; use now() where that
  // matters. Before the first iteration it is the loop's construction time. Loop thread only.
  time_point time() const noexcept { return time_; }

  // --- fd handlers ---------------------------------------------------------------------------

  // Calls `handler(fd, events)` whenever `fd` is ready for any of `events` (read | write).
  // Level-triggered on every backend: the handler is called again on the next iteration while
  // the condition holds. The loop never closes `fd`; remove the handler before closing it.
  // Throws std::invalid_argument for fd < 0 and error::already_watched if fd has a handler.
  void add_handler(int fd, unsigned events, unique_function<void(int fd, unsigned events)> handler,
                   std::source_location where = std::source_location::current());

  // Changes the interest set of a watched fd; 0 pauses it. Throws error::not_watched.
  void update_handler(int fd, unsigned events);

  // Stops watching `fd`. A handler may remove itself. Throws error::not_watched.
  void remove_handler(int fd);

  // --- Signals -------------------------------------------------------------------------------

  // Calls `handler(signo)` on the loop's thread after `signo` is delivered to the process.
  // Several deliveries before the loop gets to run may be reported once. Several loops may
  // watch the same signal; each is told. The process-wide signal disposition is restored when
  // the last loop stops watching. Throws std::invalid_argument for a signal that cannot be
  // caught (SIGKILL, SIGSTOP, out of range) and error::already_watched if this loop watches it.
  void add_signal_handler(int signo, unique_function<void(int signo)> handler,
                          std::source_location where = std::source_location::current());
  // Throws error::not_watched if this loop does not watch `signo`.
  void remove_signal_handler(int signo);

  // --- Executor ------------------------------------------------------------------------------

  // Runs `fn()` on the loop's thread pool and then `done(result)` on the loop's thread, where
  // `result` is a squall::result<R> holding fn's return value or the exception it threw
  // (Tornado's run_in_executor). `done` must be callable with result<R>&&.
  template <class F, class Done>
  void run_in_executor(F fn, Done done);

  // The loop's thread pool (started on first use).
  thread_pool& executor();

  // --- Embedding in a foreign loop -----------------------------------------------------------
  //
  //   poll() on loop.backend_fd() for POLLIN with timeout loop.backend_timeout_ms();
  //   whenever poll returns (ready or timed out), call loop.run_once(squall::duration::zero()).
  //
  // See docs/examples/embed_poll.cpp.

  // An fd that becomes readable when the loop has I/O to process (epoll's fd; an eventfd
  // registered with the ring on io_uring). Valid for the loop's lifetime.
  int backend_fd();

  // How long a foreign loop may sleep before calling run_once(): 0 if callbacks are queued or a
  // timer is due, -1 if there is no timer, otherwise milliseconds to the next timer, rounded up.
  int backend_timeout_ms() const;

  // --- Extensions: per-loop state of the layers built on the loop ----------------------------

  // The fiber scheduler, the resolver and similar layers keep one object per loop, found by a
  // key the layer owns (the address of one of its statics). Extensions are destroyed first when
  // the loop is destroyed, newest first, while the loop still works: they may cancel timers,
  // remove handlers and run the loop to let their work wind down. Loop thread only.
  struct extension {
    virtual ~extension() = default;
  };
  extension* find_extension(const void* key) const noexcept;
  // Takes ownership; `key` must not be registered yet.
  extension& add_extension(const void* key, std::unique_ptr<extension> ext);

  // --- Introspection (tests and diagnostics) -------------------------------------------------

  std::size_t timer_count() const noexcept;
  std::size_t handler_count() const noexcept;
  std::size_t signal_handler_count() const noexcept;
  // Callbacks queued and not yet run (both queues). Loop thread only.
  std::size_t pending_callbacks() const noexcept;

 private:
  friend class timer_handle;
  friend detail::backend& detail::backend_of(io_loop& loop) noexcept;
  friend detail::buffer_pool& detail::buffer_pool_of(io_loop& loop) noexcept;
  friend void detail::forget_io(io_loop& loop, detail::io_completion* io) noexcept;
  friend void detail::defer_io(io_loop& loop, detail::io_completion* io);
  struct queued_callback {
    template <class F>
    queued_callback(F&& f, std::source_location w) : fn(std::forward<F>(f)), where(w) {}
    unique_function<void()> fn;
    std::source_location where;
  };

  void iterate(duration max_wait);
  bool work_pending() const noexcept;
  duration compute_wait(duration max_wait);
  void run_ready_events(int n);
  void run_timers(time_point iteration_now);
  void run_callbacks();
  void run_deferred();
  void take_remote();
  void drain_wakeups();
  void process_signals();
  void check_thread(const char* what) const;
  bool on_running_thread() const noexcept;
  void post_remote(queued_callback cb);
  void wake();
  void enter_run();
  void leave_run();
  void post_executor_result(unique_function<void()> deliver);
  bool timer_pending(std::uint32_t slot, std::uint32_t gen) const;
  bool cancel_timer(std::uint32_t slot, std::uint32_t gen);
  static void report_exception(const char* kind, const std::source_location& where);

  options opts_;
  std::unique_ptr<detail::backend> backend_;
  std::unique_ptr<detail::timer_heap> timers_;
  std::unique_ptr<detail::fd_table> fds_;
  std::unique_ptr<detail::buffer_pool> buffers_;

  // Callbacks added on the loop's own thread (no lock needed) go to queues_[adding_]. A batch
  // runs in place in one queue while the callbacks it adds go to the other, so no callback is
  // moved or copied on its way through the loop. Flipping an index rather than swapping the
  // vectors also avoids a store-forwarding stall on the vectors' just-written end pointers.
  std::vector<queued_callback> queues_[2];
  int adding_ = 0;

  // Callbacks added from other threads.
  mutable std::mutex remote_mu_;
  std::vector<queued_callback> remote_q_;
  // Set (seq_cst) by a poster after queueing; cleared by the loop when it takes the queue.
  std::atomic<bool> remote_pending_{false};
  // True whenever the loop may be blocked where only the wake fd reaches it: in the backend's
  // wait, or between run_once() calls of an embedding program. Posters write the wake fd only
  // then, so a busy loop takes cross-thread callbacks without a syscall per post.
  std::atomic<bool> sleeping_{true};
  // Set by the first poster to write the wake fd; cleared when the loop drains it. Keeps a burst
  // of posts to one eventfd write.
  std::atomic<bool> wake_sent_{false};
  int wake_fd_ = -1;

  // Signals: which ones this loop watches, which have arrived.
  std::unique_ptr<detail::signal_slot> signals_;

  std::unique_ptr<thread_pool> executor_;
  std::vector<std::pair<const void*, std::unique_ptr<extension>>> extensions_;

  std::atomic<std::uintptr_t> owner_thread_{0};
  std::atomic<std::uintptr_t> running_thread_{0};  // the thread inside run()/run_once(), or 0
  bool running_ = false;
  bool stop_requested_ = false;
  time_point time_ = clock::now();  // see time()
  bool destroying_ = false;
};

// --- Implementation details of the templates above. ----------------------------------------

template <class F, class Done>
void io_loop::run_in_executor(F fn, Done done) {
  using R = std::invoke_result_t<F&>;
  check_thread("run_in_executor");
  executor().submit([this, fn = std::move(fn), done = std::move(done)]() mutable {
    result<R> r = result<R>::capture(fn);
    post_executor_result(
        [done = std::move(done), r = std::move(r)]() mutable { done(std::move(r)); });
  });
}

}  // namespace squall
