// SPDX-License-Identifier: MIT
// unique_function: a move-only callable wrapper with inline storage.
//
// The loop stores one of these per callback, timer and fd handler. std::function needs a
// copyable target and allocates for anything larger than two pointers; this one holds targets
// up to `inline_size` bytes without touching the heap, so scheduling a typical lambda
// (a pointer or three of captures) allocates nothing. Larger targets go to the heap.
#pragma once

#include <cstddef>
#include <functional>
#include <new>
#include <type_traits>
#include <utility>

namespace squall {

template <class Signature>
class unique_function;

template <class R, class... Args>
class unique_function<R(Args...)> {
 public:
  // Targets up to this size (and no stricter alignment than a pointer) are stored inline.
  static constexpr std::size_t inline_size = 48;

  unique_function() noexcept = default;
  unique_function(std::nullptr_t) noexcept {}

  template <class F, class D = std::decay_t<F>,
            class = std::enable_if_t<!std::is_same_v<D, unique_function> &&
                                     std::is_invocable_r_v<R, D&, Args...>>>
  unique_function(F&& f) {  // NOLINT: implicit by design, like std::function
    if constexpr (fits_inline<D>) {
      ::new (static_cast<void*>(buf_)) D(std::forward<F>(f));
      ops_ = &inline_ops<D>;
    } else {
      *reinterpret_cast<D**>(buf_) = new D(std::forward<F>(f));
      ops_ = &heap_ops<D>;
    }
  }

  unique_function(unique_function&& o) noexcept : ops_(o.ops_) { take(o); }

  unique_function& operator=(unique_function&& o) noexcept {
    if (this != &o) {
      reset();
      ops_ = o.ops_;
      take(o);
    }
    return *this;
  }

  unique_function& operator=(std::nullptr_t) noexcept {
    reset();
    return *this;
  }

  unique_function(const unique_function&) = delete;
  unique_function& operator=(const unique_function&) = delete;

  ~unique_function() { reset(); }

  explicit operator bool() const noexcept { return ops_ != nullptr; }

  // Calls the target. Calling an empty unique_function throws std::bad_function_call.
  R operator()(Args... args) {
    if (!ops_) throw std::bad_function_call();
    return ops_->invoke(buf_, std::forward<Args>(args)...);
  }

  void reset() noexcept {
    if (ops_) {
      auto* ops = ops_;
      ops_ = nullptr;
      if (!ops->trivial) ops->destroy(buf_);
    }
  }

 private:
  struct ops_table {
    R (*invoke)(void*, Args&&...);
    void (*relocate)(void* dst, void* src) noexcept;  // move-construct into dst, destroy src
    void (*destroy)(void*) noexcept;
    // Trivially destructible (a lambda capturing pointers or references, the common case):
    // destroyed by doing nothing, without an indirect call.
    bool trivial;
  };

  // Moves o's target into this (ops_ already copied from o) and empties o.
  void take(unique_function& o) noexcept {
    if (ops_) {
      ops_->relocate(buf_, o.buf_);
    }
    o.ops_ = nullptr;
  }

  template <class D>
  static constexpr bool fits_inline =
      sizeof(D) <= inline_size &&
      alignof(D) <= alignof(void*) && std::is_nothrow_move_constructible_v<D>;

  template <class D>
  static constexpr ops_table inline_ops{
      [](void* p, Args&&... a) -> R {
        return std::invoke(*static_cast<D*>(p), std::forward<Args>(a)...);
      },
      [](void* dst, void* src) noexcept {
        ::new (dst) D(std::move(*static_cast<D*>(src)));
        static_cast<D*>(src)->~D();
      },
      [](void* p) noexcept { static_cast<D*>(p)->~D(); }, std::is_trivially_destructible_v<D>};

  template <class D>
  static constexpr ops_table heap_ops{
      [](void* p, Args&&... a) -> R {
        return std::invoke(**static_cast<D**>(p), std::forward<Args>(a)...);
      },
      [](void* dst, void* src) noexcept { *static_cast<D**>(dst) = *static_cast<D**>(src); },
      [](void* p) noexcept { delete *static_cast<D**>(p); }, false};

  alignas(void*) unsigned char buf_[inline_size];
  const ops_table* ops_ = nullptr;
};

}  // namespace squall
