// SPDX-License-Identifier: MIT
// HTTP/1.1 message parsing (RFC 9110/9112), shared by the server and the client.
//
//   squall::http::head_parser p;
//   squall::http::message_head head;
//   squall::http::parse_error err;
//   std::size_t n = p.parse_request(buffered_bytes, head, err);
//   if (err)     -> answer err.status, then close the connection
//   else if (n)  -> head is complete and n bytes long; head's views point into buffered_bytes
//   else         -> read more, then call again with the longer buffer (same message)
//
// The parser never copies or allocates per message (the header vector keeps its capacity from
// one message to the next). It is incremental in the way picohttpparser is: the caller keeps the
// bytes and passes the whole buffer again when more arrive; the parser remembers how far it has
// searched for the end of the head, so a head dribbled one byte at a time costs O(n), and the
// head is parsed once, when complete.
//
// Strictness (RFC 9112 where it matters for request smuggling). A message is rejected with:
//   400  malformed request line, header line or chunk; obs-fold (a line starting with SP/HTAB);
//        whitespace between a field name and its colon; a bare CR anywhere in the head; a byte
//        outside the allowed set in the method (tchar), target (VCHAR), field name (tchar) or
//        field value (VCHAR, obs-text, SP, HTAB); both Content-Length and Transfer-Encoding;
//        Content-Length values that differ or are not digits; Transfer-Encoding whose final
//        coding is not chunked, or chunked twice, or any Transfer-Encoding in HTTP/1.0; an HTTP/1.1
//        request without Host, a request with more than one Host (any version, RFC 9112 3.2) or
//        with a Host value that is not host[:port] (requests only)
//   413  Content-Length of a request (or the chunked body so far) larger than
//        limits.max_body_size, or one chunk larger than limits.max_chunk_size (a response's
//        Content-Length is not checked: the reader bounds the body, and a HEAD response's never
//        comes)
//   414  request line longer than limits.max_start_line
//   431  head larger than limits.max_header_size, or more than limits.max_headers fields
//   501  a Transfer-Encoding coding other than chunked (e.g. "gzip, chunked"): not implemented
//   505  an HTTP major version other than 1
// Lines may end in CRLF or a bare LF (RFC 9112 2.2 allows it; nginx and Tornado do the same);
// a bare CR is always an error. Empty lines before a request line are skipped (RFC 9112 2.2).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

namespace squall::http {

// ASCII case-insensitive comparison (field names, tokens).
bool iequals(std::string_view a, std::string_view b) noexcept;
// `s` without leading and trailing SP and HTAB (RFC 9110's OWS).
std::string_view trim_ows(std::string_view s) noexcept;

struct header_field {
  std::string_view name;   // as received (compare with iequals)
  std::string_view value;  // leading and trailing SP/HTAB removed
};

// Defaults follow Tornado's (max_header_size 64 KiB, max_body_size 100 MiB) and nginx's.
struct parse_limits {
  std::size_t max_start_line = 8 * 1024;    // request or status line, without its CRLF (414)
  std::size_t max_header_size = 64 * 1024;  // the whole head, start line included (431)
  std::size_t max_headers = 100;            // header fields in one head (431)
  std::uint64_t max_body_size = 100 * 1024 * 1024;  // declared or decoded body (413)
  std::uint64_t max_chunk_size = 16 * 1024 * 1024;  // one chunk of a chunked body (413)
};

// How the body that follows a head is delimited.
enum class body_framing : std::uint8_t {
  none,            // no body (a request without Content-Length/Transfer-Encoding; 1xx/204/304)
  content_length,  // exactly content_length bytes
  chunked,         // chunked transfer coding: feed the bytes to a chunked_decoder
  until_close,     // responses only: the body runs until the server closes the connection
};

struct message_head {
  // Request line (parse_request).
  std::string_view method;  // case-sensitive token: "GET", "POST", ...
  std::string_view target;  // as received: origin-form "/a?b", absolute-form, "*", authority
  // Status line (parse_response).
  int status = 0;
  std::string_view reason;
  int minor_version = 1;  // HTTP/1.<minor_version> (0 or 1; 1.2+ is treated as 1.1)

  std::vector<header_field> headers;  // in the order received, repeated fields kept

  // Derived from the fields by the parser.
  body_framing framing = body_framing::none;
  std::uint64_t content_length = 0;  // when framing == content_length
  bool keep_alive = true;            // HTTP/1.1 unless "Connection: close"; HTTP/1.0 only with
                                     // "Connection: keep-alive"
  bool expect_continue = false;      // requests: "Expect: 100-continue"
  bool upgrade = false;              // "Connection: upgrade" and an Upgrade field

  // The first field named `name` (case-insensitive), or an empty view.
  std::string_view header(std::string_view name) const noexcept;
  bool has_header(std::string_view name) const noexcept;
  // True if the comma-separated list in any `name` field has `token` (case-insensitive), e.g.
  // has_token("Connection", "close").
  bool has_token(std::string_view name, std::string_view token) const noexcept;
  // Empties every field (keeps the vector's capacity).
  void clear() noexcept;
};

// Why a message was refused: the status to answer with (0: no error) and a short reason for the
// log. `what` points to a string literal.
struct parse_error {
  int status = 0;
  const char* what = "";
  explicit operator bool() const noexcept { return status != 0; }
};

class head_parser {
 public:
  explicit head_parser(const parse_limits& limits = {}) : limits_(limits) {}

  // Parses the head of a request from the start of `buf` (every byte received so far for this
  // message). Returns the head's length including its final empty line when complete (`out`
  // then refers into `buf`), or 0: either more bytes are needed (err stays empty) or the message
  // is refused (err set). Call reset() before the next message.
  std::size_t parse_request(std::string_view buf, message_head& out, parse_error& err);
  // The same for a response. The framing assumes a response to a method other than HEAD or
  // CONNECT; for those the caller sets framing to none itself. 1xx, 204 and 304 have no body.
  // An error's status here only classifies it (the client does not answer a response).
  std::size_t parse_response(std::string_view buf, message_head& out, parse_error& err);

  // Forgets the search position (start of a new message).
  void reset() noexcept {
    scanned_ = start_ = line_end_ = 0;
    guessed_ = false;
  }
  const parse_limits& limits() const noexcept { return limits_; }

 private:
  std::size_t parse(std::string_view buf, message_head& out, parse_error& err, bool request);
  std::size_t locate_head(std::string_view buf, parse_error& err);
  bool skip_empty_lines(std::string_view buf, parse_error& err);

  parse_limits limits_;
  std::size_t scanned_ = 0;   // bytes of the buffer already searched for the end of the head
  std::size_t start_ = 0;     // where the start line begins, past the empty lines skipped so far
  std::size_t line_end_ = 0;  // offset of the LF that ends the start line (0: not seen yet)
  bool guessed_ = false;      // the one-pass parse has been tried on this message
};

// Decodes a chunked body (RFC 9112 7.1) incrementally, without copying: data comes back as views
// into the input. Chunk extensions are checked for syntax and ignored; trailer fields are checked
// like header fields (size counted against max_header_size) and dropped.
class chunked_decoder {
 public:
  explicit chunked_decoder(const parse_limits& limits = {}) : limits_(limits) {}

  // Consumes from the start of `in` and returns how many bytes it used. `data` is set to the
  // chunk data found in those bytes (a view into `in`; empty if none), at most one run of data
  // per call: call again with the rest of the input while the return is non-zero and not done().
  // A return of 0 with no error means more input is needed. On malformed input `err` is set
  // (400, also for a chunk-size line longer than max_start_line; 413 past max_body_size or
  // max_chunk_size; 431 for a trailer section past max_header_size or max_headers).
  std::size_t decode(std::string_view in, std::string_view& data, parse_error& err);
  // The last chunk and the trailer section have been read.
  bool done() const noexcept { return state_ == state::done; }
  // Decoded body bytes so far.
  std::uint64_t body_size() const noexcept { return total_; }
  void reset() noexcept;

 private:
  // One state per place in the grammar outside chunk data, so that input split anywhere (down to
  // one byte per call) needs nothing more than this to resume.
  enum class state : std::uint8_t {
    size_first,    // the first HEXDIG of a chunk-size
    size,          // more HEXDIGs
    ext_semi,      // BWS, then ";" or the end of the line
    ext_name_ws,   // BWS, then a chunk-ext-name
    ext_name,      // in a chunk-ext-name
    ext_eq,        // BWS after a name, then "=", ";" or the end of the line
    ext_value_ws,  // BWS, then a token or a quoted-string
    ext_token,     // in a token value
    ext_quoted,    // in a quoted-string
    ext_escape,    // after a backslash in a quoted-string
    ext_after_quote,
    size_lf,  // CR seen at the end of the chunk-size line
    data,     // chunk data: chunk_left_ bytes to go
    data_cr,  // the CRLF after the data
    data_lf,
    trailer_start,  // the start of a trailer field line, or of the final empty line
    trailer_name,
    trailer_value,
    trailer_lf,      // CR seen at the end of a trailer field line
    trailer_end_lf,  // CR seen at the start of a line: the final CRLF
    done,
  };
  bool step(char c, parse_error& err);
  bool line_fits(char c);
  bool size_byte(char c, parse_error& err);
  bool add_digit(char c, parse_error& err);
  bool ext_byte(char c, parse_error& err);
  bool after_ext_item(char c, parse_error& err);
  bool end_size_line();
  bool next_chunk();
  bool trailer_byte(char c, parse_error& err);

  parse_limits limits_;
  state state_ = state::size_first;
  std::uint64_t chunk_left_ = 0;  // the chunk-size being read, then the data bytes left
  std::uint64_t total_ = 0;
  std::size_t line_len_ = 0;     // bytes in the current chunk-size line
  std::size_t trailer_len_ = 0;  // bytes of trailer section so far
  std::size_t trailer_fields_ = 0;
};

}  // namespace squall::http
