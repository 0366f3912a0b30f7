// SPDX-License-Identifier: MIT
// http_parser_bench [ITERATIONS]: nanoseconds per request for squall's HTTP/1.1 head parser on
// two requests, a ~300-byte browser request and the one TechEmpower's plaintext test sends,
// against picohttpparser on the same bytes in the same run.
//
// Method: each request is parsed ITERATIONS times (default 2,000,000) from the same buffer, as a
// server parsing a fresh message (reset, then parse_request); the time is the best of 5 rounds,
// which filters out the other load on a shared machine. Every round checks the result, so nothing
// can be optimised away.
//
// picohttpparser is not packaged on its own in Debian, but h2o bundles it and Debian's libh2o
// exports phr_parse_request: the bench loads it with dlopen when present (apt-get install
// libh2o0.13) and otherwise says so. The comparison flatters picohttpparser a little: it only
// splits the head into views, while squall also checks Host, Content-Length,
// Transfer-Encoding and Connection and derives the framing. Both run on the SSE2 baseline
// (Debian builds without SSE4.2, which is picohttpparser's fast path).
#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "squall/http/parser.hpp"

namespace {

constexpr std::string_view browser_request =
    "GET /docs/index.html?lang=en HTTP/1.1\r\n"
    "Host: www.example.com\r\n"
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0\r\n"
    "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
    "Accept-Language: en-US,en;q=0.5\r\n"
    "Accept-Encoding: gzip, deflate, br\r\n"
    "Connection: keep-alive\r\n"
    "\r\n";

// The headers TechEmpower's wrk script sends for the plaintext test.
constexpr std::string_view plaintext_request =
    "GET /plaintext HTTP/1.1\r\n"
    "Host: server\r\n"
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64) Gecko/20130501 Firefox/30.0 "
    "AppleWebKit/600.00 Chrome/30.0.0000.0 Trident/10.0 Safari/600.00\r\n"
    "Cookie: uid=12345678901234567890; __utma=1.1234567890.1234567890.1234567890.1234567890.12; "
    "wd=2560x1600\r\n"
    "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
    "Accept-Language: en-US,en;q=0.5\r\n"
    "Connection: keep-alive\r\n"
    "\r\n";

// picohttpparser's request entry point, as its documentation gives it.
struct phr_header {
  const char* name;
  std::size_t name_len;
  const char* value;
  std::size_t value_len;
};
using phr_parse_request_fn = int (*)(const char* buf, std::size_t len, const char** method,
                                     std::size_t* method_len, const char** path,
                                     std::size_t* path_len, int* minor_version, phr_header* headers,
                                     std::size_t* num_headers, std::size_t last_len);

phr_parse_request_fn load_picohttpparser() {
  for (const char* lib : {"libpicohttpparser.so", "libh2o.so.0.13", "libh2o.so"}) {
    if (void* handle = dlopen(lib, RTLD_NOW | RTLD_LOCAL)) {
      if (void* fn = dlsym(handle, "phr_parse_request")) {
        std::printf("picohttpparser: phr_parse_request from %s\n", lib);
        return reinterpret_cast<phr_parse_request_fn>(fn);
      }
      dlclose(handle);
    }
  }
  return nullptr;
}

[[noreturn]] void wrong(const char* who) {
  std::fprintf(stderr, "%s parsed the request wrongly\n", who);
  std::exit(1);
}

template <class Round>
double best_ns_per_request(long iterations, Round round) {
  double best = 1e300;
  for (int r = 0; r < 5; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    round();
    std::chrono::duration<double, std::nano> dt = std::chrono::steady_clock::now() - t0;
    best = std::min(best, dt.count() / static_cast<double>(iterations));
  }
  return best;
}

double bench_squall(std::string_view req, long iterations) {
  squall::http::head_parser parser;
  squall::http::message_head head;
  return best_ns_per_request(iterations, [&] {
    std::size_t total = 0;
    for (long i = 0; i < iterations; ++i) {
      parser.reset();
      squall::http::parse_error err;
      total += parser.parse_request(req, head, err) + head.headers.size();
    }
    if (total != static_cast<std::size_t>(iterations) * (req.size() + head.headers.size())) {
      wrong("squall");
    }
  });
}

double bench_pico(phr_parse_request_fn parse, std::string_view req, long iterations) {
  return best_ns_per_request(iterations, [&] {
    std::size_t total = 0;
    phr_header headers[100];
    std::size_t num_headers = 0;
    for (long i = 0; i < iterations; ++i) {
      const char *method, *path;
      std::size_t method_len, path_len;
      int minor;
      num_headers = 100;
      int n = parse(req.data(), req.size(), &method, &method_len, &path, &path_len, &minor, headers,
                    &num_headers, 0);
      total += static_cast<std::size_t>(n) + num_headers;
    }
    if (total != static_cast<std::size_t>(iterations) * (req.size() + num_headers)) {
      wrong("picohttpparser");
    }
  });
}

}  // namespace

int main(int argc, char** argv) {
  long iterations = argc > 1 ? std::atol(argv[1]) : 2'000'000;
  phr_parse_request_fn pico = load_picohttpparser();
  if (pico == nullptr) {
    std::printf("picohttpparser: not available (no libpicohttpparser.so or libh2o.so.0.13)\n");
  }
  struct {
    const char* name;
    std::string_view bytes;
  } requests[] = {{"browser", browser_request}, {"plaintext", plaintext_request}};
  std::printf("%-10s %6s %12s %12s %8s\n", "request", "bytes", "squall ns", "pico ns", "ratio");
  for (const auto& r : requests) {
    double squall_ns = bench_squall(r.bytes, iterations);
    if (pico != nullptr) {
      double pico_ns = bench_pico(pico, r.bytes, iterations);
      std::printf("%-10s %6zu %12.1f %12.1f %8.2f\n", r.name, r.bytes.size(), squall_ns, pico_ns,
                  squall_ns / pico_ns);
    } else {
      std::printf("%-10s %6zu %12.1f %12s %8s\n", r.name, r.bytes.size(), squall_ns, "-", "-");
    }
  }
  std::printf("(ratio = squall / picohttpparser; below 1 means squall is faster)\n");
}
