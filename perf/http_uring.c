// SPDX-License-Identifier: MIT
// http_uring: a raw io_uring HTTP reference, http_epoll's twin, to tell what io_uring itself
// costs a request on a machine from what squall's io_uring backend adds. Plain C and liburing,
// one thread, no HTTP parsing at all:
//
//   http_uring [--multishot] [--port] P     (listens on 127.0.0.1:P; prints "listening")
//
//   - the ring is set up with squall's flags (SINGLE_ISSUER | DEFER_TASKRUN, else plain; unlike
//     squall it registers no fixed files), and one io_uring_enter a loop iteration submits what
//     the last batch of completions asked for and waits for at least one more;
//   - a multishot accept on the listening socket; accepted sockets get TCP_NODELAY;
//   - receives pick their buffer from a provided-buffer ring (1,024 buffers of 4 KiB, each
//     given back as soon as its bytes are counted), as squall's receives do. By default each
//     receive is one-shot with IORING_RECVSEND_POLL_FIRST (squall's way: a poll armed per
//     request); with --multishot one multishot receive per connection stays armed for its
//     life (re-armed only when the kernel ends it);
//   - requests are counted, and answered with n copies of the same canned response in one
//     send, by the code http_epoll uses (perf/raw_http.h);
//   - unlike http_epoll it has no backpressure: a send that fails or goes out short closes the
//     connection (the load, wrk's GETs answered at once, never fills a socket buffer).
//
// SIGTERM/SIGINT end it (default action); SIGPIPE is ignored.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "raw_http.h"

#define BUF_SIZE 4096
#define BUF_COUNT 1024  // a power of two (the ring's mask)
#define BUF_GROUP 0
// One receive of BUF_SIZE bytes completes at most BUF_SIZE / 4 + 1 requests.
#define MAX_RESPONSES (BUF_SIZE / 4 + 1)  // under 2^12: a send's count fits its user data

enum op { OP_ACCEPT = 1, OP_RECV = 2, OP_SEND = 3 };

struct conn {
  int fd;
  unsigned match;    // how much of "\r\n\r\n" the bytes so far end with (0..3)
  unsigned pending;  // operations in the kernel: the struct is freed when it drops to 0
  int closed;
};

static struct io_uring ring;
static struct io_uring_buf_ring* bufs;
static char* buf_mem;
static char* out;
static int multishot;

static void die(const char* what) {
  fprintf(stderr, "http_uring: %s: %s\n", what, strerror(errno));
  exit(1);
}

// An operation's user data: the connection (a user-space pointer, under 2^47, 8-aligned), the
// operation in the low 2 bits and, for a send, the number of responses in bits 52-63.
#define PTR_MASK ((UINT64_C(1) << 48) - 4)
#define REQS_SHIFT 52

static struct io_uring_sqe* sqe_for(struct conn* c, enum op op, uint64_t reqs) {
  struct io_uring_sqe* sqe = io_uring_get_sqe(&ring);
  if (!sqe) {
    io_uring_submit(&ring);  // the SQ is full: hand it over and take a fresh entry
    sqe = io_uring_get_sqe(&ring);
    if (!sqe) die("io_uring_get_sqe");
  }
  io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)c | op | reqs << REQS_SHIFT);
  if (c) ++c->pending;
  return sqe;
}

static void submit_recv(struct conn* c) {
  struct io_uring_sqe* sqe = sqe_for(c, OP_RECV, 0);
  if (multishot) {
    io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
  } else {
    io_uring_prep_recv(sqe, c->fd, NULL, BUF_SIZE, 0);
    sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
  }
  sqe->flags |= IOSQE_BUFFER_SELECT;
  sqe->buf_group = BUF_GROUP;
}

static void give_back(unsigned bid) {
  io_uring_buf_ring_add(bufs, buf_mem + (size_t)bid * BUF_SIZE, BUF_SIZE, (unsigned short)bid,
                        io_uring_buf_ring_mask(BUF_COUNT), 0);
  io_uring_buf_ring_advance(bufs, 1);
}

static void close_conn(struct conn* c) {
  if (!c->closed) {
    c->closed = 1;
    // A receive in the kernel keeps the socket open after close(); the shutdown ends it.
    shutdown(c->fd, SHUT_RDWR);
    close(c->fd);
  }
  if (c->pending == 0) free(c);
}

static void on_accept(int lfd, const struct io_uring_cqe* cqe) {
  if (!(cqe->flags & IORING_CQE_F_MORE)) {  // the multishot accept ended: arm it again
    struct io_uring_sqe* sqe = sqe_for(NULL, OP_ACCEPT, 0);
    io_uring_prep_multishot_accept(sqe, lfd, NULL, NULL, SOCK_CLOEXEC);
  }
  if (cqe->res < 0) return;
  struct conn* c = calloc(1, sizeof *c);
  if (!c) die("calloc");
  c->fd = cqe->res;
  int one = 1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  submit_recv(c);
}

static void on_recv(struct conn* c, const struct io_uring_cqe* cqe) {
  int res = cqe->res;
  int more = multishot && (cqe->flags & IORING_CQE_F_MORE);
  if (!more) --c->pending;
  if (res > 0 && (cqe->flags & IORING_CQE_F_BUFFER)) {
    unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
    size_t reqs = count_requests(&c->match, buf_mem + (size_t)bid * BUF_SIZE, (size_t)res);
    give_back(bid);
    if (c->closed) {
      close_conn(c);
      return;
    }
    if (reqs) {
      struct io_uring_sqe* sqe = sqe_for(c, OP_SEND, reqs);
      io_uring_prep_send(sqe, c->fd, out, reqs * RESP_LEN, MSG_NOSIGNAL);
    }
    if (!more) submit_recv(c);
    return;
  }
  if (res == -ENOBUFS && !c->closed) {  // every buffer was in use: receive again
    if (!more) submit_recv(c);
    return;
  }
  close_conn(c);  // end of stream, an error, or cancelled by the close
}

static void on_send(struct conn* c, const struct io_uring_cqe* cqe, size_t reqs) {
  --c->pending;
  if (cqe->res < 0 || (size_t)cqe->res != reqs * RESP_LEN || c->closed) close_conn(c);
}

int main(int argc, char** argv) {
  long port = 8080;
  int i = 1;
  if (i < argc && strcmp(argv[i], "--multishot") == 0) {
    multishot = 1;
    ++i;
  }
  if (i < argc && strcmp(argv[i], "--port") == 0) ++i;
  if (i < argc) {
    char* end;
    port = strtol(argv[i], &end, 10);
    if (*end || port <= 0 || port > 65535 || i + 1 != argc) {
      fprintf(stderr, "usage: http_uring [--multishot] [--port] PORT\n");
      return 2;
    }
  }
  signal(SIGPIPE, SIG_IGN);

  out = canned_responses(MAX_RESPONSES);
  if (!out) die("malloc");

  struct io_uring_params p;
  memset(&p, 0, sizeof p);
  p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_CQSIZE;
  p.cq_entries = 16384;
  if (io_uring_queue_init_params(4096, &ring, &p) != 0) {
    memset(&p, 0, sizeof p);
    p.flags = IORING_SETUP_CQSIZE;
    p.cq_entries = 16384;
    int r = io_uring_queue_init_params(4096, &ring, &p);
    if (r != 0) {
      errno = -r;
      die("io_uring_queue_init_params");
    }
  }

  // The provided buffers: the ring of their descriptors, page-aligned, and the buffers.
  size_t ring_bytes = BUF_COUNT * sizeof(struct io_uring_buf);
  bufs = mmap(NULL, ring_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  buf_mem = malloc((size_t)BUF_COUNT * BUF_SIZE);
  if (bufs == MAP_FAILED || !buf_mem) die("buffers");
  io_uring_buf_ring_init(bufs);
  struct io_uring_buf_reg reg;
  memset(&reg, 0, sizeof reg);
  reg.ring_addr = (uint64_t)(uintptr_t)bufs;
  reg.ring_entries = BUF_COUNT;
  reg.bgid = BUF_GROUP;
  int r = io_uring_register_buf_ring(&ring, &reg, 0);
  if (r != 0) {
    errno = -r;
    die("io_uring_register_buf_ring");
  }
  for (unsigned b = 0; b < BUF_COUNT; ++b)
    io_uring_buf_ring_add(bufs, buf_mem + (size_t)b * BUF_SIZE, BUF_SIZE, (unsigned short)b,
                          io_uring_buf_ring_mask(BUF_COUNT), (int)b);
  io_uring_buf_ring_advance(bufs, BUF_COUNT);

  const char* failed = "";
  int lfd = listen_loopback(port, 0, SOMAXCONN, &failed);
  if (lfd < 0) die(failed);
  struct io_uring_sqe* sqe = sqe_for(NULL, OP_ACCEPT, 0);
  io_uring_prep_multishot_accept(sqe, lfd, NULL, NULL, SOCK_CLOEXEC);

  printf("http_uring listening on 127.0.0.1:%ld (%s receives)\n", port,
         multishot ? "multishot" : "one-shot");
  fflush(stdout);

  for (;;) {
    r = io_uring_submit_and_wait(&ring, 1);
    if (r < 0 && r != -EINTR && r != -ETIME) {
      errno = -r;
      die("io_uring_submit_and_wait");
    }
    struct io_uring_cqe* cqe;
    unsigned head, seen = 0;
    io_uring_for_each_cqe(&ring, head, cqe) {
      ++seen;
      uint64_t data = io_uring_cqe_get_data64(cqe);
      struct conn* c = (struct conn*)(uintptr_t)(data & PTR_MASK);
      switch ((enum op)(data & 3)) {
        case OP_ACCEPT:
          on_accept(lfd, cqe);
          break;
        case OP_RECV:
          on_recv(c, cqe);
          break;
        case OP_SEND:
          on_send(c, cqe, (size_t)(data >> REQS_SHIFT));
          break;
      }
    }
    io_uring_cq_advance(&ring, seen);
  }
}
