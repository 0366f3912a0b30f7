// SPDX-License-Identifier: MIT
// Logging: levels, a process-wide threshold, and a pluggable sink.
//
// squall logs rarely (start-up choices, errors it cannot report any other way, exceptions that
// escape callbacks). The threshold comes from the SQUALL_LOG environment variable on first use
// (trace, debug, info, warn, error, off; default info) and can be changed with set_log_level().
// The default sink writes one line per message to stderr. An embedding program routes squall's
// messages into its own logger with set_log_sink(). All functions here are thread-safe; the sink
// may be called from any thread that logs (loop threads, executor threads), one call at a time.
#pragma once

#include <atomic>
#include <functional>
#include <string_view>

namespace squall {

enum class log_level { trace = 0, debug, info, warn, error, off };

// "trace", "debug", ... for a level.
const char* to_string(log_level level) noexcept;

// The sink receives the level, a short component name ("loop", "io_uring", ...) and the message
// without a trailing newline.
using log_sink = std::function<void(log_level, std::string_view component, std::string_view msg)>;

// Replaces the sink; an empty function restores the default stderr sink.
void set_log_sink(log_sink sink);

void set_log_level(log_level level) noexcept;
log_level get_log_level() noexcept;

// True when a message at `level` would be delivered. Cheap: one relaxed atomic load.
bool log_enabled(log_level level) noexcept;

// printf-style logging. Formatting happens only when the level is enabled.
void log(log_level level, const char* component, const char* fmt, ...)
    __attribute__((format(printf, 3, 4)));

}  // namespace squall
