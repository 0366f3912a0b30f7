// SPDX-License-Identifier: MIT
// WebSocket conformance, after the case families of the Autobahn|Testsuite: a squall echo server
// on 127.0.0.1 driven with raw frames from a blocking socket on a thread (frames are built and
// read here by hand, independently of frame.cpp), each case checking the exact bytes echoed or
// the close code. Then the handshake's refusals, limits, permessage-deflate, backpressure,
// concurrent senders, keep-alive pings, the close timeout, and squall's own client against the
// server and against a raw server misbehaving.
#include <zlib.h>

#include <atomic>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "doctest/doctest.h"
#include "http_test_util.hpp"
#include "squall/fiber.hpp"
#include "squall/http/server.hpp"
#include "squall/locks.hpp"
#include "squall/tcp_client.hpp"
#include "squall/tcp_server.hpp"
#include "squall/websocket/websocket.hpp"
#include "test_util.hpp"

using namespace squall;
using namespace squall::test;
using namespace std::chrono_literals;
namespace ws = squall::websocket;

namespace {

// --- Frames, by hand -----------------------------------------------------------------------------

constexpr unsigned char mask_key[4] = {0x37, 0xfa, 0x21, 0x3d};

// A frame as a client sends it (masked), or as a server does (masked = false).
std::string frame(int op, std::string_view payload, bool fin = true, int rsv = 0,
                  bool masked = true) {
  std::string f;
  f += static_cast<char>((fin ? 0x80 : 0) | (rsv << 4) | op);
  const int m = masked ? 0x80 : 0;
  const std::uint64_t n = payload.size();
  if (n < 126) {
    f += static_cast<char>(m | static_cast<int>(n));
  } else if (n < 65536) {
    f += static_cast<char>(m | 126);
    f += static_cast<char>(n >> 8);
    f += static_cast<char>(n & 0xff);
  } else {
    f += static_cast<char>(m | 127);
    for (int i = 7; i >= 0; --i)
      f += static_cast<char>((n >> (8 * i)) & 0xff);
  }
  if (!masked) return f + std::string(payload);
  f.append(reinterpret_cast<const char*>(mask_key), 4);
  for (std::size_t i = 0; i < payload.size(); ++i)
    f += static_cast<char>(payload[i] ^ static_cast<char>(mask_key[i % 4]));
  return f;
}

std::string server_frame(int op, std::string_view payload, bool fin = true, int rsv = 0) {
  return frame(op, payload, fin, rsv, false);
}

std::string close_payload(int code, std::string_view reason = {}) {
  std::string p;
  p += static_cast<char>(code >> 8);
  p += static_cast<char>(code & 0xff);
  return p + std::string(reason);
}

enum op : int { cont = 0, text = 1, binary = 2, close_op = 8, ping = 9, pong = 10 };

std::string handshake(std::uint16_t port, std::string_view path, std::string_view extra) {
  return "GET " + std::string(path) + " HTTP/1.1\r\nHost: 127.0.0.1:" + std::to_string(port) +
         "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" +
         std::string(extra) + "\r\n";
}

struct rframe {
  int op = -1;  // -1: the stream ended (or timed out) first
  bool fin = false;
  int rsv = 0;
  bool masked = false;
  std::string payload;
  std::string raw;  // the frame's bytes as received
};

// A WebSocket client made of a blocking socket: sends bytes, reads frames.
class raw_ws {
 public:
  explicit raw_ws(std::uint16_t port, std::string_view path = "/echo", std::string_view extra = {},
                  int timeout_ms = 5000)
      : c_(port, timeout_ms) {
    c_.send(handshake(port, path, extra));
    head_ = c_.response();
  }
  int status() const { return status_of(head_); }
  const std::string& head() const { return head_; }
  std::string header(std::string_view name) const { return header_of(head_, name); }

  bool send(std::string_view bytes) { return c_.send(bytes); }
  // In pieces of `chunk` bytes, with a pause between them.
  bool send_chunked(std::string_view bytes, std::size_t chunk, int pause_ms = 0) {
    for (std::size_t at = 0; at < bytes.size(); at += chunk) {
      if (!c_.send(bytes.substr(at, chunk))) return false;
      if (pause_ms) std::this_thread::sleep_for(std::chrono::milliseconds(pause_ms));
    }
    return true;
  }
  bool send_frame(int op, std::string_view payload, bool fin = true, int rsv = 0) {
    return send(frame(op, payload, fin, rsv));
  }

  rframe next() {
    rframe f;
    if (!need(2)) return f;
    auto b = [&](std::size_t i) { return static_cast<unsigned char>(buf()[i]); };
    std::uint64_t len = b(1) & 0x7f;
    std::size_t hl = 2;
    if (len == 126) {
      hl = 4;
      if (!need(hl)) return f;
      len = std::uint64_t(b(2)) << 8 | b(3);
    } else if (len == 127) {
      hl = 10;
      if (!need(hl)) return f;
      len = 0;
      for (int i = 2; i < 10; ++i)
        len = len << 8 | b(static_cast<std::size_t>(i));
    }
    f.masked = b(1) & 0x80;
    if (f.masked) hl += 4;
    if (!need(hl + len)) return f;
    f.op = b(0) & 0x0f;
    f.fin = b(0) & 0x80;
    f.rsv = (b(0) >> 4) & 7;
    f.raw = buf().substr(0, hl + len);
    f.payload = buf().substr(hl, len);
    buf().erase(0, hl + len);
    return f;
  }

  // Reads until a close frame; returns its code (1005 when it has none, -2 when its payload is
  // not 0 or 2 bytes long), or 0 if the stream ended first. Frames before it are kept.
  int expect_close() {
    for (;;) {
      rframe f = next();
      if (f.op < 0) return 0;
      if (f.op != close_op) {
        before_close.push_back(f);
        continue;
      }
      if (f.payload.empty()) return 1005;
      if (f.payload.size() < 2) return -2;
      close_reason = f.payload.substr(2);
      return static_cast<unsigned char>(f.payload[0]) << 8 |
             static_cast<unsigned char>(f.payload[1]);
    }
  }
  // The server closes the TCP connection (end of stream, nothing more).
  bool ends() { return buf().empty() && c_.closed(); }

  // The failing-connection check: a close with `code` (and nothing else after the frames the
  // case expects), our echo of it, then the end of the stream.
  int fail_code() {
    int code = expect_close();
    if (code > 0) send_frame(close_op, code == 1005 ? "" : close_payload(code));
    if (!ends()) return -1;
    return code;
  }
  // A clean end: we close with 1000, the server echoes it and closes.
  bool clean_close() {
    if (!send_frame(close_op, close_payload(1000))) return false;
    int code = expect_close();
    return code == 1000 && ends();
  }

  raw_client& client() { return c_; }
  std::vector<rframe> before_close;
  std::string close_reason;

 private:
  std::string& buf() { return c_.buffered(); }
  bool need(std::size_t n) {
    while (buf().size() < n) {
      char tmp[65536];
      ssize_t r = ::recv(c_.fd(), tmp, sizeof tmp, 0);
      if (r <= 0) return false;
      buf().append(tmp, static_cast<std::size_t>(r));
    }
    return true;
  }
  raw_client c_;
  std::string head_;
};

// --- The server under test -----------------------------------------------------------------------

struct server_result {
  std::uint16_t code = 0;
  std::string reason;
};

struct fixture {
  io_loop loop;
  std::unique_ptr<http::server> srv;
  std::uint16_t port = 0;
  // Options for each accepted connection (options hold a unique_function: made fresh each time).
  std::function<ws::options()> make_options = [] { return ws::options{}; };
  std::vector<server_result> results;  // one per connection, when its handler ends
  std::string subprotocol;
  bool compressed = false;

  fixture() { start(); }
  void start(http::router extra = {}) {
    http::router routes = std::move(extra);
    routes.get("/echo", [this](http::request& req, http::response& resp) {
      auto c = ws::accept(req, resp, make_options());
      subprotocol = c.subprotocol();
      compressed = c.compressed();
      while (auto m = c.receive())
        c.send(m->data, m->type);
      results.push_back({c.close_code(), c.close_reason()});
    });
    srv = std::make_unique<http::server>(loop, std::move(routes));
    srv->listen(0, "127.0.0.1");
    port = srv->addresses().at(0).port();
  }
  void restart(http::router extra) {
    srv.reset();
    start(std::move(extra));
  }
  template <class F>
  auto peer(F fn, duration limit = 60s) {
    return off_loop(loop, std::move(fn), limit);
  }
  // Runs the loop until the server has seen `n` connections end.
  bool wait_results(std::size_t n) {
    return run_until(
        loop, [&] { return results.size() >= n; }, 10s);
  }
  ~fixture() {
    srv.reset();
    run_until(
        loop, [&] { return fiber_count(loop) == 0; }, 5s);
  }
};

// One Autobahn-style case: what the client sends, what it must get back, and how it ends.
struct step {
  std::string bytes;
  std::size_t chunk = 0;  // send in pieces of this size (0: at once)
  int pause_ms = 0;       // after each piece (or after the whole)
};

struct ws_case {
  std::string name;
  std::vector<step> send;
  std::vector<std::string> expect;  // frames from the server, exact bytes, in order
  int close = 0;                    // 0: the case ends with a clean close; else the code expected
};

void run_case(fixture& f, const ws_case& c) {
  CAPTURE(c.name);
  std::size_t before = f.results.size();
  std::string err = f.peer([&]() -> std::string {
    raw_ws w(f.port);
    if (w.status() != 101) return "handshake: " + w.head();
    for (const auto& s : c.send) {
      if (s.chunk)
        w.send_chunked(s.bytes, s.chunk, s.pause_ms);
      else {
        w.send(s.bytes);
        if (s.pause_ms) std::this_thread::sleep_for(std::chrono::milliseconds(s.pause_ms));
      }
    }
    for (std::size_t i = 0; i < c.expect.size(); ++i) {
      rframe fr = w.next();
      if (fr.raw != c.expect[i])
        return "frame " + std::to_string(i) + ": got op " + std::to_string(fr.op) + " size " +
               std::to_string(fr.payload.size()) + ", wanted " +
               std::to_string(c.expect[i].size()) + " bytes";
    }
    if (c.close == 0) return w.clean_close() ? "" : "no clean close";
    int code = w.fail_code();
    if (code != c.close || !w.before_close.empty())
      return "close " + std::to_string(code) + " (wanted " + std::to_string(c.close) + ") after " +
             std::to_string(w.before_close.size()) + " extra frames";
    return "";
  });
  CHECK(err == "");
  REQUIRE(f.wait_results(before + 1));
  CHECK(f.results.back().code == (c.close ? c.close : 1000));
}

std::string repeat(std::size_t n, char c) {
  return std::string(n, c);
}

// --- zlib, for permessage-deflate from the test's side -------------------------------------------

struct zdeflate {
  z_stream zs{};
  explicit zdeflate(int bits) {
    REQUIRE(deflateInit2(&zs, 6, Z_DEFLATED, -bits, 8, Z_DEFAULT_STRATEGY) == Z_OK);
  }
  ~zdeflate() { deflateEnd(&zs); }
  // A message's compressed payload: sync flush, without the final 00 00 ff ff.
  std::string compress(std::string_view in) {
    std::string out(in.size() + 1024, '\0');
    zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
    zs.avail_in = static_cast<uInt>(in.size());
    zs.next_out = reinterpret_cast<Bytef*>(out.data());
    zs.avail_out = static_cast<uInt>(out.size());
    REQUIRE(deflate(&zs, Z_SYNC_FLUSH) == Z_OK);
    out.resize(out.size() - zs.avail_out);
    REQUIRE(out.size() >= 4);
    out.resize(out.size() - 4);
    return out;
  }
  void reset() { deflateReset(&zs); }
};

struct zinflate {
  z_stream zs{};
  zinflate() { REQUIRE(inflateInit2(&zs, -15) == Z_OK); }
  ~zinflate() { inflateEnd(&zs); }
  std::string decompress(std::string in) {
    in.append("\x00\x00\xff\xff", 4);
    std::string out;
    zs.next_in = reinterpret_cast<Bytef*>(in.data());
    zs.avail_in = static_cast<uInt>(in.size());
    char buf[65536];
    while (zs.avail_in > 0) {
      zs.next_out = reinterpret_cast<Bytef*>(buf);
      zs.avail_out = sizeof buf;
      int rc = inflate(&zs, Z_SYNC_FLUSH);
      if (rc != Z_OK && rc != Z_BUF_ERROR) return "<inflate error>";
      out.append(buf, sizeof buf - zs.avail_out);
      if (rc == Z_BUF_ERROR) break;
    }
    return out;
  }
};

long rss_kib() {
  std::ifstream f("/proc/self/statm");
  long pages = 0, resident = 0;
  f >> pages >> resident;
  return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

}  // namespace

// --- The handshake -------------------------------------------------------------------------------

TEST_CASE("handshake: RFC 6455's example key, 101 with the accept value") {
  fixture f;
  f.peer([&] {
    raw_ws w(f.port);
    CHECK(w.status() == 101);
    CHECK(w.header("sec-websocket-accept") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    CHECK(w.header("upgrade") == "websocket");
    CHECK(w.header("connection") == "Upgrade");
    CHECK(w.header("sec-websocket-protocol") == "");
    CHECK(w.header("sec-websocket-extensions") == "");
    CHECK(w.clean_close());
  });
}

TEST_CASE("handshake refusals: 400, 426 with the version, 403 for a foreign Origin") {
  fixture f;
  auto raw = [&](const std::string& req) {
    return f.peer([&] {
      raw_client c(f.port);
      c.send(req);
      return c.response();
    });
  };
  auto req = [&](std::string_view drop, std::string_view add) {
    std::string r = handshake(f.port, "/echo", add);
    if (!drop.empty()) {
      std::size_t at = r.find(drop);
      REQUIRE(at != std::string::npos);
      r.erase(at, r.find("\r\n", at) + 2 - at);
    }
    return r;
  };
  CHECK(status_of(raw(req("Sec-WebSocket-Key:", ""))) == 400);
  CHECK(status_of(raw(req("Upgrade:", ""))) == 400);
  CHECK(status_of(raw(req("Connection:", "Connection: keep-alive\r\n"))) == 400);
  {
    std::string r = req("Sec-WebSocket-Key:", "Sec-WebSocket-Key: c2hvcnQ=\r\n");
    CHECK(status_of(raw(r)) == 400);
  }
  {
    std::string r = req("Sec-WebSocket-Version:", "Sec-WebSocket-Version: 12\r\n");
    std::string resp = raw(r);
    CHECK(status_of(resp) == 426);
    CHECK(header_of(resp, "sec-websocket-version") == "13");
  }
  CHECK(status_of(raw(req("", "Origin: http://evil.example\r\n"))) == 403);
  CHECK(status_of(raw(req("", "Origin: http://127.0.0.1:" + std::to_string(f.port) + "\r\n"))) ==
        101);
  {
    std::string post = req("", "");
    post.replace(0, 3, "POST");
    CHECK(status_of(raw(post)) == 405);  // the router's answer: the route is GET only
  }
  // A custom origin check.
  f.make_options = [] {
    ws::options o;
    o.check_origin = [](std::string_view origin, const http::request&) {
      return origin == "https://ok.example";
    };
    return o;
  };
  CHECK(status_of(raw(req("", "Origin: https://ok.example\r\n"))) == 101);
  CHECK(status_of(raw(req("", "Origin: http://127.0.0.1\r\n"))) == 403);
}

TEST_CASE("handshake: subprotocol selection follows the server's order") {
  fixture f;
  f.make_options = [] {
    ws::options o;
    o.subprotocols = {"chat.v2", "chat.v1"};
    return o;
  };
  f.peer([&] {
    raw_ws w(f.port, "/echo", "Sec-WebSocket-Protocol: chat.v1, chat.v2\r\n");
    CHECK(w.status() == 101);
    CHECK(w.header("sec-websocket-protocol") == "chat.v2");
    CHECK(w.clean_close());
  });
  CHECK(f.subprotocol == "chat.v2");
  f.peer([&] {
    raw_ws w(f.port, "/echo",
             "Sec-WebSocket-Protocol: other\r\nSec-WebSocket-Protocol: chat.v1\r\n");
    CHECK(w.header("sec-websocket-protocol") == "chat.v1");
    CHECK(w.clean_close());
  });
  f.peer([&] {
    raw_ws w(f.port, "/echo", "Sec-WebSocket-Protocol: mqtt\r\n");
    CHECK(w.status() == 101);
    CHECK(w.header("sec-websocket-protocol") == "");
    CHECK(w.clean_close());
  });
  CHECK(f.subprotocol == "");
}

// --- 1.x: framing --------------------------------------------------------------------------------

TEST_CASE("1.x framing: text and binary messages of 0 to 65536+ bytes echoed exactly") {
  fixture f;
  std::vector<ws_case> cases;
  for (std::size_t n : {0, 125, 126, 127, 128, 65535, 65536, 200000}) {
    std::string t = repeat(n, '*');
    cases.push_back({"1.1 text " + std::to_string(n), {{frame(text, t)}}, {server_frame(text, t)}});
    std::string b = repeat(n, '\xfe');
    cases.push_back(
        {"1.2 binary " + std::to_string(n), {{frame(binary, b)}}, {server_frame(binary, b)}});
  }
  std::string t = repeat(65536, '*');
  cases.push_back(
      {"1.1.8 text 65536 in 997-byte chunks", {{frame(text, t), 997}}, {server_frame(text, t)}});
  std::string b = repeat(65536, '\xfe');
  cases.push_back({"1.2.8 binary 65536 in 997-byte chunks",
                   {{frame(binary, b), 997}},
                   {server_frame(binary, b)}});
  for (const auto& c : cases)
    run_case(f, c);
}

// --- 2.x: pings and pongs ------------------------------------------------------------------------

TEST_CASE("2.x pings and pongs") {
  fixture f;
  std::string bin = "\x00\xff\xfe\xfd\xfc\xfb\x00\xff";
  std::string p125 = repeat(125, '\xfe');
  std::vector<ws_case> cases = {
      {"2.1 ping without payload", {{frame(ping, "")}}, {server_frame(pong, "")}},
      {"2.2 ping with text",
       {{frame(ping, "Hello, world!")}},
       {server_frame(pong, "Hello, world!")}},
      {"2.3 ping with binary", {{frame(ping, bin)}}, {server_frame(pong, bin)}},
      {"2.4 ping with 125 bytes", {{frame(ping, p125)}}, {server_frame(pong, p125)}},
      {"2.5 ping with 126 bytes", {{frame(ping, repeat(126, '\xfe'))}}, {}, 1002},
      {"2.6 ping with 125 bytes, 1 byte at a time",
       {{frame(ping, p125), 1, 1}},
       {server_frame(pong, p125)}},
      {"2.7 unsolicited pong", {{frame(pong, "")}}, {}},
      {"2.8 unsolicited pong with payload", {{frame(pong, "unsolicited")}}, {}},
      {"2.9 unsolicited pong, then ping",
       {{frame(pong, "unsolicited")}, {frame(ping, "ping")}},
       {server_frame(pong, "ping")}},
  };
  ws_case ten{"2.10 ten pings", {}, {}};
  ws_case ten_bytes{"2.11 ten pings, byte by byte", {}, {}};
  for (int i = 0; i < 10; ++i) {
    std::string p = "payload-" + std::to_string(i);
    ten.send.push_back({frame(ping, p)});
    ten.expect.push_back(server_frame(pong, p));
    ten_bytes.send.push_back({frame(ping, p), 1});
    ten_bytes.expect.push_back(server_frame(pong, p));
  }
  cases.push_back(ten);
  cases.push_back(ten_bytes);
  for (const auto& c : cases)
    run_case(f, c);
}

// --- 3.x: reserved bits --------------------------------------------------------------------------

TEST_CASE("3.x reserved bits are a protocol error (1002)") {
  fixture f;
  std::vector<ws_case> cases = {
      {"3.1 RSV1 on text", {{frame(text, "Hello, world!", true, 4)}}, {}, 1002},
      {"3.2 RSV2 on text after a good one, then a ping",
       {{frame(text, "Hello, world!")}, {frame(text, "Hello, world!", true, 2)}, {frame(ping, "")}},
       {server_frame(text, "Hello, world!")},
       1002},
      {"3.3 RSV1+RSV2, same, slowly",
       {{frame(text, "Hello, world!"), 0, 10},
        {frame(text, "Hello, world!", true, 6), 0, 10},
        {frame(ping, "")}},
       {server_frame(text, "Hello, world!")},
       1002},
      {"3.4 RSV3 on text, byte by byte",
       {{frame(text, "Hello, world!")},
        {frame(text, "Hello, world!", true, 1), 1},
        {frame(ping, "")}},
       {server_frame(text, "Hello, world!")},
       1002},
      {"3.5 RSV1+RSV3 on binary", {{frame(binary, "\x00\xff\xfe", true, 5)}}, {}, 1002},
      {"3.6 RSV2+RSV3 on ping", {{frame(ping, "Hello", true, 3)}}, {}, 1002},
      {"3.7 all RSV bits on close", {{frame(close_op, close_payload(1000), true, 7)}}, {}, 1002},
  };
  for (const auto& c : cases)
    run_case(f, c);
}

// --- 4.x: opcodes --------------------------------------------------------------------------------

TEST_CASE("4.x reserved opcodes are a protocol error (1002)") {
  fixture f;
  std::vector<ws_case> cases;
  for (int op : {3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF}) {
    cases.push_back({"4.x opcode " + std::to_string(op), {{frame(op, "")}}, {}, 1002});
    cases.push_back(
        {"4.x opcode " + std::to_string(op) + " with payload after a message, then ping",
         {{frame(text, "Hello")}, {frame(op, "reserved")}, {frame(ping, "")}},
         {server_frame(text, "Hello")},
         1002});
  }
  for (const auto& c : cases)
    run_case(f, c);
}

// --- 5.x: fragmentation --------------------------------------------------------------------------

TEST_CASE("5.x fragmentation, with control frames between fragments") {
  fixture f;
  std::vector<ws_case> cases = {
      {"5.1 fragmented ping", {{frame(ping, "frag1", false)}, {frame(cont, "frag2")}}, {}, 1002},
      {"5.2 fragmented pong", {{frame(pong, "frag1", false)}, {frame(cont, "frag2")}}, {}, 1002},
      {"5.3 text in 2 fragments",
       {{frame(text, "frag1", false)}, {frame(cont, "frag2")}},
       {server_frame(text, "frag1frag2")}},
      {"5.4 text in 2 fragments, with a pause",
       {{frame(text, "frag1", false), 0, 50}, {frame(cont, "frag2")}},
       {server_frame(text, "frag1frag2")}},
      {"5.5 text in 2 fragments, byte by byte",
       {{frame(text, "frag1", false), 1, 1}, {frame(cont, "frag2"), 1, 1}},
       {server_frame(text, "frag1frag2")}},
      {"5.6 text in 2 fragments, a ping between",
       {{frame(text, "frag1", false)}, {frame(ping, "ping")}, {frame(cont, "frag2")}},
       {server_frame(pong, "ping"), server_frame(text, "frag1frag2")}},
      {"5.7 same, with pauses",
       {{frame(text, "frag1", false), 0, 20}, {frame(ping, "ping"), 0, 20}, {frame(cont, "frag2")}},
       {server_frame(pong, "ping"), server_frame(text, "frag1frag2")}},
      {"5.8 same, byte by byte",
       {{frame(text, "frag1", false), 1}, {frame(ping, "ping"), 1}, {frame(cont, "frag2"), 1}},
       {server_frame(pong, "ping"), server_frame(text, "frag1frag2")}},
      {"5.9 continuation (fin) without a start",
       {{frame(cont, "non-continuation payload")}, {frame(text, "Hello, world!")}},
       {},
       1002},
      {"5.10 same, byte by byte",
       {{frame(cont, "non-continuation payload"), 1}, {frame(text, "Hello, world!")}},
       {},
       1002},
      {"5.12 continuation (not fin) without a start",
       {{frame(cont, "non-continuation payload", false)}, {frame(text, "Hello, world!")}},
       {},
       1002},
      {"5.15 a new text message inside a fragmented one",
       {{frame(text, "fragment1", false)},
        {frame(cont, "fragment2")},
        {frame(cont, "fragment3", false)},
        {frame(text, "fragment4")}},
       {server_frame(text, "fragment1fragment2")},
       1002},
      {"5.17 text inside a fragmented message",
       {{frame(text, "fragment1", false)}, {frame(text, "fragment2")}},
       {},
       1002},
      {"5.18 binary inside a fragmented text message",
       {{frame(text, "fragment1", false)}, {frame(binary, "fragment2")}},
       {},
       1002},
      {"5.20 5 fragments, pings between, with pauses",
       {{frame(text, "fragment1", false), 0, 10},
        {frame(cont, "fragment2", false), 0, 10},
        {frame(ping, "pongme 1!"), 0, 10},
        {frame(cont, "fragment3", false), 0, 10},
        {frame(cont, "fragment4", false), 0, 10},
        {frame(ping, "pongme 2!"), 0, 10},
        {frame(cont, "fragment5")}},
       {server_frame(pong, "pongme 1!"), server_frame(pong, "pongme 2!"),
        server_frame(text, "fragment1fragment2fragment3fragment4fragment5")}},
      {"binary in 3 fragments, empty middle",
       {{frame(binary, "\x01\x02", false)}, {frame(cont, "", false)}, {frame(cont, "\x03")}},
       {server_frame(binary, "\x01\x02\x03")}},
      {"fragmented close", {{frame(close_op, close_payload(1000), false)}}, {}, 1002},
  };
  for (const auto& c : cases)
    run_case(f, c);
}

// --- 6.x: UTF-8 ----------------------------------------------------------------------------------

TEST_CASE("6.x UTF-8: valid text split anywhere is echoed, invalid text closes with 1007") {
  fixture f;
  std::vector<ws_case> cases;
  const std::string hello =
      "Hello-\xc2\xb5@\xc3\x9f\xc3\xb6\xc3\xa4\xc3\xbc\xc3\xa0\xc3\xa1-UTF-8!!";
  // 6.2: split into 2 fragments at every position (also inside a character).
  for (std::size_t at = 0; at <= hello.size(); ++at)
    cases.push_back({"6.2 split at " + std::to_string(at),
                     {{frame(text, hello.substr(0, at), false)}, {frame(cont, hello.substr(at))}},
                     {server_frame(text, hello)}});
  // 6.2.4-ish: one fragment per byte.
  {
    ws_case c{"6.2 one fragment per byte", {}, {server_frame(text, hello)}};
    for (std::size_t i = 0; i < hello.size(); ++i)
      c.send.push_back({frame(i == 0 ? text : cont, hello.substr(i, 1), i + 1 == hello.size())});
    cases.push_back(c);
  }
  // Boundaries and valid sequences (6.5, 6.7, 6.11...).
  for (std::string v :
       {std::string("\x00", 1), std::string("\x7f"), std::string("\xc2\x80"),
        std::string("\xdf\xbf"), std::string("\xe0\xa0\x80"), std::string("\xed\x9f\xbf"),
        std::string("\xee\x80\x80"), std::string("\xef\xbf\xbd"), std::string("\xef\xbf\xbf"),
        std::string("\xf0\x90\x80\x80"), std::string("\xf4\x8f\xbf\xbf"),
        std::string("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5")})
    cases.push_back({"6.x valid " + std::to_string(v.size()) + " bytes",
                     {{frame(text, v)}},
                     {server_frame(text, v)}});
  // Invalid (6.3, 6.6, 6.8, 6.9, 6.10, 6.12-6.21): each closes with 1007.
  for (std::string v :
       {std::string(
            "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69\x74\x65\x64"),
        std::string("\xc0\x80"),
        std::string("\xc1\xbf"),
        std::string("\xe0\x80\x80"),
        std::string("\xe0\x9f\xbf"),
        std::string("\xf0\x80\x80\x80"),
        std::string("\xf0\x8f\xbf\xbf"),
        std::string("\xf4\x90\x80\x80"),
        std::string("\xf5\x80\x80\x80"),
        std::string("\xed\xa0\x80"),
        std::string("\xed\xbf\xbf"),
        std::string("\xed\xa0\x80\xed\xb0\x80"),
        std::string("\x80"),
        std::string("\xbf"),
        std::string("\x80\xbf\x80"),
        std::string("\xc0"),
        std::string("\xe0\x80"),
        std::string("\xf0\x80\x80"),
        std::string("\xfe"),
        std::string("\xff"),
        std::string("\xfe\xfe\xff\xff"),
        std::string("\xc2\x41"),
        std::string("\xe1\x80\x41"),
        std::string("\xf8\x88\x80\x80\x80"),
        std::string("\xfc\x84\x80\x80\x80\x80")})
    cases.push_back({"6.x invalid " + std::to_string(static_cast<unsigned char>(v[0])) + " len " +
                         std::to_string(v.size()),
                     {{frame(text, v)}},
                     {},
                     1007});
  // A message that ends inside a character.
  cases.push_back({"6.x truncated at the end, fragmented",
                   {{frame(text, "ab\xe2\x82", false)}, {frame(cont, "")}},
                   {},
                   1007});
  // Invalid text in fragments where each fragment alone looks fine (6.3.2).
  cases.push_back({"6.3.2 invalid across fragments",
                   {{frame(text, "\xce\xba\xe1\xbd\xb9\xcf\x83", false)},
                    {frame(cont, "\xce\xbc\xce\xb5\xed\xa0", false)},
                    {frame(cont, "\x80\x65\x64\x69\x74\x65\x64")}},
                   {},
                   1007});
  // Binary messages are not checked.
  cases.push_back({"binary is not UTF-8 checked",
                   {{frame(binary, "\xff\xfe")}},
                   {server_frame(binary, "\xff\xfe")}});
  for (const auto& c : cases)
    run_case(f, c);
}

TEST_CASE("6.4 fail fast: the 1007 arrives before the rest of the invalid message is sent") {
  fixture f;
  // 6.4.1: three fragments; the second makes the text invalid (0x110000 in UTF-8's scheme).
  f.peer([&] {
    raw_ws w(f.port);
    w.send_frame(text, "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5", false);
    w.send_frame(cont, "\xf4\x90\x80\x80", false);
    // Nothing more is sent until the close has arrived.
    CHECK(w.expect_close() == 1007);
    w.send_frame(cont, "\x65\x64\x69\x74\x65\x64");
    w.send_frame(close_op, close_payload(1007));
    CHECK(w.ends());
  });
  REQUIRE(f.wait_results(1));
  CHECK(f.results.back().code == 1007);
  // 6.4.3: one frame, its invalid bytes in the middle; the rest of the frame is held back.
  f.peer([&] {
    raw_ws w(f.port);
    std::string payload =
        "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80\x65\x64\x69";
    std::string fr = frame(text, payload);
    std::size_t first = fr.size() - payload.size() + 11;  // header and the valid prefix
    w.send(fr.substr(0, first));
    std::this_thread::sleep_for(50ms);
    w.send(fr.substr(first, 4));  // the invalid code point
    CHECK(w.expect_close() == 1007);
    w.send(fr.substr(first + 4));
    w.send_frame(close_op, close_payload(1007));
    CHECK(w.ends());
  });
  // 6.4.4: the frame stops right after the first invalid byte.
  f.peer([&] {
    raw_ws w(f.port);
    std::string payload =
        "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80\x65\x64\x69";
    std::string fr = frame(text, payload);
    std::size_t first = fr.size() - payload.size() + 12;  // ... and 0xf4 0x90
    w.send(fr.substr(0, first + 1));
    CHECK(w.expect_close() == 1007);
  });
  REQUIRE(f.wait_results(3));
  CHECK(f.results.back().code == 1007);
}

// --- 7.x: closing --------------------------------------------------------------------------------

TEST_CASE("7.x close handshake: codes, reasons, and what comes after a close") {
  fixture f;
  std::vector<ws_case> cases = {
      {"7.3.1 close without payload", {{frame(close_op, "")}}, {server_frame(close_op, "")}, -1},
      {"7.3.2 close with a 1-byte payload", {{frame(close_op, "a")}}, {}, 1002},
      {"7.3.3 close 1000",
       {{frame(close_op, close_payload(1000))}},
       {server_frame(close_op, close_payload(1000))},
       -1},
      {"7.3.4 close 1000 with a reason",
       {{frame(close_op, close_payload(1000, "Hello World!"))}},
       {server_frame(close_op, close_payload(1000))},
       -1},
      {"7.3.5 close 1000 with a 123-byte reason",
       {{frame(close_op, close_payload(1000, repeat(123, '*')))}},
       {server_frame(close_op, close_payload(1000))},
       -1},
      {"7.3.6 close 1000 with a 124-byte reason",
       {{frame(close_op, close_payload(1000, repeat(124, '*')))}},
       {},
       1002},
      {"7.5.1 close reason not UTF-8",
       {{frame(close_op,
               close_payload(1000, "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80"))}},
       {},
       1007},
  };
  for (int code : {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999})
    cases.push_back({"7.7 valid close code " + std::to_string(code),
                     {{frame(close_op, close_payload(code))}},
                     {server_frame(close_op, close_payload(code))},
                     -1});
  for (int code : {0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535})
    cases.push_back({"7.9 invalid close code " + std::to_string(code),
                     {{frame(close_op, close_payload(code))}},
                     {},
                     1002});
  for (const auto& c : cases) {
    if (c.close != -1) {
      run_case(f, c);
      continue;
    }
    // The peer closes: the echo is exact, then the server ends the TCP connection.
    CAPTURE(c.name);
    std::size_t before = f.results.size();
    f.peer([&] {
      raw_ws w(f.port);
      w.send(c.send[0].bytes);
      CHECK(w.next().raw == c.expect[0]);
      CHECK(w.ends());
    });
    REQUIRE(f.wait_results(before + 1));
  }
  std::size_t n = f.results.size();
  // The codes the server reports: the peer's, 1005 for none, the reason too.
  f.peer([&] {
    raw_ws w(f.port);
    w.send_frame(close_op, close_payload(4321, "bye now"));
    CHECK(w.expect_close() == 4321);
    CHECK(w.ends());
  });
  REQUIRE(f.wait_results(n + 1));
  CHECK(f.results.back().code == 4321);
  CHECK(f.results.back().reason == "bye now");
  f.peer([&] {
    raw_ws w(f.port);
    w.send_frame(close_op, "");
    CHECK(w.expect_close() == 1005);
    CHECK(w.ends());
  });
  REQUIRE(f.wait_results(n + 2));
  CHECK(f.results.back().code == 1005);
}

TEST_CASE("7.1 data after a close is ignored; one close answers one close") {
  fixture f;
  // 7.1.1: a message, then close.
  f.peer([&] {
    raw_ws w(f.port);
    w.send_frame(text, "Hello World!");
    w.send_frame(close_op, close_payload(1000));
    CHECK(w.next().raw == server_frame(text, "Hello World!"));
    CHECK(w.next().raw == server_frame(close_op, close_payload(1000)));
    CHECK(w.ends());
  });
  // 7.1.2 to 7.1.4: close, then close again / a ping / a message: only the one close comes back.
  for (std::string after :
       {frame(close_op, close_payload(1000)), frame(ping, "ping"), frame(text, "Hello World!")}) {
    f.peer([&] {
      raw_ws w(f.port);
      w.send(frame(close_op, close_payload(1000)) + after);
      CHECK(w.next().raw == server_frame(close_op, close_payload(1000)));
      CHECK(w.ends());
    });
  }
  // 7.1.5: first fragment, close, second fragment: the message is never echoed.
  f.peer([&] {
    raw_ws w(f.port);
    w.send_frame(text, "fragment1", false);
    w.send_frame(close_op, close_payload(1000));
    w.send_frame(cont, "fragment2");
    CHECK(w.next().raw == server_frame(close_op, close_payload(1000)));
    CHECK(w.ends());
  });
  // 7.1.6: a large message, a ping, then close: all answered in order.
  f.peer([&] {
    raw_ws w(f.port);
    std::string big = repeat(256 * 1024, 'B');
    w.send(frame(text, big) + frame(ping, "ping") + frame(close_op, close_payload(1000)));
    CHECK(w.next().raw == server_frame(text, big));
    CHECK(w.next().raw == server_frame(pong, "ping"));
    CHECK(w.next().raw == server_frame(close_op, close_payload(1000)));
    CHECK(w.ends());
  });
  REQUIRE(f.wait_results(6));
  for (const auto& r : f.results)
    CHECK(r.code == 1000);
}

TEST_CASE("the server's close: close() waits for the echo; close_timeout when none comes") {
  fixture f;
  std::vector<std::pair<std::uint16_t, duration>> seen;
  http::router r;
  r.get("/closer", [&](http::request& req, http::response& resp) {
    ws::options o;
    o.close_timeout = 300ms;
    auto c = ws::accept(req, resp, std::move(o));
    CHECK(c.receive());  // the client says when
    auto t0 = io_loop::now();
    c.close(4001, "server closing");
    seen.emplace_back(c.close_code(), io_loop::now() - t0);
    CHECK(c.closed());
    CHECK(!c.receive());
    CHECK(code_of([&] { c.send_text("late"); }) == error::closed);
  });
  f.restart(std::move(r));
  // The client answers: close_code is the client's, quickly.
  f.peer([&] {
    raw_ws w(f.port, "/closer");
    w.send_frame(text, "go");
    CHECK(w.expect_close() == 4001);
    CHECK(w.close_reason == "server closing");
    w.send_frame(close_op, close_payload(4001));
    CHECK(w.ends());
  });
  REQUIRE(run_until(f.loop, [&] { return seen.size() == 1; }));
  CHECK(seen[0].first == 4001);
  CHECK(seen[0].second < 250ms);
  // The client never answers: after close_timeout the server drops the connection (1006).
  f.peer([&] {
    raw_ws w(f.port, "/closer");
    // Before "go": the server's 300 ms start when it reads it, so they cannot start earlier
    // than this, however late this thread wakes afterwards.
    auto t0 = std::chrono::steady_clock::now();
    w.send_frame(text, "go");
    CHECK(w.expect_close() == 4001);
    CHECK(w.ends());
    CHECK(std::chrono::steady_clock::now() - t0 >= 290ms);
  });
  REQUIRE(run_until(f.loop, [&] { return seen.size() == 2; }));
  CHECK(seen[1].first == 1006);
  CHECK(seen[1].second >= 290ms);
  CHECK(seen[1].second < 2s);
}

// --- 9.x-style sizes and limits ------------------------------------------------------------------

TEST_CASE("9.x large messages, whole and fragmented, and max_message_size (1009)") {
  fixture f;
  for (std::size_t n : {std::size_t(1) << 20, std::size_t(4) << 20}) {
    std::string big(n, 'x');
    for (std::size_t i = 0; i < n; i += 7)
      big[i] = static_cast<char>('a' + i % 26);
    run_case(f, {"9.1 text " + std::to_string(n), {{frame(text, big)}}, {server_frame(text, big)}});
    for (std::size_t frag : {std::size_t(64), std::size_t(4096), std::size_t(1) << 20}) {
      ws_case c{"9.3 fragmented in " + std::to_string(frag), {}, {server_frame(binary, big)}};
      std::string wire;
      for (std::size_t at = 0; at < n; at += frag)
        wire +=
            frame(at == 0 ? binary : cont, std::string_view(big).substr(at, frag), at + frag >= n);
      c.send.push_back({wire, 65536});
      if (frag >= 4096 || n <= (1 << 20)) run_case(f, c);
    }
  }
  // The default limit, 10 MiB: a frame announcing one byte more is refused from its header.
  {
    std::string head = "\x82\xff";
    std::uint64_t n = (10 << 20) + 1;
    for (int i = 7; i >= 0; --i)
      head += static_cast<char>((n >> (8 * i)) & 0xff);
    head.append(reinterpret_cast<const char*>(mask_key), 4);
    run_case(f, {"default max_message_size", {{head}}, {}, 1009});
  }
  f.make_options = [] {
    ws::options o;
    o.max_message_size = 1000;
    return o;
  };
  std::vector<ws_case> cases = {
      {"exactly the limit",
       {{frame(text, repeat(1000, 'a'))}},
       {server_frame(text, repeat(1000, 'a'))}},
      {"one byte more", {{frame(text, repeat(1001, 'a'))}}, {}, 1009},
      {"one frame far too big, header only",
       {{frame(binary, repeat(70000, 'a')).substr(0, 14)}},
       {},
       1009},
      {"fragments adding up past the limit",
       {{frame(text, repeat(600, 'a'), false)}, {frame(cont, repeat(600, 'a'))}},
       {},
       1009},
      {"fragments adding up to the limit",
       {{frame(text, repeat(500, 'a'), false)}, {frame(cont, repeat(500, 'a'))}},
       {server_frame(text, repeat(1000, 'a'))}},
  };
  for (const auto& c : cases)
    run_case(f, c);
}

// --- 12.x / 13.x: permessage-deflate -------------------------------------------------------------

namespace {

struct deflate_case {
  std::string offer;   // Sec-WebSocket-Extensions sent
  std::string answer;  // expected in the 101
  int client_bits;     // the window the test compresses with
  bool client_reset;   // client_no_context_takeover agreed
  bool server_reset;   // server_no_context_takeover agreed
};

}  // namespace

TEST_CASE("12.x/13.x permessage-deflate: every parameter combination round trips") {
  fixture f;
  f.make_options = [] {
    ws::options o;
    o.compression = true;
    return o;
  };
  std::vector<deflate_case> cases = {
      {"permessage-deflate", "permessage-deflate", 15, false, false},
      {"permessage-deflate; client_max_window_bits", "permessage-deflate", 15, false, false},
      {"permessage-deflate; client_max_window_bits=9",
       "permessage-deflate; client_max_window_bits=9", 9, false, false},
      {"permessage-deflate; server_max_window_bits=9",
       "permessage-deflate; server_max_window_bits=9", 15, false, false},
      {"permessage-deflate; server_max_window_bits=12; client_max_window_bits=10",
       "permessage-deflate; server_max_window_bits=12; client_max_window_bits=10", 10, false,
       false},
      {"permessage-deflate; server_no_context_takeover",
       "permessage-deflate; server_no_context_takeover", 15, false, true},
      {"permessage-deflate; client_no_context_takeover",
       "permessage-deflate; client_no_context_takeover", 15, true, false},
      {"permessage-deflate; server_no_context_takeover; client_no_context_takeover",
       "permessage-deflate; server_no_context_takeover; client_no_context_takeover", 15, true,
       true},
      {"x-webkit-deflate-frame, permessage-deflate; server_max_window_bits=10; "
       "server_no_context_takeover",
       "permessage-deflate; server_no_context_takeover; server_max_window_bits=10", 15, false,
       true},
      {"permessage-deflate; unknown_param, permessage-deflate", "permessage-deflate", 15, false,
       false},
  };
  std::vector<std::string> messages = {"Hello, world!", repeat(64, 'a'), repeat(1000, '*'),
                                       std::string(16384, 'q'), repeat(65536 * 2, '\x7f')};
  {
    std::string mixed;
    for (int i = 0; i < 20000; ++i)
      mixed += std::to_string(i * 7919 % 10007) + " ";
    messages.push_back(mixed);
  }
  for (const auto& dc : cases) {
    CAPTURE(dc.offer);
    f.peer([&] {
      raw_ws w(f.port, "/echo", "Sec-WebSocket-Extensions: " + dc.offer + "\r\n");
      REQUIRE(w.status() == 101);
      CHECK(w.header("sec-websocket-extensions") == [&] {
        std::string a = dc.answer;
        for (char& ch : a)
          ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
        return a;
      }());
      zdeflate out(dc.client_bits);
      zinflate in;
      // A message worth compressing, but not much: sent twice below.
      const std::string probe = messages.back().substr(0, 3000);
      if (dc.client_reset) out.reset();
      w.send_frame(text, out.compress(probe), true, 4);
      rframe first_probe = w.next();
      CHECK(in.decompress(first_probe.payload) == probe);
      for (int round = 0; round < 2; ++round) {
        for (const auto& m : messages) {
          if (dc.client_reset) out.reset();
          std::string z = out.compress(m);
          w.send_frame(m.size() > 100000 ? binary : text, z, true, 4);
          rframe r = w.next();
          REQUIRE(r.op == (m.size() > 100000 ? binary : text));
          if (m.size() < 64) {
            CHECK(r.rsv == 0);  // below compression_threshold: sent plain
            CHECK(r.payload == m);
            continue;
          }
          CHECK(r.rsv == 4);
          CHECK(in.decompress(r.payload) == m);
        }
        // The same message again: with server_no_context_takeover its compressed form is the
        // same; with context takeover it refers back to the first and is shorter.
        if (dc.client_reset) out.reset();
        w.send_frame(text, out.compress(probe), true, 4);
        rframe again = w.next();
        CHECK(in.decompress(again.payload) == probe);
        std::size_t first = first_probe.payload.size();
        if (dc.server_reset)
          CHECK(again.payload.size() == first);
        else
          CHECK(again.payload.size() < first);
      }
      // A message sent uncompressed is fine too.
      w.send_frame(text, "plain text");
      CHECK(w.next().raw == server_frame(text, "plain text"));
      // Fragmented compressed message: RSV1 only on the first frame.
      if (dc.client_reset) out.reset();
      std::string z = out.compress(messages[3]);
      w.send(frame(text, z.substr(0, 10), false, 4) + frame(cont, z.substr(10, 5), false) +
             frame(ping, "mid") + frame(cont, z.substr(15)));
      CHECK(w.next().raw == server_frame(pong, "mid"));
      rframe r = w.next();
      CHECK(r.rsv == 4);
      CHECK(in.decompress(r.payload) == messages[3]);
      CHECK(w.clean_close());
    });
    CHECK(f.compressed);
  }
  // Without compression enabled the offer is ignored and RSV1 is an error.
  f.make_options = [] { return ws::options{}; };
  f.peer([&] {
    raw_ws w(f.port, "/echo", "Sec-WebSocket-Extensions: permessage-deflate\r\n");
    CHECK(w.header("sec-websocket-extensions") == "");
    zdeflate out(15);
    w.send_frame(text, out.compress("Hello"), true, 4);
    CHECK(w.fail_code() == 1002);
  });
}

TEST_CASE(
    "13.x permessage-deflate errors: zip bomb 1009, bad data 1007, RSV1 on continuation 1002") {
  fixture f;
  f.make_options = [] {
    ws::options o;
    o.compression = true;
    o.max_message_size = 1 << 20;
    return o;
  };
  const std::string ext = "Sec-WebSocket-Extensions: permessage-deflate\r\n";
  // 64 MiB of zeros is ~64 KiB compressed: refused once the inflated size passes 1 MiB.
  f.peer([&] {
    raw_ws w(f.port, "/echo", ext);
    zdeflate out(15);
    std::string bomb = out.compress(std::string(64 << 20, '\0'));
    CHECK(bomb.size() < 200 * 1024);
    w.send_frame(binary, bomb, true, 4);
    CHECK(w.fail_code() == 1009);
  });
  // Exactly at the limit is fine.
  f.peer([&] {
    raw_ws w(f.port, "/echo", ext);
    zdeflate out(15);
    w.send_frame(binary, out.compress(std::string(1 << 20, '\0')), true, 4);
    rframe r = w.next();
    zinflate in;
    CHECK(in.decompress(r.payload) == std::string(1 << 20, '\0'));
    CHECK(w.clean_close());
  });
  f.peer([&] {
    raw_ws w(f.port, "/echo", ext);
    w.send_frame(text, "\xff\xff\xff\xff garbage", true, 4);
    CHECK(w.fail_code() == 1007);
  });
  f.peer([&] {
    raw_ws w(f.port, "/echo", ext);
    zdeflate out(15);
    std::string z = out.compress("Hello, Hello, Hello");
    w.send(frame(text, z.substr(0, 4), false, 4) + frame(cont, z.substr(4), true, 4));
    CHECK(w.fail_code() == 1002);
  });
  // Compressed invalid UTF-8 is caught after inflating.
  f.peer([&] {
    raw_ws w(f.port, "/echo", ext);
    zdeflate out(15);
    w.send_frame(text, out.compress("abc\xed\xa0\x80"), true, 4);
    CHECK(w.fail_code() == 1007);
  });
  REQUIRE(f.wait_results(5));
  CHECK(f.results[0].code == 1009);
}

// --- Masking and other frame-level errors --------------------------------------------------------

TEST_CASE("an unmasked client frame, and a non-minimal length, are protocol errors") {
  fixture f;
  f.peer([&] {
    raw_ws w(f.port);
    w.send(server_frame(text, "unmasked"));
    CHECK(w.fail_code() == 1002);
  });
  f.peer([&] {
    raw_ws w(f.port);
    std::string fr = frame(text, "short");
    // 5 bytes announced with the 16-bit form.
    std::string bad = fr.substr(0, 1) + std::string("\xfe\x00\x05", 3) + fr.substr(2);
    w.send(bad);
    CHECK(w.fail_code() == 1002);
  });
}

// --- Backpressure, concurrency, pings ------------------------------------------------------------

TEST_CASE("backpressure: a sender to a peer that does not read blocks, memory stays bounded") {
  fixture f;
  std::size_t sent = 0;
  bool done = false;
  const std::string chunk(256 * 1024, 'z');
  http::router r;
  r.get("/flood", [&](http::request& req, http::response& resp) {
    auto c = ws::accept(req, resp);
    try {
      for (int i = 0; i < 400; ++i) {  // 100 MiB if nothing held it back
        c.send_binary(chunk);
        ++sent;
      }
    } catch (const std::system_error&) {
    }
    done = true;
    c.close();
  });
  f.restart(std::move(r));
  auto fut = std::async(std::launch::async, [&] {
    auto w = std::make_unique<raw_ws>(f.port, "/flood", "", 20000);
    // Do not read for a while.
    std::this_thread::sleep_for(600ms);
    return w;
  });
  long rss0 = rss_kib();
  while (fut.wait_for(0s) != std::future_status::ready)
    f.loop.run_once(5ms);
  auto w = fut.get();
  // The sender is stuck in a write, far short of the 400 messages.
  std::size_t stuck_at = sent;
  run_until(
      f.loop, [] { return false; }, 200ms);
  CHECK(sent == stuck_at);
  CHECK(!done);
  CHECK(sent < 200);  // kernel buffers plus one message: far below 100 MiB
  CHECK(dump_fibers(f.loop).find("write") != std::string::npos);
  CHECK(rss_kib() - rss0 < 48 * 1024);
  // Reading everything lets it finish: every message arrives whole.
  std::size_t got = f.peer([&] {
    std::size_t n = 0;
    for (;;) {
      rframe fr = w->next();
      if (fr.op == binary) {
        CHECK(fr.payload.size() == chunk.size());
        ++n;
        continue;
      }
      if (fr.op == close_op) w->send_frame(close_op, close_payload(1000));
      break;
    }
    return n;
  });
  CHECK(got == 400);
  CHECK(done);
}

TEST_CASE("sending from another fiber while the first receives") {
  fixture f;
  http::router r;
  r.get("/both", [&](http::request& req, http::response& resp) {
    auto c = ws::accept(req, resp);
    auto ticker = spawn(f.loop, [&] {
      for (int i = 0; i < 200; ++i) {
        c.send_text("tick " + std::to_string(i) + " " + std::string(i * 97 % 30000, '.'));
        if (i % 10 == 0) this_fiber::yield();
      }
    });
    while (auto m = c.receive())
      c.send(m->data, m->type);
    ticker.join();
  });
  f.restart(std::move(r));
  f.peer([&] {
    raw_ws w(f.port, "/both");
    for (int i = 0; i < 100; ++i)
      w.send_frame(binary, std::string(static_cast<std::size_t>(i) * 131 % 50000, '\x01'));
    int ticks = 0, echoes = 0;
    while (ticks < 200 || echoes < 100) {
      rframe fr = w.next();
      REQUIRE(fr.op > 0);
      if (fr.op == text) {
        CHECK(fr.payload.rfind("tick " + std::to_string(ticks) + " ", 0) == 0);
        ++ticks;
      } else {
        CHECK(fr.op == binary);
        CHECK(fr.payload.size() == static_cast<std::size_t>(echoes) * 131 % 50000);
        ++echoes;
      }
    }
    CHECK(w.clean_close());
  });
}

TEST_CASE("an answer leaves with the next receive, and does not hold back another fiber's send") {
  // The answer is written and left to the reader's next receive, which sends it and waits for
  // the peer; the peer says nothing more until it has both messages. A send from another fiber
  // meanwhile must not wait for the receive to end (it would wait for the peer: a deadlock).
  fixture f;
  http::router r;
  r.get("/quiet", [&](http::request& req, http::response& resp) {
    auto c = ws::accept(req, resp);
    auto m = c.receive();
    REQUIRE(m);
    c.send_text("answer to " + std::string(m->data));
    auto other = spawn(f.loop, [&] {
      this_fiber::sleep_for(50ms);
      c.send_text("from another fiber");
    });
    while (c.receive()) {
    }
    other.join();
  });
  f.restart(std::move(r));
  f.peer([&] {
    raw_ws w(f.port, "/quiet");
    w.send_frame(text, "go");
    rframe a = w.next();
    CHECK(a.op == text);
    CHECK(a.payload == "answer to go");
    rframe b = w.next();
    CHECK(b.op == text);
    CHECK(b.payload == "from another fiber");
    CHECK(w.clean_close());
  });
}

TEST_CASE("a sender blocked on a peer that vanishes: the handler ends, nothing dangles") {
  fixture f;
  bool sender_done = false;
  std::error_code sender_error;
  bool handler_done = false;
  http::router r;
  r.get("/vanish", [&](http::request& req, http::response& resp) {
    auto c = ws::accept(req, resp);
    auto sender = spawn(f.loop, [&c, &sender_done, &sender_error] {
      const std::string big(256 * 1024, 'v');
      try {
        for (;;)
          c.send_binary(big);
      } catch (const std::system_error& e) {
        sender_error = e.code();
      }
      sender_done = true;
    });
    while (c.receive()) {
    }
    CHECK(c.close_code() == 1006);
    sender.cancel();  // not joined: it may resume after this handler has returned
    handler_done = true;
  });
  f.restart(std::move(r));
  f.peer([&] {
    raw_ws w(f.port, "/vanish");
    std::this_thread::sleep_for(300ms);  // the sender fills the buffers and blocks
    linger lg{1, 0};                     // then a reset, with everything unread
    setsockopt(w.client().fd(), SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  });
  REQUIRE(run_until(f.loop, [&] { return handler_done && sender_done; }));
  CHECK(sender_error);
  f.srv.reset();
  CHECK(run_until(
      f.loop, [&] { return fiber_count(f.loop) == 0 && loop_is_clean(f.loop); }, 5s));
}

namespace {

// Server options that ping every `interval` and drop a peer silent for `timeout`.
std::function<ws::options()> ping_options(squall::duration interval, squall::duration timeout) {
  return [=] {
    ws::options o;
    o.ping_interval = interval;
    o.ping_timeout = timeout;
    return o;
  };
}

}  // namespace

TEST_CASE("ping_interval and ping_timeout: a silent peer is dropped, a live one kept") {
  fixture f;
  // A peer that answers: pings keep coming, the connection stays. Its thread has 400 ms to
  // answer each ping (a loaded machine may not run it for 150 ms), and it answers for 1.5 s, so
  // a server that did not count the pongs would still drop it halfway.
  f.make_options = ping_options(50ms, 400ms);
  f.peer([&] {
    raw_ws w(f.port);
    auto end = std::chrono::steady_clock::now() + 1500ms;
    int pings = 0;
    while (std::chrono::steady_clock::now() < end) {
      rframe fr = w.next();
      REQUIRE(fr.op == ping);
      ++pings;
      w.send_frame(pong, fr.payload);
    }
    CHECK(pings >= 5);
    CHECK(w.clean_close());
  });
  REQUIRE(f.wait_results(1));
  CHECK(f.results[0].code == 1000);
  // A peer that reads but never answers: a ping, then 1011 and the end, about 200 ms in.
  f.make_options = ping_options(50ms, 150ms);
  f.peer([&] {
    raw_ws w(f.port);
    auto t0 = std::chrono::steady_clock::now();
    CHECK(w.next().raw == server_frame(ping, ""));
    CHECK(w.expect_close() == 1011);
    CHECK(w.ends());
    auto took = std::chrono::steady_clock::now() - t0;
    CHECK(took >= 100ms);
    CHECK(took < 2s);
  });
  REQUIRE(f.wait_results(2));
  CHECK(f.results[1].code == 1006);
  // Messages count as being heard: a chatty peer gets no pings. A longer interval here, so that
  // a client thread woken late on a loaded machine is not taken for a quiet one: 40 messages
  // 20 ms apart still span more than two intervals, with 280 ms of room in each gap.
  f.make_options = ping_options(300ms, 900ms);
  f.peer([&] {
    raw_ws w(f.port);
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < 40; ++i) {
      w.send_frame(text, "hi");
      CHECK(w.next().raw == server_frame(text, "hi"));
      std::this_thread::sleep_for(20ms);
    }
    CHECK(std::chrono::steady_clock::now() - t0 > 600ms);
    CHECK(w.clean_close());
  });
}

TEST_CASE("the loop is clean after connections with pingers end, however they end") {
  auto f = std::make_unique<fixture>();
  f->make_options = [] {
    ws::options o;
    o.ping_interval = 20ms;
    o.ping_timeout = 1s;
    o.close_timeout = 200ms;
    return o;
  };
  f->peer([&] {
    raw_ws a(f->port);
    CHECK(a.clean_close());
    raw_ws b(f->port);
    b.send_frame(text, "\xff");
    CHECK(b.fail_code() == 1007);
    { raw_ws c(f->port); }  // vanishes without a close
  });
  REQUIRE(f->wait_results(3));
  std::multiset<std::uint16_t> codes;
  for (const auto& r : f->results)
    codes.insert(r.code);
  CHECK(codes == std::multiset<std::uint16_t>{1000, 1006, 1007});
  io_loop& loop = f->loop;
  f->srv.reset();
  CHECK(run_until(
      loop, [&] { return fiber_count(loop) == 0 && loop_is_clean(loop); }, 5s));
}

// --- squall's client against the server ----------------------------------------------------------

TEST_CASE("client: echo, subprotocol, headers, compression, close codes both ways") {
  fixture f;
  std::string seen_header;
  http::router r;
  r.get("/hdr", [&](http::request& req, http::response& resp) {
    seen_header = req.header("X-Token");
    auto c = ws::accept(req, resp);
    c.close(1001, "going");
  });
  f.restart(std::move(r));
  f.make_options = [] {
    ws::options o;
    o.subprotocols = {"v2", "v1"};
    o.compression = true;
    return o;
  };
  std::string url = "ws://127.0.0.1:" + std::to_string(f.port);
  run_sync(f.loop, [&] {
    ws::options o;
    o.subprotocols = {"v1", "v2"};
    o.compression = true;
    auto c = ws::connect(url + "/echo", std::move(o));
    CHECK(c.subprotocol() == "v2");
    CHECK(c.compressed());
    for (std::size_t n : {0, 1, 63, 64, 125, 126, 65535, 65536, 1 << 20}) {
      std::string t(n, 'x');
      for (std::size_t i = 0; i < n; i += 3)
        t[i] = static_cast<char>('a' + i % 26);
      c.send_text(t);
      auto m = c.receive();
      REQUIRE(m);
      CHECK(m->is_text());
      CHECK(m->data == t);
      std::string b(n, '\x80');
      c.send_binary(b);
      m = c.receive();
      REQUIRE(m);
      CHECK(m->type == ws::opcode::binary);
      CHECK(m->data == b);
    }
    c.ping("are you there");
    c.send_text("after ping");
    CHECK(c.receive()->data == "after ping");
    c.close(4000, "bye");
    CHECK(c.closed());
    CHECK(c.close_code() == 4000);  // the server echoes our code
    CHECK(!c.receive());
    CHECK(code_of([&] { c.send_text("x"); }) == error::closed);
  });
  REQUIRE(f.wait_results(1));
  CHECK(f.results[0].code == 4000);
  CHECK(f.results[0].reason == "bye");
  // Headers, and the server closing.
  run_sync(f.loop, [&] {
    ws::options o;
    o.headers = {{"X-Token", "secret"}};
    auto c = ws::connect("ws://localhost:" + std::to_string(f.port) + "/hdr", std::move(o));
    CHECK(!c.receive());
    CHECK(c.close_code() == 1001);
    CHECK(c.close_reason() == "going");
  });
  CHECK(seen_header == "secret");
}

TEST_CASE("client: handshake errors, refused connections, bad URLs, timeouts") {
  fixture f;
  std::string base = "ws://127.0.0.1:" + std::to_string(f.port);
  run_sync(f.loop, [&] {
    try {
      ws::connect(base + "/nothing-here");
      FAIL("connected");
    } catch (const ws::handshake_error& e) {
      CHECK(e.status() == 404);
    }
    CHECK_THROWS_AS(ws::connect("wss://127.0.0.1/"), std::invalid_argument);
    CHECK_THROWS_AS(ws::connect("ftp://127.0.0.1/"), std::invalid_argument);
    CHECK_THROWS_AS(ws::connect("ws://127.0.0.1:99999/"), std::invalid_argument);
    ws::options bad;
    bad.headers = {{"X-Bad", "a\r\nb"}};
    CHECK_THROWS_AS(ws::connect(base + "/echo", std::move(bad)), std::invalid_argument);
  });
  // Refused: nothing listens on a port we just closed.
  std::uint16_t dead_port;
  {
    tcp_server t(f.loop, [](io_stream&, const address&) {});
    t.listen(0, "127.0.0.1");
    dead_port = t.addresses().at(0).port();
  }
  run_sync(f.loop, [&] {
    CHECK_THROWS_AS(ws::connect("ws://127.0.0.1:" + std::to_string(dead_port) + "/"),
                    std::system_error);
  });
  // A server that accepts and never answers: connect_timeout.
  tcp_server mute(f.loop, [](io_stream& s, const address&) {
    try {
      s.read_until_close(1 << 20);
    } catch (const std::system_error&) {
    }
  });
  mute.listen(0, "127.0.0.1");
  run_sync(f.loop, [&] {
    ws::options o;
    o.connect_timeout = 200ms;
    auto t0 = io_loop::now();
    CHECK(code_of([&] {
            ws::connect("ws://127.0.0.1:" + std::to_string(mute.addresses().at(0).port()) + "/",
                        std::move(o));
          }) == error::timed_out);
    CHECK(io_loop::now() - t0 < 2s);
  });
  // A server that answers 101 with a wrong accept value.
  tcp_server liar(f.loop, [](io_stream& s, const address&) {
    s.read_until("\r\n\r\n", 65536);
    s.write(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n");
    s.flush();
  });
  liar.listen(0, "127.0.0.1");
  run_sync(f.loop, [&] {
    CHECK_THROWS_AS(
        ws::connect("ws://127.0.0.1:" + std::to_string(liar.addresses().at(0).port()) + "/"),
        ws::handshake_error);
  });
}

TEST_CASE("client: protocol errors from a server (masked frames, bad UTF-8) close with the code") {
  // A raw server for the client's side of the protocol. The client's key is random, so the
  // 101 (and its accept value) comes from the echo server, to which the request is relayed;
  // then the raw server sends `frames` and records what the client sends back.
  fixture f;
  auto proxy_then = [&](std::string frames, std::string* sent) {
    return std::make_unique<tcp_server>(f.loop, [&f, frames, sent](io_stream& s, const address&) {
      std::string req(s.read_until("\r\n\r\n", 65536));
      // Ask the echo server for the 101 of this very request.
      io_stream up = tcp_connect(address::ip("127.0.0.1", f.port));
      up.write(req);
      up.flush();
      std::string head(up.read_until("\r\n\r\n", 65536));
      up.close();
      s.write(head);
      s.write(frames);
      s.flush();
      try {
        for (;;) {
          auto d = s.read_some(io_loop::now() + 3s);
          if (d.empty()) break;
          *sent += d;
        }
      } catch (const std::system_error&) {
      }
    });
  };
  struct expectation {
    std::string frames;
    std::uint16_t code;
  };
  std::vector<expectation> cases = {
      {frame(text, "masked", true, 0, true), 1002}, {server_frame(text, "\xff\xfe"), 1007},
      {server_frame(text, "a", true, 2), 1002},     {server_frame(close_op, "x"), 1002},
      {server_frame(ping, repeat(126, 'p')), 1002},
  };
  for (const auto& e : cases) {
    std::string sent;
    auto srv = proxy_then(e.frames, &sent);
    srv->listen(0, "127.0.0.1");
    run_sync(f.loop, [&] {
      ws::options o;
      o.close_timeout = 300ms;
      auto c =
          ws::connect("ws://127.0.0.1:" + std::to_string(srv->addresses().at(0).port()) + "/echo",
                      std::move(o));
      CHECK(!c.receive());
      CHECK(c.close_code() == e.code);
    });
    run_until(
        f.loop, [&] { return sent.size() >= 8; }, 2s);
    // The client's close frame: masked, with the code.
    REQUIRE(sent.size() >= 8);
    CHECK(static_cast<unsigned char>(sent[0]) == 0x88);
    CHECK(static_cast<unsigned char>(sent[1]) == 0x82);
    unsigned char code[2] = {static_cast<unsigned char>(sent[6] ^ sent[2]),
                             static_cast<unsigned char>(sent[7] ^ sent[3])};
    CHECK((code[0] << 8 | code[1]) == e.code);
  }
  // A server that pings: the client answers with a masked pong carrying the payload.
  std::string sent;
  auto srv = proxy_then(server_frame(ping, "hello?") + server_frame(text, "msg"), &sent);
  srv->listen(0, "127.0.0.1");
  run_sync(f.loop, [&] {
    auto c =
        ws::connect("ws://127.0.0.1:" + std::to_string(srv->addresses().at(0).port()) + "/echo");
    auto m = c.receive();
    REQUIRE(m);
    CHECK(m->data == "msg");
  });
  run_until(
      f.loop, [&] { return sent.size() >= 12; }, 2s);
  REQUIRE(sent.size() >= 12);
  CHECK(static_cast<unsigned char>(sent[0]) == 0x8a);
  CHECK(static_cast<unsigned char>(sent[1]) == 0x86);
  std::string payload;
  for (int i = 0; i < 6; ++i)
    payload += static_cast<char>(sent[6 + i] ^ sent[2 + i % 4]);
  CHECK(payload == "hello?");
}
