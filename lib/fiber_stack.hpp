// SPDX-License-Identifier: MIT
// Fiber stacks: mmap'd regions with an optional guard page, a per-loop pool, and the SIGSEGV
// handler that names the fiber whose stack overflowed.
#pragma once

#include <cstddef>
#include <vector>

namespace squall::detail {

struct fiber_record;

struct stack_region {
  void* base = nullptr;   // start of the mapping (the guard page, if any)
  std::size_t size = 0;   // usable bytes, above the guard
  std::size_t guard = 0;  // bytes of guard at `base`
  void* top() const noexcept { return static_cast<char*>(base) + guard + size; }
  void* bottom() const noexcept { return static_cast<char*>(base) + guard; }
};

// Maps a stack of at least `size` bytes (rounded up to pages) with a guard page below it if
// `guard`. Throws std::system_error (ENOMEM with a message about vm.max_map_count) on failure.
stack_region map_stack(std::size_t size, bool guard, std::size_t live_fibers);
void unmap_stack(const stack_region& s) noexcept;

// Freed stacks of one size and guard setting, kept for reuse.
class stack_pool {
 public:
  ~stack_pool();
  stack_region get(std::size_t size, bool guard, std::size_t live_fibers);
  void put(const stack_region& s, std::size_t max_pooled) noexcept;

 private:
  std::vector<stack_region> free_;
};

// Installs (once per process) the SIGSEGV handler that reports fiber stack overflows, and
// (once per thread) the alternate signal stack it runs on.
void prepare_overflow_reporting();

}  // namespace squall::detail
