// SPDX-License-Identifier: MIT
// Fibers: the per-loop scheduler, context switches, waits, cancellation and shutdown.
//
// Contexts switch with Boost.Context's jump_fcontext directly (not its fiber class): a switch is
// then one register save/restore, and sanitizer annotations can be placed around it. Fibers are
// only ever resumed from the loop's own stack (a callback or an fd handler), never from inside
// another fiber, so each fiber's `caller` is the loop's context and nesting cannot build up.
#include "squall/fiber.hpp"

#include <boost/context/detail/fcontext.hpp>

#include <algorithm>
#include <cstdio>
#include <string>

#include "fiber_stack.hpp"
#include "squall/log.hpp"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define SQUALL_ASAN 1
#endif
#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#define SQUALL_TSAN 1
#endif

namespace ctx = boost::context::detail;

// The C++ runtime's per-thread exception state (see resume()). libstdc++'s <cxxabi.h> declares
// this, libc++abi's does not, though both export it: declared here for both.
namespace __cxxabiv1 {
struct __cxa_eh_globals;
extern "C" __cxa_eh_globals* __cxa_get_globals() noexcept;
}  // namespace __cxxabiv1

namespace squall {
namespace detail {
namespace {

// initial-exec: read from the SIGSEGV handler, which must not allocate TLS lazily.
__attribute__((tls_model("initial-exec"))) thread_local fiber_record* t_current = nullptr;

// --- Sanitizer annotations ------------------------------------------------------------------
// ASan must be told which stack is live after each switch, or it reports false overflows;
// TSan needs a fiber object per context to keep its shadow call stacks apart.

#if SQUALL_ASAN
thread_local const void* t_main_bottom = nullptr;
thread_local std::size_t t_main_size = 0;
#endif
#if SQUALL_TSAN
thread_local void* t_main_tsan = nullptr;
#endif

// --- The C++ runtime's exception state ------------------------------------------------------
// The runtime keeps, per thread, the stack of exceptions whose catch blocks are running and the
// count of exceptions in flight (std::uncaught_exceptions()). A fiber that waits inside a catch
// block, or in a destructor while an exception unwinds its stack, leaves its entries there, and
// another fiber's catch would then end (and free) the first one's exception: a use after free
// that any handler writing an error reply from a catch block could set off. So each context
// keeps its own: resume() swaps the two fields in and out around each switch.
// Both libstdc++ and libc++abi begin __cxa_eh_globals with these two fields. (32-bit ARM's
// EHABI adds a third, the exceptions in cleanup, which is not swapped: not a target here.)
struct eh_globals {
  void* caught;
  unsigned uncaught;
};

__attribute__((tls_model("initial-exec"))) thread_local eh_globals* t_eh = nullptr;

eh_globals& thread_eh() noexcept {
  if (!t_eh) t_eh = reinterpret_cast<eh_globals*>(__cxxabiv1::__cxa_get_globals());
  return *t_eh;
}

struct switch_note {
#if SQUALL_ASAN
  void* fake = nullptr;
#endif
};

}  // namespace

// Per-loop fiber state: live fibers, the stack pool, settings.
struct scheduler final : io_loop::extension {
  explicit scheduler(io_loop& l) : loop(l) {}
  ~scheduler() override;

  io_loop& loop;
  fiber_config config;
  stack_pool stacks;
  fiber_record* live_head = nullptr;
  std::size_t live = 0;
  std::uint64_t next_id = 1;

  void link(fiber_record* f) {
    f->live_next = live_head;
    if (live_head) live_head->live_prev = f;
    live_head = f;
    ++live;
  }
  void unlink(fiber_record* f) {
    if (f->live_prev)
      f->live_prev->live_next = f->live_next;
    else
      live_head = f->live_next;
    if (f->live_next) f->live_next->live_prev = f->live_prev;
    f->live_prev = f->live_next = nullptr;
    --live;
  }
  void shutdown();
};

namespace {

const char scheduler_key = 0;

scheduler& sched_of(io_loop& loop) {
  if (auto* e = loop.find_extension(&scheduler_key)) return static_cast<scheduler&>(*e);
  return static_cast<scheduler&>(
      loop.add_extension(&scheduler_key, std::make_unique<scheduler>(loop)));
}

scheduler& sched_of(fiber_record* f) {
  return *static_cast<scheduler*>(f->sched);
}

fiber_record* require_fiber(const char* what) {
  if (!t_current) throw std::logic_error(std::string("squall: ") + what + " outside a fiber");
  return t_current;
}

stack_region region_of(const fiber_record* f) {
  stack_region s;
  s.base = f->stack_base;
  s.size = f->stack_size;
  s.guard = f->guard_size;
  return s;
}

void log_unobserved(fiber_record* f) {
  if (!f->error || f->error_observed) return;
  try {
    std::rethrow_exception(f->error);
  } catch (const std::system_error& e) {
    if (e.code() == error::cancelled) return;  // cancelling is not a failure worth a log line
    log(log_level::error, "fiber", "Exception in fiber '%s' (never joined): %s", f->name.c_str(),
        e.what());
  } catch (const std::exception& e) {
    log(log_level::error, "fiber", "Exception in fiber '%s' (never joined): %s", f->name.c_str(),
        e.what());
  } catch (...) {
    log(log_level::error, "fiber", "Exception in fiber '%s' (never joined): unknown exception",
        f->name.c_str());
  }
}

// --- Switching ------------------------------------------------------------------------------

void run_fiber(fiber_record* f) {
  try {
    f->run_body();
  } catch (const fiber_unwind&) {
    // Loop shutdown unwound the stack; nothing to report.
  } catch (...) {
    f->error = std::current_exception();
  }
}

[[noreturn]] void entry(ctx::transfer_t t) {
  auto* f = static_cast<fiber_record*>(t.data);
  f->caller = t.fctx;
#if SQUALL_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &t_main_bottom, &t_main_size);
#endif
  run_fiber(f);  // every local of the fiber's code is gone when this returns
  f->finished = true;
#if SQUALL_ASAN
  __sanitizer_start_switch_fiber(nullptr, t_main_bottom, t_main_size);  // our stack dies
#endif
#if SQUALL_TSAN
  __tsan_switch_to_fiber(t_main_tsan, 0);
#endif
  ctx::jump_fcontext(f->caller, nullptr);
  __builtin_unreachable();
}

void finalize(fiber_record* f);

// Runs `f` until it suspends or finishes. Only from the loop's own stack.
void resume(fiber_record* f) {
  [[maybe_unused]] switch_note note;
#if SQUALL_ASAN
  __sanitizer_start_switch_fiber(&note.fake, static_cast<char*>(f->stack_base) + f->guard_size,
                                 f->stack_size);
#endif
#if SQUALL_TSAN
  if (!t_main_tsan) t_main_tsan = __tsan_get_current_fiber();
  __tsan_switch_to_fiber(f->tsan_fiber, 0);
#endif
  eh_globals& eh = thread_eh();
  eh_globals loop_eh = eh;  // the loop's own: a callback may resume a fiber from a catch block
  eh = {f->eh_caught, f->eh_uncaught};
  t_current = f;
  ctx::transfer_t t = ctx::jump_fcontext(f->ctx, f);
  t_current = nullptr;
  f->eh_caught = eh.caught;
  f->eh_uncaught = eh.uncaught;
  eh = loop_eh;
#if SQUALL_ASAN
  __sanitizer_finish_switch_fiber(note.fake, nullptr, nullptr);
#endif
  f->ctx = t.fctx;
  if (f->finished) finalize(f);
}

// Suspends the running fiber `f`, returning to the loop; returns when it is resumed.
void switch_out(fiber_record* f) {
  [[maybe_unused]] switch_note note;
#if SQUALL_ASAN
  __sanitizer_start_switch_fiber(&note.fake, t_main_bottom, t_main_size);
#endif
#if SQUALL_TSAN
  __tsan_switch_to_fiber(t_main_tsan, 0);
#endif
  ctx::transfer_t t = ctx::jump_fcontext(f->caller, nullptr);
  f->caller = t.fctx;
#if SQUALL_ASAN
  __sanitizer_finish_switch_fiber(note.fake, &t_main_bottom, &t_main_size);
#endif
}

void start(fiber_record* f) {
  if (f->finished) return;
  f->started = true;
  if (f->cancel_requested) {
    // Cancelled before it ever ran: it never runs (asyncio does the same).
    f->cancel_requested = false;
    f->error = std::make_exception_ptr(
        std::system_error(error::cancelled, "squall: fiber cancelled before it started"));
    f->finished = true;
    finalize(f);
    return;
  }
  f->ctx = ctx::make_fcontext(static_cast<char*>(f->stack_base) + f->guard_size + f->stack_size,
                              f->stack_size, entry);
  resume(f);
}

// A fiber has finished: give back its stack, tell its joiners, drop the scheduler's reference.
void finalize(fiber_record* f) {
  scheduler& s = sched_of(f);
  f->deadline_timer.cancel();  // it points at the record
  if (f->stack_base) {
    s.stacks.put(region_of(f),
                 f->stack_size == s.config.stack_size ? s.config.max_pooled_stacks : 0);
    f->stack_base = nullptr;
  }
#if SQUALL_TSAN
  if (f->tsan_fiber) __tsan_destroy_fiber(f->tsan_fiber);
  f->tsan_fiber = nullptr;
#endif
  while (waiter* w = f->joiners.pop_front())
    wake(*w);
  s.unlink(f);
  // Last: destroying the captures may run arbitrary code (a handle to this very fiber may be
  // dropped); the scheduler's reference keeps the record alive until the release below.
  f->drop_fn();
  release(f);
}

}  // namespace

// --- wait_list -------------------------------------------------------------------------------

void wait_list::push_back(waiter& w) noexcept {
  w.next = nullptr;
  w.prev = tail;
  if (tail)
    tail->next = &w;
  else
    head = &w;
  tail = &w;
}

void wait_list::remove(waiter& w) noexcept {
  if (w.prev)
    w.prev->next = w.next;
  else if (head == &w)
    head = w.next;
  else
    return;  // not in this list
  if (w.next)
    w.next->prev = w.prev;
  else
    tail = w.prev;
  w.prev = w.next = nullptr;
}

waiter* wait_list::pop_front() noexcept {
  waiter* w = head;
  if (w) remove(*w);
  return w;
}

// --- Waits -----------------------------------------------------------------------------------

fiber_record* current_fiber() noexcept {
  return t_current;
}

void abandon(waiter& w, std::error_code reason) {
  if (w.woken || w.abandoning) return;
  w.abandoning = true;
  w.abandon_reason = reason;
  w.abandon(w);
}

namespace {

void arm_deadline(fiber_record* f, time_point at);

// The deadline timer fired: it may be early (armed for an earlier wait, or before the deadline
// moved out). Time the current wait out if its deadline has passed, else re-arm for it.
void on_deadline_timer(fiber_record* f) {
  f->timer_at = time_point::max();
  waiter* w = f->waiting;
  if (!w || w->woken || w->abandoning || w->deadline == time_point::max()) return;
  if (w->deadline <= clock::now())
    abandon(*w, error::timed_out);
  else
    arm_deadline(f, w->deadline);
}

// Makes sure the fiber's timer fires no later than `at`. A timer already armed for earlier is
// left alone: when it fires, on_deadline_timer() re-arms it for the wait current then. So a
// connection whose every read waits "idle timeout from now" touches the timer heap once per
// idle timeout instead of twice per read (nginx re-arms its timers lazily in the same way).
void arm_deadline(fiber_record* f, time_point at) {
  if (f->timer_at <= at) return;
  f->deadline_timer.cancel();
  f->timer_at = time_point::max();  // in case call_at throws: not armed
  f->deadline_timer = f->loop->call_at(at, [f] { on_deadline_timer(f); });
  f->timer_at = at;
}

}  // namespace

std::error_code suspend(waiter& w, time_point deadline) {
  fiber_record* f = require_fiber("a wait");
  w.fiber = f;
  time_point eff = std::min(deadline, f->scope_deadline);
  if (f->unwinding) {
    abandon(w, error::cancelled);
  } else if (f->cancel_requested) {
    f->cancel_requested = false;
    abandon(w, error::cancelled);
  } else if (eff != time_point::max() && eff <= f->loop->time()) {
    // The iteration's time, not the clock: a deadline that passed since is caught by the
    // deadline timer instead, on the next iteration (it checks the clock itself).
    abandon(w, error::timed_out);
  }
  // An abandon above may complete later (io_uring waits for the kernel), so still suspend.
  if (!w.woken) {
    // Armed first: if call_at throws (bad_alloc), no record points at this waiter.
    if (eff != time_point::max() && !w.abandoning) arm_deadline(f, eff);
    f->waiting = &w;
    w.deadline = eff;
    while (!w.woken)
      switch_out(f);
    f->waiting = nullptr;
  }
  if (f->unwinding) throw fiber_unwind{};
  return w.result;
}

void wake(waiter& w, std::error_code ec) {
  if (w.woken) return;
  w.woken = true;
  w.result = ec;
  fiber_record* f = w.fiber;
  if (f == t_current) return;  // woken before it got to switch out: suspend() sees `woken`
  f->loop->add_callback([f] { resume(f); });
}

void wake_now(waiter& w, std::error_code ec) {
  if (w.woken) return;
  fiber_record* f = w.fiber;
  if (t_current != nullptr || f == nullptr) {
    wake(w, ec);
    return;
  }
  w.woken = true;
  w.result = ec;
  resume(f);
}

// --- Spawning, joining, cancelling ------------------------------------------------------------

void spawn_record(io_loop& loop, fiber_record* rec, fiber_options&& opts) {
  scheduler& s = sched_of(loop);
  prepare_overflow_reporting();
  std::size_t size = opts.stack_size ? opts.stack_size : s.config.stack_size;
  stack_region st = s.stacks.get(size, s.config.guard_page, s.live);
  rec->loop = &loop;
  rec->sched = &s;
  rec->id = s.next_id++;
  if (opts.name.empty())
    rec->name = "fiber-" + std::to_string(rec->id);
  else
    rec->name = std::move(opts.name);  // a copy was an allocation per accepted connection
  rec->stack_base = st.base;
  rec->stack_size = st.size;
  rec->guard_size = st.guard;
#if SQUALL_TSAN
  rec->tsan_fiber = __tsan_create_fiber(0);
#endif
  s.link(rec);
  loop.add_callback([rec] { start(rec); });
}

void release(fiber_record* rec) noexcept {
  if (--rec->refs > 0) return;
  log_unobserved(rec);
  delete rec;
}

void cancel(fiber_record* rec) noexcept {
  if (rec->finished) return;
  if (rec->waiting && !rec->waiting->woken) {
    abandon(*rec->waiting, error::cancelled);
  } else {
    rec->cancel_requested = true;  // delivered at its next wait (or instead of its start)
  }
}

void join_record(fiber_record* rec, time_point deadline) {
  if (!rec->finished) {
    fiber_record* self = require_fiber("fiber::join on an unfinished fiber");
    if (self == rec) throw std::logic_error("squall: a fiber cannot join itself");
    waiter w;
    w.what = "join";
    w.data = rec;
    w.abandon = [](waiter& me) {
      static_cast<fiber_record*>(me.data)->joiners.remove(me);
      wake(me, me.abandon_reason);
    };
    rec->joiners.push_back(w);
    if (std::error_code ec = suspend(w, deadline))
      throw std::system_error(ec, "squall: fiber::join '" + rec->name + "'");
  }
  if (rec->error) {
    rec->error_observed = true;
    std::rethrow_exception(rec->error);
  }
}

// --- Shutdown --------------------------------------------------------------------------------

// The loop is being destroyed. Fibers that never started never will. The others are cancelled
// and the loop runs until they have finished, so that every wait, io_uring operations included,
// completes the normal way before any stack is freed. Fibers that catch the cancellation and
// wait again are then unwound (fiber_unwind thrown from each wait). A fiber that swallows even
// that is leaked with a log line: its stack cannot be freed while it is in use.
scheduler::~scheduler() {
  shutdown();
}

void scheduler::shutdown() {
  // Fibers that never started get cancel_requested and finish, unrun, when their start callback
  // runs below (it holds a pointer to them, so they must not be freed before).
  for (int phase = 0; phase < 2 && live > 0; ++phase) {
    for (fiber_record* f = live_head; f; f = f->live_next) {
      if (phase == 1) f->unwinding = true;
      cancel(f);
    }
    for (int i = 0; i < 1000 && live > 0; ++i)
      loop.run_once(std::chrono::milliseconds(1));
  }
  for (fiber_record* f = live_head; f; f = f->live_next)
    log(log_level::error, "fiber", "fiber '%s' did not finish at loop shutdown; leaking it",
        f->name.c_str());
}

}  // namespace detail

// --- Public functions -----------------------------------------------------------------------

using detail::scheduler;

void set_fiber_config(io_loop& loop, const fiber_config& config) {
  if (config.stack_size < 16 * 1024)
    throw std::invalid_argument("squall: fiber stack_size must be at least 16 KiB");
  detail::sched_of(loop).config = config;
}

fiber_config get_fiber_config(io_loop& loop) {
  return detail::sched_of(loop).config;
}

std::size_t fiber_count(io_loop& loop) {
  auto* e = loop.find_extension(&detail::scheduler_key);
  return e ? static_cast<scheduler*>(e)->live : 0;
}

std::string dump_fibers(io_loop& loop) {
  auto* e = loop.find_extension(&detail::scheduler_key);
  std::string out;
  if (!e) return out;
  auto now = clock::now();
  for (auto* f = static_cast<scheduler*>(e)->live_head; f; f = f->live_next) {
    char line[512];
    const char* state = !f->started ? "new" : f == detail::t_current ? "running" : "waiting";
    int n = std::snprintf(line, sizeof line, "#%llu %s: %s", static_cast<unsigned long long>(f->id),
                          f->name.c_str(), state);
    std::string s(line, static_cast<std::size_t>(std::max(n, 0)));
    if (f->waiting) {
      s += std::string(" on ") + f->waiting->what;
      if (f->waiting->fd >= 0) s += " fd " + std::to_string(f->waiting->fd);
      if (f->waiting->deadline != time_point::max()) {
        auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(f->waiting->deadline - now)
                      .count();
        s += ", deadline in " + std::to_string(ms) + " ms";
      }
    } else if (f->started && f != detail::t_current) {
      s += " (ready to run)";
    }
    out += s + "\n";
  }
  return out;
}

namespace this_fiber {

bool active() noexcept {
  return detail::t_current != nullptr;
}
std::string_view name() {
  return detail::require_fiber("this_fiber::name")->name;
}
io_loop& loop() {
  return *detail::require_fiber("this_fiber::loop")->loop;
}

void sleep_until(time_point t) {
  detail::fiber_record* f = detail::require_fiber("this_fiber::sleep");
  detail::waiter w;
  w.what = "sleep";
  w.abandon = [](detail::waiter& me) { detail::wake(me, me.abandon_reason); };
  timer_handle timer = f->loop->call_at(t, [&w] { detail::wake_now(w); });
  std::error_code ec = detail::suspend(w);
  timer.cancel();
  if (ec) throw std::system_error(ec, "squall: sleep");
}

void sleep_for(duration d) {
  sleep_until(clock::now() + d);
}

void yield() {
  detail::fiber_record* f = detail::require_fiber("this_fiber::yield");
  detail::waiter w;
  w.what = "yield";
  // The queued callback holds a pointer to `w`, so the wait must last until it runs: an abandon
  // (cancel, deadline) only records its reason, which is reported once the callback has run.
  w.abandon = [](detail::waiter&) {};
  f->loop->add_callback([&w] { detail::wake_now(w); });
  detail::suspend(w);
  if (w.abandoning) throw std::system_error(w.abandon_reason, "squall: yield");
}

void check_cancelled() {
  detail::fiber_record* f = detail::require_fiber("this_fiber::check_cancelled");
  if (f->cancel_requested) {
    f->cancel_requested = false;
    throw std::system_error(error::cancelled, "squall: fiber cancelled");
  }
}

}  // namespace this_fiber

deadline_scope::deadline_scope(time_point deadline)
    : fiber_(detail::require_fiber("deadline_scope")), saved_(fiber_->scope_deadline) {
  fiber_->scope_deadline = std::min(saved_, deadline);
}

deadline_scope::~deadline_scope() {
  fiber_->scope_deadline = saved_;
}

}  // namespace squall
