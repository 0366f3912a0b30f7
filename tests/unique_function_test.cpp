// SPDX-License-Identifier: MIT
// unique_function: small targets inline, big ones on the heap, moves and destruction exact.
#include "squall/unique_function.hpp"

#include <doctest/doctest.h>

#include <array>
#include <memory>

namespace {
struct counted {
  static inline int alive = 0;
  int* calls;
  explicit counted(int* c) : calls(c) { ++alive; }
  counted(counted&& o) noexcept : calls(o.calls) { ++alive; }
  ~counted() { --alive; }
  void operator()() { ++*calls; }
};
}  // namespace

TEST_CASE("unique_function holds move-only targets and destroys each exactly once") {
  int calls = 0;
  {
    squall::unique_function<void()> f = counted(&calls);
    CHECK(counted::alive == 1);
    squall::unique_function<void()> g = std::move(f);
    CHECK_FALSE(f);
    CHECK(counted::alive == 1);
    g();
    g();
    CHECK(calls == 2);
    auto p = std::make_unique<int>(7);
    squall::unique_function<int(int)> h = [p = std::move(p)](int x) { return *p + x; };
    CHECK(h(1) == 8);
  }
  CHECK(counted::alive == 0);
}

TEST_CASE("unique_function stores big targets on the heap and still moves them") {
  std::array<char, 200> big{};
  big[199] = 'z';
  squall::unique_function<char()> f = [big] { return big[199]; };
  squall::unique_function<char()> g;
  g = std::move(f);
  CHECK(g() == 'z');
  CHECK_FALSE(f);
  CHECK_THROWS_AS(f(), std::bad_function_call);
  g = nullptr;
  CHECK_FALSE(g);
}
