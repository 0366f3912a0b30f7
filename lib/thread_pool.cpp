// SPDX-License-Identifier: MIT
// thread_pool: workers that take tasks from one mutex-protected queue.
//
// One queue and one condition variable is enough here: the pool runs blocking calls (file I/O,
// getaddrinfo, CPU work), each of which costs far more than the lock.
#include "squall/thread_pool.hpp"

#include <pthread.h>
#include <signal.h>

#include <exception>

#include "squall/log.hpp"

namespace squall {

thread_pool::thread_pool(unsigned threads) {
  if (threads == 0) threads = 1;
  // Workers inherit the creating thread's signal mask: block everything while starting them so
  // process signals go to loop threads, then restore ours.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  try {
    for (unsigned i = 0; i < threads; ++i)
      workers_.emplace_back([this] { worker(); });
  } catch (...) {
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_)
      t.join();
    throw;
  }
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

thread_pool::~thread_pool() {
  std::deque<unique_function<void()>> dropped;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    dropped.swap(tasks_);
  }
  cv_.notify_all();
  for (auto& t : workers_)
    t.join();
}

void thread_pool::submit(unique_function<void()> task) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    tasks_.push_back(std::move(task));
  }
  cv_.notify_one();
}

std::size_t thread_pool::queued() const {
  std::lock_guard<std::mutex> lock(mu_);
  return tasks_.size();
}

void thread_pool::worker() {
  for (;;) {
    unique_function<void()> task;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stopping_ || !tasks_.empty(); });
      if (stopping_) return;
      task = std::move(tasks_.front());
      tasks_.pop_front();
    }
    try {
      task();
    } catch (const std::exception& e) {
      log(log_level::error, "executor", "Exception in executor task: %s", e.what());
    } catch (...) {
      log(log_level::error, "executor", "Exception in executor task: unknown exception");
    }
  }
}

}  // namespace squall
