// SPDX-License-Identifier: MIT
// Signals: delivered to the loop's thread as callbacks, to every watching loop, and restored.
#include <doctest/doctest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include "squall/io_loop.hpp"
#include "test_util.hpp"

using namespace std::chrono_literals;
using squall::io_loop;
using squall::test::loop_is_clean;
using squall::test::run_until;

namespace {
bool disposition_is_default(int signo) {
  struct sigaction sa {};
  ::sigaction(signo, nullptr, &sa);
  return sa.sa_handler == SIG_DFL;
}
}  // namespace

TEST_CASE("a signal sent by another thread runs the handler on the loop's thread") {
  io_loop loop;
  std::thread::id ran_on;
  int got = 0;
  loop.add_signal_handler(SIGUSR1, [&](int signo) {
    got = signo;
    ran_on = std::this_thread::get_id();
  });
  std::thread t([] {
    std::this_thread::sleep_for(20ms);
    ::kill(::getpid(), SIGUSR1);
  });
  CHECK(run_until(loop, [&] { return got != 0; }));
  t.join();
  CHECK(got == SIGUSR1);
  CHECK(ran_on == std::this_thread::get_id());
  loop.remove_signal_handler(SIGUSR1);
  CHECK(disposition_is_default(SIGUSR1));
  CHECK(loop_is_clean(loop));
}

TEST_CASE("two loops watching one signal are both told; the handler stays until the last goes") {
  io_loop a, b;
  std::atomic<int> a_got{0}, b_got{0};
  a.add_signal_handler(SIGUSR2, [&](int) { ++a_got; });
  b.add_signal_handler(SIGUSR2, [&](int) { ++b_got; });
  ::raise(SIGUSR2);
  CHECK(run_until(a, [&] { return a_got > 0; }));
  CHECK(run_until(b, [&] { return b_got > 0; }));
  a.remove_signal_handler(SIGUSR2);
  CHECK_FALSE(disposition_is_default(SIGUSR2));  // b still watches
  ::raise(SIGUSR2);
  CHECK(run_until(b, [&] { return b_got > 1; }));
  CHECK(a_got == 1);
  b.remove_signal_handler(SIGUSR2);
  CHECK(disposition_is_default(SIGUSR2));
}

TEST_CASE("a signal wakes a loop blocked in run() with nothing else to do") {
  io_loop loop;
  loop.add_signal_handler(SIGINT, [&](int) { loop.stop(); });
  std::thread t([] {
    std::this_thread::sleep_for(30ms);
    ::kill(::getpid(), SIGINT);
  });
  auto watchdog = loop.call_later(10s, [&] {
    FAIL("SIGINT did not wake the loop");
    loop.stop();
  });
  loop.run();
  watchdog.cancel();
  t.join();
  loop.remove_signal_handler(SIGINT);
  CHECK(loop_is_clean(loop));
}

TEST_CASE("signal misuse gives named errors") {
  io_loop loop;
  CHECK_THROWS_AS(loop.add_signal_handler(SIGKILL, [](int) {}), std::invalid_argument);
  CHECK_THROWS_AS(loop.add_signal_handler(0, [](int) {}), std::invalid_argument);
  CHECK_THROWS_AS(loop.add_signal_handler(1000, [](int) {}), std::invalid_argument);
  loop.add_signal_handler(SIGUSR1, [](int) {});
  try {
    loop.add_signal_handler(SIGUSR1, [](int) {});
    FAIL("no error");
  } catch (const std::system_error& e) {
    CHECK(e.code() == squall::error::already_watched);
  }
  loop.remove_signal_handler(SIGUSR1);
  try {
    loop.remove_signal_handler(SIGUSR1);
    FAIL("no error");
  } catch (const std::system_error& e) {
    CHECK(e.code() == squall::error::not_watched);
  }
}
