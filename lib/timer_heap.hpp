// SPDX-License-Identifier: MIT
// timer_heap: the loop's pending timers, a 4-ary min-heap of deadlines over a pool of slots.
//
// Why this shape: every connection arms and cancels timeouts, so both must be cheap at millions
// of timers. A 4-ary heap is half as deep as a binary one and its four children share a cache
// line or two (24-byte entries), which makes push and pop faster than a binary heap. Each
// slot remembers its heap position, so cancel is O(log n) with no search and no tombstones
// (tombstones would let cancelled timers pile up). Slots are recycled through a free list, so
// once the pool has grown to the peak number of timers nothing is allocated.
//
// Ties: timers with the same deadline pop in the order they were pushed (a 64-bit sequence
// number breaks ties; it never wraps in practice, where a 32-bit one could within minutes).
#pragma once

#include <cstdint>
#include <source_location>
#include <vector>

#include "squall/unique_function.hpp"

namespace squall::detail {

class timer_heap {
 public:
  struct fired {
    unique_function<void()> fn;
    std::source_location where;
  };

  // Adds a timer; returns its slot and sets `gen` to the slot's generation (the pair names the
  // timer for cancel()).
  std::uint32_t push(std::int64_t when, unique_function<void()> fn, std::source_location where,
                     std::uint32_t& gen) {
    std::uint32_t s = alloc_slot();
    slot& sl = slots_[s];
    sl.fn = std::move(fn);
    sl.where = where;
    gen = meta_[s].gen;
    std::uint32_t pos = static_cast<std::uint32_t>(heap_.size());
    heap_.push_back(entry{when, seq_++, s});
    sift_up(pos);
    return s;
  }

  // A live slot's generation is odd; freeing it makes it even, so (slot, gen) of a fired or
  // cancelled timer never matches again.
  bool pending(std::uint32_t s, std::uint32_t gen) const noexcept {
    return s < meta_.size() && meta_[s].gen == gen && (gen & 1);
  }

  // Removes the timer if it is still pending. Its callback is destroyed here.
  bool cancel(std::uint32_t s, std::uint32_t gen) {
    if (!pending(s, gen)) return false;
    remove_at(meta_[s].heap_pos);
    free_slot(s).reset();
    return true;
  }

  bool empty() const noexcept { return heap_.empty(); }
  std::size_t size() const noexcept { return heap_.size(); }
  // Deadline of the earliest timer; only valid when !empty().
  std::int64_t earliest() const noexcept { return heap_.front().when; }

  // If the earliest timer is due at `now`, removes it, moves its callback into `out` and
  // returns true.
  bool pop_due(std::int64_t now, fired& out) {
    if (heap_.empty() || heap_.front().when > now) return false;
    std::uint32_t s = heap_.front().slot;
    remove_at(0);
    out.where = slots_[s].where;
    out.fn = std::move(free_slot(s));
    return true;
  }

 private:
  struct entry {
    std::int64_t when;
    std::uint64_t seq;
    std::uint32_t slot;
  };
  // The callback half of a slot, touched when a timer is pushed and when it fires.
  struct slot {
    unique_function<void()> fn;
    std::source_location where;
  };
  // The bookkeeping half, touched at every level of every sift: kept apart and small (8 bytes)
  // so that sifting a million timers writes into 8 MB instead of striding through the 64-byte
  // callback slots.
  struct meta {
    std::uint32_t heap_pos = 0;  // while live: index in heap_; while free: next free slot
    std::uint32_t gen = 0;       // odd while live
  };
  static constexpr std::uint32_t no_slot = 0xffffffffu;

  static bool before(const entry& a, const entry& b) noexcept {
    if (a.when != b.when) return a.when < b.when;
    return a.seq < b.seq;
  }

  std::uint32_t alloc_slot() {
    if (free_head_ != no_slot) {
      std::uint32_t s = free_head_;
      free_head_ = meta_[s].heap_pos;
      ++meta_[s].gen;  // now odd: live
      return s;
    }
    slots_.emplace_back();
    meta_.push_back(meta{0, 1});
    return static_cast<std::uint32_t>(slots_.size() - 1);
  }

  // Marks slot `s` free and returns its callback for the caller to move out or reset. The
  // generation moves on, so handles to the old timer go stale.
  unique_function<void()>& free_slot(std::uint32_t s) noexcept {
    ++meta_[s].gen;  // now even: free
    meta_[s].heap_pos = free_head_;
    free_head_ = s;
    return slots_[s].fn;
  }

  void place(std::uint32_t pos, const entry& e) noexcept {
    heap_[pos] = e;
    meta_[e.slot].heap_pos = pos;
  }

  void remove_at(std::uint32_t pos) noexcept {
    entry last = heap_.back();
    heap_.pop_back();
    if (pos == heap_.size()) return;
    place(pos, last);
    // The moved entry may belong above or below its new position.
    if (pos > 0 && before(last, heap_[(pos - 1) / 4]))
      sift_up(pos);
    else
      sift_down(pos);
  }

  void sift_up(std::uint32_t pos) noexcept {
    entry e = heap_[pos];
    while (pos > 0) {
      std::uint32_t parent = (pos - 1) / 4;
      if (!before(e, heap_[parent])) break;
      place(pos, heap_[parent]);
      pos = parent;
    }
    place(pos, e);
  }

  void sift_down(std::uint32_t pos) noexcept {
    entry e = heap_[pos];
    const std::uint32_t n = static_cast<std::uint32_t>(heap_.size());
    for (;;) {
      std::uint32_t first = pos * 4 + 1;
      if (first >= n) break;
      std::uint32_t last = first + 4 < n ? first + 4 : n;
      std::uint32_t best = first;
      for (std::uint32_t c = first + 1; c < last; ++c)
        if (before(heap_[c], heap_[best])) best = c;
      if (!before(heap_[best], e)) break;
      place(pos, heap_[best]);
      pos = best;
    }
    place(pos, e);
  }

  std::vector<entry> heap_;
  std::vector<slot> slots_;
  std::vector<meta> meta_;
  std::uint32_t free_head_ = no_slot;
  std::uint64_t seq_ = 0;
};

}  // namespace squall::detail
