// SPDX-License-Identifier: MIT
#include "http/gzip.hpp"

#include <algorithm>
#include <stdexcept>

#include "squall/config.hpp"
#include "squall/http/parser.hpp"

#if SQUALL_HAVE_ZLIB
#include <zlib.h>
#endif

namespace squall::http::gzip {

bool only_gzip(const message_head& head) noexcept {
  std::string_view coding;
  int codings = 0;
  for (const header_field& f : head.headers) {
    if (!iequals(f.name, "Content-Encoding")) continue;
    std::string_view list = f.value;
    for (;;) {
      std::size_t comma = list.find(',');
      std::string_view element = trim_ows(list.substr(0, comma));
      if (!element.empty()) {  // empty list elements count for nothing (RFC 9110 5.6.1)
        coding = element;
        ++codings;
      }
      if (comma == std::string_view::npos) break;
      list.remove_prefix(comma + 1);
    }
  }
  return codings == 1 && (iequals(coding, "gzip") || iequals(coding, "x-gzip"));
}

bool compressible(std::string_view type) noexcept {
  type = type.substr(0, type.find(';'));
  while (!type.empty() && type.back() == ' ')
    type.remove_suffix(1);
  if (type.size() >= 5 && iequals(type.substr(0, 5), "text/")) return true;
  for (std::string_view t :
       {"application/json", "application/javascript", "application/xml", "image/svg+xml",
        "application/x-javascript", "application/manifest+json", "application/wasm"})
    if (iequals(type, t)) return true;
  return type.size() > 5 && (iequals(type.substr(type.size() - 5), "+json") ||
                             iequals(type.substr(type.size() - 4), "+xml"));
}

#if SQUALL_HAVE_ZLIB

bool available() noexcept {
  return true;
}

struct deflater::impl {
  z_stream z{};
};

deflater::deflater(int level) : p_(std::make_unique<impl>()) {
  // windowBits 15 + 16: gzip wrapper; memLevel 8 is zlib's default.
  if (deflateInit2(&p_->z, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
    throw std::bad_alloc();
}

deflater::~deflater() {
  deflateEnd(&p_->z);
}

void deflater::reset() {
  deflateReset(&p_->z);
}

void deflater::compress(std::string_view in, std::string& out, bool flush, bool finish) {
  z_stream& z = p_->z;
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  z.avail_in = static_cast<uInt>(in.size());
  int mode = finish ? Z_FINISH : flush ? Z_SYNC_FLUSH : Z_NO_FLUSH;
  for (;;) {
    std::size_t at = out.size();
    std::size_t room = deflateBound(&z, z.avail_in) + 64;
    out.resize(at + room);
    z.next_out = reinterpret_cast<Bytef*>(out.data() + at);
    z.avail_out = static_cast<uInt>(room);
    int rc = deflate(&z, mode);
    out.resize(out.size() - z.avail_out);
    if (rc == Z_STREAM_ERROR) throw std::runtime_error("squall: deflate failed");
    // Done when all input is taken and zlib did not fill the space it was given.
    if (z.avail_in == 0 && (z.avail_out > 0 || rc == Z_STREAM_END)) break;
  }
}

struct inflater::impl {
  z_stream z{};
  bool ended = false;
  bool more = false;  // stopped at max_out: z.next_in/avail_in (in `rest`) and zlib's own output
  std::string rest;   // the input a call stopped before
};

inflater::inflater() : p_(std::make_unique<impl>()) {
  // windowBits 15 + 32: accept both gzip and zlib headers.
  if (inflateInit2(&p_->z, 15 + 32) != Z_OK) throw std::bad_alloc();
}

inflater::~inflater() {
  inflateEnd(&p_->z);
}

void inflater::reset() {
  inflateReset(&p_->z);
  p_->ended = false;
  p_->more = false;
  p_->rest.clear();
  total_ = 0;
}

bool inflater::more() const noexcept {
  return p_->more;
}

std::size_t inflater::total_out() const noexcept {
  return total_;
}

inflater::result inflater::decompress(std::string_view in, std::string& out, std::size_t max_total,
                                      std::size_t max_out) {
  impl& p = *p_;
  z_stream& z = p.z;
  // Going on where the last call stopped (its input is in p.rest, or it had all gone in),
  // or starting on new input.
  bool borrowed = !p.more;  // z.next_in points into the caller's `in`
  if (p.more) {
    p.more = false;
  } else {
    if (p.ended) {
      // Another gzip member may start in a later piece (RFC 1952 2.2).
      if (in.empty() || static_cast<unsigned char>(in[0]) != 0x1f) return result::done;
      inflateReset(&z);
      p.ended = false;
    }
    z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
    z.avail_in = static_cast<uInt>(in.size());
  }
  std::size_t produced_here = 0;
  // Runs while there is input, or while zlib filled the output (it may hold more back).
  for (bool full = true; z.avail_in > 0 || full;) {
    if (produced_here >= max_out) {
      // This call's share is out: what is left of the input waits inside for the next one.
      if (borrowed && z.avail_in > 0) {
        p.rest.assign(reinterpret_cast<const char*>(z.next_in), z.avail_in);
        z.next_in = reinterpret_cast<Bytef*>(p.rest.data());
      }
      p.more = true;
      return result::ok;
    }
    // Room for one step, and one byte past the limit so passing it shows (saturating: a limit
    // of SIZE_MAX must not wrap to zero room).
    std::size_t left = max_total - total_;
    std::size_t room = left >= 64 * 1024 ? 64 * 1024 : left + 1;
    room = std::min(room, max_out - produced_here);
    std::size_t at = out.size();
    out.resize(at + room);
    z.next_out = reinterpret_cast<Bytef*>(out.data() + at);
    z.avail_out = static_cast<uInt>(room);
    int rc = inflate(&z, Z_NO_FLUSH);
    std::size_t produced = room - z.avail_out;
    out.resize(at + produced);
    total_ += produced;
    produced_here += produced;
    full = z.avail_out == 0;
    if (total_ > max_total) return result::too_large;
    if (rc == Z_STREAM_END) {
      // gzip allows several members one after another (RFC 1952 2.2): go on with the next.
      if (z.avail_in > 0 && static_cast<unsigned char>(*z.next_in) == 0x1f) {
        inflateReset(&z);
        continue;
      }
      p.ended = true;
      return result::done;
    }
    if (rc == Z_BUF_ERROR && !full) break;  // needs more input
    if (rc != Z_OK && rc != Z_BUF_ERROR) return result::bad_data;
  }
  return result::ok;
}

#else

bool available() noexcept {
  return false;
}
struct deflater::impl {};
deflater::deflater(int) {
  throw std::runtime_error("squall: built without zlib");
}
deflater::~deflater() = default;
void deflater::reset() {}
void deflater::compress(std::string_view, std::string&, bool, bool) {}
struct inflater::impl {};
inflater::inflater() {
  throw std::runtime_error("squall: built without zlib");
}
inflater::~inflater() = default;
void inflater::reset() {}
std::size_t inflater::total_out() const noexcept {
  return 0;
}
bool inflater::more() const noexcept {
  return false;
}
inflater::result inflater::decompress(std::string_view, std::string&, std::size_t, std::size_t) {
  return result::bad_data;
}

#endif

}  // namespace squall::http::gzip
