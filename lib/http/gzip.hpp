// SPDX-License-Identifier: MIT
// gzip streams on zlib, for the HTTP server (responses out, request bodies in) and the client.
// Internal header. Without zlib (SQUALL_HAVE_ZLIB 0) available() is false and the classes throw.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace squall::http {
struct message_head;
}

namespace squall::http::gzip {

// zlib was found at build time.
bool available() noexcept;

// Compresses into gzip format, piece by piece.
class deflater {
 public:
  explicit deflater(int level = 6);
  ~deflater();
  deflater(const deflater&) = delete;
  deflater& operator=(const deflater&) = delete;

  // Appends the compressed form of `in` to `out`. With `flush`, everything so far becomes
  // decodable (Z_SYNC_FLUSH); with `finish`, the stream ends (trailer written).
  void compress(std::string_view in, std::string& out, bool flush, bool finish);
  // Starts a new stream (reuses the zlib state).
  void reset();

 private:
  struct impl;
  std::unique_ptr<impl> p_;
};

// Decompresses gzip (or zlib-wrapped deflate) data, piece by piece, with a bound on the output.
class inflater {
 public:
  inflater();
  ~inflater();
  inflater(const inflater&) = delete;
  inflater& operator=(const inflater&) = delete;

  enum class result { ok, done, bad_data, too_large };
  // Appends the decoded form of `in` to `out`, at most `max_out` bytes a call; fails with
  // too_large once the total decoded size passes `max_total`. Concatenated gzip members are
  // decoded one after the other. `done` when the stream has ended (bytes after it are ignored).
  // A call that stops at `max_out` keeps what is left of `in` (a copy: the caller's buffer may
  // move), and more() says so: the next calls pass an empty `in` until it is false. A few KB of
  // gzip can decode to gigabytes, and no one piece of it should have to fit in memory.
  result decompress(std::string_view in, std::string& out, std::size_t max_total,
                    std::size_t max_out = SIZE_MAX);
  // The last call stopped at its `max_out` with input left, or output zlib still holds.
  bool more() const noexcept;
  std::size_t total_out() const noexcept;
  void reset();

 private:
  struct impl;
  std::unique_ptr<impl> p_;
  std::size_t total_ = 0;  // decoded bytes over every member
};

// Whether the Content-Encoding fields of `head`, taken together, name exactly one coding, gzip
// (or x-gzip): only such a body is decoded. Anything else ("gzip, br", gzip twice, in one field or
// in two) is left as it came, so that the fields still say what the body is.
bool only_gzip(const message_head& head) noexcept;

// Whether a Content-Type is worth compressing (text/*, JSON, JavaScript, XML, SVG, ...).
bool compressible(std::string_view content_type) noexcept;

}  // namespace squall::http::gzip
