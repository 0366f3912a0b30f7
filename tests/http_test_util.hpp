// SPDX-License-Identifier: MIT
// Helpers for the HTTP suites: run a blocking peer (raw socket, curl, Python) on a thread while
// the test's loop serves, and read HTTP responses off a plain blocking socket.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>

#include "squall/io_loop.hpp"

namespace squall::test {

// Runs `fn` on a thread and the loop on this one until it returns (or `limit` passes: then
// the test fails loudly rather than hang). Returns fn's result.
template <class F>
auto off_loop(io_loop& loop, F fn, duration limit = std::chrono::seconds(60)) {
  auto fut = std::async(std::launch::async, std::move(fn));
  auto deadline = io_loop::now() + limit;
  while (fut.wait_for(std::chrono::seconds(0)) != std::future_status::ready) {
    if (io_loop::now() > deadline) throw std::runtime_error("off_loop: peer did not finish");
    loop.run_once(std::chrono::milliseconds(5));
  }
  return fut.get();
}

// Runs a shell command, returns its stdout; `status` gets the exit status.
inline std::string run_command(const std::string& cmd, int* status = nullptr) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) throw std::runtime_error("popen failed: " + cmd);
  char buf[65536];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0)
    out.append(buf, n);
  int st = pclose(p);
  if (status) *status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return out;
}

inline bool have_program(const std::string& name) {
  int st = 0;
  run_command("command -v " + name + " >/dev/null 2>&1", &st);
  return st == 0;
}

// A Python interpreter that has `module` (Debian's packages live in /usr/bin/python3's path,
// which a python3 earlier in PATH, such as pyenv's, does not see), or "" if none has it.
inline std::string python_with(const std::string& module) {
  for (const char* py : {"/usr/bin/python3", "python3"}) {
    int st = 0;
    run_command(std::string(py) + " -c 'import " + module + "' >/dev/null 2>&1", &st);
    if (st == 0) return py;
  }
  return {};
}

// A blocking TCP client with a receive timeout, for driving a server byte by byte.
class raw_client {
 public:
  explicit raw_client(std::uint16_t port, int timeout_ms = 5000) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    int one = 1;
    setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
      throw std::runtime_error("raw_client: connect failed");
  }
  ~raw_client() {
    if (fd_ >= 0) ::close(fd_);
  }
  raw_client(const raw_client&) = delete;
  raw_client& operator=(const raw_client&) = delete;

  // Sends everything; false if the server closed or reset.
  bool send(std::string_view data) {
    while (!data.empty()) {
      ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      data.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
  }
  void shutdown_write() { ::shutdown(fd_, SHUT_WR); }

  // Reads one response: head, then a body by Content-Length, chunked (decoded), or until close
  // (for HEAD requests pass head_request). Empty string if the connection closed first.
  std::string response(bool head_request = false) {
    std::size_t end;
    while ((end = buf_.find("\r\n\r\n")) == std::string::npos)
      if (!fill()) return {};
    std::string head = buf_.substr(0, end + 4);
    buf_.erase(0, end + 4);
    int status = std::atoi(head.c_str() + 9);
    if (head_request || status == 204 || status == 304 || status < 200) return head;
    std::string lower = head;
    for (char& c : lower)
      c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    std::size_t cl = lower.find("\r\ncontent-length:");
    if (lower.find("\r\ntransfer-encoding: chunked") != std::string::npos) {
      std::string body;
      for (;;) {
        std::size_t eol;
        while ((eol = buf_.find("\r\n")) == std::string::npos)
          if (!fill()) return head + body;
        std::size_t size = std::strtoul(buf_.c_str(), nullptr, 16);
        buf_.erase(0, eol + 2);
        while (buf_.size() < size + 2)
          if (!fill()) return head + body;
        body.append(buf_, 0, size);
        buf_.erase(0, size + 2);
        if (size == 0) return head + body;
      }
    }
    if (cl != std::string::npos) {
      std::size_t n = std::strtoull(head.c_str() + cl + 17, nullptr, 10);
      while (buf_.size() < n)
        if (!fill()) break;
      std::string body = buf_.substr(0, n);
      buf_.erase(0, body.size());
      return head + body;
    }
    while (fill()) {
    }
    std::string body = std::move(buf_);
    buf_.clear();
    return head + body;
  }

  // True if the server closes the connection (end of stream or reset) within the timeout, with
  // nothing more sent.
  bool closed() {
    char c;
    ssize_t n = ::recv(fd_, &c, 1, 0);
    if (n == 1) buf_.push_back(c);
    return n == 0 || (n < 0 && errno == ECONNRESET);
  }
  std::string& buffered() { return buf_; }
  int fd() const { return fd_; }

 private:
  bool fill() {
    char b[65536];
    ssize_t n = ::recv(fd_, b, sizeof b, 0);
    if (n <= 0) return false;
    buf_.append(b, static_cast<std::size_t>(n));
    return true;
  }
  int fd_ = -1;
  std::string buf_;
};

inline int status_of(std::string_view response) {
  return response.size() > 12 ? std::atoi(std::string(response.substr(9, 3)).c_str()) : 0;
}
inline std::string_view body_of(std::string_view response) {
  std::size_t at = response.find("\r\n\r\n");
  return at == std::string_view::npos ? std::string_view() : response.substr(at + 4);
}
// The value of the first header `name` (give it in lower case) in a response head, or "".
inline std::string header_of(std::string_view response, std::string_view name) {
  std::string lower(response.substr(0, response.find("\r\n\r\n")));
  lower += "\r\n";
  for (char& c : lower)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  std::string key = "\r\n" + std::string(name) + ":";
  std::size_t at = lower.find(key);
  if (at == std::string::npos) return {};
  std::size_t from = at + key.size(), to = lower.find("\r\n", from);
  std::string v(response.substr(from, to - from));
  while (!v.empty() && v.front() == ' ')
    v.erase(0, 1);
  return v;
}

}  // namespace squall::test
