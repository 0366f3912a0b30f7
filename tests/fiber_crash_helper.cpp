// SPDX-License-Identifier: MIT
// A child process for fiber_test: things that kill or exhaust a process, kept out of the test
// binary itself.
//   overflow   a fiber recurses until it hits its guard page (expected: dies of SIGSEGV after
//              printing "fiber stack overflow in fiber 'recurse-forever'")
//   map-limit  spawns guard-paged fibers until vm.max_map_count runs out (expected: a
//              std::system_error naming max_map_count; exit 0)
//   no-io-uring  forbids io_uring_setup with a seccomp filter, then asks for an io_uring loop
//              (expected: the loop falls back to epoll with one log line saying why)
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#include <cerrno>
#include <cstddef>
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

int no_io_uring() {
  // A seccomp filter that fails io_uring_setup with EPERM, as a locked-down container would.
  sock_filter filter[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  sock_fprog prog{static_cast<unsigned short>(sizeof filter / sizeof filter[0]), filter};
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
      ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) {
    std::perror("seccomp");
    return 2;
  }
  squall::io_loop loop(squall::io_loop::options{.backend = squall::backend_kind::io_uring});
  std::printf("backend=%s\n", loop.backend_name());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  if (std::strcmp(argv[1], "overflow") == 0) return overflow();
  if (std::strcmp(argv[1], "map-limit") == 0) return map_limit();
  if (std::strcmp(argv[1], "no-io-uring") == 0) return no_io_uring();
  return 2;
}
