// SPDX-License-Identifier: MIT
// The ceiling for perf/resolver_bench: the fastest a client can get answers out of one DNS
// server on this machine. Keeps N queries in flight over a few connected UDP sockets and counts
// answers per second; every answer is replaced by a fresh query at once.
//
//   build-perf/perf/dns_flood IP:PORT [seconds = 3] [in flight = 1000] [sockets = 4]
//                                     [name = bench.test] [server pid]
//
// It does the least a client can do: the queries are built once (only the ID changes), answers
// are matched by ID and not parsed further, and the sockets are read and written in batches of
// up to 64 datagrams (recvmmsg / sendmmsg), so per answer the client spends a fraction of a
// system call. Queries alternate A and AAAA, as an AF_UNSPEC lookup asks both: the implied
// lookup rate is half the query rate. A query unanswered after 1 s is counted lost and sent
// again (with a new ID), so losses cannot shrink the number in flight.
//
// With the server's pid, the CPU time the server used during the run is printed next to the
// client's own (both from /proc): whichever is near one core per second of run is the limit.
// perf/resolver_bench --flood starts dnsmasq and runs this against it in the same run.
//
// Output, one line, machine-readable after the label:
//   dns_flood: queries/s Q lookups/s L lost N cpu_client C cpu_server S seconds T
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { batch = 64, max_sockets = 64, max_per_socket = 4096, packet_max = 512 };

// One query slot: which ID it was last sent with, and when.
struct slot {
  uint16_t id;
  double sent;
};

struct sock {
  int fd;
  int slots;  // queries this socket keeps in flight
  uint16_t next_gen;
  struct slot* slot;
};

static unsigned char query_a[packet_max], query_aaaa[packet_max];
static size_t query_len;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

// CPU seconds (user + system) of process `pid` from /proc; -1 if it cannot be read.
static double cpu_of(long pid) {
  char path[64], text[1024];
  snprintf(path, sizeof path, "/proc/%ld/stat", pid);
  FILE* f = fopen(path, "r");
  if (!f) return -1;
  size_t n = fread(text, 1, sizeof text - 1, f);
  fclose(f);
  text[n] = 0;
  char* p = strrchr(text, ')');
  if (!p) return -1;
  p += 2;  // the state field
  for (int field = 3; field < 14; ++field) {
    p = strchr(p, ' ');
    if (!p) return -1;
    ++p;
  }
  unsigned long utime = 0, stime = 0;
  if (sscanf(p, "%lu %lu", &utime, &stime) != 2) return -1;
  return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

static double self_cpu(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

// A standard query, recursion desired, for `name`; the ID (bytes 0-1) is filled in per send.
static size_t build_query(unsigned char* out, const char* name, uint16_t qtype) {
  size_t n = 0;
  memset(out, 0, 12);
  out[2] = 0x01;  // RD
  out[5] = 1;     // QDCOUNT
  n = 12;
  const char* label = name;
  while (*label) {
    const char* dot = strchr(label, '.');
    size_t len = dot ? (size_t)(dot - label) : strlen(label);
    if (len == 0 || len > 63 || n + len + 6 > packet_max) {
      fprintf(stderr, "dns_flood: bad name '%s'\n", name);
      exit(2);
    }
    out[n++] = (unsigned char)len;
    memcpy(out + n, label, len);
    n += len;
    label += len;
    if (*label == '.') ++label;
  }
  out[n++] = 0;
  out[n++] = (unsigned char)(qtype >> 8);
  out[n++] = (unsigned char)qtype;
  out[n++] = 0;
  out[n++] = 1;  // class IN
  return n;
}

// Slot k of a socket uses IDs k + slots * gen: the generation tells a late answer to a query
// already given up on from the answer to its replacement.
static uint16_t fresh_id(struct sock* s, int k) {
  int gens = 65536 / s->slots;
  uint16_t gen = (uint16_t)((s->slot[k].id / s->slots + 1) % gens);
  return (uint16_t)(k + s->slots * gen);
}

// Sends the queries of the slots in `ks` on socket `s` (sendmmsg, in batches).
static void send_slots(struct sock* s, const int* ks, int count, double t) {
  static unsigned char bufs[batch][packet_max];
  struct mmsghdr msgs[batch];
  struct iovec iov[batch];
  for (int done = 0; done < count;) {
    int n = count - done < batch ? count - done : batch;
    for (int i = 0; i < n; ++i) {
      int k = ks[done + i];
      s->slot[k].id = fresh_id(s, k);
      s->slot[k].sent = t;
      memcpy(bufs[i], (k & 1) ? query_aaaa : query_a, query_len);
      bufs[i][0] = (unsigned char)(s->slot[k].id >> 8);
      bufs[i][1] = (unsigned char)s->slot[k].id;
      iov[i].iov_base = bufs[i];
      iov[i].iov_len = query_len;
      memset(&msgs[i], 0, sizeof msgs[i]);
      msgs[i].msg_hdr.msg_iov = &iov[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
    }
    int sent = sendmmsg(s->fd, msgs, (unsigned)n, 0);
    if (sent <= 0) {
      if (sent < 0 && errno != EAGAIN && errno != ENOBUFS && errno != ECONNREFUSED) {
        perror("dns_flood: sendmmsg");
        exit(1);
      }
      return;  // not sent: those slots time out and go again
    }
    done += sent;
  }
}

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr,
            "usage: dns_flood IP:PORT [seconds = 3] [in flight = 1000] [sockets = 4] "
            "[name = bench.test] [server pid]\n");
    return 2;
  }
  char host[64];
  const char* colon = strrchr(argv[1], ':');
  int port = colon ? atoi(colon + 1) : 53;
  size_t hlen = colon ? (size_t)(colon - argv[1]) : strlen(argv[1]);
  if (hlen >= sizeof host) hlen = sizeof host - 1;
  memcpy(host, argv[1], hlen);
  host[hlen] = 0;
  double seconds = argc > 2 ? atof(argv[2]) : 3.0;
  int in_flight = argc > 3 ? atoi(argv[3]) : 1000;
  int nsock = argc > 4 ? atoi(argv[4]) : 4;
  const char* name = argc > 5 ? argv[5] : "bench.test";
  long server_pid = argc > 6 ? atol(argv[6]) : 0;
  if (nsock < 1) nsock = 1;
  if (nsock > max_sockets) nsock = max_sockets;
  if (in_flight < nsock) in_flight = nsock;
  if (in_flight > nsock * max_per_socket) in_flight = nsock * max_per_socket;

  struct sockaddr_in to;
  memset(&to, 0, sizeof to);
  to.sin_family = AF_INET;
  to.sin_port = htons((uint16_t)port);
  if (inet_pton(AF_INET, host, &to.sin_addr) != 1) {
    fprintf(stderr, "dns_flood: '%s' is not IPv4:PORT\n", argv[1]);
    return 2;
  }
  query_len = build_query(query_a, name, 1);
  build_query(query_aaaa, name, 28);

  int ep = epoll_create1(EPOLL_CLOEXEC);
  struct sock socks[max_sockets];
  static int ks[max_per_socket];
  for (int i = 0; i < nsock; ++i) {
    struct sock* s = &socks[i];
    s->fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int big = 4 << 20;
    setsockopt(s->fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    setsockopt(s->fd, SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    if (connect(s->fd, (struct sockaddr*)&to, sizeof to) != 0) {
      perror("dns_flood: connect");
      return 1;
    }
    s->slots = in_flight / nsock + (i < in_flight % nsock ? 1 : 0);
    s->slot = calloc((size_t)s->slots, sizeof *s->slot);
    for (int k = 0; k < s->slots; ++k)
      s->slot[k].id = (uint16_t)k;
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
    epoll_ctl(ep, EPOLL_CTL_ADD, s->fd, &ev);
  }

  double cpu0 = self_cpu(), server0 = server_pid ? cpu_of(server_pid) : -1;
  double start = now(), end = start + seconds, last_scan = start;
  long answers = 0, lost = 0;
  for (int i = 0; i < nsock; ++i) {
    for (int k = 0; k < socks[i].slots; ++k)
      ks[k] = k;
    send_slots(&socks[i], ks, socks[i].slots, start);
  }

  static unsigned char in[batch][packet_max];
  struct mmsghdr msgs[batch];
  struct iovec iov[batch];
  double t = start;
  while (t < end) {
    struct epoll_event evs[max_sockets];
    int n = epoll_wait(ep, evs, max_sockets, 50);
    t = now();
    for (int e = 0; e < n; ++e) {
      struct sock* s = &socks[evs[e].data.u32];
      for (;;) {
        for (int i = 0; i < batch; ++i) {
          iov[i].iov_base = in[i];
          iov[i].iov_len = packet_max;
          memset(&msgs[i], 0, sizeof msgs[i]);
          msgs[i].msg_hdr.msg_iov = &iov[i];
          msgs[i].msg_hdr.msg_iovlen = 1;
        }
        int got = recvmmsg(s->fd, msgs, batch, MSG_DONTWAIT, NULL);
        if (got <= 0) break;
        int count = 0;
        for (int i = 0; i < got; ++i) {
          if (msgs[i].msg_len < 12 || !(in[i][2] & 0x80)) continue;  // not a response
          uint16_t id = (uint16_t)((in[i][0] << 8) | in[i][1]);
          int k = id % s->slots;
          if (s->slot[k].id != id) continue;  // late: that query was given up on
          if ((in[i][3] & 0x0f) != 0) {
            fprintf(stderr, "dns_flood: the server answered rcode %d\n", in[i][3] & 0x0f);
            return 1;
          }
          ++answers;
          ks[count++] = k;
        }
        send_slots(s, ks, count, t);
        if (got < batch) break;
      }
    }
    if (t - last_scan > 0.2) {  // resend what went unanswered for a second
      last_scan = t;
      for (int i = 0; i < nsock; ++i) {
        int count = 0;
        for (int k = 0; k < socks[i].slots; ++k)
          if (t - socks[i].slot[k].sent > 1.0) ks[count++] = k;
        lost += count;
        send_slots(&socks[i], ks, count, t);
      }
    }
  }
  double elapsed = now() - start;
  double cpu = self_cpu() - cpu0;
  double server = server_pid && server0 >= 0 ? cpu_of(server_pid) - server0 : -1;
  double qps = (double)answers / elapsed;
  printf(
      "dns_flood: queries/s %.0f lookups/s %.0f lost %ld cpu_client %.2f cpu_server %.2f "
      "seconds %.2f\n",
      qps, qps / 2, lost, cpu, server, elapsed);
  return 0;
}
