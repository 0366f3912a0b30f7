// SPDX-License-Identifier: MIT
// Static files: path checks, validators, ranges, and the chunked read loop.
#include "squall/http/static_files.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <limits>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>

#include "squall/error.hpp"
#include "squall/fiber.hpp"
#include "squall/http/parser.hpp"

namespace squall::http {

namespace {

// --- Content types -------------------------------------------------------------------------

struct type_entry {
  std::string_view ext;
  std::string_view type;
};

constexpr std::string_view octet_stream = "application/octet-stream";

constexpr type_entry builtin_types[] = {
    {"html", "text/html; charset=utf-8"},
    {"htm", "text/html; charset=utf-8"},
    {"css", "text/css; charset=utf-8"},
    {"js", "text/javascript; charset=utf-8"},
    {"mjs", "text/javascript; charset=utf-8"},
    {"cjs", "text/javascript; charset=utf-8"},
    {"txt", "text/plain; charset=utf-8"},
    {"text", "text/plain; charset=utf-8"},
    {"log", "text/plain; charset=utf-8"},
    {"csv", "text/csv; charset=utf-8"},
    {"md", "text/markdown; charset=utf-8"},
    {"xml", "text/xml; charset=utf-8"},
    {"ics", "text/calendar; charset=utf-8"},
    {"json", "application/json"},
    {"map", "application/json"},
    {"webmanifest", "application/manifest+json"},
    {"xhtml", "application/xhtml+xml"},
    {"rss", "application/rss+xml"},
    {"atom", "application/atom+xml"},
    {"yaml", "application/yaml"},
    {"yml", "application/yaml"},
    {"wasm", "application/wasm"},
    {"pdf", "application/pdf"},
    {"zip", "application/zip"},
    {"gz", "application/gzip"},
    {"tgz", "application/gzip"},
    {"tar", "application/x-tar"},
    {"bz2", "application/x-bzip2"},
    {"xz", "application/x-xz"},
    {"zst", "application/zstd"},
    {"svg", "image/svg+xml"},
    {"png", "image/png"},
    {"jpg", "image/jpeg"},
    {"jpeg", "image/jpeg"},
    {"gif", "image/gif"},
    {"webp", "image/webp"},
    {"avif", "image/avif"},
    {"ico", "image/x-icon"},
    {"bmp", "image/bmp"},
    {"tif", "image/tiff"},
    {"tiff", "image/tiff"},
    {"mp4", "video/mp4"},
    {"m4v", "video/mp4"},
    {"webm", "video/webm"},
    {"ogv", "video/ogg"},
    {"mov", "video/quicktime"},
    {"mp3", "audio/mpeg"},
    {"m4a", "audio/mp4"},
    {"ogg", "audio/ogg"},
    {"oga", "audio/ogg"},
    {"opus", "audio/ogg"},
    {"wav", "audio/wav"},
    {"flac", "audio/flac"},
    {"woff", "font/woff"},
    {"woff2", "font/woff2"},
    {"ttf", "font/ttf"},
    {"otf", "font/otf"},
    {"eot", "application/vnd.ms-fontobject"},
};

// The extension of the last component of `name` ("" if none; a leading dot is not one).
std::string_view extension_of(std::string_view name) noexcept {
  std::size_t slash = name.rfind('/');
  if (slash != std::string_view::npos) name.remove_prefix(slash + 1);
  std::size_t dot = name.rfind('.');
  if (dot == std::string_view::npos || dot == 0) return {};
  return name.substr(dot + 1);
}

// --- Percent-decoding and path segments ----------------------------------------------------

int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Decodes %XX escapes. False for an invalid escape or a NUL byte (raw or decoded).
bool percent_decode(std::string_view in, std::string& out) {
  out.clear();
  out.reserve(in.size());
  for (std::size_t i = 0; i < in.size(); ++i) {
    char c = in[i];
    if (c == '%') {
      if (i + 2 >= in.size()) return false;
      int hi = hex_value(in[i + 1]), lo = hex_value(in[i + 2]);
      if (hi < 0 || lo < 0) return false;
      c = static_cast<char>(hi * 16 + lo);
      i += 2;
    }
    if (c == '\0') return false;
    out.push_back(c);
  }
  return true;
}

// --- HTTP dates (RFC 9110 5.6.7) -----------------------------------------------------------

constexpr const char* day_names[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
constexpr const char* month_names[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d) noexcept {
  y -= m <= 2;
  std::int64_t era = (y >= 0 ? y : y - 399) / 400;
  auto yoe = static_cast<unsigned>(y - era * 400);
  unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

// IMF-fixdate, locale-independent ("Sun, 06 Nov 1994 08:49:37 GMT").
std::string format_http_date(std::int64_t t) {
  auto tt = static_cast<std::time_t>(t);
  std::tm g{};
  ::gmtime_r(&tt, &g);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%s, %02d %s %04d %02d:%02d:%02d GMT", day_names[g.tm_wday % 7],
                g.tm_mday, month_names[g.tm_mon % 12], g.tm_year + 1900, g.tm_hour, g.tm_min,
                g.tm_sec);
  return buf;
}

// A cursor over a date string.
struct date_reader {
  std::string_view s;
  bool ok = true;

  bool done() const noexcept { return s.empty(); }
  void expect(char c) {
    if (s.empty() || s.front() != c)
      ok = false;
    else
      s.remove_prefix(1);
  }
  void skip_letters() {
    std::size_t n = 0;
    while (n < s.size() && ((s[n] >= 'A' && s[n] <= 'Z') || (s[n] >= 'a' && s[n] <= 'z')))
      ++n;
    if (n == 0) ok = false;
    s.remove_prefix(n);
  }
  // Exactly `n` digits; with `space_pad`, the first may be a space (asctime's day).
  int digits(std::size_t n, bool space_pad = false) {
    if (s.size() < n) {
      ok = false;
      return 0;
    }
    int v = 0;
    for (std::size_t i = 0; i < n; ++i) {
      char c = s[i];
      if (i == 0 && space_pad && c == ' ') continue;
      if (c < '0' || c > '9') {
        ok = false;
        return 0;
      }
      v = v * 10 + (c - '0');
    }
    s.remove_prefix(n);
    return v;
  }
  int month() {
    if (s.size() < 3) {
      ok = false;
      return 0;
    }
    for (int m = 0; m < 12; ++m)
      if (s.substr(0, 3) == month_names[m]) {
        s.remove_prefix(3);
        return m + 1;
      }
    ok = false;
    return 0;
  }
};

// Seconds since the epoch of an HTTP-date in any of its three forms, or nothing.
std::optional<std::int64_t> parse_http_date(std::string_view text) {
  date_reader r{text};
  int day = 0, month = 0, year = 0, hour = 0, minute = 0, second = 0;
  auto time_of_day = [&] {
    hour = r.digits(2);
    r.expect(':');
    minute = r.digits(2);
    r.expect(':');
    second = r.digits(2);
  };
  r.skip_letters();  // the day name (its value is not checked, as RFC 9110 allows)
  if (!r.ok) return std::nullopt;
  if (!r.s.empty() && r.s.front() == ',') {
    r.expect(',');
    r.expect(' ');
    day = r.digits(2);
    if (!r.s.empty() && r.s.front() == '-') {  // RFC 850: "Sunday, 06-Nov-94 08:49:37 GMT"
      r.expect('-');
      month = r.month();
      r.expect('-');
      year = r.digits(2);
      year += year < 70 ? 2000 : 1900;
    } else {  // IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT"
      r.expect(' ');
      month = r.month();
      r.expect(' ');
      year = r.digits(4);
    }
    r.expect(' ');
    time_of_day();
    r.expect(' ');
    r.expect('G');
    r.expect('M');
    r.expect('T');
  } else {  // asctime: "Sun Nov  6 08:49:37 1994"
    r.expect(' ');
    month = r.month();
    r.expect(' ');
    day = r.digits(2, true);
    r.expect(' ');
    time_of_day();
    r.expect(' ');
    year = r.digits(4);
  }
  if (!r.ok || !r.done()) return std::nullopt;
  if (month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 || second > 60)
    return std::nullopt;
  return days_from_civil(year, static_cast<unsigned>(month), static_cast<unsigned>(day)) * 86400 +
         hour * 3600 + minute * 60 + second;
}

// --- Entity tags (RFC 9110 8.8.3, 13.1.2) --------------------------------------------------

bool is_ows(char c) noexcept {
  return c == ' ' || c == '\t';
}

// If-None-Match: "*" or a list of entity tags, one of which equals `etag` by the weak
// comparison (the W/ prefixes are ignored). A malformed list matches nothing from there on.
bool none_match(std::string_view list, std::string_view etag) noexcept {
  for (;;) {
    while (!list.empty() && (is_ows(list.front()) || list.front() == ','))
      list.remove_prefix(1);
    if (list.empty()) return false;
    if (list.front() == '*') return true;
    if (list.starts_with("W/")) list.remove_prefix(2);
    if (list.empty() || list.front() != '"') return false;
    std::size_t close = list.find('"', 1);
    if (close == std::string_view::npos) return false;
    if (list.substr(0, close + 1) == etag) return true;
    list.remove_prefix(close + 1);
  }
}

// --- Ranges (RFC 9110 14.1) ----------------------------------------------------------------

struct byte_range {
  enum kind_t { none, unsatisfiable, single } kind = none;
  std::uint64_t first = 0, last = 0;  // inclusive, when single
};

// Digits to a number that saturates instead of overflowing. False if `s` is not all digits.
bool parse_u64(std::string_view s, std::uint64_t& v) noexcept {
  if (s.empty()) return false;
  v = 0;
  constexpr auto max = std::numeric_limits<std::uint64_t>::max();
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    auto d = static_cast<std::uint64_t>(c - '0');
    v = v > (max - d) / 10 ? max : v * 10 + d;
  }
  return true;
}

// One "bytes=" range against a representation of `size` bytes. `none` means "serve the whole
// file": no range, another unit, a syntax error, or several ranges.
byte_range parse_range(std::string_view header, std::uint64_t size) noexcept {
  byte_range out;
  std::size_t eq = header.find('=');
  if (eq == std::string_view::npos || !iequals(trim_ows(header.substr(0, eq)), "bytes")) return out;
  std::string_view set = header.substr(eq + 1), spec;
  int count = 0;
  while (!set.empty()) {
    std::size_t comma = set.find(',');
    std::string_view elem = trim_ows(set.substr(0, comma));
    set = comma == std::string_view::npos ? std::string_view{} : set.substr(comma + 1);
    if (elem.empty()) continue;  // empty list elements are allowed (RFC 9110 5.6.1)
    spec = elem;
    ++count;
  }
  if (count != 1) return out;
  std::size_t dash = spec.find('-');
  if (dash == std::string_view::npos) return out;
  std::string_view a = spec.substr(0, dash), b = spec.substr(dash + 1);
  std::uint64_t first = 0, last = 0;
  if (a.empty()) {  // suffix: the last b bytes
    if (!parse_u64(b, last)) return out;
    if (last == 0 || size == 0) {
      out.kind = byte_range::unsatisfiable;
      return out;
    }
    out.kind = byte_range::single;
    out.first = last >= size ? 0 : size - last;
    out.last = size - 1;
    return out;
  }
  if (!parse_u64(a, first)) return out;
  if (b.empty()) {
    last = std::numeric_limits<std::uint64_t>::max();
  } else if (!parse_u64(b, last) || last < first) {
    return out;  // an invalid range-spec: the header is ignored
  }
  if (first >= size) {
    out.kind = byte_range::unsatisfiable;
    return out;
  }
  out.kind = byte_range::single;
  out.first = first;
  out.last = std::min(last, size - 1);
  return out;
}

// --- Files ---------------------------------------------------------------------------------

struct c_free {
  void operator()(char* p) const noexcept { std::free(p); }
};

// An open file descriptor, closed when the last owner lets go.
struct file_handle {
  int fd = -1;
  explicit file_handle(int f) noexcept : fd(f) {}
  ~file_handle() {
    if (fd >= 0) ::close(fd);
  }
  file_handle(const file_handle&) = delete;
  file_handle& operator=(const file_handle&) = delete;
};

// Reads up to `n` bytes at `off`, retrying short reads; fewer only at the end of the file.
std::size_t pread_full(int fd, char* buf, std::size_t n, std::uint64_t off) {
  std::size_t got = 0;
  while (got < n) {
    ssize_t r = ::pread(fd, buf + got, n - got, static_cast<off_t>(off + got));
    if (r < 0) {
      if (errno == EINTR) continue;
      throw_errno(errno, "squall: static_files: read");
    }
    if (r == 0) break;
    got += static_cast<std::size_t>(r);
  }
  return got;
}

std::int64_t mtime_ns(const struct stat& st) noexcept {
#if defined(__APPLE__)
  const timespec& ts = st.st_mtimespec;
#else
  const timespec& ts = st.st_mtim;
#endif
  return static_cast<std::int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

std::string hex(std::uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "%llx", static_cast<unsigned long long>(v));
  return buf;
}

// Statuses of the lookup; 0 is "found".
constexpr int found = 0;

struct static_handler {
  struct config {
    static_options opts;
    std::string root;         // realpath of opts.root
    std::string root_prefix;  // root with a trailing '/'
  };
  std::shared_ptr<const config> cfg;

  void operator()(request& req, response& resp) const;

  // realpath() of `path`, which must stay inside the root, and its stat. Returns found, 403 or
  // 404.
  int resolve(const std::string& path, std::string& resolved, struct stat& st) const {
    errno = 0;
    std::unique_ptr<char, c_free> real(::realpath(path.c_str(), nullptr));
    if (!real) {
      int e = errno;
      if (e == ENOENT || e == ENOTDIR || e == ENAMETOOLONG) return 404;
      if (e == EACCES || e == ELOOP) return 403;
      throw_errno(e, "squall: static_files: realpath " + path);
    }
    resolved = real.get();
    if (resolved != cfg->root && !resolved.starts_with(cfg->root_prefix)) return 403;
    if (::stat(resolved.c_str(), &st) != 0) return errno == EACCES ? 403 : 404;
    return found;
  }
};

// A complete plain-text error response ("404 Not Found\n"), as send_error() writes one, but
// keeping the headers set before it (Allow, Content-Range).
void fail(response& resp, int code) {
  resp.set_status(code);
  resp.set_header("Content-Type", "text/plain; charset=utf-8");
  std::string body = std::to_string(code);
  body += ' ';
  body += reason_phrase(code);
  body += '\n';
  resp.send(body);
}

// The part of the request path that names the file. A prefix route sets path_rest() to a view
// into the path, empty for the prefix itself ("/static/"); outside a prefix route it is a null
// view.
std::string_view file_path(request& req) {
  std::string_view rest = req.path_rest();
  return rest.data() != nullptr ? rest : req.path();
}

void static_handler::operator()(request& req, response& resp) const {
  const static_options& o = cfg->opts;
  std::string_view method = req.method();
  bool head = method == "HEAD";
  if (!head && method != "GET") {
    resp.set_header("Allow", "GET, HEAD");
    fail(resp, 405);
    return;
  }

  // The request path to a file system path under the root.
  std::string rel;
  if (!percent_decode(file_path(req), rel)) {
    fail(resp, 400);
    return;
  }
  std::string path = cfg->root;
  std::string_view segs = rel;
  while (!segs.empty()) {
    std::size_t slash = segs.find('/');
    std::string_view seg = segs.substr(0, slash);
    segs = slash == std::string_view::npos ? std::string_view{} : segs.substr(slash + 1);
    if (seg.empty() || seg == ".") continue;
    if (seg == "..") {
      fail(resp, 403);
      return;
    }
    if (path.back() != '/') path += '/';
    path += seg;
  }

  std::string resolved;
  struct stat st {};
  int status = resolve(path, resolved, st);
  if (status == found && S_ISDIR(st.st_mode)) {
    if (o.default_filename.empty()) {
      fail(resp, 403);
      return;
    }
    std::string_view full = req.path();
    if (!full.ends_with('/')) {
      // "//host/" would be a protocol-relative Location: an open redirect (browsers read
      // "/\\host/" the same way).
      if (full.starts_with("//") || full.starts_with("/\\")) {
        fail(resp, 403);
        return;
      }
      std::string location(full);
      location += '/';
      if (!req.query().empty()) {
        location += '?';
        location += req.query();
      }
      resp.set_status(301);
      resp.set_header("Location", location);
      resp.send({});
      return;
    }
    std::string index = resolved;
    if (index.back() != '/') index += '/';
    index += o.default_filename;
    status = resolve(index, resolved, st);
    if (status == 404) status = 403;  // a directory without its index
  } else if (status == found && !rel.empty() && rel.back() == '/') {
    status = 404;  // "/file.txt/"
  }
  if (status == found && !S_ISREG(st.st_mode)) status = 403;
  if (status != found) {
    fail(resp, status);
    return;
  }

  // O_NONBLOCK: should a FIFO be swapped in since the stat, open() must not wait for a writer.
  int fd = ::open(resolved.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  if (fd < 0) {
    int e = errno;
    if (e == ENOENT) return fail(resp, 404);
    if (e == EACCES || e == ELOOP || e == EPERM) return fail(resp, 403);
    throw_errno(e, "squall: static_files: open " + resolved);
  }
  auto file = std::make_shared<file_handle>(fd);
  if (::fstat(fd, &st) != 0) throw_errno(errno, "squall: static_files: fstat");
  if (!S_ISREG(st.st_mode)) return fail(resp, 403);

  // Validators.
  auto size = static_cast<std::uint64_t>(st.st_size);
  std::int64_t mtime = mtime_ns(st);
  std::int64_t mtime_s = static_cast<std::int64_t>(st.st_mtime);
  std::string etag = "\"" + hex(size) + "-" + hex(static_cast<std::uint64_t>(mtime)) + "-" +
                     hex(static_cast<std::uint64_t>(st.st_ino)) + "\"";
  resp.set_header("Accept-Ranges", "bytes");
  resp.set_header("ETag", etag);
  resp.set_header("Last-Modified", format_http_date(mtime_s));
  if (o.max_age > duration::zero()) {
    auto secs = std::chrono::duration_cast<std::chrono::seconds>(o.max_age).count();
    resp.set_header("Cache-Control", "max-age=" + std::to_string(secs));
  }

  std::string_view type = content_type_for(resolved);
  for (const auto& [ext, t] : o.content_types)
    if (iequals(ext, extension_of(resolved))) {
      type = t;
      break;
    }
  // Set before a 304 too: the server gives a 304 the Vary and ETag a 200 would have had, which
  // depend on whether it would have been gzipped (RFC 9110 15.4.5), and drops the type itself.
  resp.set_header("Content-Type", type);
  resp.set_content_length(size);

  // Conditional requests: If-None-Match first; If-Modified-Since only without it.
  bool has_inm = false, not_modified = false;
  for (const header_field& f : req.head().headers) {
    if (!iequals(f.name, "If-None-Match")) continue;
    has_inm = true;
    not_modified = not_modified || none_match(f.value, etag);
  }
  if (!has_inm) {
    std::string_view ims = req.header("If-Modified-Since");
    if (!ims.empty()) {
      auto t = parse_http_date(ims);
      not_modified = t && mtime_s <= *t;
    }
  }
  if (not_modified) {
    resp.set_status(304);
    resp.finish();
    return;
  }

  // Range, unless If-Range says the client's copy is stale.
  std::uint64_t offset = 0, length = size;
  std::string_view range = req.header("Range");
  if (!range.empty()) {
    std::string_view if_range = trim_ows(req.header("If-Range"));
    bool keep = true;
    if (!if_range.empty()) {
      if (if_range.front() == '"') {
        keep = if_range == etag;
      } else {
        auto t = parse_http_date(if_range);
        keep = t && *t == mtime_s;
      }
    }
    byte_range r = keep ? parse_range(range, size) : byte_range{};
    if (r.kind == byte_range::unsatisfiable) {
      resp.set_header("Content-Range", "bytes */" + std::to_string(size));
      fail(resp, 416);
      return;
    }
    if (r.kind == byte_range::single) {
      offset = r.first;
      length = r.last - r.first + 1;
      resp.set_status(206);
      resp.set_header("Content-Range", "bytes " + std::to_string(r.first) + "-" +
                                           std::to_string(r.last) + "/" + std::to_string(size));
    }
  }

  resp.set_content_length(length);
  if (head || length == 0) {
    // An empty write sends the head with our Content-Length (HEAD: the GET's length).
    resp.write({});
    resp.finish();
    return;
  }

  // The body, max_chunk bytes at a time.
  std::size_t chunk = static_cast<std::size_t>(
      std::min<std::uint64_t>(std::max<std::size_t>(o.max_chunk, 1), length));
  bool in_pool = size >= o.executor_min_size;
  // The buffer and the file are shared with the pool's task: should this fiber stop waiting
  // (cancelled, loop shutting down), the read in flight still has them until it ends.
  std::shared_ptr<char[]> buf(new char[chunk]);
  std::uint64_t left = length, pos = offset;
  while (left > 0) {
    std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(chunk, left));
    std::size_t got;
    if (in_pool) {
      got = this_fiber::run_in_executor(
          [file, buf, want, pos] { return pread_full(file->fd, buf.get(), want, pos); });
    } else {
      got = pread_full(file->fd, buf.get(), want, pos);
    }
    if (got < want)
      throw std::runtime_error("squall: static_files: " + resolved + " shrank while being sent");
    resp.write(std::string_view(buf.get(), got));
    left -= got;
    pos += got;
  }
  resp.finish();
}

}  // namespace

std::string_view content_type_for(std::string_view filename) noexcept {
  std::string_view ext = extension_of(filename);
  if (ext.empty()) return octet_stream;
  for (const type_entry& e : builtin_types)
    if (iequals(e.ext, ext)) return e.type;
  return octet_stream;
}

handler static_files(static_options opts) {
  auto cfg = std::make_shared<static_handler::config>();
  if (opts.root.empty()) throw std::invalid_argument("squall: static_files: root is empty");
  std::unique_ptr<char, c_free> real(::realpath(opts.root.c_str(), nullptr));
  if (!real) throw_errno(errno, "squall: static_files: root " + opts.root);
  struct stat st {};
  if (::stat(real.get(), &st) != 0) throw_errno(errno, "squall: static_files: root " + opts.root);
  if (!S_ISDIR(st.st_mode)) throw_errno(ENOTDIR, "squall: static_files: root " + opts.root);
  cfg->root = real.get();
  cfg->root_prefix = cfg->root.ends_with('/') ? cfg->root : cfg->root + "/";
  cfg->opts = std::move(opts);
  return static_handler{std::move(cfg)};
}

}  // namespace squall::http
