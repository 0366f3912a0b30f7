// SPDX-License-Identifier: MIT
// The executor: blocking work off the loop's thread, its result or exception back on it.
#include "squall/thread_pool.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <stdexcept>
#include <string>
#include <thread>

#include "squall/io_loop.hpp"
#include "test_util.hpp"

using namespace std::chrono_literals;
using squall::io_loop;
using squall::test::run_until;

TEST_CASE("run_in_executor runs the function on a worker and the result on the loop") {
  io_loop loop;
  std::thread::id worker_id, done_id;
  int value = 0;
  loop.run_in_executor(
      [&] {
        worker_id = std::this_thread::get_id();
        return 42;
      },
      [&](squall::result<int> r) {
        done_id = std::this_thread::get_id();
        value = r.get();
      });
  CHECK(run_until(loop, [&] { return value != 0; }));
  CHECK(value == 42);
  CHECK(worker_id != std::this_thread::get_id());
  CHECK(done_id == std::this_thread::get_id());
}

TEST_CASE("an exception thrown by executor work comes back through the result") {
  io_loop loop;
  std::string caught;
  bool done = false;
  loop.run_in_executor([]() -> std::string { throw std::runtime_error("disk on fire"); },
                       [&](squall::result<std::string> r) {
                         CHECK_FALSE(r.has_value());
                         try {
                           r.get();
                         } catch (const std::runtime_error& e) {
                           caught = e.what();
                         }
                         done = true;
                       });
  bool void_done = false;
  loop.run_in_executor([] {},
                       [&](squall::result<void> r) {
                         CHECK(r.has_value());
                         void_done = true;
                       });
  CHECK(run_until(loop, [&] { return done && void_done; }));
  CHECK(caught == "disk on fire");
}

TEST_CASE("blocking executor work does not block the loop") {
  io_loop loop(io_loop::options{.executor_threads = 2});
  std::atomic<bool> release{false};
  bool work_done = false;
  int ticks = 0;
  loop.run_in_executor(
      [&] {
        while (!release)
          std::this_thread::sleep_for(1ms);
      },
      [&](squall::result<void>) { work_done = true; });
  // While the worker blocks, timers keep firing on the loop.
  std::function<void()> tick = [&] {
    if (++ticks == 5)
      release = true;
    else
      loop.call_later(2ms, tick);
  };
  loop.call_later(2ms, tick);
  CHECK(run_until(loop, [&] { return work_done; }));
  CHECK(ticks == 5);
  CHECK(loop.executor().size() == 2);
}

TEST_CASE("thread_pool on its own runs every task; destruction drops queued ones") {
  std::atomic<int> ran{0};
  {
    squall::thread_pool pool(3);
    CHECK(pool.size() == 3);
    for (int i = 0; i < 100; ++i)
      pool.submit([&] { ++ran; });
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (ran < 100 && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(1ms);
    CHECK(ran == 100);
  }
  std::atomic<bool> gate{false};
  std::atomic<int> started{0};
  {
    squall::thread_pool pool(1);
    pool.submit([&] {
      ++started;
      while (!gate)
        std::this_thread::sleep_for(1ms);
    });
    for (int i = 0; i < 10; ++i)
      pool.submit([&] { ++started; });
    while (started == 0)
      std::this_thread::sleep_for(1ms);
    std::thread opener([&] {
      std::this_thread::sleep_for(20ms);
      gate = true;
    });
    opener.detach();
  }  // joins the running task; the 10 queued ones never start
  CHECK(started == 1);
}
