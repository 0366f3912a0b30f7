// SPDX-License-Identifier: MIT
// io_loop: callbacks, timers, fd handlers, stop/run, cross-thread wake-ups and misuse errors.
#include "squall/io_loop.hpp"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "squall/config.hpp"
#include "squall/log.hpp"
#include "test_util.hpp"

using namespace std::chrono_literals;
using squall::io_loop;
using squall::test::log_capture;
using squall::test::loop_is_clean;
using squall::test::run_until;

namespace {

struct pipe_pair {
  int r = -1, w = -1;
  pipe_pair() {
    int p[2];
    REQUIRE(::pipe2(p, O_NONBLOCK | O_CLOEXEC) == 0);
    r = p[0];
    w = p[1];
  }
  ~pipe_pair() {
    if (r >= 0) ::close(r);
    if (w >= 0) ::close(w);
  }
};

double thread_cpu_seconds() {
  rusage ru{};
  getrusage(RUSAGE_THREAD, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

}  // namespace

TEST_CASE("a loop is built on the backend the environment asks for") {
  io_loop loop;
  const char* want = std::getenv("SQUALL_BACKEND");
  if (want && *want) CHECK(std::string(loop.backend_name()) == want);
  CHECK(loop.backend() != squall::backend_kind::automatic);
}

TEST_CASE("callbacks run in the order they were added, after add_callback returns") {
  io_loop loop;
  std::vector<int> order;
  for (int i = 0; i < 5; ++i)
    loop.add_callback([&order, i] { order.push_back(i); });
  CHECK(order.empty());  // never inline
  loop.add_callback([&] { loop.stop(); });
  loop.run();
  CHECK(order == std::vector<int>{0, 1, 2, 3, 4});
  CHECK(loop_is_clean(loop));
}

TEST_CASE("a callback added by a callback runs after the current one returns") {
  io_loop loop;
  std::vector<std::string> seen;
  loop.add_callback([&] {
    loop.add_callback([&] {
      seen.push_back("inner");
      loop.stop();
    });
    seen.push_back("outer-end");
  });
  loop.run();
  CHECK(seen == std::vector<std::string>{"outer-end", "inner"});
}

TEST_CASE("timers fire in deadline order, and equal deadlines in scheduling order") {
  io_loop loop;
  std::vector<int> order;
  auto base = io_loop::now() + 20ms;
  loop.call_at(base + 10ms, [&] { order.push_back(3); });
  loop.call_at(base, [&] { order.push_back(1); });
  loop.call_at(base, [&] { order.push_back(2); });
  loop.call_at(base - 5ms, [&] { order.push_back(0); });
  loop.call_at(base + 10ms, [&] {
    order.push_back(4);
    loop.stop();
  });
  loop.run();
  CHECK(order == std::vector<int>{0, 1, 2, 3, 4});
  CHECK(loop_is_clean(loop));
}

TEST_CASE("call_later never fires before its delay has passed") {
  io_loop loop;
  auto start = io_loop::now();
  squall::time_point fired_at{};
  loop.call_later(30ms, [&] {
    fired_at = io_loop::now();
    loop.stop();
  });
  loop.run();
  CHECK(fired_at - start >= 30ms);
}

TEST_CASE("time() is the iteration's poll time: behind now(), past the timer it runs") {
  io_loop loop;
  auto start = io_loop::now();
  squall::time_point at_fire{}, after{};
  bool same_in_iteration = false;
  loop.call_later(20ms, [&] {
    at_fire = loop.time();
    after = io_loop::now();
    std::this_thread::sleep_for(5ms);
    same_in_iteration = loop.time() == at_fire;  // no clock read within the iteration
    loop.stop();
  });
  loop.run();
  CHECK(at_fire - start >= 20ms);  // read after the poll that slept until the timer was due
  CHECK(at_fire <= after);
  CHECK(same_in_iteration);
}

TEST_CASE("a timer cancelled from another timer's callback in the same iteration never fires") {
  io_loop loop;
  bool second_fired = false;
  squall::timer_handle second;
  auto when = io_loop::now() + 10ms;
  loop.call_at(when, [&] { CHECK(second.cancel()); });
  second = loop.call_at(when, [&] { second_fired = true; });
  loop.call_at(when + 20ms, [&] { loop.stop(); });
  loop.run();
  CHECK_FALSE(second_fired);
  CHECK_FALSE(second.pending());
  CHECK(loop_is_clean(loop));
}

TEST_CASE("a timer can cancel itself and others while running, and handles go stale") {
  io_loop loop;
  squall::timer_handle self;
  bool ran = false;
  self = loop.call_later(1ms, [&] {
    ran = true;
    CHECK_FALSE(self.cancel());  // already fired: popped before it ran
  });
  CHECK(self.pending());
  CHECK(run_until(loop, [&] { return ran; }));
  CHECK_FALSE(self.pending());
  // The slot is reused by the next timer; the stale handle must not cancel it.
  bool later_fired = false;
  auto next = loop.call_later(1ms, [&] { later_fired = true; });
  CHECK_FALSE(self.cancel());
  CHECK(next.pending());
  CHECK(run_until(loop, [&] { return later_fired; }));
}

TEST_CASE("a timer added while the loop runs fires, including a zero-delay re-arm chain") {
  io_loop loop;
  int ticks = 0;
  std::function<void()> tick = [&] {
    if (++ticks == 100)
      loop.stop();
    else
      loop.call_later(0ms, tick);
  };
  loop.add_callback([&] { loop.call_later(0ms, tick); });
  loop.run();
  CHECK(ticks == 100);
}

TEST_CASE("cancelled timers leave nothing behind") {
  io_loop loop;
  std::vector<squall::timer_handle> hs;
  for (int i = 0; i < 1000; ++i)
    hs.push_back(loop.call_later(std::chrono::seconds(100 + i), [] {}));
  CHECK(loop.timer_count() == 1000);
  for (auto& h : hs)
    CHECK(loop.cancel(h));
  for (auto& h : hs)
    CHECK_FALSE(h.cancel());
  CHECK(loop.timer_count() == 0);
}

TEST_CASE("stop() from a callback ends run(); stop() before run() allows one iteration") {
  io_loop loop;
  int runs = 0;
  loop.add_callback([&] { ++runs; });
  loop.stop();
  loop.run();  // returns after one iteration
  CHECK(runs == 1);
  // And the loop is reusable afterwards.
  loop.add_callback([&] {
    ++runs;
    loop.stop();
  });
  loop.run();
  CHECK(runs == 2);
}

TEST_CASE("stop() from another thread wakes a sleeping loop and ends run()") {
  io_loop loop;
  std::atomic<bool> returned{false};
  auto watchdog = loop.call_later(10s, [&] { FAIL("stop() from another thread did not arrive"); });
  std::thread t([&] {
    std::this_thread::sleep_for(50ms);
    loop.stop();
  });
  loop.run();
  returned = true;
  t.join();
  watchdog.cancel();
  CHECK(returned);
}

TEST_CASE("add_callback from another thread wakes a loop sleeping with no timers") {
  io_loop loop;
  std::atomic<std::thread::id> ran_on{};
  std::thread t([&] {
    std::this_thread::sleep_for(30ms);
    loop.add_callback([&] {
      ran_on = std::this_thread::get_id();
      loop.stop();
    });
  });
  auto start = io_loop::now();
  // No timer, no fd: only the wake-up can end this run().
  std::thread watchdog([&] {
    std::this_thread::sleep_for(10s);
    if (io_loop::now() - start > 9s) std::abort();
  });
  watchdog.detach();
  loop.run();
  t.join();
  CHECK(ran_on.load() == std::this_thread::get_id());
}

TEST_CASE("callbacks posted concurrently from many threads all run exactly once") {
  io_loop loop;
  constexpr int threads = 4, per_thread = 5000;
  std::vector<int> counts(threads * per_thread, 0);
  std::atomic<int> done_threads{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&, t] {
      for (int i = 0; i < per_thread; ++i)
        loop.add_callback([&, idx = t * per_thread + i] { ++counts[idx]; });
      ++done_threads;
    });
  }
  int total = 0;
  CHECK(run_until(loop, [&] {
    if (done_threads != threads) return false;
    total = 0;
    for (int c : counts)
      total += c;
    return total == threads * per_thread;
  }));
  for (auto& t : ts)
    t.join();
  loop.run_once(0ms);
  for (int c : counts)
    REQUIRE(c == 1);
}

TEST_CASE("run() re-entered from a callback is refused with loop_running") {
  io_loop loop;
  bool threw = false;
  loop.add_callback([&] {
    try {
      loop.run();
    } catch (const std::system_error& e) {
      threw = e.code() == squall::error::loop_running;
    }
    loop.stop();
  });
  loop.run();
  CHECK(threw);
}

TEST_CASE("an exception escaping a callback is logged with where it was added; the loop goes on") {
  log_capture logs;
  io_loop loop;
  bool after = false;
  loop.add_callback([] { throw std::runtime_error("boom in callback"); });
  loop.call_later(1ms, [] { throw std::runtime_error("boom in timer"); });
  loop.call_later(5ms, [&] {
    after = true;
    loop.stop();
  });
  loop.run();
  CHECK(after);
  CHECK(logs.contains("Exception in callback added at"));
  CHECK(logs.contains("boom in callback"));
  CHECK(logs.contains("io_loop_test.cpp"));
  CHECK(logs.contains("Exception in timer scheduled at"));
  CHECK(logs.contains("boom in timer"));
}

TEST_CASE("fd handler: a pipe becomes readable, and readiness is level-triggered") {
  io_loop loop;
  pipe_pair p;
  int calls = 0;
  loop.add_handler(p.r, io_loop::read, [&](int fd, unsigned ev) {
    CHECK(fd == p.r);
    CHECK((ev & io_loop::read));
    ++calls;  // deliberately does not read: the next iteration must report it again
  });
  REQUIRE(::write(p.w, "abc", 3) == 3);
  CHECK(run_until(loop, [&] { return calls >= 3; }));
  char buf[8];
  CHECK(::read(p.r, buf, sizeof buf) == 3);
  int before = calls;
  for (int i = 0; i < 5; ++i)
    loop.run_once(5ms);
  CHECK(calls <= before + 1);  // drained: at most the report already in flight
  loop.remove_handler(p.r);
  CHECK(loop_is_clean(loop));
}

TEST_CASE("fd handler: eventfd and socketpair on every backend, read and write interest") {
  io_loop loop;
  int efd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  REQUIRE(efd >= 0);
  int sv[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
  bool efd_read = false, sock_writable = false, sock_read = false;
  loop.add_handler(efd, io_loop::read, [&](int fd, unsigned) {
    eventfd_t v;
    CHECK(::eventfd_read(fd, &v) == 0);
    CHECK(v == 7);
    efd_read = true;
  });
  loop.add_handler(sv[0], io_loop::write, [&](int fd, unsigned ev) {
    CHECK((ev & io_loop::write));
    sock_writable = true;
    CHECK(::send(fd, "ping", 4, 0) == 4);
    loop.update_handler(fd, 0);  // paused: no more write reports
  });
  loop.add_handler(sv[1], io_loop::read, [&](int fd, unsigned) {
    char buf[8];
    CHECK(::recv(fd, buf, sizeof buf, 0) == 4);
    sock_read = true;
  });
  REQUIRE(::eventfd_write(efd, 7) == 0);
  CHECK(run_until(loop, [&] { return efd_read && sock_writable && sock_read; }));
  loop.remove_handler(efd);
  loop.remove_handler(sv[0]);
  loop.remove_handler(sv[1]);
  ::close(efd);
  ::close(sv[0]);
  ::close(sv[1]);
  CHECK(loop_is_clean(loop));
}

TEST_CASE("fd handler: update_handler switches interest from read to write and back") {
  io_loop loop;
  int sv[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
  std::vector<unsigned> seen;
  loop.add_handler(sv[0], io_loop::read, [&](int, unsigned ev) { seen.push_back(ev); });
  for (int i = 0; i < 3; ++i)
    loop.run_once(2ms);
  CHECK(seen.empty());  // nothing to read yet
  loop.update_handler(sv[0], io_loop::write);
  CHECK(run_until(loop, [&] { return !seen.empty(); }));
  CHECK((seen.back() & io_loop::write));
  loop.update_handler(sv[0], io_loop::read);
  seen.clear();
  for (int i = 0; i < 3; ++i)
    loop.run_once(2ms);
  // At most one write report that was already in flight, then silence until data arrives.
  CHECK(seen.size() <= 1);
  seen.clear();
  REQUIRE(::send(sv[1], "x", 1, 0) == 1);
  CHECK(run_until(loop, [&] { return !seen.empty(); }));
  CHECK((seen.back() & io_loop::read));
  loop.remove_handler(sv[0]);
  ::close(sv[0]);
  ::close(sv[1]);
}

TEST_CASE("fd handler: a peer hang-up is reported with the error bit and the read interest") {
  io_loop loop;
  int sv[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
  unsigned got = 0;
  loop.add_handler(sv[0], io_loop::read, [&](int fd, unsigned ev) {
    got = ev;
    loop.remove_handler(fd);  // removing itself while running is allowed
  });
  ::close(sv[1]);
  CHECK(run_until(loop, [&] { return got != 0; }));
  CHECK((got & io_loop::read));
  char c;
  CHECK(::recv(sv[0], &c, 1, 0) == 0);  // EOF, which the read bit promised
  ::close(sv[0]);
  CHECK(loop_is_clean(loop));
}

TEST_CASE("fd handler: a handler that removes another ready fd's handler stops its dispatch") {
  io_loop loop;
  pipe_pair a, b;
  int a_calls = 0, b_calls = 0;
  auto remove_other = [&](int self, int other, int& mine) {
    ++mine;
    loop.remove_handler(other);
    loop.remove_handler(self);
  };
  loop.add_handler(a.r, io_loop::read, [&](int, unsigned) { remove_other(a.r, b.r, a_calls); });
  loop.add_handler(b.r, io_loop::read, [&](int, unsigned) { remove_other(b.r, a.r, b_calls); });
  REQUIRE(::write(a.w, "x", 1) == 1);
  REQUIRE(::write(b.w, "x", 1) == 1);
  CHECK(run_until(loop, [&] { return a_calls + b_calls > 0; }));
  for (int i = 0; i < 3; ++i)
    loop.run_once(2ms);
  CHECK(a_calls + b_calls == 1);
  CHECK(loop_is_clean(loop));
}

TEST_CASE("fd handler: hundreds of fds, past the first table chunk, each reported") {
  io_loop loop;
  constexpr int n = 300;
  std::vector<std::unique_ptr<pipe_pair>> pipes;
  std::vector<int> hits(n, 0);
  for (int i = 0; i < n; ++i) {
    pipes.push_back(std::make_unique<pipe_pair>());
    loop.add_handler(pipes[i]->r, io_loop::read, [&, i](int fd, unsigned) {
      char c;
      if (::read(fd, &c, 1) == 1) ++hits[i];
    });
  }
  for (auto& p : pipes)
    REQUIRE(::write(p->w, "x", 1) == 1);
  CHECK(run_until(loop, [&] {
    for (int h : hits)
      if (h == 0) return false;
    return true;
  }));
  for (int h : hits)
    CHECK(h == 1);
  for (auto& p : pipes)
    loop.remove_handler(p->r);
  CHECK(loop_is_clean(loop));
}

TEST_CASE("misuse of fd handlers gives named errors") {
  io_loop loop;
  pipe_pair p;
  loop.add_handler(p.r, io_loop::read, [](int, unsigned) {});
  SUBCASE("adding an fd twice") {
    try {
      loop.add_handler(p.r, io_loop::read, [](int, unsigned) {});
      FAIL("no error");
    } catch (const std::system_error& e) {
      CHECK(e.code() == squall::error::already_watched);
      CHECK(std::string(e.what()).find("fd " + std::to_string(p.r)) != std::string::npos);
    }
  }
  SUBCASE("removing or updating an fd that is not watched") {
    try {
      loop.remove_handler(p.w);
      FAIL("no error");
    } catch (const std::system_error& e) {
      CHECK(e.code() == squall::error::not_watched);
    }
    try {
      loop.update_handler(p.w, io_loop::read);
      FAIL("no error");
    } catch (const std::system_error& e) {
      CHECK(e.code() == squall::error::not_watched);
    }
  }
  SUBCASE("bad arguments") {
    CHECK_THROWS_AS(loop.add_handler(-1, io_loop::read, [](int, unsigned) {}),
                    std::invalid_argument);
    CHECK_THROWS_AS(loop.add_handler(p.w, io_loop::error, [](int, unsigned) {}),
                    std::invalid_argument);
    CHECK_THROWS_AS(loop.add_handler(p.w, io_loop::write, nullptr), std::invalid_argument);
  }
  loop.remove_handler(p.r);
  CHECK(loop_is_clean(loop));
}

#ifndef NDEBUG
TEST_CASE("calling a loop-thread-only method from another thread is a wrong_thread error") {
  io_loop loop;
  std::error_code code;
  std::thread t([&] {
    try {
      loop.call_later(1s, [] {});
    } catch (const std::system_error& e) {
      code = e.code();
    }
  });
  t.join();
  CHECK(code == squall::error::wrong_thread);
  CHECK(loop.timer_count() == 0);
}
#endif

TEST_CASE("an unknown SQUALL_BACKEND or an unavailable backend is a clear error") {
  const char* old = std::getenv("SQUALL_BACKEND");
  std::string saved = old ? old : "";
  ::setenv("SQUALL_BACKEND", "nonsense", 1);
  try {
    io_loop loop;
    FAIL("no error");
  } catch (const std::system_error& e) {
    CHECK(e.code() == squall::error::bad_backend);
    CHECK(std::string(e.what()).find("nonsense") != std::string::npos);
  }
  if (old)
    ::setenv("SQUALL_BACKEND", saved.c_str(), 1);
  else
    ::unsetenv("SQUALL_BACKEND");
#if !SQUALL_HAVE_KQUEUE
  CHECK_THROWS_AS(io_loop(io_loop::options{.backend = squall::backend_kind::kqueue}),
                  std::system_error);
#endif
}

TEST_CASE("a loop with nothing to do sleeps instead of spinning") {
  io_loop loop;
  double cpu0 = thread_cpu_seconds();
  auto t0 = io_loop::now();
  loop.call_later(300ms, [&] { loop.stop(); });
  loop.run();
  double cpu = thread_cpu_seconds() - cpu0;
  CHECK(io_loop::now() - t0 >= 300ms);
  CHECK(cpu < 0.05);  // a spinning loop would burn ~0.3 s here
}

TEST_CASE("io_loop::current() is per thread") {
  io_loop* mine = &io_loop::current();
  CHECK(&io_loop::current() == mine);
  io_loop* other = nullptr;
  std::thread t([&] {
    CHECK(io_loop::current_or_null() == nullptr);
    other = &io_loop::current();
  });
  t.join();
  CHECK(other != nullptr);
  CHECK(other != mine);
}

// --- Regressions from review: each of these failed (hang, use-after-free, wrong report) before
// its fix.

TEST_CASE("bursts of cross-thread posts are never left unheard by a sleeping loop") {
  // Before the fix, the wake flag could be left set with nothing written to the eventfd, and
  // every later post was skipped: the loop slept forever with callbacks queued.
  io_loop* lp = nullptr;
  std::atomic<bool> ready{false};
  std::atomic<long> ran{0};
  std::thread runner([&] {
    io_loop loop(io_loop::options{.make_current = false});
    lp = &loop;
    ready = true;
    loop.run();
  });
  while (!ready)
    std::this_thread::yield();
  io_loop& loop = *lp;
  long posted = 0;
  bool hung = false;
  auto end = io_loop::now() + 2s;
  for (int round = 0; round < 3000 && io_loop::now() < end && !hung; ++round) {
    std::vector<std::thread> posters;
    for (int p = 0; p < 2; ++p)
      posters.emplace_back([&, p] {
        for (int i = 0; i < 50; ++i) {
          loop.add_callback([&] { ++ran; });
          if ((i + p) % 7 == 0) std::this_thread::sleep_for(std::chrono::microseconds(i % 5));
        }
      });
    for (auto& t : posters)
      t.join();
    posted += 100;
    auto deadline = io_loop::now() + 5s;
    while (ran.load() != posted && io_loop::now() < deadline)
      std::this_thread::sleep_for(50us);
    hung = ran.load() != posted;
  }
  CHECK_FALSE(hung);
  loop.stop();
  runner.join();
}

TEST_CASE("stop() from the creating thread reaches a loop another thread just started") {
  // Before the fix the creating thread took the unlocked path while the new thread was already
  // iterating: a data race, and no wake-up, so run() never returned.
  for (int round = 0; round < 300; ++round) {
    io_loop loop(io_loop::options{.make_current = false});
    std::atomic<bool> returned{false};
    std::thread t([&] {
      loop.run();
      returned = true;
    });
    if (round % 2) std::this_thread::sleep_for(std::chrono::microseconds(round % 50));
    loop.stop();
    auto deadline = io_loop::now() + 5s;
    while (!returned && io_loop::now() < deadline)
      std::this_thread::sleep_for(100us);
    REQUIRE(returned);
    t.join();
  }
}

TEST_CASE("a report for a removed fd is not delivered to a new handler on the reused number") {
  io_loop loop;
  int pb[2];
  REQUIRE(::pipe2(pb, O_NONBLOCK | O_CLOEXEC) == 0);
  int sa[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sa) == 0);
  int old_fd = sa[0], fresh[2] = {-1, -1};
  unsigned fresh_events = 0;
  bool old_called = false;
  loop.add_handler(old_fd, io_loop::read, [&](int, unsigned) { old_called = true; });
  loop.add_handler(pb[0], io_loop::read, [&](int fd, unsigned) {
    char c;
    (void)::read(fd, &c, 1);
    loop.remove_handler(old_fd);
    ::close(old_fd);
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fresh) == 0);
    loop.add_handler(fresh[0], io_loop::read, [&](int, unsigned ev) { fresh_events = ev; });
  });
  loop.run_once(0ms);
  REQUIRE(::write(pb[1], "x", 1) == 1);
  ::close(sa[1]);  // the old fd's peer hangs up in the same iteration
  loop.run_once(100ms);
  INFO("old fd " << old_fd << ", fresh fd " << fresh[0]);
  CHECK(fresh_events == 0);  // nothing was sent on the fresh socket, and it is not hung up
  loop.remove_handler(pb[0]);
  loop.remove_handler(fresh[0]);
  for (int fd : {pb[0], pb[1], fresh[0], fresh[1]})
    ::close(fd);
  (void)old_called;
}

TEST_CASE("a handler that removes itself, re-adds and removes again does not free itself") {
  io_loop loop;
  pipe_pair p;
  int calls = 0;
  std::function<void(int, unsigned)> again = [](int, unsigned) {};
  loop.add_handler(p.r, io_loop::read, [&, big = std::string(100, 'x')](int fd, unsigned) {
    ++calls;
    loop.remove_handler(fd);
    loop.add_handler(fd, io_loop::read, [](int, unsigned) {});
    loop.remove_handler(fd);
    CHECK(big.size() == 100);  // our captures are still alive (ASan would catch otherwise)
  });
  REQUIRE(::write(p.w, "x", 1) == 1);
  CHECK(run_until(loop, [&] { return calls == 1; }));
  CHECK(loop_is_clean(loop));
}

TEST_CASE("stop() while driven by run_once does not leave the loop spinning") {
  io_loop loop;
  loop.stop();
  loop.run_once(0ms);
  CHECK(loop.backend_timeout_ms() == -1);  // nothing to do: the host may sleep
  auto t0 = io_loop::now();
  loop.run_once(30ms);
  CHECK(io_loop::now() - t0 >= 25ms);  // it blocked instead of returning at once
}

TEST_CASE("odd timeouts: a negative wait does not block, a forever delay never fires") {
  io_loop loop;
  auto t0 = io_loop::now();
  loop.run_once(-5s);
  CHECK(io_loop::now() - t0 < 1s);
  bool fired = false;
  auto h = loop.call_later(io_loop::forever, [&] { fired = true; });
  loop.run_once(5ms);
  CHECK_FALSE(fired);
  CHECK(h.pending());
  CHECK(loop.backend_timeout_ms() > 1000);
  h.cancel();
}

TEST_CASE("both backends refuse regular files and closed fds the same way") {
  io_loop loop;
  char path[] = "/tmp/squall-regular-XXXXXX";
  int file = ::mkstemp(path);
  REQUIRE(file >= 0);
  ::unlink(path);
  try {
    loop.add_handler(file, io_loop::read, [](int, unsigned) {});
    FAIL("a regular file was accepted");
  } catch (const std::system_error& e) {
    CHECK(e.code() == std::errc::operation_not_permitted);
  }
  ::close(file);
  try {
    loop.add_handler(file, io_loop::read, [](int, unsigned) {});
    FAIL("a closed fd was accepted");
  } catch (const std::system_error& e) {
    CHECK(e.code() == std::errc::bad_file_descriptor);
  }
  CHECK(loop_is_clean(loop));
}

TEST_CASE("a signal handler may remove itself while it runs") {
  io_loop loop;
  int calls = 0;
  loop.add_signal_handler(SIGUSR1, [&, big = std::string(100, 'y')](int) {
    ++calls;
    loop.remove_signal_handler(SIGUSR1);
    CHECK(big.size() == 100);
  });
  ::raise(SIGUSR1);
  CHECK(run_until(loop, [&] { return calls == 1; }));
  CHECK(loop_is_clean(loop));
}

TEST_CASE("a throwing log sink does not make callbacks run twice") {
  squall::set_log_sink([](squall::log_level, std::string_view, std::string_view) {
    throw std::runtime_error("sink exploded");
  });
  io_loop loop;
  int a = 0;
  loop.add_callback([&] { ++a; });
  loop.add_callback([] { throw std::runtime_error("logged through the bad sink"); });
  loop.run_once(0ms);
  loop.run_once(0ms);
  squall::set_log_sink(nullptr);
  CHECK(a == 1);
}

TEST_CASE("io_loop::current() gives back the same default loop after another was current") {
  io_loop* def = nullptr;
  std::thread t([&] {
    io_loop& first = io_loop::current();
    {
      io_loop other;  // becomes current only if none is: make it so explicitly
      other.make_current();
      CHECK(&io_loop::current() == &other);
    }
    def = &io_loop::current();
    CHECK(def == &first);
    first.add_callback([] {});  // still alive
    first.run_once(0ms);
  });
  t.join();
  CHECK(def != nullptr);
}

#if SQUALL_HAVE_IO_URING
TEST_CASE("when io_uring cannot be set up, the loop falls back to epoll and says why once") {
  // The child forbids io_uring_setup with seccomp, as a locked-down container does.
  std::string cmd = std::string(SQUALL_CRASH_HELPER) + " no-io-uring 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  std::string out;
  char buf[512];
  while (std::size_t n = std::fread(buf, 1, sizeof buf, p))
    out.append(buf, n);
  int status = ::pclose(p);
  INFO(out);
  CHECK(status == 0);
  CHECK(out.find("backend=epoll") != std::string::npos);
  CHECK(out.find("io_uring set-up failed (Operation not permitted); falling back to epoll") !=
        std::string::npos);
}
#endif
