// SPDX-License-Identifier: MIT
// Fiber stacks: mapping, guard pages, pooling, and the overflow report.
//
// A guard-paged stack is two kernel mappings (the PROT_NONE guard and the stack), and the
// kernel's vm.max_map_count (65530 by default) caps the mappings of a process, so about 32,000
// guarded fibers can be live at once. Stacks are MAP_NORESERVE: only the pages a fiber touches
// cost memory.
//
// Overflow: a fiber that runs off the bottom of its stack hits the guard page and faults. The
// SIGSEGV handler (on an alternate stack, since the fiber's is exhausted) checks whether the
// fault address lies in or just below the running fiber's guard page; if so it prints
// "squall: fiber stack overflow in fiber '<name>'" and returns with the previous disposition
// restored, so the fault repeats and the process dies the usual way (core dump).
#include "fiber_stack.hpp"

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <system_error>

#include "squall/fiber.hpp"

#if defined(__SANITIZE_ADDRESS__)  // as in fiber.cpp
#include <sanitizer/asan_interface.h>
#endif

namespace squall::detail {
namespace {

std::size_t page_size() {
  static const std::size_t p = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  return p;
}

std::size_t round_to_page(std::size_t n) {
  std::size_t p = page_size();
  return (n + p - 1) / p * p;
}

[[noreturn]] void throw_map_failure(int err, std::size_t size, std::size_t live) {
  throw std::system_error(
      err, std::system_category(),
      "squall: cannot map a " + std::to_string(size / 1024) + " KiB fiber stack with " +
          std::to_string(live) +
          " fibers live (each guard-paged stack uses 2 of the kernel's vm.max_map_count "
          "mappings; raise it with sysctl, use smaller or unguarded stacks: see docs/fibers.md)");
}

// --- Overflow reporting --------------------------------------------------------------------------

struct sigaction g_previous_segv;

// Appends `s` to buf at *len, bounded. Async-signal-safe (no locale, no allocation).
void append(char* buf, std::size_t cap, std::size_t* len, const char* s) {
  while (*s && *len + 1 < cap)
    buf[(*len)++] = *s++;
}

void on_segv(int signo, siginfo_t* info, void* uctx) {
  fiber_record* f = current_fiber();
  if (f && f->guard_size > 0) {
    auto addr = reinterpret_cast<std::uintptr_t>(info->si_addr);
    auto guard_lo = reinterpret_cast<std::uintptr_t>(f->stack_base);
    auto guard_hi = guard_lo + f->guard_size;
    // A frame larger than the guard can fault a little below it; 64 KiB of slack catches that
    // without claiming unrelated crashes.
    if (addr < guard_hi && addr + 65536 >= guard_lo) {
      char msg[512];
      std::size_t len = 0;
      append(msg, sizeof msg, &len, "squall: fiber stack overflow in fiber '");
      append(msg, sizeof msg, &len, f->name.c_str());
      append(msg, sizeof msg, &len, "' (raise fiber_options::stack_size or fiber_config)\n");
      ssize_t n = ::write(STDERR_FILENO, msg, len);
      (void)n;
    }
  }
  // Hand the fault to whoever had it before (the default action, or a sanitizer's handler).
  ::sigaction(SIGSEGV, &g_previous_segv, nullptr);
  if (!(g_previous_segv.sa_flags & SA_SIGINFO) && g_previous_segv.sa_handler == SIG_IGN) {
    // An ignored SIGSEGV would loop forever on the same fault; die instead.
    ::signal(SIGSEGV, SIG_DFL);
  }
  (void)signo;
  (void)uctx;
}

struct alt_stack {
  void* mem = nullptr;
  alt_stack() {
    constexpr std::size_t size = 64 * 1024;
    mem = std::malloc(size);
    if (!mem) return;
    stack_t ss{};
    ss.ss_sp = mem;
    ss.ss_size = size;
    if (::sigaltstack(&ss, nullptr) != 0) {
      std::free(mem);
      mem = nullptr;
    }
  }
  ~alt_stack() {
    if (!mem) return;
    stack_t ss{};
    ss.ss_flags = SS_DISABLE;
    ::sigaltstack(&ss, nullptr);
    std::free(mem);
  }
};

}  // namespace

void prepare_overflow_reporting() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa {};
    sa.sa_sigaction = on_segv;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
    ::sigaction(SIGSEGV, &sa, &g_previous_segv);
  });
  // A thread that already has an alternate stack (a sanitizer's, say) keeps it.
  static thread_local bool checked = false;
  if (!checked) {
    checked = true;
    stack_t cur{};
    if (::sigaltstack(nullptr, &cur) == 0 && (cur.ss_flags & SS_DISABLE)) {
      static thread_local alt_stack mine;
    }
  }
}

// --- Mapping -------------------------------------------------------------------------------------

stack_region map_stack(std::size_t size, bool guard, std::size_t live_fibers) {
  stack_region s;
  s.size = round_to_page(size);
  s.guard = guard ? page_size() : 0;
  void* p = ::mmap(nullptr, s.size + s.guard, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
  if (p == MAP_FAILED) throw_map_failure(errno, s.size, live_fibers);
  if (guard && ::mprotect(p, s.guard, PROT_NONE) != 0) {
    int err = errno;  // ENOMEM here means the split would pass vm.max_map_count
    ::munmap(p, s.size + s.guard);
    throw_map_failure(err, s.size, live_fibers);
  }
  s.base = p;
  return s;
}

void unmap_stack(const stack_region& s) noexcept {
  if (!s.base) return;
    // A stack that dies with frames on it (the fiber was unwound, or simply ended) leaves
    // AddressSanitizer's redzone marks in the shadow, and munmap does not clear them: the next
    // mapping at these addresses (a loop's receive region, say) would be reported as a stack
    // overflow when touched.
#if defined(__SANITIZE_ADDRESS__)
  __asan_unpoison_memory_region(s.base, s.size + s.guard);
#endif
  ::munmap(s.base, s.size + s.guard);
}

stack_pool::~stack_pool() {
  for (auto& s : free_)
    unmap_stack(s);
}

stack_region stack_pool::get(std::size_t size, bool guard, std::size_t live_fibers) {
  std::size_t want = round_to_page(size);
  std::size_t want_guard = guard ? page_size() : 0;
  for (std::size_t i = free_.size(); i-- > 0;) {
    if (free_[i].size == want && free_[i].guard == want_guard) {
      stack_region s = free_[i];
      free_[i] = free_.back();
      free_.pop_back();
      return s;
    }
  }
  return map_stack(size, guard, live_fibers);
}

void stack_pool::put(const stack_region& s, std::size_t max_pooled) noexcept {
  if (free_.size() < max_pooled) {
    try {
      free_.push_back(s);
      return;
    } catch (...) {
    }
  }
  unmap_stack(s);
}

}  // namespace squall::detail
