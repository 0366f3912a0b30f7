// SPDX-License-Identifier: MIT
// ws_frame_bench [SCALE]: the WebSocket wire layer (squall/websocket/frame.hpp) without I/O.
//   - frame_parser: ns per frame to parse and unmask masked client frames of 32 bytes and 64 KiB
//     (header, payload and end events, as a server sees them);
//   - apply_mask: GB/s over 64 KiB and 1 MiB, and a byte-at-a-time loop for comparison;
//   - utf8_validator: GB/s over 64 KiB of ASCII and of mixed text (Latin, Cyrillic, CJK, emoji);
//   - permessage-deflate: ns per 32-byte JSON message (all different) and per 64 KiB text
//     message, compressed (level 6, and 1 for the large one; with context takeover) and
//     inflated back.
//
// Method: every measurement repeats its work enough times to take tens of milliseconds (SCALE
// multiplies that, default 1), and the figure is the best of 5 rounds, which filters out other
// load on a shared machine. Results are checked or folded into a value printed at the end, so
// nothing can be optimised away. Build with -Dbuildtype=release -Dperf=enabled.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "squall/websocket/frame.hpp"

using namespace squall::websocket;

namespace {

using clock_type = std::chrono::steady_clock;
std::uint64_t sink = 0;

// Best of 5 rounds of fn(), in nanoseconds per round.
template <typename F>
double best_ns(F&& fn) {
  double best = 1e300;
  for (int round = 0; round < 5; ++round) {
    const auto t0 = clock_type::now();
    fn();
    const auto t1 = clock_type::now();
    best = std::min(best, std::chrono::duration<double, std::nano>(t1 - t0).count());
  }
  return best;
}

[[noreturn]] void wrong(const char* what) {
  std::fprintf(stderr, "ws_frame_bench: %s\n", what);
  std::exit(1);
}

std::string random_bytes(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s)
    c = static_cast<char>(rng());
  return s;
}

// Masked client frames of `size` bytes, back to back, about `total` bytes in all.
std::string masked_frames(std::size_t size, std::size_t count) {
  std::string wire;
  std::mt19937 rng(1);
  const std::string payload = random_bytes(size, 2);
  for (std::size_t i = 0; i < count; ++i) {
    const std::uint32_t key = static_cast<std::uint32_t>(rng());
    char h[14];
    wire.append(h, write_frame_header(h, opcode::binary, true, false, size, &key));
    std::string p = payload;
    apply_mask(p.data(), p.size(), key);
    wire += p;
  }
  return wire;
}

// Parses every frame in `wire` (unmasking in place: each pass flips the payloads, the headers
// stay) and returns the number of frames.
std::size_t parse_frames(std::string& wire) {
  frame_parser p({.side = role::server, .max_frame_size = 1 << 20});
  char* at = wire.data();
  std::size_t left = wire.size(), frames = 0;
  frame_event ev;
  while (true) {
    const std::size_t used = p.parse(at, left, ev);
    at += used;
    left -= used;
    if (ev.type == frame_event::kind::end)
      ++frames;
    else if (ev.type == frame_event::kind::payload)
      sink += static_cast<unsigned char>(ev.data[0]);
    else if (ev.type == frame_event::kind::none)
      break;
    else if (ev.type == frame_event::kind::error)
      wrong("parse error");
  }
  return frames;
}

void bench_parse(std::size_t size, std::size_t count, int scale) {
  std::string wire = masked_frames(size, count);
  const int passes = scale;
  const double ns = best_ns([&] {
    for (int i = 0; i < passes; ++i)
      if (parse_frames(wire) != count) wrong("frame count");
  });
  const double per_frame = ns / (static_cast<double>(count) * passes);
  std::printf("parse+unmask %6zu-byte masked frames: %9.1f ns/frame  %6.2f GB/s of payload\n", size,
              per_frame, static_cast<double>(size) / per_frame);
}

void mask_bytewise(char* data, std::size_t n, std::uint32_t key) {
  const unsigned char k[4] = {
      static_cast<unsigned char>(key >> 24), static_cast<unsigned char>(key >> 16),
      static_cast<unsigned char>(key >> 8), static_cast<unsigned char>(key)};
  for (std::size_t i = 0; i < n; ++i)
    data[i] = static_cast<char>(data[i] ^ k[i & 3]);
}

void bench_mask(std::size_t size, int scale) {
  std::string buf = random_bytes(size + 16, 3);
  const int reps = static_cast<int>(std::max<std::size_t>(1, (256u << 20) / size)) * scale;
  const double ns = best_ns([&] {
    for (int i = 0; i < reps; ++i)
      apply_mask(buf.data() + 1, size, 0x12345678, i & 3);
  });
  const double ns_ref = best_ns([&] {
    for (int i = 0; i < reps / 8 + 1; ++i)
      mask_bytewise(buf.data() + 1, size, 0x12345678);
  });
  sink += static_cast<unsigned char>(buf[size / 2]);
  std::printf("apply_mask %7zu bytes: %6.2f GB/s   (byte-at-a-time loop: %5.2f GB/s)\n", size,
              static_cast<double>(size) * reps / ns,
              static_cast<double>(size) * (reps / 8 + 1) / ns_ref);
}

std::string mixed_text(std::size_t n) {
  const char* words[] = {"hello ", "wörld ", "привет ", "мир ",  "你好 ",
                         "世界 ",  "😀 ",     "naïve ",  "café ", "données "};
  std::mt19937 rng(4);
  std::string s;
  while (s.size() < n)
    s += words[rng() % 10];
  return s;
}

std::string ascii_text(std::size_t n) {
  const char* words[] = {"hello ", "world ", "frame ", "mask ", "socket ", "{\"seq\":1} "};
  std::mt19937 rng(5);
  std::string s;
  while (s.size() < n)
    s += words[rng() % 6];
  s.resize(n);
  return s;
}

void bench_utf8(const char* label, const std::string& text, int scale) {
  const int reps = static_cast<int>((256u << 20) / text.size()) * scale;
  const double ns = best_ns([&] {
    for (int i = 0; i < reps; ++i) {
      utf8_validator v;
      if (!v.feed(text) || !v.complete()) wrong("utf8 refused valid text");
    }
  });
  std::printf("utf8 %-22s %6.2f GB/s\n", label, static_cast<double>(text.size()) * reps / ns);
}

// Compresses `messages` in turn (with context takeover, as one connection would), then inflates
// what a peer compressed from the same sequence.
void bench_deflate(const char* label, const std::vector<std::string>& messages, int reps,
                   int level = 6) {
  message_deflater d({}, role::server, level);
  message_inflater inf({}, role::client);
  std::string z, back;
  std::size_t in_bytes = 0, out_bytes = 0, k = 0;
  const double ns_c = best_ns([&] {
    for (int i = 0; i < reps; ++i) {
      const std::string& m = messages[k++ % messages.size()];
      z.clear();
      d.compress(m, z);
      in_bytes += m.size();
      out_bytes += z.size();
    }
  });
  message_deflater peer({}, role::server, level);
  std::vector<std::string> stream(static_cast<std::size_t>(reps) * 5);
  for (std::size_t i = 0; i < stream.size(); ++i)
    peer.compress(messages[i % messages.size()], stream[i]);
  std::size_t next = 0;
  const double ns_i = best_ns([&] {
    for (int i = 0; i < reps; ++i) {
      back.clear();
      const std::string& want = messages[next % messages.size()];
      if (!inf.decompress(stream[next++], true, back, 1 << 24) || back != want) wrong("inflate");
    }
  });
  std::printf("deflate %-26s compress %9.0f ns  inflate %8.0f ns  (%.1f%% of the size)\n", label,
              ns_c / reps, ns_i / reps,
              100.0 * static_cast<double>(out_bytes) / static_cast<double>(in_bytes));
}

}  // namespace

int main(int argc, char** argv) {
  const int scale = argc > 1 ? std::max(1, std::atoi(argv[1])) : 1;
  bench_parse(32, 100000, scale);
  bench_parse(65536, 256, scale);
  bench_mask(64 * 1024, scale);
  bench_mask(1024 * 1024, scale);
  bench_utf8("ASCII (64 KiB)", ascii_text(65536), scale);
  const std::string mixed = mixed_text(65536);
  std::size_t non_ascii = 0;
  for (char c : mixed)
    non_ascii += static_cast<unsigned char>(c) >= 0x80;
  char label[64];
  std::snprintf(label, sizeof label, "mixed (64 KiB, %zu%% >7F)", non_ascii * 100 / mixed.size());
  bench_utf8(label, mixed, scale);
  // 32-byte JSON ticks, each different (a repeated message would compress to a back-reference).
  std::vector<std::string> ticks;
  for (int i = 0; i < 1000; ++i) {
    char m[40];
    std::snprintf(m, sizeof m, "{\"type\":\"tick\",\"seq\":%08d} ", 10007 * i % 99999989);
    ticks.emplace_back(m, 32);
  }
  bench_deflate("32-byte JSON messages", ticks, 20000 * scale);
  std::vector<std::string> texts;
  for (unsigned i = 0; i < 8; ++i)
    texts.push_back(mixed_text(65536 + i).substr(i, 65536));
  bench_deflate("64 KiB text messages", texts, 50 * scale);
  bench_deflate("64 KiB text, level 1", texts, 50 * scale, 1);
  std::printf("(checksum %llu)\n", static_cast<unsigned long long>(sink));
  return 0;
}
