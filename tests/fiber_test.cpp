// SPDX-License-Identifier: MIT
// Fibers: spawn/join, values and exceptions, sleep/yield, cancellation, deadlines, executor
// waits, dumps, stack limits and overflow, and what loop shutdown does to live fibers.
#include "squall/fiber.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <cstdio>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "squall/locks.hpp"
#include "squall/log.hpp"
#include "test_util.hpp"

using namespace std::chrono_literals;
using squall::io_loop;
using squall::run_sync;
using squall::spawn;
using squall::test::code_of;
using squall::test::log_capture;
namespace this_fiber = squall::this_fiber;

namespace {

// Runs the crash helper (tests/fiber_crash_helper.cpp) and returns its exit status and output.
struct child_result {
  int status = -1;
  std::string output;
};
[[maybe_unused]] child_result run_helper(const std::string& mode) {
  std::string cmd = std::string(SQUALL_CRASH_HELPER) + " " + mode + " 2>&1";
  child_result r;
  FILE* p = ::popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  char buf[4096];
  while (std::size_t n = std::fread(buf, 1, sizeof buf, p))
    r.output.append(buf, n);
  r.status = ::pclose(p);
  return r;
}

}  // namespace

TEST_CASE("a spawned fiber starts on a later iteration and join returns its value") {
  io_loop loop;
  bool started = false;
  auto f = spawn(loop, [&] {
    started = true;
    return std::string("done");
  });
  CHECK_FALSE(started);  // not inside spawn()
  CHECK(f.name() == "fiber-" + std::to_string(f.id()));
  std::string v = run_sync(loop, [&] { return f.join(); });
  CHECK(started);
  CHECK(v == "done");
  CHECK(squall::fiber_count(loop) == 0);
}

TEST_CASE("fiber records start on a cache line, whatever their result type") {
  // The loop prefetches a record's first line before resuming its fiber; the records are
  // allocated by detail::line_aligned_new, not by aligned new.
  struct big {
    char bytes[300];
  };
  io_loop loop;
  std::vector<std::uintptr_t> seen;
  auto where = [&] {
    seen.push_back(reinterpret_cast<std::uintptr_t>(squall::detail::current_fiber()));
  };
  std::vector<squall::fiber<int>> ints;
  std::vector<squall::fiber<std::string>> strings;
  std::vector<squall::fiber<big>> bigs;
  for (int i = 0; i < 50; ++i) {
    ints.push_back(spawn(loop, [&, i] {
      where();
      return i;
    }));
    strings.push_back(spawn(loop, [&, i] {
      where();
      return std::string(40 + i, 'x');
    }));
    bigs.push_back(spawn(loop, [&] {
      where();
      return big{};
    }));
  }
  run_sync(loop, [&] {
    for (int i = 0; i < 50; ++i) {
      CHECK(ints[i].join() == i);
      CHECK(strings[i].join().size() == std::size_t(40 + i));
      bigs[i].join();
    }
  });
  REQUIRE(seen.size() == 150);
  for (std::uintptr_t p : seen)
    CHECK(p % 64 == 0);
}

TEST_CASE("fibers join fibers, and an exception crosses join with its type") {
  io_loop loop;
  auto leaf =
      spawn(loop, []() -> int { throw std::out_of_range("leaf failed"); }, {.name = "leaf"});
  auto middle = spawn(loop, [&] {
    try {
      return leaf.join();
    } catch (const std::out_of_range& e) {
      return static_cast<int>(std::string(e.what()).size());
    }
  });
  int r = run_sync(loop, [&] { return middle.join() * 2; });
  CHECK(r == 2 * static_cast<int>(std::string("leaf failed").size()));
  CHECK(leaf.name() == "leaf");
}

TEST_CASE("an exception in a fiber nobody joins is logged with the fiber's name") {
  log_capture logs;
  io_loop loop;
  spawn(loop, [] { throw std::runtime_error("lonely failure"); }, {.name = "orphan"}).detach();
  squall::test::run_until(loop, [&] { return squall::fiber_count(loop) == 0; });
  CHECK(logs.contains("Exception in fiber 'orphan'"));
  CHECK(logs.contains("lonely failure"));
}

TEST_CASE("fibers that wait inside catch blocks each keep their own exception") {
  // The first fiber's catch ends first, while the second is still inside its own: with one
  // exception stack for the thread, ending the first catch would end (and free) the second's
  // exception, and the second's rethrow would find the first's.
  io_loop loop;
  auto in_catch = [](std::string name, std::chrono::milliseconds wait) {
    try {
      try {
        throw std::runtime_error(name);
      } catch (const std::exception& e) {
        this_fiber::sleep_for(wait);  // another fiber enters and leaves its catch meanwhile
        CHECK(std::string(e.what()) == name);
        CHECK(std::uncaught_exceptions() == 0);
        throw;
      }
    } catch (const std::runtime_error& again) {
      return std::string(again.what());
    }
  };
  auto [first, second] = run_sync(loop, [&] {
    auto a = spawn([&] { return in_catch("first", 5ms); });
    this_fiber::sleep_for(1ms);
    auto b = spawn([&] { return in_catch("second", 20ms); });
    return std::pair(a.join(), b.join());
  });
  CHECK(first == "first");
  CHECK(second == "second");

  // A fiber that waits in a destructor while an exception unwinds it has one exception in
  // flight; the fibers that run meanwhile have none.
  struct waits_on_unwind {
    ~waits_on_unwind() {
      CHECK(std::uncaught_exceptions() == 1);
      this_fiber::sleep_for(10ms);
      CHECK(std::uncaught_exceptions() == 1);
    }
  };
  int seen_elsewhere = -1;
  run_sync(loop, [&] {
    auto unwinding = spawn([] {
      waits_on_unwind w;
      throw std::runtime_error("unwinding");
    });
    this_fiber::sleep_for(2ms);
    seen_elsewhere = std::uncaught_exceptions();
    CHECK_THROWS_WITH(unwinding.join(), "unwinding");
  });
  CHECK(seen_elsewhere == 0);
}

TEST_CASE("sleeping fibers wake in deadline order; yield interleaves fibers") {
  io_loop loop;
  std::vector<int> order;
  auto a = spawn(loop, [&] {
    this_fiber::sleep_for(30ms);
    order.push_back(30);
  });
  auto b = spawn(loop, [&] {
    this_fiber::sleep_for(10ms);
    order.push_back(10);
  });
  auto c = spawn(loop, [&] {
    this_fiber::sleep_for(20ms);
    order.push_back(20);
  });
  run_sync(loop, [&] {
    a.join();
    b.join();
    c.join();
  });
  CHECK(order == std::vector<int>{10, 20, 30});

  std::string trace;
  auto x = spawn(loop, [&] {
    for (int i = 0; i < 3; ++i) {
      trace += 'x';
      this_fiber::yield();
    }
  });
  auto y = spawn(loop, [&] {
    for (int i = 0; i < 3; ++i) {
      trace += 'y';
      this_fiber::yield();
    }
  });
  run_sync(loop, [&] {
    x.join();
    y.join();
  });
  CHECK(trace == "xyxyxy");
}

TEST_CASE("cancelling a fiber ends its wait with error::cancelled and runs its destructors") {
  io_loop loop;
  int destroyed = 0;
  struct guard {
    int& n;
    ~guard() { ++n; }
  };
  auto sleeper = spawn(loop, [&] {
    guard g{destroyed};
    this_fiber::sleep_for(1h);
  });
  auto f = run_sync(loop, [&] {
    this_fiber::sleep_for(5ms);  // let it reach its wait
    sleeper.cancel();
    return code_of([&] { sleeper.join(); });
  });
  CHECK(f == squall::error::cancelled);
  CHECK(destroyed == 1);

  bool ran = false;
  auto never = spawn(loop, [&] { ran = true; });
  never.cancel();  // before it started: it never runs
  CHECK(run_sync(loop, [&] { return code_of([&] { never.join(); }); }) == squall::error::cancelled);
  CHECK_FALSE(ran);
}

TEST_CASE("a caught cancellation lets the fiber go on; the next wait is not cancelled") {
  io_loop loop;
  auto f = spawn(loop, [&] {
    auto ec = code_of([] { this_fiber::sleep_for(1h); });
    this_fiber::sleep_for(1ms);  // works again
    return ec;
  });
  auto ec = run_sync(loop, [&] {
    this_fiber::yield();
    f.cancel();
    return f.join();
  });
  CHECK(ec == squall::error::cancelled);
}

TEST_CASE("deadlines: per wait, per block with deadline_scope (earliest wins), with_timeout") {
  io_loop loop;
  run_sync(loop, [&] {
    squall::event never;
    auto t0 = io_loop::now();
    CHECK(code_of([&] { never.wait(io_loop::now() + 20ms); }) == squall::error::timed_out);
    CHECK(io_loop::now() - t0 >= 20ms);

    CHECK(code_of([&] {
            squall::deadline_scope outer(30ms);
            squall::deadline_scope inner(1h);  // later than outer: outer still applies
            this_fiber::sleep_for(1h);
          }) == squall::error::timed_out);
    CHECK(io_loop::now() - t0 < 10s);

    // The scope is gone: the same sleep now completes.
    this_fiber::sleep_for(1ms);

    CHECK(code_of([&] { squall::with_timeout(10ms, [&] { never.wait(); }); }) ==
          squall::error::timed_out);
    // A deadline already in the past fails at once, without waiting.
    CHECK(code_of([&] { never.wait(io_loop::now() - 1s); }) == squall::error::timed_out);
  });
}

TEST_CASE("a fiber's deadline timer is re-armed lazily, and every deadline still holds") {
  io_loop loop;
  run_sync(loop, [&] {
    squall::event e;
    // Waits whose deadline moves later each time (an idle timeout): one timer, armed once.
    std::size_t before = loop.timer_count();
    for (int i = 0; i < 1000; ++i) {
      loop.add_callback([&] { e.set(); });
      e.wait(io_loop::now() + 1h);
      e.clear();
      CHECK(loop.timer_count() == before + 1);
    }
    // An earlier deadline than the armed one still fires on time.
    auto t0 = io_loop::now();
    CHECK(code_of([&] { e.wait(io_loop::now() + 20ms); }) == squall::error::timed_out);
    CHECK(io_loop::now() - t0 >= 20ms);
    CHECK(io_loop::now() - t0 < 1h);
    // A wait woken well before its deadline leaves the timer armed for that deadline; a
    // later wait must not time out when it fires, only at its own deadline.
    loop.call_later(5ms, [&] { e.set(); });
    CHECK(code_of([&] { e.wait(io_loop::now() + 50ms); }) == std::error_code{});
    e.clear();
    t0 = io_loop::now();
    CHECK(code_of([&] { e.wait(t0 + 200ms); }) == squall::error::timed_out);
    CHECK(io_loop::now() - t0 >= 200ms);
    // The same, woken by a set after the early timer has fired: no timeout at all.
    loop.call_later(5ms, [&] { e.set(); });
    CHECK(code_of([&] { e.wait(io_loop::now() + 20ms); }) == std::error_code{});
    e.clear();
    loop.call_later(60ms, [&] { e.set(); });
    CHECK(code_of([&] { e.wait(io_loop::now() + 1s); }) == std::error_code{});
  });
  // The fiber is gone, and so is its timer.
  CHECK(loop.timer_count() == 0);
}

TEST_CASE("join with a deadline times out while the fiber keeps running") {
  io_loop loop;
  auto slow = spawn(loop, [] {
    this_fiber::sleep_for(50ms);
    return 7;
  });
  auto r = run_sync(loop, [&] {
    auto ec = code_of([&] { slow.join(io_loop::now() + 5ms); });
    CHECK(ec == squall::error::timed_out);
    return slow.join();
  });
  CHECK(r == 7);
}

TEST_CASE("a fiber waits for executor work without blocking the loop") {
  io_loop loop;
  std::atomic<int> ticks{0};
  squall::timer_handle th;
  std::function<void()> tick = [&] {
    ++ticks;
    th = loop.call_later(1ms, tick);
  };
  th = loop.call_later(1ms, tick);
  // The worker returns once the loop has ticked five times while it ran (a blocked loop never
  // would: it gives up after 10 s), not after a fixed 30 ms that a stalled loop could miss.
  auto v = run_sync(loop, [&] {
    return this_fiber::run_in_executor([&] {
      auto until = std::chrono::steady_clock::now() + 10s;
      while (ticks < 5 && std::chrono::steady_clock::now() < until)
        std::this_thread::sleep_for(1ms);
      return 99;
    });
  });
  th.cancel();
  CHECK(v == 99);
  CHECK(ticks >= 5);  // the loop kept running while the worker waited
  auto ec = run_sync(loop, [&] {
    return code_of([] {
      this_fiber::run_in_executor(
          []() -> int { throw std::system_error(EIO, std::system_category()); });
    });
  });
  CHECK(ec == std::error_code(EIO, std::system_category()));
  // A wait that times out drops the late result without touching the fiber.
  auto late = run_sync(loop, [&] {
    return code_of([] {
      this_fiber::run_in_executor(
          [] {
            std::this_thread::sleep_for(30ms);
            return 1;
          },
          io_loop::now() + 5ms);
    });
  });
  CHECK(late == squall::error::timed_out);
  std::this_thread::sleep_for(40ms);
  loop.run_once(10ms);  // the late result arrives and is dropped
}

TEST_CASE("dump_fibers names each live fiber and what it waits for") {
  io_loop loop;
  squall::event ev;
  auto a = spawn(loop, [&] { ev.wait(); }, {.name = "waits-for-event"});
  auto b = spawn(loop, [&] { this_fiber::sleep_for(1h); }, {.name = "sleepy"});
  std::string dump;
  run_sync(loop, [&] {
    this_fiber::yield();
    dump = squall::dump_fibers(loop);
    ev.set();
    b.cancel();
  });
  CHECK(dump.find("waits-for-event: waiting on event") != std::string::npos);
  CHECK(dump.find("sleepy: waiting on sleep") != std::string::npos);
  CHECK(dump.find("running") != std::string::npos);  // the run_sync fiber itself
  squall::test::run_until(loop, [&] { return a.done() && b.done(); });
}

TEST_CASE("destroying a loop cancels its live fibers and unwinds their stacks") {
  int destroyed = 0;
  bool started_late = false;
  struct guard {
    int& n;
    ~guard() { ++n; }
  };
  {
    io_loop loop;
    squall::event never;
    spawn(loop, [&] {
      guard g{destroyed};
      never.wait();
    }).detach();
    spawn(loop, [&] {
      guard g{destroyed};
      // Swallows the cancellation and waits again: shutdown must unwind it anyway.
      try {
        this_fiber::sleep_for(1h);
      } catch (const std::system_error&) {
      }
      this_fiber::sleep_for(1h);
    }).detach();
    loop.run_once(0ms);
    spawn(loop, [&] { started_late = true; }).detach();  // never started
    CHECK(squall::fiber_count(loop) == 3);
  }
  CHECK(destroyed == 2);
  CHECK_FALSE(started_late);
}

TEST_CASE("stack settings: per fiber and per loop; tiny stacks are refused") {
  io_loop loop;
  auto cfg = squall::get_fiber_config(loop);
  CHECK(cfg.stack_size == 256 * 1024);
  CHECK(cfg.guard_page);
  cfg.stack_size = 64 * 1024;
  squall::set_fiber_config(loop, cfg);
  auto deep = spawn(loop,
                    [] {
                      // Uses ~200 KiB of stack: fits the 512 KiB this fiber asked for.
                      volatile char big[200 * 1024];
                      big[0] = 1;
                      big[sizeof big - 1] = 2;
                      return big[0] + big[sizeof big - 1];
                    },
                    {.name = "big-stack", .stack_size = 512 * 1024});
  CHECK(run_sync(loop, [&] { return deep.join(); }) == 3);
  cfg.stack_size = 1024;
  CHECK_THROWS_AS(squall::set_fiber_config(loop, cfg), std::invalid_argument);
}

#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
// Sanitizers own SIGSEGV and the address space layout, so these run in the plain build only.
TEST_CASE("a stack overflow hits the guard page and names the fiber before the process dies") {
  auto r = run_helper("overflow");
  CHECK(r.output.find("fiber stack overflow in fiber 'recurse-forever'") != std::string::npos);
  CHECK(r.status != 0);
}

TEST_CASE("running out of kernel mappings for stacks is a clear error, not a crash") {
  auto r = run_helper("map-limit");
  INFO(r.output);
  CHECK(r.status == 0);
  CHECK(r.output.find("max_map_count") != std::string::npos);
  CHECK(r.output.find("spawned ") != std::string::npos);
}
#endif
