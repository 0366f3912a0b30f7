// SPDX-License-Identifier: MIT
// `squall get`: a small curl on squall's HTTP client. The body goes to stdout (or -o FILE) as it
// arrives; -v prints each response head to stderr, curl-style ("< HTTP/1.1 200 OK"). Redirects
// are followed (the client's default, as Tornado's); gzip bodies are decoded.
//
// Exit status: 0 when a response came back, whatever its status (like curl without -f); 1 when
// there was none (connection refused, timeout, DNS, a response squall cannot parse, an output
// file that cannot be written); 2 for bad usage.
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "squall/fiber.hpp"
#include "squall/http/client.hpp"
#include "squall/io_loop.hpp"
#include "tool.hpp"

namespace squall::tool {
namespace {

constexpr const char* get_usage =
    "usage: squall get URL [-X METHOD] [-H 'Name: value']... [-d DATA] [-o FILE] [-v]\n"
    "                      [--timeout SECONDS]\n"
    "  -X METHOD          request method (default GET, or POST with -d)\n"
    "  -H 'Name: value'   add a request header (repeatable)\n"
    "  -d DATA            send DATA as the body (@FILE reads a file, @- stdin); repeated -d\n"
    "                     are joined with '&'\n"
    "  -o FILE            write the body to FILE instead of stdout\n"
    "  -v                 print the status line and headers of each response to stderr\n"
    "  --timeout SECONDS  connect and request timeout (default 20)\n";

struct get_args {
  std::string url;
  std::string method;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string data;
  bool has_data = false;
  std::string output;
  bool verbose = false;
  double timeout = 0;
};

// -d's value: the text itself, or a file's contents after '@' ("@-": stdin), as curl does.
bool load_data(std::string_view arg, std::string& out) {
  if (!arg.starts_with('@')) {
    out = arg;
    return true;
  }
  std::string path(arg.substr(1));
  if (path == "-") {
    out.assign(std::istreambuf_iterator<char>(std::cin), {});
    return true;
  }
  std::ifstream f(path, std::ios::binary);
  if (!f) return false;
  out.assign(std::istreambuf_iterator<char>(f), {});
  return true;
}

// Returns an error message, or an empty string when the arguments are good.
std::string parse_get_args(int argc, char** argv, get_args& a) {
  for (int i = 1; i < argc; ++i) {
    std::string_view opt = argv[i];
    bool has_value = i + 1 < argc;
    if ((opt == "-X" || opt == "-H" || opt == "-d" || opt == "-o" || opt == "--timeout") &&
        !has_value)
      return std::string(opt) + " needs a value";
    if (opt == "-X") {
      a.method = argv[++i];
    } else if (opt == "-H") {
      std::string_view h = argv[++i];
      std::size_t colon = h.find(':');
      if (colon == std::string_view::npos || colon == 0) return "-H wants 'Name: value'";
      std::string_view v = h.substr(colon + 1);
      while (!v.empty() && (v.front() == ' ' || v.front() == '\t'))
        v.remove_prefix(1);
      a.headers.emplace_back(h.substr(0, colon), v);
    } else if (opt == "-d") {
      std::string piece;
      if (!load_data(argv[++i], piece)) return std::string("cannot read ") + (argv[i] + 1);
      if (a.has_data) a.data += '&';
      a.data += piece;
      a.has_data = true;
    } else if (opt == "-o") {
      a.output = argv[++i];
    } else if (opt == "-v") {
      a.verbose = true;
    } else if (opt == "--timeout") {
      char* end = nullptr;
      a.timeout = std::strtod(argv[++i], &end);
      if (*end || !(a.timeout > 0)) return "--timeout wants a positive number of seconds";
    } else if (!opt.starts_with('-') && a.url.empty()) {
      a.url = opt;
    } else {
      return "unknown option '" + std::string(opt) + "'";
    }
  }
  if (a.url.empty()) return "no URL";
  return {};
}

bool has_header(const get_args& a, std::string_view name) {
  for (const auto& [k, v] : a.headers)
    if (http::iequals(k, name)) return true;
  return false;
}

http::fetch_request make_request(get_args& a) {
  http::fetch_request req;
  req.url = a.url;
  req.method = !a.method.empty() ? a.method : a.has_data ? "POST" : "GET";
  if (a.has_data && !has_header(a, "Content-Type"))
    a.headers.emplace_back("Content-Type", "application/x-www-form-urlencoded");  // curl's -d
  req.headers = std::move(a.headers);
  req.body = std::move(a.data);
  if (a.timeout > 0) {
    auto t = std::chrono::duration_cast<duration>(std::chrono::duration<double>(a.timeout));
    req.connect_timeout = req.request_timeout = t;
  }
  return req;
}

// The body's destination: stdout, or a file created when the first byte arrives (or at the
// end, for an empty body), so a failed fetch leaves no empty file behind.
class body_output {
 public:
  explicit body_output(std::string path) : path_(std::move(path)) {}
  ~body_output() {
    if (file_ && file_ != stdout) std::fclose(file_);
  }
  body_output(const body_output&) = delete;
  body_output& operator=(const body_output&) = delete;

  void write(std::string_view piece) {
    open();
    if (std::fwrite(piece.data(), 1, piece.size(), file_) != piece.size()) fail();
  }
  void finish() {
    open();
    if (std::fflush(file_) != 0) fail();
  }

 private:
  void open() {
    if (file_) return;
    file_ = path_.empty() ? stdout : std::fopen(path_.c_str(), "wb");
    if (!file_) fail();
  }
  [[noreturn]] void fail() {
    throw std::system_error(errno, std::generic_category(),
                            "cannot write " + (path_.empty() ? std::string("stdout") : path_));
  }
  std::string path_;
  std::FILE* file_ = nullptr;
};

}  // namespace

int get_main(int argc, char** argv) {
  get_args a;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "-h") == 0 || std::strcmp(argv[i], "--help") == 0) {
      std::fputs(get_usage, stdout);
      return 0;
    }
  }
  if (std::string err = parse_get_args(argc, argv, a); !err.empty()) {
    std::fprintf(stderr, "squall get: %s\n%s", err.c_str(), get_usage);
    return 2;
  }
  body_output out(a.output);
  http::fetch_request req = make_request(a);
  req.streaming_callback = [&out](std::string_view piece) { out.write(piece); };
  if (a.verbose) {
    req.header_callback = [](std::string_view line) {
      std::fprintf(stderr, "<%s%.*s\n", line.empty() ? "" : " ", int(line.size()), line.data());
    };
  }
  io_loop loop;
  http::client client(loop);
  try {
    run_sync(loop, [&] { client.fetch(std::move(req)); });
    out.finish();
  } catch (const std::exception& e) {
    std::string_view msg = e.what();
    if (msg.starts_with("squall: ")) msg.remove_prefix(8);
    std::fprintf(stderr, "squall get: %.*s\n", int(msg.size()), msg.data());
    return 1;
  }
  return 0;
}

}  // namespace squall::tool
