// SPDX-License-Identifier: MIT
// buffer_pool: a loop's free I/O buffers, lent to its streams.
//
// Why: with a buffer per connection, every request of a server with many connections lands in
// memory that has gone cold since that connection's last request (the kernel writes the
// request into it, the parser reads it, the response is built in a second one and the kernel
// reads that). A stream that holds a buffer only while there are bytes in it, and gives it
// back when it empties, lets the next stream take the buffer just used, still in the cache and
// the TLB: the pool is a stack (last in, first out) for that reason. Idle connections then
// hold no buffers at all, which is also what keeps a server with 10,000 idle WebSockets small.
//
// Buffers are plain malloc() blocks of block_size bytes: a holder may free() one instead of
// giving it back (a stream that outlives its calls does). The pool keeps at most `max_free`;
// beyond that a returned buffer is freed, so a burst does not leave memory behind.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <new>
#include <vector>

namespace squall::detail {

class buffer_pool {
 public:
  static constexpr std::size_t block_size = 64 * 1024;

  explicit buffer_pool(std::size_t max_free) noexcept : max_free_(max_free) {}
  buffer_pool(const buffer_pool&) = delete;
  buffer_pool& operator=(const buffer_pool&) = delete;
  ~buffer_pool() {
    for (char* b : free_)
      std::free(b);
  }

  // The buffer given back last, or a new one. Throws std::bad_alloc.
  char* take() {
    if (!free_.empty()) {
      char* b = free_.back();
      free_.pop_back();
      return b;
    }
    auto* b = static_cast<char*>(std::malloc(block_size));
    if (!b) throw std::bad_alloc();
    return b;
  }

  // Takes back a buffer from take() (or any malloc() block of block_size bytes). The free
  // buffers are listed apart, not linked through themselves: a buffer comes back when the
  // kernel is done with it, a whole batch of connections later, and writing a link into it
  // then cost a cache (and TLB) miss per request at 1,000 connections.
  void give(char* b) noexcept {
    if (free_.size() >= max_free_) {
      std::free(b);
      return;
    }
    try {
      free_.push_back(b);
    } catch (...) {
      std::free(b);
    }
  }

  std::size_t free_count() const noexcept { return free_.size(); }

 private:
  std::vector<char*> free_;  // a stack: the last given back is taken first
  std::size_t max_free_;
};

}  // namespace squall::detail
