// SPDX-License-Identifier: MIT
// periodic_callback: calls a function every `interval` on a loop (Tornado's PeriodicCallback).
//
// Ticks are scheduled on a fixed grid (start + k * interval), not "interval after the last
// call", so a slow callback does not make the schedule drift. If the callback (or anything else
// on the loop) overruns one or more ticks, the missed ticks are skipped, not run in a burst.
// With jitter j (0 <= j <= 1), each tick is moved by a random amount in
// [-j/2 * interval, +j/2 * interval] around its grid point, which spreads out the work of many
// processes started together; the grid itself does not move.
#pragma once

#include <cstdint>

#include "squall/io_loop.hpp"

namespace squall {

class periodic_callback {
 public:
  // Does not start: call start(). `interval` must be positive (std::invalid_argument).
  periodic_callback(io_loop& loop, duration interval, unique_function<void()> fn,
                    double jitter = 0.0);
  ~periodic_callback();  // stops

  periodic_callback(const periodic_callback&) = delete;
  periodic_callback& operator=(const periodic_callback&) = delete;

  // Schedules the first call one interval from now. Calling start() on a running callback does
  // nothing. Loop thread only.
  void start();
  // Cancels the next call. The callback may call stop() on its own periodic_callback.
  void stop();
  bool is_running() const noexcept { return running_; }

  // Ticks skipped so far because the loop was late (diagnostics and tests).
  std::uint64_t skipped_ticks() const noexcept { return skipped_; }

 private:
  void schedule_next();
  void fire();

  io_loop& loop_;
  duration interval_;
  unique_function<void()> fn_;
  double jitter_;
  bool running_ = false;
  time_point next_grid_{};
  timer_handle timer_;
  std::uint64_t skipped_ = 0;
  std::uint64_t rng_;
};

}  // namespace squall
