// SPDX-License-Identifier: MIT
// kqueue backend for io_loop (BSD, macOS): level-triggered EVFILT_READ / EVFILT_WRITE filters.
//
// kqueue keeps one filter per direction, so an interest change is a list of adds and deletes;
// they are sent with the next kevent() call rather than one syscall each. This file is only
// compiled where <sys/event.h> exists; Linux builds get the stub at the bottom of backend.cpp.
#include <sys/event.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

#include "backend/backend.hpp"

namespace squall::detail {
namespace {

constexpr int max_batch = 256;

class kqueue_backend final : public backend {
 public:
  explicit kqueue_backend(int kq) : kq_(kq) {}
  ~kqueue_backend() override { ::close(kq_); }

  backend_kind kind() const noexcept override { return backend_kind::kqueue; }

  int add(int fd, unsigned events) noexcept override { return set(fd, 0, events); }
  int modify(int fd, unsigned events) noexcept override { return set(fd, interest(fd), events); }
  int remove(int fd) noexcept override { return set(fd, interest(fd), 0); }

  int wait(std::int64_t timeout_ns, ready_event* out, int capacity) noexcept override {
    struct kevent evs[max_batch];
    int n = capacity < max_batch ? capacity : max_batch;
    timespec ts{}, *tsp = nullptr;
    if (timeout_ns >= 0) {
      ts.tv_sec = static_cast<time_t>(timeout_ns / 1000000000);
      ts.tv_nsec = static_cast<long>(timeout_ns % 1000000000);
      tsp = &ts;
    }
    int r = ::kevent(kq_, changes_.data(), static_cast<int>(changes_.size()), evs, n, tsp);
    changes_.clear();
    if (r < 0) return errno == EINTR ? 0 : -errno;
    // kqueue reports read and write readiness of one fd as two events; merge them so the loop
    // calls the handler once.
    int count = 0;
    for (int i = 0; i < r; ++i) {
      int fd = static_cast<int>(evs[i].ident);
      if (evs[i].flags & EV_ERROR) continue;  // a failed change; the fd was probably closed
      if (evs[i].udata) {
        // A fiber I/O registration (add_io): reported to its io_completion, not merged.
        ready_event ev;
        ev.events = evs[i].filter == EVFILT_READ ? io_loop::read : io_loop::write;
        if (evs[i].flags & EV_EOF) ev.events |= io_loop::error;
        ev.io = static_cast<io_completion*>(evs[i].udata);
        out[count++] = ev;
        continue;
      }
      unsigned e = evs[i].filter == EVFILT_READ ? io_loop::read : io_loop::write;
      if (evs[i].flags & EV_EOF) e |= io_loop::error | interest(fd);
      int j = 0;
      while (j < count && out[j].fd != fd)
        ++j;
      if (j == count)
        out[count++] = ready_event{fd, e};
      else
        out[j].events |= e;
    }
    return count;
  }

  int pollable_fd() noexcept override {
    // Changes are queued until the next kevent(); push them so the kqueue fd reflects them.
    if (!changes_.empty()) {
      (void)::kevent(kq_, changes_.data(), static_cast<int>(changes_.size()), nullptr, 0, nullptr);
      changes_.clear();
    }
    return kq_;
  }

  void flush() noexcept override { (void)pollable_fd(); }

  // Fiber I/O: both filters, edge-triggered (EV_CLEAR), registered once for the fd's life.
  int add_io(int fd, io_completion* io) noexcept override {
    struct kevent ev[2];
    EV_SET(&ev[0], static_cast<uintptr_t>(fd), EVFILT_READ, EV_ADD | EV_CLEAR, 0, 0, io);
    EV_SET(&ev[1], static_cast<uintptr_t>(fd), EVFILT_WRITE, EV_ADD | EV_CLEAR, 0, 0, io);
    return ::kevent(kq_, ev, 2, nullptr, 0, nullptr) == 0 ? 0 : -errno;
  }

  int remove_io(int fd) noexcept override {
    struct kevent ev[2];
    EV_SET(&ev[0], static_cast<uintptr_t>(fd), EVFILT_READ, EV_DELETE, 0, 0, nullptr);
    EV_SET(&ev[1], static_cast<uintptr_t>(fd), EVFILT_WRITE, EV_DELETE, 0, 0, nullptr);
    return ::kevent(kq_, ev, 2, nullptr, 0, nullptr) == 0 ? 0 : -errno;
  }

 private:
  unsigned interest(int fd) const noexcept {
    return static_cast<std::size_t>(fd) < interest_.size() ? interest_[static_cast<std::size_t>(fd)]
                                                           : 0;
  }

  int set(int fd, unsigned old_events, unsigned new_events) noexcept {
    if (static_cast<std::size_t>(fd) >= interest_.size())
      interest_.resize(static_cast<std::size_t>(fd) + 1, 0);
    change(fd, EVFILT_READ, old_events & io_loop::read, new_events & io_loop::read);
    change(fd, EVFILT_WRITE, old_events & io_loop::write, new_events & io_loop::write);
    interest_[static_cast<std::size_t>(fd)] = new_events;
    return 0;
  }

  void change(int fd, short filter, bool was, bool now) {
    if (was == now) return;
    struct kevent ev;
    EV_SET(&ev, static_cast<uintptr_t>(fd), filter, now ? EV_ADD : EV_DELETE, 0, 0, nullptr);
    changes_.push_back(ev);
  }

  int kq_;
  std::vector<struct kevent> changes_;
  std::vector<unsigned> interest_;
};

}  // namespace

std::unique_ptr<backend> make_kqueue_backend(int& err) {
  int kq = ::kqueue();
  if (kq < 0) {
    err = errno;
    return nullptr;
  }
  return std::make_unique<kqueue_backend>(kq);
}

}  // namespace squall::detail
