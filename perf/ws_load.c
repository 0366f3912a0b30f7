// SPDX-License-Identifier: MIT
// ws_load: the load client of perf/run_ws's WebSocket echo benchmarks. The same client drives
// every echo server (squall, Node's ws, Python websockets, Tornado), so the servers are compared
// under the same load. Plain C, one thread, non-blocking sockets, level-triggered epoll; zlib
// only for --deflate.
//
//   ws_load HOST PORT PATH CONNS MSG_SIZE DURATION_S [--deflate] [--warmup S]
//           [--server-pid PID]...
//
// Prints one result line on stdout, e.g.
//   bench=ws conns=100 size=32 deflate=0 secs=5.000 msgs=612345 msgs_per_s=122469.0
//     server_cpu_s=2.310 server_us_per_msg=3.772 server_user_s=0.810 client_cpu_s=4.990
//     p50_us=790 p99_us=1410 machine_busy_s=9.97 steal_s=0.01 cpu0_busy_s=2.40
//     cpu1_busy_s=5.00 sent_bytes=32 reply_bytes=32 reply_compressed=0
// and before it one line "# handshake: ..." with the server's Sec-WebSocket-Extensions.
//
// Methodology:
//
//   Connections: CONNS non-blocking connects to HOST:PORT (TCP_NODELAY), each followed by the
//     HTTP/1.1 upgrade request for PATH with a fixed Sec-WebSocket-Key (RFC 6455's sample key);
//     the answer must be "101" with the Sec-WebSocket-Accept value that key calls for (a
//     constant, so no SHA-1 here). With --deflate the request offers "permessage-deflate;
//     client_no_context_takeover; server_no_context_takeover" and the answer must accept
//     permessage-deflate.
//   Messages: one message in flight per connection. The client sends one masked text frame of
//     MSG_SIZE bytes of ASCII text (words from a fixed list, pseudo-random order, so valid UTF-8
//     that deflate compresses about as well as prose), waits until the whole echo is back (any
//     number of frames and reads; a 64 KiB echo takes several reads), then sends the next one.
//     A message counts when its echo is complete. The frame is built once, with a fixed mask,
//     and is the same bytes for every connection and message, so the client spends nothing per
//     message beyond send, recv and parsing frame headers.
//   --deflate: the payload is compressed once with zlib's raw deflate (level 6, window 15,
//     sync flush, the trailing 00 00 ff ff removed, RFC 7692) and sent with RSV1: the server
//     inflates every message and may compress its answer (RSV1), as it chooses.
//   Checks: every echo's length is checked (the payload length of an uncompressed echo must be
//     MSG_SIZE); the first echo on each connection is checked byte for byte (a compressed one is
//     inflated first). Frames from the server must be unmasked and without RSV2/RSV3; a close
//     frame, a reset, or the server closing ends the run with status 1. Pings are ignored (the
//     runner's peers send none).
//   Window: the load runs `--warmup` seconds (default 1) once every connection is open,
//     unmeasured, then DURATION_S seconds measured. The window's ends are checked after every
//     epoll_wait batch (at most 10 ms apart). At both ends the client reads the utime + stime
//     of each --server-pid from /proc/PID/stat (all threads of the process, clock ticks):
//     server_cpu_s is the difference, server_us_per_msg = server_cpu_s / msgs. client_cpu_s is
//     the client's own CPU time (getrusage); machine_busy_s, steal_s, cpu0_busy_s and
//     cpu1_busy_s come from /proc/stat, so the runner can tell when other processes or the
//     hypervisor took CPU and which core was saturated.
//   Latency: per message, from the epoll batch in which its frame was sent to the batch in
//     which its echo completed (one clock read per batch); p50 and p99 from a 1 µs histogram
//     up to 1 s.
#define _GNU_SOURCE
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#define RECV_MAX (256 * 1024)
#define MAX_EVENTS 256
#define MAX_PIDS 8
#define HIST_US 1000000
#define STALL_S 10.0
#define HANDSHAKE_MAX 4096

// RFC 6455 section 1.3's sample key and the accept value it calls for.
static const char ws_key[] = "dGhlIHNhbXBsZSBub25jZQ==";
static const char ws_accept[] = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
static const unsigned char mask_key[4] = {0x37, 0xfa, 0x21, 0x3d};

enum state { CONNECTING, HANDSHAKE, OPEN };

struct conn {
  int fd;
  enum state st;
  // Sending: the request or the frame, how much of it is out.
  size_t woff;
  int writing;  // EPOLLOUT wanted
  double sent_at;
  // Handshake answer.
  char* hs;
  size_t hslen;
  // Frame parser: header bytes gathered, payload left in the current frame.
  unsigned char hdr[14];
  size_t hlen;
  uint64_t left;
  int control;     // the current frame is a control frame (its payload is skipped)
  int in_message;  // a data frame without FIN was seen
  int rsv1;        // the current message is compressed
  uint64_t mlen;   // payload bytes of the current message so far
  // The first echo is kept for the byte-for-byte check.
  unsigned char* keep;
  size_t keeplen, keepcap;
  uint64_t echoes;
};

struct options {
  const char* host;
  const char* port;
  const char* path;
  int conns;
  size_t size;
  double duration;
  double warmup;
  int deflate;
  int pids[MAX_PIDS];
  int npids;
};

static unsigned char* payload;  // MSG_SIZE bytes of text
static unsigned char* wire;     // what goes on the wire (compressed or not), before masking
static size_t wire_len;
static unsigned char* frame;  // the masked frame, header included
static size_t frame_len;
static char request[1024];
static size_t request_len;
static unsigned char rbuf[RECV_MAX];
static uint32_t* hist;
static uint64_t hist_over;
static uint64_t reply_bytes;  // wire payload length of the last echo
static int reply_compressed;
static char extensions[512] = "-";

static void die(const char* what) {
  fprintf(stderr, "ws_load: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void fail(const char* what) {
  fprintf(stderr, "ws_load: %s\n", what);
  exit(1);
}

static double mono_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double own_cpu_s(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

// utime + stime in seconds of the process `pid` (all its threads), utime alone in *user; -1
// when it cannot be read.
static double proc_cpu_s(int pid, double* user) {
  char path[64], buf[2048];
  *user = -1;
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  FILE* f = fopen(path, "r");
  if (!f) return -1;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  char* p = strrchr(buf, ')');  // the command name may hold spaces and parentheses
  if (!p) return -1;
  p += 2;
  unsigned long long ut = 0, st = 0;
  // Fields from 3 (state): utime and stime are fields 14 and 15.
  if (sscanf(p, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2) return -1;
  double hz = (double)sysconf(_SC_CLK_TCK);
  *user = (double)ut / hz;
  return (double)(ut + st) / hz;
}

struct sample {
  double t, client, server, server_user;
  double busy, steal, cpu0, cpu1;
  uint64_t msgs;
};

// Busy and steal seconds of the machine and busy seconds of CPUs 0 and 1, from /proc/stat.
static void machine_cpu(struct sample* s) {
  s->busy = s->steal = s->cpu0 = s->cpu1 = -1;
  FILE* f = fopen("/proc/stat", "r");
  if (!f) return;
  char line[512];
  double hz = (double)sysconf(_SC_CLK_TCK);
  while (fgets(line, sizeof line, f) && strncmp(line, "cpu", 3) == 0) {
    unsigned long long v[8] = {0};
    char name[16];
    if (sscanf(line, "%15s %llu %llu %llu %llu %llu %llu %llu %llu", name, &v[0], &v[1], &v[2],
               &v[3], &v[4], &v[5], &v[6], &v[7]) < 5)
      continue;
    // user nice system [idle iowait] irq softirq [steal]
    double busy = (double)(v[0] + v[1] + v[2] + v[5] + v[6]) / hz;
    if (strcmp(name, "cpu") == 0) {
      s->busy = busy;
      s->steal = (double)v[7] / hz;
    } else if (strcmp(name, "cpu0") == 0) {
      s->cpu0 = busy;
    } else if (strcmp(name, "cpu1") == 0) {
      s->cpu1 = busy;
    }
  }
  fclose(f);
}

static void take_sample(const struct options* o, struct sample* s, uint64_t msgs) {
  s->t = mono_s();
  s->msgs = msgs;
  s->client = own_cpu_s();
  s->server = s->server_user = o->npids ? 0 : -1;
  for (int i = 0; i < o->npids; ++i) {
    double user, all = proc_cpu_s(o->pids[i], &user);
    if (all < 0 || s->server < 0) {
      s->server = s->server_user = -1;
    } else {
      s->server += all;
      s->server_user += user;
    }
  }
  machine_cpu(s);
}

// --- The message -------------------------------------------------------------------------------

// MSG_SIZE bytes of lower-case words and spaces in a pseudo-random (fixed) order.
static void make_payload(size_t size) {
  static const char* words[] = {
      "the",     "of",    "and",     "to",       "in",      "loop",   "fiber",     "stream",
      "socket",  "frame", "message", "server",   "client",  "echo",   "buffer",    "deflate",
      "a",       "is",    "for",     "with",     "that",    "on",     "when",      "every",
      "timer",   "read",  "write",   "kernel",   "queue",   "wakes",  "handshake", "close",
      "between", "its",   "one",     "two",      "each",    "byte",   "window",    "reply",
      "open",    "fast",  "slow",    "quiet",    "core",    "thread", "event",     "ready",
      "data",    "text",  "mask",    "length",   "header",  "peer",   "network",   "time",
      "it",      "was",   "not",     "compress", "tornado", "squall", "run",       "figure"};
  payload = malloc(size ? size : 1);
  if (!payload) fail("out of memory");
  uint32_t x = 2463534242u;
  size_t n = 0;
  while (n < size) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    const char* w = words[x % (sizeof words / sizeof words[0])];
    for (size_t i = 0; w[i] && n < size; ++i)
      payload[n++] = (unsigned char)w[i];
    if (n < size) payload[n++] = ' ';
  }
}

static void compress_payload(size_t size) {
  z_stream z;
  memset(&z, 0, sizeof z);
  if (deflateInit2(&z, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK)
    fail("deflateInit2 failed");
  size_t cap = deflateBound(&z, size) + 64;
  wire = malloc(cap);
  if (!wire) fail("out of memory");
  z.next_in = payload;
  z.avail_in = (uInt)size;
  z.next_out = wire;
  z.avail_out = (uInt)cap;
  if (deflate(&z, Z_SYNC_FLUSH) != Z_OK || z.avail_in != 0) fail("deflate failed");
  wire_len = cap - z.avail_out;
  deflateEnd(&z);
  if (wire_len < 4 || memcmp(wire + wire_len - 4, "\x00\x00\xff\xff", 4) != 0)
    fail("deflate output does not end with a sync flush");
  wire_len -= 4;
}

static void make_frame(const struct options* o) {
  if (o->deflate) {
    compress_payload(o->size);
  } else {
    wire = payload;
    wire_len = o->size;
  }
  frame = malloc(wire_len + 14);
  if (!frame) fail("out of memory");
  size_t h = 0;
  frame[h++] = (unsigned char)(0x80 | (o->deflate ? 0x40 : 0) | 0x1);  // FIN, RSV1?, text
  if (wire_len < 126) {
    frame[h++] = (unsigned char)(0x80 | wire_len);
  } else if (wire_len < 65536) {
    frame[h++] = 0x80 | 126;
    frame[h++] = (unsigned char)(wire_len >> 8);
    frame[h++] = (unsigned char)wire_len;
  } else {
    frame[h++] = 0x80 | 127;
    for (int i = 7; i >= 0; --i)
      frame[h++] = (unsigned char)((uint64_t)wire_len >> (8 * i));
  }
  memcpy(frame + h, mask_key, 4);
  h += 4;
  for (size_t i = 0; i < wire_len; ++i)
    frame[h + i] = wire[i] ^ mask_key[i & 3];
  frame_len = h + wire_len;
}

// --- The run -----------------------------------------------------------------------------------

struct run {
  const struct options* o;
  int ep;
  struct conn* cs;
  int open;  // connections past the handshake
  uint64_t msgs;
  int measuring;
  double now, last_progress;
};

static void want_write(struct run* r, struct conn* c, int on) {
  if (c->writing == on) return;
  struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0), .data.ptr = c};
  if (epoll_ctl(r->ep, EPOLL_CTL_MOD, c->fd, &ev) != 0) die("epoll_ctl");
  c->writing = on;
}

// Send what is left of the request (handshake) or of the frame (open).
static void flush(struct run* r, struct conn* c) {
  const char* buf = c->st == OPEN ? (const char*)frame : request;
  size_t len = c->st == OPEN ? frame_len : request_len;
  while (c->woff < len) {
    ssize_t n = send(c->fd, buf + c->woff, len - c->woff, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        want_write(r, c, 1);
        return;
      }
      if (errno == EINTR) continue;
      die("send");
    }
    c->woff += (size_t)n;
  }
  want_write(r, c, 0);
}

static void send_message(struct run* r, struct conn* c) {
  c->woff = 0;
  c->sent_at = r->now;
  flush(r, c);
}

static int inflate_equals(const unsigned char* in, size_t inlen, const unsigned char* want,
                          size_t wantlen) {
  unsigned char* buf = malloc(inlen + 4);
  unsigned char* out = malloc(wantlen + 1);
  if (!buf || !out) fail("out of memory");
  memcpy(buf, in, inlen);
  memcpy(buf + inlen, "\x00\x00\xff\xff", 4);
  z_stream z;
  memset(&z, 0, sizeof z);
  if (inflateInit2(&z, -15) != Z_OK) fail("inflateInit2 failed");
  z.next_in = buf;
  z.avail_in = (uInt)(inlen + 4);
  z.next_out = out;
  z.avail_out = (uInt)(wantlen + 1);
  int rc = inflate(&z, Z_SYNC_FLUSH);
  size_t got = wantlen + 1 - z.avail_out;
  inflateEnd(&z);
  int ok = (rc == Z_OK || rc == Z_STREAM_END || rc == Z_BUF_ERROR) && got == wantlen &&
           memcmp(out, want, wantlen) == 0;
  free(buf);
  free(out);
  return ok;
}

// A whole echo is in on c.
static void echo_done(struct run* r, struct conn* c) {
  const struct options* o = r->o;
  if (!c->rsv1 && c->mlen != o->size) {
    fprintf(stderr, "ws_load: echo of %llu bytes, expected %zu\n", (unsigned long long)c->mlen,
            o->size);
    exit(1);
  }
  if (c->echoes == 0) {
    int ok = c->rsv1 ? inflate_equals(c->keep, c->keeplen, payload, o->size)
                     : c->keeplen == o->size && memcmp(c->keep, payload, o->size) == 0;
    if (!ok)
      fail(c->rsv1 ? "the first compressed echo does not inflate to the message sent"
                   : "the first echo differs from the message sent");
    free(c->keep);
    c->keep = NULL;
    c->keepcap = 0;
  }
  reply_bytes = c->mlen;
  reply_compressed = c->rsv1;
  ++c->echoes;
  if (r->measuring) {
    ++r->msgs;
    double us = (r->now - c->sent_at) * 1e6;
    if (us < 0) us = 0;
    if (us < HIST_US)
      ++hist[(size_t)us];
    else
      ++hist_over;
  }
  r->last_progress = r->now;
  c->mlen = 0;
  c->rsv1 = 0;
  c->in_message = 0;
  send_message(r, c);
}

// Parse frames out of n received bytes.
static void frames(struct run* r, struct conn* c, const unsigned char* p, size_t n) {
  while (n > 0) {
    if (c->left == 0 && c->hlen < 2) {
      // Gather the two first header bytes, then the rest of the header.
      c->hdr[c->hlen++] = *p++;
      --n;
      continue;
    }
    if (c->hlen >= 2 && c->left == 0) {
      unsigned char b0 = c->hdr[0], b1 = c->hdr[1];
      size_t need = 2 + ((b1 & 0x7f) == 126 ? 2 : (b1 & 0x7f) == 127 ? 8 : 0);
      if (b1 & 0x80) fail("the server sent a masked frame");
      while (c->hlen < need && n > 0) {
        c->hdr[c->hlen++] = *p++;
        --n;
      }
      if (c->hlen < need) return;
      uint64_t len = b1 & 0x7f;
      if (len == 126) len = ((uint64_t)c->hdr[2] << 8) | c->hdr[3];
      if (len == 127) {
        len = 0;
        for (int i = 2; i < 10; ++i)
          len = (len << 8) | c->hdr[i];
      }
      int op = b0 & 0x0f;
      if (b0 & 0x30) fail("the server sent a frame with RSV2 or RSV3");
      c->control = op >= 8;
      if (op == 8) fail("the server sent a close frame");
      if (!c->control) {
        if (op != 0) {
          if (c->in_message) fail("a new data frame inside a fragmented echo");
          c->rsv1 = (b0 & 0x40) != 0;
          if (c->rsv1 && !r->o->deflate) fail("a compressed echo without permessage-deflate");
        } else if (!c->in_message) {
          fail("a continuation frame outside a message");
        }
        c->in_message = 1;
        c->mlen += len;
        if (c->echoes == 0 && c->mlen > c->keepcap) {
          size_t cap = c->mlen + 64;
          c->keep = realloc(c->keep, cap);
          if (!c->keep) fail("out of memory");
          c->keepcap = cap;
        }
      }
      c->hlen = 0;
      c->left = len;
      int fin = (b0 & 0x80) != 0;
      if (len == 0) {
        if (!c->control && fin) echo_done(r, c);
        continue;
      }
      // FIN of this frame, for when its payload is done: kept in hdr[0] (hlen is 0 again).
      c->hdr[0] = b0;
    }
    // Payload bytes of the current frame.
    size_t take = c->left < n ? (size_t)c->left : n;
    if (!c->control && c->echoes == 0) {
      memcpy(c->keep + c->keeplen, p, take);
      c->keeplen += take;
    }
    p += take;
    n -= take;
    c->left -= take;
    if (c->left == 0 && !c->control && (c->hdr[0] & 0x80)) echo_done(r, c);
  }
}

static int header_has(const char* head, const char* name, const char* value, char* out,
                      size_t outlen) {
  size_t nl = strlen(name);
  for (const char* line = strstr(head, "\r\n"); line; line = strstr(line, "\r\n")) {
    line += 2;
    if (strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
      const char* v = line + nl + 1;
      while (*v == ' ' || *v == '\t')
        ++v;
      const char* end = strstr(v, "\r\n");
      size_t vl = end ? (size_t)(end - v) : strlen(v);
      if (out) {
        size_t k = vl < outlen - 1 ? vl : outlen - 1;
        memcpy(out, v, k);
        out[k] = 0;
      }
      if (!value) return 1;
      for (const char* q = v; q + strlen(value) <= v + vl; ++q)
        if (strncasecmp(q, value, strlen(value)) == 0) return 1;
      return 0;
    }
  }
  return 0;
}

static void handshake_input(struct run* r, struct conn* c, const unsigned char* p, size_t n) {
  if (c->hslen + n > HANDSHAKE_MAX) fail("the handshake answer is too long");
  memcpy(c->hs + c->hslen, p, n);
  c->hslen += n;
  c->hs[c->hslen] = 0;
  char* end = strstr(c->hs, "\r\n\r\n");
  if (!end) return;
  size_t head = (size_t)(end - c->hs) + 4;
  end[2] = 0;  // the head, ending with its last line's CRLF
  if (strncmp(c->hs, "HTTP/1.1 101", 12) != 0) {
    char* eol = strstr(c->hs, "\r\n");
    if (eol) *eol = 0;
    fprintf(stderr, "ws_load: the server answered the upgrade with \"%s\"\n", c->hs);
    exit(1);
  }
  char accept[128];
  if (!header_has(c->hs, "Sec-WebSocket-Accept", NULL, accept, sizeof accept) ||
      strcmp(accept, ws_accept) != 0)
    fail("wrong or missing Sec-WebSocket-Accept");
  char ext[sizeof extensions];
  int has_ext = header_has(c->hs, "Sec-WebSocket-Extensions", NULL, ext, sizeof ext);
  if (r->o->deflate &&
      !header_has(c->hs, "Sec-WebSocket-Extensions", "permessage-deflate", NULL, 0))
    fail("the server did not accept permessage-deflate");
  if (!r->o->deflate && has_ext) fail("the server agreed to an extension nobody offered");
  if (has_ext) memcpy(extensions, ext, sizeof ext);
  size_t rest = c->hslen - head;
  unsigned char* leftover = (unsigned char*)c->hs + head;
  c->st = OPEN;
  ++r->open;
  send_message(r, c);
  if (rest) frames(r, c, leftover, rest);
  free(c->hs);
  c->hs = NULL;
}

static void on_event(struct run* r, struct conn* c, uint32_t ev) {
  if (c->st == CONNECTING) {
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) die("getsockopt");
    if (err) {
      errno = err;
      die("connect");
    }
    c->st = HANDSHAKE;
    c->woff = 0;
    flush(r, c);
    return;
  }
  if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
    ssize_t n = recv(c->fd, rbuf, sizeof rbuf, 0);
    if (n < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) die("recv");
    } else if (n == 0) {
      fail("the server closed a connection");
    } else if (c->st == HANDSHAKE) {
      handshake_input(r, c, rbuf, (size_t)n);
    } else {
      frames(r, c, rbuf, (size_t)n);
    }
  }
  if ((ev & EPOLLOUT) && c->writing) flush(r, c);
}

static void open_all(struct run* r, struct addrinfo* ai) {
  for (int i = 0; i < r->o->conns; ++i) {
    struct conn* c = &r->cs[i];
    c->fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) die("socket");
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->hs = malloc(HANDSHAKE_MAX + 1);
    if (!c->hs) fail("out of memory");
    c->st = CONNECTING;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
    c->writing = 1;
    if (connect(c->fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno != EINPROGRESS) die("connect");
    if (epoll_ctl(r->ep, EPOLL_CTL_ADD, c->fd, &ev) != 0) die("epoll_ctl");
  }
}

static uint64_t percentile(uint64_t total, double q) {
  uint64_t want = (uint64_t)(q * (double)total), seen = 0;
  if (want >= total) want = total - 1;
  for (size_t i = 0; i < HIST_US; ++i) {
    seen += hist[i];
    if (seen > want) return i;
  }
  return HIST_US;
}

static void usage(void) {
  fprintf(stderr,
          "usage: ws_load HOST PORT PATH CONNS MSG_SIZE DURATION_S [--deflate] [--warmup S] "
          "[--server-pid PID]...\n");
  exit(2);
}

static void parse(int argc, char** argv, struct options* o) {
  memset(o, 0, sizeof *o);
  o->warmup = 1.0;
  const char* pos[6];
  int npos = 0;
  for (int i = 1; i < argc; ++i) {
    if (strcmp(argv[i], "--deflate") == 0) {
      o->deflate = 1;
    } else if (strcmp(argv[i], "--warmup") == 0 && i + 1 < argc) {
      o->warmup = atof(argv[++i]);
    } else if (strcmp(argv[i], "--server-pid") == 0 && i + 1 < argc) {
      if (o->npids == MAX_PIDS) usage();
      o->pids[o->npids++] = atoi(argv[++i]);
    } else if (argv[i][0] == '-' && argv[i][1] == '-') {
      usage();
    } else {
      if (npos == 6) usage();
      pos[npos++] = argv[i];
    }
  }
  if (npos != 6) usage();
  o->host = pos[0];
  o->port = pos[1];
  o->path = pos[2];
  o->conns = atoi(pos[3]);
  o->size = (size_t)strtoull(pos[4], NULL, 10);
  o->duration = atof(pos[5]);
  if (o->conns < 1 || o->duration <= 0 || o->warmup < 0 || o->path[0] != '/') usage();
}

int main(int argc, char** argv) {
  struct options o;
  parse(argc, argv, &o);
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  make_payload(o.size);
  make_frame(&o);
  int rl_len = snprintf(request, sizeof request,
                        "GET %s HTTP/1.1\r\nHost: %s:%s\r\nUpgrade: websocket\r\n"
                        "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                        "Sec-WebSocket-Version: 13\r\n%s\r\n",
                        o.path, o.host, o.port, ws_key,
                        o.deflate ? "Sec-WebSocket-Extensions: permessage-deflate; "
                                    "client_no_context_takeover; server_no_context_takeover\r\n"
                                  : "");
  if (rl_len < 0 || (size_t)rl_len >= sizeof request) fail("the path is too long");
  request_len = (size_t)rl_len;
  hist = calloc(HIST_US, sizeof *hist);
  if (!hist) fail("out of memory");

  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai;
  int gai = getaddrinfo(o.host, o.port, &hints, &ai);
  if (gai != 0) {
    fprintf(stderr, "ws_load: %s: %s\n", o.host, gai_strerror(gai));
    return 1;
  }
  struct run r = {.o = &o};
  r.cs = calloc((size_t)o.conns, sizeof *r.cs);
  if (!r.cs) fail("out of memory");
  r.ep = epoll_create1(EPOLL_CLOEXEC);
  if (r.ep < 0) die("epoll_create1");
  r.now = r.last_progress = mono_s();
  open_all(&r, ai);
  freeaddrinfo(ai);

  struct epoll_event evs[MAX_EVENTS];
  double t_open = -1, t_start = -1, t_end = -1;
  struct sample s0, s1;
  for (;;) {
    int n = epoll_wait(r.ep, evs, MAX_EVENTS, 10);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("epoll_wait");
    }
    r.now = mono_s();
    for (int i = 0; i < n; ++i)
      on_event(&r, evs[i].data.ptr, evs[i].events);
    if (t_open < 0) {
      if (r.open == o.conns) {
        t_open = r.now;
        t_start = t_open + o.warmup;
      } else if (r.now - r.last_progress > STALL_S) {
        fprintf(stderr, "ws_load: only %d of %d connections open after %.0f s\n", r.open, o.conns,
                STALL_S);
        return 1;
      }
      continue;
    }
    if (r.now - r.last_progress > STALL_S) {
      fprintf(stderr, "ws_load: no echo for %.0f s\n", STALL_S);
      return 1;
    }
    if (!r.measuring && r.now >= t_start) {
      take_sample(&o, &s0, r.msgs);
      r.measuring = 1;
      t_end = s0.t + o.duration;
    } else if (r.measuring && r.now >= t_end) {
      take_sample(&o, &s1, r.msgs);
      break;
    }
  }

  uint64_t msgs = s1.msgs - s0.msgs;
  double secs = s1.t - s0.t;
  if (msgs == 0) fail("no message completed in the measured window");
  double server = (s0.server >= 0 && s1.server >= 0) ? s1.server - s0.server : -1;
  double user = (s0.server_user >= 0 && s1.server_user >= 0) ? s1.server_user - s0.server_user : -1;
  for (char* e = extensions; *e; ++e)
    if (*e == '\n' || *e == '\r') *e = ' ';
  printf("# handshake: Sec-WebSocket-Extensions: %s\n", extensions);
  printf(
      "bench=ws conns=%d size=%zu deflate=%d secs=%.3f msgs=%llu msgs_per_s=%.1f "
      "server_cpu_s=%.3f server_us_per_msg=%.3f server_user_s=%.3f client_cpu_s=%.3f "
      "p50_us=%llu p99_us=%llu machine_busy_s=%.2f steal_s=%.2f cpu0_busy_s=%.2f "
      "cpu1_busy_s=%.2f sent_bytes=%zu reply_bytes=%llu reply_compressed=%d\n",
      o.conns, o.size, o.deflate, secs, (unsigned long long)msgs, (double)msgs / secs, server,
      server >= 0 ? server * 1e6 / (double)msgs : -1.0, user, s1.client - s0.client,
      (unsigned long long)percentile(msgs, 0.50), (unsigned long long)percentile(msgs, 0.99),
      s1.busy - s0.busy, s1.steal - s0.steal, s1.cpu0 - s0.cpu0, s1.cpu1 - s0.cpu1, wire_len,
      (unsigned long long)reply_bytes, reply_compressed);
  fflush(stdout);
  for (int i = 0; i < o.conns; ++i)
    close(r.cs[i].fd);
  close(r.ep);
  return 0;
}
