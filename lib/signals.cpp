// SPDX-License-Identifier: MIT
// The process-wide signal handler and the table of loops that receive each signal.
//
// Why not signalfd: it only sees signals blocked in every thread, and squall cannot block
// signals in threads it did not create. A plain sigaction handler that marks a bit and writes to
// an fd works wherever the signal lands (libuv does the same with a pipe).
//
// The one tricky piece is unwatching while a handler may run on another thread: the handler
// counts itself in and out of `g_in_handler`, and signal_unwatch() clears the receiver, then
// waits for that count to reach zero before the slot may be freed.
#include "signals.hpp"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>

#include "squall/error.hpp"

namespace squall::detail {
namespace {

constexpr int max_receivers = 64;

struct signal_entry {
  std::atomic<signal_slot*> receivers[max_receivers] = {};
  int count = 0;  // receivers in use; guarded by g_mu
  struct sigaction previous {};
};

signal_entry g_signals[max_signal + 1];
std::atomic<int> g_in_handler{0};
std::mutex g_mu;

void on_signal(int signo) {
  int saved_errno = errno;
  g_in_handler.fetch_add(1, std::memory_order_seq_cst);
  for (auto& r : g_signals[signo].receivers) {
    signal_slot* s = r.load(std::memory_order_seq_cst);
    if (!s) continue;
    s->pending.fetch_or(std::uint64_t{1} << (signo - 1), std::memory_order_seq_cst);
    std::uint64_t one = 1;
    // An eventfd takes 8 bytes; a pipe takes them too. Failure (full pipe) is fine: the loop is
    // already due to wake up.
    ssize_t n = ::write(s->wake_fd, &one, sizeof one);
    (void)n;
  }
  g_in_handler.fetch_sub(1, std::memory_order_seq_cst);
  errno = saved_errno;
}

void check_signo(int signo) {
  if (signo <= 0 || signo > max_signal || signo == SIGKILL || signo == SIGSTOP)
    throw std::invalid_argument("squall: signal " + std::to_string(signo) + " cannot be handled");
}

}  // namespace

void signal_watch(int signo, signal_slot* slot) {
  check_signo(signo);
  std::lock_guard<std::mutex> lock(g_mu);
  signal_entry& e = g_signals[signo];
  int free_index = -1;
  for (int i = 0; i < max_receivers && free_index < 0; ++i)
    if (!e.receivers[i].load()) free_index = i;
  if (free_index < 0)
    throw std::system_error(EBUSY, std::system_category(),
                            "squall: too many loops watch signal " + std::to_string(signo));
  if (e.count == 0) {
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    if (::sigaction(signo, &sa, &e.previous) != 0)
      throw_errno(errno, "squall: sigaction(" + std::to_string(signo) + ")");
  }
  e.receivers[free_index].store(slot);
  ++e.count;
}

void signal_unwatch(int signo, signal_slot* slot) {
  {
    std::lock_guard<std::mutex> lock(g_mu);
    signal_entry& e = g_signals[signo];
    for (auto& r : e.receivers) {
      if (r.load() == slot) {
        r.store(nullptr);
        if (--e.count == 0) ::sigaction(signo, &e.previous, nullptr);
        break;
      }
    }
  }
  // A handler that loaded `slot` before it was cleared may still be writing to it.
  while (g_in_handler.load(std::memory_order_seq_cst) != 0)
    std::this_thread::yield();
}

}  // namespace squall::detail
