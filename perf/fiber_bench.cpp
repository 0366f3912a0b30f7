// SPDX-License-Identifier: MIT
// fiber_bench: the cost of squall's fibers, which perf/run_net compares with Boost.Context used
// directly (ctx_fiber_bench.cpp) and Boost.Asio's stackful coroutines (asio_fiber_bench.cpp).
//
//   fiber_bench switch | spawn
//
// The backend is whatever the loop picks (SQUALL_BACKEND=io_uring|epoll); the impl name printed
// is "squall-" + loop.backend_name(). Prints one line, e.g.
//   bench=switch impl=squall-epoll ns_per_op=45.6 n=2000000
//
// Methodology (the three files say the same thing, each for its own library):
//
//   Stacks are 256 KiB everywhere (squall's default). Times are CLOCK_MONOTONIC, taken around
//   the timed loop only; a short untimed warm-up of the same loop runs first (so pools, caches
//   and lazily-made structures are in their steady state).
//   switch: two fibers hand control to each other M = 1,000,000 times each. One "switch" is one
//     hand-off from one fiber to the other; ns per switch = elapsed / (2 M). squall: each fiber
//     loops on this_fiber::yield(); a yield queues the fiber's resumption as a loop callback and
//     jumps to the loop's stack, and the loop then runs the other fiber's queued resumption. So
//     a squall switch is two context jumps (fiber -> loop -> fiber) plus a trip through the
//     loop's callback queue (and the loop's backend poll between callback batches): that is
//     the price of a scheduler, which Boost.Context's bare resume does not have.
//   spawn: S = 200,000 times, from inside a fiber: spawn an empty fiber and join it. ns per
//     spawn + join. squall: the child starts on a later loop iteration, so this is stack from the
//     loop's pool + record allocation + two switches for the child + the join's wait and wake.
#include <time.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "squall/fiber.hpp"
#include "squall/io_loop.hpp"

namespace {

constexpr std::uint64_t switch_m = 1'000'000;
constexpr std::uint64_t spawn_s = 200'000;
constexpr std::uint64_t warmup = 10'000;

std::int64_t mono_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "fiber_bench: %s\n", what);
  std::exit(1);
}

std::string impl_name(squall::io_loop& loop) {
  return std::string("squall-") + loop.backend_name();
}

void print_ns(const char* bench, squall::io_loop& loop, std::int64_t elapsed, std::uint64_t n) {
  std::printf("bench=%s impl=%s ns_per_op=%.1f n=%llu\n", bench, impl_name(loop).c_str(),
              static_cast<double>(elapsed) / static_cast<double>(n),
              static_cast<unsigned long long>(n));
}

void set_stacks(squall::io_loop& loop) {
  squall::fiber_config cfg = squall::get_fiber_config(loop);
  cfg.stack_size = 256 * 1024;
  squall::set_fiber_config(loop, cfg);
}

// Two fibers yielding to each other `rounds` times each; returns the elapsed ns.
std::int64_t ping_pong(squall::io_loop& loop, std::uint64_t rounds) {
  std::uint64_t count = 0;
  auto body = [&count, rounds] {
    for (std::uint64_t i = 0; i < rounds; ++i) {
      squall::this_fiber::yield();
      ++count;
    }
  };
  std::int64_t t0 = mono_ns();
  auto a = squall::spawn(loop, body);
  auto b = squall::spawn(loop, body);
  while (!a.done() || !b.done())
    loop.run_once();
  std::int64_t t1 = mono_ns();
  a.join();
  b.join();
  if (count != 2 * rounds) fail("switch: wrong count");
  return t1 - t0;
}

void bench_switch() {
  squall::io_loop loop;
  set_stacks(loop);
  ping_pong(loop, warmup);
  std::int64_t elapsed = ping_pong(loop, switch_m);
  print_ns("switch", loop, elapsed, 2 * switch_m);
}

void bench_spawn() {
  squall::io_loop loop;
  set_stacks(loop);
  std::int64_t elapsed = squall::run_sync(loop, [&loop] {
    std::uint64_t done = 0;
    for (std::uint64_t i = 0; i < warmup; ++i)
      squall::spawn(loop, [&done] { ++done; }).join();
    std::int64_t t0 = mono_ns();
    for (std::uint64_t i = 0; i < spawn_s; ++i)
      squall::spawn(loop, [&done] { ++done; }).join();
    std::int64_t t1 = mono_ns();
    if (done != warmup + spawn_s) fail("spawn: wrong count");
    return t1 - t0;
  });
  print_ns("spawn", loop, elapsed, spawn_s);
}

}  // namespace

int main(int argc, char** argv) {
  const char* bench = argc > 1 ? argv[1] : "";
  if (std::strcmp(bench, "switch") == 0)
    bench_switch();
  else if (std::strcmp(bench, "spawn") == 0)
    bench_spawn();
  else {
    std::fprintf(stderr, "usage: %s switch|spawn\n", argv[0]);
    return 2;
  }
  return 0;
}
