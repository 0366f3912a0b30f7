// SPDX-License-Identifier: MIT
// event, condition, semaphore: wait lists of waiters on the fibers' stacks.
#include "squall/locks.hpp"

namespace squall {
namespace {

// A waiter parked on `list`; its abandon takes it off the list.
struct parked {
  detail::waiter w;
  explicit parked(detail::wait_list& list, const char* what) {
    w.what = what;
    w.data = &list;
    w.abandon = [](detail::waiter& me) {
      static_cast<detail::wait_list*>(me.data)->remove(me);
      detail::wake(me, me.abandon_reason);
    };
    list.push_back(w);
  }
  void wait(time_point deadline, const char* what) {
    if (std::error_code ec = detail::suspend(w, deadline)) throw std::system_error(ec, what);
  }
};

}  // namespace

void event::set() {
  set_ = true;
  while (detail::waiter* w = waiters_.pop_front())
    detail::wake(*w);
}

void event::wait(time_point deadline) {
  if (set_) return;
  parked p(waiters_, "event");
  p.wait(deadline, "squall: event::wait");
}

void condition::wait(time_point deadline) {
  parked p(waiters_, "condition");
  ++count_;
  struct uncount {
    std::size_t& n;
    ~uncount() { --n; }
  } u{count_};
  p.wait(deadline, "squall: condition::wait");
}

void condition::notify_one() {
  if (detail::waiter* w = waiters_.pop_front()) detail::wake(*w);
}

void condition::notify_all() {
  while (detail::waiter* w = waiters_.pop_front())
    detail::wake(*w);
}

bool semaphore::try_acquire() noexcept {
  // Waiters first: a unit released while fibers wait was handed to one of them already.
  if (value_ == 0 || !waiters_.empty()) return false;
  --value_;
  return true;
}

void semaphore::acquire(time_point deadline) {
  if (try_acquire()) return;
  parked p(waiters_, "semaphore");
  // When this returns normally, release() handed us its unit (value_ was not incremented).
  p.wait(deadline, "squall: semaphore::acquire");
}

void semaphore::release() {
  if (detail::waiter* w = waiters_.pop_front()) {
    detail::wake(*w);  // the unit goes to the waiter; once woken, it can no longer be abandoned
  } else {
    ++value_;
  }
}

}  // namespace squall
