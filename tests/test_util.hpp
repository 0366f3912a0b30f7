// SPDX-License-Identifier: MIT
// Helpers shared by the test files.
#pragma once

#include <chrono>
#include <functional>
#include <mutex>
#include <string>
#include <system_error>
#include <vector>

#include "squall/io_loop.hpp"
#include "squall/io_stream.hpp"
#include "squall/log.hpp"

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

// A tcp_server handler that echoes everything until the peer closes.
inline void echo(io_stream& s, const address&) {
  for (;;) {
    auto d = s.read_some();
    if (d.empty()) return;
    s.write(d);
  }
}

// `size` bytes of text that repeat every 1,000: deflate squeezes them about 200 to 1, so a few
// KB of gzip decode to megabytes (for the bounded-decoding tests).
inline std::string repeating_text(std::size_t size) {
  std::string unit;
  for (int i = 0; unit.size() < 1000; ++i)
    unit += std::to_string(i * 7919) + ",";
  unit.resize(1000);
  std::string text;
  while (text.size() < size)
    text += unit;
  return text;
}

// The error code `fn` throws as std::system_error, or no error.
inline std::error_code code_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const std::system_error& e) {
    return e.code();
  }
  return {};
}

// Captures squall's log lines while it lives (the default sink is restored after).
struct log_capture {
  std::mutex mu;
  std::vector<std::string> lines;
  log_capture() {
    set_log_sink([this](log_level, std::string_view, std::string_view msg) {
      std::lock_guard<std::mutex> lock(mu);
      lines.emplace_back(msg);
    });
  }
  ~log_capture() { set_log_sink(nullptr); }
  log_capture(const log_capture&) = delete;
  log_capture& operator=(const log_capture&) = delete;
  // Lines containing `needle`.
  int count(const std::string& needle) {
    std::lock_guard<std::mutex> lock(mu);
    int n = 0;
    for (auto& l : lines)
      n += l.find(needle) != std::string::npos;
    return n;
  }
  bool contains(const std::string& needle) { return count(needle) > 0; }
};

}  // namespace squall::test
