// SPDX-License-Identifier: MIT
// ctx_fiber_bench: Boost.Context's fiber class used directly (no scheduler), under the fiber
// benchmarks that perf/run_net compares with squall (fiber_bench.cpp) and Boost.Asio's stackful
// coroutines (asio_fiber_bench.cpp). It is the floor: a bare context switch and a bare stack.
//
//   ctx_fiber_bench switch | spawn_fixedsize | spawn_protected | spawn_pooled
//
// Prints one line, e.g.  bench=switch impl=boost.context ns_per_op=4.5 n=2000000
//
// Methodology (the three files say the same thing, each for its own library):
//
//   Stacks are 256 KiB everywhere (squall's default). Times are CLOCK_MONOTONIC, taken around
//   the timed loop only; a short untimed warm-up of the same loop runs first (so pools, caches
//   and lazily-made structures are in their steady state; here: 10,000 switches, or 1/20 of the
//   spawns).
//   switch: two contexts hand control to each other M = 1,000,000 times each. One "switch" is
//     one hand-off; ns per switch = elapsed / (2 M). Boost.Context: the main context resumes a
//     fiber that resumes it straight back (fiber::resume() both ways): one jump_fcontext per
//     switch, no queue, no scheduler.
//   spawn_*: S = 200,000 times (20,000 for protected, which is ~100x slower): create a fiber whose
//   function returns at once, resume it (it
//     runs and finishes; its stack is freed). ns per create + run + finish: two jumps plus the
//     stack allocator's work. fixedsize: malloc'd stack, no guard page (glibc serves 256 KiB
//     from the heap once its mmap threshold has adapted). protected: mmap + mprotect of a guard
//     page + munmap for every fiber (the same safety as squall's guard-paged stacks, without
//     squall's pool). pooled: pooled_fixedsize_stack, a free list of unguarded stacks (the
//     same reuse as squall's pool, without the guard page).
#include <time.h>

#include <boost/context/fiber.hpp>
#include <boost/context/fixedsize_stack.hpp>
#include <boost/context/pooled_fixedsize_stack.hpp>
#include <boost/context/protected_fixedsize_stack.hpp>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <utility>

namespace ctx = boost::context;

namespace {

constexpr std::uint64_t switch_m = 1'000'000;
constexpr std::uint64_t spawn_s = 200'000;
constexpr std::uint64_t warmup = 10'000;
constexpr std::size_t stack_size = 256 * 1024;

std::int64_t mono_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "ctx_fiber_bench: %s\n", what);
  std::exit(1);
}

void print_ns(const char* bench, std::int64_t elapsed, std::uint64_t n) {
  std::printf("bench=%s impl=boost.context ns_per_op=%.1f n=%llu\n", bench,
              static_cast<double>(elapsed) / static_cast<double>(n),
              static_cast<unsigned long long>(n));
}

// The main context and a fiber resume each other `rounds` times; returns the elapsed ns.
std::int64_t ping_pong(std::uint64_t rounds) {
  std::uint64_t count = 0;
  bool stop = false;
  ctx::fiber f{std::allocator_arg, ctx::fixedsize_stack(stack_size),
               [&count, &stop](ctx::fiber&& main) {
                 while (!stop) {
                   ++count;
                   main = std::move(main).resume();
                 }
                 return std::move(main);
               }};
  std::int64_t t0 = mono_ns();
  for (std::uint64_t i = 0; i < rounds; ++i)
    f = std::move(f).resume();
  std::int64_t t1 = mono_ns();
  stop = true;
  f = std::move(f).resume();  // lets the fiber return; its stack is freed
  if (count != rounds || f) fail("switch: wrong count");
  return t1 - t0;
}

void bench_switch() {
  ping_pong(warmup);
  print_ns("switch", ping_pong(switch_m), 2 * switch_m);
}

template <class Alloc>
std::int64_t spawn_loop(Alloc& alloc, std::uint64_t n, std::uint64_t& done) {
  std::int64_t t0 = mono_ns();
  for (std::uint64_t i = 0; i < n; ++i) {
    ctx::fiber f{std::allocator_arg, alloc, [&done](ctx::fiber&& caller) {
                   ++done;
                   return std::move(caller);
                 }};
    f = std::move(f).resume();
    if (f) fail("spawn: the fiber did not finish");
  }
  return mono_ns() - t0;
}

template <class Alloc>
void bench_spawn(const char* name, Alloc alloc, std::uint64_t n) {
  std::uint64_t done = 0;
  spawn_loop(alloc, n / 20, done);
  std::int64_t elapsed = spawn_loop(alloc, n, done);
  if (done != n / 20 + n) fail("spawn: wrong count");
  print_ns(name, elapsed, n);
}

}  // namespace

int main(int argc, char** argv) {
  const char* bench = argc > 1 ? argv[1] : "";
  if (std::strcmp(bench, "switch") == 0) {
    bench_switch();
  } else if (std::strcmp(bench, "spawn_fixedsize") == 0) {
    bench_spawn("spawn_fixedsize", ctx::fixedsize_stack(stack_size), spawn_s);
  } else if (std::strcmp(bench, "spawn_protected") == 0) {
    bench_spawn("spawn_protected", ctx::protected_fixedsize_stack(stack_size), spawn_s / 10);
  } else if (std::strcmp(bench, "spawn_pooled") == 0) {
    bench_spawn("spawn_pooled", ctx::pooled_fixedsize_stack(stack_size), spawn_s);
  } else {
    std::fprintf(stderr, "usage: %s switch|spawn_fixedsize|spawn_protected|spawn_pooled\n",
                 argv[0]);
    return 2;
  }
  return 0;
}
