// SPDX-License-Identifier: MIT
// libFuzzer target for the WebSocket wire layer (tests/fuzz/run builds and runs it).
//
// Input: byte 0 picks the options, bytes 1-2 a split point, the rest is the data, used three ways.
// Beyond what the sanitizers catch, it aborts when an invariant breaks:
//   - frame_parser: the whole buffer, two pieces split at the chosen point and a byte at a time
//     give the same events (payload pieces joined per frame); payload views are the bytes given,
//     in place; kind::none uses every byte; a frame's payload adds up to its size, within
//     max_frame_size; rsv1 and fragment order as RFC 6455 and RFC 7692 allow; errors are 1002
//     or 1009 and final; headers written back with
//     write_frame_header have the length the RFC gives;
//   - utf8_validator: whole, split and byte at a time agree with each other and with a
//     reference decoder written from RFC 3629, down to the byte where it fails;
//   - message_inflater: whole and split give the same output when both accept, and the same
//     result with a 15-bit window (see fuzz_deflate for smaller ones); never more than max_size
//     bytes, too_big only when refusing; and message_deflater output inflates back to the data,
//     for the window bits and context takeover chosen.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "squall/websocket/frame.hpp"

using namespace squall::websocket;

namespace {

[[noreturn]] void broken(const char* what) {
  std::fprintf(stderr, "invariant broken: %s\n", what);
  std::abort();
}

void require(bool ok, const char* what) {
  if (!ok) broken(what);
}

// --- frame_parser --------------------------------------------------------------------------------

struct rec {
  frame_event::kind type;
  bool fin, rsv1;
  opcode op;
  std::uint64_t size;
  std::string data;
  std::uint16_t close;
  std::string what;
  bool operator==(const rec&) const = default;
};

// Parses `input` (a copy: it is unmasked in place) fed in pieces of the given sizes, the last
// repeated; a piece size of 0 means the rest.
std::vector<rec> parse_all(std::string input, const parser_options& o,
                           const std::vector<std::size_t>& pieces) {
  std::vector<rec> out;
  frame_parser p(o);
  std::size_t pos = 0, piece = 0;
  std::uint64_t frame_payload = 0;
  bool in_frame = false;
  bool in_message = false;  // a fragmented message is open
  while (true) {
    std::size_t len = input.size() - pos;
    const std::size_t want = pieces[std::min(piece++, pieces.size() - 1)];
    if (want != 0) len = std::min(len, want);
    const std::size_t end = pos + len;
    while (true) {
      frame_event ev;
      char* at = input.data() + pos;
      const std::size_t avail = end - pos;
      const std::size_t used = p.parse(at, avail, ev);
      require(used <= avail, "parse used more than it was given");
      switch (ev.type) {
        case frame_event::kind::none:
          require(used == avail, "none without using every byte");
          pos = end;
          break;
        case frame_event::kind::header:
          require(!in_frame, "header inside a frame");
          require(ev.payload_size <= o.max_frame_size, "frame beyond max_frame_size");
          require(!is_control(ev.op) || (ev.fin && ev.payload_size <= 125),
                  "bad control frame accepted");
          require(!ev.rsv1 || (o.allow_rsv1 && (ev.op == opcode::text || ev.op == opcode::binary)),
                  "rsv1 accepted where it is not allowed");
          if (!is_control(ev.op)) {
            require((ev.op == opcode::continuation) == in_message, "fragments out of order");
            in_message = !ev.fin;
          }
          in_frame = true;
          frame_payload = 0;
          out.push_back({ev.type, ev.fin, ev.rsv1, ev.op, ev.payload_size, {}, 0, {}});
          break;
        case frame_event::kind::payload:
          require(in_frame, "payload outside a frame");
          require(ev.data.data() == at && ev.data.size() == used && used > 0,
                  "payload view is not the bytes given");
          frame_payload += used;
          require(frame_payload <= ev.payload_size, "more payload than the frame has");
          if (out.back().type == frame_event::kind::payload)
            out.back().data.append(ev.data);
          else
            out.push_back(
                {ev.type, ev.fin, ev.rsv1, ev.op, ev.payload_size, std::string(ev.data), 0, {}});
          break;
        case frame_event::kind::end:
          require(in_frame && frame_payload == ev.payload_size, "end before the payload");
          require(used == 0, "end used bytes");
          in_frame = false;
          out.push_back({ev.type, ev.fin, ev.rsv1, ev.op, ev.payload_size, {}, 0, {}});
          break;
        case frame_event::kind::error: {
          require(ev.close == close_code::protocol_error || ev.close == close_code::too_big,
                  "error with an unexpected close code");
          require(ev.what && *ev.what, "error without a reason");
          out.push_back({ev.type, false, false, opcode::continuation, 0, {}, ev.close, ev.what});
          frame_event again;
          char dummy = 0;
          require(p.parse(&dummy, 1, again) == 0 && again.type == frame_event::kind::error &&
                      again.close == ev.close,
                  "error not final");
          return out;
        }
      }
      if (ev.type == frame_event::kind::none) break;
      pos += used;
    }
    if (pos >= input.size()) return out;
  }
}

void check_header_writing(const std::vector<rec>& events) {
  for (const rec& r : events) {
    if (r.type != frame_event::kind::header) continue;
    char out[14];
    const std::uint32_t key = 0x01020304;
    for (const std::uint32_t* k : {static_cast<const std::uint32_t*>(nullptr), &key}) {
      const std::size_t n = write_frame_header(out, r.op, r.fin, r.rsv1, r.size, k);
      const std::size_t len = r.size < 126 ? 2 : r.size <= 0xFFFF ? 4 : 10;
      require(n == len + (k ? 4 : 0), "write_frame_header length");
      // Parsed back (as the first frame of a message, or a control frame), the same header.
      if (r.op == opcode::continuation) continue;
      parser_options o{.side = k ? role::server : role::client,
                       .allow_rsv1 = true,
                       .max_frame_size = UINT64_MAX};
      frame_parser p(o);
      frame_event ev;
      std::string buf(out, n);
      require(p.parse(buf.data(), buf.size(), ev) == n, "written header not parsed whole");
      require(ev.type == frame_event::kind::header && ev.op == r.op && ev.fin == r.fin &&
                  ev.rsv1 == r.rsv1 && ev.payload_size == r.size,
              "written header parsed differently");
    }
  }
}

void fuzz_parser(std::uint8_t options, std::size_t split, std::string_view body) {
  parser_options o;
  o.side = (options & 1) ? role::client : role::server;
  o.allow_rsv1 = options & 2;
  static constexpr std::uint64_t sizes[] = {16 * 1024 * 1024, 0, 125, 1000};
  o.max_frame_size = sizes[(options >> 2) & 3];
  const std::string input(body);
  const auto whole = parse_all(input, o, {0});
  const auto halves = parse_all(input, o, {split, 0});
  require(halves == whole, "split parse differs from whole");
  const auto bytewise = parse_all(input, o, {1});
  require(bytewise == whole, "byte-at-a-time parse differs from whole");
  check_header_writing(whole);
}

// --- UTF-8 ---------------------------------------------------------------------------------------

// The index of the first byte after which `s` cannot begin valid UTF-8; npos if none.
std::size_t utf8_ref_fail(std::string_view s, bool& complete) {
  std::size_t i = 0;
  complete = true;
  while (i < s.size()) {
    const unsigned b = static_cast<unsigned char>(s[i]);
    if (b < 0x80) {
      ++i;
      continue;
    }
    std::size_t len;
    unsigned lo = 0x80, hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF)
      len = 2;
    else if (b == 0xE0)
      len = 3, lo = 0xA0;
    else if ((b >= 0xE1 && b <= 0xEC) || b == 0xEE || b == 0xEF)
      len = 3;
    else if (b == 0xED)
      len = 3, hi = 0x9F;
    else if (b == 0xF0)
      len = 4, lo = 0x90;
    else if (b >= 0xF1 && b <= 0xF3)
      len = 4;
    else if (b == 0xF4)
      len = 4, hi = 0x8F;
    else
      return i;
    for (std::size_t k = 1; k < len; ++k) {
      if (i + k >= s.size()) {
        complete = false;
        return std::string_view::npos;
      }
      const unsigned c = static_cast<unsigned char>(s[i + k]);
      if (k == 1 ? (c < lo || c > hi) : (c < 0x80 || c > 0xBF)) return i + k;
    }
    i += len;
  }
  return std::string_view::npos;
}

void fuzz_utf8(std::size_t split, std::string_view body) {
  bool ref_complete = false;
  const std::size_t ref_fail = utf8_ref_fail(body, ref_complete);
  utf8_validator whole;
  const bool whole_ok = whole.feed(body);
  require(whole_ok == (ref_fail == std::string_view::npos), "utf8: whole disagrees with reference");
  if (whole_ok) require(whole.complete() == ref_complete, "utf8: complete() disagrees");
  utf8_validator halves;
  const bool first = halves.feed(body.substr(0, split));
  require(first == (ref_fail == std::string_view::npos || ref_fail >= split),
          "utf8: first half fails at the wrong place");
  const bool second = halves.feed(body.substr(split));
  require((first && second) == whole_ok, "utf8: split disagrees with whole");
  if (whole_ok) require(halves.complete() == whole.complete(), "utf8: split complete() differs");
  utf8_validator bytes;
  std::size_t fail = std::string_view::npos;
  for (std::size_t i = 0; i < body.size(); ++i) {
    if (!bytes.feed(body.substr(i, 1))) {
      fail = i;
      break;
    }
  }
  require(fail == ref_fail, "utf8: byte-at-a-time fails at the wrong byte");
  if (fail != std::string_view::npos) require(!bytes.feed("a"), "utf8: failure not final");
}

// --- permessage-deflate --------------------------------------------------------------------------

struct inflated {
  bool ok;
  bool too_big;
  std::string out;
  bool operator==(const inflated&) const = default;
};

inflated inflate_pieces(const deflate_params& p, std::string_view data, std::size_t split,
                        std::size_t max_size) {
  message_inflater i(p, role::server);
  inflated r{true, false, "prefix"};
  if (split > 0 && split < data.size()) {
    r.ok = i.decompress(data.substr(0, split), false, r.out, max_size);
    if (r.ok) r.ok = i.decompress(data.substr(split), true, r.out, max_size);
  } else {
    r.ok = i.decompress(data, true, r.out, max_size);
  }
  r.too_big = i.too_big();
  require(r.out.compare(0, 6, "prefix") == 0, "inflate: output before the message touched");
  require(r.out.size() - 6 <= max_size, "inflate: output beyond max_size");
  require(!r.too_big || !r.ok, "inflate: too_big but accepted");
  if (!r.ok) {  // failure is final
    std::string more;
    require(!i.decompress("\x00", true, more, max_size), "inflate: failure not final");
  }
  return r;
}

void fuzz_deflate(std::uint8_t options, std::size_t split, std::string_view body) {
  deflate_params p;
  p.client_max_window_bits = 8 + (options >> 4 & 7);
  p.client_no_context_takeover = options & 0x80;
  static constexpr std::size_t limits[] = {0, 1, 100, 4096};
  const std::size_t max_size = limits[(options >> 2) & 3];
  const inflated whole = inflate_pieces(p, body, 0, max_size);
  const inflated halves = inflate_pieces(p, body, split, max_size);
  if (whole.ok && halves.ok) require(whole.out == halves.out, "inflate: split output differs");
  // Below 15 bits zlib checks distances against the window only for output of earlier inflate()
  // calls, so data that reaches beyond the agreed window (a broken peer) may be refused or not
  // depending on the split. With 15 bits a distance is valid when it is within the output so
  // far, however the input was split.
  if (p.client_max_window_bits == 15)
    require(whole.ok == halves.ok && whole.too_big == halves.too_big,
            "inflate: split result differs from whole");

  // Compressed by the client side, inflated by the server side: the data comes back, twice
  // (the second message uses the context unless no_context_takeover).
  message_deflater d(p, role::client, (options & 3) * 3);
  message_inflater i(p, role::server);
  for (int round = 0; round < 2; ++round) {
    std::string z, back;
    d.compress(body, z);
    const std::size_t half = z.size() / 2;
    require(i.decompress(std::string_view(z).substr(0, half), false, back, body.size()) &&
                i.decompress(std::string_view(z).substr(half), true, back, body.size()),
            "deflate: round trip refused");
    require(back == body, "deflate: round trip changed the data");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 3) return 0;
  const std::uint8_t options = data[0];
  const std::string_view body(reinterpret_cast<const char*>(data + 3), size - 3);
  const std::size_t split = (std::size_t{data[1]} << 8 | data[2]) % (body.size() + 1);
  fuzz_parser(options, split, body);
  fuzz_utf8(split, body);
  fuzz_deflate(options, split, body);
  return 0;
}
