// SPDX-License-Identifier: MIT
// Synchronisation between fibers of one loop: event, condition, semaphore, mutex (tornado.locks).
//
// These coordinate fibers on the same loop; they are not thread-safe (use add_callback to cross
// threads). Every wait takes an absolute deadline (default: never) and throws
// std::system_error with error::timed_out when it passes, or error::cancelled when the fiber is
// cancelled; it must be called from a fiber (std::logic_error otherwise). Waiters are served in
// FIFO order. Destroying a primitive while fibers wait on it is a programming error.
#pragma once

#include <cstddef>

#include "squall/fiber.hpp"

namespace squall {

// A flag fibers can wait for. set() wakes every waiter; wait() returns at once while it is set.
class event {
 public:
  event() = default;
  event(const event&) = delete;
  event& operator=(const event&) = delete;

  bool is_set() const noexcept { return set_; }
  void set();
  void clear() noexcept { set_ = false; }
  void wait(time_point deadline = time_point::max());

 private:
  bool set_ = false;
  detail::wait_list waiters_;
};

// Waits for a notification. Unlike std::condition_variable there is no mutex: fibers of one
// loop only switch at waits, so checking a predicate and waiting cannot race.
class condition {
 public:
  condition() = default;
  condition(const condition&) = delete;
  condition& operator=(const condition&) = delete;

  void wait(time_point deadline = time_point::max());
  void notify_one();
  void notify_all();
  std::size_t waiting() const noexcept { return count_; }

 private:
  detail::wait_list waiters_;
  std::size_t count_ = 0;
};

// A counter that acquire() decrements, waiting while it is zero. release() hands a unit straight
// to the longest waiter, so a later acquire() cannot overtake it.
class semaphore {
 public:
  explicit semaphore(std::size_t initial = 1) : value_(initial) {}
  semaphore(const semaphore&) = delete;
  semaphore& operator=(const semaphore&) = delete;

  void acquire(time_point deadline = time_point::max());
  bool try_acquire() noexcept;
  void release();
  std::size_t value() const noexcept { return value_; }

 private:
  std::size_t value_;
  detail::wait_list waiters_;
};

// A mutual-exclusion lock for fibers (tornado.locks.Lock). Named mutex because it is a
// BasicLockable: std::lock_guard<squall::mutex> and std::unique_lock work with it.
// Not reentrant: a fiber that locks twice waits forever (or until its deadline).
class mutex {
 public:
  mutex() = default;
  void lock(time_point deadline = time_point::max()) { sem_.acquire(deadline); }
  bool try_lock() noexcept { return sem_.try_acquire(); }
  void unlock() { sem_.release(); }
  bool locked() const noexcept { return sem_.value() == 0; }

 private:
  semaphore sem_{1};
};

}  // namespace squall
