// SPDX-License-Identifier: MIT
// Logging: the level threshold (SQUALL_LOG), the sink, and printf-style formatting.
#include "squall/log.hpp"

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

namespace squall {
namespace {

log_level level_from_env() {
  const char* env = std::getenv("SQUALL_LOG");
  if (!env || !*env) return log_level::info;
  for (int l = 0; l <= static_cast<int>(log_level::off); ++l)
    if (std::strcmp(env, to_string(static_cast<log_level>(l))) == 0)
      return static_cast<log_level>(l);
  if (std::strcmp(env, "warning") == 0) return log_level::warn;
  std::fprintf(stderr, "[squall warn loop] SQUALL_LOG=%s is not a level; using info\n", env);
  return log_level::info;
}

// -1 until first use, so the environment is read lazily (and after main() may have set it).
std::atomic<int> g_level{-1};

std::mutex& sink_mutex() {
  static std::mutex m;
  return m;
}
log_sink& sink() {
  static log_sink s;
  return s;
}

}  // namespace

const char* to_string(log_level level) noexcept {
  switch (level) {
    case log_level::trace:
      return "trace";
    case log_level::debug:
      return "debug";
    case log_level::info:
      return "info";
    case log_level::warn:
      return "warn";
    case log_level::error:
      return "error";
    case log_level::off:
      return "off";
  }
  return "?";
}

void set_log_sink(log_sink s) {
  std::lock_guard<std::mutex> lock(sink_mutex());
  sink() = std::move(s);
}

void set_log_level(log_level level) noexcept {
  g_level.store(static_cast<int>(level), std::memory_order_relaxed);
}

log_level get_log_level() noexcept {
  int l = g_level.load(std::memory_order_relaxed);
  if (l < 0) {
    l = static_cast<int>(level_from_env());
    int expected = -1;
    if (!g_level.compare_exchange_strong(expected, l)) l = expected;
  }
  return static_cast<log_level>(l);
}

bool log_enabled(log_level level) noexcept {
  return level != log_level::off && level >= get_log_level();
}

void log(log_level level, const char* component, const char* fmt, ...) {
  if (!log_enabled(level)) return;
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  int n = std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  std::size_t len = n < 0 ? 0 : static_cast<std::size_t>(n) < sizeof buf ? n : sizeof buf - 1;
  std::lock_guard<std::mutex> lock(sink_mutex());
  if (sink()) {
    // Logging must never throw into the code that logs (often an error path already).
    try {
      sink()(level, component, std::string_view(buf, len));
    } catch (...) {
    }
  } else {
    std::fprintf(stderr, "[squall %s %s] %.*s\n", to_string(level), component,
                 static_cast<int>(len), buf);
  }
}

}  // namespace squall
