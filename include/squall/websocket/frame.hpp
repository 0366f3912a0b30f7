// SPDX-License-Identifier: MIT
// WebSocket wire format (RFC 6455 section 5) and permessage-deflate (RFC 7692), without I/O:
// the parts of the protocol that are pure functions of bytes, so they can be tested and fuzzed
// on their own. websocket.hpp builds connections on top of these.
//
//   squall::websocket::frame_parser p({.role = role::server});
//   std::size_t used = p.parse(bytes, ev);    // ev: a frame header, payload bytes, or an error
//
// The parser is incremental (any split of the input, down to one byte per call, gives the same
// events), copies nothing, and unmasks payload in place in the caller's buffer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace squall::websocket {

enum class opcode : std::uint8_t {
  continuation = 0x0,
  text = 0x1,
  binary = 0x2,
  close = 0x8,
  ping = 0x9,
  pong = 0xA,
};

inline bool is_control(opcode op) noexcept {
  return static_cast<std::uint8_t>(op) & 0x8;
}

// Close codes (RFC 6455 7.4.1).
namespace close_code {
constexpr std::uint16_t normal = 1000;
constexpr std::uint16_t going_away = 1001;
constexpr std::uint16_t protocol_error = 1002;
constexpr std::uint16_t unsupported_data = 1003;
constexpr std::uint16_t no_status = 1005;  // never sent: "the close frame had no code"
constexpr std::uint16_t abnormal = 1006;   // never sent: "the connection dropped without a close"
constexpr std::uint16_t invalid_payload = 1007;
constexpr std::uint16_t policy_violation = 1008;
constexpr std::uint16_t too_big = 1009;
constexpr std::uint16_t mandatory_extension = 1010;
constexpr std::uint16_t internal_error = 1011;
}  // namespace close_code

// Whether `code` may appear in a close frame on the wire: 1000-1003, 1007-1011, 1012-1014 (added to
// the IANA registry after RFC 6455; Autobahn accepts them) and 3000-4999. Never 1004, 1005,
// 1006, 1015 or anything else.
bool valid_close_code(std::uint16_t code) noexcept;

enum class role : std::uint8_t { server, client };

// Applies the masking key to `data` in place (XOR, RFC 6455 5.3), starting at byte `offset` of
// the payload (so a payload can be unmasked in pieces). Word-at-a-time / SIMD.
// `key` holds the four key bytes in wire order, most significant first: key 0x37fa213d is sent as
// 37 fa 21 3d and masks payload byte 0 with 0x37 (write_frame_header writes it that way).
void apply_mask(char* data, std::size_t n, std::uint32_t key, std::size_t offset = 0) noexcept;

// Incremental UTF-8 validation (RFC 3629: no overlongs, no surrogates, at most U+10FFFF), for
// text messages that arrive in fragments. Fails as soon as a byte makes the text invalid.
class utf8_validator {
 public:
  // False as soon as the bytes so far cannot be the start of valid UTF-8.
  bool feed(std::string_view bytes) noexcept;
  // The text ended on a character boundary (call at the end of the message).
  bool complete() const noexcept { return state_ == 0; }
  void reset() noexcept { state_ = 0; }

 private:
  std::uint32_t state_ = 0;
};

// What a parse step found.
struct frame_event {
  enum class kind : std::uint8_t {
    none,     // nothing yet: more bytes needed
    header,   // a frame header: fin, rsv1, op, payload_size are set
    payload,  // payload bytes of the current frame (unmasked, in place): `data`
    end,      // the current frame's payload is complete (also sent for empty payloads)
              // (payload and end events carry the frame's fin, rsv1, op, payload_size too)
    error,    // a protocol violation: `close` is the code to close with, `what` says why
  } type = kind::none;
  bool fin = false;
  bool rsv1 = false;  // "compressed" under permessage-deflate (first frame of a message)
  opcode op = opcode::continuation;
  std::uint64_t payload_size = 0;
  std::string_view data;
  std::uint16_t close = 0;
  const char* what = "";
};

struct parser_options {
  role side = role::server;  // a server requires masked frames, a client refuses them
  // Reserved bit 1 is allowed only when permessage-deflate was negotiated.
  bool allow_rsv1 = false;
  // A frame whose payload is larger than this is refused with 1009 as soon as its header
  // arrives (before its payload is read). Messages are bounded by the connection.
  std::uint64_t max_frame_size = 16 * 1024 * 1024;
};

// Splits a byte stream into frames. Checks, per frame (RFC 6455 5.2, 5.4, 5.5): reserved bits
// (1002), reserved opcodes (1002), masking (1002), control frames fragmented or longer than 125
// bytes (1002), a 64-bit length with the top bit set or a non-minimal length encoding (1002),
// max_frame_size (1009). Fragmentation order (a continuation without a start, a new data frame
// inside a fragmented message) is checked too: control frames may come between fragments.
class frame_parser {
 public:
  explicit frame_parser(parser_options opts = {});
  // Consumes from `in` and reports one event; returns the bytes used. `in` must be writable:
  // payload is unmasked in place, and event.data points into it. Call again with the rest.
  // kind::none always means every byte was used (a partial header is kept inside the parser), so
  // the caller can drop the buffer and wait for more. `end` needs no input: after a header with
  // payload_size 0 (or the last payload piece), call again even with n == 0. An error is final:
  // every later call reports it again and uses nothing, until reset().
  std::size_t parse(char* in, std::size_t n, frame_event& ev);
  // Forgets everything: the next byte is the start of a frame, outside any message.
  void reset();
  const parser_options& options() const noexcept { return opts_; }
  void set_allow_rsv1(bool on) noexcept { opts_.allow_rsv1 = on; }

 private:
  enum class stage : std::uint8_t { header, payload, error };
  std::size_t parse_header(char* in, std::size_t n, frame_event& ev);
  bool check_start(unsigned b0, unsigned b1, frame_event& ev);
  bool check_length(unsigned len7, std::uint64_t len, frame_event& ev);
  void begin_frame(const unsigned char* h, unsigned ext, frame_event& ev);
  bool fail(frame_event& ev, std::uint16_t code, const char* what);
  void describe(frame_event& ev) const noexcept;

  parser_options opts_;
  std::uint64_t remaining_ = 0;  // payload bytes of the current frame not yet reported
  std::uint64_t size_ = 0;       // payload size of the current frame
  std::uint32_t mask_ = 0;       // the current frame's key (wire order), when masked_
  const char* what_ = "";        // the error, once stage_ is error
  std::uint16_t close_ = 0;
  stage stage_ = stage::header;
  opcode op_ = opcode::continuation;
  bool fin_ = false;
  bool rsv1_ = false;
  bool masked_ = false;
  bool in_message_ = false;    // a fragmented data message is open
  std::uint8_t mask_pos_ = 0;  // payload offset of the next byte, mod 4
  std::uint8_t hdr_len_ = 0;   // bytes of a split header kept in hdr_
  unsigned char hdr_[14] = {};
};

// Writes a frame header for a payload of `size` bytes into `out` (at most 14 bytes) and returns
// its length. Clients must pass a masking key (and mask the payload with apply_mask); servers
// pass none.
std::size_t write_frame_header(char* out, opcode op, bool fin, bool rsv1, std::uint64_t size,
                               const std::uint32_t* mask_key = nullptr) noexcept;

// --- permessage-deflate (RFC 7692) ---------------------------------------------------------------

struct deflate_params {
  bool server_no_context_takeover = false;
  bool client_no_context_takeover = false;
  int server_max_window_bits = 15;  // 8..15 (zlib cannot do 8 for raw deflate: 9 is used)
  int client_max_window_bits = 15;
};

// Server side: given the Sec-WebSocket-Extensions header of a request and what the server
// allows, picks the first acceptable permessage-deflate offer. Returns false when there is none
// (or it is malformed: then the extension is just not used). `response` gets the header value
// to send back. An offer with an unknown, duplicated or invalid parameter is skipped. `allowed`
// is what the server requires: a no_context_takeover flag set there is always agreed, and a
// window below 15 caps the agreed one (an offer without client_max_window_bits cannot accept a
// cap on the client's window, so it is skipped when allowed.client_max_window_bits < 15).
bool negotiate_deflate(std::string_view request_extensions, const deflate_params& allowed,
                       deflate_params& agreed, std::string& response);
// Client side: the offer to send, and the check of the server's answer (false: the answer is
// not acceptable and the connection must fail). The offer always carries client_max_window_bits
// (so the server may cap the client's window). Call accept_deflate_response only when the
// response has a Sec-WebSocket-Extensions header (without it the server declined): its value must
// be exactly one permessage-deflate element answering the offer made from `offered`.
std::string deflate_offer(const deflate_params& wanted);
bool accept_deflate_response(std::string_view response_extensions, const deflate_params& offered,
                             deflate_params& agreed);

// Compresses and decompresses messages for one side of a connection, honouring the agreed
// context takeover and window sizes.
class message_deflater {
 public:
  message_deflater(const deflate_params& p, role side, int level = 6);
  ~message_deflater();
  // Appends the compressed form of a whole message (without the final 00 00 ff ff) to `out`.
  // An empty message gives the single byte 00 (RFC 7692 7.2.3.6). Throws std::bad_alloc if zlib
  // runs out of memory (also from the constructor; `level` is clamped to -1..9).
  void compress(std::string_view message, std::string& out);

 private:
  struct impl;
  std::unique_ptr<impl> p_;
};

class message_inflater {
 public:
  message_inflater(const deflate_params& p, role side);
  ~message_inflater();
  // Appends the decompressed form of a piece of a message to `out`; `last` at the message's
  // final piece. False when the data is not valid deflate, or the message would pass
  // `max_size` decompressed (the caller closes with 1007 / 1009: `too_big()` tells which).
  // `max_size` counts from the start of the message, across its pieces; `out` never receives
  // more than that for one message. A message must end on a deflate block boundary (as the
  // 00 00 ff ff appended at `last` makes it when the sender flushed properly), or it is invalid;
  // a message with no bytes at all is taken as empty, and a block with BFINAL set ends the
  // message's data (RFC 7692 7.2.3.3). Once false, always false: the connection is failing.
  // Inflates with the agreed window (at least 9 bits). A peer that reaches further back than
  // that breaks the agreement; zlib notices only across its calls, so such a message may be
  // refused (1007) or not depending on how it was split. Conforming peers are unaffected.
  bool decompress(std::string_view piece, bool last, std::string& out, std::size_t max_size);
  bool too_big() const noexcept;

 private:
  struct impl;
  std::unique_ptr<impl> p_;
};

}  // namespace squall::websocket
