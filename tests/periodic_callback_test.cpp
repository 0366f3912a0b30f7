// SPDX-License-Identifier: MIT
// periodic_callback: fires on a fixed grid, skips missed ticks, stops from inside, jitters.
#include "squall/periodic_callback.hpp"

#include <doctest/doctest.h>

#include <thread>
#include <vector>

#include "test_util.hpp"

using namespace std::chrono_literals;
using squall::io_loop;
using squall::test::loop_is_clean;
using squall::test::run_until;

TEST_CASE("periodic_callback fires every interval until stopped from inside the callback") {
  io_loop loop;
  std::vector<squall::time_point> at;
  auto start = io_loop::now();
  squall::periodic_callback* self = nullptr;
  squall::periodic_callback pc(loop, 10ms, [&] {
    at.push_back(io_loop::now());
    if (at.size() == 5) self->stop();
  });
  self = &pc;
  pc.start();
  CHECK(pc.is_running());
  CHECK(run_until(loop, [&] { return !pc.is_running(); }));
  for (int i = 0; i < 5; ++i)
    loop.run_once(5ms);
  REQUIRE(at.size() == 5);
  // Never early: tick k is due at start + (k+1) * interval.
  for (std::size_t k = 0; k < at.size(); ++k)
    CHECK(at[k] - start >= (k + 1) * 10ms);
  CHECK(loop_is_clean(loop));
}

TEST_CASE("periodic_callback does not drift: a slow callback keeps the grid") {
  // A loop woken 20 ms late skips a tick, rightly, and one stalled 70 ms puts the 10th call
  // late: on a loaded machine either can happen once, so the run is tried up to three times.
  // Drift fails every try: each call costs 28 ms, which puts the 10th at 280 ms or later.
  bool on_grid = false;
  for (int attempt = 0; attempt < 3 && !on_grid; ++attempt) {
    io_loop loop;
    std::vector<squall::time_point> at;
    auto start = io_loop::now();
    squall::periodic_callback pc(loop, 20ms, [&] {
      at.push_back(io_loop::now());
      std::this_thread::sleep_for(8ms);  // 40% of the interval, every time
    });
    pc.start();
    REQUIRE(run_until(loop, [&] { return at.size() >= 10; }));
    pc.stop();
    // With drift, the 10th call would come at >= 10 * 28 ms; on the grid it comes at ~200 ms.
    CHECK(at[9] - start >= 200ms);
    on_grid = at[9] - start < 270ms && pc.skipped_ticks() == 0;
  }
  CHECK(on_grid);
}

TEST_CASE("periodic_callback skips ticks the loop missed instead of bursting") {
  io_loop loop;
  int calls = 0;
  squall::periodic_callback pc(loop, 10ms, [&] {
    if (++calls == 1) std::this_thread::sleep_for(55ms);  // overruns five ticks
  });
  pc.start();
  CHECK(run_until(loop, [&] { return calls >= 2; }));
  auto after_second = io_loop::now();
  int at_second = calls;
  // No burst: the next call waits for the next grid point.
  CHECK(run_until(loop, [&] { return calls >= at_second + 1; }));
  CHECK(io_loop::now() - after_second >= 1ms);
  CHECK(pc.skipped_ticks() >= 4);
  pc.stop();
}

TEST_CASE("periodic_callback jitter stays within half the jitter fraction of the grid") {
  io_loop loop;
  std::vector<squall::time_point> at;
  auto start = io_loop::now();
  squall::periodic_callback pc(
      loop, 20ms, [&] { at.push_back(io_loop::now()); }, 0.5);
  auto any_early = [&] {
    for (std::size_t k = 0; k < at.size(); ++k)
      if (at[k] < start + (k + 1) * 20ms) return true;
    return false;
  };
  pc.start();
  // A tick lands early only when its draw is earlier than the loop's wake-up is late, so about
  // half of them do: eight ticks all on time came about once in a hundred runs on a slow VM.
  // Up to 40 ticks (0.8 s) makes a jitter that works fail this with odds near 1e-10.
  CHECK(run_until(loop, [&] { return (at.size() >= 8 && any_early()) || at.size() >= 40; }));
  pc.stop();
  for (std::size_t k = 0; k < at.size(); ++k) {
    auto grid = start + (k + 1) * 20ms;
    CHECK(at[k] >= grid - 5ms - 1ms);  // jitter 0.5 moves a tick by at most +-5 ms
  }
  CHECK(at.size() >= 8);
  CHECK(any_early());  // without jitter no tick is ever early
  CHECK_THROWS_AS(squall::periodic_callback(loop, 0ms, [] {}), std::invalid_argument);
  CHECK_THROWS_AS(squall::periodic_callback(
                      loop, 1ms, [] {}, 2.0),
                  std::invalid_argument);
}
