// SPDX-License-Identifier: MIT
// A client process for tcp_test: opens N connections to HOST:PORT at once (one fiber each),
// does one echo round trip on each ("ping TOKEN I"), says "all open" once every connection has,
// holds them all open for a moment, then closes them and prints "N connections ok". Exit status
// 1 on any failure. TOKEN (argv[4]) lets the server tell these connections from strays.
#include <cstdio>
#include <cstdlib>
#include <string>

#include "squall/locks.hpp"
#include "squall/tcp_client.hpp"

int main(int argc, char** argv) {
  if (argc != 5) return 2;
  std::string token = argv[4];
  squall::address to = squall::address::ip(argv[1], static_cast<std::uint16_t>(std::atoi(argv[2])));
  int n = std::atoi(argv[3]);
  squall::io_loop loop;
  auto cfg = squall::get_fiber_config(loop);
  cfg.stack_size = 64 * 1024;
  squall::set_fiber_config(loop, cfg);
  int ready = 0, failed = 0;
  squall::event all_ready, release;
  std::vector<squall::fiber<void>> fs;
  for (int i = 0; i < n; ++i) {
    fs.push_back(squall::spawn(loop, [&, i] {
      try {
        squall::io_stream c =
            squall::tcp_connect(to, {.deadline = squall::clock::now() + std::chrono::seconds(60)});
        std::string msg = "ping " + token + " " + std::to_string(i) + "\n";
        c.write(msg);
        c.flush();
        if (c.read_until("\n", 64) != msg) throw std::runtime_error("bad echo");
        if (++ready == n) all_ready.set();
        release.wait();
      } catch (const std::exception& e) {
        if (failed++ < 5) std::fprintf(stderr, "connection %d: %s\n", i, e.what());
        if (ready + failed == n) all_ready.set();
      }
    }));
  }
  squall::run_sync(loop, [&] {
    all_ready.wait();
    if (failed == 0) {
      std::printf("all open\n");
      std::fflush(stdout);
      squall::this_fiber::sleep_for(std::chrono::milliseconds(300));
    }
    release.set();
    for (auto& f : fs)
      f.join();
  });
  if (failed) {
    std::printf("%d of %d connections failed\n", failed, n);
    return 1;
  }
  std::printf("%d connections ok\n", n);
  return 0;
}
