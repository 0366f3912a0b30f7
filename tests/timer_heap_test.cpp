// SPDX-License-Identifier: MIT
// timer_heap: order, FIFO ties, cancel anywhere in the heap, slot reuse — against a simple model.
#include "timer_heap.hpp"

#include <doctest/doctest.h>

#include <map>
#include <random>
#include <utility>
#include <vector>

using squall::detail::timer_heap;

namespace {

std::uint32_t push_id(timer_heap& h, std::int64_t when, int id, std::vector<int>& out,
                      std::uint32_t& gen) {
  return h.push(
      when, [&out, id] { out.push_back(id); }, std::source_location::current(), gen);
}

}  // namespace

TEST_CASE("timer_heap pops in deadline order with FIFO ties") {
  timer_heap h;
  std::vector<int> out;
  std::uint32_t g;
  push_id(h, 30, 3, out, g);
  push_id(h, 10, 0, out, g);
  push_id(h, 20, 1, out, g);
  push_id(h, 20, 2, out, g);
  CHECK(h.earliest() == 10);
  timer_heap::fired f;
  CHECK_FALSE(h.pop_due(5, f));
  while (h.pop_due(100, f))
    f.fn();
  CHECK(out == std::vector<int>{0, 1, 2, 3});
  CHECK(h.empty());
}

TEST_CASE("timer_heap agrees with a model under random pushes, cancels and pops") {
  // The model: a multimap keyed by (deadline, push order), which is exactly the promised order.
  std::mt19937_64 rng(12345);
  timer_heap h;
  std::map<std::pair<std::int64_t, int>, std::pair<std::uint32_t, std::uint32_t>> model;
  std::vector<int> out;
  std::vector<std::pair<std::uint32_t, std::uint32_t>> stale;
  int next_id = 0;
  std::int64_t now = 0;
  for (int step = 0; step < 200000; ++step) {
    int op = static_cast<int>(rng() % 10);
    if (op < 5) {
      std::int64_t when = now + static_cast<std::int64_t>(rng() % 1000);
      std::uint32_t gen;
      int id = next_id++;
      std::uint32_t slot = push_id(h, when, id, out, gen);
      model[{when, id}] = {slot, gen};
    } else if (op < 8 && !model.empty()) {
      auto it = model.begin();
      std::advance(it, static_cast<long>(rng() % model.size()));
      REQUIRE(h.cancel(it->second.first, it->second.second));
      stale.push_back(it->second);
      model.erase(it);
    } else {
      now += static_cast<std::int64_t>(rng() % 50);
      timer_heap::fired f;
      while (h.pop_due(now, f)) {
        out.clear();
        f.fn();
        REQUIRE(!model.empty());
        REQUIRE(out.size() == 1);
        auto first = model.begin();
        REQUIRE(first->first.first <= now);
        REQUIRE(out[0] == first->first.second);
        stale.push_back(first->second);
        model.erase(first);
      }
      REQUIRE((model.empty() || model.begin()->first.first > now));
    }
    REQUIRE(h.size() == model.size());
    if (!model.empty()) REQUIRE(h.earliest() == model.begin()->first.first);
  }
  // Every handle of a fired or cancelled timer is stale, even though slots were reused.
  for (auto& [slot, gen] : stale)
    REQUIRE_FALSE(h.cancel(slot, gen));
  CHECK(h.size() == model.size());
}
