// SPDX-License-Identifier: MIT
// Fiber sync primitives: event, condition, semaphore, mutex, and queue.
#include "squall/locks.hpp"

#include <doctest/doctest.h>

#include <mutex>
#include <string>
#include <vector>

#include "squall/queue.hpp"
#include "test_util.hpp"

using namespace std::chrono_literals;
using squall::io_loop;
using squall::run_sync;
using squall::spawn;
using squall::test::code_of;
namespace this_fiber = squall::this_fiber;

TEST_CASE("event: set wakes every waiter; a set event does not block; clear re-arms it") {
  io_loop loop;
  squall::event ev;
  int woken = 0;
  std::vector<squall::fiber<void>> fs;
  for (int i = 0; i < 3; ++i)
    fs.push_back(spawn(loop, [&] {
      ev.wait();
      ++woken;
    }));
  run_sync(loop, [&] {
    this_fiber::yield();
    CHECK(woken == 0);
    ev.set();
    for (auto& f : fs)
      f.join();
    CHECK(woken == 3);
    ev.wait();  // set: returns at once
    ev.clear();
    CHECK(code_of([&] { ev.wait(io_loop::now() + 5ms); }) == squall::error::timed_out);
  });
}

TEST_CASE("condition: notify_one wakes the longest waiter, notify_all the rest") {
  io_loop loop;
  squall::condition cond;
  std::vector<int> order;
  std::vector<squall::fiber<void>> fs;
  for (int i = 0; i < 3; ++i)
    fs.push_back(spawn(loop, [&, i] {
      cond.wait();
      order.push_back(i);
    }));
  run_sync(loop, [&] {
    this_fiber::yield();
    CHECK(cond.waiting() == 3);
    cond.notify_one();
    this_fiber::sleep_for(1ms);
    CHECK(order == std::vector<int>{0});
    cond.notify_all();
    for (auto& f : fs)
      f.join();
    CHECK(order == std::vector<int>{0, 1, 2});
    CHECK(cond.waiting() == 0);
    CHECK(code_of([&] { cond.wait(io_loop::now() + 2ms); }) == squall::error::timed_out);
    CHECK(cond.waiting() == 0);  // the timed-out waiter left the list
  });
}

TEST_CASE("semaphore: bounds concurrency, serves waiters FIFO, and a release is not stolen") {
  io_loop loop;
  squall::semaphore sem(2);
  int inside = 0, max_inside = 0;
  std::vector<int> entered;
  std::vector<squall::fiber<void>> fs;
  for (int i = 0; i < 6; ++i)
    fs.push_back(spawn(loop, [&, i] {
      sem.acquire();
      entered.push_back(i);
      ++inside;
      max_inside = std::max(max_inside, inside);
      this_fiber::sleep_for(2ms);
      --inside;
      sem.release();
    }));
  run_sync(loop, [&] {
    for (auto& f : fs)
      f.join();
  });
  CHECK(max_inside == 2);
  CHECK(entered == std::vector<int>{0, 1, 2, 3, 4, 5});
  CHECK(sem.value() == 2);

  // Handoff: after a release to a waiter, try_acquire by someone else fails.
  squall::semaphore one(0);
  bool waiter_got = false;
  auto w = spawn(loop, [&] {
    one.acquire();
    waiter_got = true;
  });
  run_sync(loop, [&] {
    this_fiber::yield();
    one.release();
    CHECK_FALSE(one.try_acquire());  // the unit belongs to the waiter
    w.join();
  });
  CHECK(waiter_got);
  CHECK(one.value() == 0);
}

TEST_CASE("semaphore: a waiter that times out or is cancelled gives up its place") {
  io_loop loop;
  squall::semaphore sem(0);
  auto cancelled = spawn(loop, [&] { sem.acquire(); });
  run_sync(loop, [&] {
    CHECK(code_of([&] { sem.acquire(io_loop::now() + 3ms); }) == squall::error::timed_out);
    cancelled.cancel();
    CHECK(code_of([&] { cancelled.join(); }) == squall::error::cancelled);
    sem.release();
    CHECK(sem.value() == 1);  // nobody left waiting: the unit stays
  });
}

TEST_CASE("mutex: std::lock_guard keeps fibers out of a critical section that yields") {
  io_loop loop;
  squall::mutex mu;
  std::string trace;
  std::vector<squall::fiber<void>> fs;
  for (char c : std::string("abc"))
    fs.push_back(spawn(loop, [&, c] {
      std::lock_guard<squall::mutex> g(mu);
      trace += c;
      this_fiber::yield();
      this_fiber::yield();
      trace += c;
    }));
  run_sync(loop, [&] {
    for (auto& f : fs)
      f.join();
  });
  CHECK(trace == "aabbcc");
  CHECK_FALSE(mu.locked());
}

TEST_CASE("queue: bounded put waits for room, get waits for items, order is FIFO") {
  io_loop loop;
  squall::queue<int> q(2);
  std::vector<int> got;
  auto producer = spawn(loop, [&] {
    for (int i = 0; i < 10; ++i)
      q.put(i);
  });
  auto consumer = spawn(loop, [&] {
    for (int i = 0; i < 10; ++i) {
      got.push_back(q.get());
      CHECK(q.size() <= 2);
      if (i % 3 == 0) this_fiber::sleep_for(1ms);
    }
  });
  run_sync(loop, [&] {
    producer.join();
    consumer.join();
  });
  CHECK(got == std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  CHECK(q.empty());
}

TEST_CASE("queue: try_put/try_get never wait; timeouts and cancellation lose no item") {
  io_loop loop;
  squall::queue<std::string> q(1);
  CHECK(q.try_put("a"));
  CHECK_FALSE(q.try_put("b"));
  CHECK(q.full());
  run_sync(loop, [&] {
    CHECK(code_of([&] { q.put("c", io_loop::now() + 2ms); }) == squall::error::timed_out);
    CHECK(q.size() == 1);
    CHECK(*q.try_get() == "a");
    CHECK_FALSE(q.try_get().has_value());
    CHECK(code_of([&] { q.get(io_loop::now() + 2ms); }) == squall::error::timed_out);
  });
  // A getter cancelled while waiting must not swallow the next item.
  auto g1 = spawn(loop, [&] { return q.get(); });
  auto g2 = spawn(loop, [&] { return q.get(); });
  run_sync(loop, [&] {
    this_fiber::yield();
    g1.cancel();
    q.put("x");
    CHECK(code_of([&] { g1.join(); }) == squall::error::cancelled);
    CHECK(g2.join() == "x");
  });
  // A waiting putter's item moves in when a slot frees up, in order.
  CHECK(q.try_put("first"));
  auto p = spawn(loop, [&] { q.put("second"); });
  run_sync(loop, [&] {
    this_fiber::yield();
    CHECK(q.get() == "first");
    p.join();
    CHECK(q.get() == "second");
  });
}
