// SPDX-License-Identifier: MIT
// echo_epoll: the raw epoll echo server of perf/run_net, the baseline the other echo servers
// are compared with. Plain C, one thread, the obvious fast design:
//
//   echo_epoll [--port P]        (listens on 127.0.0.1:P, default 8007; prints "listening")
//
//   - non-blocking sockets, level-triggered epoll, epoll_wait with up to 256 events;
//   - one 64 KiB read buffer shared by every connection (reads are echoed before the next one);
//   - on a readable connection: one recv of up to 64 KiB, then send it straight back; if the
//     send is short (the peer's window is full, as in the bulk test), the rest is copied into a
//     per-connection buffer, the connection stops reading (backpressure) and waits for
//     EPOLLOUT, and reading resumes once that rest is sent;
//   - accepted sockets get TCP_NODELAY (as squall's tcp_server does by default);
//   - per connection: a 32-byte struct, plus the pending buffer only while a send is short.
//
// SIGTERM/SIGINT end it (default action).
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "raw_http.h"  // listen_loopback

#define READ_SIZE 65536
#define MAX_EVENTS 256

struct conn {
  int fd;
  char* pending;  // unsent echo bytes, or NULL
  size_t plen, poff;
};

static char rbuf[READ_SIZE];

static void die(const char* what) {
  fprintf(stderr, "echo_epoll: %s: %s\n", what, strerror(errno));
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
  free(c->pending);
  free(c);
}

static void accept_all(int ep, int lfd) {
  for (;;) {
    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ECONNABORTED)
        return;
      if (errno == EMFILE || errno == ENFILE) {
        fprintf(stderr, "echo_epoll: accept: %s\n", strerror(errno));
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

// Sends the pending bytes; returns 0 when all are sent, 1 when some remain, -1 on error.
static int flush_pending(struct conn* c) {
  while (c->poff < c->plen) {
    ssize_t w = send(c->fd, c->pending + c->poff, c->plen - c->poff, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      return errno == EAGAIN || errno == EWOULDBLOCK ? 1 : -1;
    }
    c->poff += (size_t)w;
  }
  free(c->pending);
  c->pending = NULL;
  c->plen = c->poff = 0;
  return 0;
}

static void on_readable(int ep, struct conn* c) {
  ssize_t n = recv(c->fd, rbuf, READ_SIZE, 0);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
    drop(c);
    return;
  }
  if (n == 0) {
    drop(c);
    return;
  }
  ssize_t w = send(c->fd, rbuf, (size_t)n, MSG_NOSIGNAL);
  if (w < 0) {
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
      drop(c);
      return;
    }
    w = 0;
  }
  if (w == n) return;
  c->plen = (size_t)(n - w);
  c->poff = 0;
  c->pending = malloc(c->plen);
  if (!c->pending) die("malloc");
  memcpy(c->pending, rbuf + w, c->plen);
  set_interest(ep, c, EPOLLOUT);
}

static void on_writable(int ep, struct conn* c) {
  int r = flush_pending(c);
  if (r < 0)
    drop(c);
  else if (r == 0)
    set_interest(ep, c, EPOLLIN);
}

int main(int argc, char** argv) {
  int port = 8007;
  for (int i = 1; i < argc; ++i) {
    if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) {
      port = atoi(argv[++i]);
    } else {
      fprintf(stderr, "usage: echo_epoll [--port P]\n");
      return 2;
    }
  }
  const char* failed = "";
  int lfd = listen_loopback(port, SOCK_NONBLOCK, 1024, &failed);
  if (lfd < 0) die(failed);
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) die("epoll_create1");
  struct epoll_event lev;
  lev.events = EPOLLIN;
  lev.data.ptr = NULL;  // the listening socket
  if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev) != 0) die("epoll_ctl ADD");
  printf("echo_epoll listening on 127.0.0.1:%d\n", port);
  fflush(stdout);

  struct epoll_event evs[MAX_EVENTS];
  for (;;) {
    int n = epoll_wait(ep, evs, MAX_EVENTS, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("epoll_wait");
    }
    for (int i = 0; i < n; ++i) {
      struct conn* c = evs[i].data.ptr;
      if (!c) {
        accept_all(ep, lfd);
      } else if (c->pending) {
        on_writable(ep, c);
      } else {
        on_readable(ep, c);
      }
    }
  }
}
