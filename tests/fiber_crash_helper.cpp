// SPDX-License-Identifier: MIT
// A child process for fiber_test: things that kill or exhaust a process, kept out of the test
// binary itself.
//   overflow   a fiber recurses until it hits its guard page (expected: dies of SIGSEGV after
//              printing "fiber stack overflow in fiber 'recurse-forever'")
//   map-limit  spawns guard-paged fibers until vm.max_map_count runs out (expected: a
//              std::system_error naming max_map_count; exit 0)
#include <cstdio>
#include <cstring>
#include <string>
#include <system_error>
#include <vector>

#include "squall/fiber.hpp"

namespace {

int depth(int n) {
  volatile char pad[512];
  pad[0] = static_cast<char>(n);
  return n > 1000000000 ? pad[0] : depth(n + 1) + pad[0];
}

int overflow() {
  squall::io_loop loop;
  auto f = squall::spawn(loop, [] { return depth(0); },
                         {.name = "recurse-forever", .stack_size = 64 * 1024});
  squall::run_sync(loop, [&] { return f.join(); });
  return 0;  // not reached
}

int map_limit() {
  squall::io_loop loop;
  auto cfg = squall::get_fiber_config(loop);
  cfg.stack_size = 16 * 1024;
  squall::set_fiber_config(loop, cfg);
  std::vector<squall::fiber<void>> fibers;
  try {
    for (int i = 0; i < 200000; ++i)
      fibers.push_back(squall::spawn(loop, [] {}));
    std::printf("spawned 200000 fibers without running out of mappings\n");
    return 1;
  } catch (const std::system_error& e) {
    std::printf("spawned %zu fibers, then: %s\n", fibers.size(), e.what());
  }
  for (auto& f : fibers)
    f.cancel();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  if (std::strcmp(argv[1], "overflow") == 0) return overflow();
  if (std::strcmp(argv[1], "map-limit") == 0) return map_limit();
  return 2;
}
