// SPDX-License-Identifier: MIT
// eventfd_floor: the floor under cross-thread wake-up latency. No event loop at all: one thread
// blocks in read() on an eventfd, another write()s it. An event loop's wake-up (a post from
// another thread reaching a loop asleep in epoll_wait or io_uring_enter) cannot beat this by
// much, so perf/run holds squall's wake-up median against this median, measured in the same run.
//
//   eventfd_floor wakeup
//
// Prints one line:  bench=wakeup impl=eventfd median_us=.. p99_us=.. samples=5000 pinned=yes
//
// Methodology (the same as the wakeup benchmark of loop_bench.cpp, uv_bench.c, asio_bench.cpp):
//
//   wakeup: the reader (standing in for the loop) runs on the main thread pinned to CPU 0 and
//     blocks in read() on a blocking eventfd; a poster thread pinned to CPU 1 (if pinning fails
//     we go on and say so on stderr). For each sample the poster sleeps ~200 us (so the reader
//     is blocked in read() again), stores now() (CLOCK_MONOTONIC) in a shared atomic and writes
//     1 to the eventfd; when read() returns the reader records now() - that time. The poster
//     then spins until the sample is recorded. 200 warm-up samples are dropped, then K = 5,000
//     are kept; the median and the 99th percentile (sorted[K * 99 / 100]) are printed in
//     microseconds.
//
// The timer and callback benchmarks have no meaning here; only `wakeup` is accepted.
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define WAKEUP_K 5000
#define WAKEUP_WARMUP 200
#define WAKEUP_GAP_NS 200000L

enum { wake_total = WAKEUP_WARMUP + WAKEUP_K };

static int efd = -1;
static _Atomic int64_t wake_posted_at;
static _Atomic int wake_taken;
static int64_t wake_lat[wake_total];
static _Atomic int poster_pinned = 1;

static int64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void fail(const char* what) {
  fprintf(stderr, "eventfd_floor: %s: %s\n", what, strerror(errno));
  exit(1);
}

static int pin_to(int cpu, const char* who) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  int r = pthread_setaffinity_np(pthread_self(), sizeof set, &set);
  if (r != 0) {
    fprintf(stderr, "eventfd_floor: could not pin the %s thread to CPU %d (%s); going on\n", who,
            cpu, strerror(r));
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

static void* poster_main(void* arg) {
  (void)arg;
  if (!pin_to(1, "poster")) poster_pinned = 0;
  for (int i = 0; i < wake_total; ++i) {
    sleep_gap();
    atomic_store_explicit(&wake_posted_at, mono_ns(), memory_order_relaxed);
    uint64_t one = 1;
    if (write(efd, &one, sizeof one) != (ssize_t)sizeof one) fail("eventfd write");
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
  int pinned = pin_to(0, "reader");
  efd = eventfd(0, EFD_CLOEXEC);  // blocking: the reader sleeps in read()
  if (efd < 0) fail("eventfd");
  pthread_t poster;
  if (pthread_create(&poster, NULL, poster_main, NULL) != 0) fail("pthread_create");
  for (int k = 0; k < wake_total; ++k) {
    uint64_t v;
    ssize_t r;
    do
      r = read(efd, &v, sizeof v);
    while (r < 0 && errno == EINTR);
    if (r != (ssize_t)sizeof v) fail("eventfd read");
    int64_t now = mono_ns();
    wake_lat[k] = now - atomic_load_explicit(&wake_posted_at, memory_order_relaxed);
    atomic_store_explicit(&wake_taken, k + 1, memory_order_release);
  }
  pthread_join(poster, NULL);
  close(efd);

  int64_t* v = wake_lat + WAKEUP_WARMUP;
  qsort(v, WAKEUP_K, sizeof *v, cmp_i64);
  double median = (double)(v[WAKEUP_K / 2 - 1] + v[WAKEUP_K / 2]) / 2.0;
  double p99 = (double)v[WAKEUP_K * 99 / 100];
  printf("bench=wakeup impl=eventfd median_us=%.2f p99_us=%.2f samples=%d pinned=%s\n",
         median / 1000.0, p99 / 1000.0, WAKEUP_K, pinned && poster_pinned ? "yes" : "no");
}

int main(int argc, char** argv) {
  const char* bench = argc > 1 ? argv[1] : "";
  if (strcmp(bench, "wakeup") == 0) {
    wakeup();
    return 0;
  }
  fprintf(stderr, "usage: %s wakeup (the eventfd floor has no timer or callback benchmarks)\n",
          argv[0]);
  return 2;
}
