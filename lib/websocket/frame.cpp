// SPDX-License-Identifier: MIT
// The WebSocket wire format (RFC 6455 section 5), UTF-8 validation and permessage-deflate
// (RFC 7692). Self-contained on purpose: the standard library, zlib and frame.hpp, nothing else,
// so tests/fuzz/run can build it on its own.
#include "squall/websocket/frame.hpp"

#include <zlib.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cstring>
#include <new>
#include <stdexcept>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace squall::websocket {

// --- Close codes ---------------------------------------------------------------------------------

bool valid_close_code(std::uint16_t code) noexcept {
  if (code >= 1000 && code <= 1003) return true;
  if (code >= 1007 && code <= 1014) return true;  // 1012-1014: IANA registry, after RFC 6455
  return code >= 3000 && code <= 4999;
}

// --- Masking -------------------------------------------------------------------------------------

namespace {

// The key as a word whose bytes, in memory, are the key bytes in wire order.
inline std::uint32_t key_in_memory_order(std::uint32_t key) noexcept {
  if constexpr (std::endian::native == std::endian::little) return __builtin_bswap32(key);
  return key;
}

inline std::uint64_t load64(const unsigned char* p) noexcept {
  std::uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

inline void store64(unsigned char* p, std::uint64_t v) noexcept {
  std::memcpy(p, &v, 8);
}

}  // namespace

void apply_mask(char* data, std::size_t n, std::uint32_t key, std::size_t offset) noexcept {
  auto* p = reinterpret_cast<unsigned char*>(data);
  // k's top byte masks the next byte; rotating left by 8 moves on to the following key byte.
  std::uint32_t k = std::rotl(key, static_cast<int>(8 * (offset & 3)));
  auto scalar = [&](std::size_t count) {
    for (std::size_t i = 0; i < count; ++i) {
      p[i] ^= static_cast<unsigned char>(k >> 24);
      k = std::rotl(k, 8);
    }
    p += count;
    n -= count;
  };
  if (n < 16) {
    scalar(n);
    return;
  }
  // Long runs: a scalar head up to a 16-byte boundary, so the wide stores never split a line.
  if (n >= 64) scalar((0 - reinterpret_cast<std::uintptr_t>(p)) & 15);
  const std::uint32_t k32 = key_in_memory_order(k);
#if defined(__SSE2__)
  const __m128i k128 = _mm_set1_epi32(static_cast<int>(k32));
  while (n >= 64) {
    auto* q = reinterpret_cast<__m128i*>(p);
    __m128i a = _mm_loadu_si128(q);
    __m128i b = _mm_loadu_si128(q + 1);
    __m128i c = _mm_loadu_si128(q + 2);
    __m128i d = _mm_loadu_si128(q + 3);
    _mm_storeu_si128(q, _mm_xor_si128(a, k128));
    _mm_storeu_si128(q + 1, _mm_xor_si128(b, k128));
    _mm_storeu_si128(q + 2, _mm_xor_si128(c, k128));
    _mm_storeu_si128(q + 3, _mm_xor_si128(d, k128));
    p += 64;
    n -= 64;
  }
  while (n >= 16) {
    auto* q = reinterpret_cast<__m128i*>(p);
    _mm_storeu_si128(q, _mm_xor_si128(_mm_loadu_si128(q), k128));
    p += 16;
    n -= 16;
  }
#endif
  const std::uint64_t k64 = (std::uint64_t{k32} << 32) | k32;
  while (n >= 8) {
    store64(p, load64(p) ^ k64);
    p += 8;
    n -= 8;
  }
  // Whole words are multiples of 4 bytes: k is still in step for the tail.
  scalar(n);
}

// --- UTF-8 ---------------------------------------------------------------------------------------

namespace {

// A DFA over byte classes, run as a "shift DFA": a state is a bit offset (6 x its number), and
// each byte has a 64-bit row holding, at every state's offset, the offset of the state it leads
// to. A step is next = row[byte] >> state: the row load does not depend on the state, so the
// chain from byte to byte is one shift. The reject state leads only to itself.
enum utf8_class : std::uint8_t {
  c_ascii,     // 00..7F
  c_cont_lo,   // 80..8F
  c_cont_mid,  // 90..9F
  c_cont_hi,   // A0..BF
  c_never,     // C0, C1, F5..FF: cannot appear in UTF-8
  c_lead2,     // C2..DF
  c_e0,        // E0: the next byte is A0..BF (no overlongs)
  c_lead3,     // E1..EC, EE, EF
  c_ed,        // ED: the next byte is 80..9F (no surrogates)
  c_f0,        // F0: the next byte is 90..BF (no overlongs)
  c_lead4,     // F1..F3
  c_f4,        // F4: the next byte is 80..8F (at most U+10FFFF)
};
constexpr int n_classes = c_f4 + 1;

enum utf8_state : std::uint8_t {
  s_accept,  // between characters
  s_reject,  // invalid: stays here
  s_need1,   // one continuation byte to go
  s_need2,   // two to go
  s_e0,      // after E0
  s_ed,      // after ED
  s_need3,   // three to go
  s_f0,      // after F0
  s_f4,      // after F4
};
constexpr int n_states = s_f4 + 1;
constexpr int state_bits = 6;  // 9 states x 6 bits fit a 64-bit row

constexpr std::array<utf8_class, 256> make_utf8_classes() {
  std::array<utf8_class, 256> c{};
  auto fill = [&c](int lo, int hi, utf8_class k) {
    for (int b = lo; b <= hi; ++b)
      c[b] = k;
  };
  fill(0x00, 0x7F, c_ascii);
  fill(0x80, 0x8F, c_cont_lo);
  fill(0x90, 0x9F, c_cont_mid);
  fill(0xA0, 0xBF, c_cont_hi);
  fill(0xC0, 0xC1, c_never);
  fill(0xC2, 0xDF, c_lead2);
  fill(0xE0, 0xE0, c_e0);
  fill(0xE1, 0xEC, c_lead3);
  fill(0xED, 0xED, c_ed);
  fill(0xEE, 0xEF, c_lead3);
  fill(0xF0, 0xF0, c_f0);
  fill(0xF1, 0xF3, c_lead4);
  fill(0xF4, 0xF4, c_f4);
  fill(0xF5, 0xFF, c_never);
  return c;
}

struct utf8_transitions {
  std::uint8_t next[n_states][n_classes];
};

constexpr utf8_transitions make_utf8_transitions() {
  utf8_transitions t{};
  for (auto& row : t.next)
    for (auto& to : row)
      to = s_reject;
  auto set = [&t](int from, int cls, int to) { t.next[from][cls] = static_cast<std::uint8_t>(to); };
  set(s_accept, c_ascii, s_accept);
  set(s_accept, c_lead2, s_need1);
  set(s_accept, c_e0, s_e0);
  set(s_accept, c_lead3, s_need2);
  set(s_accept, c_ed, s_ed);
  set(s_accept, c_f0, s_f0);
  set(s_accept, c_lead4, s_need3);
  set(s_accept, c_f4, s_f4);
  for (int c : {c_cont_lo, c_cont_mid, c_cont_hi}) {
    set(s_need1, c, s_accept);
    set(s_need2, c, s_need1);
    set(s_need3, c, s_need2);
  }
  set(s_e0, c_cont_hi, s_need1);
  set(s_ed, c_cont_lo, s_need1);
  set(s_ed, c_cont_mid, s_need1);
  set(s_f0, c_cont_mid, s_need2);
  set(s_f0, c_cont_hi, s_need2);
  set(s_f4, c_cont_lo, s_need2);
  return t;
}

constexpr std::array<std::uint64_t, 256> make_utf8_rows() {
  constexpr auto classes = make_utf8_classes();
  constexpr auto t = make_utf8_transitions();
  std::array<std::uint64_t, 256> rows{};
  for (int b = 0; b < 256; ++b)
    for (int s = 0; s < n_states; ++s)
      rows[b] |= std::uint64_t{t.next[s][classes[b]]} * state_bits << (s * state_bits);
  return rows;
}

constexpr auto utf8_rows = make_utf8_rows();
constexpr std::uint32_t utf8_reject = s_reject * state_bits;
constexpr std::uint64_t high_bits = 0x8080808080808080ull;

}  // namespace

bool utf8_validator::feed(std::string_view bytes) noexcept {
  std::uint64_t s = state_;
  if (s == utf8_reject) return false;
  auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  const auto* end = p + bytes.size();
  while (p < end) {
    if (s == s_accept) {
      // Between characters: skip ASCII a word (or two) at a time.
      while (end - p >= 16 && ((load64(p) | load64(p + 8)) & high_bits) == 0)
        p += 16;
      while (end - p >= 8) {
        const std::uint64_t high = load64(p) & high_bits;
        if (high != 0) {
          if constexpr (std::endian::native == std::endian::little) p += std::countr_zero(high) / 8;
          break;
        }
        p += 8;
      }
      while (p < end && *p < 0x80)
        ++p;
      if (p == end) break;
    }
    // Up to 16 bytes through the DFA without a branch: a reject stays a reject, so checking
    // after the run still refuses the call that brought the bad byte.
    const auto* stop = end - p > 16 ? p + 16 : end;
    while (p < stop)
      s = utf8_rows[*p++] >> (s & 63);
    s &= 63;
    if (s == utf8_reject) {
      state_ = utf8_reject;
      return false;
    }
  }
  state_ = static_cast<std::uint32_t>(s);
  return true;
}

// --- Frames --------------------------------------------------------------------------------------

namespace {

inline bool reserved_opcode(unsigned op) noexcept {
  return (op >= 3 && op <= 7) || op >= 0xB;
}

inline unsigned extended_length_bytes(unsigned len7) noexcept {
  return len7 == 126 ? 2 : len7 == 127 ? 8 : 0;
}

inline std::uint32_t load_be32(const unsigned char* p) noexcept {
  std::uint32_t v;
  std::memcpy(&v, p, 4);
  if constexpr (std::endian::native == std::endian::little) v = __builtin_bswap32(v);
  return v;
}

// The payload length of a header whose first two bytes are there, and its `ext` extended
// length bytes.
inline std::uint64_t payload_length(const unsigned char* h, unsigned ext) noexcept {
  if (ext == 0) return h[1] & 0x7F;
  if (ext == 2) return std::uint64_t{h[2]} << 8 | h[3];
  std::uint64_t v;
  std::memcpy(&v, h + 2, 8);
  if constexpr (std::endian::native == std::endian::little) v = __builtin_bswap64(v);
  return v;
}

}  // namespace

frame_parser::frame_parser(parser_options opts) : opts_(opts) {}

void frame_parser::reset() {
  parser_options keep = opts_;
  *this = frame_parser(keep);
}

// Always false, for `return fail(...)` in the checks.
bool frame_parser::fail(frame_event& ev, std::uint16_t code, const char* what) {
  stage_ = stage::error;
  close_ = code;
  what_ = what;
  ev.type = frame_event::kind::error;
  ev.close = code;
  ev.what = what;
  return false;
}

void frame_parser::describe(frame_event& ev) const noexcept {
  ev.fin = fin_;
  ev.rsv1 = rsv1_;
  ev.op = op_;
  ev.payload_size = size_;
}

// The checks the first two header bytes allow. Kept in one order for every way the bytes
// arrive, so a split never changes which error is reported.
bool frame_parser::check_start(unsigned b0, unsigned b1, frame_event& ev) {
  const unsigned op = b0 & 0x0F;
  const bool fin = b0 & 0x80;
  const bool control = op & 0x8;
  if (b0 & 0x30) return fail(ev, close_code::protocol_error, "reserved bit 2 or 3 set");
  if (reserved_opcode(op)) return fail(ev, close_code::protocol_error, "reserved opcode");
  if (b0 & 0x40) {
    if (!opts_.allow_rsv1)
      return fail(ev, close_code::protocol_error, "reserved bit 1 set (no extension uses it)");
    if (control || op == 0)
      return fail(ev, close_code::protocol_error,
                  "reserved bit 1 set on a control or continuation frame");
  }
  if (control) {
    if (!fin) return fail(ev, close_code::protocol_error, "fragmented control frame");
    if ((b1 & 0x7F) > 125)
      return fail(ev, close_code::protocol_error, "control frame longer than 125 bytes");
  } else if (op == 0 && !in_message_) {
    return fail(ev, close_code::protocol_error, "continuation frame outside a message");
  } else if (op != 0 && in_message_) {
    return fail(ev, close_code::protocol_error, "new message inside a fragmented message");
  }
  const bool masked = b1 & 0x80;
  if (opts_.side == role::server && !masked)
    return fail(ev, close_code::protocol_error, "unmasked frame from a client");
  if (opts_.side == role::client && masked)
    return fail(ev, close_code::protocol_error, "masked frame from a server");
  return true;
}

bool frame_parser::check_length(unsigned len7, std::uint64_t len, frame_event& ev) {
  if (len7 == 126 && len < 126)
    return fail(ev, close_code::protocol_error, "length not minimally encoded");
  if (len7 == 127) {
    if (len >> 63)
      return fail(ev, close_code::protocol_error, "64-bit length with the top bit set");
    if (len <= 0xFFFF) return fail(ev, close_code::protocol_error, "length not minimally encoded");
  }
  if (len > opts_.max_frame_size)
    return fail(ev, close_code::too_big, "frame larger than max_frame_size");
  return true;
}

// `h` is a whole, checked header whose extended length is `ext` bytes.
void frame_parser::begin_frame(const unsigned char* h, unsigned ext, frame_event& ev) {
  fin_ = h[0] & 0x80;
  rsv1_ = h[0] & 0x40;
  op_ = static_cast<opcode>(h[0] & 0x0F);
  size_ = payload_length(h, ext);
  remaining_ = size_;
  masked_ = h[1] & 0x80;
  mask_ = masked_ ? load_be32(h + 2 + ext) : 0;
  mask_pos_ = 0;
  if (op_ == opcode::text || op_ == opcode::binary)
    in_message_ = !fin_;
  else if (op_ == opcode::continuation && fin_)
    in_message_ = false;
  stage_ = stage::payload;
  ev.type = frame_event::kind::header;
  describe(ev);
}

std::size_t frame_parser::parse_header(char* in, std::size_t n, frame_event& ev) {
  auto* u = reinterpret_cast<unsigned char*>(in);
  // The usual case: the whole header is in the buffer, read it where it is.
  if (hdr_len_ == 0 && n >= 2) {
    const unsigned ext = extended_length_bytes(u[1] & 0x7F);
    const std::size_t need = 2 + ext + ((u[1] & 0x80) ? 4 : 0);
    if (n >= need) {
      if (!check_start(u[0], u[1], ev)) return 0;
      if (!check_length(u[1] & 0x7F, payload_length(u, ext), ev)) return 0;
      begin_frame(u, ext, ev);
      return need;
    }
  }
  // A header split across calls: gather it in hdr_, checking each part as soon as it is there.
  std::size_t used = 0;
  auto take = [&](std::size_t upto) {
    std::size_t k = std::min<std::size_t>(upto - hdr_len_, n - used);
    if (k > 0) std::memcpy(hdr_ + hdr_len_, u + used, k);  // (u may be null when n is 0)
    hdr_len_ += static_cast<std::uint8_t>(k);
    used += k;
  };
  if (hdr_len_ < 2) {
    take(2);
    if (hdr_len_ < 2) return used;
    if (!check_start(hdr_[0], hdr_[1], ev)) return used;
    const unsigned len7 = hdr_[1] & 0x7F;
    if (extended_length_bytes(len7) == 0 && !check_length(len7, len7, ev)) return used;
  }
  const unsigned len7 = hdr_[1] & 0x7F;
  const unsigned ext = extended_length_bytes(len7);
  const std::size_t need = 2 + ext + ((hdr_[1] & 0x80) ? 4 : 0);
  const bool had_length = hdr_len_ >= 2 + ext;
  take(need);
  if (ext != 0 && !had_length && hdr_len_ >= 2 + ext &&
      !check_length(len7, payload_length(hdr_, ext), ev))
    return used;
  if (hdr_len_ < need) return used;
  hdr_len_ = 0;
  begin_frame(hdr_, ext, ev);
  return used;
}

std::size_t frame_parser::parse(char* in, std::size_t n, frame_event& ev) {
  ev.type = frame_event::kind::none;
  ev.data = {};
  switch (stage_) {
    case stage::header:
      return parse_header(in, n, ev);
    case stage::payload: {
      describe(ev);
      if (remaining_ == 0) {
        stage_ = stage::header;
        ev.type = frame_event::kind::end;
        return 0;
      }
      if (n == 0) return 0;
      const std::size_t k = static_cast<std::size_t>(std::min<std::uint64_t>(n, remaining_));
      if (masked_) apply_mask(in, k, mask_, mask_pos_);
      mask_pos_ = static_cast<std::uint8_t>((mask_pos_ + k) & 3);
      remaining_ -= k;
      ev.type = frame_event::kind::payload;
      ev.data = std::string_view(in, k);
      return k;
    }
    case stage::error:
      ev.type = frame_event::kind::error;
      ev.close = close_;
      ev.what = what_;
      return 0;
  }
  return 0;
}

std::size_t write_frame_header(char* out, opcode op, bool fin, bool rsv1, std::uint64_t size,
                               const std::uint32_t* mask_key) noexcept {
  auto* u = reinterpret_cast<unsigned char*>(out);
  u[0] = static_cast<unsigned char>((fin ? 0x80 : 0) | (rsv1 ? 0x40 : 0) |
                                    (static_cast<unsigned>(op) & 0x0F));
  const unsigned char mask_bit = mask_key ? 0x80 : 0;
  std::size_t n = 2;
  auto put_be = [&](std::uint64_t v, unsigned bytes) {
    for (unsigned i = 0; i < bytes; ++i)
      u[n + i] = static_cast<unsigned char>(v >> (8 * (bytes - 1 - i)));
    n += bytes;
  };
  if (size < 126) {
    u[1] = static_cast<unsigned char>(mask_bit | size);
  } else if (size <= 0xFFFF) {
    u[1] = mask_bit | 126;
    put_be(size, 2);
  } else {
    u[1] = mask_bit | 127;
    put_be(size, 8);
  }
  if (mask_key) put_be(*mask_key, 4);
  return n;
}

// --- permessage-deflate: negotiation -------------------------------------------------------------

namespace {

struct ext_param {
  std::string_view name;
  std::string value;  // unquoted
  bool has_value = false;
};

struct ext_element {
  std::string_view name;
  std::vector<ext_param> params;
};

bool is_tchar(char c) noexcept {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return std::strchr("!#$%&'*+-.^_`|~", c) != nullptr && c != '\0';
}

bool iequals(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

// Sec-WebSocket-Extensions (RFC 6455 9.1): 1#( token *( ";" token [ "=" (token|quoted-string) ] ) )
// with optional whitespace around the separators; empty list elements are tolerated (RFC 9110
// 5.6.1). False when the syntax is broken.
bool parse_extensions(std::string_view s, std::vector<ext_element>& out) {
  std::size_t i = 0;
  const std::size_t n = s.size();
  auto ows = [&] {
    while (i < n && (s[i] == ' ' || s[i] == '\t'))
      ++i;
  };
  auto token = [&]() -> std::string_view {
    std::size_t start = i;
    while (i < n && is_tchar(s[i]))
      ++i;
    return s.substr(start, i - start);
  };
  while (true) {
    ows();
    if (i == n) break;
    if (s[i] == ',') {
      ++i;
      continue;
    }
    ext_element e;
    e.name = token();
    if (e.name.empty()) return false;
    ows();
    while (i < n && s[i] == ';') {
      ++i;
      ows();
      ext_param p;
      p.name = token();
      if (p.name.empty()) return false;
      ows();
      if (i < n && s[i] == '=') {
        ++i;
        ows();
        p.has_value = true;
        if (i < n && s[i] == '"') {
          ++i;
          bool closed = false;
          while (i < n) {
            char c = s[i++];
            if (c == '"') {
              closed = true;
              break;
            }
            if (c == '\\') {
              if (i == n) return false;
              c = s[i++];
            }
            p.value.push_back(c);
          }
          if (!closed) return false;
        } else {
          std::string_view v = token();
          if (v.empty()) return false;
          p.value.assign(v);
        }
        ows();
      }
      e.params.push_back(std::move(p));
    }
    out.push_back(std::move(e));
    if (i == n) break;
    if (s[i] != ',') return false;
    ++i;
  }
  return true;
}

// A window-bits value: a decimal 8..15 without leading zeros (RFC 7692 7.1.2). 0 if invalid.
int window_bits_value(std::string_view v) noexcept {
  if (v.size() == 1 && (v[0] == '8' || v[0] == '9')) return v[0] - '0';
  if (v.size() == 2 && v[0] == '1' && v[1] >= '0' && v[1] <= '5') return 10 + (v[1] - '0');
  return 0;
}

int clamp_bits(int b) noexcept {
  return std::clamp(b, 8, 15);
}

// The parameters of one permessage-deflate element, as written (absent ones are 0 / false).
struct deflate_element {
  bool server_no_context_takeover = false;
  bool client_no_context_takeover = false;
  int server_max_window_bits = 0;  // 0: absent
  bool client_max_window_bits_present = false;
  int client_max_window_bits = 0;  // 0: absent or without a value
};

// False for an unknown or repeated parameter, or a value where none belongs or a bad one.
// `response`: client_max_window_bits needs a value there.
bool read_deflate_element(const ext_element& e, bool response, deflate_element& d) {
  bool seen_snct = false, seen_cnct = false, seen_smwb = false, seen_cmwb = false;
  for (const ext_param& p : e.params) {
    if (iequals(p.name, "server_no_context_takeover")) {
      if (seen_snct || p.has_value) return false;
      seen_snct = d.server_no_context_takeover = true;
    } else if (iequals(p.name, "client_no_context_takeover")) {
      if (seen_cnct || p.has_value) return false;
      seen_cnct = d.client_no_context_takeover = true;
    } else if (iequals(p.name, "server_max_window_bits")) {
      if (seen_smwb || !p.has_value) return false;
      seen_smwb = true;
      d.server_max_window_bits = window_bits_value(p.value);
      if (d.server_max_window_bits == 0) return false;
    } else if (iequals(p.name, "client_max_window_bits")) {
      if (seen_cmwb || (response && !p.has_value)) return false;
      seen_cmwb = d.client_max_window_bits_present = true;
      if (p.has_value) {
        d.client_max_window_bits = window_bits_value(p.value);
        if (d.client_max_window_bits == 0) return false;
      }
    } else {
      return false;
    }
  }
  return true;
}

constexpr std::string_view deflate_name = "permessage-deflate";

std::string format_deflate(const deflate_params& p, bool with_smwb, bool with_cmwb,
                           bool cmwb_valueless) {
  std::string s(deflate_name);
  if (p.server_no_context_takeover) s += "; server_no_context_takeover";
  if (p.client_no_context_takeover) s += "; client_no_context_takeover";
  // (bits are 8..15: two digits at most, appended by hand; GCC 12 also warns falsely about
  // "literal" + std::to_string at -O3)
  auto bits = [&s](int b) {
    if (b >= 10) s.push_back('1');
    s.push_back(static_cast<char>('0' + b % 10));
  };
  if (with_smwb) {
    s += "; server_max_window_bits=";
    bits(p.server_max_window_bits);
  }
  if (with_cmwb) {
    s += "; client_max_window_bits";
    if (!cmwb_valueless) {
      s += '=';
      bits(p.client_max_window_bits);
    }
  }
  return s;
}

}  // namespace

bool negotiate_deflate(std::string_view request_extensions, const deflate_params& allowed,
                       deflate_params& agreed, std::string& response) {
  std::vector<ext_element> elements;
  if (!parse_extensions(request_extensions, elements)) return false;
  const int allow_smwb = clamp_bits(allowed.server_max_window_bits);
  const int allow_cmwb = clamp_bits(allowed.client_max_window_bits);
  for (const ext_element& e : elements) {
    if (!iequals(e.name, deflate_name)) continue;
    deflate_element offer;
    if (!read_deflate_element(e, false, offer)) continue;
    // The client's window can only be capped when the client said it accepts a cap.
    if (allow_cmwb < 15 && !offer.client_max_window_bits_present) continue;
    deflate_params a;
    a.server_no_context_takeover =
        offer.server_no_context_takeover || allowed.server_no_context_takeover;
    a.client_no_context_takeover =
        offer.client_no_context_takeover || allowed.client_no_context_takeover;
    a.server_max_window_bits =
        std::min(offer.server_max_window_bits ? offer.server_max_window_bits : 15, allow_smwb);
    const int client_says = offer.client_max_window_bits ? offer.client_max_window_bits : 15;
    a.client_max_window_bits = std::min(client_says, allow_cmwb);
    // server_max_window_bits must be answered when offered; client_max_window_bits may only be
    // sent when offered, and is when it caps the client.
    const bool with_smwb = offer.server_max_window_bits != 0 || a.server_max_window_bits < 15;
    const bool with_cmwb = offer.client_max_window_bits_present && a.client_max_window_bits < 15;
    agreed = a;
    response = format_deflate(a, with_smwb, with_cmwb, false);
    return true;
  }
  return false;
}

std::string deflate_offer(const deflate_params& wanted) {
  deflate_params p = wanted;
  p.server_max_window_bits = clamp_bits(p.server_max_window_bits);
  p.client_max_window_bits = clamp_bits(p.client_max_window_bits);
  return format_deflate(p, p.server_max_window_bits < 15, true, p.client_max_window_bits == 15);
}

bool accept_deflate_response(std::string_view response_extensions, const deflate_params& offered,
                             deflate_params& agreed) {
  std::vector<ext_element> elements;
  if (!parse_extensions(response_extensions, elements)) return false;
  if (elements.size() != 1 || !iequals(elements[0].name, deflate_name)) return false;
  deflate_element r;
  if (!read_deflate_element(elements[0], true, r)) return false;
  const int offered_smwb = clamp_bits(offered.server_max_window_bits);
  const int offered_cmwb = clamp_bits(offered.client_max_window_bits);
  // The server may only narrow what was offered.
  if (r.server_max_window_bits > offered_smwb) return false;
  if (r.client_max_window_bits > offered_cmwb) return false;
  deflate_params a;
  a.server_no_context_takeover = r.server_no_context_takeover;
  a.client_no_context_takeover = r.client_no_context_takeover || offered.client_no_context_takeover;
  // Without server_max_window_bits the server may use any window: inflate with the largest.
  a.server_max_window_bits = r.server_max_window_bits ? r.server_max_window_bits : 15;
  a.client_max_window_bits = r.client_max_window_bits ? r.client_max_window_bits : offered_cmwb;
  agreed = a;
  return true;
}

// --- permessage-deflate: compression -------------------------------------------------------------

namespace {

constexpr unsigned char flush_tail[4] = {0x00, 0x00, 0xFF, 0xFF};
constexpr std::size_t max_zlib_chunk = std::size_t{1} << 30;  // avail_in / avail_out are uInt

[[noreturn]] void zlib_init_failed(int rc, const char* what) {
  if (rc == Z_MEM_ERROR) throw std::bad_alloc();
  throw std::runtime_error(what);
}

}  // namespace

struct message_deflater::impl {
  z_stream zs{};
  bool reset_each = false;
  ~impl() { deflateEnd(&zs); }
};

message_deflater::message_deflater(const deflate_params& p, role side, int level)
    : p_(std::make_unique<impl>()) {
  const bool server = side == role::server;
  int bits = clamp_bits(server ? p.server_max_window_bits : p.client_max_window_bits);
  // zlib refuses 8 for raw deflate. 9 is safe for a peer that expects 8: zlib never emits a
  // distance beyond the window minus its 262-byte lookahead, 250 bytes with a 512-byte window.
  if (bits == 8) bits = 9;
  p_->reset_each = server ? p.server_no_context_takeover : p.client_no_context_takeover;
  int rc =
      deflateInit2(&p_->zs, std::clamp(level, -1, 9), Z_DEFLATED, -bits, 8, Z_DEFAULT_STRATEGY);
  if (rc != Z_OK) zlib_init_failed(rc, "message_deflater: deflateInit2 failed");
}

message_deflater::~message_deflater() = default;

void message_deflater::compress(std::string_view message, std::string& out) {
  z_stream& zs = p_->zs;
  if (message.empty()) {
    // An empty stored block, less its 00 00 ff ff (RFC 7692 7.2.3.6). zlib writes nothing for a
    // second flush in a row; the stream is on a byte boundary after any flush, so this is it.
    out.push_back('\0');
    if (p_->reset_each) deflateReset(&zs);
    return;
  }
  const std::size_t base = out.size();
  std::size_t produced = 0;
  std::size_t room =
      deflateBound(&zs, static_cast<uLong>(std::min(message.size(), max_zlib_chunk))) + 16;
  auto* in = reinterpret_cast<const Bytef*>(message.data());
  std::size_t left = message.size();
  while (true) {
    if (zs.avail_in == 0 && left > 0) {
      const std::size_t k = std::min(left, max_zlib_chunk);
      zs.next_in = const_cast<Bytef*>(in);
      zs.avail_in = static_cast<uInt>(k);
      in += k;
      left -= k;
    }
    const int flush = left == 0 ? Z_SYNC_FLUSH : Z_NO_FLUSH;
    room = std::min(room, max_zlib_chunk);
    out.resize(base + produced + room);
    zs.next_out = reinterpret_cast<Bytef*>(out.data() + base + produced);
    zs.avail_out = static_cast<uInt>(room);
    const int rc = deflate(&zs, flush);
    produced += room - zs.avail_out;
    if (rc == Z_STREAM_ERROR) throw std::runtime_error("message_deflater: deflate failed");
    // Done once all input is in and the flush had room to finish.
    if (left == 0 && zs.avail_in == 0 && zs.avail_out != 0) break;
    room *= 2;
  }
  out.resize(base + produced);
  // A sync flush ends with an empty stored block, 00 00 ff ff: RFC 7692 7.2.1 drops it.
  if (produced >= 4 && std::memcmp(out.data() + out.size() - 4, flush_tail, 4) == 0)
    out.resize(out.size() - 4);
  if (p_->reset_each) deflateReset(&zs);
}

struct message_inflater::impl {
  z_stream zs{};
  bool reset_each = false;
  int window_bits = 15;
  std::size_t produced = 0;  // of the current message
  bool started = false;      // the current message had compressed bytes
  bool ended = false;        // the current message's deflate stream ended (BFINAL)
  bool failed = false;
  bool too_big = false;
  ~impl() { inflateEnd(&zs); }

  bool fail() {
    failed = true;
    return false;
  }

  // Ready for the next message. After a block with BFINAL set (RFC 7692 7.2.3.3) zlib wants a
  // reset; the window is kept across it when the context is taken over.
  bool next_message() {
    produced = 0;
    if (reset_each) {
      ended = false;
      return inflateReset(&zs) == Z_OK;
    }
    if (!ended) return true;
    ended = false;
    // (on the heap: this may run on a small fiber stack)
    std::vector<unsigned char> dict(std::size_t{1} << window_bits);
    uInt len = static_cast<uInt>(dict.size());
    if (inflateGetDictionary(&zs, dict.data(), &len) != Z_OK) return false;
    if (inflateReset(&zs) != Z_OK) return false;
    return len == 0 || inflateSetDictionary(&zs, dict.data(), len) == Z_OK;
  }

  // Inflates `data` into `out`, keeping the message within `max_size` bytes. `flush` is
  // Z_BLOCK for the last byte of a message, to stop on the block boundary it must end on.
  bool run(const unsigned char* data, std::size_t n, std::string& out, std::size_t max_size,
           int flush) {
    if (n == 0 || ended) return true;  // (after BFINAL the rest of the message is ignored)
    std::size_t room = std::clamp<std::size_t>(n * 4, 1024, 256 * 1024);
    std::size_t cur = out.size();
    while (true) {
      if (zs.avail_in == 0 && n > 0) {
        const std::size_t k = std::min(n, max_zlib_chunk);
        zs.next_in = const_cast<Bytef*>(data);
        zs.avail_in = static_cast<uInt>(k);
        data += k;
        n -= k;
      }
      // One byte past the limit is enough to know the message is too big.
      const std::size_t allowed = max_size - produced;
      const std::size_t give =
          std::min(room, allowed >= max_zlib_chunk ? max_zlib_chunk : allowed + 1);
      out.resize(cur + give);
      zs.next_out = reinterpret_cast<Bytef*>(out.data() + cur);
      zs.avail_out = static_cast<uInt>(give);
      const int rc = inflate(&zs, flush);
      const std::size_t got = give - zs.avail_out;
      cur += got;
      produced += got;
      out.resize(cur);
      if (produced > max_size) {
        out.resize(cur - (produced - max_size));  // what was within the limit, no more
        too_big = failed = true;
        return false;
      }
      if (rc == Z_STREAM_END) {
        zs.avail_in = 0;
        ended = true;
        return true;
      }
      if (rc != Z_OK && rc != Z_BUF_ERROR) return fail();
      // Finished when the input is used up and zlib had output room left (nothing pending).
      const bool input_done = zs.avail_in == 0 && n == 0;
      if (input_done && zs.avail_out != 0) return true;
      // No progress with room on both sides: cannot happen; never spin on it.
      if (rc == Z_BUF_ERROR && zs.avail_out != 0) return fail();
      if (zs.avail_out == 0 && room < 4 * 1024 * 1024) room *= 2;
    }
  }
};

message_inflater::message_inflater(const deflate_params& p, role side)
    : p_(std::make_unique<impl>()) {
  // The peer's side of the agreement: a server inflates what the client compressed.
  const bool server = side == role::server;
  // Inflating with the agreed window, but at least 9: a peer that was told 8 may use zlib's 9.
  p_->window_bits =
      std::max(9, clamp_bits(server ? p.client_max_window_bits : p.server_max_window_bits));
  p_->reset_each = server ? p.client_no_context_takeover : p.server_no_context_takeover;
  int rc = inflateInit2(&p_->zs, -p_->window_bits);
  if (rc != Z_OK) zlib_init_failed(rc, "message_inflater: inflateInit2 failed");
}

message_inflater::~message_inflater() = default;

bool message_inflater::decompress(std::string_view piece, bool last, std::string& out,
                                  std::size_t max_size) {
  impl& m = *p_;
  if (m.failed) return false;
  m.started = m.started || !piece.empty();
  if (!m.run(reinterpret_cast<const unsigned char*>(piece.data()), piece.size(), out, max_size,
             Z_NO_FLUSH))
    return false;
  if (!last) return true;
  if (!m.started) return m.next_message() || m.fail();  // no bytes at all: an empty message
  m.started = false;
  // The sender dropped the empty stored block that ended its flush (RFC 7692 7.2.2): put it
  // back. Its last byte goes in with Z_BLOCK, which stops at the end of a block: the message
  // must end there, or it was cut short. (Z_BLOCK only for that byte: a call that starts on a
  // block boundary would make no progress.)
  if (!m.run(flush_tail, 3, out, max_size, Z_NO_FLUSH)) return false;
  if (!m.run(flush_tail + 3, 1, out, max_size, Z_BLOCK)) return false;
  if (!m.ended && !(m.zs.data_type & 128)) return m.fail();
  return m.next_message() || m.fail();
}

bool message_inflater::too_big() const noexcept {
  return p_->too_big;
}

}  // namespace squall::websocket
