// SPDX-License-Identifier: MIT
// HTTP/1.1 client: fetch() from a fiber, with a keep-alive connection pool per host.
//
//   squall::http::client c(loop);
//   squall::spawn(loop, [&] {
//     auto r = c.fetch({.url = "http://127.0.0.1:8888/"});
//     std::cout << r.code << " " << r.body << "\n";
//   });
//
// In the spirit of Tornado's AsyncHTTPClient, with one difference: a response is returned
// whatever its status (Tornado raises for non-2xx by default); fetch() throws only when there is
// no response to return. Transport errors are std::system_error: error::timed_out (connect or
// request timeout), error::closed / error::reset (the server went away), connection refused
// (std::errc), resolver errors (see resolver.hpp), error::cancelled; a response squall cannot
// parse, a redirect loop past max_redirects, or a redirect to follow whose Location is not a URL
// the client can fetch, is http::bad_response (a std::runtime_error).
// A request squall will not send (a URL that is not http://, a bad port, a method that is not a
// token, a CR or LF in a header value) is std::invalid_argument; fetch() outside a fiber of the
// client's loop is std::logic_error.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "squall/http/parser.hpp"
#include "squall/io_loop.hpp"
#include "squall/unique_function.hpp"

namespace squall {
class resolver;
}

namespace squall::http {

class bad_response : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct fetch_request {
  std::string url;  // http://host[:port]/path?query  (https:// once TLS lands)
  std::string method = "GET";
  std::vector<std::pair<std::string, std::string>> headers;  // added as given
  std::string body;  // sent with Content-Length (also for an empty POST/PUT/PATCH)
  // If set, the body is produced piece by piece and sent with chunked encoding: called until it
  // returns an empty view. The views must stay valid until the next call.
  unique_function<std::string_view()> body_producer;

  // Tornado's defaults; zero means none. connect_timeout also bounds the wait for a free
  // connection slot (max_connections_per_host).
  duration connect_timeout = std::chrono::seconds(20);
  duration request_timeout = std::chrono::seconds(20);  // whole exchange, per hop
  bool follow_redirects = true;
  int max_redirects = 5;
  bool decompress = true;                    // send Accept-Encoding: gzip and decode gzip bodies
  std::string auth_username, auth_password;  // basic auth, if a username is given
  std::string user_agent = "squall";

  // Called with each piece of the body as it arrives (decoded); the response's body stays empty.
  unique_function<void(std::string_view)> streaming_callback;
  // Called with the status line and then each header line (without CRLF), then with an empty
  // line at the end of the head, for every response including redirects and 100 Continue.
  unique_function<void(std::string_view)> header_callback;

  parse_limits limits{};  // for the response (max_body_size also bounds the decoded body)
};

struct fetch_response {
  int code = 0;
  std::string reason;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::string effective_url;  // after redirects
  duration request_time{};    // from fetch() to the end of the body

  // First header named `name` (case-insensitive), or empty.
  std::string_view header(std::string_view name) const noexcept;
};

struct client_options {
  // Connections open at once to one host:port (Tornado's max_clients is 10); further fetches
  // wait for one to come free. 0: no limit.
  std::size_t max_connections_per_host = 10;
  // An idle pooled connection is closed after this long.
  duration idle_timeout = std::chrono::seconds(60);
  // Idle connections kept per host.
  std::size_t max_idle_per_host = 10;
  // Resolver for host names (nullptr: the loop's default resolver).
  squall::resolver* resolver = nullptr;
};

class client {
 public:
  explicit client(io_loop& loop, client_options opts = {});
  // Closes the pooled connections. Fetches still running must have finished.
  ~client();
  client(const client&) = delete;
  client& operator=(const client&) = delete;

  // From a fiber on the client's loop. Several fibers may fetch at once.
  fetch_response fetch(fetch_request req);
  // Shorthand for a GET.
  fetch_response get(std::string url);

  // Idle connections in the pool (all hosts).
  std::size_t idle_connections() const noexcept;

  struct state;

 private:
  std::unique_ptr<state> st_;
};

}  // namespace squall::http
