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

namespace squall::detail {

class buffer_pool {
 public:
  static constexpr std::size_t block_size = 64 * 1024;

  explicit buffer_pool(std::size_t max_free) noexcept : max_free_(max_free) {}
  buffer_pool(const buffer_pool&) = delete;
  buffer_pool& operator=(const buffer_pool&) = delete;
  ~buffer_pool() {
    while (head_) {
      node* n = head_;
      head_ = n->next;
      n->~node();
      std::free(n);
    }
  }

  // The buffer given back last, or a new one. Throws std::bad_alloc.
  char* take() {
    if (node* n = head_) {
      head_ = n->next;
      --free_;
      n->~node();
      return reinterpret_cast<char*>(n);
    }
    auto* b = static_cast<char*>(std::malloc(block_size));
    if (!b) throw std::bad_alloc();
    return b;
  }

  // Takes back a buffer from take() (or any malloc() block of block_size bytes).
  void give(char* b) noexcept {
    if (free_ >= max_free_) {
      std::free(b);
      return;
    }
    head_ = new (b) node{head_};  // the link lives in the free buffer itself
    ++free_;
  }

  std::size_t free_count() const noexcept { return free_; }

 private:
  struct node {
    node* next;
  };
  node* head_ = nullptr;
  std::size_t free_ = 0;
  std::size_t max_free_;
};

}  // namespace squall::detail
