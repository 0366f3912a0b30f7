// SPDX-License-Identifier: MIT
// asio_bench: Boost.Asio (header-only, epoll reactor) under the event-loop benchmarks that
// perf/run compares with squall (loop_bench.cpp), libuv (uv_bench.c) and a bare eventfd
// (eventfd_floor.c).
//
//   asio_bench timers_cancel | timers_fire | callbacks | wakeup
//
// Prints one line, e.g.  bench=timers_fire impl=asio ns_per_op=123.4 n=1000000
//
// The io_context is built with concurrency hint 1, Asio's documented setting for a context run
// by one thread (it lets handlers posted from inside the loop skip the scheduler's lock).
//
// Methodology (the same work in every implementation; the four files say the same thing):
//
//   Random numbers come from splitmix64 with the fixed seed below, written out in each file, so
//   every implementation sees the same deadlines in the same order. x % range picks a value in
//   [0, range); Fisher-Yates over [0, N) with j = next() % (i + 1), i from N-1 down to 1, gives
//   the cancel order. Each benchmark restarts the generator from the seed: first the N
//   deadlines, then (timers_cancel) the permutation. Both are drawn before the clock starts.
//   Times are CLOCK_MONOTONIC (std::chrono::steady_clock is that clock in libstdc++).
//
//   timers_cancel: N = 1,000,000 timers with delays in [1 s, 2 s) from now. Schedule all, then
//     cancel all in the permutation's order. Time from the first schedule to the last cancel,
//     divided by N. Asio: the N steady_timer objects are constructed before timing (programs
//     reuse timer objects); timed are expires_at(now() + delay) + async_wait(), then cancel().
//     cancel() only queues the handlers with operation_aborted; the io_context is run after
//     the timed part so they run and are freed (and we check that all N were aborted).
//   timers_fire: N timers (constructed before timing) with deadlines in [0, 1 ms) from a start
//     time point taken just before scheduling (expires_at(start + d) + async_wait); each handler
//     increments a counter and the one that reaches N records the time. run() returns when the
//     context is out of work. Time from the start point to the last fire, divided by N.
//   callbacks: one handler in flight: it re-posts itself with boost::asio::post(io_context)
//     until it has run M = 10,000,000 times; the last records the time and does not re-post, so
//     run() returns. ns per handler. No I/O object or timer exists in this io_context, so Asio
//     never creates its epoll reactor and the handlers run with no syscall at all; with any
//     socket or timer in the context (any real program) the reactor polls once per handler
//     (epoll_wait with timeout 0), which costs ~10x more here. We measure the reactor-less
//     case: the hardest figure for squall to meet.
//   wakeup: cross-thread wake-up latency. The loop runs on the main thread pinned to CPU 0 (a
//     work guard keeps run() from returning while idle); a poster thread pinned to CPU 1 (if
//     pinning fails we go on and say so on stderr). For each sample the poster sleeps ~200 us
//     (so the loop is blocked in epoll_wait again), stores now() in a shared atomic, and
//     post()s a handler that records now() - that time. It then spins until the sample is
//     recorded. 200 warm-up samples are dropped, then K = 5,000 are kept; the median and the
//     99th percentile (sorted[K * 99 / 100]) are printed in microseconds. The last handler
//     calls io_context::stop(). As in callbacks, this io_context has no I/O object, so there
//     is no epoll reactor: the idle run() thread sleeps on a condition variable and a post
//     wakes it through futex (strace: 3 futex calls per sample), not through epoll_wait and
//     Asio's interrupter. That is Asio's real behaviour for such a context; a context with
//     sockets would be woken through epoll instead.
#include <pthread.h>
#include <sched.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

namespace asio = boost::asio;

namespace {

constexpr std::uint64_t seed = 0x5eed5eed12345678ULL;
constexpr std::size_t timer_n = 1'000'000;
constexpr std::uint64_t callback_m = 10'000'000;
constexpr int wakeup_k = 5'000;
constexpr int wakeup_warmup = 200;
constexpr long wakeup_gap_ns = 200'000;

struct splitmix64 {
  std::uint64_t s;
  std::uint64_t next() {
    std::uint64_t z = (s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
};

// Delays lo + [0, span) ns for n timers and, if `perm` is given, the cancel order.
void make_workload(std::int64_t lo, std::int64_t span, std::size_t n,
                   std::vector<std::int64_t>& delay, std::vector<std::uint32_t>* perm) {
  splitmix64 rng{seed};
  delay.resize(n);
  for (std::size_t i = 0; i < n; ++i)
    delay[i] = lo + static_cast<std::int64_t>(rng.next() % static_cast<std::uint64_t>(span));
  if (!perm) return;
  perm->resize(n);
  for (std::size_t i = 0; i < n; ++i)
    (*perm)[i] = static_cast<std::uint32_t>(i);
  for (std::size_t i = n - 1; i > 0; --i) {
    std::size_t j = static_cast<std::size_t>(rng.next() % (i + 1));
    std::swap((*perm)[i], (*perm)[j]);
  }
}

std::int64_t mono_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "asio_bench: %s\n", what);
  std::exit(1);
}

void print_ns(const char* bench, std::int64_t elapsed, std::uint64_t n) {
  std::printf("bench=%s impl=asio ns_per_op=%.1f n=%llu\n", bench,
              static_cast<double>(elapsed) / static_cast<double>(n),
              static_cast<unsigned long long>(n));
}

std::vector<asio::steady_timer> make_timers(asio::io_context& ctx) {
  std::vector<asio::steady_timer> timers;
  timers.reserve(timer_n);
  for (std::size_t i = 0; i < timer_n; ++i)
    timers.emplace_back(ctx);
  return timers;
}

// --- timers_cancel ---------------------------------------------------------------------------

struct cancel_state {
  std::uint64_t fired = 0;
  std::uint64_t aborted = 0;
};

struct cancel_handler {
  cancel_state* s;
  void operator()(const boost::system::error_code& ec) const {
    if (ec == asio::error::operation_aborted)
      ++s->aborted;
    else
      ++s->fired;
  }
};

void timers_cancel() {
  std::vector<std::int64_t> delay;
  std::vector<std::uint32_t> perm;
  make_workload(1'000'000'000, 1'000'000'000, timer_n, delay, &perm);
  asio::io_context ctx(1);
  std::vector<asio::steady_timer> timers = make_timers(ctx);
  cancel_state st;
  std::size_t cancelled = 0;

  std::int64_t t0 = mono_ns();
  for (std::size_t i = 0; i < timer_n; ++i) {
    timers[i].expires_at(std::chrono::steady_clock::now() + std::chrono::nanoseconds(delay[i]));
    timers[i].async_wait(cancel_handler{&st});
  }
  for (std::size_t i = 0; i < timer_n; ++i)
    cancelled += timers[perm[i]].cancel();
  std::int64_t t1 = mono_ns();

  ctx.run();  // runs (and frees) the aborted handlers, outside the timing
  if (cancelled != timer_n || st.aborted != timer_n || st.fired != 0)
    fail("timers_cancel: not every timer was cancelled");
  print_ns("timers_cancel", t1 - t0, timer_n);
}

// --- timers_fire -----------------------------------------------------------------------------

struct fire_state {
  std::uint64_t fired = 0;
  std::int64_t end = 0;
};

struct fire_handler {
  fire_state* s;
  void operator()(const boost::system::error_code& ec) const {
    if (!ec && ++s->fired == timer_n) s->end = mono_ns();
  }
};

void timers_fire() {
  std::vector<std::int64_t> delay;
  make_workload(0, 1'000'000, timer_n, delay, nullptr);
  asio::io_context ctx(1);
  std::vector<asio::steady_timer> timers = make_timers(ctx);
  fire_state st;

  auto start = std::chrono::steady_clock::now();
  for (std::size_t i = 0; i < timer_n; ++i) {
    timers[i].expires_at(start + std::chrono::nanoseconds(delay[i]));
    timers[i].async_wait(fire_handler{&st});
  }
  ctx.run();

  if (st.fired != timer_n) fail("timers_fire: not every timer fired");
  std::int64_t t0 =
      std::chrono::duration_cast<std::chrono::nanoseconds>(start.time_since_epoch()).count();
  print_ns("timers_fire", st.end - t0, timer_n);
}

// --- callbacks -------------------------------------------------------------------------------

struct chain_state {
  asio::io_context* ctx;
  std::uint64_t runs = 0;
  std::int64_t end = 0;
};

struct chain_link {
  chain_state* s;
  void operator()() const {
    if (++s->runs == callback_m) {
      s->end = mono_ns();
      return;
    }
    asio::post(*s->ctx, *this);
  }
};

void callbacks() {
  asio::io_context ctx(1);
  chain_state st{&ctx};
  std::int64_t t0 = mono_ns();
  asio::post(ctx, chain_link{&st});
  ctx.run();
  if (st.runs != callback_m) fail("callbacks: wrong count");
  print_ns("callbacks", st.end - t0, callback_m);
}

// --- wakeup ----------------------------------------------------------------------------------

bool pin_to(int cpu, const char* who) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  int r = pthread_setaffinity_np(pthread_self(), sizeof set, &set);
  if (r != 0) {
    std::fprintf(stderr, "asio_bench: could not pin the %s thread to CPU %d (%s); going on\n", who,
                 cpu, std::strerror(r));
    return false;
  }
  return true;
}

void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

void sleep_gap() {
  timespec ts{0, wakeup_gap_ns};
  nanosleep(&ts, nullptr);
}

struct wake_state {
  asio::io_context* ctx;
  std::atomic<std::int64_t> posted_at{0};
  std::atomic<int> taken{0};
  std::vector<std::int64_t> lat{};
};

void wakeup() {
  bool pinned = pin_to(0, "loop");
  asio::io_context ctx(1);
  auto guard = asio::make_work_guard(ctx);
  constexpr int total = wakeup_warmup + wakeup_k;
  wake_state st{&ctx};
  st.lat.resize(total);
  wake_state* s = &st;
  std::atomic<bool> poster_pinned{true};

  std::thread poster([s, &poster_pinned] {
    if (!pin_to(1, "poster")) poster_pinned = false;
    for (int i = 0; i < total; ++i) {
      sleep_gap();
      s->posted_at.store(mono_ns(), std::memory_order_relaxed);
      asio::post(*s->ctx, [s] {
        std::int64_t now = mono_ns();
        int k = s->taken.load(std::memory_order_relaxed);
        s->lat[static_cast<std::size_t>(k)] = now - s->posted_at.load(std::memory_order_relaxed);
        s->taken.store(k + 1, std::memory_order_release);
        if (k + 1 == total) s->ctx->stop();
      });
      while (s->taken.load(std::memory_order_acquire) <= i)
        cpu_relax();
    }
  });
  ctx.run();
  poster.join();

  std::vector<std::int64_t> v(st.lat.begin() + wakeup_warmup, st.lat.end());
  std::sort(v.begin(), v.end());
  double median = (v[wakeup_k / 2 - 1] + v[wakeup_k / 2]) / 2.0;
  double p99 = static_cast<double>(v[wakeup_k * 99 / 100]);
  std::printf("bench=wakeup impl=asio median_us=%.2f p99_us=%.2f samples=%d pinned=%s\n",
              median / 1000.0, p99 / 1000.0, wakeup_k, pinned && poster_pinned ? "yes" : "no");
}

}  // namespace

int main(int argc, char** argv) {
  const char* bench = argc > 1 ? argv[1] : "";
  if (std::strcmp(bench, "timers_cancel") == 0)
    timers_cancel();
  else if (std::strcmp(bench, "timers_fire") == 0)
    timers_fire();
  else if (std::strcmp(bench, "callbacks") == 0)
    callbacks();
  else if (std::strcmp(bench, "wakeup") == 0)
    wakeup();
  else {
    std::fprintf(stderr, "usage: %s timers_cancel|timers_fire|callbacks|wakeup\n", argv[0]);
    return 2;
  }
  return 0;
}
