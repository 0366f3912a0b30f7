// SPDX-License-Identifier: MIT
// Helpers shared by the test files.
#pragma once

#include <chrono>
#include <functional>

#include "squall/io_loop.hpp"

namespace squall::test {

// Runs `loop` until `done()` holds or `limit` passes; returns done(). Never hangs a test run.
inline bool run_until(io_loop& loop, const std::function<bool()>& done,
                      duration limit = std::chrono::seconds(10)) {
  auto deadline = io_loop::now() + limit;
  while (!done() && io_loop::now() < deadline)
    loop.run_once(std::chrono::milliseconds(10));
  return done();
}

// The libuv-style closing check: nothing left behind on the loop.
inline bool loop_is_clean(const io_loop& loop) {
  return loop.timer_count() == 0 && loop.handler_count() == 0 && loop.signal_handler_count() == 0 &&
         loop.pending_callbacks() == 0;
}

}  // namespace squall::test
