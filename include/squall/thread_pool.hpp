// SPDX-License-Identifier: MIT
// thread_pool: a fixed set of threads for blocking work, and result<T> to carry what it produced.
//
// Loops use one through io_loop::run_in_executor(), which hands the result back to the loop's
// thread. The pool itself knows nothing of loops and can be used alone.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <exception>
#include <mutex>
#include <optional>
#include <thread>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "squall/unique_function.hpp"

namespace squall {

// The value a function returned, or the exception it threw.
template <class T>
class result {
 public:
  static result capture(auto& fn) noexcept {
    try {
      return result(std::in_place_index<0>, fn());
    } catch (...) {
      return result(std::in_place_index<1>, std::current_exception());
    }
  }
  bool has_value() const noexcept { return v_.index() == 0; }
  // The value, or rethrows the exception.
  T& get() & {
    if (v_.index() == 1) std::rethrow_exception(std::get<1>(v_));
    return std::get<0>(v_);
  }
  T&& get() && { return std::move(get()); }
  std::exception_ptr exception() const noexcept {
    return v_.index() == 1 ? std::get<1>(v_) : nullptr;
  }

 private:
  template <std::size_t I, class A>
  result(std::in_place_index_t<I> i, A&& a) : v_(i, std::forward<A>(a)) {}
  std::variant<T, std::exception_ptr> v_;
};

template <>
class result<void> {
 public:
  static result capture(auto& fn) noexcept {
    result r;
    try {
      fn();
    } catch (...) {
      r.e_ = std::current_exception();
    }
    return r;
  }
  bool has_value() const noexcept { return !e_; }
  void get() const {
    if (e_) std::rethrow_exception(e_);
  }
  std::exception_ptr exception() const noexcept { return e_; }

 private:
  std::exception_ptr e_;
};

class thread_pool {
 public:
  // Starts `threads` worker threads (at least one). Workers block every signal, so signals
  // meant for a loop's add_signal_handler never land on them.
  explicit thread_pool(unsigned threads);

  // Stops the workers: tasks already running finish, tasks still queued are dropped
  // (destroyed without running). Must not be called from a worker.
  ~thread_pool();

  thread_pool(const thread_pool&) = delete;
  thread_pool& operator=(const thread_pool&) = delete;

  // Queues `task` for a worker. Thread-safe. An exception escaping a task is logged and
  // swallowed (wrap the task, as run_in_executor does, to get it back).
  void submit(unique_function<void()> task);

  std::size_t size() const noexcept { return workers_.size(); }

  // Tasks queued and not yet started.
  std::size_t queued() const;

 private:
  void worker();

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<unique_function<void()>> tasks_;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace squall
