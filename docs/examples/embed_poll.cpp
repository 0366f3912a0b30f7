// SPDX-License-Identifier: MIT
// Embedding squall in a program that owns its main loop (here a plain poll() loop).
//
// The host watches two things for squall: loop.backend_fd() for readability, and
// loop.backend_timeout_ms() as its poll timeout. Whenever poll() returns, it calls
// loop.run_once(zero), which runs whatever is ready and never blocks. The host's own fds sit in
// the same poll() call. Build: meson builds it as docs/examples/embed_poll; run it with no
// arguments. It exits 0 once a timer, a callback from another thread and a pipe handler have
// all run inside squall while the host's poll() loop was in charge.
#include <poll.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <thread>

#include "squall/io_loop.hpp"

int main() {
  using namespace std::chrono_literals;
  squall::io_loop loop;
  bool timer_fired = false, callback_ran = false, pipe_read = false, done = false;

  // 1. A timer.
  loop.call_later(20ms, [&] { timer_fired = true; });

  // 2. An fd handler on a pipe that another thread writes to.
  int p[2];
  if (::pipe(p) != 0) return 1;
  loop.add_handler(p[0], squall::io_loop::read, [&](int fd, unsigned) {
    char c;
    if (::read(fd, &c, 1) == 1) pipe_read = true;
  });

  // 3. A callback posted from another thread (add_callback is thread-safe).
  std::thread other([&] {
    std::this_thread::sleep_for(40ms);
    loop.add_callback([&] { callback_ran = true; });
    std::this_thread::sleep_for(10ms);
    if (::write(p[1], "x", 1) != 1) std::perror("write");
  });

  // The host's loop. A real host (GLib, Qt, ...) does the same with its own fd watch and timer.
  int host_iterations = 0;
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (!done && std::chrono::steady_clock::now() < deadline) {
    pollfd pfd{loop.backend_fd(), POLLIN, 0};
    int timeout = loop.backend_timeout_ms();
    if (timeout < 0 || timeout > 1000) timeout = 1000;  // the host's own housekeeping tick
    ::poll(&pfd, 1, timeout);
    loop.run_once(squall::duration::zero());
    ++host_iterations;
    done = timer_fired && callback_ran && pipe_read;
  }
  other.join();
  loop.remove_handler(p[0]);
  ::close(p[0]);
  ::close(p[1]);

  std::printf("backend=%s timer=%d callback=%d pipe=%d host_iterations=%d\n", loop.backend_name(),
              timer_fired, callback_ran, pipe_read, host_iterations);
  return done ? 0 : 1;
}
