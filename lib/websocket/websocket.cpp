// SPDX-License-Identifier: MIT
// WebSocket connections: the opening handshakes (server and client), the reading loop
// (reassembly, UTF-8, control frames, the close handshake), serialised sends, and the pinger.
//
// Shape of a connection. The reader (whoever calls receive(), or close() when nobody reads)
// drives everything that arrives: it answers pings, takes the peer's close and ends the
// connection. Senders take `write_mu` for each whole frame and write it whole before letting go,
// so the stream's write buffer never holds a half frame. Control frames are flushed at once;
// data frames leave with the reader's next receive or at the end of the loop's iteration
// (io_stream::flush_later), so an echo's answer and its next wait are one step. When the
// close handshake is over the connection "lingers" (shuts its write side down if it is the server,
// then reads and drops until the peer's end of stream, at most until close_deadline) before
// closing the socket: closing with unread bytes would make the kernel send a reset, which can
// destroy our close frame before the peer reads it.
//
// Lifetime. The state is shared: a sender suspended in a write keeps it alive after the
// connection object is gone. On the server the stream belongs to the HTTP server and dies when
// the handler returns, which is when the connection object dies too: `finished` is set then, and
// no code touches the stream after a wait once `finished` is set.
#include "squall/websocket/websocket.hpp"

#include <sys/random.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <random>
#include <stdexcept>
#include <string>
#include <system_error>

#include "squall/error.hpp"
#include "squall/fiber.hpp"
#include "squall/http/parser.hpp"
#include "squall/http/server.hpp"
#include "squall/io_stream.hpp"
#include "squall/locks.hpp"
#include "squall/log.hpp"
#include "squall/tcp_client.hpp"

namespace squall::websocket {
namespace {

constexpr std::string_view accept_guid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

// --- SHA-1 (FIPS 180-4), for Sec-WebSocket-Accept only -------------------------------------------

class sha1 {
 public:
  void update(std::string_view data) {
    for (unsigned char c : data) {
      block_[used_++] = c;
      if (used_ == 64) {
        compress();
        used_ = 0;
      }
    }
    bits_ += std::uint64_t(data.size()) * 8;
  }
  // The 20-byte digest.
  void finish(unsigned char out[20]) {
    std::uint64_t bits = bits_;
    block_[used_++] = 0x80;
    if (used_ > 56) {
      std::fill(block_ + used_, block_ + 64, 0);
      compress();
      used_ = 0;
    }
    std::fill(block_ + used_, block_ + 56, 0);
    for (int i = 0; i < 8; ++i)
      block_[56 + i] = static_cast<unsigned char>(bits >> (56 - 8 * i));
    compress();
    for (int i = 0; i < 5; ++i)
      for (int j = 0; j < 4; ++j)
        out[4 * i + j] = static_cast<unsigned char>(h_[i] >> (24 - 8 * j));
  }

 private:
  static std::uint32_t rol(std::uint32_t x, int n) { return (x << n) | (x >> (32 - n)); }
  void compress() {
    std::uint32_t w[80];
    for (int i = 0; i < 16; ++i)
      w[i] = std::uint32_t(block_[4 * i]) << 24 | std::uint32_t(block_[4 * i + 1]) << 16 |
             std::uint32_t(block_[4 * i + 2]) << 8 | std::uint32_t(block_[4 * i + 3]);
    for (int i = 16; i < 80; ++i)
      w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    std::uint32_t a = h_[0], b = h_[1], c = h_[2], d = h_[3], e = h_[4];
    for (int i = 0; i < 80; ++i) {
      std::uint32_t f, k;
      if (i < 20) {
        f = (b & c) | (~b & d);
        k = 0x5A827999;
      } else if (i < 40) {
        f = b ^ c ^ d;
        k = 0x6ED9EBA1;
      } else if (i < 60) {
        f = (b & c) | (b & d) | (c & d);
        k = 0x8F1BBCDC;
      } else {
        f = b ^ c ^ d;
        k = 0xCA62C1D6;
      }
      std::uint32_t t = rol(a, 5) + f + e + k + w[i];
      e = d;
      d = c;
      c = rol(b, 30);
      b = a;
      a = t;
    }
    h_[0] += a;
    h_[1] += b;
    h_[2] += c;
    h_[3] += d;
    h_[4] += e;
  }

  std::uint32_t h_[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
  unsigned char block_[64] = {};
  std::size_t used_ = 0;
  std::uint64_t bits_ = 0;
};

constexpr char b64_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::string base64(const unsigned char* p, std::size_t n) {
  std::string out;
  out.reserve((n + 2) / 3 * 4);
  for (std::size_t i = 0; i < n; i += 3) {
    std::uint32_t v = std::uint32_t(p[i]) << 16;
    if (i + 1 < n) v |= std::uint32_t(p[i + 1]) << 8;
    if (i + 2 < n) v |= p[i + 2];
    out += b64_alphabet[(v >> 18) & 63];
    out += b64_alphabet[(v >> 12) & 63];
    out += i + 1 < n ? b64_alphabet[(v >> 6) & 63] : '=';
    out += i + 2 < n ? b64_alphabet[v & 63] : '=';
  }
  return out;
}

// Sec-WebSocket-Accept for a key (RFC 6455 4.2.2).
std::string accept_value(std::string_view key) {
  sha1 h;
  h.update(key);
  h.update(accept_guid);
  unsigned char digest[20];
  h.finish(digest);
  return base64(digest, sizeof digest);
}

bool is_b64(char c) noexcept {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
         c == '/';
}

// A Sec-WebSocket-Key must be the base64 of 16 bytes (RFC 6455 4.1): 22 characters and "==".
bool valid_key(std::string_view k) noexcept {
  if (k.size() != 24 || k[22] != '=' || k[23] != '=') return false;
  return std::all_of(k.begin(), k.begin() + 22, is_b64);
}

void random_bytes(void* out, std::size_t n) {
  auto* p = static_cast<unsigned char*>(out);
  while (n > 0) {
    ssize_t r = ::getrandom(p, n, 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      // No getrandom (very old kernels): std::random_device reads the same pool.
      std::random_device rd;
      for (; n > 0; --n)
        *p++ = static_cast<unsigned char>(rd());
      return;
    }
    p += r;
    n -= static_cast<std::size_t>(r);
  }
}

char lower(char c) noexcept {
  return c >= 'A' && c <= 'Z' ? char(c - 'A' + 'a') : c;
}

std::string to_lower(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    c = lower(c);
  return out;
}

// Every value of every field `name`, joined as one comma-separated list.
std::string joined_values(const http::message_head& head, std::string_view name) {
  std::string out;
  for (const auto& f : head.headers) {
    if (!http::iequals(f.name, name)) continue;
    if (!out.empty()) out += ", ";
    out += f.value;
  }
  return out;
}

// The items of a comma-separated list, trimmed, empty ones dropped.
std::vector<std::string> list_items(std::string_view list) {
  std::vector<std::string> out;
  while (!list.empty()) {
    std::size_t comma = list.find(',');
    std::string_view item = http::trim_ows(list.substr(0, comma));
    if (!item.empty()) out.emplace_back(item);
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return out;
}

// Tornado's default origin check: an Origin whose host[:port] differs from Host is refused.
bool same_origin(std::string_view origin, std::string_view host) {
  std::size_t scheme = origin.find("://");
  if (scheme != std::string_view::npos) origin.remove_prefix(scheme + 3);
  origin = origin.substr(0, origin.find('/'));
  return to_lower(origin) == to_lower(host);
}

}  // namespace

// --- Connection state ----------------------------------------------------------------------------

struct connection::state {
  state(io_stream& stream, role r, options o, const deflate_params* deflate)
      : s(&stream),
        side(r),
        opts(std::move(o)),
        parser(parser_options{
            .side = r,
            .allow_rsv1 = deflate != nullptr,
            .max_frame_size = deflate ? opts.max_message_size + opts.max_message_size / 8 + 1024
                                      : opts.max_message_size,
        }) {
    if (deflate) {
      compressed = true;
      deflater = std::make_unique<message_deflater>(*deflate, r, opts.compression_level);
      inflater = std::make_unique<message_inflater>(*deflate, r);
    }
    last_heard = loop->time();
  }

  io_stream* s;
  io_loop* loop = &s->loop();
  std::unique_ptr<io_stream> owned;  // the client's stream (the server's belongs to the server)
  role side;
  options opts;
  frame_parser parser;
  std::unique_ptr<message_deflater> deflater;
  std::unique_ptr<message_inflater> inflater;
  std::string subprotocol;
  bool compressed = false;

  // Sending: one frame at a time.
  squall::mutex write_mu;
  std::string zbuf;     // a compressed message
  std::string scratch;  // masked pieces of a caller's payload (client)
  std::uint32_t keys[32] = {};
  std::size_t keys_left = 0;

  // Reading.
  bool reading = false;        // a fiber is in receive() or reading for close()
  bool parser_failed = false;  // frame boundaries are lost: only draining is left
  bool expect_end = false;     // the current frame's payload is complete, its `end` is due
  opcode frame_op = opcode::continuation;
  bool frame_fin = false;
  std::uint64_t frame_size = 0, frame_left = 0;
  std::string ctrl;  // the current control frame's payload
  opcode msg_op = opcode::text;
  bool msg_deflated = false;
  bool failing = false;         // we closed for a protocol error: the rest is dropped
  bool discard = false;         // the current message is dropped
  std::uint64_t wire_size = 0;  // payload bytes of the current message on the wire
  std::string msg;              // the current message, reassembled (and inflated)
  std::string_view direct;      // or: a whole one-frame message, in the stream's buffer
  utf8_validator utf8;

  // Closing.
  bool close_sent = false, close_received = false, finished = false;
  bool code_fixed = false;  // `code` is final (the peer's close, or our protocol error)
  std::uint16_t code = close_code::abnormal;
  std::string reason;
  time_point close_deadline = time_point::max();
  event done;  // set when finished

  // Keep-alive.
  time_point last_heard;
  std::uint64_t frames_heard = 0;
  condition heard;
  fiber<void> pinger;

  bool over() const noexcept { return finished || close_sent || close_received; }

  std::uint32_t next_key() {
    if (keys_left == 0) {
      random_bytes(keys, sizeof keys);
      keys_left = std::size(keys);
    }
    return keys[--keys_left];
  }

  // The connection is over: close the socket, stop the pinger, wake close() waiters.
  void finish() {
    if (finished) return;
    finished = true;
    if (s) s->close({}, io_loop::now());
    if (pinger.valid()) pinger.cancel();
    done.set();
  }

  // The peer vanished or a write failed: closed without a handshake.
  void drop() {
    if (!code_fixed) {
      code = close_code::abnormal;
      reason.clear();
      code_fixed = true;
    }
    finish();
  }

  // Writes one whole frame and flushes it, or with `later` leaves it to flush_later(): a data
  // message goes out with the reader's next receive (an echo's answer and the wait for the next
  // message are one step) or at the end of the loop's iteration, whichever comes first. The
  // caller holds write_mu and has checked !finished. A client's payload is masked: in place if
  // `own` (our buffer), else through `scratch`.
  void write_frame(opcode op, std::string_view payload, bool rsv1, bool own, time_point deadline,
                   bool later = false) {
    char head[14];
    if (side == role::server) {
      std::size_t n = write_frame_header(head, op, true, rsv1, payload.size());
      std::string_view pieces[] = {{head, n}, payload};
      s->write(pieces, deadline);
    } else {
      std::uint32_t key = next_key();
      std::size_t n = write_frame_header(head, op, true, rsv1, payload.size(), &key);
      if (own || payload.size() <= 4096) {
        char* p = const_cast<char*>(payload.data());
        if (!own) {
          scratch.assign(payload);
          p = scratch.data();
        }
        apply_mask(p, payload.size(), key, 0);
        std::string_view pieces[] = {{head, n}, {p, payload.size()}};
        s->write(pieces, deadline);
      } else {
        // Masked in pieces: the copy stays small whatever the message's size.
        s->write(std::string_view(head, n), deadline);
        constexpr std::size_t piece = 64 * 1024;
        for (std::size_t off = 0; off < payload.size(); off += piece) {
          std::size_t len = std::min(piece, payload.size() - off);
          scratch.assign(payload.substr(off, len));
          apply_mask(scratch.data(), len, key, off);
          s->write(std::string_view(scratch), deadline);
        }
      }
    }
    if (later)
      s->flush_later();
    else
      s->flush(deadline);
  }

  // A data message from a sender. Throws error::closed once the connection is closing.
  void send_message(std::string_view data, opcode type) {
    if (over()) throw_error(error::closed, "squall: websocket: send on a closed connection");
    std::lock_guard<squall::mutex> lock(write_mu);
    if (over()) throw_error(error::closed, "squall: websocket: send on a closed connection");
    std::string_view payload = data;
    bool rsv1 = false;
    if (deflater && data.size() >= opts.compression_threshold) {
      zbuf.clear();
      deflater->compress(data, zbuf);
      payload = zbuf;
      rsv1 = true;
    }
    try {
      write_frame(type, payload, rsv1, rsv1, time_point::max(), true);
    } catch (...) {
      // A frame may have gone out in part: the stream is unusable.
      if (!finished) drop();
      throw;
    }
    if (zbuf.capacity() > 1024 * 1024) std::string().swap(zbuf);
  }

  // A control frame. Failures end the connection; only cancellation is thrown.
  void send_control(opcode op, std::string_view payload, time_point deadline) {
    try {
      std::lock_guard<squall::mutex> lock(write_mu);
      if (finished) return;
      char copy[125];
      std::size_t n = std::min<std::size_t>(payload.size(), sizeof copy);
      if (n) std::memcpy(copy, payload.data(), n);
      write_frame(op, std::string_view(copy, n), false, true, deadline);
    } catch (const std::system_error& e) {
      if (!finished) drop();
      if (e.code() == error::cancelled) throw;
    }
  }

  // Sends our close frame (once) and starts the close timeout.
  void send_close(std::uint16_t c, std::string_view why) {
    if (close_sent || finished) return;
    close_sent = true;
    close_deadline = std::min(close_deadline, io_loop::now() + opts.close_timeout);
    char payload[125];
    std::size_t n = 0;
    if (c != close_code::no_status) {
      payload[0] = static_cast<char>(c >> 8);
      payload[1] = static_cast<char>(c & 0xff);
      n = 2 + std::min<std::size_t>(why.size(), 123);
      if (n > 2) std::memcpy(payload + 2, why.data(), n - 2);
    }
    send_control(opcode::close, std::string_view(payload, n), close_deadline);
  }

  // A protocol violation by the peer: close with `c` ("Fail the WebSocket Connection").
  bool fail(std::uint16_t c, const char* what) {
    log(log_level::debug, "websocket", "closing with %u: %s", unsigned(c), what);
    if (!code_fixed) {
      code = c;
      reason = what;
      code_fixed = true;
    }
    failing = discard = true;
    send_close(c, {});
    return false;
  }

  void on_close_frame() {
    close_received = true;
    discard = true;
    std::uint16_t c = close_code::no_status;
    std::string_view why;
    if (ctrl.size() == 1) {
      fail(close_code::protocol_error, "a close frame with a 1-byte payload");
      return;
    }
    if (ctrl.size() >= 2) {
      c = static_cast<std::uint16_t>(static_cast<unsigned char>(ctrl[0]) << 8 |
                                     static_cast<unsigned char>(ctrl[1]));
      if (!valid_close_code(c)) {
        fail(close_code::protocol_error, "an invalid close code");
        return;
      }
      why = std::string_view(ctrl).substr(2);
      utf8_validator v;
      if (!v.feed(why) || !v.complete()) {
        fail(close_code::invalid_payload, "a close reason that is not UTF-8");
        return;
      }
    }
    if (!code_fixed) {
      code = c;
      reason = why;
      code_fixed = true;
    }
    if (!close_sent) {
      // Echo the code (RFC 6455 5.5.1), then the linger bounds how long the peer may take.
      close_deadline = io_loop::now() + opts.close_timeout;
      send_close(c, {});
    }
  }

  void on_control() {
    switch (frame_op) {
      case opcode::ping:
        // (Waits behind a send in progress: a peer that does not read is not answered.)
        if (!over()) send_control(opcode::pong, ctrl, time_point::max());
        break;
      case opcode::close:
        on_close_frame();
        break;
      default:  // pong: being heard is all it does
        break;
    }
  }

  // Appends inflated bytes to the message (and checks them as UTF-8); false: failed.
  bool inflate(std::string_view piece, bool last) {
    std::size_t before = msg.size();
    if (!inflater->decompress(piece, last, msg, opts.max_message_size)) {
      if (inflater->too_big()) return fail(close_code::too_big, "message too big (inflated)");
      return fail(close_code::invalid_payload, "bad deflate data");
    }
    if (msg_op == opcode::text && !utf8.feed(std::string_view(msg).substr(before)))
      return fail(close_code::invalid_payload, "invalid UTF-8 in a text message");
    return true;
  }

  // One parser event. True when a whole message is ready.
  bool on_event(const frame_event& ev) {
    using kind = frame_event::kind;
    switch (ev.type) {
      case kind::none:
        return false;
      case kind::error:
        parser_failed = true;
        return fail(ev.close ? ev.close : close_code::protocol_error, ev.what);
      case kind::header:
        last_heard = loop->time();  // the ping timer's granularity is far coarser than the lag
        ++frames_heard;
        heard.notify_all();
        frame_op = ev.op;
        frame_fin = ev.fin;
        frame_size = frame_left = ev.payload_size;
        expect_end = frame_left == 0;
        if (is_control(ev.op)) {
          ctrl.clear();
          return false;
        }
        if (ev.op == opcode::continuation) {
          if (ev.rsv1) return fail(close_code::protocol_error, "RSV1 set on a continuation frame");
        } else {
          msg_op = ev.op;
          msg_deflated = ev.rsv1;
          if (msg.capacity() > 1024 * 1024) std::string().swap(msg);
          msg.clear();
          direct = {};
          utf8.reset();
          wire_size = 0;
          discard = failing || close_received;
        }
        if (discard) return false;
        wire_size += ev.payload_size;
        if (!msg_deflated && wire_size > opts.max_message_size)
          return fail(close_code::too_big, "message too big");
        if (msg_deflated && wire_size > parser.options().max_frame_size)
          return fail(close_code::too_big, "message too big (compressed)");
        return false;
      case kind::payload:
        frame_left -= std::min<std::uint64_t>(frame_left, ev.data.size());
        if (frame_left == 0) expect_end = true;
        if (is_control(frame_op)) {
          ctrl.append(ev.data);
          return false;
        }
        if (discard || ev.data.empty()) return false;
        if (msg_deflated) {
          inflate(ev.data, false);
          return false;
        }
        if (msg_op == opcode::text && !utf8.feed(ev.data))
          return fail(close_code::invalid_payload, "invalid UTF-8 in a text message");
        if (frame_op != opcode::continuation && frame_fin && ev.data.size() == frame_size) {
          direct = ev.data;  // the whole message, in place: no copy
        } else {
          if (direct.data()) {
            msg.assign(direct);
            direct = {};
          }
          msg.append(ev.data);
        }
        return false;
      case kind::end:
        expect_end = false;
        if (is_control(frame_op)) {
          on_control();
          return false;
        }
        if (!frame_fin || discard) return false;
        if (msg_deflated && !inflate({}, true)) return false;
        if (msg_op == opcode::text && !utf8.complete())
          return fail(close_code::invalid_payload, "a text message ends inside a character");
        return true;
    }
    return false;
  }

  // After the close handshake (or with frame boundaries lost): the server shuts its side down,
  // then both read and drop until the peer's end of stream, bounded by close_deadline.
  void linger() {
    try {
      if (side == role::server || parser_failed) s->shutdown_write(close_deadline);
      for (;;) {
        s->consume(s->peek().size());
        if (finished || !s->read_more(close_deadline)) break;
      }
    } catch (const std::system_error& e) {
      if (e.code() == error::cancelled) throw;
    }
    finish();
  }

  // Waits for more bytes. Returns normally when there are some or the connection ended.
  void wait_bytes(time_point deadline) {
    time_point dl = deadline;
    if (close_sent || close_received) dl = std::min(dl, close_deadline);
    try {
      if (!s->read_more(dl)) {
        if (!close_received) drop();  // end of stream without a close frame
        finish();
      }
    } catch (const std::system_error& e) {
      if (finished) return;  // ended meanwhile by another fiber (close timeout, pinger, owner)
      if (e.code() == error::timed_out) {
        time_point now = io_loop::now();
        if ((close_sent || close_received) && now >= close_deadline) {
          // The peer never answered our close.
          if (!close_received) drop();
          finish();
          return;
        }
        auto* f = squall::detail::current_fiber();
        if (now >= deadline || (f && now >= f->scope_deadline)) throw;
        return;  // the stream's own idle timeout: go on waiting
      }
      if (e.code() == error::cancelled) throw;
      drop();
    }
  }

  // The reading loop: the next message, or nothing once the connection is over.
  std::optional<message> read(time_point deadline) {
    direct = {};
    for (;;) {
      if (finished) return std::nullopt;
      if ((close_sent && close_received) || parser_failed) {
        linger();
        continue;
      }
      std::string_view in = s->peek();
      if (!in.empty() || expect_end) {
        frame_event ev;
        std::size_t used = parser.parse(const_cast<char*>(in.data()), in.size(), ev);
        s->consume(used);
        if (ev.type != frame_event::kind::none) {
          if (on_event(ev)) return message{msg_op, direct.data() ? direct : std::string_view(msg)};
          continue;
        }
        if (used > 0) continue;
      }
      // The stream's buffer may move while we wait: a message held in place is copied out.
      if (direct.data()) {
        msg.assign(direct);
        direct = {};
      }
      wait_bytes(deadline);
    }
  }

  struct reading_scope {
    state& st;
    explicit reading_scope(state& s) : st(s) {
      if (st.reading)
        throw std::logic_error("squall: websocket: two fibers reading one connection");
      st.reading = true;
    }
    ~reading_scope() { st.reading = false; }
  };

  void start_pinger(const std::shared_ptr<state>& self) {
    if (opts.ping_interval <= duration::zero()) return;
    pinger =
        spawn(this_fiber::loop(), [st = self] { st->ping_loop(); }, {.name = "websocket-ping"});
  }

  // Pings after ping_interval of silence; a peer that stays silent for ping_timeout after a
  // ping is dead: we send 1011 (if we can at once) and drop the connection (1006).
  void ping_loop() {
    duration interval = opts.ping_interval;
    duration timeout = opts.ping_timeout > duration::zero()
                           ? opts.ping_timeout
                           : std::max<duration>(3 * interval, std::chrono::seconds(30));
    try {
      for (;;) {
        for (;;) {
          if (over()) return;
          time_point next = last_heard + interval;
          if (io_loop::now() >= next) break;
          this_fiber::sleep_until(next);
        }
        std::uint64_t before = frames_heard;
        time_point dead_at = io_loop::now() + timeout;
        send_control(opcode::ping, {}, dead_at);
        while (frames_heard == before && !over() && io_loop::now() < dead_at) {
          try {
            heard.wait(dead_at);
          } catch (const std::system_error& e) {
            if (e.code() != error::timed_out) throw;
          }
        }
        if (over()) return;
        if (frames_heard == before) {
          log(log_level::debug, "websocket", "no answer to a ping: dropping the connection");
          code = close_code::abnormal;
          code_fixed = true;
          if (!close_sent && write_mu.try_lock()) {
            close_sent = true;
            std::lock_guard<squall::mutex> lock(write_mu, std::adopt_lock);
            try {
              char payload[2] = {char(close_code::internal_error >> 8),
                                 char(close_code::internal_error & 0xff)};
              write_frame(
                  opcode::close, std::string_view(payload, 2), false, true,
                  io_loop::now() + std::min<duration>(opts.close_timeout, std::chrono::seconds(1)));
            } catch (const std::system_error&) {
            }
          }
          finish();
          return;
        }
      }
    } catch (const std::system_error&) {
      // Cancelled: the connection ended.
    }
  }
};

// --- connection ----------------------------------------------------------------------------------

connection::connection(std::shared_ptr<state> st) : st_(std::move(st)) {}
connection::connection(connection&&) noexcept = default;
connection& connection::operator=(connection&& o) noexcept {
  if (this != &o) {
    if (st_) st_->drop();
    st_ = std::move(o.st_);
  }
  return *this;
}
connection::~connection() {
  if (st_) st_->drop();
}

std::optional<message> connection::receive(time_point deadline) {
  if (!st_) return std::nullopt;
  auto st = st_;
  if (st->finished) return std::nullopt;
  if (st->reading && st->close_sent) {
    // close() is reading (it was called while this fiber did something else): nothing more
    // will be delivered; wait for the end of the handshake.
    st->done.wait(deadline);
    return std::nullopt;
  }
  state::reading_scope scope(*st);
  return st->read(deadline);
}

void connection::send(std::string_view data, opcode type) {
  if (type != opcode::text && type != opcode::binary)
    throw std::invalid_argument("squall: websocket: send() takes text or binary");
  if (!st_) throw_error(error::closed, "squall: websocket: send on an empty connection");
  auto st = st_;  // a suspended sender keeps the state alive
  st->send_message(data, type);
}

void connection::ping(std::string_view payload) {
  if (payload.size() > 125) throw std::invalid_argument("squall: websocket: ping payload > 125");
  if (!st_) throw_error(error::closed, "squall: websocket: ping on an empty connection");
  auto st = st_;
  if (st->over()) throw_error(error::closed, "squall: websocket: ping on a closed connection");
  st->send_control(opcode::ping, payload, time_point::max());
  if (st->finished) throw_error(error::closed, "squall: websocket: ping failed");
}

void connection::close(std::uint16_t code, std::string_view reason) {
  if (code != close_code::no_status && !valid_close_code(code))
    throw std::invalid_argument("squall: websocket: close code " + std::to_string(code) +
                                " may not be sent");
  if (reason.size() > 123) throw std::invalid_argument("squall: websocket: close reason > 123");
  if (!st_) return;
  auto st = st_;
  if (st->finished) return;
  st->send_close(code, reason);
  if (st->reading) {
    // Another fiber reads: it sees the peer's close and finishes.
    try {
      st->done.wait(st->close_deadline);
    } catch (const std::system_error& e) {
      if (e.code() != error::timed_out) throw;
      if (!st->close_received) st->drop();
      st->finish();
    }
    return;
  }
  state::reading_scope scope(*st);
  while (!st->finished)
    st->read(time_point::max());
}

bool connection::closed() const noexcept {
  return !st_ || st_->over();
}
std::uint16_t connection::close_code() const noexcept {
  return st_ ? st_->code : close_code::abnormal;
}
const std::string& connection::close_reason() const noexcept {
  static const std::string empty;
  return st_ ? st_->reason : empty;
}
const std::string& connection::subprotocol() const noexcept {
  static const std::string empty;
  return st_ ? st_->subprotocol : empty;
}
bool connection::compressed() const noexcept {
  return st_ && st_->compressed;
}

// --- Server handshake ----------------------------------------------------------------------------

connection accept(http::request& req, http::response& resp, options opts) {
  using http::request_error;
  const http::message_head& head = req.head();
  if (req.method() != "GET") throw request_error(400, "websocket: the handshake must be a GET");
  if (req.minor_version() < 1) throw request_error(400, "websocket: the handshake needs HTTP/1.1");
  if (!head.has_token("Upgrade", "websocket"))
    throw request_error(400, "websocket: can \"Upgrade\" only to \"websocket\"");
  if (!head.has_token("Connection", "upgrade"))
    throw request_error(400, "websocket: \"Connection\" must be \"Upgrade\"");
  if (http::trim_ows(req.header("Sec-WebSocket-Version")) != "13") {
    // 426 with the version we speak (RFC 6455 4.4). Sent here: a request_error's answer would
    // not carry the header.
    resp.set_status(426);
    resp.set_header("Sec-WebSocket-Version", "13");
    resp.set_header("Content-Type", "text/plain; charset=utf-8");
    resp.send("426 Upgrade Required\n");
    throw request_error(426, "websocket: unsupported Sec-WebSocket-Version");
  }
  std::string_view key = http::trim_ows(req.header("Sec-WebSocket-Key"));
  if (!valid_key(key)) throw request_error(400, "websocket: missing or bad Sec-WebSocket-Key");
  std::string_view origin = req.header("Origin");
  bool origin_ok = opts.check_origin ? opts.check_origin(origin, req)
                                     : origin.empty() || same_origin(origin, req.header("Host"));
  if (!origin_ok) throw request_error(403, "websocket: cross-origin websockets are not allowed");

  std::string chosen;
  if (!opts.subprotocols.empty()) {
    auto offered = list_items(joined_values(head, "Sec-WebSocket-Protocol"));
    for (const auto& p : opts.subprotocols) {
      if (std::find(offered.begin(), offered.end(), p) != offered.end()) {
        chosen = p;
        break;
      }
    }
  }
  deflate_params agreed;
  std::string ext_answer;
  bool deflate =
      opts.compression && negotiate_deflate(joined_values(head, "Sec-WebSocket-Extensions"),
                                            opts.deflate, agreed, ext_answer);

  resp.set_status(101);
  resp.set_header("Upgrade", "websocket");
  resp.set_header("Connection", "Upgrade");
  resp.set_header("Sec-WebSocket-Accept", accept_value(key));
  if (!chosen.empty()) resp.set_header("Sec-WebSocket-Protocol", chosen);
  if (deflate) resp.set_header("Sec-WebSocket-Extensions", ext_answer);
  io_stream& s = resp.hijack();  // the request's views are invalid from here on

  auto st = std::make_shared<connection::state>(s, role::server, std::move(opts),
                                                deflate ? &agreed : nullptr);
  st->subprotocol = std::move(chosen);
  st->start_pinger(st);
  return connection(std::move(st));
}

// --- Client handshake ----------------------------------------------------------------------------

namespace {

struct ws_url {
  std::string host;  // without brackets
  std::uint16_t port = 80;
  bool default_port = true;
  std::string target;
  std::string host_header() const {
    std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
    return default_port ? h : h + ":" + std::to_string(port);
  }
};

[[noreturn]] void bad_url(std::string_view url, const char* why) {
  throw std::invalid_argument("squall: websocket: bad URL '" + std::string(url) + "': " + why);
}

ws_url parse_ws_url(std::string_view text) {
  for (unsigned char c : text)
    if (c <= ' ' || c == 0x7f) bad_url(text, "spaces and control characters must be %-encoded");
  std::size_t sep = text.find("://");
  if (sep == std::string_view::npos) bad_url(text, "not an absolute ws:// URL");
  std::string scheme = to_lower(text.substr(0, sep));
  if (scheme == "wss" || scheme == "https")
    throw std::invalid_argument("squall: websocket: wss:// needs TLS, not built");
  if (scheme != "ws" && scheme != "http") bad_url(text, "only ws:// is supported");
  std::string_view rest = text.substr(sep + 3);
  rest = rest.substr(0, rest.find('#'));
  std::size_t end = rest.find_first_of("/?");
  std::string_view authority = rest.substr(0, end);
  rest = end == std::string_view::npos ? std::string_view() : rest.substr(end);
  if (authority.find('@') != std::string_view::npos) bad_url(text, "user:password@ is not used");
  ws_url u;
  std::string_view port;
  if (authority.starts_with('[')) {
    std::size_t close = authority.find(']');
    if (close == std::string_view::npos) bad_url(text, "unterminated IPv6 literal");
    u.host = authority.substr(1, close - 1);
    std::string_view after = authority.substr(close + 1);
    if (!after.empty() && after.front() != ':') bad_url(text, "junk after IPv6 literal");
    if (!after.empty()) port = after.substr(1);
  } else {
    std::size_t colon = authority.rfind(':');
    u.host = authority.substr(0, colon);
    if (colon != std::string_view::npos) port = authority.substr(colon + 1);
  }
  if (u.host.empty()) bad_url(text, "no host");
  if (!port.empty()) {
    unsigned long p = 0;
    for (char c : port)
      if (c < '0' || c > '9' || (p = p * 10 + unsigned(c - '0')) > 65535) bad_url(text, "bad port");
    if (p == 0) bad_url(text, "bad port");
    u.port = static_cast<std::uint16_t>(p);
    u.default_port = p == 80;
  }
  u.target = rest.empty() || rest.front() == '?' ? "/" + std::string(rest) : std::string(rest);
  return u;
}

bool header_ok(std::string_view name, std::string_view value) {
  if (name.empty()) return false;
  for (unsigned char c : name)
    if (c <= ' ' || c == ':' || c >= 0x7f) return false;
  for (unsigned char c : value)
    if (c == '\r' || c == '\n' || c == 0) return false;
  return true;
}

}  // namespace

connection connect(std::string_view url, options opts) {
  ws_url u = parse_ws_url(url);
  for (const auto& [k, v] : opts.headers)
    if (!header_ok(k, v)) throw std::invalid_argument("squall: websocket: bad header '" + k + "'");
  time_point deadline = opts.connect_timeout > duration::zero()
                            ? io_loop::now() + opts.connect_timeout
                            : time_point::max();
  connect_options co;
  co.deadline = deadline;
  auto stream = std::make_unique<io_stream>(tcp_connect(u.host, u.port, co));
  io_stream& s = *stream;

  unsigned char nonce[16];
  random_bytes(nonce, sizeof nonce);
  std::string key = base64(nonce, sizeof nonce);
  std::string req = "GET " + u.target + " HTTP/1.1\r\nHost: " + u.host_header() +
                    "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + key +
                    "\r\nSec-WebSocket-Version: 13\r\n";
  if (!opts.subprotocols.empty()) {
    req += "Sec-WebSocket-Protocol: ";
    for (std::size_t i = 0; i < opts.subprotocols.size(); ++i)
      req += (i ? ", " : "") + opts.subprotocols[i];
    req += "\r\n";
  }
  if (opts.compression) req += "Sec-WebSocket-Extensions: " + deflate_offer(opts.deflate) + "\r\n";
  for (const auto& [k, v] : opts.headers)
    req += k + ": " + v + "\r\n";
  req += "\r\n";
  s.write(req, deadline);
  s.flush(deadline);

  http::head_parser parser;
  http::message_head head;
  std::size_t head_len = 0;
  for (;;) {
    std::string_view in = s.peek();
    http::parse_error err;
    head_len = parser.parse_response(in, head, err);
    if (err)
      throw handshake_error(std::string("squall: websocket: bad handshake response: ") + err.what);
    if (head_len) break;
    if (!s.read_more(deadline))
      throw handshake_error("squall: websocket: the server closed during the handshake");
  }
  auto refuse = [&](const std::string& why) -> void {
    throw handshake_error("squall: websocket: " + why, head.status);
  };
  if (head.status != 101)
    refuse("the server answered " + std::to_string(head.status) + " " + std::string(head.reason));
  if (!head.has_token("Upgrade", "websocket")) refuse("no \"Upgrade: websocket\" in the answer");
  if (!head.has_token("Connection", "upgrade")) refuse("no \"Connection: Upgrade\" in the answer");
  if (http::trim_ows(head.header("Sec-WebSocket-Accept")) != accept_value(key))
    refuse("wrong Sec-WebSocket-Accept");
  std::string proto(http::trim_ows(head.header("Sec-WebSocket-Protocol")));
  if (!proto.empty() && std::find(opts.subprotocols.begin(), opts.subprotocols.end(), proto) ==
                            opts.subprotocols.end())
    refuse("the server chose a subprotocol we did not offer: " + proto);
  std::string ext = joined_values(head, "Sec-WebSocket-Extensions");
  deflate_params agreed;
  bool deflate = false;
  if (!http::trim_ows(ext).empty()) {
    if (!opts.compression) refuse("the server answered with extensions we did not offer: " + ext);
    if (!accept_deflate_response(ext, opts.deflate, agreed))
      refuse("unacceptable Sec-WebSocket-Extensions: " + ext);
    deflate = true;
  }
  s.consume(head_len);  // what follows are frames

  auto st = std::make_shared<connection::state>(s, role::client, std::move(opts),
                                                deflate ? &agreed : nullptr);
  st->owned = std::move(stream);
  st->subprotocol = std::move(proto);
  st->start_pinger(st);
  return connection(std::move(st));
}

}  // namespace squall::websocket
