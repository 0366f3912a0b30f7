// SPDX-License-Identifier: MIT
// Fibers: stackful coroutines on a loop, so a connection's code reads top to bottom.
//
//   squall::io_loop loop;
//   auto f = squall::spawn(loop, [] {
//     squall::this_fiber::sleep_for(std::chrono::milliseconds(10));
//     return 42;
//   }, {.name = "answer"});
//   int v = squall::run_sync(loop, [&] { return f.join(); });   // 42
//
// A fiber runs on the thread of the loop it was spawned on and never moves. It runs until it
// waits (sleep, a lock, a read...), then the loop runs other work until the wait ends. Waits
// take an absolute deadline (the last parameter, default: never) and end with
// std::system_error(error::timed_out) when it passes, or error::cancelled when the fiber is
// cancelled. A deadline_scope applies one deadline to every wait inside a block.
//
// Stacks are mmap'd, pooled per loop, and have a guard page below them by default, so an
// overflow faults instead of corrupting memory; squall then prints "fiber stack overflow" with
// the fiber's name before the process dies. Each guard-paged stack costs two kernel mappings:
// see docs/fibers.md for vm.max_map_count.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>

#include "squall/io_loop.hpp"

namespace squall {

// Per-fiber settings.
struct fiber_options {
  std::string name{};          // shown in logs and dumps; default "fiber-<id>"
  std::size_t stack_size = 0;  // bytes; 0 means the loop's fiber_config::stack_size
};

// Per-loop fiber settings; see set_fiber_config().
struct fiber_config {
  std::size_t stack_size = 256 * 1024;   // virtual size; only touched pages cost memory
  bool guard_page = true;                // a PROT_NONE page below each stack
  std::size_t max_pooled_stacks = 1024;  // freed stacks kept for reuse (default size only)
};

// Changes the fiber settings of `loop` (affects fibers spawned afterwards). Loop thread only.
void set_fiber_config(io_loop& loop, const fiber_config& config);
fiber_config get_fiber_config(io_loop& loop);

namespace detail {

struct fiber_record;

// One suspension of a fiber. It lives on the waiting fiber's stack for the whole wait; the
// primitive being waited on links it into its own structures and calls wake() when done.
struct waiter {
  fiber_record* fiber = nullptr;
  // Called at most once, on the loop's thread, to end the wait early (deadline, cancellation,
  // loop shutdown): it must detach the waiter from what it waits on and then call wake(*this,
  // abandon_reason), now or later (io_uring calls it once the kernel confirms the cancel).
  void (*abandon)(waiter&) = nullptr;
  const char* what = "";  // what the fiber waits for, for dumps: "sleep", "event", "read"...
  int fd = -1;            // the fd waited on, if any (dumps)
  std::error_code abandon_reason;
  std::error_code result;
  bool woken = false;
  bool abandoning = false;
  time_point deadline = time_point::max();  // set by suspend(): when the wait times out
  // Intrusive list links for the primitive's wait queue.
  waiter* prev = nullptr;
  waiter* next = nullptr;
  void* data = nullptr;  // for the primitive's use
};

// An intrusive FIFO of waiters (no allocation).
struct wait_list {
  waiter* head = nullptr;
  waiter* tail = nullptr;
  bool empty() const noexcept { return head == nullptr; }
  void push_back(waiter& w) noexcept;
  void remove(waiter& w) noexcept;
  waiter* pop_front() noexcept;
};

// Suspends the calling fiber until wake(w) is called, `deadline` (or an enclosing
// deadline_scope's) passes, or the fiber is cancelled. Returns the code passed to wake(), or
// error::timed_out / error::cancelled. `w.abandon` must be set. Throws std::logic_error outside
// a fiber.
std::error_code suspend(waiter& w, time_point deadline = time_point::max());

// Ends a wait with `ec`. The fiber resumes from the loop (not inside this call). Loop thread only;
// a second call for the same wait does nothing.
void wake(waiter& w, std::error_code ec = {});

// Like wake(), but when called from the loop's own context (not from inside a fiber) it resumes
// the fiber right away, saving a trip through the callback queue. Used by I/O completions.
void wake_now(waiter& w, std::error_code ec = {});

// Ends the wait early with `reason` (runs w.abandon once).
void abandon(waiter& w, std::error_code reason);

// The fiber the calling code runs in, or nullptr on the loop's own stack.
fiber_record* current_fiber() noexcept;

// The part of a fiber that does not depend on its result type. Aligned, with what a switch
// and a wait touch in the first cache line (after the vtable pointer): the loop prefetches
// that line before it resumes a fiber whose record has gone cold.
struct alignas(64) fiber_record : line_aligned {
  virtual ~fiber_record() = default;
  virtual void run_body() = 0;  // runs the function; stores its value or exception
  // Destroys the function and its captures: done when the fiber finishes, ran or not, so that
  // what it holds (an fd, a reference to a server) is released then, not when the last handle
  // goes away.
  virtual void drop_fn() noexcept = 0;

  void* ctx = nullptr;        // the fiber's saved context while it is suspended
  void* caller = nullptr;     // the context to return to when it suspends
  waiter* waiting = nullptr;  // the current wait, if suspended (its deadline is in it)
  io_loop* loop = nullptr;
  // The fiber's deadline timer, kept armed across waits: see arm_deadline() in fiber.cpp.
  time_point timer_at = time_point::max();  // when it fires; max when not armed
  time_point scope_deadline = time_point::max();
  bool started = false;
  bool finished = false;
  bool cancel_requested = false;
  bool unwinding = false;       // loop shutdown: every wait throws fiber_unwind
  bool error_observed = false;  // someone joined and saw the exception

  timer_handle deadline_timer;
  void* sched = nullptr;  // the loop's fiber scheduler
  std::uint64_t id = 0;
  std::string name;
  void* stack_base = nullptr;  // mmap'd region (guard page first, if any)
  std::size_t stack_size = 0;  // usable bytes above the guard page
  std::size_t guard_size = 0;
  void* tsan_fiber = nullptr;  // ThreadSanitizer's handle, in TSan builds
  // The C++ runtime's per-thread exception state while the fiber is suspended (the exceptions
  // its catch blocks are in, and how many are in flight): see resume() in fiber.cpp.
  void* eh_caught = nullptr;
  unsigned eh_uncaught = 0;
  std::exception_ptr error;
  wait_list joiners;
  int refs = 1;  // the scheduler's reference while live, plus one per handle
  fiber_record* live_prev = nullptr;
  fiber_record* live_next = nullptr;
};

template <class T>
struct fiber_record_t final : fiber_record {
  unique_function<T()> fn;
  std::optional<T> value;
  void run_body() override { value.emplace(fn()); }
  void drop_fn() noexcept override { fn.reset(); }
};

template <>
struct fiber_record_t<void> final : fiber_record {
  unique_function<void()> fn;
  void run_body() override { fn(); }
  void drop_fn() noexcept override { fn.reset(); }
};

// Spawns a prepared record (the non-template part of spawn()).
void spawn_record(io_loop& loop, fiber_record* rec, fiber_options&& opts);  // takes the name
void release(fiber_record* rec) noexcept;
void cancel(fiber_record* rec) noexcept;
// Waits in the calling fiber until `rec` has finished; rethrows its exception.
void join_record(fiber_record* rec, time_point deadline);

}  // namespace detail

// Thrown through a fiber's stack when its loop is destroyed while the fiber still waits, to run
// its destructors. Not a std::exception, so `catch (const std::exception&)` lets it pass; code
// that catches `...` must rethrow it.
struct fiber_unwind {};

// A handle to a spawned fiber. Movable, not copyable. Dropping it detaches the fiber (it keeps
// running). An exception that ends a fiber nobody joins is logged.
template <class T>
class fiber {
 public:
  fiber() noexcept = default;
  fiber(fiber&& o) noexcept : rec_(std::exchange(o.rec_, nullptr)) {}
  fiber& operator=(fiber&& o) noexcept {
    if (this != &o) {
      reset();
      rec_ = std::exchange(o.rec_, nullptr);
    }
    return *this;
  }
  ~fiber() { reset(); }

  // Waits (in a fiber) until this fiber has finished and returns its value, or rethrows the
  // exception it ended with. The value is moved out: join once. Throws error::timed_out if
  // `deadline` passes first (the fiber keeps running). Outside a fiber it works only once the
  // fiber is done (std::logic_error otherwise: use run_sync).
  T join(time_point deadline = time_point::max()) {
    check();
    detail::join_record(rec_, deadline);
    if constexpr (!std::is_void_v<T>) {
      auto* r = static_cast<detail::fiber_record_t<T>*>(rec_);
      if (!r->value) throw std::logic_error("squall: fiber::join: value already taken");
      T v = std::move(*r->value);
      r->value.reset();
      return v;
    }
  }

  // Makes the wait the fiber is in (or its next one) end with error::cancelled. A fiber that
  // has finished is not affected. Loop thread only.
  void cancel() noexcept {
    if (rec_) detail::cancel(rec_);
  }

  bool done() const noexcept { return rec_ && rec_->finished; }
  bool valid() const noexcept { return rec_ != nullptr; }
  std::string_view name() const noexcept { return rec_ ? std::string_view(rec_->name) : ""; }
  std::uint64_t id() const noexcept { return rec_ ? rec_->id : 0; }

  // Lets the fiber run on without a handle.
  void detach() noexcept { reset(); }

 private:
  template <class F>
  friend auto spawn(io_loop& loop, F fn, fiber_options opts) -> fiber<std::invoke_result_t<F&>>;
  explicit fiber(detail::fiber_record* rec) noexcept : rec_(rec) {}
  void check() const {
    if (!rec_) throw std::logic_error("squall: empty fiber handle");
  }
  void reset() noexcept {
    if (rec_) detail::release(std::exchange(rec_, nullptr));
  }
  detail::fiber_record* rec_ = nullptr;
};

// Starts `fn()` in a new fiber on `loop`. The fiber begins on a later loop iteration (like
// Tornado's spawn_callback), never inside spawn(). Loop thread only. Throws std::system_error
// if the stack cannot be mapped (ENOMEM: see docs/fibers.md on vm.max_map_count).
template <class F>
auto spawn(io_loop& loop, F fn, fiber_options opts = {}) -> fiber<std::invoke_result_t<F&>> {
  using T = std::invoke_result_t<F&>;
  auto* rec = new detail::fiber_record_t<T>();
  rec->fn = std::move(fn);
  rec->refs = 2;  // the scheduler's and the handle's
  try {
    detail::spawn_record(loop, rec, std::move(opts));
  } catch (...) {
    delete rec;
    throw;
  }
  return fiber<T>(rec);
}

// spawn() on the current thread's loop.
template <class F>
auto spawn(F fn, fiber_options opts = {}) {
  return spawn(io_loop::current(), std::move(fn), std::move(opts));
}

// Runs `fn()` in a fiber on `loop`, running the loop until it finishes, and returns its value
// or rethrows its exception (Tornado's IOLoop.run_sync). Not from inside the loop.
template <class F>
auto run_sync(io_loop& loop, F fn, fiber_options opts = {}) -> std::invoke_result_t<F&> {
  auto f = spawn(loop, std::move(fn), std::move(opts));
  while (!f.done())
    loop.run_once();
  return f.join();
}

namespace this_fiber {

// True when the calling code runs in a fiber.
bool active() noexcept;
// The calling fiber's name and loop. Throw std::logic_error outside a fiber.
std::string_view name();
io_loop& loop();

// Suspends the calling fiber for `d` / until `t`. Throws error::cancelled if cancelled; ends
// early with error::timed_out if an enclosing deadline_scope expires first.
void sleep_for(duration d);
void sleep_until(time_point t);

// Lets every other ready callback and fiber run, then continues.
void yield();

// Throws error::cancelled if a cancellation is pending for the calling fiber (and consumes it).
void check_cancelled();

// Runs `fn()` on the loop's thread pool and waits for it without blocking the loop; returns its
// value or rethrows its exception. If the wait is cancelled or times out, the function still
// runs to completion on its worker, and its result is dropped.
template <class F>
auto run_in_executor(F fn, time_point deadline = time_point::max()) -> std::invoke_result_t<F&>;

}  // namespace this_fiber

// Every wait of the calling fiber inside this scope ends with error::timed_out once `deadline`
// passes (nested scopes: the earliest wins). Must be created and destroyed in the same fiber.
class deadline_scope {
 public:
  explicit deadline_scope(time_point deadline);
  explicit deadline_scope(duration timeout) : deadline_scope(clock::now() + timeout) {}
  ~deadline_scope();
  deadline_scope(const deadline_scope&) = delete;
  deadline_scope& operator=(const deadline_scope&) = delete;

 private:
  detail::fiber_record* fiber_;
  time_point saved_;
};

// Runs `fn()` with a deadline_scope of `timeout` around it.
template <class F>
auto with_timeout(duration timeout, F&& fn) -> std::invoke_result_t<F&> {
  deadline_scope scope(timeout);
  return fn();
}

// One line per live fiber on `loop`: id, name, state, what it waits for and on which fd, and
// how far its deadline is. For a server that hangs (the squall tool prints it on SIGUSR1).
std::string dump_fibers(io_loop& loop);

// Live fibers on `loop` (tests, diagnostics).
std::size_t fiber_count(io_loop& loop);

// --- Templates ---------------------------------------------------------------------------------

namespace detail {
// Shared between a waiting fiber and the executor task: the task may finish after the fiber
// stopped waiting (cancelled, timed out, unwound), so the state is shared.
template <class T>
struct executor_wait {
  std::optional<result<T>> r;
  waiter* w = nullptr;  // null once the fiber stopped waiting
};
}  // namespace detail

namespace this_fiber {
template <class F>
auto run_in_executor(F fn, time_point deadline) -> std::invoke_result_t<F&> {
  using T = std::invoke_result_t<F&>;
  auto st = std::make_shared<detail::executor_wait<T>>();
  detail::waiter w;
  w.what = "executor";
  w.abandon = [](detail::waiter& self) { detail::wake(self, self.abandon_reason); };
  st->w = &w;
  // However the wait ends (value, error, unwinding), the task must not touch `w` afterwards.
  struct detach {
    detail::executor_wait<T>* st;
    ~detach() { st->w = nullptr; }
  } guard{st.get()};
  loop().run_in_executor(std::move(fn), [st](result<T> r) {
    st->r.emplace(std::move(r));
    if (st->w) detail::wake(*st->w);
  });
  std::error_code ec = detail::suspend(w, deadline);
  if (ec) throw std::system_error(ec, "squall: run_in_executor");
  return std::move(*st->r).get();
}
}  // namespace this_fiber

}  // namespace squall
