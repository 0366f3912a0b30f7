// SPDX-License-Identifier: MIT
// epoll backend for io_loop: level-triggered, one epoll_ctl per interest change, none per wait.
//
// Timeouts use epoll_pwait2 (Linux 5.11) for nanosecond precision and fall back to epoll_wait
// with the timeout rounded up to whole milliseconds, so a timer never fires early.
#include <sys/epoll.h>
#include <unistd.h>

#include <cerrno>
#include <ctime>

#include "backend/backend.hpp"

namespace squall::detail {
namespace {

constexpr int max_batch = 256;

// epoll_event.data of an fd handler has bit 63 set; that of a fiber I/O registration is a
// pointer to its io_completion.
constexpr std::uint64_t handler_tag = std::uint64_t{1} << 63;

std::uint32_t to_epoll(unsigned events) {
  std::uint32_t e = 0;
  if (events & io_loop::read) e |= EPOLLIN | EPOLLRDHUP;
  if (events & io_loop::write) e |= EPOLLOUT;
  return e;
}

unsigned from_epoll(std::uint32_t e, unsigned interest) {
  unsigned r = 0;
  if (e & (EPOLLIN | EPOLLRDHUP)) r |= io_loop::read;
  if (e & EPOLLOUT) r |= io_loop::write;
  // Errors and hang-ups are reported with the interest bits, so a reader sees its EOF.
  if (e & (EPOLLERR | EPOLLHUP)) r |= io_loop::error | interest;
  return r;
}

class epoll_backend final : public backend {
 public:
  explicit epoll_backend(int epfd) : epfd_(epfd) {}
  ~epoll_backend() override { ::close(epfd_); }

  backend_kind kind() const noexcept override { return backend_kind::epoll; }

  int add(int fd, unsigned events) noexcept override { return ctl(EPOLL_CTL_ADD, fd, events); }
  int modify(int fd, unsigned events) noexcept override { return ctl(EPOLL_CTL_MOD, fd, events); }
  int remove(int fd) noexcept override {
    // A non-null event pointer keeps kernels before 2.6.9 happy; it costs nothing.
    epoll_event ev{};
    return ::epoll_ctl(epfd_, EPOLL_CTL_DEL, fd, &ev) == 0 ? 0 : -errno;
  }

  int wait(std::int64_t timeout_ns, ready_event* out, int capacity) noexcept override {
    epoll_event evs[max_batch];
    int n = capacity < max_batch ? capacity : max_batch;
    n = epoll_wait_ns(evs, n, timeout_ns);
    if (n < 0) return errno == EINTR ? 0 : -errno;
    for (int i = 0; i < n; ++i) {
      std::uint64_t d = evs[i].data.u64;
      if (d & handler_tag) {
        // An fd handler: the interest mask rides above the fd so that error reports can carry
        // it without a lookup (see ctl()).
        int fd = static_cast<int>(d & 0xffffffffu);
        unsigned interest = static_cast<unsigned>((d & ~handler_tag) >> 32);
        out[i] = ready_event{fd, from_epoll(evs[i].events, interest)};
      } else {
        // A fiber I/O registration: data is its io_completion. A half-close (RDHUP) counts as
        // a hang-up here: the fiber layer must keep reading until it sees the end of stream.
        ready_event ev;
        ev.events = from_epoll(evs[i].events, io_loop::read | io_loop::write);
        if (evs[i].events & EPOLLRDHUP) ev.events |= io_loop::error;
        ev.io = static_cast<io_completion*>(evs[i].data.ptr);
        out[i] = ev;
      }
    }
    return n;
  }

  int add_io(int fd, io_completion* io) noexcept override {
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    ev.data.ptr = io;  // user-space pointers never have bit 63 set
    return ::epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) == 0 ? 0 : -errno;
  }

  int remove_io(int fd) noexcept override { return remove(fd); }

  int pollable_fd() noexcept override { return epfd_; }

 private:
  int ctl(int op, int fd, unsigned events) noexcept {
    epoll_event ev{};
    ev.events = to_epoll(events);
    ev.data.u64 = handler_tag | static_cast<std::uint32_t>(fd) | (std::uint64_t{events} << 32);
    return ::epoll_ctl(epfd_, op, fd, &ev) == 0 ? 0 : -errno;
  }

  int epoll_wait_ns(epoll_event* evs, int n, std::int64_t timeout_ns) noexcept {
    if (timeout_ns < 0) return ::epoll_wait(epfd_, evs, n, -1);
    if (timeout_ns == 0) return ::epoll_wait(epfd_, evs, n, 0);
    if (have_pwait2_) {
      timespec ts{static_cast<time_t>(timeout_ns / 1000000000),
                  static_cast<long>(timeout_ns % 1000000000)};
      int r = ::epoll_pwait2(epfd_, evs, n, &ts, nullptr);
      if (r >= 0 || errno != ENOSYS) return r;
      have_pwait2_ = false;
    }
    std::int64_t ms = (timeout_ns + 999999) / 1000000;
    return ::epoll_wait(epfd_, evs, n, ms > 0x7fffffff ? 0x7fffffff : static_cast<int>(ms));
  }

  int epfd_;
  bool have_pwait2_ = true;
};

}  // namespace

std::unique_ptr<backend> make_epoll_backend(int& err) {
  int epfd = ::epoll_create1(EPOLL_CLOEXEC);
  if (epfd < 0) {
    err = errno;
    return nullptr;
  }
  return std::make_unique<epoll_backend>(epfd);
}

}  // namespace squall::detail
