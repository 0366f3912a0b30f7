// SPDX-License-Identifier: MIT
// Process signals delivered to loops: a process-wide handler that marks each watching loop's
// pending set and writes to its wake fd. The loop runs the handlers on its own thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <source_location>

#include "squall/unique_function.hpp"

namespace squall::detail {

constexpr int max_signal = 64;

// One per loop. The signal handler touches only `pending` and `wake_fd` (both safe to use from
// a handler); the rest belongs to the loop's thread.
struct signal_slot {
  std::atomic<std::uint64_t> pending{0};  // bit (signo - 1) set when signo arrived
  int wake_fd = -1;
  std::uint64_t watched = 0;
  unique_function<void(int)> handlers[max_signal + 1];
  std::source_location where[max_signal + 1];
};

// Adds `slot` to the receivers of `signo`, installing the process-wide handler for the first
// one. Throws std::invalid_argument for a signal that cannot be caught, std::system_error if
// sigaction fails or too many loops watch one signal.
void signal_watch(int signo, signal_slot* slot);

// Removes `slot` from the receivers of `signo`, restoring the previous disposition when it was
// the last. Returns only once no signal handler can still be using `slot`.
void signal_unwatch(int signo, signal_slot* slot);

}  // namespace squall::detail
