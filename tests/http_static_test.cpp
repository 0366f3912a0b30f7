// SPDX-License-Identifier: MIT
// Static files against peers we did not write: curl and Python's http.client, run as child
// processes (from the loop's thread pool, so the loop serves while they run).
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "squall/fiber.hpp"
#include "squall/http/server.hpp"
#include "squall/http/static_files.hpp"
#include "squall/io_loop.hpp"

namespace fs = std::filesystem;
namespace http = squall::http;
using namespace std::chrono_literals;
using squall::io_loop;

namespace {

// Every file in the tree gets this mtime, so Last-Modified is known.
constexpr std::int64_t fixed_mtime = 1577934245;
constexpr std::string_view fixed_date = "Thu, 02 Jan 2020 03:04:05 GMT";
constexpr std::size_t big_size = 1024 * 1024 + 7;  // above executor_min_size, odd

// Deterministic bytes with every value in them.
std::string pattern(std::size_t n) {
  std::string s(n, '\0');
  std::uint32_t x = 12345;
  for (auto& c : s) {
    x = x * 1103515245u + 12345u;
    c = static_cast<char>(x >> 24);
  }
  return s;
}

void set_mtime(const fs::path& p) {
  timespec ts[2] = {{fixed_mtime, 0}, {fixed_mtime, 0}};
  REQUIRE(::utimensat(AT_FDCWD, p.c_str(), ts, AT_SYMLINK_NOFOLLOW) == 0);
}

void write_file(const fs::path& p, const std::string& data) {
  {
    std::ofstream f(p, std::ios::binary);
    f << data;
  }
  set_mtime(p);
}

std::string read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// A shell word.
std::string quote(std::string_view s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'')
      out += "'\\''";
    else
      out += c;
  }
  return out + "'";
}

struct proc_result {
  int status = -1;
  std::string out;  // stdout and stderr
};

// Runs `cmd` with sh on a worker thread while `loop` goes on serving.
proc_result run_command(io_loop& loop, const std::string& cmd) {
  return squall::run_sync(loop, [cmd] {
    return squall::this_fiber::run_in_executor([cmd] {
      proc_result r;
      FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
      if (!p) return r;
      char buf[4096];
      std::size_t n;
      while ((n = std::fread(buf, 1, sizeof buf, p)) > 0)
        r.out.append(buf, n);
      r.status = ::pclose(p);
      return r;
    });
  });
}

struct reply {
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::string raw;  // what the peer printed, for failure messages

  bool has(std::string_view name) const {
    for (auto& [n, v] : headers)
      if (http::iequals(n, name)) return true;
    return false;
  }
  std::string header(std::string_view name) const {
    for (auto& [n, v] : headers)
      if (http::iequals(n, name)) return v;
    return {};
  }
};

// "Name: value" lines (CRLF or LF) into `r.headers`, up to an empty line; returns what follows.
std::string_view parse_fields(std::string_view text, reply& r) {
  while (!text.empty()) {
    std::size_t eol = text.find('\n');
    std::string_view line = text.substr(0, eol);
    text = eol == std::string_view::npos ? std::string_view{} : text.substr(eol + 1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) break;
    std::size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    std::string_view value = line.substr(colon + 1);
    while (!value.empty() && value.front() == ' ')
      value.remove_prefix(1);
    r.headers.emplace_back(line.substr(0, colon), value);
  }
  return text;
}

// A served tree:
//   <base>/secret.txt, <base>/outside/secret.txt    not to be reached
//   <base>/root/...                                 served
struct site {
  fs::path base, root, out;
  std::string big = pattern(big_size);
  io_loop loop;
  std::unique_ptr<http::server> whole;   // static_files is the server's handler
  std::unique_ptr<http::server> routed;  // static_files under "/static/*" in a router
  std::uint16_t whole_port = 0, routed_port = 0;
  int calls = 0;

  site() {
    char tmpl[] = "/tmp/squall-static-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    base = tmpl;
    root = base / "root";
    out = base / "out";
    fs::create_directories(root / "sub");
    fs::create_directories(root / "noindex");
    fs::create_directories(base / "outside");
    fs::create_directories(out);
    write_file(base / "secret.txt", "SECRET outside the root\n");
    write_file(base / "outside" / "secret.txt", "SECRET in a sibling directory\n");
    write_file(root / "index.html", "<h1>root index</h1>\n");
    write_file(root / "sub" / "index.html", "<h1>sub index</h1>\n");
    write_file(root / "noindex" / "file.txt", "in noindex\n");
    write_file(root / "hello.txt", "hello, world\n");
    write_file(root / "empty.txt", "");
    write_file(root / "one.bin", "x");
    write_file(root / "big.bin", big);
    write_file(root / "style.css", "body { color: red; }\n");
    write_file(root / "app.js", "console.log(1);\n");
    write_file(root / "app.mjs", "export default 1;\n");
    write_file(root / "data.json", "{\"a\": 1}\n");
    write_file(root / "pic.png", "\x89PNG\r\n\x1a\n");
    write_file(root / "PHOTO.JPG", "\xff\xd8\xff");
    write_file(root / "logo.svg", "<svg/>");
    write_file(root / "font.woff2", "wOF2");
    write_file(root / "module.wasm", std::string("\0asm", 4));
    write_file(root / "notes.md", "# notes\n");
    write_file(root / "README", "no extension\n");
    write_file(root / "file.unknownext", "?\n");
    write_file(root / "with space.txt", "spaced\n");
    fs::create_symlink("/etc/passwd", root / "passwd");
    fs::create_symlink(base / "outside", root / "outlink");
    fs::create_symlink(base / "secret.txt", root / "secret-link.txt");
    fs::create_symlink("hello.txt", root / "inlink.txt");
    fs::create_symlink("sub", root / "sublink");
    REQUIRE(::mkfifo((root / "fifo").c_str(), 0644) == 0);

    whole = std::make_unique<http::server>(
        loop, http::static_files({.root = root.string(), .max_age = 3600s}));
    whole->listen(0, "127.0.0.1");
    whole_port = whole->addresses().at(0).port();

    http::router routes;
    routes.get("/hello", [](http::request&, http::response& resp) { resp.send("hi\n"); });
    // Small chunks that do not divide the sizes, and every read in the thread pool.
    routes.get("/static/*", http::static_files({.root = root.string(),
                                                .max_chunk = 64 * 1024 + 3,
                                                .executor_min_size = 0,
                                                .content_types = {{"md", "text/x-custom"}}}));
    routed = std::make_unique<http::server>(loop, std::move(routes));
    routed->listen(0, "127.0.0.1");
    routed_port = routed->addresses().at(0).port();
  }

  ~site() {
    routed.reset();
    whole.reset();
    std::error_code ec;
    fs::remove_all(base, ec);
  }

  std::string url(std::uint16_t port, std::string_view target) const {
    return "http://127.0.0.1:" + std::to_string(port) + std::string(target);
  }

  // One request with curl; `args` are extra curl arguments (already shell words).
  reply curl(std::uint16_t port, std::string_view target, const std::string& args = "") {
    int n = calls++;
    fs::path hdr = out / ("curl-" + std::to_string(n) + ".hdr");
    fs::path body = out / ("curl-" + std::to_string(n) + ".body");
    std::string cmd = "curl -s -S -g --path-as-is --max-time 30 -D " + quote(hdr.string()) +
                      " -o " + quote(body.string()) + " " + args + " " + quote(url(port, target));
    proc_result pr = run_command(loop, cmd);
    reply r;
    r.raw = "$ " + cmd + "\n" + pr.out;
    std::string head = read_file(hdr);
    r.raw += head;
    // The last head in the file (curl also writes interim 1xx heads).
    std::size_t at = head.rfind("HTTP/");
    if (pr.status != 0 || at == std::string::npos) return r;
    std::string_view h = std::string_view(head).substr(at);
    std::size_t sp = h.find(' ');
    r.status = std::stoi(std::string(h.substr(sp + 1, 3)));
    parse_fields(h.substr(h.find('\n') + 1), r);
    r.body = read_file(body);  // no file for an empty body: ""
    return r;
  }

  // Requests over one http.client connection ("METHOD PATH\nName: value...").
  std::vector<reply> python(std::uint16_t port, const std::vector<std::string>& requests) {
    int n = calls++;
    fs::path dir = out / ("py-" + std::to_string(n));
    fs::create_directories(dir);
    std::string cmd = "python3 " +
                      quote(std::string(SQUALL_SOURCE_ROOT) + "/tests/http_static_peer.py") +
                      " 127.0.0.1 " + std::to_string(port) + " " + quote(dir.string());
    for (auto& r : requests)
      cmd += " " + quote(r);
    proc_result pr = run_command(loop, cmd);
    std::vector<reply> replies;
    std::string_view text = pr.out;
    while (true) {
      std::size_t at = text.find("RESPONSE ");
      if (at == std::string_view::npos) break;
      text.remove_prefix(at + 9);
      reply r;
      std::size_t i = std::stoul(std::string(text.substr(0, text.find(' '))));
      text.remove_prefix(text.find(' ') + 1);
      r.status = std::stoi(std::string(text.substr(0, 3)));
      text = parse_fields(text.substr(text.find('\n') + 1), r);
      r.body = read_file(dir / (std::to_string(i) + ".body"));
      replies.push_back(std::move(r));
    }
    for (auto& r : replies)
      r.raw = "$ " + cmd + "\n" + pr.out;
    if (replies.size() != requests.size()) {
      INFO(pr.out);
      FAIL_CHECK("python peer answered " << replies.size() << " of " << requests.size());
      replies.resize(requests.size());
    }
    return replies;
  }
};

std::string range_header(std::string_view spec) {
  return "-H " + quote("Range: " + std::string(spec));
}

}  // namespace

TEST_CASE("content_type_for: the built-in table") {
  CHECK(http::content_type_for("a.html") == "text/html; charset=utf-8");
  CHECK(http::content_type_for("/x/y/a.HTM") == "text/html; charset=utf-8");
  CHECK(http::content_type_for("a.css") == "text/css; charset=utf-8");
  CHECK(http::content_type_for("a.js") == "text/javascript; charset=utf-8");
  CHECK(http::content_type_for("a.mjs") == "text/javascript; charset=utf-8");
  CHECK(http::content_type_for("a.json") == "application/json");
  CHECK(http::content_type_for("a.txt") == "text/plain; charset=utf-8");
  CHECK(http::content_type_for("a.svg") == "image/svg+xml");
  CHECK(http::content_type_for("a.png") == "image/png");
  CHECK(http::content_type_for("a.jpg") == "image/jpeg");
  CHECK(http::content_type_for("a.JPEG") == "image/jpeg");
  CHECK(http::content_type_for("a.gif") == "image/gif");
  CHECK(http::content_type_for("a.webp") == "image/webp");
  CHECK(http::content_type_for("favicon.ico") == "image/x-icon");
  CHECK(http::content_type_for("a.wasm") == "application/wasm");
  CHECK(http::content_type_for("a.pdf") == "application/pdf");
  CHECK(http::content_type_for("a.xml") == "text/xml; charset=utf-8");
  CHECK(http::content_type_for("a.mp4") == "video/mp4");
  CHECK(http::content_type_for("a.woff") == "font/woff");
  CHECK(http::content_type_for("a.woff2") == "font/woff2");
  CHECK(http::content_type_for("a.tar.gz") == "application/gzip");
  CHECK(http::content_type_for("README") == "application/octet-stream");
  CHECK(http::content_type_for(".bashrc") == "application/octet-stream");
  CHECK(http::content_type_for("dir.d/file") == "application/octet-stream");
  CHECK(http::content_type_for("a.") == "application/octet-stream");
  CHECK(http::content_type_for("a.nosuchtype") == "application/octet-stream");
}

TEST_CASE("static_files refuses a root that is not a directory") {
  CHECK_THROWS_AS(http::static_files({.root = "/nonexistent/squall-static"}), std::system_error);
  CHECK_THROWS_AS(http::static_files({.root = "/etc/passwd"}), std::system_error);
  CHECK_THROWS_AS(http::static_files({.root = ""}), std::invalid_argument);
}

TEST_CASE_FIXTURE(site, "content types and the other headers of a 200 (curl)") {
  struct want {
    const char* path;
    const char* type;
  };
  for (want w :
       {want{"/index.html", "text/html; charset=utf-8"},
        want{"/hello.txt", "text/plain; charset=utf-8"},
        want{"/style.css", "text/css; charset=utf-8"},
        want{"/app.js", "text/javascript; charset=utf-8"},
        want{"/app.mjs", "text/javascript; charset=utf-8"}, want{"/data.json", "application/json"},
        want{"/pic.png", "image/png"}, want{"/PHOTO.JPG", "image/jpeg"},
        want{"/logo.svg", "image/svg+xml"}, want{"/font.woff2", "font/woff2"},
        want{"/module.wasm", "application/wasm"}, want{"/notes.md", "text/markdown; charset=utf-8"},
        want{"/README", "application/octet-stream"},
        want{"/file.unknownext", "application/octet-stream"},
        want{"/with%20space.txt", "text/plain; charset=utf-8"}}) {
    reply r = curl(whole_port, w.path);
    INFO(r.raw);
    CHECK(r.status == 200);
    CHECK(r.header("Content-Type") == w.type);
    CHECK(r.header("Accept-Ranges") == "bytes");
    CHECK(r.header("Last-Modified") == fixed_date);
    CHECK(r.header("Cache-Control") == "max-age=3600");
    CHECK(r.header("Content-Length") == std::to_string(r.body.size()));
    CHECK_FALSE(r.has("Transfer-Encoding"));
    std::string etag = r.header("ETag");
    CHECK(etag.size() > 2);
    CHECK(etag.front() == '"');  // strong
    CHECK(etag.back() == '"');
  }
  // The routed server: its own table entry, no Cache-Control.
  reply r = curl(routed_port, "/static/notes.md");
  INFO(r.raw);
  CHECK(r.status == 200);
  CHECK(r.header("Content-Type") == "text/x-custom");
  CHECK_FALSE(r.has("Cache-Control"));
  // Different files, different tags.
  CHECK(curl(whole_port, "/hello.txt").header("ETag") !=
        curl(whole_port, "/style.css").header("ETag"));
}

TEST_CASE_FIXTURE(site, "bodies are byte-exact, with Content-Length (curl and http.client)") {
  struct want {
    const char* name;
    std::string data;
  };
  std::vector<want> files = {{"empty.txt", ""}, {"one.bin", "x"}, {"big.bin", big}};
  for (auto& f : files) {
    for (auto [port, prefix] : {std::pair{whole_port, ""}, std::pair{routed_port, "/static"}}) {
      reply r = curl(port, std::string(prefix) + "/" + f.name);
      INFO(r.raw);
      CHECK(r.status == 200);
      CHECK(r.header("Content-Length") == std::to_string(f.data.size()));
      CHECK_FALSE(r.has("Transfer-Encoding"));
      CHECK(r.body.size() == f.data.size());
      CHECK(r.body == f.data);
    }
  }
  // http.client, keep-alive: every file twice on one connection, HEAD in between.
  for (auto [port, prefix] : {std::pair{whole_port, ""}, std::pair{routed_port, "/static"}}) {
    std::vector<std::string> reqs;
    for (auto& f : files) {
      reqs.push_back("GET " + std::string(prefix) + "/" + f.name);
      reqs.push_back("HEAD " + std::string(prefix) + "/" + f.name);
      reqs.push_back("GET " + std::string(prefix) + "/" + f.name);
    }
    auto rs = python(port, reqs);
    for (std::size_t i = 0; i < rs.size(); ++i) {
      const want& f = files[i / 3];
      INFO(reqs[i]);
      INFO(rs[i].raw);
      CHECK(rs[i].status == 200);
      CHECK(rs[i].header("Content-Length") == std::to_string(f.data.size()));
      if (i % 3 == 1)
        CHECK(rs[i].body.empty());  // HEAD
      else
        CHECK(rs[i].body == f.data);
    }
  }
}

TEST_CASE_FIXTURE(site, "HEAD carries the GET's headers and no body (curl -I)") {
  reply r = curl(whole_port, "/big.bin", "-I");
  INFO(r.raw);
  CHECK(r.status == 200);
  CHECK(r.header("Content-Length") == std::to_string(big_size));
  CHECK(r.header("Content-Type") == "application/octet-stream");
  CHECK(r.header("Last-Modified") == fixed_date);
  CHECK(r.has("ETag"));
  reply g = curl(whole_port, "/big.bin");
  CHECK(g.header("ETag") == r.header("ETag"));
}

TEST_CASE_FIXTURE(site,
                  "with gzip, a 304 carries the ETag and Vary its 200 would (RFC 9110 15.4.5)") {
  std::string text;
  for (int i = 0; text.size() < 48 * 1024; ++i)
    text += "line " + std::to_string(i) + "\n";
  write_file(root / "long.txt", text);
  http::server_options o;
  o.gzip = true;
  http::server gz(loop, http::static_files({.root = root.string()}), std::move(o));
  gz.listen(0, "127.0.0.1");
  std::uint16_t port = gz.addresses().at(0).port();
  std::string accept = "-H " + quote("Accept-Encoding: gzip");
  auto inm = [&](const std::string& v) { return " -H " + quote("If-None-Match: " + v); };

  // Compressible: the 200 is gzipped under a weak tag, with Vary; so is the 304.
  reply first = curl(port, "/long.txt", accept);
  INFO(first.raw);
  REQUIRE(first.status == 200);
  CHECK(first.header("Content-Encoding") == "gzip");
  std::string etag = first.header("ETag");
  CHECK(etag.starts_with("W/\""));
  reply r = curl(port, "/long.txt", accept + inm(etag));
  INFO(r.raw);
  CHECK(r.status == 304);
  CHECK(r.header("ETag") == etag);
  CHECK(r.header("Vary") == "Accept-Encoding");
  CHECK_FALSE(r.has("Content-Type"));
  CHECK_FALSE(r.has("Content-Encoding"));
  // Asked without gzip, the 200 would be plain: a strong tag and no Vary, on the 304 as well.
  r = curl(port, "/long.txt", inm(etag));
  CHECK(r.status == 304);
  CHECK(r.header("ETag") == etag.substr(2));
  CHECK_FALSE(r.has("Vary"));
  // Not compressible: never gzipped, so the 304 keeps the strong tag.
  reply bin = curl(port, "/big.bin", accept);
  REQUIRE(bin.status == 200);
  CHECK_FALSE(bin.has("Content-Encoding"));
  r = curl(port, "/big.bin", accept + inm(bin.header("ETag")));
  CHECK(r.status == 304);
  CHECK(r.header("ETag") == bin.header("ETag"));
  CHECK_FALSE(r.has("Vary"));
}

TEST_CASE_FIXTURE(site, "ETag and If-None-Match") {
  reply first = curl(whole_port, "/hello.txt");
  REQUIRE(first.status == 200);
  std::string etag = first.header("ETag");
  REQUIRE(etag.size() > 2);
  auto inm = [&](const std::string& v) { return "-H " + quote("If-None-Match: " + v); };
  for (const std::string& v :
       {etag, "W/" + etag, "\"nope\", " + etag, "\"a\",\"b\" , W/" + etag, std::string("*")}) {
    reply r = curl(whole_port, "/hello.txt", inm(v));
    INFO(r.raw);
    CHECK(r.status == 304);
    CHECK(r.body.empty());
    CHECK(r.header("ETag") == etag);
    CHECK(r.header("Cache-Control") == "max-age=3600");
    CHECK_FALSE(r.has("Transfer-Encoding"));
  }
  for (const std::string& v :
       {std::string("\"nope\""), std::string("W/\"nope\""), etag.substr(1, etag.size() - 2)}) {
    reply r = curl(whole_port, "/hello.txt", inm(v));
    INFO(r.raw);
    CHECK(r.status == 200);
    CHECK(r.body == "hello, world\n");
  }
  // If-None-Match wins over If-Modified-Since (RFC 9110 13.2.2), both ways.
  reply r = curl(whole_port, "/hello.txt",
                 inm("\"nope\"") + " -H " + quote("If-Modified-Since: " + std::string(fixed_date)));
  CHECK(r.status == 200);
  r = curl(whole_port, "/hello.txt",
           inm(etag) + " -H " + quote("If-Modified-Since: Thu, 01 Jan 1970 00:00:00 GMT"));
  CHECK(r.status == 304);
  // A changed file gets another tag.
  // (The tag is made of size, mtime and inode: the mtime is pinned here, so the size changes.)
  write_file(root / "hello.txt", "hello, again!\n");
  r = curl(whole_port, "/hello.txt", inm(etag));
  INFO(r.raw);
  CHECK(r.status == 200);
  CHECK(r.body == "hello, again!\n");
  CHECK(r.header("ETag") != etag);

  // The same through http.client, HEAD included, on one connection.
  etag = r.header("ETag");
  auto rs = python(routed_port,
                   {"GET /static/hello.txt\nIf-None-Match: " + etag,
                    "HEAD /static/hello.txt\nIf-None-Match: " + etag,
                    "GET /static/hello.txt\nIf-None-Match: \"other\"", "GET /static/hello.txt"});
  CHECK(rs[0].status == 304);
  CHECK(rs[0].body.empty());
  CHECK(rs[1].status == 304);
  CHECK(rs[2].status == 200);
  CHECK(rs[2].body == "hello, again!\n");
  CHECK(rs[3].status == 200);
  CHECK(rs[3].header("ETag") == etag);
}

TEST_CASE_FIXTURE(site, "Last-Modified and If-Modified-Since") {
  auto ims = [&](std::string_view v) {
    return curl(whole_port, "/hello.txt", "-H " + quote("If-Modified-Since: " + std::string(v)));
  };
  for (std::string_view v : {fixed_date, std::string_view("Thu, 02 Jan 2020 03:04:06 GMT"),
                             std::string_view("Sat, 01 Jan 2050 00:00:00 GMT"),
                             std::string_view("Thursday, 02-Jan-20 03:04:05 GMT"),  // RFC 850
                             std::string_view("Thu Jan  2 03:04:05 2020")}) {       // asctime
    reply r = ims(v);
    INFO(r.raw);
    CHECK(r.status == 304);
    CHECK(r.body.empty());
    CHECK(r.header("Last-Modified") == fixed_date);
  }
  for (std::string_view v :
       {std::string_view("Thu, 02 Jan 2020 03:04:04 GMT"),
        std::string_view("Thu, 01 Jan 1970 00:00:00 GMT"), std::string_view("yesterday"),
        std::string_view("Thu, 02 Jan 2020"), std::string_view("Thu, 32 Jan 2020 03:04:05 GMT")}) {
    reply r = ims(v);
    INFO(r.raw);
    CHECK(r.status == 200);
    CHECK(r.body == "hello, world\n");
  }
  // http.client.
  auto rs = python(whole_port, {"GET /big.bin\nIf-Modified-Since: " + std::string(fixed_date),
                                "GET /big.bin\nIf-Modified-Since: Wed, 01 Jan 2020 00:00:00 GMT"});
  CHECK(rs[0].status == 304);
  CHECK(rs[0].body.empty());
  CHECK(rs[1].status == 200);
  CHECK(rs[1].body == big);
}

TEST_CASE_FIXTURE(site, "Range: 206 for one range, 416 when unsatisfiable, 200 for several") {
  const std::uint64_t n = big_size;
  const std::string size = std::to_string(n);
  struct want {
    std::string spec;
    std::uint64_t first, last;
  };
  for (auto [port, prefix] : {std::pair{whole_port, ""}, std::pair{routed_port, "/static"}}) {
    std::string path = std::string(prefix) + "/big.bin";
    for (const want& w : {want{"0-99", 0, 99}, want{"1000-", 1000, n - 1},
                          want{"-500", n - 500, n - 1}, want{"0-0", 0, 0},
                          want{std::to_string(n - 1) + "-" + std::to_string(n + 100), n - 1, n - 1},
                          want{"-" + std::to_string(n + 5), 0, n - 1},
                          want{"65000-200000", 65000, 200000}, want{"5-5,", 5, 5}}) {
      reply r = curl(port, path, range_header("bytes=" + w.spec));
      INFO(r.raw);
      CHECK(r.status == 206);
      CHECK(r.header("Content-Range") ==
            "bytes " + std::to_string(w.first) + "-" + std::to_string(w.last) + "/" + size);
      CHECK(r.header("Content-Length") == std::to_string(w.last - w.first + 1));
      CHECK(r.body == big.substr(w.first, w.last - w.first + 1));
    }
    // curl's own --range.
    reply r = curl(port, path, "--range 100-199");
    CHECK(r.status == 206);
    CHECK(r.body == big.substr(100, 100));

    // Unsatisfiable.
    for (const std::string& spec : {size + "-", size + "-" + std::to_string(n + 10),
                                    std::string("-0"), std::string("99999999999999999999-")}) {
      r = curl(port, path, range_header("bytes=" + spec));
      INFO(r.raw);
      CHECK(r.status == 416);
      CHECK(r.header("Content-Range") == "bytes */" + size);
    }
    r = curl(port, std::string(prefix) + "/empty.txt", range_header("bytes=0-"));
    CHECK(r.status == 416);
    CHECK(r.header("Content-Range") == "bytes */0");

    // Several ranges, another unit, nonsense: the whole file.
    for (std::string_view spec : {"bytes=0-1,5-6", "bytes=0-1, 10-20, 30-", "items=0-5",
                                  "bytes=5-2", "bytes=a-b", "bytes=", "bytes 0-5"}) {
      r = curl(port, path, range_header(spec));
      INFO(r.raw);
      CHECK(r.status == 200);
      CHECK_FALSE(r.has("Content-Range"));
      CHECK(r.body == big);
    }
  }

  // If-Range: a strong tag or the exact date keeps the range; anything else sends it all.
  reply full = curl(whole_port, "/big.bin");
  std::string etag = full.header("ETag");
  auto if_range = [&](const std::string& v) {
    return curl(whole_port, "/big.bin",
                range_header("bytes=10-19") + " -H " + quote("If-Range: " + v));
  };
  CHECK(if_range(etag).status == 206);
  CHECK(if_range(std::string(fixed_date)).status == 206);
  reply r = if_range("W/" + etag);
  CHECK(r.status == 200);
  CHECK(r.body == big);
  CHECK(if_range("\"other\"").status == 200);
  CHECK(if_range("Thu, 02 Jan 2020 03:04:04 GMT").status == 200);

  // HEAD of a range, and ranges through http.client.
  r = curl(whole_port, "/big.bin", "-I " + range_header("bytes=-10"));
  CHECK(r.status == 206);
  CHECK(r.header("Content-Length") == "10");
  auto rs = python(
      routed_port,
      {"GET /static/big.bin\nRange: bytes=1-3", "GET /static/big.bin\nRange: bytes=-3",
       "GET /static/big.bin\nRange: bytes=" + size + "-", "HEAD /static/big.bin\nRange: bytes=0-9",
       "GET /static/big.bin\nRange: bytes=0-1,3-4"});
  CHECK(rs[0].status == 206);
  CHECK(rs[0].body == big.substr(1, 3));
  CHECK(rs[1].status == 206);
  CHECK(rs[1].body == big.substr(n - 3));
  CHECK(rs[2].status == 416);
  CHECK(rs[2].header("Content-Range") == "bytes */" + size);
  CHECK(rs[3].status == 206);
  CHECK(rs[3].header("Content-Length") == "10");
  CHECK(rs[3].body.empty());
  CHECK(rs[4].status == 200);
  CHECK(rs[4].body == big);
}

TEST_CASE_FIXTURE(site, "no way out of the root") {
  struct want {
    std::string target;
    int status;
  };
  std::vector<want> cases = {
      {"/../secret.txt", 403},
      {"/sub/../../secret.txt", 403},
      {"/sub/../hello.txt", 403},  // any ".." segment is refused, even one that stays inside
      {"/%2e%2e/secret.txt", 403},
      {"/%2E%2E/secret.txt", 403},
      {"/%2E%2E%2Fsecret.txt", 403},
      {"/..%2fsecret.txt", 403},
      {"/..%2Fsecret.txt", 403},
      {"/.%2e/secret.txt", 403},
      {"/sub%2F..%2F..%2Fsecret.txt", 403},
      {"/..", 403},
      {"/passwd", 403},           // a symlink to /etc/passwd
      {"/secret-link.txt", 403},  // a symlink to a file outside
      {"/outlink/secret.txt", 403},
      {"/outlink/", 403},  // a symlink to a directory outside
      {"/outlink", 403},
      {"/hello.txt%00", 400},
      {"/hello.txt%00.png", 400},
      {"/%00", 400},
      {"/%zz", 400},
      {"/hello.txt%2", 400},
      {"/hello.txt%", 400},
      {"/fifo", 403},  // not a regular file (and opening it must not hang)
      {"/nonexistent.txt", 404},
      {"/hello.txt/", 404},
      {"/hello.txt/x", 404},
  };
  for (auto [port, prefix] : {std::pair{whole_port, ""}, std::pair{routed_port, "/static"}}) {
    for (const want& w : cases) {
      std::string target = prefix + w.target;
      reply r = curl(port, target);
      INFO(r.raw);
      CHECK(r.status == w.status);
      CHECK(r.body.find("SECRET") == std::string::npos);
      CHECK(r.body.find("root:") == std::string::npos);
    }
    std::vector<std::string> reqs;
    for (const want& w : cases)
      reqs.push_back("GET " + std::string(prefix) + w.target);
    auto rs = python(port, reqs);
    for (std::size_t i = 0; i < rs.size(); ++i) {
      INFO(reqs[i]);
      INFO(rs[i].raw);
      CHECK(rs[i].status == cases[i].status);
      CHECK(rs[i].body.find("SECRET") == std::string::npos);
    }
  }
  // Symlinks that stay inside are followed.
  reply r = curl(whole_port, "/inlink.txt");
  CHECK(r.status == 200);
  CHECK(r.body == "hello, world\n");
  r = curl(whole_port, "/sublink/");
  CHECK(r.status == 200);
  CHECK(r.body == "<h1>sub index</h1>\n");
  // Escapes that are not traversal are decoded.
  r = curl(whole_port, "/%68ello.txt");
  CHECK(r.status == 200);
  CHECK(r.body == "hello, world\n");
  r = curl(whole_port, "/sub%2Findex.html");
  CHECK(r.status == 200);
  CHECK(r.body == "<h1>sub index</h1>\n");
  r = curl(whole_port, "/./hello.txt");
  CHECK(r.status == 200);
  r = curl(whole_port, "//hello.txt");
  CHECK(r.status == 200);
}

TEST_CASE_FIXTURE(site, "directories: the index, a redirect to add the slash, 403 without index") {
  reply r = curl(whole_port, "/");
  INFO(r.raw);
  CHECK(r.status == 200);
  CHECK(r.body == "<h1>root index</h1>\n");
  CHECK(r.header("Content-Type") == "text/html; charset=utf-8");
  r = curl(whole_port, "/sub/");
  CHECK(r.status == 200);
  CHECK(r.body == "<h1>sub index</h1>\n");
  r = curl(whole_port, "/sub");
  CHECK(r.status == 301);
  CHECK(r.header("Location") == "/sub/");
  r = curl(whole_port, "/sub?x=1&y=2");
  CHECK(r.status == 301);
  CHECK(r.header("Location") == "/sub/?x=1&y=2");
  r = curl(whole_port, "/noindex/");
  CHECK(r.status == 403);
  r = curl(whole_port, "//sub");  // would redirect to "//sub/": another host
  CHECK(r.status == 403);
  r = curl(whole_port, "/sub/", "-L");
  CHECK(r.status == 200);

  // Mounted under a prefix.
  r = curl(routed_port, "/static/");
  INFO(r.raw);
  CHECK(r.status == 200);
  CHECK(r.body == "<h1>root index</h1>\n");
  r = curl(routed_port, "/static/sub/");
  CHECK(r.status == 200);
  CHECK(r.body == "<h1>sub index</h1>\n");
  r = curl(routed_port, "/static/sub");
  CHECK(r.status == 301);
  CHECK(r.header("Location") == "/static/sub/");
  r = curl(routed_port, "/static/sub", "-L");
  CHECK(r.status == 200);
  CHECK(r.body == "<h1>sub index</h1>\n");
  r = curl(routed_port, "/hello");
  CHECK(r.body == "hi\n");

  // No default_filename: every directory is 403.
  http::server bare(loop, http::static_files({.root = root.string(), .default_filename = ""}));
  bare.listen(0, "127.0.0.1");
  std::uint16_t port = bare.addresses().at(0).port();
  CHECK(curl(port, "/").status == 403);
  CHECK(curl(port, "/sub/").status == 403);
  CHECK(curl(port, "/sub").status == 403);
  CHECK(curl(port, "/sub/index.html").status == 200);
}

TEST_CASE_FIXTURE(site, "methods other than GET and HEAD are 405 with Allow") {
  for (std::string_view m : {"POST", "PUT", "DELETE", "OPTIONS", "PATCH"}) {
    reply r = curl(whole_port, "/hello.txt", "-X " + std::string(m));
    INFO(r.raw);
    CHECK(r.status == 405);
    CHECK(r.header("Allow") == "GET, HEAD");
  }
  reply r = curl(whole_port, "/hello.txt", "--data-binary x");
  CHECK(r.status == 405);
  // Under a router's GET route the router answers, with its own Allow.
  r = curl(routed_port, "/static/hello.txt", "--data-binary x");
  INFO(r.raw);
  CHECK(r.status == 405);
  CHECK(r.header("Allow").find("GET") != std::string::npos);
  auto rs = python(whole_port, {"POST /hello.txt", "GET /hello.txt"});
  CHECK(rs[0].status == 405);
  CHECK(rs[1].status == 200);
  CHECK(rs[1].body == "hello, world\n");
}
