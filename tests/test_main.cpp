// SPDX-License-Identifier: MIT
// doctest main for every test binary: checks that the backend asked for in SQUALL_BACKEND is
// the one a loop really gets, so a silent fallback cannot turn the io_uring run into a second
// epoll run.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "squall/io_loop.hpp"

int main(int argc, char** argv) {
  if (const char* want = std::getenv("SQUALL_BACKEND"); want && *want) {
    squall::io_loop probe(squall::io_loop::options{.make_current = false});
    if (std::strcmp(probe.backend_name(), want) != 0) {
      std::fprintf(stderr, "SQUALL_BACKEND=%s but the loop runs %s: refusing to run\n", want,
                   probe.backend_name());
      return 1;
    }
    std::printf("[squall] backend: %s\n", want);
  }
  doctest::Context ctx(argc, argv);
  return ctx.run();
}
