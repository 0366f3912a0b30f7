// SPDX-License-Identifier: MIT
// The HTTP/1.1 head parser and chunked decoder: valid messages of every shape, each rejection
// with its status, every limit at its boundary, incremental feeding (a byte at a time must give
// what the whole buffer gives), pipelining, and the request corpus in tests/http_corpus/.
#include "squall/http/parser.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

using namespace std::string_literals;
using squall::http::body_framing;
using squall::http::chunked_decoder;
using squall::http::head_parser;
using squall::http::message_head;
using squall::http::parse_error;
using squall::http::parse_limits;

namespace {

// --- Helpers -------------------------------------------------------------------------------------

struct parsed {
  std::size_t n = 0;
  int status = 0;
  message_head head;
};

enum class kind { request, response };

std::size_t parse(head_parser& p, kind k, std::string_view buf, message_head& h, parse_error& e) {
  return k == kind::request ? p.parse_request(buf, h, e) : p.parse_response(buf, h, e);
}

parsed parse_whole(std::string_view buf, kind k = kind::request, parse_limits limits = {}) {
  parsed r;
  head_parser p(limits);
  parse_error e;
  r.n = parse(p, k, buf, r.head, e);
  r.status = e.status;
  return r;
}

// The caller's side of incremental parsing: the same buffer, one byte longer each time.
parsed parse_bytewise(std::string_view buf, kind k = kind::request, parse_limits limits = {}) {
  parsed r;
  head_parser p(limits);
  for (std::size_t len = 1; len <= buf.size(); ++len) {
    parse_error e;
    r.n = parse(p, k, buf.substr(0, len), r.head, e);
    r.status = e.status;
    if (r.n != 0 || e) break;
  }
  return r;
}

// Everything a parse produced, as text, so that two parses compare in one CHECK.
std::string describe(const parsed& r) {
  std::ostringstream s;
  s << "n=" << r.n << " status=" << r.status;
  if (r.n == 0) return s.str();
  const message_head& h = r.head;
  s << " method=" << h.method << " target=" << h.target << " code=" << h.status
    << " reason=" << h.reason << " minor=" << h.minor_version
    << " framing=" << static_cast<int>(h.framing) << " length=" << h.content_length
    << " keep_alive=" << h.keep_alive << " expect=" << h.expect_continue
    << " upgrade=" << h.upgrade;
  for (const auto& f : h.headers)
    s << " [" << f.name << "|" << f.value << "]";
  return s.str();
}

struct decoded {
  std::string data;
  int status = 0;
  bool done = false;
  std::size_t used = 0;
  std::uint64_t body_size = 0;
};

// Feeds `in` to a decoder `step` bytes at a time, the way a connection would: all the unconsumed
// bytes on each call, more only when the decoder asks for them.
decoded decode(std::string_view in, std::size_t step = std::string_view::npos,
               parse_limits limits = {}) {
  decoded r;
  chunked_decoder d(limits);
  std::size_t avail = std::min(step, in.size()), pos = 0;
  for (;;) {
    std::string_view data;
    parse_error e;
    std::string_view window = in.substr(pos, avail - pos);
    std::size_t n = d.decode(window, data, e);
    if (e) {
      r.status = e.status;
      break;
    }
    REQUIRE(n <= window.size());
    if (!data.empty()) {
      // A view into the bytes consumed by this call.
      REQUIRE(data.data() >= window.data());
      REQUIRE(data.data() + data.size() <= window.data() + n);
    }
    r.data += data;
    pos += n;
    if (d.done()) break;
    if (n == 0) {
      if (avail == in.size()) break;
      avail = std::min(in.size(), avail + step);
    }
  }
  r.done = d.done();
  r.used = pos;
  r.body_size = d.body_size();
  return r;
}

// How far an error lets the caller get depends on how the input was split, so `used` only
// counts when there is none.
std::string describe(const decoded& r) {
  std::ostringstream s;
  s << "status=" << r.status << " done=" << r.done << " size=" << r.body_size << " data=" << r.data;
  if (r.status == 0) s << " used=" << r.used;
  return s.str();
}

// The status of a corpus file, as tests/http_corpus/README.md defines it; -1 if the file ends in
// the middle of a message (a broken corpus file).
int corpus_status(std::string_view bytes, bool bytewise) {
  std::size_t pos = 0;
  while (pos < bytes.size()) {
    std::string_view rest = bytes.substr(pos);
    parsed r = bytewise ? parse_bytewise(rest) : parse_whole(rest);
    if (r.status != 0) return r.status;
    if (r.n == 0) return -1;
    pos += r.n;
    if (r.head.framing == body_framing::content_length) {
      if (bytes.size() - pos < r.head.content_length) return -1;
      pos += r.head.content_length;
    } else if (r.head.framing == body_framing::chunked) {
      decoded d = decode(bytes.substr(pos), bytewise ? 1 : std::string_view::npos);
      if (d.status != 0) return d.status;
      if (!d.done) return -1;
      pos += d.used;
    }
  }
  return 200;
}

const std::string get = "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n";

}  // namespace

// --- Valid requests ------------------------------------------------------------------------------

TEST_CASE("iequals compares ASCII case-insensitively") {
  using squall::http::iequals;
  CHECK(iequals("Content-Length", "content-length"));
  CHECK(iequals("", ""));
  CHECK_FALSE(iequals("Content-Length", "Content-Lengt"));
  CHECK_FALSE(iequals("a", "b"));
  CHECK_FALSE(iequals("[", "{"));  // one bit apart like letters, but not letters
}

TEST_CASE("a simple GET") {
  parsed r = parse_whole(get);
  REQUIRE(r.status == 0);
  CHECK(r.n == get.size());
  CHECK(r.head.method == "GET");
  CHECK(r.head.target == "/");
  CHECK(r.head.minor_version == 1);
  REQUIRE(r.head.headers.size() == 1);
  CHECK(r.head.headers[0].name == "Host");
  CHECK(r.head.headers[0].value == "example.com");
  CHECK(r.head.framing == body_framing::none);
  CHECK(r.head.keep_alive);
  CHECK_FALSE(r.head.expect_continue);
  CHECK_FALSE(r.head.upgrade);
  // Views into the caller's buffer, not copies.
  CHECK(r.head.method.data() == get.data());
  CHECK(r.head.headers[0].value.data() == get.data() + get.find("example.com"));
}

TEST_CASE("heads of every length split at every point: the end is found wherever it falls") {
  // The search for the empty line resumes where the last call stopped, 16 bytes at a time and
  // then byte by byte: the bytes it carries across calls and blocks must be right for every
  // alignment of the final CRLFCRLF (a bug here left a 49-byte request waiting forever).
  for (std::size_t pad = 0; pad < 48; ++pad) {
    std::string req = "GET / HTTP/1.1\r\nHost: x\r\nX: " + std::string(pad, 'v') + "\r\n\r\n";
    for (std::size_t split = 1; split < req.size(); ++split) {
      head_parser p;
      message_head h;
      parse_error e;
      CAPTURE(pad);
      CAPTURE(split);
      REQUIRE(p.parse_request(std::string_view(req).substr(0, split), h, e) == 0);
      REQUIRE(p.parse_request(req, h, e) == req.size());
    }
  }
}

TEST_CASE("a browser-like request with many fields") {
  std::string req =
      "GET /search?q=squall&lang=en HTTP/1.1\r\n"
      "Host: www.example.org\r\n"
      "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0\r\n"
      "Accept: text/html,application/xhtml+xml;q=0.9,*/*;q=0.8\r\n"
      "Accept-Language: en-US,en;q=0.5\r\n"
      "Accept-Encoding: gzip, deflate, br\r\n"
      "Cookie: a=b; c=d\r\n"
      "Connection: keep-alive\r\n"
      "\r\n";
  parsed r = parse_whole(req);
  REQUIRE(r.status == 0);
  CHECK(r.n == req.size());
  CHECK(r.head.target == "/search?q=squall&lang=en");
  CHECK(r.head.headers.size() == 7);
  CHECK(r.head.header("user-agent") ==
        "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0");
  CHECK(r.head.header("COOKIE") == "a=b; c=d");
  CHECK(r.head.has_token("Accept-Encoding", "deflate"));
  CHECK_FALSE(r.head.has_token("Accept-Encoding", "zstd"));
}

TEST_CASE("field values lose surrounding whitespace only; empty and obs-text values are kept") {
  std::string req =
      "GET / HTTP/1.1\r\nHost: h\r\nX-A: \t a  b \t\r\nX-Empty:\r\nX-Blank:   \r\n"
      "X-Latin: caf\xe9\r\n\r\n";
  parsed r = parse_whole(req);
  REQUIRE(r.status == 0);
  CHECK(r.head.header("X-A") == "a  b");
  CHECK(r.head.has_header("X-Empty"));
  CHECK(r.head.header("X-Empty").empty());
  CHECK(r.head.has_header("x-blank"));
  CHECK(r.head.header("X-Blank").empty());
  CHECK(r.head.header("X-Latin") == "caf\xe9");
  CHECK_FALSE(r.head.has_header("X-Missing"));
  CHECK(r.head.header("X-Missing").empty());
}

TEST_CASE("header() returns the first of repeated fields; has_token looks at all of them") {
  std::string req =
      "GET / HTTP/1.1\r\nHost: h\r\nX-R: one\r\nX-R: two, Three\r\nConnection: foo\r\n"
      "connection: Bar ,  CLOSE\r\n\r\n";
  parsed r = parse_whole(req);
  REQUIRE(r.status == 0);
  CHECK(r.head.header("x-r") == "one");
  CHECK(r.head.has_token("X-R", "three"));
  CHECK(r.head.has_token("X-R", "one"));
  CHECK_FALSE(r.head.has_token("X-R", "thr"));
  CHECK(r.head.has_token("Connection", "bar"));
  CHECK_FALSE(r.head.keep_alive);  // "close" in the second Connection field
}

TEST_CASE("the fields the parser acts on are known by their names in any case, and only so") {
  // Each name is tried with every token byte at every position: only the same name with its
  // letters in either case may count ('_' for '-', or a byte one bit away from a letter, not).
  // The verdict is written out here independently of the parser.
  auto same = [](std::string_view a, std::string_view b) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
             return std::tolower(static_cast<unsigned char>(x)) == y;
           });
  };
  auto tchar = [](unsigned char c) {
    return std::isalnum(c) ||
           std::string_view("!#$%&'*+-.^_`|~").find(char(c)) != std::string_view::npos;
  };
  struct known {
    std::string name, value;
    std::string before;  // other fields the test needs
    bool (*acted)(const parsed&);
  };
  const known fields[] = {
      {"host", "x", "", [](const parsed& r) { return r.status == 0; }},  // else 400: no Host
      {"expect", "100-continue", "Host: x\r\n",
       [](const parsed& r) { return r.head.expect_continue; }},
      {"upgrade", "websocket", "Host: x\r\nConnection: upgrade\r\n",
       [](const parsed& r) { return r.head.upgrade; }},
      {"connection", "close", "Host: x\r\n", [](const parsed& r) { return !r.head.keep_alive; }},
      {"content-length", "5", "Host: x\r\n",
       [](const parsed& r) { return r.head.framing == body_framing::content_length; }},
      {"transfer-encoding", "chunked", "Host: x\r\n",
       [](const parsed& r) { return r.head.framing == body_framing::chunked; }},
  };
  std::string wrong;
  int counted = 0;
  for (const known& k : fields) {
    for (std::size_t at = 0; at < k.name.size(); ++at) {
      for (int c = 0; c < 256; ++c) {
        if (!tchar(static_cast<unsigned char>(c))) continue;
        std::string name = k.name;
        name[at] = static_cast<char>(c);
        parsed r =
            parse_whole("POST / HTTP/1.1\r\n" + k.before + name + ": " + k.value + "\r\n\r\n");
        bool expect = same(name, k.name);
        counted += expect;
        if (k.acted(r) != expect) wrong += name + " ";
      }
    }
  }
  CHECK(wrong == "");
  CHECK(counted == 2 * 56 + 2);  // the 56 letters of the six names in both cases, two dashes
}

TEST_CASE("request targets of every form") {
  for (std::string target : {"/", "/a/b?c=d&e=%20f#frag", "*", "http://example.com:8080/x?y",
                             "example.com:443", "/~user/!$&'()*+,;=:@[]"}) {
    CAPTURE(target);
    std::string req = "OPTIONS " + target + " HTTP/1.1\r\nHost: example.com\r\n\r\n";
    parsed r = parse_whole(req);
    REQUIRE(r.status == 0);
    CHECK(r.head.target == target);
    CHECK(r.head.method == "OPTIONS");
  }
}

TEST_CASE("methods are case-sensitive tokens taken as they are") {
  for (std::string method : {"GET", "get", "PATCH", "M-SEARCH", "X_CUSTOM!#$%&'*+.^`|~"}) {
    CAPTURE(method);
    std::string req = method + " / HTTP/1.1\r\nHost: h\r\n\r\n";
    parsed r = parse_whole(req);
    REQUIRE(r.status == 0);
    CHECK(r.head.method == method);
  }
}

TEST_CASE("HTTP versions: 1.0, 1.1, and 1.2+ read as 1.1") {
  CHECK(parse_whole("GET / HTTP/1.0\r\n\r\n").head.minor_version == 0);
  CHECK(parse_whole("GET / HTTP/1.1\r\nHost: h\r\n\r\n").head.minor_version == 1);
  parsed r = parse_whole("GET / HTTP/1.9\r\nHost: h\r\n\r\n");
  REQUIRE(r.status == 0);
  CHECK(r.head.minor_version == 1);
  // HTTP/1.0 needs no Host.
  CHECK(parse_whole("GET / HTTP/1.0\r\n\r\n").status == 0);
}

TEST_CASE("keep_alive follows the version and the Connection options") {
  struct row {
    std::string head;
    bool keep_alive;
  };
  for (const row& t : std::vector<row>{
           {"GET / HTTP/1.1\r\nHost: h\r\n\r\n", true},
           {"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", false},
           {"GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, Close\r\n\r\n", false},
           {"GET / HTTP/1.1\r\nHost: h\r\nConnection: closed\r\n\r\n", true},
           {"GET / HTTP/1.0\r\n\r\n", false},
           {"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true},
           {"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true},
           {"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", false},
       }) {
    CAPTURE(t.head);
    parsed r = parse_whole(t.head);
    REQUIRE(r.status == 0);
    CHECK(r.head.keep_alive == t.keep_alive);
  }
}

TEST_CASE("expect_continue: 100-continue in HTTP/1.1 only") {
  auto expect = [](std::string head) {
    parsed r = parse_whole(head);
    REQUIRE(r.status == 0);
    return r.head.expect_continue;
  };
  CHECK(expect("PUT /f HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n"));
  CHECK(expect("PUT /f HTTP/1.1\r\nHost: h\r\nexpect: 100-Continue\r\n\r\n"));
  CHECK_FALSE(expect("PUT /f HTTP/1.1\r\nHost: h\r\nExpect: 200-ok\r\n\r\n"));
  CHECK_FALSE(expect("PUT /f HTTP/1.1\r\nHost: h\r\n\r\n"));
  // RFC 9110 10.1.1: ignored in HTTP/1.0.
  CHECK_FALSE(expect("PUT /f HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n"));
}

TEST_CASE("upgrade needs both the Connection option and an Upgrade field") {
  auto upgrade = [](std::string fields) {
    parsed r = parse_whole("GET /ws HTTP/1.1\r\nHost: h\r\n" + fields + "\r\n");
    REQUIRE(r.status == 0);
    return r.head.upgrade;
  };
  CHECK(upgrade("Connection: Upgrade\r\nUpgrade: websocket\r\n"));
  CHECK(upgrade("Upgrade: websocket\r\nConnection: keep-alive, upgrade\r\n"));
  CHECK_FALSE(upgrade("Upgrade: websocket\r\n"));
  CHECK_FALSE(upgrade("Connection: upgrade\r\n"));
}

TEST_CASE("request framing: none, content_length, chunked") {
  parsed none = parse_whole(get);
  CHECK(none.head.framing == body_framing::none);

  parsed cl = parse_whole("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 42\r\n\r\n");
  REQUIRE(cl.status == 0);
  CHECK(cl.head.framing == body_framing::content_length);
  CHECK(cl.head.content_length == 42);

  parsed zero = parse_whole("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n");
  CHECK(zero.head.framing == body_framing::content_length);
  CHECK(zero.head.content_length == 0);

  parsed same = parse_whole(
      "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 7 , 7\r\nContent-Length: 7\r\n\r\n");
  REQUIRE(same.status == 0);
  CHECK(same.head.content_length == 7);

  parsed ch = parse_whole("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: ChUnKeD\r\n\r\n");
  REQUIRE(ch.status == 0);
  CHECK(ch.head.framing == body_framing::chunked);

  parsed big = parse_whole(
      "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 000000000000000000000000104857600\r\n\r\n");
  REQUIRE(big.status == 0);
  CHECK(big.head.content_length == 100 * 1024 * 1024);
}

TEST_CASE("empty lines before the request line are skipped and counted in the length") {
  std::string req = "\r\n\n\r\n" + get;
  parsed r = parse_whole(req);
  REQUIRE(r.status == 0);
  CHECK(r.n == req.size());
  CHECK(r.head.method == "GET");
  CHECK(describe(parse_bytewise(req)) == describe(r));
}

TEST_CASE("lines may end in a bare LF, in any mix with CRLF") {
  for (std::string req :
       {"GET / HTTP/1.1\nHost: h\nX-A: b\n\n"s, "GET / HTTP/1.1\r\nHost: h\nX-A: b\r\n\n"s,
        "GET / HTTP/1.1\nHost: h\r\nX-A: b\n\r\n"s}) {
    CAPTURE(req);
    parsed r = parse_whole(req);
    REQUIRE(r.status == 0);
    CHECK(r.n == req.size());
    CHECK(r.head.header("Host") == "h");
    CHECK(r.head.header("X-A") == "b");
  }
}

TEST_CASE("the head ends at the first empty line: the body is not part of it") {
  std::string req = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 8\r\n\r\nX: y\r\n\r\n";
  parsed r = parse_whole(req);
  REQUIRE(r.status == 0);
  CHECK(r.n == req.find("X: y"));
  CHECK(r.head.headers.size() == 2);
}

// --- Incremental parsing -------------------------------------------------------------------------

TEST_CASE("an incomplete head asks for more, without an error, at every length") {
  std::string req = "\r\nPOST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc";
  std::size_t head = req.size() - 3;
  head_parser p;
  for (std::size_t len = 0; len < head; ++len) {
    CAPTURE(len);
    message_head h;
    parse_error e;
    CHECK(p.parse_request(std::string_view(req).substr(0, len), h, e) == 0);
    CHECK_FALSE(e);
  }
  message_head h;
  parse_error e;
  CHECK(p.parse_request(req, h, e) == head);
  CHECK(h.content_length == 3);
}

TEST_CASE("any split of the input gives the result of the whole") {
  std::string req =
      "POST /upload?x=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: test/1.0\r\n"
      "Content-Type: application/octet-stream\r\nContent-Length: 5\r\n\r\nhello";
  std::string whole = describe(parse_whole(req));
  for (std::size_t cut = 0; cut <= req.size(); ++cut) {
    CAPTURE(cut);
    head_parser p;
    parsed r;
    parse_error e;
    r.n = p.parse_request(std::string_view(req).substr(0, cut), r.head, e);
    if (r.n == 0 && !e) r.n = p.parse_request(req, r.head, e);
    r.status = e.status;
    CHECK(describe(r) == whole);
  }
}

TEST_CASE("byte-at-a-time feeding matches the whole buffer for requests and responses") {
  std::vector<std::pair<kind, std::string>> cases = {
      {kind::request, get},
      {kind::request, "\n\r\nGET /x HTTP/1.0\nConnection: keep-alive\n\n"},
      {kind::request, "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"},
      {kind::request, "GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n"},  // 400
      {kind::request, "GET / HTTP/2.0\r\nHost: h\r\n\r\n"},             // 505
      {kind::request, "GET / HTTP/1.1\r\nHost: h\r\n bad\r\n\r\n"},     // 400
      {kind::request, "\rGET / HTTP/1.1\r\n\r\n"},                      // 400 at once
      {kind::response, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"},
      {kind::response, "HTTP/1.0 404\nServer: x\n\n"},
      {kind::response, "HTTP/1.1 204 No Content\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"},
  };
  for (const auto& c : cases) {
    const std::string& text = c.second;
    kind k = c.first;
    CAPTURE(text);
    parsed whole = parse_whole(text, k);
    CHECK((whole.n != 0 || whole.status != 0));
    CHECK(describe(parse_bytewise(text, k)) == describe(whole));
  }
}

TEST_CASE("pipelined requests: parse the first, reset, parse the rest") {
  std::string a = "POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nbody";
  std::string b = "GET /b HTTP/1.1\r\nHost: h\r\n\r\n";
  std::string c = "GET /c HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n";
  std::string buf = a + b + c;
  head_parser p;
  message_head h;
  parse_error e;
  std::size_t n = p.parse_request(buf, h, e);
  REQUIRE(n == a.size() - 4);
  CHECK(h.target == "/a");
  CHECK(h.content_length == 4);
  std::size_t pos = n + h.content_length;

  p.reset();
  n = p.parse_request(std::string_view(buf).substr(pos), h, e);
  REQUIRE(n == b.size());
  CHECK(h.target == "/b");
  CHECK(h.framing == body_framing::none);
  CHECK(h.headers.size() == 1);  // nothing left over from the first message
  pos += n;

  p.reset();
  n = p.parse_request(std::string_view(buf).substr(pos), h, e);
  REQUIRE(n == c.size());
  CHECK(h.target == "/c");
  CHECK_FALSE(h.keep_alive);
  CHECK_FALSE(e);
}

TEST_CASE("reset() forgets a search that had got further than the next message") {
  std::string first = "GET /one HTTP/1.1\r\nHost: h\r\nX-Long: aaaaaaaaaaaaaaaaaaaa";
  head_parser p;
  message_head h;
  parse_error e;
  CHECK(p.parse_request(first, h, e) == 0);
  p.reset();
  CHECK(p.parse_request(get, h, e) == get.size());
  CHECK(h.target == "/");
}

TEST_CASE("the fields vector keeps its storage from one message to the next") {
  std::string many = "GET / HTTP/1.1\r\nHost: h\r\n";
  for (int i = 0; i < 20; ++i)
    many += "X-" + std::to_string(i) + ": v\r\n";
  many += "\r\n";
  head_parser p;
  message_head h;
  parse_error e;
  REQUIRE(p.parse_request(many, h, e) != 0);
  const auto* storage = h.headers.data();
  std::size_t capacity = h.headers.capacity();
  REQUIRE(capacity >= 21);

  p.reset();
  REQUIRE(p.parse_request(get, h, e) != 0);
  CHECK(h.headers.size() == 1);
  CHECK(h.headers.data() == storage);

  h.clear();
  CHECK(h.headers.empty());
  CHECK(h.headers.capacity() == capacity);
  CHECK(h.method.empty());
  CHECK(h.target.empty());
  CHECK(h.framing == body_framing::none);
  CHECK(h.keep_alive);
  CHECK(h.minor_version == 1);
}

// --- Rejections ----------------------------------------------------------------------------------

struct rejection {
  std::string text;
  int status;
};

TEST_CASE("malformed requests are refused with the documented status") {
  const std::string post = "POST / HTTP/1.1\r\nHost: h\r\n";
  std::vector<rejection> table = {
      // Request line.
      {"GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 400},
      {" GET / HTTP/1.1\r\nHost: h\r\n\r\n", 400},
      {"GET / HTTP/1.1 \r\nHost: h\r\n\r\n", 400},
      {"GET /  HTTP/1.1\r\nHost: h\r\n\r\n", 400},
      {"GET\t/ HTTP/1.1\r\nHost: h\r\n\r\n", 400},
      {"GET /\r\n\r\n", 400},
      {"GET HTTP/1.1\r\nHost: h\r\n\r\n", 400},
      {"/ HTTP/1.1\r\nHost: h\r\n\r\n", 400},
      {"G@T / HTTP/1.1\r\nHost: h\r\n\r\n", 400},
      {"GET /a\"b HTTP/1.1\r\nHost: h\r\n\r\n", 0},  // '"' is a VCHAR: accepted
      {"GET /a\x01z HTTP/1.1\r\nHost: h\r\n\r\n", 400},
      {"GET /a\x7fz HTTP/1.1\r\nHost: h\r\n\r\n", 400},
      {"GET /a\x80z HTTP/1.1\r\nHost: h\r\n\r\n", 400},
      {"GET /a\tz HTTP/1.1\r\nHost: h\r\n\r\n", 400},
      {"GET /aaaaaaaaaaaaaaaaaaaa\x01 HTTP/1.1\r\nHost: h\r\n\r\n", 400},  // past 16 bytes
      {"GET / http/1.1\r\nHost: h\r\n\r\n", 400},
      {"GET / HTTP/1.1x\r\nHost: h\r\n\r\n", 400},
      {"GET / HTTP/1.\r\nHost: h\r\n\r\n", 400},
      {"GET / HTTP/1\r\nHost: h\r\n\r\n", 400},
      {"GET / HTTP/11.1\r\nHost: h\r\n\r\n", 400},
      {"GET / HTTP/1.10\r\nHost: h\r\n\r\n", 400},
      {"GET / HTTP/\r\nHost: h\r\n\r\n", 400},
      {"GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505},
      {"GET / HTTP/2\r\nHost: h\r\n\r\n", 505},
      {"GET / HTTP/0.9\r\nHost: h\r\n\r\n", 505},
      {"GET / HTTP/9.1\r\nHost: h\r\n\r\n", 505},
      // Line ends.
      {"GET / HTTP/1.1\rHost: h\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nHost: h\r\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n", 400},
      {"GET / HTTP/1.1\n\rHost: h\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nHost: h\r\n\r\r\n\r\n", 400},
      {"\rGET / HTTP/1.1\r\nHost: h\r\n\r\n", 400},
      {"\r\n\rGET / HTTP/1.1\r\nHost: h\r\n\r\n", 400},
      // Field lines.
      {"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n\tb\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\n Host: h\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nHost : h\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nHost\t: h\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nHost: h\r\nNoColon\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nHost: h\r\n: empty-name\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nHost: h\r\nX[1]: v\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nHost: h\r\nX\x80: v\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nHost: h\r\nX: a\x00"s + "b\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nHost: h\r\nX: a\x7f\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nHost: h\r\nX: a\x0b\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nHost: h\r\nX: 0123456789abcdef0123456789\x1b\r\n\r\n", 400},
      // Host.
      {"GET / HTTP/1.1\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400},
      {"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nHost: user@a\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nHost:\r\n\r\n", 0},  // empty is allowed (RFC 9112 3.2)
      // Content-Length.
      {post + "Content-Length: -1\r\n\r\n", 400},
      {post + "Content-Length: +5\r\n\r\n", 400},
      {post + "Content-Length: 0x5\r\n\r\n", 400},
      {post + "Content-Length: 5a\r\n\r\n", 400},
      {post + "Content-Length:\r\n\r\n", 400},
      {post + "Content-Length: 1 0\r\n\r\n", 400},
      {post + "Content-Length: 5,\r\n\r\n", 400},
      {post + "Content-Length: ,5\r\n\r\n", 400},
      {post + "Content-Length: 5, 6\r\n\r\n", 400},
      {post + "Content-Length: 5\r\nContent-Length: 6\r\n\r\n", 400},
      {post + "Content-Length: 18446744073709551616\r\n\r\n", 400},
      {post + "Content-Length: 99999999999999999999999\r\n\r\n", 400},
      {post + "Content-Length: 18446744073709551615\r\n\r\n", 413},
      {post + "Content-Length: 104857601\r\n\r\n", 413},
      {post + "Content-Length: 104857600\r\n\r\n", 0},
      // Transfer-Encoding.
      {post + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
      {post + "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", 400},
      {post + "Transfer-Encoding: xchunked\r\n\r\n", 400},
      {post + "Transfer-Encoding: chunked, identity\r\n\r\n", 400},
      {post + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
      {post + "Transfer-Encoding: chunked, chunked\r\n\r\n", 400},
      {post + "Transfer-Encoding: chunked, gzip, chunked\r\n\r\n", 400},
      {post + "Transfer-Encoding: gzip\r\n\r\n", 400},
      {post + "Transfer-Encoding:\r\n\r\n", 400},
      {post + "Transfer-Encoding: ,chunked\r\n\r\n", 400},
      {post + "Transfer-Encoding: chunked;q=1\r\n\r\n", 400},
      {post + "Transfer-Encoding: \"chunked\"\r\n\r\n", 400},
      {post + "Transfer-Encoding: chun ked\r\n\r\n", 400},
      {"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
      {post + "Transfer-Encoding: gzip, chunked\r\n\r\n", 501},
      {post + "Transfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n\r\n", 501},
      {post + "Transfer-Encoding: gzip,chunked\r\n\r\n", 501},
      {post + "transfer-encoding: CHUNKED\r\n\r\n", 0},
  };
  for (const rejection& t : table) {
    CAPTURE(t.text);
    parsed whole = parse_whole(t.text);
    CHECK(whole.status == t.status);
    CHECK((whole.n == 0) == (t.status != 0));
    CHECK(describe(parse_bytewise(t.text)) == describe(whole));
  }
}

TEST_CASE("every byte value is judged by its class, wherever it falls in the 16-byte scans") {
  // The RFC's classes, written out independently of the parser's table.
  auto tchar = [](int c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c != 0 && std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) !=
                          std::string_view::npos);
  };
  auto vchar = [](int c) { return c >= 0x21 && c <= 0x7e; };
  auto value_byte = [](int c) { return c == '\t' || (c >= 0x20 && c != 0x7f); };
  const std::string pad(40, 'p');
  for (int c = 0; c < 256; ++c) {
    char b = static_cast<char>(c);
    for (std::size_t at : {0, 5, 15, 16, 17, 31, 39}) {
      CAPTURE(c);
      CAPTURE(at);
      std::string with = pad.substr(0, at) + b + pad.substr(at);
      std::string in_value = "GET / HTTP/1.1\r\nHost: h\r\nX: " + with + "\r\nY: z\r\n\r\n";
      std::string in_target = "GET /" + with + " HTTP/1.1\r\nHost: h\r\nY: z\r\n\r\n";
      std::string in_name = "GET / HTTP/1.1\r\nHost: h\r\nX" + with + ": v\r\n\r\n";
      std::string in_method = "G" + with + " / HTTP/1.1\r\nHost: h\r\n\r\n";
      std::string in_reason = "HTTP/1.1 200 " + with + "\r\nContent-Length: 0\r\n\r\n";
      CHECK((parse_whole(in_value).status == 0) == value_byte(c));
      CHECK((parse_whole(in_target).status == 0) == vchar(c));
      CHECK((parse_whole(in_name).status == 0) == (tchar(c) || c == ':'));  // ':' ends the name
      CHECK((parse_whole(in_method).status == 0) == tchar(c));
      CHECK((parse_whole(in_reason, kind::response).status == 0) == value_byte(c));
      // The careful path scans a complete head, the first call the whole input: both agree.
      CHECK(describe(parse_bytewise(in_value)) == describe(parse_whole(in_value)));
      CHECK(describe(parse_bytewise(in_target)) == describe(parse_whole(in_target)));
    }
  }
}

TEST_CASE("the smuggling-relevant rejections say why") {
  struct row {
    std::string text;
    std::string what;
  };
  for (const row& t : std::vector<row>{
           {"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n", "obsolete line folding"},
           {"GET / HTTP/1.1\r\n Host: h\r\n\r\n", "obsolete line folding"},
           {"GET / HTTP/1.1\r\nHost : h\r\n\r\n", "whitespace before colon"},
           {"GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n", "bare CR"},
           {"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "both Content-Length and Transfer-Encoding"},
           {"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "differing Content-Lengths"},
           {"GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
            "final transfer coding is not chunked"},
           {"GET / HTTP/1.1\r\nHost: h\r\nHost: i\r\n\r\n", "more than one Host"},
       }) {
    CAPTURE(t.text);
    head_parser p;
    message_head h;
    parse_error e;
    CHECK(p.parse_request(t.text, h, e) == 0);
    CHECK(std::string(e.what) == t.what);
  }
  for (const row& t : std::vector<row>{
           {"3\r\nabcX", "missing CRLF after chunk data"},
           {"3\r\nabc\rX", "bare CR after chunk data"},
           {"3 \r\n", "malformed chunk extension"},
           {"0x3\r\n", "malformed chunk size"},
       }) {
    CAPTURE(t.text);
    chunked_decoder d;
    std::string_view in = t.text, data;
    parse_error e;
    while (!e && !in.empty()) {
      std::size_t n = d.decode(in, data, e);
      if (n == 0) break;
      in.remove_prefix(n);
    }
    CHECK(std::string(e.what) == t.what);
  }
}

TEST_CASE("an error carries a reason for the log") {
  head_parser p;
  message_head h;
  parse_error e;
  CHECK(p.parse_request("GET / HTTP/1.1\r\nHost : h\r\n\r\n", h, e) == 0);
  CHECK(e);
  CHECK(e.status == 400);
  CHECK(std::string(e.what) == "whitespace before colon");
}

// --- Limits --------------------------------------------------------------------------------------

TEST_CASE("max_start_line: 414 past it, at once even before the line ends") {
  parse_limits limits;
  limits.max_start_line = 30;
  std::string at = "GET /" + std::string(16, 'a') + " HTTP/1.1";  // 30 bytes
  REQUIRE(at.size() == 30);
  std::string over = "GET /" + std::string(17, 'a') + " HTTP/1.1";

  CHECK(parse_whole(at + "\r\nHost: h\r\n\r\n", kind::request, limits).status == 0);
  CHECK(parse_whole(at + "\nHost: h\n\n", kind::request, limits).status == 0);
  CHECK(parse_whole(over + "\r\nHost: h\r\n\r\n", kind::request, limits).status == 414);
  // Not finished yet: 30 bytes may still end in CRLF, 31 cannot fit.
  CHECK(parse_whole(at, kind::request, limits).status == 0);
  CHECK(parse_whole(at + "\r", kind::request, limits).status == 0);
  CHECK(parse_whole(over, kind::request, limits).status == 414);
  // Finished line, unfinished head: no need to wait for the rest either.
  CHECK(parse_whole(over + "\r\nHost:", kind::request, limits).status == 414);
  // Empty lines before the start line are not part of it.
  CHECK(parse_whole("\r\n\r\n" + at + "\r\nHost: h\r\n\r\n", kind::request, limits).status == 0);
  // Status lines too.
  CHECK(parse_whole("HTTP/1.1 200 " + std::string(18, 'x') + "\r\n\r\n", kind::response, limits)
            .status == 414);
  CHECK(parse_whole("HTTP/1.1 200 " + std::string(17, 'x') + "\r\n\r\n", kind::response, limits)
            .status == 0);
}

TEST_CASE("max_start_line defaults to 8 KiB") {
  std::string target = "/" + std::string(8 * 1024 - 14, 'a');
  std::string line = "GET " + target + " HTTP/1.1";
  REQUIRE(line.size() == 8 * 1024);
  CHECK(parse_whole(line + "\r\nHost: h\r\n\r\n").status == 0);
  CHECK(parse_whole("GET a" + target + " HTTP/1.1\r\nHost: h\r\n\r\n").status == 414);
}

TEST_CASE("max_header_size: 431 past it, at once when the head cannot end within it") {
  parse_limits limits;
  limits.max_header_size = 64;
  std::string start = "GET / HTTP/1.1\r\nHost: h\r\nX: ";  // 28 bytes
  std::string at = start + std::string(64 - start.size() - 4, 'v') + "\r\n\r\n";
  REQUIRE(at.size() == 64);
  std::string over = start + std::string(64 - start.size() - 3, 'v') + "\r\n\r\n";
  CHECK(parse_whole(at, kind::request, limits).status == 0);
  CHECK(parse_whole(over, kind::request, limits).status == 431);
  // 63 bytes without the end of the head: it could still end at 64.
  CHECK(parse_whole(std::string_view(at).substr(0, 63), kind::request, limits).status == 0);
  // 64 bytes and not ended: the head will be longer than 64.
  CHECK(parse_whole(std::string_view(over).substr(0, 64), kind::request, limits).status == 431);
  // Skipped empty lines count.
  CHECK(parse_whole("\r\n" + at, kind::request, limits).status == 431);
  CHECK(parse_whole(std::string(64, '\n'), kind::request, limits).status == 431);
  CHECK(parse_whole(std::string(63, '\n'), kind::request, limits).status == 0);
  CHECK(parse_whole(over, kind::response, limits).status == 431);
}

TEST_CASE("414 or 431: whichever limit the bytes broke first, however they were fed") {
  // Found by the fuzzer: the whole buffer used to say 414 where a byte-at-a-time caller had
  // already been told 431.
  parse_limits limits;
  limits.max_start_line = 16;
  limits.max_header_size = 64;
  std::string long_line = "GET /" + std::string(40, 'a') + " HTTP/1.1\r\nHost: h\r\n\r\n";
  struct row {
    std::string text;
    int status;
  };
  for (const row& t : std::vector<row>{
           {long_line, 414},                                  // the line breaks its limit first
           {std::string(40, '\n') + long_line, 414},          // at byte 57, before byte 64
           {std::string(50, '\n') + long_line, 431},          // at byte 67: the head broke first
           {std::string(65, '\n') + long_line, 431},          // empty lines alone are too many
           {std::string(63, '\n') + "\rX" + long_line, 431},  // the bare CR is past byte 64
           {std::string(62, '\n') + "\rX" + long_line, 400},  // ... and here it is not
       }) {
    CAPTURE(t.text.size());
    CHECK(parse_whole(t.text, kind::request, limits).status == t.status);
    CHECK(parse_bytewise(t.text, kind::request, limits).status == t.status);
  }
}

TEST_CASE("max_headers: 431 past it") {
  parse_limits limits;
  limits.max_headers = 3;
  CHECK(parse_whole("GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\n\r\n", kind::request, limits)
            .status == 0);
  CHECK(parse_whole("GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", kind::request,
                    limits)
            .status == 431);
  std::string hundred = "GET / HTTP/1.1\r\nHost: h\r\n";
  for (int i = 1; i < 100; ++i)
    hundred += "X: v\r\n";
  CHECK(parse_whole(hundred + "\r\n").status == 0);
  CHECK(parse_whole(hundred + "X: v\r\n\r\n").status == 431);
}

TEST_CASE("max_body_size bounds a request's Content-Length: 413 past it") {
  parse_limits limits;
  limits.max_body_size = 10;
  std::string post = "POST / HTTP/1.1\r\nHost: h\r\n";
  CHECK(parse_whole(post + "Content-Length: 10\r\n\r\n", kind::request, limits).status == 0);
  CHECK(parse_whole(post + "Content-Length: 11\r\n\r\n", kind::request, limits).status == 413);
  // A response's length is the reader's to bound: for a HEAD it names a body that never comes.
  CHECK(
      parse_whole("HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n", kind::response, limits).status ==
      0);
  // A 304 describes the resource, not a body that follows.
  CHECK(
      parse_whole("HTTP/1.1 304 Not Modified\r\nContent-Length: 11\r\n\r\n", kind::response, limits)
          .status == 0);
}

// --- Responses -----------------------------------------------------------------------------------

TEST_CASE("status lines") {
  struct row {
    std::string text;
    int code;
    std::string reason;
  };
  for (const row& t : std::vector<row>{
           {"HTTP/1.1 200 OK\r\n\r\n", 200, "OK"},
           {"HTTP/1.1 404 Not Found Here\r\n\r\n", 404, "Not Found Here"},
           {"HTTP/1.1 200 \r\n\r\n", 200, ""},
           {"HTTP/1.1 200\r\n\r\n", 200, ""},
           {"HTTP/1.1 200\n\n", 200, ""},
           {"HTTP/1.0 500 Internal\tError \xe9\r\n\r\n", 500, "Internal\tError \xe9"},
           {"HTTP/1.1 999 Custom\r\n\r\n", 999, "Custom"},
           {"HTTP/1.1 100 Continue\r\n\r\n", 100, "Continue"},
       }) {
    CAPTURE(t.text);
    parsed r = parse_whole(t.text, kind::response);
    REQUIRE(r.status == 0);
    CHECK(r.n == t.text.size());
    CHECK(r.head.status == t.code);
    CHECK(r.head.reason == t.reason);
    CHECK(r.head.method.empty());
  }
}

TEST_CASE("response framing: none for 1xx/204/304, then TE, CL, or until close") {
  struct row {
    std::string text;
    body_framing framing;
    std::uint64_t length;
    bool keep_alive;
  };
  for (const row& t : std::vector<row>{
           {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", body_framing::content_length, 5, true},
           {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", body_framing::chunked, 0,
            true},
           {"HTTP/1.1 200 OK\r\n\r\n", body_framing::until_close, 0, false},
           {"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n",
            body_framing::content_length, 1, false},
           {"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", body_framing::content_length, 1, false},
           {"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n",
            body_framing::content_length, 1, true},
           {"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n", body_framing::until_close, 0,
            false},
           {"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", body_framing::none, 0, true},
           {"HTTP/1.1 304 Not Modified\r\nContent-Length: 999999999999\r\n\r\n", body_framing::none,
            0, true},
           {"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n", body_framing::none,
            0, true},
           {"HTTP/1.1 100 Continue\r\n\r\n", body_framing::none, 0, true},
           {"HTTP/1.1 199 Whatever\r\n\r\n", body_framing::none, 0, true},
           {"HTTP/1.1 205 Reset Content\r\n\r\n", body_framing::until_close, 0, false},
       }) {
    CAPTURE(t.text);
    parsed r = parse_whole(t.text, kind::response);
    REQUIRE(r.status == 0);
    CHECK(r.head.framing == t.framing);
    CHECK(r.head.content_length == t.length);
    CHECK(r.head.keep_alive == t.keep_alive);
  }
}

TEST_CASE("101 Switching Protocols with upgrade") {
  parsed r = parse_whole(
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
      kind::response);
  REQUIRE(r.status == 0);
  CHECK(r.head.upgrade);
  CHECK(r.head.framing == body_framing::none);
}

TEST_CASE("malformed responses are refused") {
  std::vector<rejection> table = {
      {"HTTP/2 200 OK\r\n\r\n", 505},
      {"HTTP/2.0 200 OK\r\n\r\n", 505},
      {"http/1.1 200 OK\r\n\r\n", 400},
      {"HTTP/1.1  200 OK\r\n\r\n", 400},
      {"HTTP/1.1 20 OK\r\n\r\n", 400},
      {"HTTP/1.1 2000 OK\r\n\r\n", 400},
      {"HTTP/1.1 099 Low\r\n\r\n", 400},
      {"HTTP/1.1 2x0 OK\r\n\r\n", 400},
      {"HTTP/1.1 200OK\r\n\r\n", 400},
      {"HTTP/1.1\r\n\r\n", 400},
      {"HTTP/1.1 200 O\x01K\r\n\r\n", 400},
      {"HTTP/1.1 200 OK\rX\r\n\r\n", 400},
      {"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
      {"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n", 400},
      {"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", 400},
      {"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501},
      {"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
      {"HTTP/1.1 200 OK\r\nX: a\r\n folded\r\n\r\n", 400},
      // A response's length is the reader's to bound (a HEAD response's body never comes).
      {"HTTP/1.1 200 OK\r\nContent-Length: 104857601\r\n\r\n", 0},
      {"HTTP/1.1 200 OK\r\n\r\n", 0},  // no Host needed in a response
      // ... and one that comes is not a request's Host: neither checked nor counted.
      {"HTTP/1.1 200 OK\r\nHost: a b:c:d\r\nHost: e\r\n\r\n", 0},
  };
  for (const rejection& t : table) {
    CAPTURE(t.text);
    parsed whole = parse_whole(t.text, kind::response);
    CHECK(whole.status == t.status);
    CHECK(describe(parse_bytewise(t.text, kind::response)) == describe(whole));
  }
}

// --- Chunked bodies ------------------------------------------------------------------------------

TEST_CASE("chunked: data comes out whole, byte at a time, and in every split") {
  std::string body = "5\r\nhello\r\n1;ext=1\r\n \r\n10\r\n0123456789abcdef\r\n0\r\n\r\nNEXT";
  decoded whole = decode(body);
  CHECK(whole.status == 0);
  CHECK(whole.done);
  CHECK(whole.data == "hello 0123456789abcdef");
  CHECK(whole.body_size == 22);
  CHECK(whole.used == body.size() - 4);  // stops at the end: the rest is the next message
  for (std::size_t step : {1, 2, 3, 7, 16}) {
    CAPTURE(step);
    CHECK(describe(decode(body, step)) == describe(whole));
  }
}

TEST_CASE("chunked: one call hands out at most one run of data, as a view into the input") {
  std::string body = "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
  chunked_decoder d;
  std::string_view in = body;
  std::string_view data;
  parse_error e;
  std::size_t n = d.decode(in, data, e);
  CHECK(data == "abc");
  CHECK(data.data() == body.data() + 3);
  CHECK(n == 6);
  in.remove_prefix(n);
  n = d.decode(in, data, e);
  CHECK(data == "de");
  in.remove_prefix(n);
  n = d.decode(in, data, e);
  CHECK(data.empty());
  CHECK(n == in.size());
  CHECK(d.done());
  CHECK_FALSE(e);
  // Done: nothing more is consumed.
  CHECK(d.decode("0\r\n\r\n", data, e) == 0);
}

TEST_CASE("chunked: sizes in hex, either case, with leading zeros") {
  CHECK(decode("A\r\n0123456789\r\n0\r\n\r\n").data == "0123456789");
  CHECK(decode("a\r\n0123456789\r\n0\r\n\r\n").data == "0123456789");
  CHECK(decode("000000000000000000000003\r\nabc\r\n000\r\n\r\n").data == "abc");
  CHECK(decode("1F\r\n" + std::string(31, 'x') + "\r\n0\r\n\r\n").body_size == 31);
}

TEST_CASE("chunked: extensions of every valid shape are accepted and ignored") {
  for (std::string ext : {";a", ";a=b", "; a", " ;a", "\t; a = b", ";a=b;c=d", ";a;b;c", ";a=\"\"",
                          ";a=\"quoted ;= string\"", ";a=\"esc\\\"aped\\\\\"", ";a=\"tab\there\"",
                          ";a=b ;c", ";!#$%&'*+-.^_`|~=x", ";a=\"\xe9\""}) {
    CAPTURE(ext);
    decoded r = decode("3" + ext + "\r\nabc\r\n0" + ext + "\r\n\r\n");
    CHECK(r.status == 0);
    CHECK(r.done);
    CHECK(r.data == "abc");
  }
}

TEST_CASE("chunked: trailer fields are checked and dropped") {
  decoded r = decode("3\r\nabc\r\n0\r\nX-Sum: 1\r\nX-Empty:\r\nX-Other: a b\t\xe9\n\r\nrest");
  CHECK(r.status == 0);
  CHECK(r.done);
  CHECK(r.data == "abc");
  CHECK(r.used ==
        std::string("3\r\nabc\r\n0\r\nX-Sum: 1\r\nX-Empty:\r\nX-Other: a b\t\xe9\n\r\n").size());
  // Bare LFs throughout.
  decoded lf = decode("3\nabc\n0\nX: y\n\n");
  CHECK(lf.done);
  CHECK(lf.data == "abc");
}

TEST_CASE("chunked: malformed bodies are refused with 400") {
  for (std::string body : {
           "\r\nabc\r\n0\r\n\r\n"s,        // no size
           "0x3\r\nabc\r\n0\r\n\r\n"s,     // C-style hex
           "-3\r\nabc\r\n0\r\n\r\n"s,      // sign
           "+3\r\nabc\r\n0\r\n\r\n"s,      // sign
           " 3\r\nabc\r\n0\r\n\r\n"s,      // leading space
           "3 \r\nabc\r\n0\r\n\r\n"s,      // trailing space, no extension
           "3\t\r\nabc\r\n0\r\n\r\n"s,     // trailing tab
           "3g\r\nabc\r\n0\r\n\r\n"s,      // junk after the size
           "3\rabc\r\n0\r\n\r\n"s,         // bare CR
           "3;\r\nabc\r\n0\r\n\r\n"s,      // ";" without a name
           "3;a=\r\nabc\r\n0\r\n\r\n"s,    // "=" without a value
           "3;a b\r\nabc\r\n0\r\n\r\n"s,   // two tokens
           "3;a@b\r\nabc\r\n0\r\n\r\n"s,   // not a tchar
           "3;a=b@\r\nabc\r\n0\r\n\r\n"s,  // not a tchar in the value
           "3;a=b \r\nabc\r\n0\r\n\r\n"s,  // whitespace before the line end
           "3;a \r\nabc\r\n0\r\n\r\n"s,
           "3;a=\"b\r\nabc\r\n0\r\n\r\n"s,         // unterminated quoted-string
           "3;a=\"b\"c\r\nabc\r\n0\r\n\r\n"s,      // junk after it
           "3;a=\"b\x01\"\r\nabc\r\n0\r\n\r\n"s,   // control in it
           "3;a=\"\\\x01\"\r\nabc\r\n0\r\n\r\n"s,  // escaped control
           "3;a=b\x00\r\nabc\r\n0\r\n\r\n"s,
           "3\r\nabcd\r\n0\r\n\r\n"s,   // data longer than its size
           "3\r\nabc\rX0\r\n\r\n"s,     // bare CR after the data
           "3\r\nabc0\r\n\r\n"s,        // no CRLF after the data
           "0\r\n\r\r\n"s,              // bare CR in the final line
           "0\r\nX: a\r\n b\r\n\r\n"s,  // obs-fold in the trailer
           "0\r\n X: a\r\n\r\n"s,       // starts with whitespace
           "0\r\nX : a\r\n\r\n"s,       // whitespace before colon
           "0\r\n: a\r\n\r\n"s,         // empty name
           "0\r\nX a\r\n\r\n"s,         // no colon
           "0\r\nX: a\x00\r\n\r\n"s,    // NUL
           "0\r\nX: a\x7f\r\n\r\n"s,    // DEL
           "0\r\nX: a\rb\r\n\r\n"s,     // bare CR
       }) {
    CAPTURE(body);
    decoded whole = decode(body);
    CHECK(whole.status == 400);
    CHECK(describe(decode(body, 1)) == describe(whole));
  }
}

TEST_CASE("chunked: max_chunk_size and max_body_size give 413, as soon as the size says so") {
  parse_limits limits;
  limits.max_chunk_size = 16;
  limits.max_body_size = 40;
  std::string sixteen(16, 'x');
  CHECK(decode("10\r\n" + sixteen + "\r\n0\r\n\r\n", 1000, limits).status == 0);
  CHECK(decode("11\r\n", 1000, limits).status == 413);
  CHECK(decode("0011\r\n", 1000, limits).status == 413);
  // 16 + 16 + 8 = 40 is fine, one more byte is not.
  std::string forty =
      "10\r\n" + sixteen + "\r\n10\r\n" + sixteen + "\r\n8\r\n12345678\r\n0\r\n\r\n";
  CHECK(decode(forty, 1000, limits).status == 0);
  CHECK(decode(forty, 1000, limits).body_size == 40);
  std::string over = "10\r\n" + sixteen + "\r\n10\r\n" + sixteen + "\r\n9\r\n";
  decoded r = decode(over, 1, limits);
  CHECK(r.status == 413);
  CHECK(r.body_size == 32);  // refused before any of the chunk's data was taken
  // Defaults: 16 MiB per chunk, and a size too long to hold is refused, not wrapped around.
  CHECK(decode("1000000\r\n").status == 0);  // just waits for the data
  CHECK(decode("1000001\r\n").status == 413);
  CHECK(decode("10000000000000000000000003\r\n").status == 413);
  parse_limits unlimited;
  unlimited.max_chunk_size = unlimited.max_body_size = std::numeric_limits<std::uint64_t>::max();
  CHECK(decode("ffffffffffffffff\r\n", 1000, unlimited).status == 0);
  CHECK(decode("10000000000000000\r\n", 1000, unlimited).status == 413);
}

TEST_CASE("chunked: a chunk-size line is limited to max_start_line, trailers to the head limits") {
  parse_limits limits;
  limits.max_start_line = 10;
  CHECK(decode("3;abcdefgh\r\nabc\r\n0\r\n\r\n", 1000, limits).status == 0);  // 10 bytes
  CHECK(decode("3;abcdefghi\r\nabc\r\n0\r\n\r\n", 1000, limits).status == 400);
  CHECK(decode("00000000000003\r\nabc\r\n0\r\n\r\n", 1000, limits).status == 400);

  parse_limits small;
  small.max_header_size = 20;
  small.max_headers = 2;
  CHECK(decode("0\r\nA: 1\r\nB: 2\r\n\r\n", 1000, small).status == 0);  // 14 bytes
  CHECK(decode("0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", 1000, small).status == 431);
  CHECK(decode("0\r\nA: 123456789012345678\r\n\r\n", 1000, small).status == 431);
}

TEST_CASE("chunked: reset() starts a new body") {
  chunked_decoder d;
  std::string_view data;
  parse_error e;
  std::string first = "3\r\nabc\r\n0\r\n\r\n";
  std::string_view in = first;
  while (!d.done())
    in.remove_prefix(d.decode(in, data, e));
  CHECK(d.body_size() == 3);
  d.reset();
  CHECK_FALSE(d.done());
  CHECK(d.body_size() == 0);
  CHECK(d.decode("2\r\nxy", data, e) == 5);
  CHECK(data == "xy");
}

TEST_CASE("chunked: empty input and partial sizes need more, without an error") {
  chunked_decoder d;
  std::string_view data;
  parse_error e;
  CHECK(d.decode("", data, e) == 0);
  CHECK(d.decode("1", data, e) == 1);
  CHECK(d.decode("", data, e) == 0);
  CHECK(d.decode(";x=\"y", data, e) == 5);
  CHECK_FALSE(e);
  CHECK_FALSE(d.done());
}

// --- The corpus ----------------------------------------------------------------------------------

namespace {

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// The cases too large to keep as files (tests/http_corpus/README.md lists them).
std::vector<std::pair<std::string, std::string>> generated_corpus() {
  std::string big_head = "GET / HTTP/1.1\r\nHost: example.com\r\n";
  for (int i = 0; i < 2000; ++i) {
    std::string f = "X-Field-" + std::to_string(i) + ": ";
    big_head += f + std::string(38 - f.size(), 'v') + "\r\n";
  }
  return {
      {"414-long-target",
       "GET /" + std::string(8200, 'a') + " HTTP/1.1\r\nHost: example.com\r\n\r\n"},
      {"414-long-line-unfinished", "GET /" + std::string(9000, 'a')},
      {"431-huge-field",
       "GET / HTTP/1.1\r\nHost: example.com\r\nX-Big: " + std::string(70000, 'b') + "\r\n\r\n"},
      {"431-unfinished-huge-head", big_head},
  };
}

int expected_status(const std::string& name) {
  return std::stoi(name.substr(0, 3));
}

}  // namespace

TEST_CASE("corpus: every file gets the status its name says, whole and byte at a time") {
  std::filesystem::path dir = std::filesystem::path(SQUALL_SOURCE_ROOT) / "tests/http_corpus";
  REQUIRE(std::filesystem::is_directory(dir));
  int valid = 0, malformed = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() != ".http") continue;
    std::string name = entry.path().filename().string();
    std::string bytes = read_file(entry.path());
    CAPTURE(name);
    CHECK(bytes.size() < 4096);
    int want = expected_status(name);
    CHECK(corpus_status(bytes, false) == want);
    CHECK(corpus_status(bytes, true) == want);
    (want == 200 ? valid : malformed)++;
  }
  CHECK(valid >= 15);
  CHECK(malformed >= 40);
}

TEST_CASE("corpus: the generated cases") {
  for (const auto& c : generated_corpus()) {
    const std::string& name = c.first;
    const std::string& bytes = c.second;
    CAPTURE(name);
    CHECK(bytes.size() > 4096);
    CHECK(corpus_status(bytes, false) == expected_status(name));
  }
}

TEST_CASE("corpus: the unfinished heads are refused before they end") {
  for (const auto& c : generated_corpus()) {
    const std::string& name = c.first;
    const std::string& bytes = c.second;
    if (name.find("unfinished") == std::string::npos) continue;
    CAPTURE(name);
    parsed r = parse_bytewise(bytes);
    CHECK(r.status == expected_status(name));
  }
}
