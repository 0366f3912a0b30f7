// SPDX-License-Identifier: MIT
// libFuzzer target for the HTTP/1.1 parser (tests/fuzz/run builds and runs it).
//
// Input: byte 0 picks the limits, byte 1 a split point, the rest is the message. Beyond what the
// sanitizers catch, it aborts when an invariant breaks:
//   - a head parsed from the whole buffer, from a prefix then the whole, and a byte at a time,
//     gives the same result (length, status, every field);
//   - a chunked body decoded whole, in two pieces and a byte at a time gives the same data,
//     status and end;
//   - results stay inside the input and within the limits, and errors use documented statuses.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "squall/http/parser.hpp"

using squall::http::body_framing;
using squall::http::chunked_decoder;
using squall::http::head_parser;
using squall::http::message_head;
using squall::http::parse_error;
using squall::http::parse_limits;

namespace {

[[noreturn]] void broken(const char* what, const std::string& a = {}, const std::string& b = {}) {
  std::fprintf(stderr, "invariant broken: %s\n  %s\n  %s\n", what, a.c_str(), b.c_str());
  std::abort();
}

void require(bool ok, const char* what) {
  if (!ok) broken(what);
}

parse_limits pick_limits(std::uint8_t selector) {
  parse_limits l;
  switch (selector % 4) {
    case 0:
      break;  // the defaults
    case 1:   // small enough for the fuzzer to reach every limit
      l.max_start_line = 16;
      l.max_header_size = 64;
      l.max_headers = 3;
      l.max_body_size = 100;
      l.max_chunk_size = 20;
      break;
    case 2:
      l.max_start_line = 40;
      l.max_header_size = 200;
      l.max_headers = 8;
      l.max_body_size = 1000;
      l.max_chunk_size = 1000;
      break;
    default:  // no body limits: sizes near 2^64
      l.max_body_size = l.max_chunk_size = UINT64_MAX;
      break;
  }
  return l;
}

bool is_view_into(std::string_view part, std::string_view whole) {
  return part.empty() ||
         (part.data() >= whole.data() && part.data() + part.size() <= whole.data() + whole.size());
}

// --- Heads ---------------------------------------------------------------------------------------

struct head_result {
  std::size_t n = 0;
  int status = 0;
  message_head head;
};

std::size_t parse(head_parser& p, bool request, std::string_view buf, message_head& h,
                  parse_error& e) {
  return request ? p.parse_request(buf, h, e) : p.parse_response(buf, h, e);
}

std::string describe(const head_result& r) {
  std::string s = "n=" + std::to_string(r.n) + " status=" + std::to_string(r.status);
  if (r.n == 0) return s;
  const message_head& h = r.head;
  s += " method=" + std::string(h.method) + " target=" + std::string(h.target) +
       " code=" + std::to_string(h.status) + " reason=" + std::string(h.reason) +
       " minor=" + std::to_string(h.minor_version) +
       " framing=" + std::to_string(static_cast<int>(h.framing)) +
       " length=" + std::to_string(h.content_length) + " flags=" + std::to_string(h.keep_alive) +
       std::to_string(h.expect_continue) + std::to_string(h.upgrade);
  for (const auto& f : h.headers)
    s += " [" + std::string(f.name) + "|" + std::string(f.value) + "]";
  return s;
}

void check_head(const head_result& r, std::string_view buf, bool request,
                const parse_limits& limits) {
  switch (r.status) {
    case 0:
    case 400:
    case 413:
    case 414:
    case 431:
    case 501:
    case 505:
      break;
    default:
      broken("undocumented status", std::to_string(r.status));
  }
  require(r.n == 0 || r.status == 0, "a length and an error");
  if (r.n == 0) return;
  require(r.n <= buf.size() && r.n <= limits.max_header_size, "head length");
  require(r.head.headers.size() <= limits.max_headers, "field count");
  std::string_view head = buf.substr(0, r.n);
  require(is_view_into(r.head.method, head) && is_view_into(r.head.target, head) &&
              is_view_into(r.head.reason, head),
          "start line views");
  for (const auto& f : r.head.headers) {
    require(!f.name.empty() && is_view_into(f.name, head) && is_view_into(f.value, head),
            "field views");
  }
  // Requests only: a response's Content-Length is not refused by the parser (a HEAD answer's
  // describes a body that never comes); the client bounds the body as it arrives.
  if (request && r.head.framing == body_framing::content_length) {
    require(r.head.content_length <= limits.max_body_size, "Content-Length over the limit");
  }
}

head_result parse_whole(std::string_view buf, bool request, const parse_limits& limits) {
  head_result r;
  head_parser p(limits);
  parse_error e;
  r.n = parse(p, request, buf, r.head, e);
  r.status = e.status;
  return r;
}

head_result parse_split(std::string_view buf, std::size_t cut, bool request,
                        const parse_limits& limits) {
  head_result r;
  head_parser p(limits);
  parse_error e;
  r.n = parse(p, request, buf.substr(0, cut), r.head, e);
  if (r.n == 0 && !e) r.n = parse(p, request, buf, r.head, e);
  r.status = e.status;
  return r;
}

head_result parse_bytewise(std::string_view buf, bool request, const parse_limits& limits) {
  head_result r;
  head_parser p(limits);
  for (std::size_t len = 1; len <= buf.size(); ++len) {
    parse_error e;
    r.n = parse(p, request, buf.substr(0, len), r.head, e);
    r.status = e.status;
    if (r.n != 0 || e) break;
  }
  return r;
}

head_result check_heads(std::string_view buf, std::size_t cut, bool request,
                        const parse_limits& limits) {
  head_result whole = parse_whole(buf, request, limits);
  check_head(whole, buf, request, limits);
  std::string expected = describe(whole);
  std::string split = describe(parse_split(buf, cut, request, limits));
  if (split != expected) broken("split head differs from whole", split, expected);
  std::string bytewise = describe(parse_bytewise(buf, request, limits));
  if (bytewise != expected) broken("byte-at-a-time head differs from whole", bytewise, expected);
  return whole;
}

// --- Chunked bodies ------------------------------------------------------------------------------

struct body_result {
  std::string data;
  int status = 0;
  bool done = false;
  std::size_t used = 0;
};

std::string describe(const body_result& r) {
  std::string s = "status=" + std::to_string(r.status) + " done=" + std::to_string(r.done) +
                  " data=" + std::to_string(r.data.size()) + ":" + r.data;
  // Where an error stops the caller depends on how the input was split.
  if (r.status == 0) s += " used=" + std::to_string(r.used);
  return s;
}

// Feeds the decoder the way a connection would: all unconsumed bytes each call, `step` more
// whenever it asks for more.
body_result decode(std::string_view in, std::size_t step, const parse_limits& limits) {
  body_result r;
  chunked_decoder d(limits);
  std::size_t avail = std::min(step, in.size()), pos = 0;
  for (;;) {
    std::string_view window = in.substr(pos, avail - pos);
    std::string_view data;
    parse_error e;
    std::size_t n = d.decode(window, data, e);
    if (e) {
      require(e.status == 400 || e.status == 413 || e.status == 431, "decoder status");
      r.status = e.status;
      break;
    }
    require(n <= window.size(), "decoder consumed more than it was given");
    require(is_view_into(data, window.substr(0, n)), "data outside the consumed bytes");
    r.data += data;
    pos += n;
    require(d.body_size() == r.data.size(), "body_size");
    require(d.body_size() <= limits.max_body_size, "body over the limit");
    if (d.done()) break;
    if (n == 0) {
      if (avail == in.size()) break;
      avail = std::min(in.size(), avail + step);
    }
  }
  r.done = d.done();
  r.used = pos;
  return r;
}

void check_bodies(std::string_view body, std::size_t cut, const parse_limits& limits) {
  std::string expected = describe(decode(body, body.size() + 1, limits));
  std::string split = describe(decode(body, cut == 0 ? 1 : cut, limits));
  if (split != expected) broken("split body differs from whole", split, expected);
  std::string bytewise = describe(decode(body, 1, limits));
  if (bytewise != expected) broken("byte-at-a-time body differs from whole", bytewise, expected);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  parse_limits limits = pick_limits(data[0]);
  std::string_view buf(reinterpret_cast<const char*>(data + 2), size - 2);
  std::size_t cut = buf.empty() ? 0 : data[1] % (buf.size() + 1);

  head_result request = check_heads(buf, cut, true, limits);
  head_result response = check_heads(buf, cut, false, limits);

  // The body after a head, and the whole input read as a body: the fuzzer reaches the decoder
  // both with and without writing a valid head first.
  for (const head_result* h : {&request, &response}) {
    if (h->n != 0 && h->head.framing == body_framing::chunked) {
      std::string_view body = buf.substr(h->n);
      check_bodies(body, cut % (body.size() + 1), limits);
    }
  }
  check_bodies(buf, cut, limits);
  return 0;
}
