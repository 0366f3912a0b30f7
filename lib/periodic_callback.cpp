// SPDX-License-Identifier: MIT
// periodic_callback: a grid of deadlines, skipping the ticks the loop was too late for.
#include "squall/periodic_callback.hpp"

#include <stdexcept>

namespace squall {

periodic_callback::periodic_callback(io_loop& loop, duration interval, unique_function<void()> fn,
                                     double jitter)
    : loop_(loop),
      interval_(interval),
      fn_(std::move(fn)),
      jitter_(jitter),
      rng_(reinterpret_cast<std::uintptr_t>(this) ^
           static_cast<std::uint64_t>(clock::now().time_since_epoch().count())) {
  if (interval <= duration::zero())
    throw std::invalid_argument("squall: periodic_callback interval must be positive");
  if (!(jitter >= 0.0 && jitter <= 1.0))
    throw std::invalid_argument("squall: periodic_callback jitter must be in [0, 1]");
}

periodic_callback::~periodic_callback() {
  stop();
}

void periodic_callback::start() {
  if (running_) return;
  running_ = true;
  next_grid_ = io_loop::now();
  schedule_next();
}

void periodic_callback::stop() {
  running_ = false;
  timer_.cancel();
}

void periodic_callback::schedule_next() {
  time_point now = io_loop::now();
  next_grid_ += interval_;
  if (next_grid_ <= now) {
    // Late by one or more whole intervals: skip to the first grid point still ahead.
    auto missed = (now - next_grid_) / interval_ + 1;
    skipped_ += static_cast<std::uint64_t>(missed);
    next_grid_ += missed * interval_;
  }
  time_point when = next_grid_;
  if (jitter_ > 0) {
    // xorshift64*: cheap, and good enough to spread ticks.
    rng_ ^= rng_ >> 12;
    rng_ ^= rng_ << 25;
    rng_ ^= rng_ >> 27;
    double u = static_cast<double>((rng_ * 0x2545F4914F6CDD1DULL) >> 11) * 0x1.0p-53;  // [0, 1)
    auto offset = std::chrono::duration_cast<duration>(interval_ * (jitter_ * (u - 0.5)));
    when += offset;
  }
  timer_ = loop_.call_at(when, [this] { fire(); });
}

void periodic_callback::fire() {
  // Schedule before calling, so the callback may stop() us (cancelling the next tick) and an
  // exception from it does not end the series. The loop logs the exception.
  schedule_next();
  fn_();
}

}  // namespace squall
