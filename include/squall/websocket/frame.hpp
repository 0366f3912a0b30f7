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

// Whether `code` may appear in a close frame on the wire (1000-1003, 1007-1011, 3000-4999).
bool valid_close_code(std::uint16_t code) noexcept;

enum class role : std::uint8_t { server, client };

// Applies the masking key to `data` in place (XOR, RFC 6455 5.3), starting at byte `offset` of
// the payload (so a payload can be unmasked in pieces). Word-at-a-time / SIMD.
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
  std::size_t parse(char* in, std::size_t n, frame_event& ev);
  void reset();
  const parser_options& options() const noexcept { return opts_; }
  void set_allow_rsv1(bool on) noexcept { opts_.allow_rsv1 = on; }

 private:
  parser_options opts_;
  struct state;
  std::shared_ptr<state> st_;  // (private: the implementation may change its layout)
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
// to send back.
bool negotiate_deflate(std::string_view request_extensions, const deflate_params& allowed,
                       deflate_params& agreed, std::string& response);
// Client side: the offer to send, and the check of the server's answer (false: the answer is
// not acceptable and the connection must fail).
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
  bool decompress(std::string_view piece, bool last, std::string& out, std::size_t max_size);
  bool too_big() const noexcept;

 private:
  struct impl;
  std::unique_ptr<impl> p_;
};

}  // namespace squall::websocket
