// SPDX-License-Identifier: MIT
// asio_fiber_bench: Boost.Asio's stackful coroutines (boost::asio::spawn, on Boost.Coroutine in
// Boost 1.74) under the fiber benchmarks that perf/run_net compares with squall
// (fiber_bench.cpp) and Boost.Context used directly (ctx_fiber_bench.cpp).
//
//   asio_fiber_bench switch | spawn
//
// Prints one line, e.g.  bench=switch impl=asio-spawn ns_per_op=120.3 n=2000000
//
// The io_context is built with concurrency hint 1 (one thread runs it). spawn() on an
// io_context wraps each coroutine in its own strand: that is what Asio users get.
//
// Methodology (the three files say the same thing, each for its own library):
//
//   Stacks are 256 KiB everywhere (squall's default): boost::coroutines::attributes(256 KiB);
//   Boost.Coroutine's default allocator mallocs them, with no guard page. Times are
//   CLOCK_MONOTONIC, taken around the timed loop only; a short untimed warm-up of the same loop
//   runs first (so pools, caches and lazily-made structures are in their steady state).
//   switch: two coroutines hand control to each other M = 1,000,000 times each. One "switch" is
//     one hand-off; ns per switch = elapsed / (2 M). Asio: each coroutine loops on
//     boost::asio::post(yield): it posts its own resumption through its strand to the
//     io_context and suspends; the io_context then runs the other coroutine's resumption. Like
//     squall's yield, a switch is two context jumps (coroutine -> run() -> coroutine) plus a
//     queue (two: the strand's and the io_context's).
//   spawn: S = 200,000 times, from inside a coroutine: spawn(yield, f) with an empty f. Asio
//     dispatches the child on the parent's strand, which the parent is running, so the child
//     runs to completion inside spawn() (the output says inline=yes when every child had
//     finished by the time spawn() returned): ns per spawn + run + finish, with no join needed.
//     Each spawn allocates the coroutine, its shared state and its malloc'd stack.
#include <time.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/spawn.hpp>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace asio = boost::asio;

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
  std::fprintf(stderr, "asio_fiber_bench: %s\n", what);
  std::exit(1);
}

void print_ns(const char* bench, std::int64_t elapsed, std::uint64_t n, const char* extra) {
  std::printf("bench=%s impl=asio-spawn ns_per_op=%.1f n=%llu%s\n", bench,
              static_cast<double>(elapsed) / static_cast<double>(n),
              static_cast<unsigned long long>(n), extra);
}

// Two coroutines posting their own resumption `rounds` times each; returns the elapsed ns.
std::int64_t ping_pong(std::uint64_t rounds) {
  asio::io_context io(1);
  std::uint64_t count = 0;
  auto body = [&count, rounds](asio::yield_context yield) {
    for (std::uint64_t i = 0; i < rounds; ++i) {
      asio::post(yield);
      ++count;
    }
  };
  boost::coroutines::attributes attrs(stack_size);
  std::int64_t t0 = mono_ns();
  asio::spawn(io, body, attrs);
  asio::spawn(io, body, attrs);
  io.run();
  std::int64_t t1 = mono_ns();
  if (count != 2 * rounds) fail("switch: wrong count");
  return t1 - t0;
}

void bench_switch() {
  ping_pong(warmup);
  print_ns("switch", ping_pong(switch_m), 2 * switch_m, "");
}

void bench_spawn() {
  asio::io_context io(1);
  boost::coroutines::attributes attrs(stack_size);
  std::uint64_t done = 0, inline_done = 0;
  std::int64_t elapsed = 0;
  asio::spawn(
      io,
      [&](asio::yield_context yield) {
        auto child = [&done](asio::yield_context) { ++done; };
        for (std::uint64_t i = 0; i < warmup; ++i)
          asio::spawn(yield, child, attrs);
        std::int64_t t0 = mono_ns();
        for (std::uint64_t i = 0; i < spawn_s; ++i) {
          asio::spawn(yield, child, attrs);
          if (done == warmup + i + 1) ++inline_done;
        }
        elapsed = mono_ns() - t0;
      },
      attrs);
  io.run();
  if (done != warmup + spawn_s) fail("spawn: wrong count");
  print_ns("spawn", elapsed, spawn_s, inline_done == spawn_s ? " inline=yes" : " inline=no");
}

}  // namespace

int main(int argc, char** argv) {
  const char* bench = argc > 1 ? argv[1] : "";
  if (std::strcmp(bench, "switch") == 0) {
    bench_switch();
  } else if (std::strcmp(bench, "spawn") == 0) {
    bench_spawn();
  } else {
    std::fprintf(stderr, "usage: %s switch|spawn\n", argv[0]);
    return 2;
  }
  return 0;
}
