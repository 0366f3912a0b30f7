// SPDX-License-Identifier: MIT
// HTTP/1.1 heads and chunked bodies; parser.hpp has the contract and the strictness rules.
//
// A head is parsed in one pass over input that is known to be long enough, so that no parsing
// step ever has to stop halfway and resume. The first call for a message simply tries it on the
// whole input, since most heads arrive in one piece; if that fails, the careful way takes over:
// find where the head ends (a resumable SIMD search for the empty line, so a head arriving a
// byte at a time is searched once in all), check the limits on the way, then parse it.
//
// The chunked decoder is the opposite case: bodies are long and arrive split anywhere, so outside
// chunk data it is a byte-wise state machine, and the data itself goes out in bulk as views into
// the input.
//
// This file uses nothing but the standard library and its own header: the fuzz target
// (tests/fuzz/run) compiles it on its own.
#include "squall/http/parser.hpp"

#include <algorithm>
#include <array>
#include <bit>
#include <cstring>
#include <limits>

#ifdef __SSE2__
#include <emmintrin.h>
#endif

namespace squall::http {
namespace {

// --- Character classes -------------------------------------------------------------------------
// One table with a bit per class, so validating a byte is one load and one test.
enum : std::uint8_t {
  tchar = 1 << 0,   // token (RFC 9110 5.6.2): methods, field names, codings, chunk extensions
  vchar = 1 << 1,   // visible ASCII: the request target
  fvalue = 1 << 2,  // field values and reason phrases: VCHAR, obs-text, SP, HTAB
  hostc = 1 << 3,   // a Host value: RFC 3986 host (reg-name, IP literal) and port
  qdtext = 1 << 4,  // inside a quoted-string, apart from backslash escapes
  hexdig = 1 << 5,
  regc = 1 << 6,  // a Host's reg-name or IPv4 address: unreserved and sub-delims (no '%', ':')
};

constexpr bool one_of(const char* set, int c) {
  for (; *set; ++set) {
    if (*set == c) return true;
  }
  return false;
}

constexpr std::array<std::uint8_t, 256> make_char_classes() {
  std::array<std::uint8_t, 256> table{};
  for (int c = 0; c < 256; ++c) {
    bool digit = c >= '0' && c <= '9';
    bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    bool visible = c >= 0x21 && c <= 0x7e;
    bool obs_text = c >= 0x80;
    std::uint8_t k = 0;
    if (digit || alpha || one_of("!#$%&'*+-.^_`|~", c)) k |= tchar;
    if (visible) k |= vchar;
    if (visible || obs_text || c == ' ' || c == '\t') k |= fvalue;
    if (digit || alpha || one_of("-._~%!$&'()*+,;=:[]", c)) k |= hostc;
    if (digit || alpha || one_of("-._~!$&'()*+,;=", c)) k |= regc;
    if (((visible || obs_text) && c != '"' && c != '\\') || c == ' ' || c == '\t') k |= qdtext;
    if (digit || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')) k |= hexdig;
    table[c] = k;
  }
  return table;
}

constexpr auto char_classes = make_char_classes();

inline bool is(char c, std::uint8_t cls) {
  return (char_classes[static_cast<unsigned char>(c)] & cls) != 0;
}
inline bool is_ws(char c) {
  return c == ' ' || c == '\t';
}
inline char lower(char c) {
  return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c;
}

// iequals for this file: inline, where the exported one is a call through the PLT.
inline bool same_token(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

bool all_of_class(std::string_view s, std::uint8_t cls) {
  return std::all_of(s.begin(), s.end(), [cls](char c) { return is(c, cls); });
}

// A field name (all tchar) against a lowercase literal of letters and '-' of the same length.
// Among tchar bytes, setting bit 0x20 maps exactly the uppercase letters onto the lowercase ones
// and leaves '-' as it is ('^' and '_' become '~' and DEL, in no literal), so OR-ing words with
// 0x20 bytes is an exact case-insensitive compare here, eight bytes at a time.
template <class Word>
inline bool folds_to(const char* name, const char* lit) {
  Word a, b;
  std::memcpy(&a, name, sizeof a);
  std::memcpy(&b, lit, sizeof b);
  return (a | static_cast<Word>(0x2020202020202020)) == b;
}
inline bool is_name(std::string_view name, std::string_view lit) {
  if (name.size() != lit.size()) return false;
  std::size_t i = 0, n = lit.size();
  for (; i + 8 <= n; i += 8) {
    if (!folds_to<std::uint64_t>(name.data() + i, lit.data() + i)) return false;
  }
  if (i + 4 <= n) {
    if (!folds_to<std::uint32_t>(name.data() + i, lit.data() + i)) return false;
    i += 4;
  }
  for (; i < n; ++i) {
    if ((name[i] | 0x20) != lit[i]) return false;
  }
  return true;
}

bool fail(parse_error& err, int status, const char* what) {
  err = parse_error{status, what};
  return false;
}

// --- Scanning ----------------------------------------------------------------------------------
// skip_target and skip_value return the first byte at or after p outside their class. Within a
// complete head such a byte always comes before `end` (the final LF is in neither class); the
// SIMD loops look at 16 bytes at a time and must stop at exactly the byte the table would.
#ifdef __SSE2__
// Not VCHAR: a signed compare with 0x21 catches the controls, SP and (being negative) 0x80-0xFF.
inline __m128i target_stops(__m128i v) {
  return _mm_or_si128(_mm_cmplt_epi8(v, _mm_set1_epi8(0x21)),
                      _mm_cmpeq_epi8(v, _mm_set1_epi8(0x7f)));
}

// Not a field-value byte: controls except HTAB, and DEL. min_epu8 is an unsigned compare, so
// obs-text (0x80-0xFF) passes.
inline __m128i value_stops(__m128i v) {
  __m128i ctl = _mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(0x1f)), v);
  ctl = _mm_andnot_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('\t')), ctl);
  return _mm_or_si128(ctl, _mm_cmpeq_epi8(v, _mm_set1_epi8(0x7f)));
}

template <class Stops>
const char* skip16(const char* p, const char* end, Stops stops) {
  while (end - p >= 16) {
    __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    auto mask = static_cast<unsigned>(_mm_movemask_epi8(stops(v)));
    if (mask != 0) return p + std::countr_zero(mask);
    p += 16;
  }
  return p;
}
#endif

const char* skip_target(const char* p, const char* end) {
#ifdef __SSE2__
  p = skip16(p, end, target_stops);
#endif
  while (p < end && is(*p, vchar))
    ++p;
  return p;
}

const char* skip_value(const char* p, const char* end) {
#ifdef __SSE2__
  p = skip16(p, end, value_stops);
#endif
  while (p < end && is(*p, fvalue))
    ++p;
  return p;
}

// The offset just past the empty line that ends a head (LF LF, or LF CR LF), searching from
// `from`, or 0 if it has not arrived. The bytes before `from` only give the two bytes of context
// a match can need, which is what lets the search resume where the previous call stopped.
std::size_t find_head_end(std::string_view buf, std::size_t from) {
  const char* s = buf.data();
  std::size_t n = buf.size();
  std::size_t i = from;
  // Bit 1 stands for the byte before i, bit 0 for the one before that.
  unsigned lf = 0, cr = 0;
  if (i >= 1) lf |= static_cast<unsigned>(s[i - 1] == '\n') << 1;
  if (i >= 1) cr |= static_cast<unsigned>(s[i - 1] == '\r') << 1;
  if (i >= 2) lf |= static_cast<unsigned>(s[i - 2] == '\n');
  if (i >= 2) cr |= static_cast<unsigned>(s[i - 2] == '\r');
#ifdef __SSE2__
  for (; i + 16 <= n; i += 16) {
    __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i));
    // Bit k of L and R stands for byte i + k - 2: the 16 new bytes above the 2 carried ones.
    unsigned L =
        lf | static_cast<unsigned>(_mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8('\n')))) << 2;
    unsigned R =
        cr | static_cast<unsigned>(_mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8('\r')))) << 2;
    // An LF whose previous byte is LF, or CR with an LF before it.
    unsigned ends = L & ((L << 1) | ((R << 1) & (L << 2))) & ~3u;
    if (ends != 0) return i + static_cast<unsigned>(std::countr_zero(ends)) - 2 + 1;
    lf = L >> 16;
    cr = R >> 16;
  }
#endif
  for (; i < n; ++i) {
    bool is_lf = s[i] == '\n';
    if (is_lf && ((lf & 2) != 0 || ((cr & 2) != 0 && (lf & 1) != 0))) return i + 1;
    lf = (lf >> 1) | static_cast<unsigned>(is_lf) << 1;
    cr = (cr >> 1) | static_cast<unsigned>(s[i] == '\r') << 1;
  }
  return 0;
}

// --- Field values ------------------------------------------------------------------------------

// Calls fn on each element of a comma-separated list (RFC 9110 5.6.1), OWS trimmed and empty
// elements included, until fn returns false; returns whether it never did.
template <class Fn>
bool each_element(std::string_view list, Fn fn) {
  for (;;) {
    std::size_t comma = list.find(',');
    if (!fn(trim_ows(list.substr(0, comma)))) return false;
    if (comma == std::string_view::npos) return true;
    list.remove_prefix(comma + 1);
  }
}

bool list_has(std::string_view list, std::string_view token) {
  return !each_element(list, [token](std::string_view e) { return !same_token(e, token); });
}

// 1*DIGIT that fits in 64 bits: no sign, no spaces, no hex.
bool parse_decimal(std::string_view s, std::uint64_t& out) {
  if (s.empty()) return false;
  std::uint64_t n = 0;
  for (char c : s) {
    auto d = static_cast<unsigned>(c - '0');
    if (d > 9 || n > (std::numeric_limits<std::uint64_t>::max() - d) / 10) return false;
    n = n * 10 + d;
  }
  out = n;
  return true;
}

// --- Head parsing ------------------------------------------------------------------------------
// What the fields say about framing and the connection, gathered while they are parsed.
struct field_facts {
  int hosts = 0;
  bool has_length = false;
  std::uint64_t length = 0;
  bool has_te = false;
  bool te_chunked = false;       // chunked appears among the codings
  bool te_ends_chunked = false;  // ... and is the last one
  bool te_other = false;         // some other coding appears
  bool close = false, keep_alive = false, upgrade_token = false;  // Connection options
  bool upgrade_field = false;
  bool expect_continue = false;
};

// Parses a head from its start line to its final empty line. Every read is bounded by `end`: it
// is the end of a complete head when locate_head has found one, or the end of the input when
// head_parser::parse_whole tries its luck, where running out is just one more way to fail.
class head_reader {
 public:
  head_reader(const char* begin, const char* end, const parse_limits& limits, message_head& out,
              parse_error& err)
      : p_(begin), end_(end), limits_(limits), out_(out), err_(err) {}

  bool request() {
    request_ = true;
    const char* line = p_;
    return method() && target() && version() && start_line_end(line) && fields() &&
           request_semantics();
  }
  bool response() {
    const char* line = p_;
    return version() && status() && reason(line) && fields() && response_semantics();
  }
  const char* position() const { return p_; }

 private:
  bool fail(int status, const char* what) { return http::fail(err_, status, what); }

  // The byte at q, or NUL past the end: NUL is invalid everywhere in a head, so running out of
  // input fails whatever check comes next without a test of its own.
  char at(const char* q) const { return q < end_ ? *q : '\0'; }

  bool method() {
    const char* begin = p_;
    if (end_ - p_ >= 4 && std::memcmp(p_, "GET ", 4) == 0) {  // most requests: one compare
      out_.method = {begin, 3};
      p_ += 4;
      return true;
    }
    while (p_ < end_ && is(*p_, tchar))
      ++p_;
    if (p_ == begin || at(p_) != ' ') return fail(400, "malformed method");
    out_.method = {begin, static_cast<std::size_t>(p_ - begin)};
    ++p_;
    return true;
  }

  // Exactly one SP on each side: extra spaces are how some parsers end up disagreeing about
  // where the target ends.
  bool target() {
    const char* begin = p_;
    p_ = skip_target(p_, end_);
    if (p_ == begin || at(p_) != ' ') return fail(400, "malformed request target");
    out_.target = {begin, static_cast<std::size_t>(p_ - begin)};
    ++p_;
    return true;
  }

  // "HTTP/" DIGIT "." DIGIT, case-sensitive (RFC 9112 2.3). A major version other than 1 is 505
  // even when the rest is odd ("HTTP/2"); minor versions past 1 are read as 1, the highest this
  // parser speaks.
  bool version() {
    if (end_ - p_ >= 8 && std::memcmp(p_, "HTTP/1.1", 8) == 0) {  // most messages: one compare
      out_.minor_version = 1;
      p_ += 8;
      return true;
    }
    if (end_ - p_ < 5 || std::memcmp(p_, "HTTP/", 5) != 0) {
      return fail(400, "malformed HTTP version");
    }
    const char* v = p_ + 5;
    char major = at(v);
    if (major >= '0' && major <= '9' && major != '1') {
      return fail(505, "HTTP major version is not 1");
    }
    if (end_ - v < 3 || v[0] != '1' || v[1] != '.' || v[2] < '0' || v[2] > '9') {
      return fail(400, "malformed HTTP version");
    }
    out_.minor_version = v[2] == '0' ? 0 : 1;
    p_ = v + 3;
    return true;
  }

  bool status() {
    if (at(p_) != ' ') return fail(400, "malformed status line");
    ++p_;
    int code = 0;
    for (int i = 0; i < 3; ++i, ++p_) {
      char digit = at(p_);
      if (digit < '0' || digit > '9') return fail(400, "malformed status code");
      code = code * 10 + (digit - '0');
    }
    if (code < 100) return fail(400, "malformed status code");
    out_.status = code;
    return true;
  }

  // The SP before an empty reason is optional in practice, though not in the grammar.
  bool reason(const char* line) {
    if (at(p_) == ' ') {
      const char* begin = ++p_;
      p_ = skip_value(p_, end_);
      out_.reason = {begin, static_cast<std::size_t>(p_ - begin)};
    }
    return start_line_end(line);
  }

  // locate_head has checked the length already unless the parse is a guess on the whole input.
  bool start_line_end(const char* line) {
    if (static_cast<std::size_t>(p_ - line) > limits_.max_start_line) {
      return fail(414, "start line too long");
    }
    return line_end();
  }

  bool line_end() {
    char c = at(p_);
    if (c == '\n') {
      ++p_;
      return true;
    }
    if (c == '\r' && at(p_ + 1) == '\n') {
      p_ += 2;
      return true;
    }
    return fail(400, c == '\r' ? "bare CR" : "malformed line");
  }

  bool fields() {
    for (;;) {
      char c = at(p_);
      if (c == '\n' || c == '\r') return line_end();  // the empty line that ends the head
      // RFC 9112 5.2: obs-fold must be refused (or replaced) by a server; a line starting with
      // whitespace right after the start line is refused too (RFC 9112 2.2).
      if (is_ws(c)) return fail(400, "obsolete line folding");
      if (!field()) return false;
    }
  }

  bool field() {
    if (out_.headers.size() >= limits_.max_headers) return fail(431, "too many header fields");
    const char* name = p_;
    while (p_ < end_ && is(*p_, tchar))
      ++p_;
    if (p_ == name || at(p_) != ':') {
      // RFC 9112 5.1: whitespace before the colon must be refused ("Transfer-Encoding : x").
      if (p_ != name && is_ws(at(p_))) return fail(400, "whitespace before colon");
      return fail(400, "malformed field name");
    }
    std::string_view field_name(name, static_cast<std::size_t>(p_ - name));
    do
      ++p_;
    while (p_ < end_ && is_ws(*p_));
    const char* value = p_;
    p_ = skip_value(p_, end_);
    const char* value_end = p_;
    char stop = at(p_);
    if (stop != '\r' && stop != '\n') return fail(400, "invalid byte in field value");
    if (!line_end()) return false;
    while (value_end > value && is_ws(value_end[-1]))
      --value_end;
    out_.headers.push_back({field_name, {value, static_cast<std::size_t>(value_end - value)}});
    return note(field_name, out_.headers.back().value);
  }

  // The fields the parser acts on; a switch on the length keeps the others at one compare.
  bool note(std::string_view name, std::string_view value) {
    switch (name.size()) {
      case 4:
        if (request_ && is_name(name, "host")) return host(value);  // a response's means nothing
        break;
      case 6:
        if (is_name(name, "expect")) facts_.expect_continue |= list_has(value, "100-continue");
        break;
      case 7:
        if (is_name(name, "upgrade")) facts_.upgrade_field = true;
        break;
      case 10:
        if (is_name(name, "connection")) connection(value);
        break;
      case 14:
        if (is_name(name, "content-length")) return content_length(value);
        break;
      case 17:
        if (is_name(name, "transfer-encoding")) return transfer_encoding(value);
        break;
      default:
        break;
    }
    return true;
  }

  // RFC 9112 3.2: more than one Host, or a Host that is not a host[:port], is a 400 in any
  // version (a proxy and a server picking different ones route the request differently).
  bool host(std::string_view value) {
    if (++facts_.hosts > 1) return fail(400, "more than one Host");
    if (!host_and_port(value)) return fail(400, "invalid Host");
    return true;
  }

  // uri-host [":" port] (RFC 3986 3.2.2-3.2.3), in one pass: an IP literal in brackets (IPv6,
  // or IPvFuture "v..."), or a reg-name / IPv4 address of unreserved and sub-delims bytes and
  // %XX escapes; then a port of digits only (maybe none: "host:" is valid). Empty is valid too
  // (a target without an authority).
  static bool host_and_port(std::string_view v) {
    const char* p = v.data();
    const char* end = p + v.size();
    if (p < end && *p == '[') {
      const char* lit = ++p;
      bool future = p < end && (*p == 'v' || *p == 'V');
      while (p < end && *p != ']') {
        bool ok = future ? is(*p, hostc) && *p != '[' : is(*p, hexdig) || *p == ':' || *p == '.';
        if (!ok) return false;
        ++p;
      }
      if (p == end || p == lit) return false;
      ++p;
    } else {
      for (;;) {
        while (p < end && is(*p, regc))
          ++p;
        if (p == end || *p != '%') break;
        if (end - p < 3 || !is(p[1], hexdig) || !is(p[2], hexdig)) return false;
        p += 3;
      }
    }
    if (p == end) return true;
    if (*p++ != ':') return false;
    while (p < end && static_cast<unsigned>(*p - '0') <= 9)
      ++p;
    return p == end;
  }

  void connection(std::string_view value) {
    each_element(value, [this](std::string_view option) {
      facts_.close |= same_token(option, "close");
      facts_.keep_alive |= same_token(option, "keep-alive");
      facts_.upgrade_token |= same_token(option, "upgrade");
      return true;
    });
  }

  // Only digits, and in a list only the same number again ("5, 5", which RFC 9110 8.6 lets a
  // recipient read as 5). A length another parser could read differently is refused: signs, hex,
  // empty elements, overflow, and values that differ across the list or the fields.
  bool content_length(std::string_view value) {
    return each_element(value, [this](std::string_view element) {
      std::uint64_t n = 0;
      if (!parse_decimal(element, n)) return fail(400, "malformed Content-Length");
      if (facts_.has_length && n != facts_.length) return fail(400, "differing Content-Lengths");
      facts_.has_length = true;
      facts_.length = n;
      return true;
    });
  }

  // The codings of all Transfer-Encoding fields, in order. A coding must be a bare token:
  // parameters, quotes or empty elements are refused rather than interpreted.
  bool transfer_encoding(std::string_view value) {
    facts_.has_te = true;
    return each_element(value, [this](std::string_view coding) {
      if (coding.empty() || !all_of_class(coding, tchar)) {
        return fail(400, "malformed Transfer-Encoding");
      }
      bool chunked = same_token(coding, "chunked");
      if (chunked && facts_.te_chunked) return fail(400, "chunked applied twice");
      facts_.te_chunked |= chunked;
      facts_.te_other |= !chunked;
      facts_.te_ends_chunked = chunked;
      return true;
    });
  }

  // RFC 9112 6.1-6.3, with every combination that lets two parsers disagree on where the body
  // ends refused instead of resolved.
  bool framing() {
    if (facts_.has_te) {
      if (out_.minor_version == 0) return fail(400, "Transfer-Encoding in HTTP/1.0");
      if (facts_.has_length) return fail(400, "both Content-Length and Transfer-Encoding");
      if (!facts_.te_ends_chunked) return fail(400, "final transfer coding is not chunked");
      if (facts_.te_other) return fail(501, "transfer coding not implemented");
      out_.framing = body_framing::chunked;
    } else if (facts_.has_length) {
      out_.framing = body_framing::content_length;
      out_.content_length = facts_.length;
    }
    return true;
  }

  bool body_within_limit() {
    if (out_.framing == body_framing::content_length &&
        out_.content_length > limits_.max_body_size) {
      return fail(413, "Content-Length exceeds the body limit");
    }
    return true;
  }

  void connection_options() {
    out_.keep_alive = out_.minor_version == 1 ? !facts_.close : facts_.keep_alive && !facts_.close;
    out_.upgrade = facts_.upgrade_token && facts_.upgrade_field;
  }

  bool request_semantics() {
    if (!framing()) return false;
    if (facts_.hosts == 0 && out_.minor_version == 1) return fail(400, "missing Host");
    if (!body_within_limit()) return false;
    connection_options();
    // RFC 9110 10.1.1: a 100-continue expectation in an HTTP/1.0 request is ignored.
    out_.expect_continue = facts_.expect_continue && out_.minor_version == 1;
    return true;
  }

  bool response_semantics() {
    if (!framing()) return false;
    int s = out_.status;
    if (s < 200 || s == 204 || s == 304) {
      out_.framing = body_framing::none;
      out_.content_length = 0;
    } else if (out_.framing == body_framing::none) {
      out_.framing = body_framing::until_close;
    }
    // No 413 here: the Content-Length of a HEAD response describes a body that never comes,
    // and only the caller knows the method. The reader bounds the body as it arrives.
    connection_options();
    // A body that ends when the connection does leaves no connection to keep.
    if (out_.framing == body_framing::until_close) out_.keep_alive = false;
    return true;
  }

  const char* p_;
  const char* end_;
  const parse_limits& limits_;
  message_head& out_;
  parse_error& err_;
  field_facts facts_;
  bool request_ = false;
};

}  // namespace

// --- Public helpers ----------------------------------------------------------------------------
std::string_view trim_ows(std::string_view s) noexcept {
  while (!s.empty() && is_ws(s.front()))
    s.remove_prefix(1);
  while (!s.empty() && is_ws(s.back()))
    s.remove_suffix(1);
  return s;
}

bool iequals(std::string_view a, std::string_view b) noexcept {
  return same_token(a, b);
}

std::string_view message_head::header(std::string_view name) const noexcept {
  for (const auto& f : headers) {
    if (same_token(f.name, name)) return f.value;
  }
  return {};
}

bool message_head::has_header(std::string_view name) const noexcept {
  return std::any_of(headers.begin(), headers.end(),
                     [name](const header_field& f) { return same_token(f.name, name); });
}

bool message_head::has_token(std::string_view name, std::string_view token) const noexcept {
  return std::any_of(headers.begin(), headers.end(), [&](const header_field& f) {
    return same_token(f.name, name) && list_has(f.value, token);
  });
}

void message_head::clear() noexcept {
  method = target = reason = {};
  status = 0;
  minor_version = 1;
  headers.clear();
  framing = body_framing::none;
  content_length = 0;
  keep_alive = true;
  expect_continue = false;
  upgrade = false;
}

// --- head_parser -------------------------------------------------------------------------------
std::size_t head_parser::parse_request(std::string_view buf, message_head& out, parse_error& err) {
  return parse(buf, out, err, true);
}

std::size_t head_parser::parse_response(std::string_view buf, message_head& out, parse_error& err) {
  return parse(buf, out, err, false);
}

std::size_t head_parser::parse(std::string_view buf, message_head& out, parse_error& err,
                               bool request) {
  std::string_view window = buf.substr(0, limits_.max_header_size);
  if (std::max(scanned_, start_) > window.size()) reset();  // not last call's buffer after all
  auto read = [&](const char* end, parse_error& e) -> std::size_t {
    out.clear();
    head_reader reader(buf.data() + start_, end, limits_, out, e);
    bool ok = request ? reader.request() : reader.response();
    return ok ? static_cast<std::size_t>(reader.position() - buf.data()) : 0;
  };
  // Most heads arrive whole, so the first call for a message parses straight away, without
  // looking for the end of the head first. If that fails for any reason (too short, malformed),
  // its result is dropped and the input is taken the careful way below, which alone decides
  // what to report. A success needs every check the careful way makes, so the two agree. Trying
  // once per message keeps a head that dribbles in at O(n).
  if (!guessed_) {
    guessed_ = true;
    parse_error ignored;
    if (skip_empty_lines(window, ignored)) {
      if (std::size_t n = read(window.data() + window.size(), ignored)) return n;
    }
  }
  std::size_t n = locate_head(buf, err);
  return n == 0 ? 0 : read(buf.data() + n, err);
}

// RFC 9112 2.2: empty lines before a request line are skipped (some clients send a CRLF after a
// POST body). Returns whether the start line has begun at start_. The skipped bytes still count
// against max_header_size.
bool head_parser::skip_empty_lines(std::string_view buf, parse_error& err) {
  while (start_ < buf.size()) {
    if (buf[start_] == '\n') {
      ++start_;
      continue;
    }
    if (buf[start_] != '\r') return true;
    if (start_ + 1 == buf.size()) return false;  // the LF may be on its way
    if (buf[start_ + 1] != '\n') return fail(err, 400, "bare CR");
    start_ += 2;
  }
  return false;
}

// The head's length once its final empty line is in `buf`; else 0, with err set if the bytes so
// far already break a limit (a peer should not get to fill a limit before being refused).
//
// Only the first max_header_size bytes can hold a head, so only they are looked at. Every check
// below then depends on a prefix of the input alone, which is what makes the answer for a buffer
// the same whether it came at once or a byte at a time: with the whole buffer, the error found is
// the one a byte-at-a-time caller would have been told first.
std::size_t head_parser::locate_head(std::string_view buf, parse_error& err) {
  std::string_view window = buf.substr(0, limits_.max_header_size);
  auto not_yet = [&] {
    // No end of head in the window: past it, the head would be too large.
    if (buf.size() >= limits_.max_header_size) fail(err, 431, "head too large");
    return std::size_t{0};
  };
  if (!skip_empty_lines(window, err)) return err ? 0 : not_yet();
  if (line_end_ == 0) {
    // Until the start line ends, its length is all there is to check.
    std::size_t from = std::max(scanned_, start_);
    const void* lf = std::memchr(window.data() + from, '\n', window.size() - from);
    if (lf == nullptr) {
      scanned_ = window.size();
      // A final CR may be the start of the line's CRLF.
      if (window.size() - start_ - (window.back() == '\r') > limits_.max_start_line) {
        return fail(err, 414, "start line too long");
      }
      return not_yet();
    }
    line_end_ = static_cast<std::size_t>(static_cast<const char*>(lf) - window.data());
    scanned_ = line_end_;
    if (line_end_ - start_ - (window[line_end_ - 1] == '\r') > limits_.max_start_line) {
      return fail(err, 414, "start line too long");
    }
  }
  std::size_t end = find_head_end(window, scanned_);
  if (end == 0) {
    scanned_ = window.size();
    return not_yet();
  }
  return end;
}

// --- chunked_decoder ---------------------------------------------------------------------------
void chunked_decoder::reset() noexcept {
  state_ = state::size_first;
  chunk_left_ = total_ = 0;
  line_len_ = trailer_len_ = trailer_fields_ = 0;
}

std::size_t chunked_decoder::decode(std::string_view in, std::string_view& data, parse_error& err) {
  data = {};
  std::size_t i = 0;
  while (i < in.size() && state_ != state::done) {
    if (state_ == state::data) {
      auto n = static_cast<std::size_t>(std::min<std::uint64_t>(chunk_left_, in.size() - i));
      data = in.substr(i, n);
      chunk_left_ -= n;
      total_ += n;
      if (chunk_left_ == 0) state_ = state::data_cr;
      return i + n;
    }
    if (!step(in[i++], err)) return 0;
  }
  return i;
}

bool chunked_decoder::step(char c, parse_error& err) {
  switch (state_) {
    case state::size_first:
    case state::size:
    case state::size_lf:
      return size_byte(c, err);
    case state::ext_semi:
    case state::ext_name_ws:
    case state::ext_name:
    case state::ext_eq:
    case state::ext_value_ws:
    case state::ext_token:
    case state::ext_quoted:
    case state::ext_escape:
    case state::ext_after_quote:
      return ext_byte(c, err);
    case state::data_cr:
      // A bare LF is tolerated here as it is at the end of head lines; anything else means the
      // data was not as long as its size said.
      if (c == '\n') return next_chunk();
      if (c != '\r') return fail(err, 400, "missing CRLF after chunk data");
      state_ = state::data_lf;
      return true;
    case state::data_lf:
      if (c != '\n') return fail(err, 400, "bare CR after chunk data");
      return next_chunk();
    case state::trailer_start:
    case state::trailer_name:
    case state::trailer_value:
    case state::trailer_lf:
    case state::trailer_end_lf:
      return trailer_byte(c, err);
    case state::data:
    case state::done:
      break;
  }
  return true;
}

bool chunked_decoder::next_chunk() {
  state_ = state::size_first;
  chunk_left_ = 0;
  line_len_ = 0;
  return true;
}

// The chunk-size line is held to max_start_line, its CRLF not counted (as for the start line):
// extensions are ignored, so there is no reason to buffer many of them.
bool chunked_decoder::line_fits(char c) {
  if (c == '\r' || c == '\n') return true;
  return ++line_len_ <= limits_.max_start_line;
}

// chunk-size = 1*HEXDIG, then extensions or the end of the line: no sign, no "0x", no spaces
// unless an extension follows them.
bool chunked_decoder::size_byte(char c, parse_error& err) {
  if (!line_fits(c)) return fail(err, 400, "chunk-size line too long");
  if (state_ == state::size_lf) {
    if (c != '\n') return fail(err, 400, "bare CR in chunk-size line");
    return end_size_line();
  }
  if (is(c, hexdig)) {
    state_ = state::size;
    return add_digit(c, err);
  }
  if (state_ == state::size_first) return fail(err, 400, "malformed chunk size");
  return after_ext_item(c, err);
}

// The size is held to the limits digit by digit, so a long size is refused before it could
// overflow, however many digits follow.
bool chunked_decoder::add_digit(char c, parse_error& err) {
  unsigned d =
      c <= '9' ? static_cast<unsigned>(c - '0') : static_cast<unsigned>((c | 0x20) - 'a' + 10);
  if (chunk_left_ > (std::numeric_limits<std::uint64_t>::max() - d) / 16) {
    return fail(err, 413, "chunk larger than max_chunk_size");
  }
  chunk_left_ = chunk_left_ * 16 + d;
  if (chunk_left_ > limits_.max_chunk_size)
    return fail(err, 413, "chunk larger than max_chunk_size");
  // total_ never exceeds max_body_size: every chunk is checked before its data is taken.
  if (chunk_left_ > limits_.max_body_size - total_) {
    return fail(err, 413, "body larger than max_body_size");
  }
  return true;
}

// chunk-ext = *( BWS ";" BWS ext-name [ BWS "=" BWS ( token / quoted-string ) ] ), RFC 9112 7.1.1.
// Whitespace is allowed around ";" and "=" only: not at the end of the line.
bool chunked_decoder::ext_byte(char c, parse_error& err) {
  if (!line_fits(c)) return fail(err, 400, "chunk-size line too long");
  switch (state_) {
    case state::ext_semi:
      if (c == ';')
        state_ = state::ext_name_ws;
      else if (!is_ws(c))
        return fail(err, 400, "malformed chunk extension");
      return true;
    case state::ext_name_ws:
      if (is(c, tchar))
        state_ = state::ext_name;
      else if (!is_ws(c))
        return fail(err, 400, "malformed chunk extension");
      return true;
    case state::ext_name:
      if (is(c, tchar)) return true;
      if (c == '=')
        state_ = state::ext_value_ws;
      else if (is_ws(c))
        state_ = state::ext_eq;
      else
        return after_ext_item(c, err);
      return true;
    case state::ext_eq:
      if (c == '=')
        state_ = state::ext_value_ws;
      else if (c == ';')
        state_ = state::ext_name_ws;
      else if (!is_ws(c))
        return fail(err, 400, "malformed chunk extension");
      return true;
    case state::ext_value_ws:
      if (is(c, tchar))
        state_ = state::ext_token;
      else if (c == '"')
        state_ = state::ext_quoted;
      else if (!is_ws(c))
        return fail(err, 400, "malformed chunk extension");
      return true;
    case state::ext_token:
      return is(c, tchar) || after_ext_item(c, err);
    case state::ext_quoted:
      if (c == '"')
        state_ = state::ext_after_quote;
      else if (c == '\\')
        state_ = state::ext_escape;
      else if (!is(c, qdtext))
        return fail(err, 400, "malformed chunk extension");
      return true;
    case state::ext_escape:
      if (!is(c, fvalue)) return fail(err, 400, "malformed chunk extension");
      state_ = state::ext_quoted;
      return true;
    case state::ext_after_quote:
      return after_ext_item(c, err);
    default:
      return true;
  }
}

// After a size, an extension name or an extension value: another extension, whitespace before
// one, or the end of the line.
bool chunked_decoder::after_ext_item(char c, parse_error& err) {
  if (c == ';') {
    state_ = state::ext_name_ws;
  } else if (is_ws(c)) {
    state_ = state::ext_semi;
  } else if (c == '\r') {
    state_ = state::size_lf;
  } else if (c == '\n') {
    return end_size_line();
  } else {
    return fail(err, 400,
                state_ == state::size ? "malformed chunk size" : "malformed chunk extension");
  }
  return true;
}

bool chunked_decoder::end_size_line() {
  line_len_ = 0;
  state_ = chunk_left_ == 0 ? state::trailer_start : state::data;
  return true;
}

// Trailer fields are checked like header fields and counted against the head limits, then
// dropped.
bool chunked_decoder::trailer_byte(char c, parse_error& err) {
  if (++trailer_len_ > limits_.max_header_size) return fail(err, 431, "trailer section too large");
  switch (state_) {
    case state::trailer_start:
      if (c == '\r') {
        state_ = state::trailer_end_lf;
      } else if (c == '\n') {
        state_ = state::done;
      } else if (is(c, tchar)) {
        if (++trailer_fields_ > limits_.max_headers)
          return fail(err, 431, "too many trailer fields");
        state_ = state::trailer_name;
      } else {
        return fail(err, 400,
                    is_ws(c) ? "obsolete line folding in trailer" : "malformed trailer field");
      }
      return true;
    case state::trailer_name:
      if (c == ':')
        state_ = state::trailer_value;
      else if (!is(c, tchar))
        return fail(err, 400, is_ws(c) ? "whitespace before colon" : "malformed trailer field");
      return true;
    case state::trailer_value:
      if (c == '\r')
        state_ = state::trailer_lf;
      else if (c == '\n')
        state_ = state::trailer_start;
      else if (!is(c, fvalue))
        return fail(err, 400, "invalid byte in trailer field");
      return true;
    case state::trailer_lf:
      if (c != '\n') return fail(err, 400, "bare CR in trailer");
      state_ = state::trailer_start;
      return true;
    case state::trailer_end_lf:
      if (c != '\n') return fail(err, 400, "bare CR in trailer");
      state_ = state::done;
      return true;
    default:
      return true;
  }
}

}  // namespace squall::http
