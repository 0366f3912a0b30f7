// SPDX-License-Identifier: MIT
// Embedding: a foreign poll() loop drives squall through backend_fd(), backend_timeout_ms()
// and run_once(0).
#include <doctest/doctest.h>
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include "squall/io_loop.hpp"
#include "test_util.hpp"

using namespace std::chrono_literals;
using squall::io_loop;

namespace {
// The host's view: is squall's fd readable right now?
bool fd_readable(int fd, int timeout_ms = 0) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, timeout_ms) == 1 && (p.revents & POLLIN);
}
}  // namespace

TEST_CASE("an idle embedded loop's fd stays quiet and its timeout is the next timer") {
  io_loop loop;
  int fd = loop.backend_fd();
  loop.run_once(squall::duration::zero());
  CHECK_FALSE(fd_readable(fd));
  CHECK(loop.backend_timeout_ms() == -1);
  loop.call_later(250ms, [] {});
  int t = loop.backend_timeout_ms();
  CHECK(t > 200);
  CHECK(t <= 250);
  loop.add_callback([] {});
  CHECK(loop.backend_timeout_ms() == 0);
  loop.run_once(squall::duration::zero());
  CHECK(loop.backend_timeout_ms() > 0);
}

TEST_CASE("a foreign poll() loop drives timers, fd handlers and cross-thread callbacks") {
  io_loop loop;
  int fd = loop.backend_fd();
  int p[2];
  REQUIRE(::pipe2(p, O_NONBLOCK | O_CLOEXEC) == 0);
  bool timer = false, handler = false;
  std::atomic<bool> callback{false};
  loop.call_later(20ms, [&] { timer = true; });
  loop.add_handler(p[0], io_loop::read, [&](int rfd, unsigned) {
    char c;
    if (::read(rfd, &c, 1) == 1) handler = true;
  });
  std::thread other([&] {
    std::this_thread::sleep_for(40ms);
    loop.add_callback([&] { callback = true; });
    // The pipe is written only after the host has run the callback, so the two events wake
    // its poll() apart however late either thread is scheduled.
    auto until = std::chrono::steady_clock::now() + 10s;
    while (!callback && std::chrono::steady_clock::now() < until)
      std::this_thread::sleep_for(1ms);
    std::this_thread::sleep_for(20ms);
    REQUIRE(::write(p[1], "x", 1) == 1);
  });
  int iterations = 0, woken_by_fd = 0;
  auto deadline = io_loop::now() + 10s;
  while (!(timer && handler && callback) && io_loop::now() < deadline) {
    pollfd pfd{fd, POLLIN, 0};
    int timeout = loop.backend_timeout_ms();
    if (::poll(&pfd, 1, timeout < 0 ? 5000 : timeout) == 1) ++woken_by_fd;
    loop.run_once(squall::duration::zero());
    ++iterations;
  }
  other.join();
  CHECK(timer);
  CHECK(handler);
  CHECK(callback);
  CHECK(woken_by_fd >= 2);  // the cross-thread post and the pipe each woke the host's poll()
  CHECK(iterations < 100);  // the host slept between events instead of spinning
  loop.remove_handler(p[0]);
  ::close(p[0]);
  ::close(p[1]);
  // After a last run_once, nothing is left to do: the fd is quiet again.
  loop.run_once(squall::duration::zero());
  CHECK_FALSE(fd_readable(fd));
}

TEST_CASE("a handler added between run_once calls is live before the host polls again") {
  // On io_uring the new poll is only queued; run_once must submit it before returning.
  io_loop loop;
  int fd = loop.backend_fd();
  int p[2];
  REQUIRE(::pipe2(p, O_NONBLOCK | O_CLOEXEC) == 0);
  bool got = false;
  loop.add_callback([&] {
    loop.add_handler(p[0], io_loop::read, [&](int rfd, unsigned) {
      char c;
      got = ::read(rfd, &c, 1) == 1;
    });
  });
  loop.run_once(squall::duration::zero());  // runs the callback that adds the handler
  REQUIRE(::write(p[1], "x", 1) == 1);
  CHECK(fd_readable(fd, 2000));
  loop.run_once(squall::duration::zero());
  CHECK(got);
  loop.remove_handler(p[0]);
  ::close(p[0]);
  ::close(p[1]);
}
