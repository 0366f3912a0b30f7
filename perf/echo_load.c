// SPDX-License-Identifier: MIT
// echo_load: the load client of perf/run_net's TCP echo benchmarks. The same client drives
// every echo server (squall, raw epoll, libuv, Asio, Tornado), so the servers are compared under
// the same load. Plain C, one thread, non-blocking sockets, level-triggered epoll.
//
//   echo_load pingpong --port P --conns N [--size 64] [--warmup S] [--duration S] [--server-pid
//   PID] echo_load bulk     --port P --conns N [--size 65536] [--warmup S] [--duration S]
//   [--server-pid PID] echo_load hold     --port P --conns N [--size 64]
//
// The server is at 127.0.0.1:P. Prints one result line, e.g.
//   bench=pingpong conns=100 size=64 secs=5.000 msgs=1234567 msgs_per_s=246913.4
//     bytes_per_s=15802457.6 server_cpu_s=4.210 server_ns_per_msg=3410.1 server_user_s=0.25
//     client_cpu_s=4.98
//     machine_busy_s=9.97 steal_s=0.01
//
// Methodology:
//
//   pingpong: each connection sends `size` bytes (a fixed pattern), waits until the whole echo
//     is back, checks it byte for byte, and sends again: one message in flight per connection.
//     A message counts when its echo is complete.
//   bulk: each connection writes `size`-byte chunks whenever its socket is writable and reads
//     whatever comes back (up to 256 KiB per recv), so the server always has data to echo and
//     room to write it. The data is a pattern with a prime period, checked on arrival, so a
//     server that loses, duplicates or reorders bytes fails the run. A "message" here is `size`
//     echoed bytes (msgs = echoed bytes / size); bytes_per_s is the echoed bytes per second.
//   Both: connections are made (blocking connect, TCP_NODELAY) before the clock starts, then
//     the load runs for `warmup` seconds (default 1) unmeasured, then for `duration` seconds
//     (default 5) measured. At both ends of the measured window the client reads the server's
//     utime + stime from /proc/PID/stat (all its threads, in clock ticks); server_cpu_s is the
//     difference and server_ns_per_msg = server_cpu_s / msgs. server_user_s is the utime part
//     alone (the kernel splits utime and stime by sampling: an estimate, not exact).
//     client_cpu_s is the client's own CPU time (getrusage) over the window, to show when the
//     client is the bottleneck. machine_busy_s and steal_s are the whole machine's busy and
//     hypervisor-stolen CPU time over the window (/proc/stat), so that perf/run_net can tell
//     when other processes or the hypervisor took CPU from the run. The window's ends are
//     checked after every epoll_wait batch (at most 10 ms apart).
//   hold: opens N connections one after the other (blocking connect, send `size` bytes, read the
//     echo back, check it), keeping them all open, then prints "ready conns=N" and waits until
//     its stdin is closed; then it closes them and exits. perf/run_net reads the server's RSS
//     in between. The client raises its own RLIMIT_NOFILE soft limit to the hard limit.
//
// Any error (refused, reset, a short send of a ping-pong message, a wrong echo byte, the server
// closing) ends the run with exit status 1 and a message on stderr.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define PATTERN_PERIOD 65521u  // prime, so chunk boundaries never line up with it
#define RECV_MAX (256 * 1024)
#define MAX_EVENTS 256

struct options {
  const char* mode;
  int port;
  int conns;
  size_t size;
  double warmup;
  double duration;
  int server_pid;
};

struct conn {
  int fd;
  uint64_t sent;  // bytes sent (bulk), or bytes of the current message received (pingpong)
  uint64_t recvd;
};

static unsigned char* pattern;  // PATTERN_PERIOD + RECV_MAX bytes: pattern[i] = f(i % period)

static void die(const char* what) {
  fprintf(stderr, "echo_load: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void fail(const char* what) {
  fprintf(stderr, "echo_load: %s\n", what);
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

// utime + stime of process `pid` in seconds (and utime alone in *user), or -1.
static double proc_cpu_s(int pid, double* user) {
  *user = -1;
  if (pid <= 0) return -1;
  char path[64], buf[2048];
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  FILE* f = fopen(path, "r");
  if (!f) return -1;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  // The command name may contain spaces and parentheses: the fields start after the last ')'.
  char* p = strrchr(buf, ')');
  if (!p) return -1;
  p += 2;  // field 3 (state)
  unsigned long long utime = 0, stime = 0;
  // Fields 3..13 are skipped; 14 is utime, 15 stime.
  if (sscanf(p, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime) != 2)
    return -1;
  double hz = (double)sysconf(_SC_CLK_TCK);
  *user = (double)utime / hz;
  return (double)(utime + stime) / hz;
}

// Busy (user + nice + system + irq + softirq) and steal CPU seconds of the whole machine.
static void machine_cpu_s(double* busy, double* steal) {
  unsigned long long v[8] = {0};
  *busy = *steal = -1;
  FILE* f = fopen("/proc/stat", "r");
  if (!f) return;
  int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                 &v[4], &v[5], &v[6], &v[7]);
  fclose(f);
  if (n < 8) return;
  double hz = (double)sysconf(_SC_CLK_TCK);
  *busy = (double)(v[0] + v[1] + v[2] + v[5] + v[6]) / hz;
  *steal = (double)v[7] / hz;
}

static void make_pattern(void) {
  pattern = malloc(PATTERN_PERIOD + RECV_MAX);
  if (!pattern) fail("out of memory");
  for (size_t i = 0; i < PATTERN_PERIOD + RECV_MAX; ++i)
    pattern[i] = (unsigned char)((i % PATTERN_PERIOD) * 131u + 7u);
}

static int connect_one(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) die("socket");
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr*)&a, sizeof a) != 0) die("connect");
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

static void set_nonblocking(int fd) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) die("fcntl");
}

static void raise_fd_limit(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

// --- pingpong and bulk ---------------------------------------------------------------------------

struct window {
  double start, end;                      // CLOCK_MONOTONIC seconds
  double server0, server1;                // server CPU seconds at the window's ends
  double user0, user1;                    // the user-space part of it
  double client0, client1;                // our CPU seconds
  double busy0, busy1, steal0, steal1;    // the whole machine's CPU seconds
  uint64_t msgs0, msgs1, bytes0, bytes1;  // counters at the window's ends
};

static void pp_send(struct conn* c, size_t size) {
  ssize_t r = send(c->fd, pattern, size, MSG_NOSIGNAL);
  if (r < 0) die("send");
  if ((size_t)r != size) fail("short send of a ping-pong message (socket buffer full?)");
  c->sent = 0;  // bytes of the echo received so far
}

// Handles readability of a ping-pong connection; returns the messages completed (0 or 1).
static int pp_readable(struct conn* c, size_t size, unsigned char* buf) {
  ssize_t r = recv(c->fd, buf, size - c->sent, 0);
  if (r < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return 0;
    die("recv");
  }
  if (r == 0) fail("the server closed a connection");
  if (memcmp(buf, pattern + c->sent, (size_t)r) != 0) fail("wrong echo bytes");
  c->sent += (uint64_t)r;
  if (c->sent < size) return 0;
  pp_send(c, size);
  return 1;
}

// Handles a bulk connection's events; adds the echoed bytes to *bytes.
static void bulk_events(struct conn* c, uint32_t ev, size_t size, unsigned char* buf,
                        uint64_t* bytes) {
  if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
    ssize_t r = recv(c->fd, buf, RECV_MAX, 0);
    if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) die("recv");
    if (r == 0) fail("the server closed a connection");
    if (r > 0) {
      if (c->recvd + (uint64_t)r > c->sent) fail("echo longer than what was sent");
      if (memcmp(buf, pattern + c->recvd % PATTERN_PERIOD, (size_t)r) != 0)
        fail("wrong echo bytes");
      c->recvd += (uint64_t)r;
      *bytes += (uint64_t)r;
    }
  }
  if (ev & EPOLLOUT) {
    ssize_t r = send(c->fd, pattern + c->sent % PATTERN_PERIOD, size, MSG_NOSIGNAL);
    if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) die("send");
    if (r > 0) c->sent += (uint64_t)r;
  }
}

static void run_load(const struct options* o, int bulk) {
  if (bulk && o->size > RECV_MAX) fail("--size must be at most 256 KiB for bulk");
  struct conn* cs = calloc((size_t)o->conns, sizeof *cs);
  unsigned char* buf = malloc(RECV_MAX);
  if (!cs || !buf) fail("out of memory");
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) die("epoll_create1");
  for (int i = 0; i < o->conns; ++i) {
    cs[i].fd = connect_one(o->port);
    set_nonblocking(cs[i].fd);
    struct epoll_event ev;
    ev.events = EPOLLIN | (bulk ? EPOLLOUT : 0);
    ev.data.u32 = (uint32_t)i;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev) != 0) die("epoll_ctl");
  }
  if (!bulk)
    for (int i = 0; i < o->conns; ++i)
      pp_send(&cs[i], o->size);

  struct window w;
  memset(&w, 0, sizeof w);
  uint64_t msgs = 0, bytes = 0;
  double t_begin = mono_s();
  w.start = t_begin + o->warmup;
  w.end = w.start + o->duration;
  int phase = 0;  // 0 warm-up, 1 measuring
  struct epoll_event evs[MAX_EVENTS];
  for (;;) {
    int n = epoll_wait(ep, evs, MAX_EVENTS, 10);
    if (n < 0 && errno != EINTR) die("epoll_wait");
    for (int k = 0; k < n; ++k) {
      struct conn* c = &cs[evs[k].data.u32];
      if (bulk)
        bulk_events(c, evs[k].events, o->size, buf, &bytes);
      else if (evs[k].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
        msgs += (uint64_t)pp_readable(c, o->size, buf);
    }
    double now = mono_s();
    if (phase == 0 && now >= w.start) {
      w.start = now;
      w.end = now + o->duration;
      w.server0 = proc_cpu_s(o->server_pid, &w.user0);
      w.client0 = own_cpu_s();
      machine_cpu_s(&w.busy0, &w.steal0);
      w.msgs0 = msgs;
      w.bytes0 = bytes;
      phase = 1;
    } else if (phase == 1 && now >= w.end) {
      w.end = now;
      w.server1 = proc_cpu_s(o->server_pid, &w.user1);
      w.client1 = own_cpu_s();
      machine_cpu_s(&w.busy1, &w.steal1);
      w.msgs1 = msgs;
      w.bytes1 = bytes;
      break;
    }
  }
  double secs = w.end - w.start;
  uint64_t wbytes = bulk ? w.bytes1 - w.bytes0 : (w.msgs1 - w.msgs0) * o->size;
  uint64_t wmsgs = bulk ? wbytes / o->size : w.msgs1 - w.msgs0;
  double server = (w.server0 >= 0 && w.server1 >= 0) ? w.server1 - w.server0 : -1;
  double user = (w.user0 >= 0 && w.user1 >= 0) ? w.user1 - w.user0 : -1;
  if (wmsgs == 0) fail("no message completed in the measured window");
  printf(
      "bench=%s conns=%d size=%zu secs=%.3f msgs=%llu msgs_per_s=%.1f bytes_per_s=%.1f "
      "server_cpu_s=%.3f server_ns_per_msg=%.1f server_user_s=%.3f client_cpu_s=%.3f "
      "machine_busy_s=%.2f steal_s=%.2f\n",
      bulk ? "bulk" : "pingpong", o->conns, o->size, secs, (unsigned long long)wmsgs,
      (double)wmsgs / secs, (double)wbytes / secs, server,
      server >= 0 ? server * 1e9 / (double)wmsgs : -1.0, user, w.client1 - w.client0,
      w.busy1 - w.busy0, w.steal1 - w.steal0);
  for (int i = 0; i < o->conns; ++i)
    close(cs[i].fd);
  close(ep);
  free(cs);
  free(buf);
}

// --- hold ----------------------------------------------------------------------------------------

static void run_hold(const struct options* o) {
  raise_fd_limit();
  int* fds = calloc((size_t)o->conns, sizeof *fds);
  unsigned char* buf = malloc(o->size);
  if (!fds || !buf) fail("out of memory");
  struct timeval tv = {5, 0};
  for (int i = 0; i < o->conns; ++i) {
    int fd = connect_one(o->port);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ssize_t r = send(fd, pattern, o->size, MSG_NOSIGNAL);
    if (r != (ssize_t)o->size) die("send");
    size_t got = 0;
    while (got < o->size) {
      r = recv(fd, buf + got, o->size - got, 0);
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) die("recv (hold)");
      if (r == 0) fail("the server closed a connection");
      got += (size_t)r;
    }
    if (memcmp(buf, pattern, o->size) != 0) fail("wrong echo bytes");
    fds[i] = fd;
  }
  printf("ready conns=%d\n", o->conns);
  fflush(stdout);
  char line[256];
  while (fgets(line, sizeof line, stdin)) {
  }
  for (int i = 0; i < o->conns; ++i)
    close(fds[i]);
  free(fds);
  free(buf);
}

// --- main ----------------------------------------------------------------------------------------

static void usage(void) {
  fprintf(stderr,
          "usage: echo_load pingpong|bulk|hold --port P --conns N [--size B] [--warmup S] "
          "[--duration S] [--server-pid PID]\n");
  exit(2);
}

int main(int argc, char** argv) {
  if (argc < 2) usage();
  struct options o = {argv[1], 0, 1, 0, 1.0, 5.0, 0};
  for (int i = 2; i < argc; ++i) {
    if (i + 1 >= argc) usage();
    const char* k = argv[i];
    const char* v = argv[++i];
    if (strcmp(k, "--port") == 0)
      o.port = atoi(v);
    else if (strcmp(k, "--conns") == 0)
      o.conns = atoi(v);
    else if (strcmp(k, "--size") == 0)
      o.size = (size_t)strtoul(v, NULL, 10);
    else if (strcmp(k, "--warmup") == 0)
      o.warmup = atof(v);
    else if (strcmp(k, "--duration") == 0)
      o.duration = atof(v);
    else if (strcmp(k, "--server-pid") == 0)
      o.server_pid = atoi(v);
    else
      usage();
  }
  int bulk = strcmp(o.mode, "bulk") == 0;
  if (o.size == 0) o.size = bulk ? 65536 : 64;
  if (o.port <= 0 || o.port > 65535 || o.conns < 1 || o.duration <= 0 || o.warmup < 0) usage();
  if (o.size > RECV_MAX) fail("--size must be at most 256 KiB");
  make_pattern();
  if (strcmp(o.mode, "pingpong") == 0 || bulk)
    run_load(&o, bulk);
  else if (strcmp(o.mode, "hold") == 0)
    run_hold(&o);
  else
    usage();
  return 0;
}
