// SPDX-License-Identifier: MIT
// Static file serving for the HTTP server (Tornado's StaticFileHandler).
//
//   squall::http::router routes;
//   routes.get("/static/*", squall::http::static_files({.root = "public"}));
//   // or the whole server: squall::http::server srv(loop, static_files({.root = "public"}));
//
// Which file: under a prefix route the rest of the path names it ("/static/*": GET
// /static/css/a.css serves <root>/css/a.css, GET /static/ the root's index); otherwise (the whole
// handler of a server, an exact route) the whole request path does. The path is percent-decoded
// ("%2F" is a separator like "/"; "+" stays a "+"); an invalid escape or a NUL byte is 400. Empty
// and "." segments are skipped; a ".." segment, encoded or not, is 403, even one that would stay
// inside the root. The file is then resolved with realpath() and must lie inside realpath(root):
// a symlink (or a directory symlink on the way) leading out of the root is 403, as in Tornado;
// symlinks that stay inside are followed. Only regular files are served (403 for devices, FIFOs,
// sockets).
//
// Directories: a path naming a directory without a trailing "/" is redirected (301) to the same
// path with one (the query kept), so relative links in the index work; with the "/" the
// default_filename inside it is served. No default_filename, or none in that directory: 403
// (directory listings are not generated). A path starting with "//" is 403 instead of redirected
// (the Location would name another host). Missing files, and files named with a trailing "/":
// 404.
//
// Methods: GET and HEAD (HEAD sends the headers of the GET, without reading the file). Any other
// method is 405 with "Allow: GET, HEAD".
//
// Headers: Content-Type from the extension (content_type_for below, case-insensitive; text types
// with "; charset=utf-8"; application/octet-stream when unknown), Content-Length, Last-Modified,
// a strong ETag made of the file's size, mtime (ns) and inode, "Accept-Ranges: bytes", and
// "Cache-Control: max-age=N" when max_age is set.
//
// Conditional requests (RFC 9110 13): If-None-Match (a list of tags, or "*"; weak comparison,
// every field of that name counted) answers 304 when one matches; only without If-None-Match is
// If-Modified-Since evaluated (304 when the file's mtime, in whole seconds, is not later than the
// date; an invalid date is ignored). The three HTTP-date forms are accepted.
//
// Ranges (RFC 9110 14): one range "bytes=a-b", "bytes=a-" or "bytes=-n" is answered with 206 and
// Content-Range; a range that starts at or past the end (or "-0", or any range of an empty file)
// is 416 with "Content-Range: bytes */<size>". Several ranges are answered with the whole file
// (200): the RFC allows it, and it spares multipart/byteranges. A Range that does not parse, or
// has another unit, is ignored (200). If-Range is honoured: a strong ETag equal to the file's, or
// an HTTP-date equal to its Last-Modified, keeps the range; anything else gets the whole file.
//
// Reading: the response is sent with Content-Length (not chunked), max_chunk bytes at a time,
// so a large file never needs memory of its size. Files smaller than executor_min_size are read
// with pread() on the loop's thread (the page cache makes that cheap); larger ones, the likely
// cold ones, are read on the loop's thread pool (this_fiber::run_in_executor), one chunk at a
// time, so a slow disk does not stall the other connections. Looking the file up (realpath,
// stat, open) always happens on the loop's thread. A file that shrinks while it is sent ends the
// response early: the connection is closed, and the client sees a short body.
//
// Not defended against: someone who can write inside the root and swaps a directory for a
// symlink between the realpath() check and the open() (the same race exists in Tornado).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "squall/http/server.hpp"
#include "squall/io_loop.hpp"

namespace squall::http {

struct static_options {
  // The directory served. Resolved with realpath() when the handler is made: static_files()
  // throws std::system_error if it is not an existing directory.
  std::string root;
  // Served for a directory ("/docs/" -> <root>/docs/index.html). Empty: directories are 403.
  std::string default_filename = "index.html";
  // Sent as "Cache-Control: max-age=<seconds>" with the file's other headers (0: no header).
  duration max_age{};
  // Bytes read and written at a time (at least 1).
  std::size_t max_chunk = 256 * 1024;
  // Files of at least this size are read on the loop's thread pool; smaller ones on the loop's
  // thread. 0: every file in the pool; SIZE_MAX: none.
  std::size_t executor_min_size = 1024 * 1024;
  // Extra or overriding content types: {extension without the dot, type}, e.g. {"md",
  // "text/markdown; charset=utf-8"}. Looked up (case-insensitively) before the built-in table.
  std::vector<std::pair<std::string, std::string>> content_types{};
};

// A handler serving the files under opts.root (see above).
handler static_files(static_options opts);

// The built-in Content-Type for a file name, by its extension ("a/b.CSS" -> "text/css;
// charset=utf-8"); "application/octet-stream" when the extension is unknown or missing.
std::string_view content_type_for(std::string_view filename) noexcept;

}  // namespace squall::http
