// SPDX-License-Identifier: MIT
// http_epoll: the raw epoll HTTP reference of perf/run_http, the floor the HTTP servers are
// compared with. Plain C, one thread, no HTTP parsing at all:
//
//   http_epoll [--port] P        (listens on 127.0.0.1:P, default 8080; prints "listening")
//
//   - non-blocking listening socket (backlog SOMAXCONN), accept4 until EAGAIN; accepted
//     sockets are non-blocking with TCP_NODELAY;
//   - level-triggered epoll, epoll_wait with up to 256 events;
//   - on a readable connection: one read of up to 64 KiB into a buffer shared by every
//     connection; the requests in it are counted by counting "\r\n\r\n" (a 2-bit per-connection
//     state carries a terminator split across reads); nothing else is looked at, so a request
//     with a body would be miscounted: the load (wrk GET) has none;
//   - the answer to n requests is n copies of one canned TechEmpower-plaintext-style response
//     (fixed Date), taken from a buffer filled with copies once at start-up, so answering costs
//     no copying and is one write() per read, however many requests the read held;
//   - if the write is short (the peer is not reading), what is left is remembered as a
//     (offset, length) into that periodic buffer, the connection stops reading (backpressure)
//     and waits for EPOLLOUT; reading resumes once it is all written;
//   - per connection: a 24-byte struct.
//
// SIGTERM/SIGINT end it (default action); SIGPIPE is ignored.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "raw_http.h"

#define READ_SIZE 65536
#define MAX_EVENTS 256

// One read completes at most READ_SIZE / 4 + 1 requests (the first may need a single byte),
// and nothing is read while answers are pending; a pending tail starts inside the first copy,
// so one more copy makes the tail always fit.
#define MAX_RESPONSES (READ_SIZE / 4 + 2)

struct conn {
  int fd;
  unsigned match;   // how much of "\r\n\r\n" the bytes read so far end with (0..3)
  size_t pend_off;  // unwritten responses: out + pend_off, pend_len bytes
  size_t pend_len;
};

static char rbuf[READ_SIZE];
static char* out;  // MAX_RESPONSES copies of RESPONSE

static void die(const char* what) {
  fprintf(stderr, "http_epoll: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void set_interest(int ep, struct conn* c, uint32_t events) {
  struct epoll_event ev;
  ev.events = events;
  ev.data.ptr = c;
  if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) != 0) die("epoll_ctl MOD");
}

static void drop(struct conn* c) {
  close(c->fd);  // also removes it from the epoll set
  free(c);
}

static void accept_all(int ep, int lfd) {
  for (;;) {
    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ECONNABORTED)
        return;
      if (errno == EMFILE || errno == ENFILE) {
        fprintf(stderr, "http_epoll: accept: %s\n", strerror(errno));
        return;
      }
      die("accept4");
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct conn* c = calloc(1, sizeof *c);
    if (!c) die("calloc");
    c->fd = fd;
    struct epoll_event ev;
    ev.events = EPOLLIN;
    ev.data.ptr = c;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) die("epoll_ctl ADD");
  }
}

// Write what is pending. Returns 0 when all is written, 1 when some is left, -1 on error.
static int flush(struct conn* c) {
  while (c->pend_len > 0) {
    ssize_t w = write(c->fd, out + c->pend_off, c->pend_len);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      return -1;
    }
    c->pend_len -= (size_t)w;
    c->pend_off = (c->pend_off + (size_t)w) % RESP_LEN;  // the buffer repeats every RESP_LEN
  }
  return c->pend_len > 0;
}

static void on_readable(int ep, struct conn* c) {
  ssize_t n = read(c->fd, rbuf, sizeof rbuf);
  if (n == 0) {
    drop(c);
    return;
  }
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
    drop(c);
    return;
  }
  size_t reqs = count_requests(&c->match, rbuf, (size_t)n);
  if (reqs == 0) return;
  c->pend_off = 0;  // nothing is pending while reading
  c->pend_len = reqs * RESP_LEN;
  int r = flush(c);
  if (r < 0)
    drop(c);
  else if (r > 0)
    set_interest(ep, c, EPOLLOUT);  // stop reading until the answers are out
}

static void on_writable(int ep, struct conn* c) {
  int r = flush(c);
  if (r < 0)
    drop(c);
  else if (r == 0)
    set_interest(ep, c, EPOLLIN);
}

int main(int argc, char** argv) {
  long port = 8080;
  int i = 1;
  if (i < argc && strcmp(argv[i], "--port") == 0) ++i;
  if (i < argc) {
    char* end;
    port = strtol(argv[i], &end, 10);
    if (*end || port <= 0 || port > 65535 || i + 1 != argc) {
      fprintf(stderr, "usage: http_epoll [--port] PORT\n");
      return 2;
    }
  }

  signal(SIGPIPE, SIG_IGN);  // a write to a connection the peer closed fails with EPIPE

  out = canned_responses(MAX_RESPONSES);
  if (!out) die("malloc");

  const char* failed = "";
  int lfd = listen_loopback(port, SOCK_NONBLOCK, SOMAXCONN, &failed);
  if (lfd < 0) die(failed);

  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) die("epoll_create1");
  struct epoll_event ev;
  ev.events = EPOLLIN;
  ev.data.ptr = NULL;  // NULL marks the listening socket
  if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) != 0) die("epoll_ctl ADD listen");

  printf("http_epoll listening on 127.0.0.1:%ld\n", port);
  fflush(stdout);

  struct epoll_event events[MAX_EVENTS];
  for (;;) {
    int n = epoll_wait(ep, events, MAX_EVENTS, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("epoll_wait");
    }
    for (int k = 0; k < n; ++k) {
      struct conn* c = events[k].data.ptr;
      if (!c) {
        accept_all(ep, lfd);
        continue;
      }
      uint32_t e = events[k].events;
      if (e & EPOLLOUT)
        on_writable(ep, c);
      else if (e & (EPOLLIN | EPOLLERR | EPOLLHUP))
        on_readable(ep, c);
    }
  }
}
