// SPDX-License-Identifier: MIT
// The HTTP/1.1 server: one fiber per connection reads a request head, runs the handler, finishes
// the response, drops whatever body the handler left, and goes round again.
//
// Buffers: the head is parsed in place in the stream's read buffer and the request's views point
// there. While the whole request is buffered (the common case) nothing is copied. When the body
// has to wait for more bytes, the head is first copied into the connection ("detached") so the
// stream may move or reuse its buffer. Responses are written into the stream's write buffer; a
// read that waits sends them, so the answers to a pipelined batch leave in one send.
#include "squall/http/server.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cstring>
#include <ctime>
#include <optional>

#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "http/gzip.hpp"
#include "small_copy.hpp"
#include "squall/error.hpp"
#include "squall/fiber.hpp"
#include "squall/log.hpp"
#include "squall/tcp_server.hpp"

namespace squall::http {

// --- Status lines and the Date header -----------------------------------------------------------

std::string_view reason_phrase(int status) noexcept {
  switch (status) {
    case 100:
      return "Continue";
    case 101:
      return "Switching Protocols";
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 202:
      return "Accepted";
    case 204:
      return "No Content";
    case 206:
      return "Partial Content";
    case 301:
      return "Moved Permanently";
    case 302:
      return "Found";
    case 303:
      return "See Other";
    case 304:
      return "Not Modified";
    case 307:
      return "Temporary Redirect";
    case 308:
      return "Permanent Redirect";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 409:
      return "Conflict";
    case 410:
      return "Gone";
    case 411:
      return "Length Required";
    case 412:
      return "Precondition Failed";
    case 413:
      return "Content Too Large";
    case 414:
      return "URI Too Long";
    case 415:
      return "Unsupported Media Type";
    case 416:
      return "Range Not Satisfiable";
    case 417:
      return "Expectation Failed";
    case 426:
      return "Upgrade Required";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    case 505:
      return "HTTP Version Not Supported";
    default:
      return "Unknown";
  }
}

namespace {

// "Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n", formatted at most once a second per thread.
struct date_cache {
  std::time_t at = 0;  // the second `line` shows
  char line[48];
  std::size_t len = 0;
  std::string_view view() const noexcept { return {line, len}; }
};

const date_cache& current_date() noexcept {
  __attribute__((tls_model("initial-exec"))) thread_local date_cache d;  // no __tls_get_addr call
  std::time_t now = std::time(nullptr);
  if (now != d.at) {
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    std::tm tm{};
    gmtime_r(&now, &tm);
    int n = std::snprintf(d.line, sizeof d.line, "Date: %s, %02d %s %04d %02d:%02d:%02d GMT\r\n",
                          days[tm.tm_wday], tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900,
                          tm.tm_hour, tm.tm_min, tm.tm_sec);
    d.len = n > 0 ? static_cast<std::size_t>(n) : 0;
    d.at = now;
  }
  return d;
}

// The most one piece of a gzip request body decodes to (body_some's pieces).
constexpr std::size_t inflate_step = 64 * 1024;

// RFC 9110 5.6.2 token characters, as a table: add_header checks every byte of every name.
constexpr auto tchar_table = [] {
  std::array<bool, 256> t{};
  for (int c = '0'; c <= '9'; ++c)
    t[c] = true;
  for (int c = 'a'; c <= 'z'; ++c)
    t[c] = t[c - 32] = true;
  for (char c : std::string_view("!#$%&'*+-.^_`|~"))
    t[static_cast<unsigned char>(c)] = true;
  return t;
}();

bool is_tchar(unsigned char c) noexcept {
  return tchar_table[c];
}

// Appends "Content-Length: <n>\r\n" (or another name) to a fixed buffer; returns its length.
std::size_t number_line(char* out, std::string_view name, std::uint64_t n, int base = 10) {
  std::memcpy(out, name.data(), name.size());
  char* p = std::to_chars(out + name.size(), out + name.size() + 24, n, base).ptr;
  *p++ = '\r';
  *p++ = '\n';
  return static_cast<std::size_t>(p - out);
}

// True if every byte of `name` is a token character. The table is read for every byte without
// an early exit: one load and one AND a byte, and no branch to mispredict.
bool all_tchar(std::string_view name) noexcept {
  auto t = [&](std::size_t i) { return is_tchar(static_cast<unsigned char>(name[i])); };
  bool ok = true;
  std::size_t i = 0, n = name.size();
  for (; i + 4 <= n; i += 4)
    ok &= t(i) & t(i + 1) & t(i + 2) & t(i + 3);
  for (; i < n; ++i)
    ok &= t(i);
  return ok;
}

// True if `value` has a CR, LF or NUL. From 16 bytes on (with SSE2), three compares a 16-byte
// block. Below that, eight bytes at a time: a word with no byte under 0x0e (the usual case:
// text) has none of the three; a word that has one (a tab, say) is looked at byte by byte.
// ((x - 0x0e..) & ~x & 0x80..) is non-zero exactly when some byte is below 0x0e.
bool has_ctl_break(std::string_view value) noexcept {
  constexpr std::uint64_t ones = 0x0101010101010101, highs = 0x8080808080808080;
  auto bad = [](char c) { return c == '\r' || c == '\n' || c == '\0'; };
  const char* p = value.data();
  std::size_t n = value.size();
#ifdef __SSE2__
  // From 16 bytes on, 16 at a time, the last block overlapping the one before it.
  if (n >= 16) {
    auto any = [](const char* q) {
      __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q));
      __m128i hit = _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('\r')),
                                 _mm_cmpeq_epi8(v, _mm_set1_epi8('\n')));
      hit = _mm_or_si128(hit, _mm_cmpeq_epi8(v, _mm_setzero_si128()));
      return _mm_movemask_epi8(hit) != 0;
    };
    const char* last = p + n - 16;
    for (; p < last; p += 16) {
      if (any(p)) return true;
    }
    return any(last);
  }
#endif
  for (; n >= 8; p += 8, n -= 8) {
    std::uint64_t x;
    std::memcpy(&x, p, 8);
    if (((x - ones * 0x0e) & ~x & highs) && std::any_of(p, p + 8, bad)) return true;
  }
  return std::any_of(p, p + n, bad);
}

void check_field(std::string_view name, std::string_view value) {
  if (name.empty() || !all_tchar(name)) throw std::invalid_argument("squall: invalid header name");
  if (has_ctl_break(value)) throw std::invalid_argument("squall: header value with CR, LF or NUL");
}

bool valid_ip(std::string_view s) {
  char buf[INET6_ADDRSTRLEN];
  if (s.empty() || s.size() >= sizeof buf) return false;
  std::memcpy(buf, s.data(), s.size());
  buf[s.size()] = 0;
  unsigned char out[16];
  return inet_pton(AF_INET, buf, out) == 1 || inet_pton(AF_INET6, buf, out) == 1;
}

void append_number(std::string& out, std::uint64_t n) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof buf, n);
  out.append(buf, r.ptr);
}

bool is_quiet(std::error_code ec) noexcept {
  return ec == error::closed || ec == error::reset || ec == error::cancelled ||
         ec == error::timed_out || ec == std::errc::broken_pipe ||
         ec == std::errc::connection_reset;
}

}  // namespace

// --- Server state -------------------------------------------------------------------------------

struct server::state {
  io_loop& loop;
  handler fn;
  server_options opts;
  std::string server_line;  // "Server: squall\r\n" or empty
  // "HTTP/1.1 200 OK\r\n", the Server line and the Date line, remade when the second changes:
  // most responses start with it, and one piece is copied faster than five.
  std::string ok_head;
  std::time_t ok_head_at = -1;
  std::unique_ptr<tcp_server> tcp;
  bool closing = false;
  std::uint64_t served = 0;
  // Connections between requests, waiting for the next one: shutdown() cancels these at once.
  std::vector<detail::connection*> open;

  state(io_loop& l, handler h, server_options o) : loop(l), fn(std::move(h)), opts(std::move(o)) {
    if (!opts.server_name.empty()) server_line = "Server: " + opts.server_name + "\r\n";
  }
};

// --- One connection -----------------------------------------------------------------------------

namespace detail {

// The members are ordered by use: what every request touches comes first, in about seven
// cache lines from an aligned start; what bodies, gzip, X-Forwarded-* and shutdown use comes
// after. With 1,000 connections each request finds its connection cold, so every line of
// this object a plain GET touches is a cache miss (docs/performance.md, "Cold lines").
struct alignas(64) connection {
  server::state& st;
  io_stream& s;
  std::uint64_t requests = 0;  // served on this connection
  head_parser parser;
  message_head head;
  std::size_t head_len = 0;
  std::size_t in_off = 0;  // bytes of peek() that belong to this request and are processed
  std::string_view path, query, path_rest;
  std::vector<std::pair<std::string_view, std::string_view>> params;
  time_point began{};           // first byte of the request (the loop's time of that poll)
  std::uint64_t body_left = 0;  // content_length bytes not yet read
  std::string_view body_view;
  std::uint64_t body_sent = 0;
  std::optional<std::uint64_t> content_length;  // the response's, if the handler set one
  int status = 200;
  bool idle = false;  // waiting for a request with nothing buffered
  bool head_detached = false;
  bool https = false;  // X-Forwarded-Proto (xheaders): protocol() is "https"
  // Body state.
  bool body_complete = true;
  bool body_buffered = false;  // body() has been called
  bool continue_sent = false;
  bool inflating = false;
  bool inflate_done = false;  // the gzip stream ended (a body that stops before is truncated)
  // Response state.
  bool started = false, finished = false, chunked = false, close_after = false, head_only = false;
  bool hijacked = false;   // the handler took the stream over
  bool io_failed = false;  // this connection's own stream failed (not the handler's other I/O)
  bool bodiless = false;   // HEAD, 1xx, 204, 304: the response carries no body bytes
  bool gzipping = false;
  std::string reason;
  std::string fields;  // "Name: value\r\n"...

  // Used by some connections only.
  const address& peer;
  squall::detail::fiber_record* fib = squall::detail::current_fiber();
  std::size_t open_index = 0;               // in server::state::open
  time_point read_cap = time_point::max();  // bounds every body read (dropping an unread body)
  // What only bodies, gzip, X-Forwarded-* and logging use, allocated by the first request that
  // needs it. The connection lives on its fiber's stack, and a resumed fiber's stack is
  // prefetched from the wait up to the page's end (async_fd.cpp): these 360 bytes inline were
  // six cache lines fetched for every plain GET and never read.
  struct extras {
    std::string xremote_ip;  // xheaders only: cleared per request when they are on
    std::string head_copy;   // the head, once detached
    std::string peer_ip;     // the peer's address as text, made when first asked for
    chunked_decoder chunks;
    std::string body_buf;  // decoded (chunked or gunzipped) bodies
    std::optional<gzip::inflater> inflate;
    std::string inflate_buf;
    std::optional<gzip::deflater> deflate;
    std::string gz_out;
    explicit extras(const parse_limits& limits) : chunks(limits) {}
  };
  mutable std::unique_ptr<extras> more;
  extras& x() const {
    if (!more) more = std::make_unique<extras>(st.opts.limits);
    return *more;
  }

  // Not formatted at accept: most requests never ask (remote_ip(), the debug log).
  const std::string& peer_text() const {
    std::string& text = x().peer_ip;
    if (text.empty()) text = peer.family() == AF_UNIX ? std::string("unix") : peer.host();
    return text;
  }

  connection(server::state& state, io_stream& stream, const address& p)
      : st(state), s(stream), parser(state.opts.limits), peer(p) {
    head.headers.reserve(16);
  }

  // Runs one of this connection's own I/O steps for the handler, noting a failure, so that
  // run_handler() can tell the client vanishing from the handler's other I/O failing.
  template <class F>
  decltype(auto) own_io(F&& f) {
    try {
      return f();
    } catch (const std::system_error&) {
      io_failed = true;
      throw;
    }
  }

  void serve();
  bool read_head();
  void prepare_request();
  void run_handler();
  bool end_request();
  void refuse(int status, const char* why);
  void linger_close();

  // Body.
  void detach_head();
  bool more_input(time_point deadline);
  time_point body_deadline() const {
    return std::min(io_loop::now() + st.opts.body_timeout, read_cap);
  }
  void send_continue();
  std::string_view raw_body_some();
  std::string_view body_some();
  std::string_view whole_body();
  bool discard_body();

  // Response.
  // The status line and fields; `framing` is the Content-Length or Transfer-Encoding line, and
  // `body` (if any) goes in the same write.
  void write_head(std::string_view framing, std::string_view body = {});
  // "HTTP/1.1 404 " written into `buf`, and the reason phrase after it.
  std::string_view status_start(char (&buf)[16]) const noexcept {
    std::memcpy(buf, "HTTP/1.1 000 ", 13);
    buf[9] = static_cast<char>('0' + status / 100);
    buf[10] = static_cast<char>('0' + status / 10 % 10);
    buf[11] = static_cast<char>('0' + status % 10);
    return {buf, 13};
  }
  std::string_view status_reason() const noexcept {
    return reason.empty() ? reason_phrase(status) : std::string_view(reason);
  }
  void hijack();
  void reset_response();
  void send(std::string_view body);
  void write(std::string_view data);
  void start_streaming();
  void mark_gzipped();
  void not_modified_fields();
  void write_raw_body(std::string_view data);
  void finish();
  void flush();
  bool want_gzip(std::uint64_t size_hint) const;
  bool would_gzip(std::uint64_t size_hint) const;
  bool keep_alive() const;
};

void connection::serve() {
  // Registered for shutdown(); removal swaps with the last entry, so it costs O(1) even when
  // thousands of connections end at once.
  open_index = st.open.size();
  st.open.push_back(this);
  struct unregister {
    connection& c;
    ~unregister() {
      auto& v = c.st.open;
      v[c.open_index] = v.back();
      v[c.open_index]->open_index = c.open_index;
      v.pop_back();
    }
  } guard{*this};
  while (!st.closing) {
    if (!read_head()) return;
    prepare_request();
    run_handler();
    if (!finished || hijacked) return;  // failed half-way through a response, or taken over
    ++st.served;
    ++requests;
    if (st.opts.on_response) {
      request req(*this);
      st.opts.on_response(req, status, body_sent, io_loop::now() - began);
    }
    if (close_after || st.closing) {
      // Unread request bytes would make close() send a reset, which can destroy the response
      // before the client reads it.
      if (!body_complete || s.buffered() > in_off)
        linger_close();
      else
        s.close("http: connection: close", io_loop::now() + std::chrono::seconds(5));
      return;
    }
    if (!end_request()) {
      linger_close();  // the rest of the body is unread: never parse it as a request
      return;
    }
  }
}

// Reads until a whole head is buffered. False when the connection should just end.
bool connection::read_head() {
  parser.reset();
  time_point deadline{};
  bool have_bytes = false;
  for (;;) {
    std::string_view in = s.peek();
    if (!in.empty()) {
      if (!have_bytes) {
        have_bytes = true;
        began = st.loop.time();  // the poll that brought the bytes: no clock read
        deadline = began + st.opts.header_timeout;
      }
      parse_error err;
      head_len = parser.parse_request(in, head, err);
      if (err) {
        refuse(err.status, err.what);
        return false;
      }
      if (head_len) {
        in_off = head_len;
        return true;
      }
    } else {
      deadline = st.loop.time() + st.opts.idle_timeout;
    }
    idle = !have_bytes;
    try {
      bool more = s.read_more(deadline);
      idle = false;
      if (!more) return false;  // the client closed (mid-request or not): nothing to answer
    } catch (const std::system_error& e) {
      idle = false;
      if (e.code() == error::timed_out && have_bytes) refuse(408, "header timeout");
      // A peer that resets or goes away between requests ends the connection here: rethrown,
      // the exception would be unwound a second time (a third of a close's 50,000 instructions).
      if (is_quiet(e.code())) return false;
      throw;
    }
    if (st.closing && !have_bytes && s.peek().empty()) return false;
  }
}

void connection::prepare_request() {
  std::string_view t = head.target;
  std::size_t from = 0;
  if (!t.empty() && t[0] != '/') {
    // absolute-form (a proxy-style request): the path starts after the authority
    std::size_t scheme = t.find("://");
    if (scheme != std::string_view::npos) {
      // The authority ends at the first '/', '?' or '#' (RFC 3986 3.2): a '/' inside the
      // query is not the path.
      std::size_t end = t.find_first_of("/?#", scheme + 3);
      from = end == std::string_view::npos ? t.size() : end;
    }
  }
  std::string_view pq = t.substr(from);
  std::size_t q = pq.find('?');
  path = pq.substr(0, q);
  if (path.empty()) path = from == 0 ? t : std::string_view("/");
  query = q == std::string_view::npos ? std::string_view() : pq.substr(q + 1);
  path_rest = {};
  params.clear();

  https = false;
  if (st.opts.xheaders) {
    if (more) more->xremote_ip.clear();
    std::string_view ip = trim_ows(head.header("X-Real-IP"));
    if (!valid_ip(ip)) {
      std::string_view xff = head.header("X-Forwarded-For");
      std::size_t comma = xff.rfind(',');
      ip = trim_ows(comma == std::string_view::npos ? xff : xff.substr(comma + 1));
    }
    if (valid_ip(ip)) x().xremote_ip.assign(ip);
    std::string_view proto = trim_ows(head.header("X-Forwarded-Proto"));
    if (proto.empty()) proto = trim_ows(head.header("X-Scheme"));
    https = iequals(proto, "https");
  }

  body_left = head.framing == body_framing::content_length ? head.content_length : 0;
  body_complete = head.framing == body_framing::none || body_left == 0;
  if (head.framing == body_framing::chunked) {
    x().chunks.reset();
    body_complete = false;
  }
  body_buffered = continue_sent = false;
  body_view = {};
  inflating = false;
  if (st.opts.decompress_request && !body_complete && gzip::available()) {
    if (gzip::only_gzip(head)) {
      extras& e = x();
      if (!e.inflate) e.inflate.emplace();
      e.inflate->reset();
      inflating = true;
      inflate_done = false;
    }
  }
  reset_response();
  head_only = head.method == "HEAD";
  if (!head.keep_alive) close_after = true;
  io_failed = false;
  // The handler's views (header(), path(), param()...) point where the head lies. If reading
  // the body (or a hijacked stream) may move the stream's buffer, the head moves out first, so
  // those views stay valid for the whole request.
  bool all_buffered =
      head.framing == body_framing::none || (head.framing == body_framing::content_length &&
                                             s.peek().size() - in_off >= head.content_length);
  if (!all_buffered || head.upgrade) detach_head();
}

void connection::run_handler() {
  request req(*this);
  response resp(*this);
  try {
    st.fn(req, resp);
    if (!finished) own_io([&] { finish(); });
    return;
  } catch (const request_error& e) {
    log(log_level::debug, "http", "%s %.*s: %d %s", peer_text().c_str(), int(path.size()),
        path.data(), e.status(), e.what());
    if (started) return;
    reset_response();
    if (e.close()) close_after = true;
    status = e.status();
  } catch (const std::system_error& e) {
    if (io_failed || hijacked) throw;  // this connection is gone: nothing to answer
    // The handler's own I/O (a fetch upstream, a file): that is a server error, not the client's.
    log(log_level::error, "http", "handler for %.*s %.*s failed: %s", int(head.method.size()),
        head.method.data(), int(path.size()), path.data(), e.what());
    if (started) return;
    reset_response();
    status = 500;
  } catch (const std::exception& e) {
    log(log_level::error, "http", "handler for %.*s %.*s threw: %s", int(head.method.size()),
        head.method.data(), int(path.size()), path.data(), e.what());
    if (started) return;
    reset_response();
    status = 500;
  }
  response(*this).send_error(status);
}

// After the response: drop the rest of the body and this request's bytes.
// Drops the rest of the body and this request's bytes. False when the body could not be
// dropped: the connection must end, since what follows is not a request.
bool connection::end_request() {
  if (!body_complete && !discard_body()) return false;
  s.consume(in_off);
  in_off = 0;
  head_detached = false;
  head.clear();
  return true;
}

bool connection::keep_alive() const {
  if (close_after || st.closing || !head.keep_alive) return false;
  std::uint64_t max = st.opts.max_requests_per_connection;
  return max == 0 || requests + 1 < max;
}

// A request we cannot serve: answer and close.
void connection::refuse(int code, const char* why) {
  log(log_level::debug, "http", "refused a request from %s: %d %s", peer_text().c_str(), code, why);
  reset_response();
  head.clear();  // whatever a failed parse left points into bytes that may have moved
  head.keep_alive = false;
  close_after = true;
  head_only = false;
  std::string body = std::to_string(code) + " " + std::string(reason_phrase(code)) + "\n";
  status = code;
  fields = "Content-Type: text/plain; charset=utf-8\r\n";
  try {
    send(body);
    linger_close();
  } catch (const std::system_error&) {
  }
}

// Sends the response, stops sending, and reads and drops what the client still sends for a
// while, so it reads our answer instead of a reset.
void connection::linger_close() {
  time_point until = io_loop::now() + st.opts.linger_timeout;
  try {
    s.shutdown_write(until);
    std::size_t dropped = 0;
    while (dropped < 16 * 1024 * 1024) {
      std::string_view in = s.peek();
      s.consume(in.size());
      dropped += in.size();
      if (!s.read_more(until)) break;
    }
  } catch (const std::system_error&) {
  }
  s.close();
}

// --- Request bodies -----------------------------------------------------------------------------

// Copies the head out of the stream's buffer, so the stream can move its bytes.
void connection::detach_head() {
  if (head_detached) return;
  std::string_view in = s.peek();
  std::string& copy = x().head_copy;
  copy.assign(in.data(), head_len);
  const char* old_base = in.data();
  const char* old_end = old_base + head_len;
  const char* new_base = copy.data();
  auto move = [&](std::string_view& v) {
    if (v.data() >= old_base && v.data() < old_end)
      v = {new_base + (v.data() - old_base), v.size()};
  };
  move(head.method);
  move(head.target);
  move(head.reason);
  for (auto& f : head.headers) {
    move(f.name);
    move(f.value);
  }
  move(path);
  move(query);
  move(path_rest);
  for (auto& p : params)
    move(p.second);
  s.consume(in_off);
  in_off = 0;
  head_detached = true;
}

// More body bytes into the buffer. Throws request_error when the client stops sending.
bool connection::more_input(time_point deadline) {
  detach_head();
  if (in_off > 0) {
    s.consume(in_off);
    in_off = 0;
  }
  try {
    if (!s.read_more(deadline)) throw request_error(400, "body ended early");
  } catch (const std::system_error& e) {
    if (e.code() == error::timed_out) throw request_error(408, "body timeout");
    throw;
  }
  return true;
}

void connection::send_continue() {
  if (continue_sent || !head.expect_continue || started) return;
  continue_sent = true;
  s.write("HTTP/1.1 100 Continue\r\n\r\n");
  s.flush(body_deadline());
}

// The next piece of the body as sent (chunked framing removed), or empty at its end. The piece
// stays valid until the next call.
std::string_view connection::raw_body_some() {
  if (body_complete) return {};
  send_continue();
  for (;;) {
    std::string_view in = s.peek().substr(in_off);
    if (head.framing == body_framing::content_length) {
      if (!in.empty()) {
        std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(in.size(), body_left));
        in_off += n;
        body_left -= n;
        body_complete = body_left == 0;
        return in.substr(0, n);
      }
    } else if (!in.empty()) {
      std::string_view data;
      parse_error err;
      std::size_t used = x().chunks.decode(in, data, err);
      if (err) throw request_error(err.status, err.what);
      in_off += used;
      if (x().chunks.done()) body_complete = true;
      if (!data.empty()) return data;
      if (body_complete) return {};
      if (used > 0) continue;
    }
    more_input(body_deadline());
  }
}

// The next piece of the body, decompressed if the server decompresses requests.
std::string_view connection::body_some() {
  if (!inflating) return raw_body_some();
  for (;;) {
    extras& e = x();
    // A piece decodes a step at a time (a few KB of gzip can decode to gigabytes): while the
    // inflater holds more of the last one, it goes on with that before reading on.
    std::string_view raw;
    if (!e.inflate->more()) {
      raw = raw_body_some();
      if (raw.empty()) {
        if (!inflate_done) throw request_error(400, "gzip body truncated");
        return {};
      }
    }
    e.inflate_buf.clear();
    auto max = static_cast<std::size_t>(
        std::min<std::uint64_t>(st.opts.limits.max_body_size, SIZE_MAX - 1));
    switch (e.inflate->decompress(raw, e.inflate_buf, max, inflate_step)) {
      case gzip::inflater::result::bad_data:
        throw request_error(400, "bad gzip body");
      case gzip::inflater::result::too_large:
        throw request_error(413, "gzip body too large");
      case gzip::inflater::result::done:
        inflate_done = true;
        break;
      case gzip::inflater::result::ok:
        inflate_done = false;
        break;
    }
    if (!e.inflate_buf.empty()) return e.inflate_buf;
  }
}

std::string_view connection::whole_body() {
  if (body_buffered) return body_view;
  body_buffered = true;
  if (head.framing == body_framing::content_length && !inflating) {
    // In place: wait until all of it is buffered (the stream grows as needed).
    send_continue();
    std::size_t need = static_cast<std::size_t>(body_left);
    while (s.peek().size() - in_off < need)
      more_input(body_deadline());
    body_view = s.peek().substr(in_off, need);
    in_off += need;
    body_left = 0;
    body_complete = true;
    return body_view;
  }
  std::string& buf = x().body_buf;
  buf.clear();
  for (std::string_view piece; !(piece = body_some()).empty();)
    buf.append(piece);
  body_view = buf;
  return body_view;
}

// Reads and drops an unread body if it is small enough. False: the connection must close.
bool connection::discard_body() {
  if (head.expect_continue && !continue_sent) return false;  // the client may not send it
  if (head.framing == body_framing::content_length && body_left > st.opts.max_discard) return false;
  std::size_t dropped = 0;
  // A client dribbling the rest of its body gets linger_timeout in all, not body_timeout per
  // byte: the response is sent, and the connection is only worth keeping if the body is near.
  read_cap = io_loop::now() + st.opts.linger_timeout;
  struct uncap {
    time_point& cap;
    ~uncap() { cap = time_point::max(); }
  } reset_cap{read_cap};
  try {
    while (!body_complete) {
      dropped += raw_body_some().size();
      if (dropped > st.opts.max_discard) return false;
    }
  } catch (const request_error&) {
    return false;
  }
  return true;
}

// --- Responses ----------------------------------------------------------------------------------

void connection::reset_response() {
  status = 200;
  reason.clear();
  fields.clear();
  content_length.reset();
  started = finished = chunked = gzipping = hijacked = bodiless = false;
  body_sent = 0;
}

bool connection::want_gzip(std::uint64_t size) const {
  return status != 304 && would_gzip(size);
}

// want_gzip() for a 304 asks this of the 200 it stands for: see not_modified_fields().
bool connection::would_gzip(std::uint64_t size) const {
  // Not for bodiless statuses, nor a 206: its Content-Range counts bytes of the plain body.
  if (!st.opts.gzip || !gzip::available() || status == 204 || status == 206 || status < 200)
    return false;
  if (size < st.opts.gzip_min_length) return false;
  if (!head.has_token("Accept-Encoding", "gzip")) return false;
  std::string_view type, encoding;
  // The handler's own fields: a Content-Type worth compressing, no Content-Encoding yet.
  for (std::size_t pos = 0; pos < fields.size();) {
    std::size_t eol = fields.find("\r\n", pos);
    std::string_view line(fields.data() + pos, eol - pos);
    std::size_t colon = line.find(':');
    std::string_view name = line.substr(0, colon), value = trim_ows(line.substr(colon + 1));
    if (iequals(name, "Content-Type")) type = value;
    if (iequals(name, "Content-Encoding")) encoding = value;
    if (iequals(name, "Content-Range")) return false;
    pos = eol + 2;
  }
  return encoding.empty() && gzip::compressible(type);
}

void connection::write_head(std::string_view framing, std::string_view body) {
  started = true;
  if (status == 304) not_modified_fields();
  if (!close_after && !body_complete) {
    // A body we will not read: with 100-continue unsent the client may never send it, and a
    // large one is not worth reading; either way this is the last response on the connection.
    bool never_sent = head.expect_continue && !continue_sent;
    bool too_big = head.framing == body_framing::content_length && body_left > st.opts.max_discard;
    if (never_sent || too_big) close_after = true;
  }
  bool keep = keep_alive();
  if (!keep) close_after = true;  // decided here, where the client is told
  std::string_view conn_line;
  if (!keep)
    conn_line = "Connection: close\r\n";
  else if (head.minor_version == 0)
    conn_line = "Connection: keep-alive\r\n";
  const date_cache& date = current_date();
  if (status == 200 && reason.empty()) {
    if (st.ok_head_at != date.at) {
      st.ok_head.assign("HTTP/1.1 200 OK\r\n").append(st.server_line).append(date.view());
      st.ok_head_at = date.at;
    }
    std::string_view pieces[] = {st.ok_head, fields, framing, conn_line, "\r\n", body};
    s.write(pieces);
    return;
  }
  char line[16];
  std::string_view pieces[] = {
      status_start(line), status_reason(), "\r\n", st.server_line, date.view(), fields, framing,
      conn_line,          "\r\n",          body,
  };
  s.write(pieces);
}

// The head as the handler set it, then the stream is the handler's: the request's bytes are
// taken off it, and the connection ends with the handler.
void connection::hijack() {
  char line[16];
  std::string_view pieces[] = {status_start(line), status_reason(), "\r\n",
                               st.server_line,     fields,          "\r\n"};
  s.write(pieces);
  s.flush();
  started = finished = hijacked = close_after = true;
  detach_head();  // the handler's reads must not move the request's bytes under its views
  s.consume(in_off);
  in_off = 0;
  body_complete = true;
}

void connection::send(std::string_view body) {
  if (started) throw std::logic_error("squall: http response already started");
  if (want_gzip(body.size())) {
    extras& e = x();
    if (!e.deflate) e.deflate.emplace();
    e.deflate->reset();
    e.gz_out.clear();
    e.deflate->compress(body, e.gz_out, false, true);
    mark_gzipped();
    body = e.gz_out;
  }
  bool no_body = status == 204 || status == 304 || status < 200;
  char line[48];
  std::string_view framing;
  if (status != 204 && status != 304 && status >= 200)
    framing = {line, number_line(line, "Content-Length: ", body.size())};
  write_head(framing, head_only || no_body ? std::string_view() : body);
  body_sent = body.size();
  finished = true;
}

void connection::write_raw_body(std::string_view data) {
  if (data.empty() || bodiless) return;
  if (chunked) {
    char size[24];
    std::string_view pieces[] = {{size, number_line(size, "", data.size(), 16)}, data, "\r\n"};
    s.write(pieces);
  } else {
    s.write(data);
  }
}

void connection::write(std::string_view data) {
  if (finished) throw std::logic_error("squall: http response already finished");
  if (!started) start_streaming();
  if (content_length && !gzipping && !bodiless && body_sent + data.size() > *content_length) {
    // More than announced would be read by the client as the start of the next response.
    close_after = true;
    throw std::logic_error("squall: http response body longer than its Content-Length");
  }
  body_sent += data.size();
  if (gzipping) {
    extras& e = x();
    e.gz_out.clear();
    e.deflate->compress(data, e.gz_out, false, false);
    write_raw_body(e.gz_out);
  } else {
    write_raw_body(data);
  }
}

// The head of a streamed response: Content-Length if the handler gave one (and the body is not
// gzipped on the way), else chunked, else (HTTP/1.0) the end of the connection ends the body.
void connection::start_streaming() {
  bodiless = head_only || status < 200 || status == 204 || status == 304;
  if (status < 200 || status == 204 || status == 304) {
    // No body and no framing (RFC 9110 6.4.1): a chunked last-chunk here would be read by the
    // client as the start of the next response.
    gzipping = false;
    write_head({});
    return;
  }
  {
    std::string framing;
    if (content_length && !want_gzip(*content_length)) {
      framing = "Content-Length: ";
      append_number(framing, *content_length);
      framing += "\r\n";
    } else if (head.minor_version >= 1) {
      chunked = true;
      framing = "Transfer-Encoding: chunked\r\n";
    } else {
      close_after = true;  // HTTP/1.0: the end of the connection ends the body
    }
    gzipping = want_gzip(content_length.value_or(st.opts.gzip_min_length));
    if (gzipping) {
      extras& e = x();
      if (!e.deflate) e.deflate.emplace();
      e.deflate->reset();
      mark_gzipped();
    }
    write_head(framing);
  }
}

// Turns the first ETag field among `fields` into a weak one (W/"...").
static void weaken_etag(std::string& fields) {
  for (std::size_t pos = 0; pos < fields.size();) {
    std::size_t eol = fields.find("\r\n", pos);
    std::size_t colon = fields.find(':', pos);
    if (colon < eol && iequals(std::string_view(fields).substr(pos, colon - pos), "ETag")) {
      std::size_t v = fields.find_first_not_of(' ', colon + 1);
      if (v < eol && fields[v] == '"') fields.insert(v, "W/");
      break;
    }
    pos = eol + 2;
  }
}

// Removes every field called `name` from `fields` ("Name: value\r\n" lines).
static void remove_fields(std::string& fields, std::string_view name) {
  for (std::size_t pos = 0; pos < fields.size();) {
    std::size_t eol = fields.find("\r\n", pos) + 2;
    std::size_t colon = fields.find(':', pos);
    if (iequals(std::string_view(fields).substr(pos, colon - pos), name))
      fields.erase(pos, eol - pos);
    else
      pos = eol;
  }
}

// The fields of a gzipped response: its encoding, Vary, and a weakened ETag (the compressed
// bytes differ from the ones a strong tag names; nginx does the same).
void connection::mark_gzipped() {
  fields += "Content-Encoding: gzip\r\nVary: Accept-Encoding\r\n";
  weaken_etag(fields);
}

// A 304 carries the ETag and Vary the 200 would have (RFC 9110 15.4.5): a cache holding the
// gzipped 200 under W/"..." must recognise the 304 as its update (RFC 9111 4.3.4). Whether the
// 200 would be gzipped is asked of the handler's fields (Content-Type, the length it set). The
// Content-Type itself describes a body that is not sent, and goes (as Tornado does).
void connection::not_modified_fields() {
  if (would_gzip(content_length.value_or(st.opts.gzip_min_length))) {
    fields += "Vary: Accept-Encoding\r\n";
    weaken_etag(fields);
  }
  remove_fields(fields, "Content-Type");
}

// Sends what has been written. A gzipped stream is flushed through zlib first, so what the
// handler wrote so far is decodable by the client now (server-sent events, long polls).
void connection::flush() {
  if (gzipping && started && !finished) {
    extras& e = x();
    e.gz_out.clear();
    e.deflate->compress({}, e.gz_out, true, false);
    write_raw_body(e.gz_out);
  }
  s.flush();
}

void connection::finish() {
  if (finished) return;
  if (!started) {
    if (!content_length) {
      send({});
      return;
    }
    start_streaming();  // a HEAD answer, or a length the handler never wrote (closes below)
  }
  if (gzipping) {
    extras& e = x();
    e.gz_out.clear();
    e.deflate->compress({}, e.gz_out, false, true);
    write_raw_body(e.gz_out);
  }
  if (chunked && !bodiless) s.write("0\r\n\r\n");
  if (content_length && !gzipping && body_sent != *content_length && !bodiless) {
    // The client would wait for bytes that never come, or read ours as the next response.
    log(log_level::error, "http", "response to %.*s sent %llu bytes, Content-Length said %llu",
        int(path.size()), path.data(), static_cast<unsigned long long>(body_sent),
        static_cast<unsigned long long>(*content_length));
    close_after = true;
  }
  finished = true;
}

}  // namespace detail

// --- request / response -------------------------------------------------------------------------

std::string_view request::method() const noexcept {
  return c_.head.method;
}
std::string_view request::target() const noexcept {
  return c_.head.target;
}
std::string_view request::path() const noexcept {
  return c_.path;
}
std::string_view request::query() const noexcept {
  return c_.query;
}
int request::minor_version() const noexcept {
  return c_.head.minor_version;
}
const message_head& request::head() const noexcept {
  return c_.head;
}
std::string_view request::header(std::string_view name) const noexcept {
  return c_.head.header(name);
}
const address& request::peer() const noexcept {
  return c_.peer;
}
std::string_view request::remote_ip() const {
  if (c_.more && !c_.more->xremote_ip.empty()) return c_.more->xremote_ip;
  return c_.peer_text();
}
std::string_view request::protocol() const noexcept {
  return c_.https ? "https" : "http";
}
std::string_view request::param(std::string_view name) const noexcept {
  for (auto& [n, v] : c_.params)
    if (n == name) return v;
  return {};
}
std::string_view request::path_rest() const noexcept {
  return c_.path_rest;
}
std::string_view request::body() {
  return c_.own_io([&] { return c_.whole_body(); });
}
std::string_view request::read_body_some() {
  return c_.own_io([&] { return c_.body_some(); });
}
bool request::body_done() const noexcept {
  return c_.body_complete;
}

void response::set_status(int code, std::string_view reason) {
  if (c_.started) throw std::logic_error("squall: set_status after the response started");
  if (code < 100 || code > 999) throw std::invalid_argument("squall: invalid status code");
  check_field("Status", reason);
  c_.status = code;
  c_.reason.assign(reason);
}
int response::status() const noexcept {
  return c_.status;
}

void response::add_header(std::string_view name, std::string_view value) {
  if (c_.started) throw std::logic_error("squall: add_header after the response started");
  check_field(name, value);
  // The server frames the body itself; a copied upstream framing field would contradict it.
  if ((name.size() == 14 && iequals(name, "Content-Length")) ||
      (name.size() == 17 && iequals(name, "Transfer-Encoding")))
    throw std::invalid_argument(
        "squall: Content-Length and Transfer-Encoding are the server's (use set_content_length)");
  std::string& f = c_.fields;
  // Room for a typical response's fields at once: growing from empty took two allocations per
  // connection. Kept across the connection's requests (reset_response() only clears it).
  if (f.capacity() < 256) f.reserve(256);
  // One resize and inline copies: four appends cost four calls into memcpy for a dozen bytes.
  std::size_t at = f.size();
  f.resize(at + name.size() + value.size() + 4);
  char* p = f.data() + at;
  squall::detail::copy_small(p, name.data(), name.size());
  p += name.size();
  *p++ = ':';
  *p++ = ' ';
  squall::detail::copy_small(p, value.data(), value.size());
  p += value.size();
  *p++ = '\r';
  *p = '\n';
}

void response::set_header(std::string_view name, std::string_view value) {
  if (c_.started) throw std::logic_error("squall: set_header after the response started");
  check_field(name, value);
  detail::remove_fields(c_.fields, name);
  add_header(name, value);
}

void response::set_content_length(std::uint64_t n) {
  if (c_.started) throw std::logic_error("squall: set_content_length after the response started");
  c_.content_length = n;
}
void response::close_connection() noexcept {
  c_.close_after = true;
}
void response::send(std::string_view body) {
  c_.own_io([&] { c_.send(body); });
}
void response::write(std::string_view data) {
  c_.own_io([&] { c_.write(data); });
}
void response::flush() {
  c_.own_io([&] { c_.flush(); });
}
void response::finish() {
  c_.own_io([&] { c_.finish(); });
}
bool response::started() const noexcept {
  return c_.started;
}
bool response::hijacked() const noexcept {
  return c_.hijacked;
}

io_stream& response::hijack() {
  if (c_.started) throw std::logic_error("squall: hijack after the response started");
  c_.hijack();
  return c_.s;
}

bool response::finished() const noexcept {
  return c_.finished;
}

void response::send_error(int code) {
  set_status(code);
  set_header("Content-Type", "text/plain; charset=utf-8");
  std::string body = std::to_string(code) + " " + std::string(reason_phrase(code)) + "\n";
  c_.own_io([&] { c_.send(body); });
}

// --- Router -------------------------------------------------------------------------------------

struct router::route {
  std::string method;
  std::string pattern;
  enum class kind { exact, prefix, segments } k = kind::exact;
  bool any_method = false;            // "*"
  bool get = false;                   // GET routes serve HEAD too
  std::vector<std::string> segments;  // "{name}" for a capture
  handler fn;

  bool accepts(std::string_view m) const noexcept {
    return any_method || method == m || (get && m == "HEAD");
  }

  // Matches `path`; fills `params`/`rest` on success.
  bool match(std::string_view path,
             std::vector<std::pair<std::string_view, std::string_view>>& params,
             std::string_view& rest) const {
    params.clear();  // nothing from a route tried before this one
    switch (k) {
      case kind::exact:
        return path == pattern;
      case kind::prefix:
        if (!path.starts_with(pattern)) return false;
        rest = path.substr(pattern.size());
        return true;
      case kind::segments:
        break;
    }
    std::string_view p = path;
    for (const std::string& seg : segments) {
      if (p.empty() || p[0] != '/') return fail(params);
      p.remove_prefix(1);
      std::size_t end = std::min(p.find('/'), p.size());
      std::string_view part = p.substr(0, end);
      if (seg.size() >= 2 && seg.front() == '{' && seg.back() == '}') {
        if (part.empty()) return fail(params);
        params.emplace_back(std::string_view(seg).substr(1, seg.size() - 2), part);
      } else if (part != seg) {
        return fail(params);
      }
      p.remove_prefix(end);
    }
    return p.empty() || fail(params);
  }

  static bool fail(std::vector<std::pair<std::string_view, std::string_view>>& params) {
    params.clear();
    return false;
  }
};

router::router() = default;
router::router(router&&) noexcept = default;
router& router::operator=(router&&) noexcept = default;
router::~router() = default;

router& router::add(std::string_view method, std::string_view pattern, handler h) {
  if (pattern.empty() || pattern[0] != '/')
    throw std::invalid_argument("squall: route pattern must start with '/'");
  auto r = std::make_unique<route>();
  r->method.assign(method);
  r->any_method = method == "*";
  r->get = method == "GET";
  r->fn = std::move(h);
  if (pattern.ends_with("/*")) {
    r->k = route::kind::prefix;
    r->pattern.assign(pattern.substr(0, pattern.size() - 1));  // keep the '/'
  } else if (pattern.find('{') != std::string_view::npos) {
    r->k = route::kind::segments;
    r->pattern.assign(pattern);
    std::string_view p = pattern.substr(1);
    for (;;) {
      std::size_t end = std::min(p.find('/'), p.size());
      r->segments.emplace_back(p.substr(0, end));
      if (end == p.size()) break;
      p.remove_prefix(end + 1);
    }
  } else {
    r->pattern.assign(pattern);
  }
  routes_.push_back(std::move(r));
  std::size_t i = routes_.size() - 1;
  // The route objects do not move, so the index may keep views of their patterns. An earlier
  // route with the same path keeps its place: it comes first.
  if (routes_[i]->k == route::kind::exact)
    exact_.try_emplace(routes_[i]->pattern, i);
  else
    first_general_ = std::min(first_general_, i);
  return *this;
}

// The exact route for `path` if no route before it could match first (a prefix or pattern
// route), else null.
router::route* router::exact_route(std::string_view path) const noexcept {
  auto it = exact_.find(path);
  if (it == exact_.end() || it->second > first_general_) return nullptr;
  return routes_[it->second].get();
}

void router::operator()(request& req, response& resp) {
  auto& c = req.c_;
  if (route* r = exact_route(c.path); r && r->accepts(req.method())) {
    // What a route matched before (a router inside another's prefix route) is not this one's.
    c.params.clear();
    c.path_rest = {};
    r->fn(req, resp);
    return;
  }
  scan(req, resp);  // in order: also the 405 with every method the path allows
}

void router::scan(request& req, response& resp) {
  auto& c = req.c_;
  std::string allow;
  for (const auto& r : routes_) {
    std::string_view rest;
    if (!r->match(c.path, c.params, rest)) continue;
    if (r->accepts(req.method())) {
      c.path_rest = rest;
      r->fn(req, resp);
      return;
    }
    if (allow.find(r->method) == std::string::npos) {
      if (!allow.empty()) allow += ", ";
      allow += r->method;
      if (r->get) allow += ", HEAD";
    }
  }
  c.params.clear();
  if (allow.empty()) {
    resp.send_error(404);
    return;
  }
  resp.set_header("Allow", allow);
  resp.send_error(405);
}

// --- server -------------------------------------------------------------------------------------

server::server(io_loop& loop, handler h, server_options opts)
    : st_(std::make_shared<state>(loop, std::move(h), std::move(opts))) {
  tcp_server_options t;
  t.max_connections = st_->opts.max_connections;
  t.stack_size = st_->opts.stack_size;
  // The stream holds a head and, when the handler asks for it, the whole body.
  // Any single wait (a client that stops reading our response) ends after idle_timeout; reads
  // have their own, shorter deadlines.
  t.stream.idle_timeout = st_->opts.idle_timeout;
  // Saturating: a max_body_size of "unlimited" (UINT64_MAX) must not wrap around.
  std::uint64_t room = st_->opts.limits.max_header_size + std::uint64_t{64 * 1024};
  std::uint64_t body = st_->opts.limits.max_body_size;
  t.stream.max_buffer_size = static_cast<std::size_t>(
      std::min<std::uint64_t>(body > UINT64_MAX - room ? UINT64_MAX : body + room, SIZE_MAX));
  std::weak_ptr<state> weak = st_;
  st_->tcp = std::make_unique<tcp_server>(
      loop,
      [weak](io_stream& s, const address& peer) {
        auto st = weak.lock();
        if (!st) return;
        detail::connection c(*st, s, peer);
        try {
          c.serve();
        } catch (const std::system_error& e) {
          if (!is_quiet(e.code())) throw;
        }
      },
      t);
}

server::~server() = default;

void server::listen(std::uint16_t port, std::string_view host, bool reuse_port) {
  st_->tcp->listen(port, host, reuse_port);
}
void server::add_sockets(const std::vector<int>& fds) {
  st_->tcp->add_sockets(fds);
}
std::vector<address> server::addresses() const {
  return st_->tcp->addresses();
}
void server::stop() {
  st_->tcp->stop();
}

void server::shutdown(time_point deadline) {
  auto st = st_;
  st->closing = true;
  st->tcp->stop();
  for (detail::connection* c : st->open)
    if (c->idle) squall::detail::cancel(c->fib);
  st->tcp->shutdown(deadline);
}

std::size_t server::connection_count() const noexcept {
  return st_->tcp->connection_count();
}
std::uint64_t server::requests_served() const noexcept {
  return st_->served;
}

}  // namespace squall::http
