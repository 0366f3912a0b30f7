// SPDX-License-Identifier: MIT
// HTTP/1.1 client: URLs and redirects, the request on the wire, the response through
// head_parser / chunked_decoder (and zlib for gzip), and a keep-alive pool per host:port.
#include "squall/http/client.hpp"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <system_error>
#include <vector>

#include "http/gzip.hpp"
#include "squall/config.hpp"
#include "squall/error.hpp"
#include "squall/fiber.hpp"
#include "squall/io_stream.hpp"
#include "squall/locks.hpp"
#include "squall/log.hpp"
#include "squall/resolver.hpp"
#include "squall/tcp_client.hpp"

namespace squall::http {
namespace {

constexpr std::string_view crlf = "\r\n";

char lower(char c) noexcept {
  return c >= 'A' && c <= 'Z' ? char(c - 'A' + 'a') : c;
}

std::string to_lower(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    c = lower(c);
  return out;
}

// RFC 9110 5.6.2 tchar: what a method or a field name may be made of.
bool is_token(std::string_view s) noexcept {
  if (s.empty()) return false;
  for (unsigned char c : s) {
    bool ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              std::string_view("!#$%&'*+-.^_`|~").find(char(c)) != std::string_view::npos;
    if (!ok) return false;
  }
  return true;
}

// True if the comma-separated `value` lists `token` (case-insensitive).
bool has_token(std::string_view value, std::string_view token) noexcept {
  while (!value.empty()) {
    std::size_t comma = value.find(',');
    if (iequals(trim_ows(value.substr(0, comma)), token)) return true;
    if (comma == std::string_view::npos) break;
    value.remove_prefix(comma + 1);
  }
  return false;
}

using header_list = std::vector<std::pair<std::string, std::string>>;

const std::string* find_header(const header_list& h, std::string_view name) noexcept {
  for (const auto& [k, v] : h)
    if (iequals(k, name)) return &v;
  return nullptr;
}

void remove_header(header_list& h, std::string_view name) {
  std::erase_if(h, [&](const auto& kv) { return iequals(kv.first, name); });
}

std::string base64(std::string_view in) {
  static constexpr char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  for (std::size_t i = 0; i < in.size(); i += 3) {
    std::uint32_t n = std::uint32_t(static_cast<unsigned char>(in[i])) << 16;
    if (i + 1 < in.size()) n |= std::uint32_t(static_cast<unsigned char>(in[i + 1])) << 8;
    if (i + 2 < in.size()) n |= static_cast<unsigned char>(in[i + 2]);
    out += abc[(n >> 18) & 63];
    out += abc[(n >> 12) & 63];
    out += i + 1 < in.size() ? abc[(n >> 6) & 63] : '=';
    out += i + 2 < in.size() ? abc[n & 63] : '=';
  }
  return out;
}

int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  c = lower(c);
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// For user:password in a URL, which may carry %XX escapes (an '@' or ':' in a password).
std::string percent_decode(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && hex_value(s[i + 1]) >= 0 && hex_value(s[i + 2]) >= 0) {
      out += char(hex_value(s[i + 1]) * 16 + hex_value(s[i + 2]));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

[[noreturn]] void bad_url(std::string_view url, const char* why) {
  throw std::invalid_argument("squall: http: bad URL '" + std::string(url) + "': " + why);
}

// --- URLs ------------------------------------------------------------------------------------

// An http URL taken apart. `authority` is kept as written (with any user:password@) so that
// relative redirects can be resolved against it (RFC 3986 section 5.2).
struct url {
  std::string scheme;     // lower case
  std::string authority;  // as written: [userinfo@]host[:port]
  std::string userinfo;   // percent-decoded
  std::string host;       // without the brackets of an IPv6 literal
  std::uint16_t port = 80;
  bool default_port = true;
  std::string path;   // starts with '/'
  std::string query;  // with its '?', or empty

  std::string target() const { return path + query; }
  // The Host header: the port only when it is not the scheme's default (RFC 9110 7.2).
  std::string host_header() const {
    std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
    return default_port ? h : h + ":" + std::to_string(port);
  }
  // host:port, lower case: connections are pooled by this.
  std::string pool_key() const { return to_lower(host) + "|" + std::to_string(port); }
  // For messages: without any user:password.
  std::string str() const { return scheme + "://" + host_header() + path + query; }
};

// Splits off scheme ("http"), or returns an empty view if `s` does not start with one.
std::string_view scheme_of(std::string_view s) noexcept {
  std::size_t colon = s.find(':');
  if (colon == std::string_view::npos || colon == 0) return {};
  for (std::size_t i = 0; i < colon; ++i) {
    char c = lower(s[i]);
    bool ok = (c >= 'a' && c <= 'z') ||
              (i > 0 && ((c >= '0' && c <= '9') || c == '+' || c == '-' || c == '.'));
    if (!ok) return {};
  }
  return s.substr(0, colon);
}

void parse_host_port(std::string_view text, std::string_view hostport, url& u) {
  std::string_view port;
  if (hostport.starts_with('[')) {
    std::size_t close = hostport.find(']');
    if (close == std::string_view::npos) bad_url(text, "unterminated IPv6 literal");
    u.host = hostport.substr(1, close - 1);
    std::string_view rest = hostport.substr(close + 1);
    if (!rest.empty() && rest.front() != ':') bad_url(text, "junk after IPv6 literal");
    if (!rest.empty()) port = rest.substr(1);
  } else {
    std::size_t colon = hostport.rfind(':');
    u.host = hostport.substr(0, colon);
    if (colon != std::string_view::npos) port = hostport.substr(colon + 1);
    if (u.host.find(':') != std::string::npos) bad_url(text, "an IPv6 literal needs [brackets]");
  }
  if (u.host.empty()) bad_url(text, "no host");
  if (port.empty()) return;  // "host:" is allowed (RFC 3986 3.2.3)
  unsigned long p = 0;
  for (char c : port) {
    if (c < '0' || c > '9' || (p = p * 10 + unsigned(c - '0')) > 65535) bad_url(text, "bad port");
  }
  if (p == 0) bad_url(text, "bad port");
  u.port = std::uint16_t(p);
  u.default_port = p == 80;
}

url parse_url(std::string_view text) {
  for (unsigned char c : text)
    if (c <= ' ' || c == 0x7f) bad_url(text, "spaces and control characters must be %-encoded");
  url u;
  std::string_view scheme = scheme_of(text);
  if (scheme.empty() || text.substr(scheme.size(), 3) != "://")
    bad_url(text, "not an absolute http:// URL");
  u.scheme = to_lower(scheme);
  if (u.scheme == "https") throw std::invalid_argument("squall: http: https needs TLS, not built");
  if (u.scheme != "http") bad_url(text, "only http:// is supported");
  std::string_view rest = text.substr(scheme.size() + 3);
  rest = rest.substr(0, rest.find('#'));
  std::size_t end = rest.find_first_of("/?");
  std::string_view authority = rest.substr(0, end);
  rest = end == std::string_view::npos ? std::string_view() : rest.substr(end);
  u.authority = authority;
  std::size_t at = authority.rfind('@');
  if (at != std::string_view::npos) {
    u.userinfo = percent_decode(authority.substr(0, at));
    authority.remove_prefix(at + 1);
  }
  parse_host_port(text, authority, u);
  std::size_t q = rest.find('?');
  u.path = rest.substr(0, q);
  if (q != std::string_view::npos) u.query = rest.substr(q);
  if (u.path.empty()) u.path = "/";
  return u;
}

// RFC 3986 5.2.4: removes "." and ".." segments from a path.
std::string remove_dot_segments(std::string_view in) {
  std::string out;
  while (!in.empty()) {
    if (in.starts_with("../")) {
      in.remove_prefix(3);
    } else if (in.starts_with("./")) {
      in.remove_prefix(2);
    } else if (in.starts_with("/./")) {
      in.remove_prefix(2);
    } else if (in == "/.") {
      in = "/";
    } else if (in.starts_with("/../") || in == "/..") {
      in = in.size() == 3 ? std::string_view("/") : in.substr(3);
      std::size_t slash = out.rfind('/');
      out.erase(slash == std::string::npos ? 0 : slash);
    } else if (in == "." || in == "..") {
      in = {};
    } else {
      std::size_t next = in.find('/', 1);
      out.append(in.substr(0, next));
      in = next == std::string_view::npos ? std::string_view() : in.substr(next);
    }
  }
  return out;
}

// The absolute URL a Location header `ref` points to, seen from `base` (RFC 3986 5.2.2).
std::string resolve_reference(const url& base, std::string_view ref) {
  ref = ref.substr(0, ref.find('#'));
  if (!scheme_of(ref).empty()) return std::string(ref);
  if (ref.starts_with("//")) return base.scheme + ":" + std::string(ref);
  std::string prefix = base.scheme + "://" + base.authority;
  if (ref.empty()) return prefix + base.path + base.query;
  if (ref.front() == '?') return prefix + base.path + std::string(ref);
  std::size_t q = ref.find('?');
  std::string_view path = ref.substr(0, q), query = q == ref.npos ? "" : ref.substr(q);
  std::string merged;
  if (path.starts_with('/')) {
    merged = path;
  } else if (path.empty()) {
    merged = base.path;
  } else {
    merged = base.path.substr(0, base.path.rfind('/') + 1) + std::string(path);
  }
  return prefix + remove_dot_segments(merged) + std::string(query);
}

// --- The request -----------------------------------------------------------------------------

bool idempotent(std::string_view method) noexcept {
  for (std::string_view m : {"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"})
    if (method == m) return true;
  return false;
}

void check_request(const fetch_request& req) {
  if (!is_token(req.method))
    throw std::invalid_argument("squall: http: bad method '" + req.method + "'");
  for (const auto& [k, v] : req.headers) {
    if (!is_token(k)) throw std::invalid_argument("squall: http: bad header name '" + k + "'");
    // A CR or LF would end the field and let the value inject fields of its own.
    if (v.find_first_of(std::string_view("\r\n\0", 3)) != std::string::npos)
      throw std::invalid_argument("squall: http: bad value for header '" + k + "'");
  }
  if (req.user_agent.find_first_of(std::string_view("\r\n\0", 3)) != std::string::npos)
    throw std::invalid_argument("squall: http: CR, LF or NUL in user_agent");
}

bool sends_body(const fetch_request& req) {
  return req.body_producer || !req.body.empty() || req.method == "POST" || req.method == "PUT" ||
         req.method == "PATCH";
}

std::string basic_auth(const std::string& user, const std::string& password) {
  return "Basic " + base64(user + ":" + password);
}

// The request head. Host, User-Agent, Accept-Encoding and Authorization are defaults the
// caller's own headers replace; the body's framing is ours alone, so the caller's
// Content-Length and Transfer-Encoding are dropped.
std::string request_head(const fetch_request& req, const url& u) {
  std::string h;
  h.reserve(256);
  h.append(req.method).append(" ").append(u.target()).append(" HTTP/1.1\r\n");
  auto add = [&](std::string_view name, std::string_view value) {
    h.append(name).append(": ").append(value).append(crlf);
  };
  auto mine = [&](std::string_view name) { return find_header(req.headers, name) == nullptr; };
  if (mine("Host")) add("Host", u.host_header());
  if (mine("User-Agent") && !req.user_agent.empty()) add("User-Agent", req.user_agent);
#if SQUALL_HAVE_ZLIB
  if (req.decompress && mine("Accept-Encoding")) add("Accept-Encoding", "gzip");
#endif
  if (mine("Authorization")) {
    if (!req.auth_username.empty()) {
      add("Authorization", basic_auth(req.auth_username, req.auth_password));
    } else if (!u.userinfo.empty()) {
      std::size_t colon = u.userinfo.find(':');
      add("Authorization",
          basic_auth(u.userinfo.substr(0, colon),
                     colon == std::string::npos ? "" : u.userinfo.substr(colon + 1)));
    }
  }
  if (req.body_producer) {
    add("Transfer-Encoding", "chunked");
  } else if (sends_body(req)) {
    add("Content-Length", std::to_string(req.body.size()));
  }
  for (const auto& [k, v] : req.headers)
    if (!iequals(k, "Content-Length") && !iequals(k, "Transfer-Encoding")) add(k, v);
  h.append(crlf);
  return h;
}

// Sends the body. A body_producer's exception goes to `*producer_error` when that is given
// (the caller deals with it) and ends the sending; without it, it propagates.
void send_body(io_stream& s, fetch_request& req, time_point deadline,
               std::exception_ptr* producer_error = nullptr) {
  if (!req.body_producer) {
    if (!req.body.empty()) s.write(req.body, deadline);
    return;
  }
  for (;;) {
    std::string_view piece;
    try {
      piece = req.body_producer();
    } catch (const fiber_unwind&) {
      throw;
    } catch (...) {
      if (!producer_error) throw;
      *producer_error = std::current_exception();
      return;
    }
    char size[24];
    int n = std::snprintf(size, sizeof size, "%zx\r\n", piece.size());
    if (piece.empty()) {
      s.write("0\r\n\r\n", deadline);
      return;
    }
    std::string_view parts[] = {std::string_view(size, std::size_t(n)), piece, crlf};
    s.write(std::span<const std::string_view>(parts), deadline);
  }
}

// Sends the request body while the fetching fiber reads the response (RFC 9112 9.5: a client
// sending a body SHOULD watch for a response meanwhile). A server that refuses a body (413,
// 401, a redirect) may answer before it reads any of it and then never read it; a client that
// had to finish sending first would wait on a full socket buffer until its deadline, and never
// see the answer. A body under the stream's direct-write size (16 KiB) is buffered and goes out
// with the head when the read starts, as before; a larger one, or a body_producer's, from a
// fiber of its own.
class body_sender {
 public:
  static constexpr std::size_t inline_max = 16 * 1024 - 1;

  body_sender() = default;
  body_sender(const body_sender&) = delete;
  body_sender& operator=(const body_sender&) = delete;
  ~body_sender() { stop(true); }

  void start(io_stream& s, fetch_request& req, time_point deadline) {
    if (!req.body_producer && req.body.size() <= inline_max) {
      send_body(s, req, deadline);
      sent_ = true;
      return;
    }
    // Shared: at loop shutdown this frame may go before the fiber is unwound.
    auto st = std::make_shared<shared>();
    st->fetcher = detail::current_fiber();
    st_ = st;
    fiber_ = spawn(this_fiber::loop(),
                   [st, &s, &req, deadline] {
                     try {
                       send_body(s, req, deadline, &st->producer_error);
                       if (st->producer_error) {
                         // The server waits for the rest of the body: the fetch would wait for its
                         // answer until its deadline. It is told now, and reports the producer's
                         // error.
                         if (!st->stopping) detail::cancel(st->fetcher);
                         return;
                       }
                       s.flush(deadline);
                       st->sent = true;
                     } catch (const std::system_error&) {
                       // The fetching fiber hears of a dead connection from its own read; a cancel
                       // is ours.
                     }
                   },
                   {.name = "http-body"});
  }

  // The whole body has gone out.
  bool sent() const noexcept { return sent_ || (st_ && st_->sent); }

  // The body_producer threw: its exception, instead of what the fetch was told meanwhile.
  void rethrow_producer_error() const {
    if (st_ && st_->producer_error) std::rethrow_exception(st_->producer_error);
  }

  // A final response came while the body was still going out. From 300 on the server does not
  // want the body: it stops, and the connection (out of step now) is not reused. Below 300 the
  // server may be reading it as it answers (an echo): it goes on while the response is read.
  void on_response(int status) {
    if (status >= 300) stop();
  }

  // Cancels the sending fiber, if it still runs, and waits for it, whatever the fetching
  // fiber's own deadline scope says: the sender uses this frame's stream and request. A cancel
  // of the fetching fiber that this wait takes is handed on to its next wait. Not while the
  // loop shuts down: the sender is unwound too, and from the destructor (`unwinding`) this
  // frame goes first.
  void stop(bool unwinding = false) {
    if (!fiber_.valid()) return;
    st_->stopping = true;
    fiber_.cancel();
    detail::fiber_record* self = detail::current_fiber();
    time_point scope = std::exchange(self->scope_deadline, time_point::max());
    bool cancelled = false;
    for (;;) {
      try {
        fiber_.join();
        break;
      } catch (const std::system_error& e) {
        if (!fiber_.done()) {
          cancelled = cancelled || e.code() == error::cancelled;
          continue;  // our own wait was cut: the sender has not finished
        }
        break;
      } catch (const fiber_unwind&) {
        self->scope_deadline = scope;
        if (!unwinding) throw;
        fiber_ = {};
        return;
      } catch (...) {
        break;  // the sender's own end (it catches what it expects)
      }
    }
    self->scope_deadline = scope;
    if (cancelled) detail::cancel(self);
    fiber_ = {};
  }

 private:
  struct shared {
    detail::fiber_record* fetcher = nullptr;
    std::exception_ptr producer_error;
    bool sent = false;
    bool stopping = false;  // the fetching fiber waits for the sender: no cancel for it
  };
  fiber<void> fiber_;
  std::shared_ptr<shared> st_;
  bool sent_ = false;  // inline
};

// --- The response ----------------------------------------------------------------------------

[[noreturn]] void closed_early(const char* where) {
  throw std::system_error(make_error_code(error::closed),
                          std::string("squall: http: the server closed the connection ") + where);
}

// What a refused head means, for the message: the limits name what the caller can raise.
std::string head_error(const parse_error& err) {
  std::string m = std::string("squall: http: bad response head: ") + err.what;
  if (err.status == 413) m += " (limits.max_body_size)";
  if (err.status == 431) m += " (limits.max_header_size, limits.max_headers)";
  return m;
}

// Reads a response head, line by line, into `buf` (empty, or holding the lines of this head read
// by a call that timed out) and parses it. Reading by lines leaves the bytes after the head (the
// body) in the stream's buffer, so nothing has to be carried over, and bare-LF heads (which the
// parser accepts) end the same way as CRLF ones. `got_bytes` tells whether any response byte
// arrived, even if this throws: that decides the stale-connection retry.
void read_head(io_stream& s, head_parser& parser, message_head& head, std::string& buf,
               time_point deadline, bool& got_bytes) {
  const parse_limits& limits = parser.limits();
  for (;;) {
    if (buf.size() >= limits.max_header_size)
      throw bad_response("squall: http: response head larger than max_header_size");
    std::string_view line;
    try {
      line = s.read_until("\n", limits.max_header_size - buf.size(), deadline);
    } catch (const std::system_error& e) {
      if (s.buffered() > 0) got_bytes = true;
      if (e.code() == error::buffer_full)
        throw bad_response("squall: http: response head larger than max_header_size");
      if (e.code() == error::closed)
        closed_early(got_bytes ? "in the middle of the response head" : "without a response");
      throw;
    }
    got_bytes = true;
    bool empty_line = line == "\n" || line == "\r\n";
    if (empty_line && buf.empty()) continue;  // stray CRLF after a previous body: skip it
    buf.append(line);
    if (!empty_line) continue;
    parse_error err;
    std::size_t n = parser.parse_response(buf, head, err);
    if (err) throw bad_response(head_error(err));
    if (n == 0) throw bad_response("squall: http: incomplete response head");
    return;
  }
}

// Calls `cb` with each line of a head (status line, fields, then an empty line), without line
// ends, as they were received.
void report_head(std::string_view buf, unique_function<void(std::string_view)>& cb) {
  if (!cb) return;
  while (!buf.empty()) {
    std::size_t nl = buf.find('\n');
    std::string_view line = buf.substr(0, nl);
    if (line.ends_with('\r')) line.remove_suffix(1);
    if (!line.empty()) cb(line);
    buf.remove_prefix(nl == std::string_view::npos ? buf.size() : nl + 1);
  }
  cb("");
}

// The most a gzip body's decoding hands on at once (as a piece to the streaming callback).
constexpr std::size_t gzip_step = 64 * 1024;

// Where body bytes go: gzip decoding if asked, the max_body_size checks, and then the
// streaming callback, the response's body, or nowhere (the body of a redirect being followed).
class body_sink {
 public:
  body_sink(fetch_request& req, std::string& body, bool gunzip, bool discard)
      : req_(req), body_(body), discard_(discard), max_(req.limits.max_body_size) {
    if (gunzip && gzip::available()) inflater_.emplace();
  }
  body_sink(const body_sink&) = delete;
  body_sink& operator=(const body_sink&) = delete;

  // Bytes of the body as received.
  void put(std::string_view raw) {
    received_ += raw.size();
    if (received_ > max_) too_big();
    if (!inflater_) return emit(raw);
    // Decoded and passed on a step at a time: a small gzip body can inflate to gigabytes.
    bool had_input = !raw.empty();
    do {
      decoded_buf_.clear();
      auto r = inflater_->decompress(raw, decoded_buf_, static_cast<std::size_t>(max_), gzip_step);
      raw = {};
      if (r == gzip::inflater::result::bad_data) throw bad_response("squall: http: bad gzip body");
      if (r == gzip::inflater::result::too_large) too_big();
      if (had_input) gzip_done_ = r == gzip::inflater::result::done;
      emit(decoded_buf_);
    } while (inflater_->more());
  }

  // The body has ended: a gzip stream must have ended too, or the body was cut short.
  void finish() const {
    if (inflater_ && received_ > 0 && !gzip_done_)
      throw bad_response("squall: http: gzip body truncated");
  }

 private:
  [[noreturn]] void too_big() const {
    throw bad_response("squall: http: response body larger than max_body_size (" +
                       std::to_string(max_) + " bytes)");
  }

  void emit(std::string_view piece) {
    if (piece.empty()) return;
    decoded_ += piece.size();
    if (decoded_ > max_) too_big();
    if (discard_) return;
    if (req_.streaming_callback) {
      req_.streaming_callback(piece);
    } else {
      body_.append(piece);
    }
  }

  fetch_request& req_;
  std::string& body_;
  bool discard_;
  std::optional<gzip::inflater> inflater_;
  std::string decoded_buf_;
  bool gzip_done_ = false;
  std::uint64_t max_;
  std::uint64_t received_ = 0, decoded_ = 0;
};

// The body framed by Content-Length. Returns false if more bytes than that came (the
// connection is then out of step and cannot be reused).
bool read_sized_body(io_stream& s, std::uint64_t length, body_sink& sink, time_point deadline) {
  std::uint64_t left = length;
  while (left > 0) {
    std::string_view d = s.read_some(deadline);
    if (d.empty()) closed_early("before the end of the body (Content-Length)");
    if (d.size() > left) {
      sink.put(d.substr(0, left));
      return false;
    }
    sink.put(d);
    left -= d.size();
  }
  return true;
}

// A chunked body. Returns false if bytes followed it.
bool read_chunked_body(io_stream& s, const parse_limits& limits, body_sink& sink,
                       time_point deadline) {
  chunked_decoder dec(limits);
  // Input the decoder left unconsumed (it may want a whole line before taking it); a read's view
  // dies with the next read, so such bytes are kept here.
  std::string carry;
  for (;;) {
    std::string_view d = s.read_some(deadline);
    if (d.empty()) closed_early("in the middle of a chunked body");
    std::string_view in = d;
    if (!carry.empty()) {
      carry.append(d);
      in = carry;
    }
    while (!in.empty() && !dec.done()) {
      std::string_view data;
      parse_error err;
      std::size_t used = dec.decode(in, data, err);
      if (err) throw bad_response(std::string("squall: http: bad chunked body: ") + err.what);
      sink.put(data);
      if (used == 0) break;
      in.remove_prefix(used);
    }
    if (dec.done()) return in.empty();
    carry = std::string(in);  // a copy first: `in` may point into carry
  }
}

// A body that runs until the server closes (an HTTP/1.0-style response).
void read_body_until_close(io_stream& s, body_sink& sink, time_point deadline) {
  for (;;) {
    std::string_view d = s.read_some(deadline);
    if (d.empty()) return;
    sink.put(d);
  }
}

// --- Redirects and timeouts ------------------------------------------------------------------

bool is_redirect(int code) noexcept {
  return code == 301 || code == 302 || code == 303 || code == 307 || code == 308;
}

// Whether a redirect turns the request into a GET without a body: 303 always (but for HEAD),
// 301 and 302 for a POST, as browsers, Tornado and the Fetch standard do (RFC 9110 15.4 allows
// it); 307 and 308 never.
bool becomes_get(std::string_view method, int code) noexcept {
  if (code == 303) return method != "HEAD" && method != "GET";
  return (code == 301 || code == 302) && method == "POST";
}

bool will_follow(const fetch_request& req, int code, std::string_view location) noexcept {
  if (!req.follow_redirects || !is_redirect(code) || location.empty()) return false;
  // A produced body has been consumed: it cannot be sent again to the new location.
  return !req.body_producer || becomes_get(req.method, code);
}

// now + d, saturating; a zero timeout means none (Tornado's convention for 0/None).
time_point deadline_after(time_point now, duration d) noexcept {
  if (d <= duration::zero() || d >= time_point::max() - now) return time_point::max();
  return now + d;
}

// Turns `req` into the request for the redirect from `from` to `to`.
void redirect_request(fetch_request& req, int code, const url& from, const url& to) {
  if (becomes_get(req.method, code)) {
    req.method = "GET";
    req.body.clear();
    req.body_producer = nullptr;
    for (std::string_view h :
         {"Content-Type", "Content-Length", "Content-Encoding", "Transfer-Encoding", "Expect"})
      remove_header(req.headers, h);
  }
  if (from.pool_key() != to.pool_key()) {
    // Another server: credentials and cookies meant for the first one stay behind (as curl
    // does), and a Host the caller set for the first one would be wrong.
    req.auth_username.clear();
    req.auth_password.clear();
    for (std::string_view h : {"Authorization", "Cookie", "Host"})
      remove_header(req.headers, h);
  }
}

[[noreturn]] void rethrow_timeout(const std::system_error& e, const std::string& what) {
  throw std::system_error(e.code(), "squall: http: " + what + " timed out");
}

// --- Connections -----------------------------------------------------------------------------

struct connection {
  io_stream stream;
  std::string key;
  timer_handle idle_timer;
};

// True if an idle pooled connection still looks usable: the server has not closed it (nor sent
// anything, which would be out of step). A peek, so nothing is consumed; the race with a close
// that is on its way remains, and the retry in exchange() covers it.
bool still_open(connection& c) {
  // (Bytes a server sent past the end of a response never get here: the exchange that saw them
  // did not pool the connection.)
  if (c.stream.closed()) return false;
  char byte;
  ssize_t n = ::recv(c.stream.fd(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

struct host_pool {
  explicit host_pool(std::size_t max) : slots(max) {}
  // One unit per connection in use or being opened: max_connections_per_host.
  semaphore slots;
  // Idle connections, oldest first (reused from the back: the newest is the likeliest alive).
  std::vector<std::unique_ptr<connection>> idle;
  // Fibers holding or waiting for a slot; the entry is dropped when none is left and nothing
  // is idle.
  std::size_t users = 0;
};

}  // namespace

struct client::state {
  io_loop& loop;
  client_options opts;
  std::map<std::string, std::unique_ptr<host_pool>, std::less<>> pools;
  std::size_t idle_count = 0;

  state(io_loop& l, client_options o) : loop(l), opts(std::move(o)) {}

  host_pool& pool(const std::string& key) {
    auto it = pools.find(key);
    if (it == pools.end()) {
      std::size_t max = opts.max_connections_per_host ? opts.max_connections_per_host
                                                      : std::numeric_limits<std::size_t>::max();
      it = pools.emplace(key, std::make_unique<host_pool>(max)).first;
    }
    return *it->second;
  }

  void drop_pool_if_unused(const std::string& key) {
    auto it = pools.find(key);
    if (it != pools.end() && it->second->users == 0 && it->second->idle.empty()) pools.erase(it);
  }

  // Takes the newest idle connection that is still open, closing the ones found dead.
  std::unique_ptr<connection> take_idle(host_pool& p) {
    while (!p.idle.empty()) {
      std::unique_ptr<connection> c = std::move(p.idle.back());
      p.idle.pop_back();
      --idle_count;
      c->idle_timer.cancel();
      if (still_open(*c)) return c;
      log(log_level::debug, "http", "pooled connection to %s was closed by the server",
          c->key.c_str());
    }
    return nullptr;
  }

  void put_idle(host_pool& p, std::unique_ptr<connection> c) {
    if (opts.max_idle_per_host == 0) return;
    connection* raw = c.get();
    if (opts.idle_timeout > duration::zero())
      raw->idle_timer = loop.call_later(opts.idle_timeout, [this, raw] { expire(raw); });
    p.idle.push_back(std::move(c));
    ++idle_count;
    if (p.idle.size() > opts.max_idle_per_host) {
      p.idle.front()->idle_timer.cancel();
      p.idle.erase(p.idle.begin());
      --idle_count;
    }
  }

  // The idle timer of `c` fired: close it.
  void expire(connection* c) {
    std::string key = c->key;  // c dies below
    auto it = pools.find(key);
    if (it == pools.end()) return;
    auto& idle = it->second->idle;
    auto pos = std::find_if(idle.begin(), idle.end(), [c](auto& p) { return p.get() == c; });
    if (pos == idle.end()) return;
    idle.erase(pos);
    --idle_count;
    drop_pool_if_unused(key);
  }

  io_stream connect(const url& u, time_point deadline) {
    connect_options o;
    o.deadline = deadline;
    if (!opts.resolver) return tcp_connect(u.host, u.port, o);
    std::vector<address> addrs = opts.resolver->resolve(u.host, u.port, AF_UNSPEC, deadline);
    return tcp_connect(std::span<const address>(addrs), o);
  }

  fetch_response hop(fetch_request& req, const url& u);
  std::optional<fetch_response> exchange(connection& c, fetch_request& req, const url& u,
                                         bool reused, time_point deadline, bool& reusable);
};

namespace {

// A slot in a host's pool and the connection that uses it. Returns the connection to the pool
// if the exchange left it reusable, and gives the slot back, however the fetch ends.
class lease {
 public:
  lease(client::state& st, std::string key, time_point deadline) : st_(st), key_(std::move(key)) {
    host_pool& p = st_.pool(key_);
    ++p.users;
    try {
      p.slots.acquire(deadline);
    } catch (...) {
      --p.users;
      st_.drop_pool_if_unused(key_);
      throw;
    }
    conn = st_.take_idle(p);
  }
  ~lease() {
    host_pool& p = st_.pool(key_);
    if (conn && reusable) st_.put_idle(p, std::move(conn));
    conn.reset();
    p.slots.release();
    --p.users;
    st_.drop_pool_if_unused(key_);
  }
  lease(const lease&) = delete;
  lease& operator=(const lease&) = delete;

  std::unique_ptr<connection> conn;
  bool reusable = false;

 private:
  client::state& st_;
  std::string key_;
};

}  // namespace

// One request and its response on one connection. Returns nullopt if the connection was a
// pooled one the server had closed (nothing came back) and the request may be sent again.
std::optional<fetch_response> client::state::exchange(connection& c, fetch_request& req,
                                                      const url& u, bool reused,
                                                      time_point deadline, bool& reusable) {
  io_stream& s = c.stream;
  bool got_bytes = false;
  bool expect = false;
  if (const std::string* e = find_header(req.headers, "Expect"))
    expect = iequals(trim_ows(*e), "100-continue") && sends_body(req);
  head_parser parser(req.limits);
  message_head head;
  std::string buf;
  body_sender body;
  bool body_started = !expect;
  try {
    s.write(request_head(req, u), deadline);
    if (expect) {
      s.flush(deadline);
    } else {
      body.start(s, req, deadline);
    }
    for (;;) {
      // With Expect: 100-continue, wait a second for the 100 and then send anyway (curl does
      // the same: servers that ignore Expect are common).
      time_point wait =
          body_started ? deadline : std::min(deadline, io_loop::now() + std::chrono::seconds(1));
      try {
        read_head(s, parser, head, buf, wait, got_bytes);
      } catch (const std::system_error& e) {
        if (body_started || e.code() != error::timed_out || io_loop::now() >= deadline) throw;
        body.start(s, req, deadline);
        body_started = true;
        continue;
      }
      if (head.status >= 200 || head.status == 101) break;
      report_head(buf, req.header_callback);  // an interim response: 100 Continue, 103...
      buf.clear();
      parser.reset();
      if (!body_started && head.status == 100) {
        body.start(s, req, deadline);
        body_started = true;
      }
    }
    body.on_response(head.status);
  } catch (const std::system_error& e) {
    body.stop();
    body.rethrow_producer_error();  // what cut the wait short, if it did
    bool stale = e.code() == error::closed || e.code() == error::reset;
    if (reused && stale && !got_bytes && idempotent(req.method) && !req.body_producer)
      return std::nullopt;
    throw;
  }

  fetch_response r;
  r.code = head.status;
  r.reason = head.reason;
  bool gunzip = SQUALL_HAVE_ZLIB && req.decompress && gzip::only_gzip(head);
  r.headers.reserve(head.headers.size());
  for (const header_field& f : head.headers) {
    // Tornado's convention: a decoded body no longer carries its Content-Encoding.
    if (gunzip && iequals(f.name, "Content-Encoding")) {
      r.headers.emplace_back("X-Consumed-Content-Encoding", f.value);
      continue;
    }
    r.headers.emplace_back(f.name, f.value);
  }
  report_head(buf, req.header_callback);
  if (req.method == "HEAD") head.framing = body_framing::none;
  if (head.framing == body_framing::content_length &&
      head.content_length > req.limits.max_body_size)
    throw bad_response("squall: http: response body larger than max_body_size (Content-Length " +
                       std::to_string(head.content_length) + ")");

  // The body of a redirect that fetch() will follow is read (to keep the connection) and dropped.
  bool discard = will_follow(req, r.code, r.header("Location"));
  bool user_close = false;
  if (const std::string* v = find_header(req.headers, "Connection"))
    user_close = has_token(*v, "close");
  // Set only once the body has been read: an exception on the way leaves the connection out.
  bool keep = head.keep_alive && !user_close && head.status != 101;
  if (discard && head.framing == body_framing::until_close) return r;  // not worth reading
  if (!discard && !req.streaming_callback && head.framing == body_framing::content_length &&
      head.content_length <= req.limits.max_body_size)
    r.body.reserve(head.content_length);
  body_sink sink(req, r.body, gunzip, discard);
  try {
    switch (head.framing) {
      case body_framing::none:
        break;
      case body_framing::content_length:
        keep = read_sized_body(s, head.content_length, sink, deadline) && keep;
        break;
      case body_framing::chunked:
        keep = read_chunked_body(s, req.limits, sink, deadline) && keep;
        break;
      case body_framing::until_close:
        read_body_until_close(s, sink, deadline);
        keep = false;
        break;
    }
  } catch (const std::system_error&) {
    body.stop();
    body.rethrow_producer_error();
    throw;
  }
  sink.finish();
  // The response is whole: what is left of the body is not wanted any more. Only a connection
  // that carried the whole body is in step for the next request.
  body.stop();
  body.rethrow_producer_error();
  if (!body.sent()) keep = false;
  // Bytes already buffered past the end of this response (a server that sent more than it
  // framed, e.g. after a 204) would be read as the next caller's response.
  if (s.buffered() > 0) keep = false;
  reusable = keep;
  return r;
}

// One request/response turn (a redirect is another hop), with its own request_timeout, on a
// pooled connection or a new one. A pooled connection the server turns out to have closed is
// replaced by a new one once, for methods that may be repeated.
fetch_response client::state::hop(fetch_request& req, const url& u) {
  time_point start = io_loop::now();
  time_point deadline = deadline_after(start, req.request_timeout);
  // Waiting for a free slot counts as connecting (Tornado bounds its queue wait the same way).
  time_point slot_deadline = std::min(deadline, deadline_after(start, req.connect_timeout));
  std::optional<lease> l;
  try {
    l.emplace(*this, u.pool_key(), slot_deadline);
  } catch (const std::system_error& e) {
    if (e.code() != error::timed_out) throw;
    rethrow_timeout(e, "waiting for a connection to " + u.host_header() + " (all " +
                           std::to_string(opts.max_connections_per_host) + " busy)");
  }
  for (;;) {
    bool reused = l->conn != nullptr;
    if (!reused) {
      time_point cd = std::min(deadline, deadline_after(io_loop::now(), req.connect_timeout));
      try {
        l->conn.reset(new connection{connect(u, cd), u.pool_key(), {}});
      } catch (const std::system_error& e) {
        if (e.code() == error::timed_out) rethrow_timeout(e, "connecting to " + u.host_header());
        // The kernel's errors (refused, unreachable) do not say where to; the resolver's do.
        if (e.code().category() != std::system_category()) throw;
        throw std::system_error(e.code(), "squall: http: connecting to " + u.host_header());
      }
    }
    std::optional<fetch_response> r;
    try {
      r = exchange(*l->conn, req, u, reused, deadline, l->reusable);
    } catch (const std::system_error& e) {
      if (e.code() != error::timed_out) throw;
      rethrow_timeout(e, req.method + " " + u.str());
    }
    if (r) return std::move(*r);
    log(log_level::debug, "http", "pooled connection to %s closed by the server; retrying %s",
        u.host_header().c_str(), u.str().c_str());
    l->conn.reset();
  }
}

client::client(io_loop& loop, client_options opts)
    : st_(std::make_unique<state>(loop, std::move(opts))) {}

client::~client() {
  for (auto& [key, p] : st_->pools)
    for (auto& c : p->idle)
      c->idle_timer.cancel();
}

fetch_response client::fetch(fetch_request req) {
  if (!this_fiber::active() || &this_fiber::loop() != &st_->loop)
    throw std::logic_error(
        "squall: http::client::fetch: call it from a fiber on the client's loop");
  check_request(req);
  time_point start = io_loop::now();
  std::string where = req.url;
  url u = parse_url(where);
  for (int redirects = 0;; ++redirects) {
    fetch_response r = st_->hop(req, u);
    std::string location(r.header("Location"));
    if (!will_follow(req, r.code, location)) {
      r.effective_url = std::move(where);
      r.request_time = io_loop::now() - start;
      return r;
    }
    if (redirects >= req.max_redirects)
      throw bad_response("squall: http: more than " + std::to_string(req.max_redirects) +
                         " redirects (the last from " + u.str() + " to " + location + ")");
    std::string next_text = resolve_reference(u, location);
    std::optional<url> next;
    try {
      next = parse_url(next_text);
    } catch (const std::invalid_argument& e) {
      throw bad_response("squall: http: cannot follow the redirect from " + u.str() + ": " +
                         e.what());
    }
    redirect_request(req, r.code, u, *next);
    u = std::move(*next);
    where = std::move(next_text);
  }
}

fetch_response client::get(std::string url) {
  fetch_request req;
  req.url = std::move(url);
  return fetch(std::move(req));
}

std::size_t client::idle_connections() const noexcept {
  return st_->idle_count;
}

std::string_view fetch_response::header(std::string_view name) const noexcept {
  for (const auto& [k, v] : headers)
    if (iequals(k, name)) return v;
  return {};
}

}  // namespace squall::http
