// SPDX-License-Identifier: MIT
// The WebSocket wire layer (squall/websocket/frame.hpp): every frame check with its close code,
// incremental parsing (a byte at a time and random splits give what the whole buffer gives),
// masking against a scalar reference at every offset and length, UTF-8 validation (the cases of
// Autobahn's section 6, fail-fast positions, exhaustive short sequences), frame headers written
// and parsed back, permessage-deflate negotiation both ways, and compression: round trips, the
// RFC 7692 examples, context takeover, window bits, and a zip bomb bounded by max_size.
#include "squall/websocket/frame.hpp"

#include <doctest/doctest.h>
#include <zlib.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

using namespace std::string_literals;
using namespace squall::websocket;

namespace {

// --- Helpers -------------------------------------------------------------------------------------

using kind = frame_event::kind;

std::string bytes(std::initializer_list<int> b) {
  std::string s;
  for (int c : b)
    s.push_back(static_cast<char>(c));
  return s;
}

// The reference masking: one byte at a time, key byte i (most significant first) on byte i.
void mask_ref(std::string& s, std::uint32_t key, std::size_t offset = 0) {
  for (std::size_t i = 0; i < s.size(); ++i) {
    const unsigned shift = 24 - 8 * ((offset + i) % 4);
    s[i] = static_cast<char>(static_cast<unsigned char>(s[i]) ^ ((key >> shift) & 0xFF));
  }
}

// A frame encoded by the test itself (not write_frame_header): any bits, any length encoding.
struct raw_frame {
  int b0 = 0x82;             // FIN + binary
  std::uint64_t length = 0;  // the length written on the wire
  int len_bytes = -1;        // -1: minimal; 0, 2 or 8: that encoding
  bool masked = false;
  std::uint32_t key = 0x11223344;
  std::string payload = {};  // written (masked when masked), whatever `length` says
};

std::string encode(const raw_frame& f) {
  std::string s;
  s.push_back(static_cast<char>(f.b0));
  int lb = f.len_bytes;
  if (lb < 0) lb = f.length < 126 ? 0 : f.length <= 0xFFFF ? 2 : 8;
  const int m = f.masked ? 0x80 : 0;
  if (lb == 0)
    s.push_back(static_cast<char>(m | static_cast<int>(f.length)));
  else
    s.push_back(static_cast<char>(m | (lb == 2 ? 126 : 127)));
  for (int i = lb - 1; i >= 0; --i)
    s.push_back(static_cast<char>(f.length >> (8 * i)));
  std::string p = f.payload;
  if (f.masked) {
    for (int i = 3; i >= 0; --i)
      s.push_back(static_cast<char>(f.key >> (8 * i)));
    mask_ref(p, f.key);
  }
  return s + p;
}

// What a parse produced, with the payload pieces of a frame joined (splits change the pieces).
struct rec {
  kind type = kind::none;
  bool fin = false;
  bool rsv1 = false;
  opcode op = opcode::continuation;
  std::uint64_t size = 0;
  std::string data;
  std::uint16_t close = 0;
  std::string what;
  bool operator==(const rec&) const = default;
};

}  // namespace

// Event lists print readably when a CHECK fails.
template <>
struct doctest::StringMaker<std::vector<rec>> {
  static doctest::String convert(const std::vector<rec>& v) {
    std::ostringstream os;
    os << v.size() << " events:";
    for (std::size_t i = 0; i < v.size() && i < 12; ++i) {
      const rec& r = v[i];
      os << "\n  {type " << int(r.type) << " fin " << r.fin << " rsv1 " << r.rsv1 << " op "
         << int(r.op) << " size " << r.size << " data " << r.data.size() << "B close " << r.close
         << " " << r.what << "}";
    }
    return os.str().c_str();
  }
};

namespace {

struct run_result {
  std::vector<rec> events;
  bool zero_copy = true;      // payload views started at the bytes given, inside the buffer
  bool none_used_all = true;  // kind::none always came with every byte used
};

// Feeds `input` to a parser in the pieces `cut` says (piece sizes, repeated; 0: whole).
run_result run(std::string input, parser_options o, const std::vector<std::size_t>& cut = {}) {
  run_result r;
  frame_parser p(o);
  std::size_t pos = 0, piece = 0;
  bool stop = false;
  while (!stop) {
    std::size_t len = input.size() - pos;
    if (!cut.empty()) len = std::min(len, cut[piece++ % cut.size()]);
    std::size_t end = pos + len;
    while (true) {
      frame_event ev;
      char* at = input.data() + pos;
      std::size_t used = p.parse(at, end - pos, ev);
      if (used > end - pos) {
        r.zero_copy = false;
        return r;
      }
      if (ev.type == kind::none) {
        if (used != end - pos) r.none_used_all = false;
        pos += used;
        break;
      }
      rec e{ev.type, ev.fin, ev.rsv1, ev.op, ev.payload_size, {}, 0, {}};
      if (ev.type == kind::payload) {
        if (ev.data.data() != at || ev.data.size() != used) r.zero_copy = false;
        if (!r.events.empty() && r.events.back().type == kind::payload) {
          r.events.back().data.append(ev.data);
          pos += used;
          continue;
        }
        e.data.assign(ev.data);
      }
      if (ev.type == kind::error) {
        e = rec{};
        e.type = kind::error;
        e.close = ev.close;
        e.what = ev.what;
        r.events.push_back(e);
        stop = true;
        break;
      }
      r.events.push_back(e);
      pos += used;
    }
    if (pos >= input.size()) break;
  }
  return r;
}

parser_options server_opts(bool rsv1 = false) {
  return {.side = role::server, .allow_rsv1 = rsv1};
}
parser_options client_opts(bool rsv1 = false) {
  return {.side = role::client, .allow_rsv1 = rsv1};
}

// Runs whole, a byte at a time and in pieces of 2, 3, 5 and 7: all must agree; returns whole.
std::vector<rec> run_all_ways(const std::string& input, parser_options o) {
  run_result whole = run(input, o);
  CHECK(whole.zero_copy);
  CHECK(whole.none_used_all);
  for (std::vector<std::size_t> cut : {std::vector<std::size_t>{1}, {2}, {3}, {5, 7}, {7, 1, 2}}) {
    run_result split = run(input, o, cut);
    CHECK(split.zero_copy);
    CHECK(split.none_used_all);
    CHECK(split.events == whole.events);
  }
  return whole.events;
}

// The error a stream ends with (0 when none).
std::uint16_t error_of(const std::string& input, parser_options o, std::string* what = nullptr) {
  auto ev = run_all_ways(input, o);
  if (ev.empty() || ev.back().type != kind::error) return 0;
  if (what) *what = ev.back().what;
  return ev.back().close;
}

// Expected events for a well-formed frame.
void expect_frame(std::vector<rec>& v, opcode op, bool fin, const std::string& payload,
                  bool rsv1 = false) {
  v.push_back({kind::header, fin, rsv1, op, payload.size(), {}, 0, {}});
  if (!payload.empty()) v.push_back({kind::payload, fin, rsv1, op, payload.size(), payload, 0, {}});
  v.push_back({kind::end, fin, rsv1, op, payload.size(), {}, 0, {}});
}

std::string pattern(std::size_t n, unsigned seed = 1) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s)
    c = static_cast<char>(rng());
  return s;
}

// --- Close codes ---------------------------------------------------------------------------------

TEST_CASE("valid_close_code: 1000-1003, 1007-1014, 3000-4999 and nothing else") {
  for (int code = 0; code <= 0xFFFF; ++code) {
    const bool expected = (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
                          (code >= 3000 && code <= 4999);
    if (valid_close_code(static_cast<std::uint16_t>(code)) != expected) {
      FAIL("close code " << code << " should be " << (expected ? "valid" : "invalid"));
    }
  }
  CHECK_FALSE(valid_close_code(1004));
  CHECK_FALSE(valid_close_code(1005));
  CHECK_FALSE(valid_close_code(1006));
  CHECK_FALSE(valid_close_code(1015));
  CHECK(valid_close_code(1012));
}

// --- Masking -------------------------------------------------------------------------------------

TEST_CASE("apply_mask matches the scalar reference at every offset, length and alignment") {
  const std::uint32_t keys[] = {0x37fa213d, 0xFFFFFFFF, 0x00000001, 0x80000000, 0xDEADBEEF};
  std::string base = pattern(600 + 64);
  for (std::uint32_t key : keys) {
    for (std::size_t len = 0; len <= 300; ++len) {
      for (std::size_t offset = 0; offset < 8; ++offset) {
        const std::size_t align = (len * 7 + offset) % 16;  // vary the start address too
        std::string buf = base;
        std::string ref = base.substr(align, len);
        mask_ref(ref, key, offset);
        apply_mask(buf.data() + align, len, key, offset);
        if (buf.substr(align, len) != ref) FAIL("len " << len << " offset " << offset);
        // Bytes around the range are untouched.
        if (buf.substr(0, align) != base.substr(0, align) ||
            buf.substr(align + len) != base.substr(align + len))
          FAIL("wrote outside the range: len " << len << " offset " << offset);
      }
    }
  }
  // Long buffers at every start alignment.
  for (std::size_t align = 0; align < 16; ++align) {
    for (std::size_t len : {1000u, 4099u, 65536u + 13u}) {
      std::string buf = pattern(len + 32, 7);
      std::string ref = buf.substr(align, len);
      mask_ref(ref, 0xA1B2C3D4, align);
      apply_mask(buf.data() + align, len, 0xA1B2C3D4, align);
      CHECK(buf.substr(align, len) == ref);
    }
  }
}

TEST_CASE("apply_mask in pieces, carrying the offset, equals one pass; twice is the identity") {
  const std::string plain = pattern(257, 3);
  std::string once = plain;
  apply_mask(once.data(), once.size(), 0x01020304);
  std::string ref = plain;
  mask_ref(ref, 0x01020304);
  CHECK(once == ref);
  for (std::size_t a = 0; a <= plain.size(); a += 3) {
    for (std::size_t b = a; b <= plain.size(); b += 17) {
      std::string s = plain;
      apply_mask(s.data(), a, 0x01020304, 0);
      apply_mask(s.data() + a, b - a, 0x01020304, a);
      apply_mask(s.data() + b, s.size() - b, 0x01020304, b);
      if (s != once) FAIL("split at " << a << ", " << b);
    }
  }
  apply_mask(once.data(), once.size(), 0x01020304);
  CHECK(once == plain);
}

TEST_CASE("apply_mask: the key is in wire order (RFC 6455 5.7: 37 fa 21 3d masks \"Hello\")") {
  std::string s = "Hello";
  apply_mask(s.data(), s.size(), 0x37fa213d);
  CHECK(s == bytes({0x7f, 0x9f, 0x4d, 0x51, 0x58}));
}

// --- Parsing: valid frames -----------------------------------------------------------------------

TEST_CASE("parser: the RFC 6455 5.7 examples") {
  SUBCASE("a single-frame unmasked text message (to a client)") {
    auto ev = run_all_ways(bytes({0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f}), client_opts());
    std::vector<rec> want;
    expect_frame(want, opcode::text, true, "Hello");
    CHECK(ev == want);
  }
  SUBCASE("a single-frame masked text message (to a server)") {
    auto ev = run_all_ways(
        bytes({0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58}), server_opts());
    std::vector<rec> want;
    expect_frame(want, opcode::text, true, "Hello");
    CHECK(ev == want);
  }
  SUBCASE("a fragmented unmasked text message") {
    auto ev =
        run_all_ways(bytes({0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f}), client_opts());
    std::vector<rec> want;
    expect_frame(want, opcode::text, false, "Hel");
    expect_frame(want, opcode::continuation, true, "lo");
    CHECK(ev == want);
  }
  SUBCASE("unmasked ping, masked pong") {
    std::vector<rec> want;
    expect_frame(want, opcode::ping, true, "Hello");
    CHECK(run_all_ways(bytes({0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f}), client_opts()) == want);
    want.clear();
    expect_frame(want, opcode::pong, true, "Hello");
    CHECK(run_all_ways(bytes({0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58}),
                       server_opts()) == want);
  }
  SUBCASE("256 bytes and 64 KiB binary messages in one unmasked frame") {
    const std::string p256 = pattern(256), p64k = pattern(65536);
    std::vector<rec> want;
    expect_frame(want, opcode::binary, true, p256);
    CHECK(run_all_ways(bytes({0x82, 0x7E, 0x01, 0x00}) + p256, client_opts()) == want);
    want.clear();
    expect_frame(want, opcode::binary, true, p64k);
    CHECK(run(bytes({0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0}) + p64k, client_opts()).events == want);
  }
}

TEST_CASE("parser: empty payloads give header then end, with no payload event") {
  for (bool masked : {false, true}) {
    raw_frame f;
    f.b0 = 0x81;
    f.masked = masked;
    auto ev = run_all_ways(encode(f), masked ? server_opts() : client_opts());
    std::vector<rec> want;
    expect_frame(want, opcode::text, true, "");
    CHECK(ev == want);
  }
  // end needs no input: after the header the next call, even with nothing, reports it.
  frame_parser p(client_opts());
  std::string buf = bytes({0x8A, 0x00});
  frame_event ev;
  CHECK(p.parse(buf.data(), buf.size(), ev) == 2);
  CHECK(ev.type == kind::header);
  CHECK(ev.op == opcode::pong);
  CHECK(p.parse(nullptr, 0, ev) == 0);
  CHECK(ev.type == kind::end);
  CHECK(p.parse(nullptr, 0, ev) == 0);
  CHECK(ev.type == kind::none);
}

TEST_CASE("parser: rsv1 is reported when allowed, on the first frame of a data message") {
  raw_frame first{.b0 = 0x41, .length = 3, .payload = "abc"};  // text, RSV1, not final
  raw_frame ping{.b0 = 0x89, .length = 1, .payload = "p"};
  raw_frame last{.b0 = 0x80, .length = 2, .payload = "de"};
  auto ev = run_all_ways(encode(first) + encode(ping) + encode(last), client_opts(true));
  std::vector<rec> want;
  expect_frame(want, opcode::text, false, "abc", true);
  expect_frame(want, opcode::ping, true, "p");
  expect_frame(want, opcode::continuation, true, "de");
  CHECK(ev == want);
  raw_frame binary{.b0 = 0xC2, .length = 0};
  want.clear();
  expect_frame(want, opcode::binary, true, "", true);
  CHECK(run_all_ways(encode(binary), client_opts(true)) == want);
}

// A long stream of every size that matters, masked or not, fragmented with pings between the
// fragments: byte at a time, random pieces and whole give the same events, as generated.
struct stream_gen {
  bool masked;
  std::string wire = {};
  std::vector<rec> want = {};
  std::mt19937 rng{42};
  void frame(opcode op, bool fin, const std::string& payload, bool rsv1 = false) {
    raw_frame f;
    f.b0 = (fin ? 0x80 : 0) | (rsv1 ? 0x40 : 0) | static_cast<int>(op);
    f.length = payload.size();
    f.payload = payload;
    f.masked = masked;
    f.key = static_cast<std::uint32_t>(rng());
    wire += encode(f);
    expect_frame(want, op, fin, payload, rsv1);
  }
};

stream_gen make_stream(bool masked) {
  stream_gen g{masked};
  const std::size_t sizes[] = {0, 1, 2, 3, 4, 5, 125, 126, 127, 65535, 65536, 70000};
  unsigned seed = 100;
  for (std::size_t n : sizes) {
    g.frame(opcode::binary, true, pattern(n, ++seed));
    g.frame(opcode::text, true, std::string(n % 300, 'x'));
  }
  // Fragmented messages: pings and pongs (empty and full-size) between the fragments.
  for (std::size_t n : sizes) {
    g.frame(opcode::text, false, pattern(n % 1000, ++seed), true);
    g.frame(opcode::ping, true, "");
    g.frame(opcode::continuation, false, pattern(n, ++seed));
    g.frame(opcode::pong, true, pattern(125, ++seed));
    g.frame(opcode::continuation, false, "");
    g.frame(opcode::continuation, true, pattern(n % 7, ++seed));
  }
  g.frame(opcode::close, true, bytes({0x03, 0xE8}) + "bye");
  return g;
}

TEST_CASE("parser: a stream of many frames, whole, a byte at a time and in random pieces") {
  for (bool masked : {true, false}) {
    CAPTURE(masked);
    stream_gen g = make_stream(masked);
    parser_options o = masked ? server_opts(true) : client_opts(true);
    run_result whole = run(g.wire, o);
    CHECK(whole.zero_copy);
    CHECK(whole.none_used_all);
    CHECK(whole.events == g.want);
    run_result bytewise = run(g.wire, o, {1});
    CHECK(bytewise.zero_copy);
    CHECK(bytewise.none_used_all);
    CHECK(bytewise.events == g.want);
    std::mt19937 rng(9);
    for (int round = 0; round < 8; ++round) {
      std::vector<std::size_t> cut;
      for (int i = 0; i < 97; ++i)
        cut.push_back(1 + rng() % (round < 4 ? 16 : 5000));
      run_result r = run(g.wire, o, cut);
      CHECK(r.zero_copy);
      CHECK(r.none_used_all);
      CHECK(r.events == g.want);
    }
  }
}

TEST_CASE("parser: lengths at the boundaries of their encodings are accepted") {
  for (std::uint64_t n : {125u, 126u, 65535u, 65536u}) {
    raw_frame f{.b0 = 0x82, .length = n, .payload = std::string(n, 'a')};
    std::vector<rec> want;
    expect_frame(want, opcode::binary, true, f.payload);
    CHECK(run(encode(f), client_opts()).events == want);
  }
  // 2^63 - 1 is a legal length (refused here only by max_frame_size, with 1009).
  raw_frame huge{.b0 = 0x82, .length = (std::uint64_t{1} << 63) - 1, .len_bytes = 8};
  parser_options o = client_opts();
  o.max_frame_size = UINT64_MAX;
  auto ev = run_all_ways(encode(huge), o);
  REQUIRE(ev.size() == 1);
  CHECK(ev[0].type == kind::header);
  CHECK(ev[0].size == (std::uint64_t{1} << 63) - 1);
}

// --- Parsing: every check with its code ----------------------------------------------------------

TEST_CASE("parser: reserved bits are 1002 (rsv1 only allowed with permessage-deflate)") {
  std::string what;
  CHECK(error_of(encode({.b0 = 0x81 | 0x20}), client_opts(true), &what) == 1002);  // rsv2
  CHECK(what.find("reserved bit") != std::string::npos);
  CHECK(error_of(encode({.b0 = 0x81 | 0x10}), client_opts(true)) == 1002);  // rsv3
  CHECK(error_of(encode({.b0 = 0x81 | 0x70}), client_opts(true)) == 1002);
  CHECK(error_of(encode({.b0 = 0x81 | 0x40}), client_opts(false)) == 1002);  // not negotiated
  CHECK(error_of(encode({.b0 = 0x81 | 0x40}), client_opts(true)) == 0);
  CHECK(error_of(encode({.b0 = 0x82 | 0x40}), client_opts(true)) == 0);
  // Never on control frames.
  for (int op : {0x8, 0x9, 0xA})
    CHECK(error_of(encode({.b0 = 0x80 | 0x40 | op}), client_opts(true)) == 1002);
  // Never on continuation frames, even when the message started compressed.
  raw_frame start{.b0 = 0x41, .length = 1, .payload = "a"};
  CHECK(error_of(encode(start) + encode({.b0 = 0xC0}), client_opts(true)) == 1002);
  CHECK(error_of(encode(start) + encode({.b0 = 0x80}), client_opts(true)) == 0);
}

TEST_CASE("parser: reserved opcodes 3-7 and B-F are 1002") {
  for (int op = 0; op < 16; ++op) {
    CAPTURE(op);
    const bool reserved = (op >= 3 && op <= 7) || op >= 0xB;
    std::string prefix = op == 0 ? encode({.b0 = 0x01}) : "";  // a continuation needs a start
    std::string what;
    std::uint16_t code = error_of(prefix + encode({.b0 = 0x80 | op}), client_opts(), &what);
    CHECK(code == (reserved ? 1002 : 0));
    if (reserved) CHECK(what == "reserved opcode");
  }
}

TEST_CASE("parser: a server requires masking, a client refuses it (1002)") {
  raw_frame f{.b0 = 0x81, .length = 2, .payload = "hi"};
  CHECK(error_of(encode(f), server_opts()) == 1002);
  CHECK(error_of(encode(f), client_opts()) == 0);
  f.masked = true;
  CHECK(error_of(encode(f), server_opts()) == 0);
  std::string what;
  CHECK(error_of(encode(f), client_opts(), &what) == 1002);
  CHECK(what.find("masked") != std::string::npos);
  // Control frames too.
  CHECK(error_of(encode({.b0 = 0x89}), server_opts()) == 1002);
  CHECK(error_of(encode({.b0 = 0x89, .masked = true}), client_opts()) == 1002);
}

TEST_CASE("parser: control frames fragmented or longer than 125 bytes are 1002") {
  for (int op : {0x8, 0x9, 0xA}) {
    CAPTURE(op);
    CHECK(error_of(encode({.b0 = op}), client_opts()) == 1002);  // FIN clear
    raw_frame ok{.b0 = 0x80 | op, .length = 125, .payload = std::string(125, 'c')};
    CHECK(error_of(encode(ok), client_opts()) == 0);
    raw_frame big{.b0 = 0x80 | op, .length = 126, .payload = std::string(126, 'c')};
    std::string what;
    CHECK(error_of(encode(big), client_opts(), &what) == 1002);
    CHECK(what.find("125") != std::string::npos);
    big.length = 70000;
    big.payload = std::string(70000, 'c');
    CHECK(error_of(encode(big), client_opts()) == 1002);
    // Found from the first two bytes: nothing more needed.
    CHECK(error_of(encode(big).substr(0, 2), client_opts()) == 1002);
  }
}

TEST_CASE("parser: non-minimal length encodings and a 64-bit length with the top bit are 1002") {
  parser_options o = client_opts();
  o.max_frame_size = UINT64_MAX;
  for (std::uint64_t n : {0u, 1u, 125u}) {
    raw_frame f{.b0 = 0x82, .length = n, .len_bytes = 2, .payload = std::string(n, 'x')};
    std::string what;
    CHECK(error_of(encode(f), o, &what) == 1002);
    CHECK(what.find("minimal") != std::string::npos);
  }
  for (std::uint64_t n : {0u, 125u, 126u, 65535u}) {
    raw_frame f{.b0 = 0x82, .length = n, .len_bytes = 8, .payload = std::string(n, 'x')};
    CHECK(error_of(encode(f), o) == 1002);
  }
  CHECK(error_of(
            encode({.b0 = 0x82, .length = 126, .len_bytes = 2, .payload = std::string(126, 'x')}),
            o) == 0);
  CHECK(
      error_of(
          encode({.b0 = 0x82, .length = 65536, .len_bytes = 8, .payload = std::string(65536, 'x')}),
          o) == 0);
  for (std::uint64_t n : {std::uint64_t{1} << 63, UINT64_MAX}) {
    std::string what;
    CHECK(error_of(encode({.b0 = 0x82, .length = n, .len_bytes = 8}), o, &what) == 1002);
    CHECK(what.find("top bit") != std::string::npos);
  }
}

TEST_CASE("parser: fragmentation order (1002), control frames allowed between fragments") {
  const parser_options o = client_opts();
  raw_frame start{.b0 = 0x01, .length = 1, .payload = "a"};
  raw_frame cont{.b0 = 0x00, .length = 1, .payload = "b"};
  raw_frame fin{.b0 = 0x80, .length = 1, .payload = "c"};
  raw_frame ping{.b0 = 0x89, .length = 0};
  std::string what;
  CHECK(error_of(encode(fin), o, &what) == 1002);  // continuation without a start
  CHECK(what.find("continuation") != std::string::npos);
  CHECK(error_of(encode(cont), o) == 1002);
  CHECK(error_of(encode(start) + encode(cont) + encode(fin), o) == 0);
  CHECK(error_of(encode(start) + encode(ping) + encode(cont) + encode(ping) + encode(fin), o) == 0);
  // A new text or binary frame inside a fragmented message.
  CHECK(error_of(encode(start) + encode({.b0 = 0x81}), o, &what) == 1002);
  CHECK(what.find("inside") != std::string::npos);
  CHECK(error_of(encode(start) + encode(ping) + encode({.b0 = 0x02}), o) == 1002);
  // After the message ended, a continuation is again out of place, a new message fine.
  CHECK(error_of(encode(start) + encode(fin) + encode(cont), o) == 1002);
  CHECK(error_of(
            encode(start) + encode(fin) + encode({.b0 = 0x81}) + encode({.b0 = 0x02}) + encode(fin),
            o) == 0);
}

TEST_CASE("parser: max_frame_size is 1009, reported as soon as the header arrives") {
  parser_options o = client_opts();
  o.max_frame_size = 1000;
  CHECK(error_of(encode({.b0 = 0x82, .length = 1000, .payload = std::string(1000, 'x')}), o) == 0);
  std::string what;
  // Only the header is given: the payload is never waited for.
  CHECK(error_of(encode({.b0 = 0x82, .length = 1001}), o, &what) == 1009);
  CHECK(what.find("max_frame_size") != std::string::npos);
  o.max_frame_size = 10;
  CHECK(error_of(encode({.b0 = 0x82, .length = 11}), o) == 1009);
  CHECK(error_of(encode({.b0 = 0x82, .length = 10, .payload = "0123456789"}), o) == 0);
  // A protocol error in the same header wins (found in the first two bytes).
  CHECK(error_of(encode({.b0 = 0x83, .length = 11}), o) == 1002);
}

TEST_CASE("parser: an error is final until reset(); events before it are delivered") {
  frame_parser p(client_opts());
  std::string buf = encode({.b0 = 0x81, .length = 2, .payload = "ok"}) + encode({.b0 = 0x83});
  std::vector<kind> seen;
  std::size_t pos = 0;
  frame_event ev;
  while (true) {
    pos += p.parse(buf.data() + pos, buf.size() - pos, ev);
    if (ev.type == kind::none || ev.type == kind::error) break;
    seen.push_back(ev.type);
  }
  CHECK(seen == std::vector<kind>{kind::header, kind::payload, kind::end});
  REQUIRE(ev.type == kind::error);
  CHECK(ev.close == 1002);
  std::string good = encode({.b0 = 0x81});
  for (int again = 0; again < 3; ++again) {
    CHECK(p.parse(good.data(), good.size(), ev) == 0);
    CHECK(ev.type == kind::error);
    CHECK(ev.close == 1002);
  }
  p.reset();
  CHECK(p.parse(good.data(), good.size(), ev) == 2);
  CHECK(ev.type == kind::header);
  // reset() also forgets an open fragmented message, and keeps the options.
  frame_parser q(client_opts());
  std::string start = encode({.b0 = 0x01});
  q.parse(start.data(), start.size(), ev);
  q.parse(nullptr, 0, ev);
  q.reset();
  CHECK(q.options().side == role::client);
  std::string cont = encode({.b0 = 0x80});
  q.parse(cont.data(), cont.size(), ev);
  CHECK(ev.type == kind::error);
}

TEST_CASE("parser: random and mutated streams give the same events however they are split") {
  std::mt19937 rng(2024);
  for (int iter = 0; iter < 3000; ++iter) {
    std::string s;
    const int frames = 1 + rng() % 4;
    for (int i = 0; i < frames; ++i) {
      raw_frame f;
      f.b0 = static_cast<int>(rng() & 0xFF);
      const std::size_t n = rng() % 3 == 0 ? rng() % 300 : rng() % 10;
      f.length = n;
      f.payload = pattern(n, rng());
      f.masked = rng() & 1;
      f.key = static_cast<std::uint32_t>(rng());
      if (rng() % 8 == 0) f.len_bytes = (rng() & 1) ? 2 : 8;
      s += encode(f);
    }
    if (rng() % 4 == 0 && !s.empty()) s.resize(rng() % s.size());  // cut short
    if (rng() % 4 == 0 && !s.empty()) s[rng() % s.size()] ^= static_cast<char>(1 << (rng() % 8));
    parser_options o = (rng() & 1) ? server_opts(rng() & 1) : client_opts(rng() & 1);
    if (rng() % 3 == 0) o.max_frame_size = rng() % 200;
    run_result whole = run(s, o);
    run_result bytewise = run(s, o, {1});
    std::vector<std::size_t> cut{1 + rng() % 9, 1 + rng() % 9, 1 + rng() % 50};
    run_result pieces = run(s, o, cut);
    REQUIRE(whole.zero_copy);
    REQUIRE(bytewise.zero_copy);
    REQUIRE(whole.none_used_all);
    REQUIRE(bytewise.none_used_all);
    REQUIRE(bytewise.events == whole.events);
    REQUIRE(pieces.events == whole.events);
  }
}

// --- Writing headers -----------------------------------------------------------------------------

TEST_CASE("write_frame_header: 2, 4 or 10 bytes of length, plus the key; parses back") {
  struct row {
    std::uint64_t size;
    std::size_t len;
  };
  const row rows[] = {{0, 2},
                      {1, 2},
                      {125, 2},
                      {126, 4},
                      {127, 4},
                      {65535, 4},
                      {65536, 10},
                      {std::uint64_t{1} << 32, 10},
                      {(std::uint64_t{1} << 63) - 1, 10}};
  for (const row& r : rows) {
    for (bool masked : {false, true}) {
      for (bool rsv1 : {false, true}) {
        for (opcode op : {opcode::text, opcode::binary, opcode::continuation}) {
          CAPTURE(r.size);
          const std::uint32_t key = 0xCAFEF00D;
          char out[14];
          const std::size_t n =
              write_frame_header(out, op, true, rsv1, r.size, masked ? &key : nullptr);
          CHECK(n == r.len + (masked ? 4 : 0));
          parser_options o = masked ? server_opts(true) : client_opts(true);
          o.max_frame_size = UINT64_MAX;
          std::string prefix =
              op == opcode::continuation ? encode({.b0 = 0x02, .masked = masked}) : "";
          auto ev = run_all_ways(prefix + std::string(out, n), o);
          REQUIRE(!ev.empty());
          const rec& h = ev.back().type == kind::header ? ev.back() : ev[ev.size() - 2];
          if (rsv1 && op == opcode::continuation) {
            CHECK(ev.back().type == kind::error);  // rsv1 is only for a first frame
            continue;
          }
          CHECK(h.type == kind::header);
          CHECK(h.size == r.size);
          CHECK(h.op == op);
          CHECK(h.rsv1 == rsv1);
          CHECK(h.fin);
        }
      }
    }
  }
  // Exactly the RFC's bytes: masked "Hello", and a non-final ping.
  const std::uint32_t key = 0x37fa213d;
  char out[14];
  CHECK(std::string(out, write_frame_header(out, opcode::text, true, false, 5, &key)) ==
        bytes({0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d}));
  CHECK(std::string(out, write_frame_header(out, opcode::binary, false, true, 256)) ==
        bytes({0x42, 0x7E, 0x01, 0x00}));
  CHECK(std::string(out, write_frame_header(out, opcode::binary, true, false, 65536)) ==
        bytes({0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0}));
}

TEST_CASE("write_frame_header + apply_mask: a client frame a server parses back") {
  for (std::size_t n : {0u, 1u, 5u, 125u, 126u, 1000u, 65536u}) {
    const std::string payload = pattern(n, static_cast<unsigned>(n));
    const std::uint32_t key = 0x9A8B7C6D ^ static_cast<std::uint32_t>(n);
    char h[14];
    std::string wire(h, write_frame_header(h, opcode::binary, true, false, n, &key));
    std::string body = payload;
    apply_mask(body.data(), body.size(), key);
    wire += body;
    std::vector<rec> want;
    expect_frame(want, opcode::binary, true, payload);
    CHECK(run(wire, server_opts()).events == want);
  }
}

// --- UTF-8 ---------------------------------------------------------------------------------------

// The position of the first byte after which `s` cannot be the start of valid UTF-8, or npos
// when it can. Written from RFC 3629's table, independently of the validator.
std::size_t utf8_ref_fail(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const unsigned b = static_cast<unsigned char>(s[i]);
    if (b < 0x80) {
      ++i;
      continue;
    }
    std::size_t len;
    unsigned lo = 0x80, hi = 0xBF;  // the range of the second byte
    if (b >= 0xC2 && b <= 0xDF)
      len = 2;
    else if (b == 0xE0)
      len = 3, lo = 0xA0;
    else if (b >= 0xE1 && b <= 0xEC)
      len = 3;
    else if (b == 0xED)
      len = 3, hi = 0x9F;
    else if (b >= 0xEE && b <= 0xEF)
      len = 3;
    else if (b == 0xF0)
      len = 4, lo = 0x90;
    else if (b >= 0xF1 && b <= 0xF3)
      len = 4;
    else if (b == 0xF4)
      len = 4, hi = 0x8F;
    else
      return i;
    for (std::size_t k = 1; k < len; ++k) {
      if (i + k >= s.size()) return std::string_view::npos;  // truncated: still a prefix
      const unsigned c = static_cast<unsigned char>(s[i + k]);
      if (k == 1 ? (c < lo || c > hi) : (c < 0x80 || c > 0xBF)) return i + k;
    }
    i += len;
  }
  return std::string_view::npos;
}

bool utf8_ref_complete(std::string_view s) {
  if (utf8_ref_fail(s) != std::string_view::npos) return false;
  // Complete when not ending inside a sequence: the last lead byte's sequence fits.
  std::size_t i = 0;
  while (i < s.size()) {
    const unsigned b = static_cast<unsigned char>(s[i]);
    const std::size_t len = b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
    if (i + len > s.size()) return false;
    i += len;
  }
  return true;
}

// Feeds a byte at a time: the index of the first byte feed() refused, or npos.
std::size_t fail_position(std::string_view s) {
  utf8_validator v;
  for (std::size_t i = 0; i < s.size(); ++i)
    if (!v.feed(s.substr(i, 1))) return i;
  return std::string_view::npos;
}

bool valid_whole(std::string_view s) {
  utf8_validator v;
  return v.feed(s) && v.complete();
}

std::string encode_utf8(std::uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    s.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    s.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    s.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    s.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    s.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
  return s;
}

TEST_CASE("utf8: valid text (Autobahn 6.2, 6.3, 6.5, 6.6, 6.7, 6.8, 6.22, 6.23)") {
  const std::string kosme = "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5";  // κόσμε
  const std::string valid[] = {
      "",
      "Hello-\xc2\xb5@\xc3\x9f\xc3\xb6\xc3\xa4\xc3\xbc\xc3\xa0\xc3\xa1-UTF-8!!",
      kosme,
      "\xc2\x80",            // U+0080, first 2-byte
      "\xe0\xa0\x80",        // U+0800, first 3-byte
      "\xf0\x90\x80\x80",    // U+10000, first 4-byte
      "\x7f",                // last 1-byte
      "\xdf\xbf",            // U+07FF
      "\xef\xbf\xbf",        // U+FFFF (a noncharacter, but valid UTF-8)
      "\xf4\x8f\xbf\xbf",    // U+10FFFF, the last code point
      "\xed\x9f\xbf",        // U+D7FF, just below the surrogates
      "\xee\x80\x80",        // U+E000, just above
      "\xef\xbf\xbd",        // U+FFFD
      "\xef\xbf\xbe",        // U+FFFE
      "\xf3\xbf\xbf\xbf",    // U+FFFFF
      std::string(1, '\0'),  // NUL is valid text
  };
  for (const std::string& s : valid) {
    CAPTURE(s);
    CHECK(valid_whole(s));
    CHECK(fail_position(s) == std::string_view::npos);
  }
  // Every code point but the surrogates, one at a time and all in one long text.
  std::string all;
  for (std::uint32_t cp = 0; cp <= 0x10FFFF; ++cp) {
    if (cp >= 0xD800 && cp <= 0xDFFF) continue;
    std::string e = encode_utf8(cp);
    utf8_validator v;
    if (!v.feed(e) || !v.complete()) FAIL("U+" << std::hex << cp << " refused");
    all += e;
  }
  CHECK(valid_whole(all));
  for (std::uint32_t cp = 0xD800; cp <= 0xDFFF; ++cp) {
    if (valid_whole(encode_utf8(cp))) FAIL("surrogate U+" << std::hex << cp << " accepted");
  }
}

TEST_CASE("utf8: invalid text fails fast, at the first byte that makes it invalid") {
  const std::string kosme = "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5";
  struct row {
    std::string text;
    std::size_t at;  // the byte feed() must refuse
  };
  const row rows[] = {
      // 6.3.1, 6.4.x: κόσμε then an invalid sequence then "edited": refused inside, not at the end.
      {kosme + "\xed\xa0\x80" + "edited", 12},
      {kosme + "\xf4\x90\x80\x80" + "edited", 12},
      {kosme + "\x80" + "edited", 11},
      {"\xf4\x90\x80\x80", 1},          // 6.4.2: U+110000
      {"\xf5\x80\x80\x80", 0},          // beyond F4
      {"\xf8\x88\x80\x80\x80", 0},      // 6.8: 5-byte forms
      {"\xfc\x84\x80\x80\x80\x80", 0},  // 6-byte forms
      {"\xfe", 0},
      {"\xff", 0},
      {"\xfe\xfe\xff\xff", 0},
      {"\x80", 0},  // 6.9: lone continuation bytes
      {"\xbf", 0},
      {"\x80\xbf\x80", 0},
      {"a\x80", 1},
      {"\xc0\xaf", 0},  // 6.10/6.11: overlongs
      {"\xc1\xbf", 0},
      {"\xe0\x80\xaf", 1},
      {"\xe0\x9f\xbf", 1},
      {"\xf0\x80\x80\xaf", 1},
      {"\xf0\x8f\xbf\xbf", 1},
      {"\xc0\x80", 0},  // overlong NUL
      {"\xe0\x80\x80", 1},
      {"\xf0\x80\x80\x80", 1},
      {"\xed\xa0\x80", 1},  // 6.12/6.13: surrogates, single and paired
      {"\xed\xad\xbf", 1},
      {"\xed\xbf\xbf", 1},
      {"\xed\xa0\x80\xed\xb0\x80", 1},
      {"\xc2\x41", 1},  // 6.14: a lead byte without its continuation
      {"\xe1\x80\x41", 2},
      {"\xf1\x80\x80\x41", 3},
      {"\xc2\xc2\x80", 1},
      {"\xe1\xe1\x80\x80", 1},
      {"a\xc2", std::string_view::npos},  // truncated at the end: not (yet) an error
  };
  for (const row& r : rows) {
    CAPTURE(r.text);
    CHECK(fail_position(r.text) == r.at);
    CHECK(utf8_ref_fail(r.text) == r.at);  // (the reference agrees)
    if (r.at != std::string_view::npos) {
      CHECK_FALSE(valid_whole(r.text));
      utf8_validator v;
      CHECK(v.feed(r.text.substr(0, r.at)));  // everything before it was fine
      CHECK_FALSE(v.feed(r.text.substr(r.at)));
      CHECK_FALSE(v.feed("more"));  // stays failed
    }
  }
}

TEST_CASE("utf8: text ending inside a character is incomplete (6.3.2, 6.14)") {
  for (std::string s :
       {"\xc2"s, "\xe1\x80"s, "\xe0\xa0"s, "\xf0\x90\x80"s, "\xf4"s, "ok \xce\xba\xe1\xbd"s}) {
    CAPTURE(s);
    utf8_validator v;
    CHECK(v.feed(s));
    CHECK_FALSE(v.complete());
  }
  // Completed in the next fragment.
  utf8_validator v;
  CHECK(v.feed("\xf0\x90"));
  CHECK_FALSE(v.complete());
  CHECK(v.feed("\x80"));
  CHECK(v.feed("\x80"));
  CHECK(v.complete());
  v.feed("\xff");
  CHECK_FALSE(v.feed("a"));
  v.reset();
  CHECK(v.feed("a"));
  CHECK(v.complete());
}

TEST_CASE("utf8: every 1-, 2- and 3-byte sequence and the 4-byte leads against the reference") {
  std::string s(4, '\0');
  for (int a = 0; a < 256; ++a) {
    for (int b = 0; b < 256; ++b) {
      const std::string_view two(s.data(), 2);
      s[0] = static_cast<char>(a);
      s[1] = static_cast<char>(b);
      if (fail_position(two) != utf8_ref_fail(two) || valid_whole(two) != utf8_ref_complete(two))
        FAIL(std::hex << a << " " << b);
      if (a >= 0xE0 && a <= 0xF7) {
        for (int c = 0; c < 256; ++c) {
          s[2] = static_cast<char>(c);
          const std::string_view three(s.data(), 3);
          utf8_validator v;
          const bool fed = v.feed(three);
          if (fed != (utf8_ref_fail(three) == std::string_view::npos) ||
              (fed && v.complete() != utf8_ref_complete(three)))
            FAIL(std::hex << a << " " << b << " " << c);
          if (a >= 0xF0 && (c == 0x7F || c == 0x80 || c == 0xBF || c == 0xC0)) {
            for (int d : {0x00, 0x7F, 0x80, 0x9F, 0xA0, 0xBF, 0xC0, 0xFF}) {
              s[3] = static_cast<char>(d);
              const std::string_view four(s.data(), 4);
              if (valid_whole(four) != utf8_ref_complete(four) ||
                  fail_position(four) != utf8_ref_fail(four))
                FAIL(std::hex << a << " " << b << " " << c << " " << d);
            }
          }
        }
      }
    }
  }
}

TEST_CASE("utf8: the ASCII fast path notices a bad or multi-byte character at any position") {
  for (std::size_t len : {8u, 15u, 16u, 17u, 31u, 64u, 100u}) {
    for (std::size_t at = 0; at < len; ++at) {
      std::string s(len, 'a');
      s[at] = '\x80';
      CHECK(fail_position(s) == at);
      utf8_validator v;
      CHECK_FALSE(v.feed(s));
      std::string t(len, 'b');
      t.insert(at, "\xe2\x82\xac");  // €
      CHECK(valid_whole(t));
      std::string u(len, 'c');
      u.insert(at, "\xe2\x82");  // € cut short, then ASCII
      CHECK(fail_position(u) == at + 2);
      CHECK_FALSE(valid_whole(u));
    }
  }
}

TEST_CASE("utf8: incremental feeding agrees with whole feeding at every split") {
  std::mt19937 rng(5);
  const std::string pieces[] = {
      "a",        "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80", "\x80", "\xed\xa0\x80",
      "\xf4\x90", "\xc0",     "hello world, "};
  for (int iter = 0; iter < 2000; ++iter) {
    std::string s;
    const int n = rng() % 12;
    for (int i = 0; i < n; ++i) {
      // Mostly valid pieces, sometimes a bad one.
      std::size_t k = rng() % 10 < 8 ? (rng() % 4 == 0 ? 8 : rng() % 4) : 4 + rng() % 4;
      s += pieces[k];
    }
    const bool whole_ok = valid_whole(s);
    CHECK(whole_ok == utf8_ref_complete(s));
    for (std::size_t a = 0; a <= s.size(); ++a) {
      utf8_validator v;
      const bool fed = v.feed(s.substr(0, a)) && v.feed(s.substr(a));
      if ((fed && v.complete()) != whole_ok) FAIL("split at " << a << " of " << s.size());
    }
  }
}

// --- permessage-deflate negotiation --------------------------------------------------------------

struct offer_row {
  const char* request;
  deflate_params allowed;
  bool accepted;
  deflate_params agreed;
  const char* response;
};

bool same(const deflate_params& a, const deflate_params& b) {
  return a.server_no_context_takeover == b.server_no_context_takeover &&
         a.client_no_context_takeover == b.client_no_context_takeover &&
         a.server_max_window_bits == b.server_max_window_bits &&
         a.client_max_window_bits == b.client_max_window_bits;
}

TEST_CASE("negotiate_deflate: offers against what the server allows") {
  const deflate_params any{};
  const deflate_params snct{.server_no_context_takeover = true};
  const deflate_params cnct{.client_no_context_takeover = true};
  const deflate_params s10{.server_max_window_bits = 10};
  const deflate_params c10{.client_max_window_bits = 10};
  const offer_row rows[] = {
      {"permessage-deflate", any, true, {}, "permessage-deflate"},
      {"permessage-deflate; client_max_window_bits", any, true, {}, "permessage-deflate"},
      {"PerMessage-Deflate", any, true, {}, "permessage-deflate"},
      {"permessage-deflate;server_no_context_takeover", any, true, snct,
       "permessage-deflate; server_no_context_takeover"},
      {"permessage-deflate ; client_no_context_takeover", any, true, cnct,
       "permessage-deflate; client_no_context_takeover"},
      {"permessage-deflate; server_max_window_bits=10", any, true, s10,
       "permessage-deflate; server_max_window_bits=10"},
      {"permessage-deflate; server_max_window_bits=\"10\"", any, true, s10,
       "permessage-deflate; server_max_window_bits=10"},
      {"permessage-deflate; server_max_window_bits=\"1\\0\"", any, true, s10,
       "permessage-deflate; server_max_window_bits=10"},  // a quoted-pair
      {"permessage-deflate; server_max_window_bits=15",
       any,
       true,
       {},
       "permessage-deflate; server_max_window_bits=15"},
      {"permessage-deflate; client_max_window_bits=10", any, true, c10,
       "permessage-deflate; client_max_window_bits=10"},
      {"permessage-deflate; server_max_window_bits=8",
       any,
       true,
       {.server_max_window_bits = 8},
       "permessage-deflate; server_max_window_bits=8"},
      {"permessage-deflate; client_max_window_bits=8; server_max_window_bits=9",
       any,
       true,
       {.server_max_window_bits = 9, .client_max_window_bits = 8},
       "permessage-deflate; server_max_window_bits=9; client_max_window_bits=8"},
      {"permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
       "server_max_window_bits=12; client_max_window_bits=11",
       any,
       true,
       {true, true, 12, 11},
       "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
       "server_max_window_bits=12; client_max_window_bits=11"},
      // Other extensions are skipped; an unacceptable offer gives way to the next one.
      {"x-webkit-deflate-frame, permessage-deflate", any, true, {}, "permessage-deflate"},
      {"permessage-deflate; foo, permessage-deflate; server_no_context_takeover", any, true, snct,
       "permessage-deflate; server_no_context_takeover"},
      {"permessage-deflate; server_max_window_bits=16, permessage-deflate",
       any,
       true,
       {},
       "permessage-deflate"},
      {"permessage-deflate; server_max_window_bits, permessage-deflate; "
       "server_max_window_bits=11",
       any,
       true,
       {.server_max_window_bits = 11},
       "permessage-deflate; server_max_window_bits=11"},
      {"permessage-deflate,, permessage-deflate", any, true, {}, "permessage-deflate"},
      // Unacceptable offers.
      {"", any, false, {}, ""},
      {"x-webkit-deflate-frame", any, false, {}, ""},
      {"permessage-deflate; server_max_window_bits", any, false, {}, ""},  // needs a value
      {"permessage-deflate; server_max_window_bits=7", any, false, {}, ""},
      {"permessage-deflate; server_max_window_bits=16", any, false, {}, ""},
      {"permessage-deflate; server_max_window_bits=08", any, false, {}, ""},
      {"permessage-deflate; server_max_window_bits=+9", any, false, {}, ""},
      {"permessage-deflate; server_max_window_bits=abc", any, false, {}, ""},
      {"permessage-deflate; client_max_window_bits=0", any, false, {}, ""},
      {"permessage-deflate; client_max_window_bits=\"\"", any, false, {}, ""},
      {"permessage-deflate; server_no_context_takeover=1", any, false, {}, ""},
      {"permessage-deflate; server_no_context_takeover; server_no_context_takeover",
       any,
       false,
       {},
       ""},
      {"permessage-deflate; client_max_window_bits; client_max_window_bits=10", any, false, {}, ""},
      {"permessage-deflate; server_max_window_bits=10; server_max_window_bits=10",
       any,
       false,
       {},
       ""},
      {"permessage-deflate; x=y", any, false, {}, ""},
      // Malformed: the extension is not used at all.
      {"permessage-deflate; server_max_window_bits=\"10", any, false, {}, ""},
      {"permessage-deflate;", any, false, {}, ""},
      {"permessage-deflate; =10", any, false, {}, ""},
      {"permessage-deflate client_max_window_bits", any, false, {}, ""},
      {"permessage-deflate; server_max_window_bits=", any, false, {}, ""},
      {";permessage-deflate", any, false, {}, ""},
      {"permessage-deflate, permessage-deflate; a=\"b", any, false, {}, ""},
      // The server's own requirements.
      {"permessage-deflate", snct, true, snct, "permessage-deflate; server_no_context_takeover"},
      {"permessage-deflate", cnct, true, cnct, "permessage-deflate; client_no_context_takeover"},
      {"permessage-deflate", s10, true, s10, "permessage-deflate; server_max_window_bits=10"},
      {"permessage-deflate; server_max_window_bits=12", s10, true, s10,
       "permessage-deflate; server_max_window_bits=10"},
      {"permessage-deflate; server_max_window_bits=9",
       s10,
       true,
       {.server_max_window_bits = 9},
       "permessage-deflate; server_max_window_bits=9"},
      {"permessage-deflate; client_max_window_bits", c10, true, c10,
       "permessage-deflate; client_max_window_bits=10"},
      {"permessage-deflate; client_max_window_bits=12", c10, true, c10,
       "permessage-deflate; client_max_window_bits=10"},
      {"permessage-deflate; client_max_window_bits=9",
       c10,
       true,
       {.client_max_window_bits = 9},
       "permessage-deflate; client_max_window_bits=9"},
      {"permessage-deflate", c10, false, {}, ""},  // the client cannot take a cap
      {"permessage-deflate, permessage-deflate; client_max_window_bits", c10, true, c10,
       "permessage-deflate; client_max_window_bits=10"},
  };
  for (const offer_row& r : rows) {
    CAPTURE(r.request);
    deflate_params agreed{.server_max_window_bits = 3};
    std::string response = "untouched";
    const bool ok = negotiate_deflate(r.request, r.allowed, agreed, response);
    CHECK(ok == r.accepted);
    if (ok && r.accepted) {
      CHECK(same(agreed, r.agreed));
      CHECK(response == r.response);
    }
  }
}

TEST_CASE("deflate_offer and accept_deflate_response (client side)") {
  CHECK(deflate_offer({}) == "permessage-deflate; client_max_window_bits");
  CHECK(deflate_offer({true, true, 10, 9}) ==
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
        "server_max_window_bits=10; client_max_window_bits=9");
  struct row {
    const char* response;
    deflate_params offered;
    bool ok;
    deflate_params agreed;
  };
  const deflate_params d{};
  const row rows[] = {
      {"permessage-deflate", d, true, {}},
      {"permessage-deflate; server_no_context_takeover",
       d,
       true,
       {.server_no_context_takeover = true}},
      {"permessage-deflate; client_no_context_takeover",
       d,
       true,
       {.client_no_context_takeover = true}},
      {"permessage-deflate",
       {.client_no_context_takeover = true},
       true,
       {.client_no_context_takeover = true}},
      {"permessage-deflate; server_max_window_bits=10", d, true, {.server_max_window_bits = 10}},
      {"permessage-deflate; client_max_window_bits=9", d, true, {.client_max_window_bits = 9}},
      {"permessage-deflate; client_max_window_bits=\"9\"", d, true, {.client_max_window_bits = 9}},
      {"permessage-deflate", {.client_max_window_bits = 11}, true, {.client_max_window_bits = 11}},
      {"permessage-deflate; server_max_window_bits=9",
       {.server_max_window_bits = 10},
       true,
       {.server_max_window_bits = 9}},
      // Not acceptable: wider than offered, bad values, unknown or repeated parameters, other
      // or several extensions, nothing at all.
      {"permessage-deflate; server_max_window_bits=12", {.server_max_window_bits = 10}, false, {}},
      {"permessage-deflate; client_max_window_bits=12", {.client_max_window_bits = 10}, false, {}},
      {"permessage-deflate; client_max_window_bits", d, false, {}},
      {"permessage-deflate; server_max_window_bits=7", d, false, {}},
      {"permessage-deflate; server_max_window_bits", d, false, {}},
      {"permessage-deflate; foo", d, false, {}},
      {"permessage-deflate; server_no_context_takeover; server_no_context_takeover", d, false, {}},
      {"permessage-deflate, permessage-deflate", d, false, {}},
      {"x-webkit-deflate-frame", d, false, {}},
      {"permessage-deflate, x-foo", d, false, {}},
      {"", d, false, {}},
      {"permessage-deflate; server_max_window_bits=\"10", d, false, {}},
  };
  for (const row& r : rows) {
    CAPTURE(r.response);
    deflate_params agreed;
    const bool ok = accept_deflate_response(r.response, r.offered, agreed);
    CHECK(ok == r.ok);
    if (ok && r.ok) CHECK(same(agreed, r.agreed));
  }
}

TEST_CASE("deflate negotiation end to end: both sides agree on the same parameters") {
  const deflate_params wants[] = {
      {}, {true, false, 15, 15}, {false, true, 12, 15}, {true, true, 9, 10}, {false, false, 8, 8}};
  const deflate_params allows[] = {
      {}, {true, true, 15, 15}, {false, false, 10, 11}, {false, false, 15, 9}};
  for (const deflate_params& w : wants) {
    for (const deflate_params& a : allows) {
      deflate_params server_side, client_side;
      std::string response;
      REQUIRE(negotiate_deflate(deflate_offer(w), a, server_side, response));
      REQUIRE(accept_deflate_response(response, w, client_side));
      CHECK(same(server_side, client_side));
      CHECK(server_side.server_max_window_bits <=
            std::min(w.server_max_window_bits, a.server_max_window_bits));
      CHECK(server_side.client_max_window_bits <=
            std::min(w.client_max_window_bits, a.client_max_window_bits));
    }
  }
}

// --- permessage-deflate compression --------------------------------------------------------------

std::string compress(message_deflater& d, std::string_view m) {
  std::string out;
  d.compress(m, out);
  return out;
}

bool inflate_all(message_inflater& inf, std::string_view data, std::string& out,
                 std::size_t max_size = SIZE_MAX) {
  return inf.decompress(data, true, out, max_size);
}

std::string text_corpus(std::size_t n, unsigned seed = 1) {
  static const char* words[] = {"socket ", "frame ",   "mask ",    "deflate ", "window ",
                                "squall ", "tornado ", "message ", "close ",   "ping "};
  std::mt19937 rng(seed);
  std::string s;
  while (s.size() < n)
    s += words[rng() % 10];
  s.resize(n);
  return s;
}

TEST_CASE("deflate: round trips of many messages, both directions, pieces of every size") {
  const deflate_params p{};
  message_deflater server_out(p, role::server), client_out(p, role::client);
  message_inflater client_in(p, role::client), server_in(p, role::server);
  const std::string messages[] = {"",
                                  "a",
                                  "Hello",
                                  text_corpus(1000),
                                  pattern(65536),
                                  text_corpus(1 << 20, 2),
                                  std::string(100000, '\0'),
                                  ""};
  for (const std::string& m : messages) {
    CAPTURE(m.size());
    std::string z = compress(server_out, m);
    std::string back;
    CHECK(inflate_all(client_in, z, back));
    CHECK(back == m);
    z = compress(client_out, m);
    // The other way, in pieces of 1, 2, 3, ... bytes.
    std::string pieced;
    std::size_t step = 1, pos = 0;
    bool ok = true;
    while (pos + step < z.size()) {
      ok = ok &&
           server_in.decompress(std::string_view(z).substr(pos, step), false, pieced, SIZE_MAX);
      pos += step;
      step = step % 50 + 1;
    }
    ok = ok && server_in.decompress(std::string_view(z).substr(pos), true, pieced, SIZE_MAX);
    CHECK(ok);
    CHECK(pieced == m);
  }
}

TEST_CASE("deflate: an empty message compresses to a single 00 byte (RFC 7692 7.2.3.6)") {
  message_deflater d({}, role::server);
  message_inflater i({}, role::client);
  CHECK(compress(d, "") == bytes({0x00}));
  // Also after other messages (zlib alone would write nothing for a second flush in a row),
  // twice in a row, and without context takeover.
  std::string out;
  CHECK(inflate_all(i, compress(d, "Hello"), out));
  CHECK(compress(d, "") == bytes({0x00}));
  CHECK(compress(d, "") == bytes({0x00}));
  message_deflater t({.server_no_context_takeover = true}, role::server);
  CHECK(compress(t, "abc") != "");
  CHECK(compress(t, "") == bytes({0x00}));
  out = "x";
  CHECK(inflate_all(i, bytes({0x00}), out));
  CHECK(out == "x");  // appended to, nothing added
  CHECK(inflate_all(i, compress(d, "Hello"), out));
  CHECK(out == "xHello");
  // A peer that sends nothing at all for an empty message is understood too.
  out.clear();
  CHECK(inflate_all(i, "", out));
  CHECK(out.empty());
  CHECK(i.decompress("", false, out, SIZE_MAX));
  CHECK(i.decompress("", true, out, SIZE_MAX));
  CHECK(inflate_all(i, compress(d, "again"), out));
  CHECK(out == "again");
}

TEST_CASE("deflate: the RFC 7692 7.2.3 examples decompress") {
  SUBCASE("7.2.3.1: \"Hello\", and 7.2.3.2: sharing the window across messages") {
    message_inflater i({}, role::client);
    std::string out;
    CHECK(inflate_all(i, bytes({0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00}), out));
    CHECK(out == "Hello");
    out.clear();
    CHECK(inflate_all(i, bytes({0xf2, 0x00, 0x11, 0x00, 0x00}), out));
    CHECK(out == "Hello");
  }
  SUBCASE("7.2.3.1 in two fragments") {
    message_inflater i({}, role::client);
    std::string out;
    CHECK(i.decompress(bytes({0xf2, 0x48, 0xcd}), false, out, SIZE_MAX));
    CHECK(i.decompress(bytes({0xc9, 0xc9, 0x07, 0x00}), true, out, SIZE_MAX));
    CHECK(out == "Hello");
  }
  SUBCASE("7.2.3.4: a stored (uncompressed) block") {
    message_inflater i({}, role::client);
    std::string out;
    CHECK(inflate_all(i, bytes({0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00}),
                      out));
    CHECK(out == "Hello");
  }
  SUBCASE("7.2.3.3: a block with BFINAL set, then a message compressed afresh") {
    // "Hello" as a final fixed-Huffman block, as a compressor that finishes its stream sends it.
    message_inflater i({.server_no_context_takeover = true}, role::client);
    std::string out;
    CHECK(inflate_all(i, bytes({0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00}), out));
    CHECK(out == "Hello");
    out.clear();
    CHECK(inflate_all(i, bytes({0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00}), out));
    CHECK(out == "Hello");
    // With context takeover the window survives the end of that stream: the RFC's second
    // "Hello" (a back-reference to the first) still decodes.
    message_inflater k({}, role::client);
    out.clear();
    CHECK(inflate_all(k, bytes({0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00}), out));
    CHECK(inflate_all(k, bytes({0xf2, 0x00, 0x11, 0x00, 0x00}), out));
    CHECK(out == "HelloHello");
  }
  SUBCASE("our own \"Hello\" is the RFC's") {
    message_deflater d({}, role::server);
    CHECK(compress(d, "Hello") == bytes({0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00}));
  }
}

TEST_CASE("deflate: context takeover makes a repeated message tiny; no_context_takeover not") {
  const std::string m = text_corpus(2000, 7) + pattern(500, 8);
  SUBCASE("takeover") {
    message_deflater d({}, role::server);
    message_inflater i({}, role::client);
    const std::string z1 = compress(d, m), z2 = compress(d, m);
    CHECK(z2.size() * 10 < z1.size());  // the second is mostly one back-reference
    CHECK(z2.size() < 40);
    std::string a, b;
    CHECK(inflate_all(i, z1, a));
    CHECK(inflate_all(i, z2, b));
    CHECK(a == m);
    CHECK(b == m);
  }
  for (role side : {role::server, role::client}) {
    CAPTURE(int(side));
    deflate_params p;
    (side == role::server ? p.server_no_context_takeover : p.client_no_context_takeover) = true;
    message_deflater d(p, side);
    const std::string z1 = compress(d, m), z2 = compress(d, m);
    CHECK(z1 == z2);  // each message starts afresh
    // The peer's inflater, resetting too, and a fresh one: both decode every message.
    message_inflater i(p, side == role::server ? role::client : role::server);
    for (const std::string& z : {z1, z2, z1}) {
      std::string a, b;
      message_inflater fresh(p, side == role::server ? role::client : role::server);
      CHECK(inflate_all(i, z, a));
      CHECK(inflate_all(fresh, z, b));
      CHECK(a == m);
      CHECK(b == m);
    }
  }
  SUBCASE("the other side's flag does not reset this side") {
    message_deflater d({.client_no_context_takeover = true}, role::server);
    const std::string z1 = compress(d, m), z2 = compress(d, m);
    CHECK(z2.size() * 10 < z1.size());
  }
}

// Inflates raw deflate data with exactly `bits` of window: fails on a distance beyond it. zlib
// checks distances against its window only for data from earlier inflate() calls, so this one
// takes a byte of output per call: every back-reference goes through the window.
bool raw_inflate_with_window(const std::string& z, int bits, std::string& out) {
  z_stream s{};
  if (inflateInit2(&s, -bits) != Z_OK) return false;
  std::string in = z + bytes({0x00, 0x00, 0xff, 0xff});
  s.next_in = reinterpret_cast<Bytef*>(in.data());
  s.avail_in = static_cast<uInt>(in.size());
  int rc = Z_OK;
  while (rc == Z_OK) {
    char c;
    s.next_out = reinterpret_cast<Bytef*>(&c);
    s.avail_out = 1;
    rc = inflate(&s, Z_SYNC_FLUSH);
    if (s.avail_out == 0) out.push_back(c);
    if (s.avail_in == 0 && s.avail_out != 0) break;
  }
  inflateEnd(&s);
  return rc == Z_OK || rc == Z_BUF_ERROR;
}

TEST_CASE("deflate: window bits 8..15 are honoured (8 compresses within 256 bytes)") {
  // A 4 KiB random block repeated: a wide window finds it 4 KiB back, a narrow one cannot.
  const std::string block = pattern(4096, 11);
  const std::string m = block + block + text_corpus(3000, 3) + block;
  for (int bits = 8; bits <= 15; ++bits) {
    CAPTURE(bits);
    for (role side : {role::server, role::client}) {
      deflate_params p;
      (side == role::server ? p.server_max_window_bits : p.client_max_window_bits) = bits;
      message_deflater d(p, side);
      message_inflater i(p, side == role::server ? role::client : role::server);
      for (int round = 0; round < 2; ++round) {  // the second message uses the window too
        const std::string z = compress(d, m);
        std::string back;
        CHECK(inflate_all(i, z, back));
        CHECK(back == m);
        // Decodable with exactly the agreed window: no distance beyond it.
        std::string raw;
        if (round == 0) {
          CHECK(raw_inflate_with_window(z, bits, raw));
          CHECK(raw == m);
        }
        // The random blocks repeat 4 KiB and 7 KiB back: out of reach below 13 bits.
        if (bits <= 12) CHECK(z.size() > 3 * block.size());
        if (bits >= 13 && round == 0) CHECK(z.size() < 8000);
      }
    }
  }
}

TEST_CASE("deflate: invalid data is refused (1007), not reported as too big") {
  message_deflater d({}, role::server);
  const std::string good = compress(d, text_corpus(5000));
  SUBCASE("garbage") {
    message_inflater i({}, role::client);
    std::string out;
    CHECK_FALSE(inflate_all(i, bytes({0xff, 0xff, 0xff, 0xff}), out));
    CHECK_FALSE(i.too_big());
    CHECK_FALSE(i.decompress(good, true, out, SIZE_MAX));  // stays failed
  }
  SUBCASE("a reserved block type") {
    message_inflater i({}, role::client);
    std::string out;
    CHECK_FALSE(inflate_all(i, bytes({0x07}), out));
    CHECK_FALSE(i.too_big());
  }
  SUBCASE("a message cut short ends inside a block") {
    message_inflater i({}, role::client);
    std::string out;
    CHECK_FALSE(inflate_all(i, std::string_view(good).substr(0, good.size() / 2), out));
    CHECK_FALSE(i.too_big());
  }
  SUBCASE("a distance before the start of the data") {
    message_inflater i({}, role::client);
    std::string out;
    // The RFC's second "Hello" (a back-reference) without the first.
    CHECK_FALSE(inflate_all(i, bytes({0xf2, 0x00, 0x11, 0x00, 0x00}), out));
  }
  SUBCASE("the peer resets per message: a reference to the previous one is invalid") {
    message_deflater shared({}, role::server);
    const std::string m = text_corpus(3000, 4);
    const std::string z1 = compress(shared, m), z2 = compress(shared, m);
    message_inflater i({.server_no_context_takeover = true}, role::client);
    std::string out;
    CHECK(inflate_all(i, z1, out));
    CHECK_FALSE(inflate_all(i, z2, out));
  }
}

TEST_CASE("deflate: a zip bomb stops at max_size (1009)") {
  message_deflater d({}, role::client);
  const std::string zeros(16 << 20, '\0');
  const std::string bomb = compress(d, zeros);
  CHECK(bomb.size() < 40000);
  SUBCASE("whole") {
    message_inflater i({}, role::server);
    std::string out;
    CHECK_FALSE(inflate_all(i, bomb, out, 1 << 20));
    CHECK(i.too_big());
    CHECK(out.size() <= (1u << 20));
    CHECK_FALSE(i.decompress("", true, out, SIZE_MAX));  // stays failed
  }
  SUBCASE("in pieces: the limit is for the whole message") {
    message_inflater i({}, role::server);
    std::string out;
    bool ok = true;
    for (std::size_t pos = 0; ok && pos < bomb.size(); pos += 1000)
      ok = i.decompress(std::string_view(bomb).substr(pos, 1000), pos + 1000 >= bomb.size(), out,
                        1 << 20);
    CHECK_FALSE(ok);
    CHECK(i.too_big());
    CHECK(out.size() <= (1u << 20));
  }
  SUBCASE("exactly max_size is fine, and the count starts again for each message") {
    message_deflater e({}, role::client);
    message_inflater i({}, role::server);
    const std::string m(5000, 'z');
    for (int k = 0; k < 3; ++k) {
      std::string out;
      CHECK(inflate_all(i, compress(e, m), out, 5000));
      CHECK(out == m);
      CHECK_FALSE(i.too_big());
    }
    std::string out;
    CHECK_FALSE(inflate_all(i, compress(e, m + "!"), out, 5000));
    CHECK(i.too_big());
  }
}

}  // namespace
