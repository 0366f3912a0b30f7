// SPDX-License-Identifier: MIT
// raw_http.h: what the raw HTTP references (perf/http_epoll.c, perf/http_uring.c) share, so
// that they answer byte for byte alike and differ only in how they wait for the kernel: the
// canned response, the request counter, the buffer of response copies a send is taken from,
// and the loopback listening socket (which perf/echo_epoll.c uses too).
#pragma once

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static const char RESPONSE[] =
    "HTTP/1.1 200 OK\r\n"
    "Server: http_epoll\r\n"
    "Content-Type: text/plain\r\n"
    "Content-Length: 13\r\n"
    "Date: Mon, 01 Jan 2024 00:00:00 GMT\r\n"
    "\r\n"
    "Hello, World!";
#define RESP_LEN (sizeof RESPONSE - 1)

// Count "\r\n\r\n" in p[0..n), continuing from (and updating) *state: how much of the
// terminator the bytes so far end with (0..3).
static inline size_t count_requests(unsigned* state, const char* p, size_t n) {
  size_t count = 0;
  unsigned s = *state;
  const char* end = p + n;
  while (p < end) {
    if (s == 0) {  // the common case: skip to the next '\r'
      const char* cr = memchr(p, '\r', (size_t)(end - p));
      if (!cr) break;
      p = cr + 1;
      s = 1;
      continue;
    }
    char ch = *p++;
    if (ch == '\r')
      s = (s == 2) ? 3 : 1;
    else if (ch == '\n' && (s == 1 || s == 3)) {
      if (s == 3) {
        ++count;
        s = 0;
      } else {
        s = 2;
      }
    } else {
      s = 0;
    }
  }
  *state = s;
  return count;
}

// `copies` copies of RESPONSE end to end (NULL when out of memory): the answer to n requests is
// its first n * RESP_LEN bytes, sent without copying.
static inline char* canned_responses(size_t copies) {
  char* out = malloc(copies * RESP_LEN);
  if (out) {
    for (size_t k = 0; k < copies; ++k)
      memcpy(out + k * RESP_LEN, RESPONSE, RESP_LEN);
  }
  return out;
}

// A TCP socket listening on 127.0.0.1:port (SO_REUSEADDR); `type_flags` are or-ed into
// socket()'s type (SOCK_NONBLOCK...). Returns the fd, or -1 with errno set and *failed naming
// the call that failed.
static inline int listen_loopback(long port, int type_flags, int backlog, const char** failed) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | type_flags, 0);
  if (fd < 0) {
    *failed = "socket";
    return -1;
  }
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, (struct sockaddr*)&sa, sizeof sa) != 0)
    *failed = "bind";
  else if (listen(fd, backlog) != 0)
    *failed = "listen";
  else
    return fd;
  int saved = errno;  // close() must not change what the caller reports
  close(fd);
  errno = saved;
  return -1;
}
