// SPDX-License-Identifier: MIT
// Lookups per second against a local dnsmasq, 1,000 in flight: squall's resolver (c-ares on the
// loop, one thread) against getaddrinfo() on a thread pool (the loop's executor), same run.
//
//   build-perf/perf/resolver_bench [seconds per side = 3] [in flight = 1000] [pool threads = 4]
//                                  [--flood[=QUERIES]] [--pin] [--only=squall|gai|flood]
//
// Method: the bench starts dnsmasq on 127.0.0.1 with a port of its own and a hosts file naming
// bench.test (--local=/test/, --no-resolv: nothing is forwarded anywhere). Each side runs
// `in flight` fibers that look bench.test up (AF_UNSPEC: an A and an AAAA query each) in a loop
// for the given time; the figure is completed lookups / elapsed time. getaddrinfo is pointed
// at dnsmasq's port through the thread's resolver state (res_init, then _res.nsaddr_list), set
// once per pool thread, so no query leaves loopback. Both sides read /etc/hosts first, as their
// defaults do. dnsmasq runs on the same 2 cores and is part of what is measured.
//
// --flood also runs perf/dns_flood (found next to this binary) against the same dnsmasq: QUERIES
// queries (default 128; A and AAAA alternately) kept in flight with no resolver at all, batched
// sendmmsg / recvmmsg. Its answers / 2 is the ceiling: the most lookups/s any client gets from
// this dnsmasq on this machine. 128 fit in dnsmasq's socket buffer (about 200 do); 2,000, what
// 1,000 lookups would put on the wire, overflow it and get no more answers per second.
// --pin puts dnsmasq on CPU 0 and the bench (every thread of it, and dns_flood) on CPU 1: one
// core each, which shows dnsmasq's own single-core limit.
// --only runs one side (for perf record). "drops" is the growth of the kernel's UDP
// RcvbufErrors counter during a side (system-wide): queries dnsmasq's socket had no room for,
// which the client only learns of by timing out (500 ms here) and asking again.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <resolv.h>
#include <sched.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "squall/fiber.hpp"
#include "squall/resolver.hpp"

namespace {

// A port free on 127.0.0.1 for both UDP and TCP (dnsmasq binds both).
std::uint16_t free_port() {
  for (;;) {
    int u = ::socket(AF_INET, SOCK_DGRAM, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(u, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
    socklen_t len = sizeof sa;
    ::getsockname(u, reinterpret_cast<sockaddr*>(&sa), &len);
    int t = ::socket(AF_INET, SOCK_STREAM, 0);
    bool tcp_free = ::bind(t, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0;
    ::close(t);
    ::close(u);
    if (tcp_free) return ntohs(sa.sin_port);
  }
}

struct dnsmasq {
  pid_t pid = -1;
  std::uint16_t port = 0;
  std::string dir;

  bool start() {
    const char* bin = nullptr;
    for (const char* p : {"/usr/sbin/dnsmasq", "/usr/bin/dnsmasq"})
      if (::access(p, X_OK) == 0) bin = p;
    if (!bin) {
      std::fprintf(stderr,
                   "resolver_bench: dnsmasq is missing (tools/dev installs dnsmasq-base)\n");
      return false;
    }
    char tmpl[] = "/tmp/squall-bench-dns-XXXXXX";
    dir = ::mkdtemp(tmpl);
    ::chmod(dir.c_str(), 0755);
    std::ofstream(dir + "/hosts") << "127.0.0.9 bench.test\n::9 bench.test\n";
    ::chmod((dir + "/hosts").c_str(), 0644);
    port = free_port();
    std::vector<std::string> args = {"dnsmasq",
                                     "--no-daemon",
                                     "--port=" + std::to_string(port),
                                     "--listen-address=127.0.0.1",
                                     "--bind-interfaces",
                                     "--no-resolv",
                                     "--no-hosts",
                                     "--addn-hosts=" + dir + "/hosts",
                                     "--local=/test/",
                                     "--local-ttl=60",
                                     "--conf-file=/dev/null",
                                     "--pid-file=" + dir + "/pid",
                                     "--log-facility=/dev/null"};
    pid = ::fork();
    if (pid == 0) {
      int null = ::open("/dev/null", O_WRONLY);
      ::dup2(null, 1);
      ::dup2(null, 2);
      std::vector<char*> argv;
      for (auto& a : args)
        argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(bin, argv.data());
      ::_exit(127);
    }
    return true;
  }
  ~dnsmasq() {
    if (pid > 0) {
      ::kill(pid, SIGTERM);
      ::waitpid(pid, nullptr, 0);
    }
    if (!dir.empty()) {
      ::unlink((dir + "/hosts").c_str());
      ::unlink((dir + "/pid").c_str());
      ::rmdir(dir.c_str());
    }
  }
};

// CPU seconds (user + system) used so far by process `pid` (0: this process).
double cpu_seconds(pid_t pid) {
  std::string path = pid ? "/proc/" + std::to_string(pid) + "/stat" : "/proc/self/stat";
  std::ifstream in(path);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto close = text.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream fields(text.substr(close + 2));
  std::string skip;
  for (int i = 0; i < 11; ++i)
    fields >> skip;  // state .. cmajflt: fields 3-13
  double utime = 0, stime = 0;
  fields >> utime >> stime;
  return (utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

// The kernel's UDP RcvbufErrors counter (datagrams dropped for a full socket buffer), from
// /proc/net/snmp; system-wide, so other UDP traffic on the machine counts too.
long udp_rcvbuf_errors() {
  std::ifstream in("/proc/net/snmp");
  std::string names, values;
  while (std::getline(in, names)) {
    if (names.rfind("Udp:", 0) != 0) continue;
    std::getline(in, values);
    std::istringstream n(names), v(values);
    std::string name, value;
    while (n >> name && v >> value)
      if (name == "RcvbufErrors") return std::atol(value.c_str());
  }
  return 0;
}

// Pins process (or thread) `pid` (0: the calling thread) to CPU `cpu`.
void pin(pid_t pid, int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (::sched_setaffinity(pid, sizeof set, &set) != 0) std::perror("resolver_bench: pin");
}

// Runs perf/dns_flood (next to this binary) against dnsmasq; returns its output line.
std::string run_flood(const char* self, std::uint16_t port, double seconds, int queries,
                      pid_t dns_pid, bool pinned) {
  std::string bin = self;
  auto slash = bin.rfind('/');
  bin = (slash == std::string::npos ? std::string(".") : bin.substr(0, slash)) + "/dns_flood";
  std::string cmd = bin + " 127.0.0.1:" + std::to_string(port) + " " + std::to_string(seconds) +
                    " " + std::to_string(queries) + " 4 bench.test " + std::to_string(dns_pid);
  if (pinned) cmd = "taskset -c 1 " + cmd;  // inherits our CPU 1 anyway; explicit for ps
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return "cannot run " + bin;
  std::string out;
  char buf[512];
  while (std::fgets(buf, sizeof buf, p))
    out += buf;
  int rc = ::pclose(p);
  if (rc != 0 || out.empty()) return "dns_flood failed (" + bin + ")";
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

// One figure of dns_flood's output line ("... queries/s 123 ...").
double field(const std::string& line, const std::string& name) {
  auto at = line.find(name + " ");
  return at == std::string::npos ? 0 : std::atof(line.c_str() + at + name.size() + 1);
}

// Runs `in_flight` fibers calling `one()` until `seconds` pass; returns lookups per second.
template <class F>
double run_side(squall::io_loop& loop, int in_flight, double seconds, F one, long& failures) {
  long done = 0;
  bool stop = false;
  failures = 0;
  std::vector<squall::fiber<void>> fibers;
  for (int i = 0; i < in_flight; ++i)
    fibers.push_back(squall::spawn(loop, [&] {
      while (!stop) {
        try {
          one();
          ++done;
        } catch (const std::exception& e) {
          if (++failures == 1) std::fprintf(stderr, "first failure: %s\n", e.what());
        }
      }
    }));
  auto start = squall::clock::now();
  auto end =
      start + std::chrono::duration_cast<squall::duration>(std::chrono::duration<double>(seconds));
  while (squall::clock::now() < end)
    loop.run_once(std::chrono::milliseconds(10));
  long counted = done;
  double elapsed = std::chrono::duration<double>(squall::clock::now() - start).count();
  stop = true;
  for (auto& f : fibers)
    while (!f.done())
      loop.run_once(std::chrono::milliseconds(10));
  return static_cast<double>(counted) / elapsed;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<const char*> pos;
  bool flood = false, pinned = false;
  int flood_queries = 128;
  std::string only;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--flood") == 0) {
      flood = true;
    } else if (std::strncmp(argv[i], "--flood=", 8) == 0) {
      flood = true;
      flood_queries = std::max(1, std::atoi(argv[i] + 8));
    } else if (std::strcmp(argv[i], "--pin") == 0) {
      pinned = true;
    } else if (std::strncmp(argv[i], "--only=", 7) == 0) {
      only = argv[i] + 7;
      flood = flood || only == "flood";
    } else if (argv[i][0] == '-') {
      std::fprintf(stderr,
                   "usage: resolver_bench [seconds] [in flight] [pool threads] "
                   "[--flood[=QUERIES]] [--pin] [--only=squall|gai|flood]\n");
      return 2;
    } else {
      pos.push_back(argv[i]);
    }
  }
  double seconds = pos.size() > 0 ? std::atof(pos[0]) : 3.0;
  int in_flight = pos.size() > 1 ? std::atoi(pos[1]) : 1000;
  unsigned threads = pos.size() > 2 ? static_cast<unsigned>(std::atoi(pos[2])) : 4;
  bool run_squall = only.empty() || only == "squall";
  bool run_gai = only.empty() || only == "gai";

  if (pinned) pin(0, 1);  // before the pool starts: its threads inherit CPU 1
  dnsmasq dns;
  if (!dns.start()) return 1;
  if (pinned) pin(dns.pid, 0);
  std::string server = "127.0.0.1:" + std::to_string(dns.port);

  squall::io_loop loop({.executor_threads = threads});
  squall::resolver_options opts;
  opts.servers = {server};
  opts.search = std::vector<std::string>{};
  opts.timeout = std::chrono::milliseconds(500);
  squall::resolver r(loop, opts);

  // getaddrinfo, pointed at dnsmasq through this pool thread's resolver state.
  std::uint16_t port = dns.port;
  auto gai = [port] {
    thread_local bool configured = false;
    if (!configured) {
      res_init();
      _res.nscount = 1;
      _res.nsaddr_list[0].sin_family = AF_INET;
      _res.nsaddr_list[0].sin_port = htons(port);
      _res.nsaddr_list[0].sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      _res.ndots = 1;
      _res.dnsrch[0] = nullptr;
      configured = true;
    }
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    int rc = ::getaddrinfo("bench.test", nullptr, &hints, &res);
    if (rc != 0) throw std::runtime_error(std::string("getaddrinfo: ") + ::gai_strerror(rc));
    ::freeaddrinfo(res);
  };

  // Wait for dnsmasq, then warm up (and check that both sides get answers).
  long failures = 0;
  bool up = false;
  for (int i = 0; i < 100 && !up; ++i) {
    try {
      squall::run_sync(loop, [&] { r.resolve("bench.test", 80); });
      up = true;
    } catch (const std::exception&) {
      ::usleep(50000);
    }
  }
  run_side(
      loop, 10, 0.2, [&] { r.resolve("bench.test", 80); }, failures);
  long gai_failures = 0;
  if (run_gai)
    run_side(
        loop, 10, 0.2, [&] { squall::this_fiber::run_in_executor(gai); }, gai_failures);
  if (failures || gai_failures) {
    std::fprintf(stderr, "resolver_bench: warm-up failed (squall %ld, getaddrinfo %ld)\n", failures,
                 gai_failures);
    return 1;
  }

  double load = 0;
  std::ifstream("/proc/loadavg") >> load;  // other work on the machine skews every figure
  std::printf(
      "resolver_bench: %d lookups in flight, %.1f s per side, dnsmasq on %s (%s)%s; load "
      "average %.2f\n",
      in_flight, seconds, server.c_str(), loop.backend_name(),
      pinned ? ", dnsmasq pinned to CPU 0, the bench to CPU 1" : "", load);
  double squall_rate = 0, gai_rate = 0, flood_rate = 0;
  if (run_squall) {
    double cpu0 = cpu_seconds(0), dns0 = cpu_seconds(dns.pid);
    long drops0 = udp_rcvbuf_errors();
    squall_rate = run_side(
        loop, in_flight, seconds, [&] { r.resolve("bench.test", 80); }, failures);
    std::printf(
        "  squall resolver (c-ares, 1 thread)   %10.0f lookups/s  (%ld failed)  CPU s: bench %.2f, "
        "dnsmasq %.2f; drops %ld; %.1f us CPU/lookup\n",
        squall_rate, failures, cpu_seconds(0) - cpu0, cpu_seconds(dns.pid) - dns0,
        udp_rcvbuf_errors() - drops0, (cpu_seconds(0) - cpu0) * 1e6 / (squall_rate * seconds));
  }
  if (run_gai) {
    double cpu0 = cpu_seconds(0), dns0 = cpu_seconds(dns.pid);
    long drops0 = udp_rcvbuf_errors();
    gai_rate = run_side(
        loop, in_flight, seconds, [&] { squall::this_fiber::run_in_executor(gai); }, failures);
    std::printf(
        "  getaddrinfo on %2u pool threads       %10.0f lookups/s  (%ld failed)  CPU s: bench "
        "%.2f, "
        "dnsmasq %.2f; drops %ld\n",
        threads, gai_rate, failures, cpu_seconds(0) - cpu0, cpu_seconds(dns.pid) - dns0,
        udp_rcvbuf_errors() - drops0);
  }
  if (flood) {
    long drops0 = udp_rcvbuf_errors();
    std::string line = run_flood(argv[0], dns.port, seconds, flood_queries, dns.pid, pinned);
    flood_rate = field(line, "lookups/s");
    if (flood_rate > 0) {
      std::printf(
          "  ceiling: dns_flood, %5d queries      %10.0f lookups/s  (%.0f queries/s)  CPU s: "
          "client %.2f, dnsmasq %.2f; drops %ld\n",
          flood_queries, flood_rate, field(line, "queries/s"), field(line, "cpu_client"),
          field(line, "cpu_server"), udp_rcvbuf_errors() - drops0);
    } else {
      std::printf("  ceiling: %s\n", line.c_str());
    }
  }
  if (run_squall && run_gai)
    std::printf("  ratio                                %10.2fx\n", squall_rate / gai_rate);
  if (flood_rate > 0 && run_squall)
    std::printf("  squall / ceiling                     %10.2f\n", squall_rate / flood_rate);
  if (flood_rate > 0 && run_gai)
    std::printf("  ceiling / getaddrinfo (the best ratio possible here) %.2fx\n",
                flood_rate / gai_rate);
  return 0;
}
