// SPDX-License-Identifier: MIT
// Logging: levels filter, the sink receives component and message, the default can be restored.
#include "squall/log.hpp"

#include <doctest/doctest.h>

#include <string>
#include <vector>

TEST_CASE("log messages below the level are dropped; the sink gets level, component, text") {
  struct entry {
    squall::log_level level;
    std::string component, msg;
  };
  std::vector<entry> got;
  squall::log_level saved = squall::get_log_level();
  squall::set_log_sink([&](squall::log_level l, std::string_view c, std::string_view m) {
    got.push_back({l, std::string(c), std::string(m)});
  });
  squall::set_log_level(squall::log_level::warn);
  squall::log(squall::log_level::info, "test", "hidden %d", 1);
  squall::log(squall::log_level::warn, "test", "shown %d", 2);
  squall::log(squall::log_level::error, "net", "%s", "also shown");
  CHECK_FALSE(squall::log_enabled(squall::log_level::debug));
  CHECK(squall::log_enabled(squall::log_level::error));
  squall::set_log_level(squall::log_level::off);
  squall::log(squall::log_level::error, "test", "off means off");
  squall::set_log_sink(nullptr);
  squall::set_log_level(saved);
  REQUIRE(got.size() == 2);
  CHECK(got[0].level == squall::log_level::warn);
  CHECK(got[0].component == "test");
  CHECK(got[0].msg == "shown 2");
  CHECK(got[1].msg == "also shown");
  CHECK(std::string(squall::to_string(squall::log_level::debug)) == "debug");
}

TEST_CASE("a long message is truncated, not overflowed") {
  std::string got;
  squall::set_log_sink(
      [&](squall::log_level, std::string_view, std::string_view m) { got = std::string(m); });
  std::string big(5000, 'x');
  squall::log(squall::log_level::error, "test", "%s", big.c_str());
  squall::set_log_sink(nullptr);
  CHECK(got.size() == 1023);
  CHECK(got.find_first_not_of('x') == std::string::npos);
}
