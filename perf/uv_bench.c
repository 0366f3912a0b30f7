// SPDX-License-Identifier: MIT
// uv_bench: libuv under the event-loop benchmarks that perf/run compares with squall
// (loop_bench.cpp), Boost.Asio (asio_bench.cpp) and a bare eventfd (eventfd_floor.c).
//
//   uv_bench timers_cancel | timers_fire | callbacks | wakeup
//
// Prints one line, e.g.  bench=timers_fire impl=libuv ns_per_op=123.4 n=1000000
//
// Methodology (the same work in every implementation; the four files say the same thing):
//
//   Random numbers come from splitmix64 with the fixed seed below, written out in each file, so
//   every implementation sees the same deadlines in the same order. x % range picks a value in
//   [0, range); Fisher-Yates over [0, N) with j = next() % (i + 1), i from N-1 down to 1, gives
//   the cancel order. Each benchmark restarts the generator from the seed: first the N
//   deadlines, then (timers_cancel) the permutation. Both are drawn before the clock starts.
//   Times are CLOCK_MONOTONIC.
//
//   libuv's timers have millisecond resolution and count from the loop's cached time
//   (uv_now()), so a delay d ns becomes uv_timer_start(d / 1,000,000 ms): [1 s, 2 s) keeps
//   1000 distinct deadlines, but [0, 1 ms) collapses to timeout 0 for every timer. That is
//   libuv's API, not something this file can change; it makes libuv's timers_fire inserts
//   cheaper (equal keys never sift up in its heap), while the pops do the same work.
//
//   timers_cancel: N = 1,000,000 timers with delays in [1 s, 2 s) from now. Schedule all, then
//     cancel all in the permutation's order. Time from the first schedule to the last cancel,
//     divided by N. libuv: the N uv_timer_t are uv_timer_init()ed before timing; timed are
//     uv_timer_start() and uv_timer_stop().
//   timers_fire: N timers (initialised before timing) with deadlines in [0, 1 ms) from a start
//     time point taken just before scheduling (uv_update_time() first, so the loop's cached
//     time is that point); each callback increments a counter and the one that reaches N
//     records the time and calls uv_stop(). Time from the start point to the last fire, / N.
//   callbacks: libuv has no same-thread "post a callback" call, so the nearest is a uv_idle_t
//     whose callback counts and stops the idle handle at M = 10,000,000 runs. It runs once per
//     loop iteration, and an active idle handle makes the loop poll with timeout 0. libuv skips
//     the epoll_wait call only when no fd is watched, but libuv 1.44's uv_loop_init() already
//     watches two of its own (the signal pipe and the async eventfd; see strace), so every
//     iteration, hence every idle callback, costs one epoll_wait(..., 0) syscall. That is what
//     a libuv program pays for a per-iteration callback; there is no cheaper same-thread post.
//     ns per callback.
//   wakeup: cross-thread wake-up latency. The loop runs on the main thread pinned to CPU 0; a
//     poster thread pinned to CPU 1 (if pinning fails we go on and say so on stderr). For each
//     sample the poster sleeps ~200 us (so the loop is blocked in epoll_wait again), stores
//     now() in a shared atomic and calls uv_async_send(); the async callback records now() -
//     that time. The poster then spins until the sample is recorded. 200 warm-up samples are
//     dropped, then K = 5,000 are kept; the median and the 99th percentile
//     (sorted[K * 99 / 100]) are printed in microseconds. The last callback closes the async
//     handle, so uv_run() returns.
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#define SEED 0x5eed5eed12345678ULL
#define TIMER_N 1000000u
#define CALLBACK_M 10000000ull
#define WAKEUP_K 5000
#define WAKEUP_WARMUP 200
#define WAKEUP_GAP_NS 200000L

static uint64_t rng_state;

static uint64_t splitmix64_next(void) {
  uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Delays lo + [0, span) ns for n timers and, if `perm` is given, the cancel order.
static void make_workload(int64_t lo, int64_t span, size_t n, int64_t* delay, uint32_t* perm) {
  rng_state = SEED;
  for (size_t i = 0; i < n; ++i)
    delay[i] = lo + (int64_t)(splitmix64_next() % (uint64_t)span);
  if (!perm) return;
  for (size_t i = 0; i < n; ++i)
    perm[i] = (uint32_t)i;
  for (size_t i = n - 1; i > 0; --i) {
    size_t j = (size_t)(splitmix64_next() % (i + 1));
    uint32_t t = perm[i];
    perm[i] = perm[j];
    perm[j] = t;
  }
}

static int64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void fail(const char* what) {
  fprintf(stderr, "uv_bench: %s\n", what);
  exit(1);
}

static void* xmalloc(size_t n) {
  void* p = malloc(n);
  if (!p) fail("out of memory");
  return p;
}

static void print_ns(const char* bench, int64_t elapsed, uint64_t n) {
  printf("bench=%s impl=libuv ns_per_op=%.1f n=%llu\n", bench, (double)elapsed / (double)n,
         (unsigned long long)n);
}

// Closes every handle still open and frees the loop's resources (outside any timing).
static void close_walk_cb(uv_handle_t* h, void* arg) {
  (void)arg;
  if (!uv_is_closing(h)) uv_close(h, NULL);
}

static void close_loop(uv_loop_t* loop) {
  uv_walk(loop, close_walk_cb, NULL);
  uv_run(loop, UV_RUN_DEFAULT);
  if (uv_loop_close(loop) != 0) fail("uv_loop_close: handles left open");
}

// --- timers_cancel ---------------------------------------------------------------------------

static uint64_t cancel_fired;

static void cancel_timer_cb(uv_timer_t* t) {
  (void)t;
  ++cancel_fired;
}

static void timers_cancel(void) {
  int64_t* delay = xmalloc(TIMER_N * sizeof *delay);
  uint32_t* perm = xmalloc(TIMER_N * sizeof *perm);
  make_workload(1000000000, 1000000000, TIMER_N, delay, perm);
  uv_loop_t loop;
  if (uv_loop_init(&loop) != 0) fail("uv_loop_init");
  uv_timer_t* timers = xmalloc(TIMER_N * sizeof *timers);
  for (size_t i = 0; i < TIMER_N; ++i)
    uv_timer_init(&loop, &timers[i]);
  size_t cancelled = 0;

  int64_t t0 = mono_ns();
  for (size_t i = 0; i < TIMER_N; ++i)
    uv_timer_start(&timers[i], cancel_timer_cb, (uint64_t)(delay[i] / 1000000), 0);
  for (size_t i = 0; i < TIMER_N; ++i) {
    uv_timer_t* t = &timers[perm[i]];
    cancelled += uv_is_active((uv_handle_t*)t) != 0;
    uv_timer_stop(t);
  }
  int64_t t1 = mono_ns();

  if (cancelled != TIMER_N || cancel_fired != 0) fail("timers_cancel: not every timer cancelled");
  close_loop(&loop);
  print_ns("timers_cancel", t1 - t0, TIMER_N);
  free(timers);
  free(perm);
  free(delay);
}

// --- timers_fire -----------------------------------------------------------------------------

static uint64_t fire_count;
static int64_t fire_end;

static void fire_timer_cb(uv_timer_t* t) {
  if (++fire_count == TIMER_N) {
    fire_end = mono_ns();
    uv_stop(t->loop);
  }
}

static void timers_fire(void) {
  int64_t* delay = xmalloc(TIMER_N * sizeof *delay);
  make_workload(0, 1000000, TIMER_N, delay, NULL);
  uv_loop_t loop;
  if (uv_loop_init(&loop) != 0) fail("uv_loop_init");
  uv_timer_t* timers = xmalloc(TIMER_N * sizeof *timers);
  for (size_t i = 0; i < TIMER_N; ++i)
    uv_timer_init(&loop, &timers[i]);

  int64_t t0 = mono_ns();
  uv_update_time(&loop);
  for (size_t i = 0; i < TIMER_N; ++i)
    uv_timer_start(&timers[i], fire_timer_cb, (uint64_t)(delay[i] / 1000000), 0);
  uv_run(&loop, UV_RUN_DEFAULT);

  if (fire_count != TIMER_N) fail("timers_fire: not every timer fired");
  close_loop(&loop);
  print_ns("timers_fire", fire_end - t0, TIMER_N);
  free(timers);
  free(delay);
}

// --- callbacks -------------------------------------------------------------------------------

static uint64_t idle_runs;
static int64_t idle_end;

static void idle_cb(uv_idle_t* h) {
  if (++idle_runs == CALLBACK_M) {
    idle_end = mono_ns();
    uv_idle_stop(h);
    uv_stop(h->loop);
  }
}

static void callbacks(void) {
  uv_loop_t loop;
  if (uv_loop_init(&loop) != 0) fail("uv_loop_init");
  uv_idle_t idle;
  uv_idle_init(&loop, &idle);
  int64_t t0 = mono_ns();
  uv_idle_start(&idle, idle_cb);
  uv_run(&loop, UV_RUN_DEFAULT);
  if (idle_runs != CALLBACK_M) fail("callbacks: wrong count");
  close_loop(&loop);
  print_ns("callbacks", idle_end - t0, CALLBACK_M);
}

// --- wakeup ----------------------------------------------------------------------------------

static int pin_to(int cpu, const char* who) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  int r = pthread_setaffinity_np(pthread_self(), sizeof set, &set);
  if (r != 0) {
    fprintf(stderr, "uv_bench: could not pin the %s thread to CPU %d (%s); going on\n", who, cpu,
            strerror(r));
    return 0;
  }
  return 1;
}

static void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ volatile("yield");
#endif
}

static void sleep_gap(void) {
  struct timespec ts = {0, WAKEUP_GAP_NS};
  nanosleep(&ts, NULL);
}

enum { wake_total = WAKEUP_WARMUP + WAKEUP_K };

static uv_async_t wake_async;
static _Atomic int64_t wake_posted_at;
static _Atomic int wake_taken;
static int64_t wake_lat[wake_total];
static _Atomic int poster_pinned = 1;

static void wake_cb(uv_async_t* h) {
  int64_t now = mono_ns();
  int k = atomic_load_explicit(&wake_taken, memory_order_relaxed);
  wake_lat[k] = now - atomic_load_explicit(&wake_posted_at, memory_order_relaxed);
  atomic_store_explicit(&wake_taken, k + 1, memory_order_release);
  if (k + 1 == wake_total) uv_close((uv_handle_t*)h, NULL);
}

static void* poster_main(void* arg) {
  (void)arg;
  if (!pin_to(1, "poster")) poster_pinned = 0;
  for (int i = 0; i < wake_total; ++i) {
    sleep_gap();
    atomic_store_explicit(&wake_posted_at, mono_ns(), memory_order_relaxed);
    uv_async_send(&wake_async);
    while (atomic_load_explicit(&wake_taken, memory_order_acquire) <= i)
      cpu_relax();
  }
  return NULL;
}

static int cmp_i64(const void* a, const void* b) {
  int64_t x = *(const int64_t*)a, y = *(const int64_t*)b;
  return x < y ? -1 : x > y;
}

static void wakeup(void) {
  int pinned = pin_to(0, "loop");
  uv_loop_t loop;
  if (uv_loop_init(&loop) != 0) fail("uv_loop_init");
  if (uv_async_init(&loop, &wake_async, wake_cb) != 0) fail("uv_async_init");
  pthread_t poster;
  if (pthread_create(&poster, NULL, poster_main, NULL) != 0) fail("pthread_create");
  uv_run(&loop, UV_RUN_DEFAULT);
  pthread_join(poster, NULL);
  close_loop(&loop);

  int64_t* v = wake_lat + WAKEUP_WARMUP;
  qsort(v, WAKEUP_K, sizeof *v, cmp_i64);
  double median = (double)(v[WAKEUP_K / 2 - 1] + v[WAKEUP_K / 2]) / 2.0;
  double p99 = (double)v[WAKEUP_K * 99 / 100];
  printf("bench=wakeup impl=libuv median_us=%.2f p99_us=%.2f samples=%d pinned=%s\n",
         median / 1000.0, p99 / 1000.0, WAKEUP_K, pinned && poster_pinned ? "yes" : "no");
}

int main(int argc, char** argv) {
  const char* bench = argc > 1 ? argv[1] : "";
  if (strcmp(bench, "timers_cancel") == 0)
    timers_cancel();
  else if (strcmp(bench, "timers_fire") == 0)
    timers_fire();
  else if (strcmp(bench, "callbacks") == 0)
    callbacks();
  else if (strcmp(bench, "wakeup") == 0)
    wakeup();
  else {
    fprintf(stderr, "usage: %s timers_cancel|timers_fire|callbacks|wakeup\n", argv[0]);
    return 2;
  }
  return 0;
}
