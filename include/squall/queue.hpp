// SPDX-License-Identifier: MIT
// queue<T>: a FIFO between fibers of one loop, bounded or not (tornado.queues.Queue).
//
// put() waits while the queue is full, get() while it is empty. Items are handed over directly
// to a waiting getter (and taken directly from a waiting putter), so waiters are served in FIFO
// order and a fiber that arrives later cannot overtake one that waits. Waits take an absolute
// deadline and throw std::system_error with error::timed_out or error::cancelled, like every
// squall wait. Not thread-safe: fibers of one loop only.
#pragma once

#include <cstddef>
#include <deque>
#include <optional>
#include <stdexcept>
#include <utility>

#include "squall/fiber.hpp"

namespace squall {

template <class T>
class queue {
 public:
  // max_size 0 means unbounded.
  explicit queue(std::size_t max_size = 0) : max_(max_size) {}
  queue(const queue&) = delete;
  queue& operator=(const queue&) = delete;

  std::size_t size() const noexcept { return items_.size(); }
  std::size_t max_size() const noexcept { return max_; }
  bool empty() const noexcept { return items_.empty(); }
  bool full() const noexcept { return max_ != 0 && items_.size() >= max_; }

  // Adds `item`, waiting while the queue is full.
  void put(T item, time_point deadline = time_point::max()) {
    if (try_put_ref(item)) return;
    putter p{std::move(item), {}, nullptr};
    detail::waiter& w = park(putters_, p, "queue put");
    if (std::error_code ec = detail::suspend(w, deadline))
      throw std::system_error(ec, "squall: queue::put");
    // Normal return: a getter moved our item into the queue (or took it).
  }

  // Adds `item` if there is room now; returns false (and leaves `item` alone) otherwise.
  bool try_put(T item) { return try_put_ref(item); }

  // Removes and returns the oldest item, waiting while the queue is empty.
  T get(time_point deadline = time_point::max()) {
    if (auto v = try_get()) return std::move(*v);
    getter g;
    detail::waiter& w = park(getters_, g, "queue get");
    if (std::error_code ec = detail::suspend(w, deadline))
      throw std::system_error(ec, "squall: queue::get");
    return std::move(*g.slot);
  }

  // Removes and returns the oldest item if there is one.
  std::optional<T> try_get() {
    if (items_.empty()) return std::nullopt;
    std::optional<T> v(std::move(items_.front()));
    items_.pop_front();
    refill_from_putter();
    return v;
  }

 private:
  struct getter {
    detail::waiter w;
    detail::wait_list* list = nullptr;
    std::optional<T> slot;
  };
  struct putter {
    T item;
    detail::waiter w;
    detail::wait_list* list = nullptr;
  };

  // Links the getter/putter `p` (on the waiting fiber's stack) into `list`; w.data points back
  // at `p` so the other side can reach its slot or item.
  template <class P>
  detail::waiter& park(detail::wait_list& list, P& p, const char* what) {
    p.list = &list;
    p.w.what = what;
    p.w.data = &p;
    p.w.abandon = [](detail::waiter& me) {
      static_cast<P*>(me.data)->list->remove(me);
      detail::wake(me, me.abandon_reason);
    };
    list.push_back(p.w);
    return p.w;
  }

  template <class P>
  static P& owner(detail::waiter& w) {
    return *static_cast<P*>(w.data);
  }

  bool try_put_ref(T& item) {
    if (detail::waiter* w = getters_.pop_front()) {
      // Someone waits for an item: the queue is empty, hand it over directly.
      owner<getter>(*w).slot.emplace(std::move(item));
      detail::wake(*w);
      return true;
    }
    if (full()) return false;
    items_.push_back(std::move(item));
    return true;
  }

  // A slot freed up: the longest-waiting putter's item moves in.
  void refill_from_putter() {
    if (full()) return;
    if (detail::waiter* w = putters_.pop_front()) {
      items_.push_back(std::move(owner<putter>(*w).item));
      detail::wake(*w);
    }
  }

  std::size_t max_;
  std::deque<T> items_;
  detail::wait_list getters_;
  detail::wait_list putters_;
};

}  // namespace squall
