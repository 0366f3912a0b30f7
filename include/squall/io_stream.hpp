// SPDX-License-Identifier: MIT
// io_stream: buffered reads and writes over a connected socket, for code running in a fiber.
//
//   squall::io_stream s(loop, fd);
//   std::string_view line = s.read_until("\r\n", 8192);   // a view into the stream's buffer
//   s.write("echo: ");
//   s.write(line);
//   s.flush();
//
// Reads return views into the stream's read buffer, valid until the next read call on the
// stream: the common path copies nothing. Writes are buffered: write() appends and only sends
// once the unsent data passes `write_high_water` (then the fiber waits until it is sent:
// backpressure); flush() sends everything. A single write of 16 KiB or more is sent at once
// (with whatever was buffered before it), from the caller's memory, without a copy. A read that has
// to wait for the peer sends pending writes first, so a request/response exchange never deadlocks
// on unsent data, and pipelined responses go out in one send.
//
// Errors (std::system_error): error::closed (end of stream where bytes were required, or the
// stream was closed), error::reset (connection reset by peer), error::timed_out (a deadline or
// the idle timeout), error::buffer_full (max_bytes or max_buffer_size exceeded; the buffered
// data stays readable), error::cancelled (the fiber was cancelled). Each read/write call must be
// made from a fiber on the stream's loop; one fiber reads and one writes at a time.
#pragma once

#include <cstddef>
#include <span>
#include <string_view>

#include "squall/async_fd.hpp"

namespace squall {

struct io_stream_options {
  // Largest read buffer (Tornado's max_buffer_size).
  std::size_t max_buffer_size = 100 * 1024 * 1024;
  // Bytes asked of the kernel per read, at most. When the buffer holds unread bytes (the start
  // of a message whose rest is still coming), the read takes the room left after them if
  // that is at least half of this; only a fuller buffer grows (doubling), so a message split
  // in pieces does not make a stream's 64 KiB buffer grow.
  std::size_t read_chunk = 64 * 1024;
  // write() sends once this much is buffered, waiting until it is sent.
  std::size_t write_high_water = 64 * 1024;
  // If non-zero, any single wait for the peer longer than this fails with error::timed_out.
  duration idle_timeout = duration::zero();
  // Borrow the read and write buffers from the loop's pool (io_loop::options::free_buffers)
  // when bytes come or go, and give each back as soon as it is empty: an idle stream holds no
  // buffer, and a busy server reuses the few buffers that are warm in the cache instead of
  // one per connection. A buffer that had to grow past 64 KiB stays with the stream. On epoll
  // and kqueue the read buffer is borrowed only once bytes are there. On io_uring a receive
  // needs it from its submission, so there it is held while the stream waits for the peer,
  // unless the loop shares a receive region (io_loop::options::shared_receive_from).
  bool lend_buffers = true;
};

class io_stream {
 public:
  io_stream() = default;
  // Adopts a connected socket (or pipe).
  io_stream(io_loop& loop, int fd, io_stream_options opts = {});
  explicit io_stream(async_fd fd, io_stream_options opts = {});
  io_stream(io_stream&&) noexcept;
  io_stream& operator=(io_stream&&) noexcept;
  ~io_stream();

  // --- Reading (each call invalidates the view the previous read returned) ---------------------

  // Returns what is buffered, or reads once if nothing is; an empty view means end of stream.
  std::string_view read_some(time_point deadline = time_point::max());
  // Exactly `n` bytes. error::closed if the stream ends first.
  std::string_view read_exactly(std::size_t n, time_point deadline = time_point::max());
  // Up to and including the first `delimiter`. error::buffer_full if `max_bytes` pass without
  // it (the bytes stay buffered), error::closed if the stream ends first.
  std::string_view read_until(std::string_view delimiter, std::size_t max_bytes,
                              time_point deadline = time_point::max());
  // Everything until the peer closes. error::buffer_full past `max_bytes`.
  std::string_view read_until_close(std::size_t max_bytes, time_point deadline = time_point::max());
  // Bytes buffered and not yet returned by a read.
  std::size_t buffered() const noexcept { return rend_ - rpos_ - rtake_; }

  // --- Reading for parsers: look at the buffered bytes, take them when done -------------------
  //
  //   for (;;) {
  //     std::string_view in = s.peek();
  //     std::size_t used = parse(in);                   // 0: needs more
  //     if (used) { s.consume(used); break; }
  //     if (!s.read_more(deadline)) -> end of stream
  //   }

  // The unread bytes (ends what the previous read call returned). Valid until the next call
  // that reads.
  std::string_view peek() noexcept {
    consume_previous();
    return {rbuf_ + rpos_, rend_ - rpos_};
  }
  // Takes the first `n` unread bytes (n <= peek().size()).
  void consume(std::size_t n) noexcept;
  // Waits for more bytes and appends them (sending pending writes first, like every read).
  // Returns false at end of stream. The buffered bytes may move in memory: take peek() again.
  bool read_more(time_point deadline = time_point::max());
  // The stream has seen the end of the peer's data (only what is buffered is left).
  bool at_eof() const noexcept { return eof_; }

  // --- Writing ---------------------------------------------------------------------------------

  void write(std::string_view data, time_point deadline = time_point::max());
  // Several pieces, sent together when they pass the high-water mark.
  void write(std::span<const std::string_view> pieces, time_point deadline = time_point::max());
  // Sends everything buffered.
  void flush(time_point deadline = time_point::max());
  // Sends everything buffered before the loop next waits for events, without waiting here:
  // for an answer that should leave now but may just as well leave with the next read. If the
  // fiber reads next (a request/response protocol), the read sends it with its own wait: one
  // io_uring submission, or one batched send on epoll. Otherwise the loop sends it at the end
  // of the iteration (and a fiber finishes it if the socket takes only part). A send that
  // fails there is reported by the next write or flush. Must run on the stream's loop.
  void flush_later();
  std::size_t pending_write() const noexcept { return wlen_; }

  // --- Connection ------------------------------------------------------------------------------

  // Flushes and closes: what the socket takes at once is sent even past `flush_deadline` or
  // outside a fiber, the rest (in a fiber) until `flush_deadline`; errors are ignored. `reason`
  // is logged at debug level. Idempotent. The destructor closes without flushing.
  void close(std::string_view reason = {}, time_point flush_deadline = time_point::max());
  // Sends what is buffered, then shuts down the write side (the peer reads end of stream).
  void shutdown_write(time_point deadline = time_point::max());
  void set_nodelay(bool on);
  bool closed() const noexcept { return !fd_.is_open(); }
  int fd() const noexcept { return fd_.fd(); }
  // The loop the stream runs on. Throws std::logic_error for a moved-from stream.
  io_loop& loop() const { return fd_.loop(); }
  async_fd& handle() noexcept { return fd_; }
  const io_stream_options& options() const noexcept { return opts_; }

 private:
  void consume_previous() noexcept;
  bool fill(time_point deadline);  // reads once more; false at end of stream
  void reserve_read(std::size_t extra);
  bool to_pool(char*& buf, std::size_t& cap) noexcept;  // a 64 KiB block goes back: true
  void lend_back_read() noexcept;   // an empty read buffer goes back to the pool
  void lend_back_write() noexcept;  // an empty write buffer, once no send uses it
  struct read_room;
  time_point wait_deadline(time_point deadline) const noexcept;
  void send_all(const iovec* iov, int n, time_point deadline);
  void send_later() noexcept;  // flush_later()'s end of the iteration

  // What a request/response turn touches comes first.
  async_fd fd_;
  // Read buffer: [rbuf_, rbuf_ + rcap_), unread bytes in [rpos_, rend_). `rtake_` bytes at rpos_
  // were returned by the last read and are dropped at the start of the next one.
  char* rbuf_ = nullptr;
  std::size_t rpos_ = 0, rend_ = 0, rtake_ = 0, rcap_ = 0;
  // Write buffer: [wbuf_, wbuf_ + wlen_).
  char* wbuf_ = nullptr;
  std::size_t wlen_ = 0, wcap_ = 0;
  detail::buffer_pool* pool_ = nullptr;  // the loop's, with lend_buffers
  bool eof_ = false;
  // A send from the write buffer is in progress (a flush, or a read flushing first: that one
  // ends when the send is complete, before the answer). Writers wait for it to end before they
  // touch the buffer, so a reading fiber and a writing fiber can share the stream.
  bool sending_ = false;
  detail::wait_list send_waiters_;  // writers waiting for the send to end
  // Returns at once when no send is in progress (the usual case: the check is inline, the wait
  // is not).
  void wait_not_sending(time_point deadline) {
    if (sending_) wait_for_send(deadline);
  }
  void wait_for_send(time_point deadline);
  void end_sending() noexcept;
  struct sending_scope;
  // A send that failed while a read went on (io_uring's send-and-receive): the next write or
  // flush reports it.
  std::error_code write_error_;
  io_stream_options opts_;
  // The calls of the stream in progress (suspended or running): records on their callers'
  // stacks, in a list. The destructor tells each that the stream is gone, so that a fiber
  // resuming after another fiber destroyed the stream finds out instead of touching freed
  // members, and hands them the buffers the kernel may still be using. (No record of the
  // stream's own outlives it: a connection's next request touches no memory but the stream,
  // its fd's state and the fiber's stack.)
  struct call;
  call* calls_ = nullptr;
  // flush_later(): the loop's entry for the end of the iteration.
  struct later_entry final : detail::io_completion {
    io_stream* owner = nullptr;
    io_loop* loop = nullptr;
    bool queued = false;
  };
  later_entry later_;
  void take_later(later_entry& from) noexcept;
};

}  // namespace squall
