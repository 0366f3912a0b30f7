// SPDX-License-Identifier: MIT
// io_stream: read buffer with views handed out, write buffer with a high-water mark.
#include "squall/io_stream.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <string>

#include "backend/backend.hpp"
#include "buffer_pool.hpp"
#include "small_copy.hpp"
#include "squall/locks.hpp"
#include "squall/log.hpp"

namespace squall {
namespace {

[[noreturn]] void fail(error e, const char* what) {
  throw std::system_error(e, what);
}

// Writes at least this large are sent at once instead of being copied into the write buffer.
constexpr std::size_t direct_write = 16 * 1024;

}  // namespace

io_stream::io_stream(io_loop& loop, int fd, io_stream_options opts)
    : io_stream(async_fd(loop, fd), opts) {}

io_stream::io_stream(async_fd fd, io_stream_options opts) : fd_(std::move(fd)), opts_(opts) {
  if (opts_.lend_buffers && fd_.is_open()) pool_ = &detail::buffer_pool_of(fd_.loop());
  // What a call touches when the fd's next event resumes it (the send's notice, the read's
  // room): the loop warms it with the event.
  fd_.set_warm_hint(this);
}

namespace {
constexpr std::size_t pool_block = detail::buffer_pool::block_size;
// The least room a read asking for up to `extra` bytes gets (see reserve_read).
constexpr std::size_t room_floor(std::size_t extra) noexcept {
  return extra - extra / 2;
}
}  // namespace

// One call of the stream that may suspend, from start to end: linked into the stream's list
// while it lasts. After any wait, `gone()` says whether the stream still exists; if not,
// nothing of it may be touched. The calls left when a stream is destroyed stay linked among
// themselves, and one of them holds the stream's buffers, which the kernel may still be using
// (an io_uring receive completing its cancel): each passes them on to a neighbour when it
// ends, and the last frees them.
struct io_stream::call {
  io_stream* s;
  call* prev = nullptr;
  call* next = nullptr;
  char* rbuf = nullptr;  // the gone stream's buffers, if this call holds them
  char* wbuf = nullptr;

  explicit call(io_stream& st) noexcept : s(&st), next(st.calls_) {
    if (next) next->prev = this;
    st.calls_ = this;
  }
  call(const call&) = delete;
  call& operator=(const call&) = delete;
  ~call() {
    if (prev)
      prev->next = next;
    else if (s)
      s->calls_ = next;
    if (next) next->prev = prev;
    if (rbuf || wbuf) {
      if (call* heir = prev ? prev : next) {
        heir->rbuf = rbuf;
        heir->wbuf = wbuf;
      } else {
        std::free(rbuf);
        std::free(wbuf);
      }
    }
  }
  bool gone() const noexcept { return s == nullptr; }
  void check() const {
    if (!s) fail(error::closed, "squall: the stream was destroyed while in use");
  }
};

io_stream::io_stream(io_stream&& o) noexcept
    : fd_(std::move(o.fd_)),
      rbuf_(std::exchange(o.rbuf_, nullptr)),
      rpos_(std::exchange(o.rpos_, 0)),
      rend_(std::exchange(o.rend_, 0)),
      rtake_(std::exchange(o.rtake_, 0)),
      rcap_(std::exchange(o.rcap_, 0)),
      wbuf_(std::exchange(o.wbuf_, nullptr)),
      wlen_(std::exchange(o.wlen_, 0)),
      wcap_(std::exchange(o.wcap_, 0)),
      pool_(std::exchange(o.pool_, nullptr)),
      eof_(std::exchange(o.eof_, false)),
      sending_(std::exchange(o.sending_, false)),
      write_error_(std::exchange(o.write_error_, {})),
      opts_(o.opts_),
      calls_(std::exchange(o.calls_, nullptr)) {
  // Whatever is in progress follows the stream to its new place.
  fd_.set_warm_hint(this);
  for (call* c = calls_; c; c = c->next)
    c->s = this;
  while (detail::waiter* w = o.send_waiters_.pop_front()) {
    w->data = &send_waiters_;
    send_waiters_.push_back(*w);
  }
  take_later(o.later_);
}

void io_stream::take_later(later_entry& from) noexcept {
  if (!from.queued) return;
  detail::forget_io(*from.loop, &from);
  from.queued = false;
  // Queued again, at the end of this iteration's queue: it still runs before the loop waits.
  try {
    later_ = from;
    later_.owner = this;
    detail::defer_io(*later_.loop, &later_);
  } catch (...) {
    later_.queued = false;  // (no memory to queue it: the next read or flush sends the buffer)
  }
}

// A send from the write buffer, from start to end. A read that sends first ends it as soon as
// its send is complete (the notice), not when its answer comes, which may take long: other
// writers may go on meanwhile.
struct io_stream::sending_scope final : send_notice {
  call c;
  bool ended = false;
  explicit sending_scope(io_stream& st) noexcept : c(st) {
    st.sending_ = true;
    sent = [](send_notice* n) noexcept { static_cast<sending_scope*>(n)->end(); };
  }
  void end() noexcept {
    if (ended || c.gone()) return;
    ended = true;
    c.s->end_sending();
  }
  ~sending_scope() { end(); }
};

void io_stream::end_sending() noexcept {
  sending_ = false;
  lend_back_write();  // sent: the kernel is done with the buffer
  while (detail::waiter* w = send_waiters_.pop_front())
    detail::wake(*w);
}

void io_stream::wait_for_send(time_point deadline) {
  call c(*this);
  do {
    detail::waiter w;
    w.what = "send to end";
    w.data = &send_waiters_;
    w.abandon = [](detail::waiter& me) {
      static_cast<detail::wait_list*>(me.data)->remove(me);
      detail::wake(me, me.abandon_reason);
    };
    send_waiters_.push_back(w);
    if (std::error_code ec = detail::suspend(w, deadline))
      throw std::system_error(ec, "squall: write (waiting for a send to end)");
    c.check();  // woken by the destructor: the stream is gone
  } while (sending_);
}

io_stream& io_stream::operator=(io_stream&& o) noexcept {
  if (this != &o) {
    this->~io_stream();
    new (this) io_stream(std::move(o));
  }
  return *this;
}

io_stream::~io_stream() {
  if (later_.queued) detail::forget_io(*later_.loop, &later_);
  // Fibers waiting on the fd end with error::closed; on io_uring the kernel may still hold a
  // buffer until their operations complete, so calls in progress get the buffers to free.
  fd_.close();
  // Waiting writers wake, see the stream gone, and leave.
  while (detail::waiter* w = send_waiters_.pop_front())
    detail::wake(*w);
  if (calls_) {
    for (call* c = calls_; c; c = c->next)
      c->s = nullptr;
    calls_->rbuf = rbuf_;
    calls_->wbuf = wbuf_;
  } else {
    // A connection's buffers go to the next one warm; those that grew are freed.
    to_pool(rbuf_, rcap_);
    to_pool(wbuf_, wcap_);
    std::free(rbuf_);
    std::free(wbuf_);
  }
}

bool io_stream::to_pool(char*& buf, std::size_t& cap) noexcept {
  if (!pool_ || !buf || cap != pool_block) return false;
  pool_->give(std::exchange(buf, nullptr));
  cap = 0;
  return true;
}

void io_stream::lend_back_read() noexcept {
  if (rpos_ == rend_ && to_pool(rbuf_, rcap_)) rpos_ = rend_ = rtake_ = 0;
}

void io_stream::lend_back_write() noexcept {
  if (wlen_ == 0 && !sending_) to_pool(wbuf_, wcap_);
}

time_point io_stream::wait_deadline(time_point deadline) const noexcept {
  if (opts_.idle_timeout <= duration::zero()) return deadline;
  return std::min(deadline, fd_.loop().time() + opts_.idle_timeout);
}

// --- Reading -----------------------------------------------------------------------------------

void io_stream::consume_previous() noexcept {
  rpos_ += rtake_;
  rtake_ = 0;
  if (rpos_ == rend_) rpos_ = rend_ = 0;  // empty: the next read starts at the front
}

// Makes room for a read of up to `extra` bytes after rend_: at least half of `extra` (what
// read_room promises), compacting first, growing only if that is not enough. Demanding all of
// `extra` would make a 64 KiB buffer that holds the first few bytes of a message (a request
// split across segments, or by the end of the shared receive region) grow to 128 KiB for the
// rest, and a grown buffer stays with its stream; a read into 64 KiB less a few bytes does as
// well. A buffer that is nearly full still grows, doubling, as large messages need.
void io_stream::reserve_read(std::size_t extra) {
  const std::size_t enough = room_floor(extra);
  if (rcap_ - rend_ >= enough) return;
  std::size_t live = rend_ - rpos_;
  if (rpos_ > 0 && rcap_ - live >= enough) {
    std::memmove(rbuf_, rbuf_ + rpos_, live);
    rpos_ = 0;
    rend_ = live;
    return;
  }
  std::size_t need = live + extra;
  if (need > opts_.max_buffer_size + opts_.read_chunk)
    fail(error::buffer_full, "squall: read buffer would pass max_buffer_size");
  if (!rbuf_ && pool_ && need <= pool_block) {
    rbuf_ = pool_->take();
    rcap_ = pool_block;
    rpos_ = rend_ = 0;
    return;
  }
  std::size_t cap = std::max<std::size_t>(rcap_ * 2, need);
  char* nb = static_cast<char*>(std::malloc(cap));
  if (!nb) throw std::bad_alloc();
  if (live) std::memcpy(nb, rbuf_ + rpos_, live);
  if (!to_pool(rbuf_, rcap_)) std::free(rbuf_);  // a pool block goes back to the pool
  rbuf_ = nb;
  rcap_ = cap;
  rpos_ = 0;
  rend_ = live;
}

// The read buffer, when fill() is about to read: an empty one was given back to the pool
// before the wait and is borrowed again only now.
struct io_stream::read_room final : read_target {
  io_stream& s;
  std::size_t extra;
  read_room(io_stream& st, std::size_t want) : s(st), extra(want) {
    // A buffer borrowed when the bytes come is the pool's last returned one, warm already.
    hint = s.rbuf_ ? s.rbuf_ + s.rend_ : nullptr;
    at_most = room_floor(extra);  // reserve_read(extra) makes at least that much room
    get = [](read_target* t, std::size_t* len) -> void* {
      auto* r = static_cast<read_room*>(t);
      r->s.reserve_read(r->extra);
      *len = r->s.rcap_ - r->s.rend_;
      return r->s.rbuf_ + r->s.rend_;
    };
  }
};

bool io_stream::fill(time_point deadline) {
  if (eof_) return false;
  if (rend_ - rpos_ >= opts_.max_buffer_size)
    fail(error::buffer_full, "squall: read buffer reached max_buffer_size");
  std::size_t extra = std::min(opts_.read_chunk, opts_.max_buffer_size - (rend_ - rpos_));
  // Empty: given back now and borrowed again when the bytes are there, unless the read takes
  // its buffer when it is submitted (it would only go back and forth).
  // (On io_uring with a buffer ring, the read asks for its buffer only once the bytes are
  // there, as on epoll.)
  if (!fd_.reads_at_submit() || fd_.provides_read_buffers()) lend_back_read();
  read_room room(*this, extra);  // makes the room (reserve_read) when the read asks for it
  std::size_t n;
  if (wlen_ > 0 && !sending_ && !write_error_) {
    // About to wait for the peer: anything we owe it goes first (see the header), in one step
    // with the read, so that io_uring submits both together. (If another fiber is sending the
    // buffer right now, it is on its way already.)
    if (!fd_.is_open()) fail(error::closed, "squall: read on a closed stream");
    sending_scope sending(*this);
    iovec out{wbuf_, wlen_};
    wlen_ = 0;  // sent or failed: either way the bytes are no longer ours to send
    std::error_code send_error;
    n = fd_.write_all_read_some(&out, 1, room, wait_deadline(deadline), &send_error, &sending);
    sending.c.check();
    if (send_error && !write_error_)
      write_error_ = send_error;  // the bytes read are kept; the next write fails
  } else {
    call c(*this);
    n = fd_.read_some(room, wait_deadline(deadline));
    c.check();
  }
  if (n == 0) {
    eof_ = true;
    lend_back_read();
    return false;
  }
  rend_ += n;
  return true;
}

std::string_view io_stream::read_some(time_point deadline) {
  consume_previous();
  if (rend_ == rpos_ && !fill(deadline)) return {};
  rtake_ = rend_ - rpos_;
  return {rbuf_ + rpos_, rtake_};
}

void io_stream::consume(std::size_t n) noexcept {
  consume_previous();
  rpos_ += std::min(n, rend_ - rpos_);
  if (rpos_ == rend_) rpos_ = rend_ = 0;
}

bool io_stream::read_more(time_point deadline) {
  consume_previous();
  return fill(deadline);
}

std::string_view io_stream::read_exactly(std::size_t n, time_point deadline) {
  consume_previous();
  if (n > opts_.max_buffer_size)
    fail(error::buffer_full, "squall: read_exactly past max_buffer_size");
  while (rend_ - rpos_ < n)
    if (!fill(deadline)) fail(error::closed, "squall: stream closed before read_exactly completed");
  rtake_ = n;
  return {rbuf_ + rpos_, n};
}

std::string_view io_stream::read_until(std::string_view delimiter, std::size_t max_bytes,
                                       time_point deadline) {
  consume_previous();
  if (delimiter.empty()) throw std::invalid_argument("squall: read_until: empty delimiter");
  std::size_t scanned = 0;  // bytes already searched, so a slow peer costs O(n), not O(n^2)
  for (;;) {
    std::string_view have(rbuf_ + rpos_, rend_ - rpos_);
    std::size_t from = scanned >= delimiter.size() ? scanned - delimiter.size() + 1 : 0;
    std::size_t at = have.find(delimiter, from);
    if (at != std::string_view::npos) {
      std::size_t len = at + delimiter.size();
      if (len > max_bytes) fail(error::buffer_full, "squall: read_until: delimiter past max_bytes");
      rtake_ = len;
      return have.substr(0, len);
    }
    if (have.size() >= max_bytes)
      fail(error::buffer_full, "squall: read_until: max_bytes read without the delimiter");
    scanned = have.size();
    if (!fill(deadline)) fail(error::closed, "squall: stream closed before the delimiter");
  }
}

std::string_view io_stream::read_until_close(std::size_t max_bytes, time_point deadline) {
  consume_previous();
  while (!eof_) {
    if (rend_ - rpos_ > max_bytes)
      fail(error::buffer_full, "squall: read_until_close: more than max_bytes");
    fill(deadline);
  }
  if (rend_ - rpos_ > max_bytes)
    fail(error::buffer_full, "squall: read_until_close: more than max_bytes");
  rtake_ = rend_ - rpos_;
  return {rbuf_ + rpos_, rtake_};
}

// --- Writing -----------------------------------------------------------------------------------

void io_stream::send_all(const iovec* iov, int n, time_point deadline) {
  call c(*this);
  try {
    fd_.write_all(iov, n, wait_deadline(deadline));
  } catch (...) {
    if (!c.gone()) wlen_ = 0;  // partly sent, and the stream is no longer usable for writing
    throw;
  }
  c.check();
  wlen_ = 0;
}

void io_stream::write(std::string_view data, time_point deadline) {
  write(std::span<const std::string_view>(&data, 1), deadline);
}

void io_stream::write(std::span<const std::string_view> pieces, time_point deadline) {
  wait_not_sending(deadline);
  if (write_error_) throw std::system_error(write_error_, "squall: write (an earlier send failed)");
  if (!fd_.is_open()) fail(error::closed, "squall: write on a closed stream");
  std::size_t total = 0;
  for (auto p : pieces)
    total += p.size();
  // Small writes are gathered (pipelined responses leave in one send). A large one gains
  // nothing from waiting and would cost a copy, so it goes out now, from the caller's memory.
  if (wlen_ + total <= opts_.write_high_water && total < direct_write) {
    if (!wbuf_ && pool_ && total > 0 && total <= pool_block) {
      wbuf_ = pool_->take();
      wcap_ = pool_block;
    }
    if (wcap_ - wlen_ < total) {
      std::size_t cap = std::max(std::max<std::size_t>(wcap_ * 2, 4096), wlen_ + total);
      char* nb = static_cast<char*>(std::realloc(wbuf_, cap));
      if (!nb) throw std::bad_alloc();
      wbuf_ = nb;
      wcap_ = cap;
    }
    // A local cursor: stores through char* may alias wlen_, which would be reloaded per piece.
    char* out = wbuf_ + wlen_;
    for (auto p : pieces) {
      detail::copy_small(out, p.data(), p.size());
      out += p.size();
    }
    wlen_ = static_cast<std::size_t>(out - wbuf_);
    return;
  }
  // Past the high-water mark, or large: send what is buffered and the new pieces together,
  // straight from the caller's memory (no copy), and wait until they are out.
  sending_scope sending(*this);
  constexpr int max_pieces = 15;
  iovec iov[max_pieces + 1];
  int n = 0;
  if (wlen_) iov[n++] = iovec{wbuf_, wlen_};
  for (auto p : pieces) {
    if (n == max_pieces + 1) {
      send_all(iov, n, deadline);
      n = 0;
    }
    iov[n++] = iovec{const_cast<char*>(p.data()), p.size()};
  }
  send_all(iov, n, deadline);
}

void io_stream::flush(time_point deadline) {
  wait_not_sending(deadline);
  if (write_error_) throw std::system_error(write_error_, "squall: flush (an earlier send failed)");
  if (wlen_ == 0) return;
  if (!fd_.is_open()) fail(error::closed, "squall: flush on a closed stream");
  sending_scope sending(*this);
  iovec v{wbuf_, wlen_};
  send_all(&v, 1, deadline);
}

// The end of the loop's iteration after flush_later(): what no read or flush has sent yet is
// sent now, from the loop, without waiting. If the socket takes only part of it, a fiber sends
// the rest (rare: the peer is slow to read).
void io_stream::send_later() noexcept {
  if (wlen_ == 0 || sending_ || write_error_ || !fd_.is_open()) return;
  iovec v{wbuf_, wlen_};
  long r = fd_.try_write(&v, 1);
  if (r >= 0 && static_cast<std::size_t>(r) == wlen_) {
    wlen_ = 0;
    lend_back_write();
    return;
  }
  if (r < 0 && r != -EAGAIN) {
    write_error_ = socket_error(static_cast<int>(-r));
    wlen_ = 0;
    lend_back_write();
    return;
  }
  if (r > 0) {
    std::memmove(wbuf_, wbuf_ + r, wlen_ - static_cast<std::size_t>(r));
    wlen_ -= static_cast<std::size_t>(r);
  }
  try {
    // The fiber's call tells it whether the stream is still there, and is in the stream's
    // list from now on, even if the fiber never gets to run.
    spawn(fd_.loop(), [c = std::make_unique<call>(*this)] {
      if (c->gone()) return;
      io_stream& s = *c->s;
      try {
        s.flush();
      } catch (const std::system_error& e) {
        if (!c->gone() && !s.write_error_) s.write_error_ = e.code();
      }
    });
  } catch (const std::exception&) {
    write_error_ = std::make_error_code(std::errc::not_enough_memory);  // no fiber, no sender
    wlen_ = 0;
  }
}

void io_stream::flush_later() {
  if (wlen_ == 0 || write_error_ || !fd_.is_open() || later_.queued) return;
  later_.owner = this;
  later_.loop = &fd_.loop();
  later_.deferred = [](detail::io_completion* c) noexcept {
    auto* e = static_cast<later_entry*>(c);
    e->queued = false;
    e->owner->send_later();
  };
  detail::defer_io(*later_.loop, &later_);
  later_.queued = true;
}

// --- Connection --------------------------------------------------------------------------------

void io_stream::close(std::string_view reason, time_point flush_deadline) {
  if (!fd_.is_open()) return;
  // If another fiber is sending right now (a read flushing first), that fiber owns the send:
  // waiting for it could take until the peer speaks. Closing ends its wait.
  if (wlen_ > 0 && !sending_ && !write_error_) {
    // What the socket takes at once goes even with a deadline already past, or from outside a
    // fiber; the rest waits for it (in a fiber) until `flush_deadline`.
    iovec v{wbuf_, wlen_};
    long r = fd_.try_write(&v, 1);
    if (r > 0) {
      std::memmove(wbuf_, wbuf_ + r, wlen_ - static_cast<std::size_t>(r));
      wlen_ -= static_cast<std::size_t>(r);
    }
    if (wlen_ > 0 && (r >= 0 || r == -EAGAIN) && this_fiber::active()) {
      try {
        flush(flush_deadline);
      } catch (const std::system_error&) {
        // The peer is gone or slow; closing is what we were doing anyway.
      }
    }
  }
  if (!reason.empty())
    log(log_level::debug, "io", "closing fd %d: %.*s", fd_.fd(), static_cast<int>(reason.size()),
        reason.data());
  fd_.close();
  wlen_ = 0;
  lend_back_write();  // unless another fiber's send still uses it: that one gives it back
}

void io_stream::shutdown_write(time_point deadline) {
  flush(deadline);
  if (::shutdown(fd_.fd(), SHUT_WR) != 0)
    throw std::system_error(socket_error(errno), "squall: shutdown_write");
}

void io_stream::set_nodelay(bool on) {
  int v = on ? 1 : 0;
  if (::setsockopt(fd_.fd(), IPPROTO_TCP, TCP_NODELAY, &v, sizeof v) != 0)
    throw std::system_error(errno, std::system_category(), "squall: set_nodelay");
}

}  // namespace squall
