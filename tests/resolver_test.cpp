// SPDX-License-Identifier: MIT
// The resolver against a real dnsmasq on loopback (started here, on a port of its own), and
// against a scripted DNS server in a fiber for what dnsmasq will not do: SERVFAIL, silence,
// truncation (then TCP), CNAME chains. Nothing here leaves 127.0.0.0/8 or ::1.
#include "squall/resolver.hpp"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "squall/locks.hpp"
#include "squall/tcp_client.hpp"
#include "squall/tcp_server.hpp"
#include "squall/udp.hpp"
#include "test_util.hpp"

using namespace std::chrono_literals;
using squall::address;
using squall::io_loop;
using squall::resolver;
using squall::resolver_options;
using squall::run_sync;
using squall::spawn;
namespace this_fiber = squall::this_fiber;

namespace squall::detail {
// lib/resolver.cpp: the hosts file resolvers read, and how often they check it for changes.
void set_hosts_file(std::string path, squall::duration recheck);
}  // namespace squall::detail

namespace {

std::system_error error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const std::system_error& e) {
    return e;
  }
  return std::system_error(std::error_code(), "no error");
}

std::vector<std::string> hosts_of(const std::vector<address>& v) {
  std::vector<std::string> out;
  for (const auto& a : v)
    out.push_back(a.host());
  return out;
}

// A UDP/TCP port on 127.0.0.1 that nothing listens on right now.
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

// --- dnsmasq, one per test process ----------------------------------------------------------

const char* find_dnsmasq() {
  for (const char* p : {"/usr/sbin/dnsmasq", "/usr/bin/dnsmasq", "/sbin/dnsmasq"})
    if (::access(p, X_OK) == 0) return p;
  return nullptr;
}

// Names under .test are answered from our hosts file only (--local), so a name missing there is
// NXDOMAIN and nothing is forwarded anywhere (--no-resolv: there is nowhere to forward to).
const char* const hosts_text =
    "127.0.0.1 www.test dual.test echo.test\n"
    "::1 dual.test echo.test\n"
    "127.0.0.3 v4only.test\n"
    "::3 v6only.test\n"
    "127.0.0.9 bench.test\n";

class dnsmasq {
 public:
  dnsmasq() {
    const char* bin = find_dnsmasq();
    if (!bin) {
      error_ = "dnsmasq is not installed: tools/dev installs it (Debian package dnsmasq-base)";
      return;
    }
    char tmpl[] = "/tmp/squall-dnsmasq-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    ::chmod(dir_.c_str(), 0755);  // dnsmasq drops root for nobody before reading the hosts file
    std::ofstream(dir_ + "/hosts") << hosts_text;
    ::chmod((dir_ + "/hosts").c_str(), 0644);
    port_ = free_port();
    std::vector<std::string> args = {
        "dnsmasq",
        "--no-daemon",
        "--port=" + std::to_string(port_),
        "--listen-address=127.0.0.1",
        "--bind-interfaces",
        "--no-resolv",
        "--no-hosts",
        "--addn-hosts=" + dir_ + "/hosts",
        "--local=/test/",
        "--local-ttl=60",
        "--conf-file=/dev/null",
        "--pid-file=" + dir_ + "/pid",
        "--log-facility=" + dir_ + "/log",
    };
    pid_ = ::fork();
    if (pid_ == 0) {
      int out = ::open((dir_ + "/out").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ::dup2(out, 1);
      ::dup2(out, 2);
      std::vector<char*> argv;
      for (auto& a : args)
        argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(bin, argv.data());
      ::_exit(127);
    }
    wait_ready();
  }
  ~dnsmasq() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      ::waitpid(pid_, nullptr, 0);
    }
    if (!dir_.empty()) {
      for (const char* f : {"/hosts", "/pid", "/log", "/out"})
        ::unlink((dir_ + f).c_str());
      ::rmdir(dir_.c_str());
    }
  }

  const std::string& error() const { return error_; }
  std::string server() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  // Asks for www.test over plain UDP until dnsmasq answers (or has died).
  void wait_ready() {
    int s = ::socket(AF_INET, SOCK_DGRAM, 0);
    timeval tv{0, 50000};
    ::setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port_);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const unsigned char query[] = {0x12, 0x34, 1,   0, 0,   1,   0,   0,   0, 0, 0, 0, 3,
                                   'w',  'w',  'w', 4, 't', 'e', 's', 't', 0, 0, 1, 0, 1};
    for (int i = 0; i < 200; ++i) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        std::ifstream out(dir_ + "/out");
        std::stringstream text;
        text << out.rdbuf();
        error_ = "dnsmasq exited at start: " + text.str();
        break;
      }
      ::sendto(s, query, sizeof query, 0, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
      unsigned char reply[512];
      if (::recv(s, reply, sizeof reply, 0) > 0) break;
      if (i == 199) error_ = "dnsmasq did not answer within 10 s";
    }
    ::close(s);
  }

  std::string dir_;
  std::string error_;
  std::uint16_t port_ = 0;
  pid_t pid_ = -1;
};

dnsmasq& the_dnsmasq() {
  static dnsmasq d;
  REQUIRE_MESSAGE(d.error().empty(), d.error());
  return d;
}

resolver_options dnsmasq_options() {
  resolver_options o;
  o.servers = {the_dnsmasq().server()};
  o.search = std::vector<std::string>{};  // hermetic: the machine's search list is not ours
  o.timeout = 500ms;
  o.tries = 3;
  return o;
}

// --- A scripted DNS server ------------------------------------------------------------------

struct dns_query {
  std::uint16_t id = 0;
  std::string name;  // lower case, no trailing dot
  std::uint16_t type = 0;
  std::vector<std::uint8_t> question;  // the question section as received
};

constexpr std::uint16_t type_a = 1, type_cname = 5, type_aaaa = 28;

bool parse_query(const std::uint8_t* p, std::size_t n, dns_query& q) {
  if (n < 12) return false;
  q.id = static_cast<std::uint16_t>(p[0] << 8 | p[1]);
  std::size_t i = 12;
  q.name.clear();
  while (i < n && p[i] != 0) {
    std::size_t len = p[i++];
    if (i + len > n) return false;
    if (!q.name.empty()) q.name += '.';
    for (std::size_t k = 0; k < len; ++k)
      q.name += static_cast<char>(std::tolower(p[i + k]));
    i += len;
  }
  if (i + 5 > n) return false;
  q.type = static_cast<std::uint16_t>(p[i + 1] << 8 | p[i + 2]);
  q.question.assign(p + 12, p + i + 5);
  return true;
}

void put16(std::vector<std::uint8_t>& b, unsigned v) {
  b.push_back(static_cast<std::uint8_t>(v >> 8));
  b.push_back(static_cast<std::uint8_t>(v));
}

void put_name(std::vector<std::uint8_t>& b, const std::string& name) {
  std::size_t start = 0;
  while (start < name.size()) {
    std::size_t dot = name.find('.', start);
    if (dot == std::string::npos) dot = name.size();
    b.push_back(static_cast<std::uint8_t>(dot - start));
    b.insert(b.end(), name.begin() + static_cast<long>(start),
             name.begin() + static_cast<long>(dot));
    start = dot + 1;
  }
  b.push_back(0);
}

struct record {
  std::string name;
  std::uint16_t type;
  std::vector<std::uint8_t> data;
  std::uint32_t ttl = 60;
};

record a_record(const std::string& name, const char* ip, std::uint32_t ttl = 60) {
  auto a = address::ip(ip, 0);
  sockaddr_in v4;
  std::memcpy(&v4, a.data(), sizeof v4);
  auto* b = reinterpret_cast<const std::uint8_t*>(&v4.sin_addr);
  return {name, type_a, {b, b + 4}, ttl};
}

record aaaa_record(const std::string& name, const char* ip, std::uint32_t ttl = 60) {
  auto a = address::ip(ip, 0);
  sockaddr_in6 v6;
  std::memcpy(&v6, a.data(), sizeof v6);
  auto* b = reinterpret_cast<const std::uint8_t*>(&v6.sin6_addr);
  return {name, type_aaaa, {b, b + 16}, ttl};
}

record cname_record(const std::string& name, const std::string& target) {
  record r{name, type_cname, {}, 60};
  put_name(r.data, target);
  return r;
}

constexpr int rcode_servfail = 2, rcode_nxdomain = 3;

std::vector<std::uint8_t> reply(const dns_query& q, int rcode, const std::vector<record>& answers,
                                bool truncated = false) {
  std::vector<std::uint8_t> b;
  put16(b, q.id);
  put16(b, 0x8000 | 0x0400 | 0x0100 | 0x0080 | (truncated ? 0x0200 : 0) | rcode);
  put16(b, 1);
  put16(b, static_cast<unsigned>(answers.size()));
  put16(b, 0);
  put16(b, 0);
  b.insert(b.end(), q.question.begin(), q.question.end());
  for (const auto& r : answers) {
    put_name(b, r.name);
    put16(b, r.type);
    put16(b, 1);
    put16(b, r.ttl >> 16);
    put16(b, r.ttl & 0xffff);
    put16(b, static_cast<unsigned>(r.data.size()));
    b.insert(b.end(), r.data.begin(), r.data.end());
  }
  return b;
}

// Answers on UDP and TCP (same port) with `script(query, over_tcp)`; an empty reply is silence.
class fake_dns {
 public:
  using script_fn = std::function<std::vector<std::uint8_t>(const dns_query&, bool over_tcp)>;

  fake_dns(io_loop& loop, script_fn script) : loop_(loop), script_(std::move(script)) {
    for (;;) {
      udp_ = squall::udp_socket::bind(loop, address::ip("127.0.0.1", 0));
      port_ = udp_.local_address().port();
      tcp_ = std::make_unique<squall::tcp_server>(
          loop, [this](squall::io_stream& s, const address&) { serve_tcp(s); });
      try {
        tcp_->listen(port_, "127.0.0.1");
        break;
      } catch (const std::system_error&) {
        tcp_.reset();  // the TCP port is taken: try another
      }
    }
    udp_fiber_ = spawn(loop, [this] { serve_udp(); }, {.name = "fake dns"});
  }
  ~fake_dns() {
    for (auto& f : delayed_)
      f.cancel();
    squall::test::run_until(loop_, [&] {
      return std::all_of(delayed_.begin(), delayed_.end(), [](auto& f) { return f.done(); });
    });
    // Closing ends the fiber's wait with error::closed.
    udp_.close();
    squall::test::run_until(loop_, [&] { return udp_fiber_.done(); });
    tcp_.reset();
  }

  std::string server() const { return "127.0.0.1:" + std::to_string(port_); }
  // UDP answers to the queries `delay` returns a time for are sent that much later.
  void set_delay(std::function<squall::duration(const dns_query&)> delay) {
    delay_ = std::move(delay);
  }
  int count(const std::string& name, std::uint16_t type = 0, int over_tcp = -1) const {
    int n = 0;
    for (const auto& s : seen_)
      n += s.name == name && (type == 0 || s.type == type) &&
           (over_tcp < 0 || s.tcp == (over_tcp == 1));
    return n;
  }
  int total() const { return static_cast<int>(seen_.size()); }

 private:
  struct seen {
    std::string name;
    std::uint16_t type;
    bool tcp;
  };

  void serve_udp() {
    std::uint8_t buf[1500];
    for (;;) {
      address from;
      std::size_t n = 0;
      try {
        n = udp_.recv_from(buf, sizeof buf, &from);
      } catch (const std::system_error& e) {
        if (e.code() == squall::error::closed) return;
        throw;
      }
      dns_query q;
      if (!parse_query(buf, n, q)) continue;
      seen_.push_back({q.name, q.type, false});
      auto r = script_(q, false);
      if (r.empty()) continue;
      squall::duration later = delay_ ? delay_(q) : squall::duration::zero();
      if (later <= squall::duration::zero()) {
        udp_.send_to(r.data(), r.size(), from);
        continue;
      }
      delayed_.push_back(spawn(loop_, [this, r, from, later] {
        try {
          this_fiber::sleep_for(later);
          udp_.send_to(r.data(), r.size(), from);
        } catch (const std::system_error&) {  // cancelled with the server
        }
      }));
    }
  }

  void serve_tcp(squall::io_stream& s) {
    for (;;) {
      auto head = s.read_exactly(2);
      std::size_t len =
          static_cast<std::uint8_t>(head[0]) << 8 | static_cast<std::uint8_t>(head[1]);
      auto body = s.read_exactly(len);
      dns_query q;
      if (!parse_query(reinterpret_cast<const std::uint8_t*>(body.data()), body.size(), q)) return;
      seen_.push_back({q.name, q.type, true});
      auto r = script_(q, true);
      if (r.empty()) continue;
      std::string framed;
      framed += static_cast<char>(r.size() >> 8);
      framed += static_cast<char>(r.size() & 0xff);
      framed.append(reinterpret_cast<const char*>(r.data()), r.size());
      s.write(framed);
      s.flush();
    }
  }

  io_loop& loop_;
  script_fn script_;
  squall::udp_socket udp_;
  std::unique_ptr<squall::tcp_server> tcp_;
  squall::fiber<void> udp_fiber_;
  std::uint16_t port_ = 0;
  std::vector<seen> seen_;
  std::function<squall::duration(const dns_query&)> delay_;
  std::vector<squall::fiber<void>> delayed_;
};

resolver_options fake_options(const fake_dns& dns) {
  resolver_options o;
  o.servers = {dns.server()};
  o.search = std::vector<std::string>{};
  o.hosts_file = false;
  o.timeout = 100ms;
  o.tries = 2;
  return o;
}

}  // namespace

// --- Answered without a query ------------------------------------------------------------------

TEST_CASE("numeric addresses, localhost and bad names need no server") {
  io_loop loop;
  resolver_options o;
  o.servers = {"127.0.0.1:1"};  // nothing listens: any query would fail
  resolver r(loop, o);
  // Outside a fiber even: nothing suspends.
  CHECK(r.resolve("192.0.2.7", 80).at(0).to_string() == "192.0.2.7:80");
  CHECK(r.resolve("[2001:db8::1]", 443).at(0).to_string() == "[2001:db8::1]:443");
  CHECK(hosts_of(r.resolve("localhost", 1)) == std::vector<std::string>{"::1", "127.0.0.1"});
  CHECK(hosts_of(r.resolve("LocalHost.", 1, AF_INET)) == std::vector<std::string>{"127.0.0.1"});
  CHECK(hosts_of(r.resolve("app.localhost", 1, AF_INET6)) == std::vector<std::string>{"::1"});
  auto e = error_of([&] { r.resolve("192.0.2.7", 80, AF_INET6); });
  CHECK(e.code() == squall::error::no_data);
  for (const char* bad :
       {"", "a..b", ".a", "has space.test", "x/y", "a.b..",
        "label-longer-than-sixty-three-characters-is-not-a-valid-dns-label-x.test"}) {
    auto b = error_of([&] { r.resolve(bad, 80); });
    CHECK_MESSAGE(b.code() == squall::error::bad_name, bad);
    CHECK(std::string(b.what()).find("'" + std::string(bad) + "'") != std::string::npos);
  }
  CHECK_THROWS_AS(r.resolve("localhost", 1, AF_UNIX), std::invalid_argument);
  CHECK_THROWS_AS(resolver(loop, {.servers = {"not-an-ip"}}), std::invalid_argument);
  CHECK_THROWS_AS(resolver(loop, {.servers = {"127.0.0.1:99999"}}), std::invalid_argument);
  // A query outside a fiber is a usage error, not a hang.
  CHECK_THROWS_AS(r.resolve("www.test", 80), std::logic_error);
}

TEST_CASE("sort_for_connect: RFC 6724 precedence, unusable families last, stable otherwise") {
  auto list = [](std::initializer_list<const char*> ips) {
    std::vector<address> v;
    for (const char* ip : ips)
      v.push_back(address::ip(ip, 0));
    return v;
  };
  auto v = list({"192.0.2.1", "2001:db8::1", "::1", "127.0.0.1", "2002:c000:201::1", "fd00::1",
                 "198.51.100.1"});
  squall::sort_for_connect(v, true, true);
  CHECK(hosts_of(v) == std::vector<std::string>{"::1", "2001:db8::1", "127.0.0.1", "192.0.2.1",
                                                "198.51.100.1", "2002:c000:201::1", "fd00::1"});
  // No global IPv6 here: IPv6 destinations (but ::1) go after IPv4.
  v = list({"2001:db8::1", "192.0.2.1", "::1", "2001:db8::2"});
  squall::sort_for_connect(v, true, false);
  CHECK(hosts_of(v) == std::vector<std::string>{"::1", "192.0.2.1", "2001:db8::1", "2001:db8::2"});
}

TEST_CASE("overrides answer first, case-insensitively, with the port asked for") {
  io_loop loop;
  resolver_options o;
  o.servers = {"127.0.0.1:1"};
  o.overrides["Pinned.Test"] = {address::ip("127.0.0.5", 0), address::ip("::1", 8443)};
  o.overrides["v4.test"] = {address::ip("10.0.0.2", 0)};
  resolver r(loop, o);
  auto v = r.resolve("pinned.test.", 443);
  CHECK(hosts_of(v) == std::vector<std::string>{"::1", "127.0.0.5"});
  CHECK(v[0].port() == 8443);  // pinned
  CHECK(v[1].port() == 443);
  CHECK(error_of([&] { r.resolve("v4.test", 1, AF_INET6); }).code() == squall::error::no_data);
  r.set_override("other.test", {address::ip("10.0.0.1", 0)});
  CHECK(r.resolve("OTHER.test", 1).at(0).host() == "10.0.0.1");
  r.remove_override("other.test");
  CHECK_THROWS_AS(r.resolve("other.test", 1), std::logic_error);  // now a real query
}

// --- dnsmasq ---------------------------------------------------------------------------------

TEST_CASE("dnsmasq: A and AAAA, IPv6 first, family filter, NXDOMAIN, no data") {
  io_loop loop;
  resolver r(loop, dnsmasq_options());
  run_sync(loop, [&] {
    CHECK(hosts_of(r.resolve("www.test", 80)) == std::vector<std::string>{"127.0.0.1"});
    CHECK(hosts_of(r.resolve("DUAL.test", 80)) == std::vector<std::string>{"::1", "127.0.0.1"});
    CHECK(hosts_of(r.resolve("dual.test", 80, AF_INET)) == std::vector<std::string>{"127.0.0.1"});
    CHECK(hosts_of(r.resolve("dual.test.", 80, AF_INET6)) == std::vector<std::string>{"::1"});
    CHECK(r.resolve("v6only.test", 8080).at(0).to_string() == "[::3]:8080");

    auto nx = error_of([&] { r.resolve("nx.test", 80); });
    CHECK(nx.code() == squall::error::not_found);
    CHECK(std::string(nx.what()).find("'nx.test'") != std::string::npos);
    auto nodata = error_of([&] { r.resolve("v4only.test", 80, AF_INET6); });
    CHECK(nodata.code() == squall::error::no_data);
    CHECK(std::string(nodata.what()).find("'v4only.test'") != std::string::npos);
  });
  CHECK(r.in_flight() == 0);
  CHECK(loop.handler_count() <= r.channels());  // idle channels keep their socket open
}

TEST_CASE("dnsmasq: search domains and ndots, from options and from a resolv.conf") {
  io_loop loop;
  auto o = dnsmasq_options();
  o.search = std::vector<std::string>{"nothere.test", "test"};
  o.ndots = 1;
  resolver by_option(loop, o);
  char path[] = "/tmp/squall-resolv-XXXXXX";
  int fd = ::mkstemp(path);
  std::string conf = "search test\noptions ndots:2\n";
  CHECK(::write(fd, conf.data(), conf.size()) == static_cast<ssize_t>(conf.size()));
  ::close(fd);
  auto o2 = dnsmasq_options();
  o2.search.reset();
  o2.resolv_conf = path;
  resolver by_file(loop, o2);
  run_sync(loop, [&] {
    CHECK(hosts_of(by_option.resolve("www", 80)) == std::vector<std::string>{"127.0.0.1"});
    CHECK(hosts_of(by_file.resolve("www", 80)) == std::vector<std::string>{"127.0.0.1"});
    // One dot < ndots 2: the search list is tried first, then the name as is.
    CHECK(hosts_of(by_file.resolve("v4only.test", 80)) == std::vector<std::string>{"127.0.0.3"});
  });
  ::unlink(path);
}

TEST_CASE("/etc/hosts is honoured before DNS, and hosts_file = false skips it") {
  // A name from this machine's /etc/hosts (not localhost, which never reaches c-ares).
  std::ifstream in("/etc/hosts");
  std::string line, name, ip;
  while (name.empty() && std::getline(in, line)) {
    std::istringstream fields(line.substr(0, line.find('#')));
    std::string addr, host;
    fields >> addr;
    while (fields >> host)
      if (host.find("localhost") == std::string::npos && address::parse_ip(addr, 0)) {
        name = host;
        ip = address::ip(addr, 0).host();
        break;
      }
  }
  if (name.empty()) {
    MESSAGE("/etc/hosts has no name but localhost here; nothing to check");
    return;
  }
  io_loop loop;
  resolver_options o;
  o.servers = {"127.0.0.1:" + std::to_string(free_port())};  // nobody there
  o.search = std::vector<std::string>{};
  o.timeout = 200ms;
  o.tries = 2;  // with 1, c-ares 1.18 waits out the timeout instead of seeing the refusal
  resolver r(loop, o);
  o.hosts_file = false;
  resolver dns_only(loop, o);
  run_sync(loop, [&] {
    auto v = r.resolve(name, 22, address::ip(ip, 0).family());
    CHECK(hosts_of(v) == std::vector<std::string>{ip});
    auto e = error_of([&] { dns_only.resolve(name, 22); });
    CHECK(e.code() == std::errc::connection_refused);  // it went to the (absent) server
    CHECK(std::string(e.what()).find(o.servers[0]) != std::string::npos);
  });
}

TEST_CASE("tcp_connect by name resolves and races the addresses") {
  io_loop loop;
  set_resolver_options(loop, dnsmasq_options());
  squall::tcp_server server(loop, [](squall::io_stream& s, const address&) { s.write("hello"); });
  server.listen(0, "localhost");
  std::uint16_t port = server.addresses().at(0).port();
  run_sync(loop, [&] {
    squall::io_stream c = squall::tcp_connect("echo.test", port);
    CHECK(c.read_exactly(5) == "hello");
    squall::io_stream n = squall::tcp_connect("127.0.0.1", port);  // numeric: no lookup
    CHECK(n.read_exactly(5) == "hello");
    auto e = error_of([&] { squall::tcp_connect("nx.test", port); });
    CHECK(e.code() == squall::error::not_found);
    CHECK(std::string(e.what()).find("nx.test") != std::string::npos);
  });
}

TEST_CASE("1,000 lookups in flight from 1,000 fibers, and the loop stays responsive") {
  io_loop loop;
  auto o = dnsmasq_options();
  o.timeout = 200ms;  // a query dropped in a burst is asked again soon
  o.tries = 5;
  resolver r(loop, o);
  const int n = 1000;
  int ok = 0, failed = 0;
  std::vector<squall::fiber<void>> fibers;
  for (int i = 0; i < n; ++i)
    fibers.push_back(spawn(loop, [&, i] {
      try {
        auto v = r.resolve(i % 2 ? "dual.test" : "www.test", 80);
        ok += !v.empty();
      } catch (const std::exception& e) {
        if (++failed == 1) MESSAGE(e.what());
      }
    }));
  // A timer that must keep firing while the lookups are in flight.
  int ticks = 0;
  squall::duration worst_gap{};
  auto last = io_loop::now();
  std::size_t peak = 0;
  std::function<void()> tick = [&] {
    auto now = io_loop::now();
    // From the first tick on: before it, the loop was still starting the 1,000 fibers.
    if (ticks > 0) worst_gap = std::max(worst_gap, now - last);
    last = now;
    ++ticks;
    peak = std::max(peak, r.in_flight());
    if (ok + failed < n) loop.call_later(2ms, tick);
  };
  loop.call_later(2ms, tick);
  auto start = io_loop::now();
  CHECK(squall::test::run_until(
      loop, [&] { return ok + failed == n; }, 30s));
  auto took = io_loop::now() - start;
  MESSAGE(n << " lookups in " << std::chrono::duration<double, std::milli>(took).count() << " ms, "
            << ticks << " ticks, worst gap "
            << std::chrono::duration<double, std::milli>(worst_gap).count() << " ms, peak " << peak
            << " in flight, " << r.channels() << " channels");
  CHECK(ok == n);
  CHECK(failed == 0);
  CHECK(peak > n / 2);  // they really were in flight together
  CHECK(ticks > 0);
  CHECK(worst_gap < 500ms);
  CHECK(r.channels() <= 64);  // the pool keeps max_idle_channels
  CHECK(loop.handler_count() <= r.channels());
}

// --- The scripted server -----------------------------------------------------------------------

TEST_CASE("SERVFAIL is server_failure, naming the host and the server") {
  io_loop loop;
  fake_dns dns(loop, [](const dns_query& q, bool) { return reply(q, rcode_servfail, {}); });
  resolver r(loop, fake_options(dns));
  run_sync(loop, [&] {
    auto e = error_of([&] { r.resolve("broken.test", 80); });
    CHECK(e.code() == squall::error::server_failure);
    CHECK(std::string(e.what()).find("'broken.test'") != std::string::npos);
    CHECK(std::string(e.what()).find(dns.server()) != std::string::npos);
  });
}

TEST_CASE("no answer: retried, then timed_out naming the server") {
  io_loop loop;
  // Silent on the first try of each question, answers the second.
  std::map<std::pair<std::string, int>, int> asked;
  fake_dns dns(loop, [&](const dns_query& q, bool) -> std::vector<std::uint8_t> {
    if (q.name == "silent.test") return {};
    if (++asked[{q.name, q.type}] == 1) return {};
    if (q.type == type_a) return reply(q, 0, {a_record(q.name, "10.0.0.7")});
    return reply(q, 0, {});
  });
  resolver r(loop, fake_options(dns));
  run_sync(loop, [&] {
    CHECK(hosts_of(r.resolve("late.test", 80)) == std::vector<std::string>{"10.0.0.7"});
    CHECK(dns.count("late.test", type_a) == 2);

    auto start = io_loop::now();
    auto e = error_of([&] { r.resolve("silent.test", 80); });
    auto took = io_loop::now() - start;
    CHECK(e.code() == squall::error::timed_out);
    CHECK(std::string(e.what()).find("'silent.test'") != std::string::npos);
    CHECK(std::string(e.what()).find(dns.server()) != std::string::npos);
    CHECK(dns.count("silent.test", type_a) == 2);  // tries = 2
    CHECK(took >= 100ms);
    CHECK(took < 2s);
  });
  CHECK(loop.handler_count() == r.channels());  // one idle channel, its socket still open
}

TEST_CASE("a truncated UDP answer is asked again over TCP") {
  io_loop loop;
  fake_dns dns(loop, [](const dns_query& q, bool tcp) {
    if (!tcp) return reply(q, 0, {}, /*truncated=*/true);
    if (q.type == type_aaaa) return reply(q, 0, {aaaa_record(q.name, "2001:db8::5")});
    return reply(q, 0, {a_record(q.name, "10.0.0.5")});
  });
  resolver r(loop, fake_options(dns));
  run_sync(loop, [&] {
    auto v = r.resolve("big.test", 80);
    std::sort(v.begin(), v.end(), [](auto& a, auto& b) { return a.family() < b.family(); });
    CHECK(hosts_of(v) == std::vector<std::string>{"10.0.0.5", "2001:db8::5"});
    CHECK(dns.count("big.test", 0, /*over_tcp=*/0) == 2);
    CHECK(dns.count("big.test", 0, /*over_tcp=*/1) == 2);
  });
}

TEST_CASE("CNAME chains are followed to the address") {
  io_loop loop;
  fake_dns dns(loop, [](const dns_query& q, bool) {
    std::vector<record> chain = {cname_record(q.name, "b.chain.test"),
                                 cname_record("b.chain.test", "c.chain.test")};
    if (q.type == type_a) chain.push_back(a_record("c.chain.test", "10.0.0.9"));
    return reply(q, 0, chain);
  });
  resolver r(loop, fake_options(dns));
  run_sync(loop, [&] {
    CHECK(hosts_of(r.resolve("a.chain.test", 80)) == std::vector<std::string>{"10.0.0.9"});
    auto e = error_of([&] { r.resolve("a.chain.test", 80, AF_INET6); });
    CHECK(e.code() == squall::error::no_data);
  });
}

TEST_CASE("NXDOMAIN from the server is not_found") {
  io_loop loop;
  fake_dns dns(loop, [](const dns_query& q, bool) { return reply(q, rcode_nxdomain, {}); });
  resolver r(loop, fake_options(dns));
  run_sync(loop, [&] {
    CHECK(error_of([&] { r.resolve("gone.test", 80); }).code() == squall::error::not_found);
  });
}

TEST_CASE("a deadline or a cancel cancels the c-ares query; the stack is never touched after") {
  io_loop loop;
  fake_dns dns(loop, [](const dns_query&, bool) { return std::vector<std::uint8_t>{}; });
  auto o = fake_options(dns);
  o.timeout = 50ms;
  o.tries = 10;
  resolver r(loop, o);
  run_sync(loop, [&] {
    auto e = error_of([&] { r.resolve("slow.test", 80, AF_UNSPEC, io_loop::now() + 30ms); });
    CHECK(e.code() == squall::error::timed_out);
    CHECK(std::string(e.what()).find(dns.server()) != std::string::npos);
    int asked = dns.total();
    this_fiber::sleep_for(150ms);  // c-ares would have retried by now had the query lived on
    CHECK(dns.total() == asked);
    CHECK(r.in_flight() == 0);

    // Cancel from another fiber, and with a deadline_scope.
    auto f = spawn(loop, [&] { r.resolve("slow.test", 80); });
    this_fiber::sleep_for(10ms);
    CHECK(r.in_flight() == 1);
    f.cancel();
    CHECK(error_of([&] { f.join(); }).code() == squall::error::cancelled);
    CHECK(r.in_flight() == 0);
    CHECK(error_of([&] {
            squall::with_timeout(20ms, [&] { return r.resolve("slow.test", 80); });
          }).code() == squall::error::timed_out);
  });
  CHECK(r.in_flight() == 0);
  CHECK(r.channels() == 1);        // the cancelled lookups gave their channel back
  CHECK(loop.timer_count() == 0);  // and c-ares has no timeout pending
}

TEST_CASE("destroying the resolver cancels lookups in flight") {
  io_loop loop;
  fake_dns dns(loop, [](const dns_query&, bool) { return std::vector<std::uint8_t>{}; });
  auto r = std::make_unique<resolver>(loop, fake_options(dns));
  auto f = spawn(loop, [&] { r->resolve("slow.test", 80); });
  squall::test::run_until(loop, [&] { return r->in_flight() == 1; });
  r.reset();
  CHECK(squall::test::run_until(loop, [&] { return f.done(); }));
  CHECK(error_of([&] { f.join(); }).code() == squall::error::cancelled);
  CHECK(loop.handler_count() == 0);
}

TEST_CASE("the cache keeps answers for their TTL, bounded, and is off by default") {
  io_loop loop;
  fake_dns dns(loop, [](const dns_query& q, bool) {
    std::uint32_t ttl = q.name == "short.test" ? 0 : 60;
    if (q.type == type_a) return reply(q, 0, {a_record(q.name, "10.0.0.1", ttl)});
    return reply(q, 0, {});
  });
  auto o = fake_options(dns);
  resolver uncached(loop, o);
  o.cache_size = 2;
  o.cache_max_ttl = 200ms;
  resolver cached(loop, o);
  run_sync(loop, [&] {
    uncached.resolve("one.test", 80);
    uncached.resolve("one.test", 80);
    CHECK(dns.count("one.test", type_a) == 2);
    CHECK(uncached.cache_entries() == 0);

    cached.resolve("one.test", 80);
    CHECK(cached.resolve("ONE.test", 81).at(0).to_string() == "10.0.0.1:81");
    CHECK(dns.count("one.test", type_a) == 3);  // the second came from the cache
    cached.resolve("short.test", 80);           // TTL 0: not kept
    cached.resolve("short.test", 80);
    CHECK(dns.count("short.test", type_a) == 2);
    cached.resolve("two.test", 80);
    cached.resolve("three.test", 80);
    CHECK(cached.cache_entries() == 2);  // bounded; one.test was the least recently used
    cached.resolve("one.test", 80);
    CHECK(dns.count("one.test", type_a) == 4);
    this_fiber::sleep_for(250ms);  // past cache_max_ttl
    cached.resolve("one.test", 80);
    CHECK(dns.count("one.test", type_a) == 5);
    cached.clear_cache();
    CHECK(cached.cache_entries() == 0);
  });
}

TEST_CASE("getaddrinfo on the thread pool, chosen by option") {
  io_loop loop;
  resolver_options o;
  o.use_getaddrinfo = true;
  resolver r(loop, o);
  CHECK(r.servers() == "the system resolver");
  run_sync(loop, [&] {
    // Only names answered without a query: this test must not reach the machine's DNS.
    CHECK(hosts_of(r.resolve("localhost", 80)) == std::vector<std::string>{"::1", "127.0.0.1"});
    CHECK(error_of([&] { r.resolve("bad..name", 80); }).code() == squall::error::bad_name);
    std::ifstream in("/etc/hosts");
    std::string line;
    while (std::getline(in, line)) {
      std::istringstream fields(line.substr(0, line.find('#')));
      std::string addr, host;
      if (!(fields >> addr >> host) || host.find("localhost") != std::string::npos) continue;
      auto a = address::parse_ip(addr, 0);
      if (!a) continue;
      auto v = r.resolve(host, 22, a->family());
      CHECK(std::find(v.begin(), v.end(), address::ip(addr, 22)) != v.end());
      break;
    }
  });
}

// --- One channel for many lookups; the wire limit; the hosts file; the search list -----------

TEST_CASE("lookups share a channel; a cancelled one sends nothing more, the others go on") {
  io_loop loop;
  fake_dns dns(loop, [](const dns_query& q, bool) -> std::vector<std::uint8_t> {
    if (q.name.rfind("silent", 0) == 0) return {};
    if (q.type == type_a) return reply(q, 0, {a_record(q.name, "10.0.0.1")});
    return reply(q, 0, {});
  });
  auto o = fake_options(dns);
  o.timeout = 50ms;  // tries at 0, 50, 150, 350 ms... (c-ares doubles the timeout each round)
  o.tries = 10;
  resolver r(loop, o);
  run_sync(loop, [&] {
    auto keep = spawn(loop, [&] { r.resolve("silent-a.test", 80, AF_INET); });
    auto gone =
        spawn(loop, [&] { r.resolve("silent-b.test", 80, AF_INET, io_loop::now() + 30ms); });
    this_fiber::sleep_for(10ms);
    CHECK(r.in_flight() == 2);
    CHECK(r.channels() == 1);  // both on the one channel
    CHECK(error_of([&] { gone.join(); }).code() == squall::error::timed_out);
    int b = dns.count("silent-b.test"), a = dns.count("silent-a.test");
    CHECK(b == 1);
    this_fiber::sleep_for(200ms);
    CHECK(dns.count("silent-b.test") == b);  // its retries were never sent
    CHECK(dns.count("silent-a.test") > a);   // the other lookup's were
    CHECK(r.in_flight() == 1);
    // The channel holding the cancelled query takes no new lookup: this one gets another.
    CHECK(hosts_of(r.resolve("ok.test", 80)) == std::vector<std::string>{"10.0.0.1"});
    CHECK(r.channels() == 2);
    keep.cancel();
    CHECK(error_of([&] { keep.join(); }).code() == squall::error::cancelled);
    CHECK(r.in_flight() == 0);
    int after = dns.total();
    this_fiber::sleep_for(150ms);
    CHECK(dns.total() == after);  // nothing at all is retried now
  });
  CHECK(loop.timer_count() == 0);  // and c-ares has no query left, cancelled one included
  CHECK(loop.handler_count() <= r.channels());
}

TEST_CASE("a truncated answer to a cancelled lookup does not send it again over TCP") {
  io_loop loop;
  fake_dns dns(loop, [](const dns_query& q, bool tcp) -> std::vector<std::uint8_t> {
    if (q.name == "silent.test") return {};
    if (!tcp) return reply(q, 0, {}, /*truncated=*/true);
    return reply(q, 0, {a_record(q.name, "10.0.0.5")});
  });
  dns.set_delay([](const dns_query& q) { return q.name == "late.test" ? 60ms : 0ms; });
  auto o = fake_options(dns);
  o.timeout = 2s;  // no UDP retry during the test
  o.tries = 1;
  resolver r(loop, o);
  run_sync(loop, [&] {
    auto keep = spawn(loop, [&] { r.resolve("silent.test", 80, AF_INET); });  // keeps it shared
    auto e = error_of([&] { r.resolve("late.test", 80, AF_INET, io_loop::now() + 20ms); });
    CHECK(e.code() == squall::error::timed_out);
    this_fiber::sleep_for(100ms);  // the truncated answer came at 60 ms
    CHECK(dns.count("late.test", 0, /*over_tcp=*/0) == 1);
    CHECK(dns.count("late.test", 0, /*over_tcp=*/1) == 0);
    // Not cancelled, the same answer does go to TCP.
    CHECK(hosts_of(r.resolve("late.test", 80, AF_INET)) == std::vector<std::string>{"10.0.0.5"});
    CHECK(dns.count("late.test", 0, /*over_tcp=*/1) == 1);
    keep.cancel();
    CHECK(error_of([&] { keep.join(); }).code() == squall::error::cancelled);
  });
  CHECK(r.in_flight() == 0);
  CHECK(loop.timer_count() == 0);
}

TEST_CASE("at most 64 lookups on the wire; the others wait in line, cancellable") {
  io_loop loop;
  fake_dns dns(loop, [](const dns_query&, bool) { return std::vector<std::uint8_t>{}; });
  auto o = fake_options(dns);
  o.timeout = 5s;  // one try each, none retried during the test
  o.tries = 1;
  auto r = std::make_unique<resolver>(loop, o);
  const int n = 100;
  std::vector<squall::fiber<void>> fibers;
  for (int i = 0; i < n; ++i)
    fibers.push_back(
        spawn(loop, [&, i] { r->resolve("q" + std::to_string(i) + ".test", 80, AF_INET); }));
  CHECK(squall::test::run_until(loop, [&] { return dns.total() >= 64; }));
  run_sync(loop, [&] {
    this_fiber::sleep_for(20ms);
    CHECK(dns.total() == 64);  // one query (A) per lookup on the wire
    CHECK(r->in_flight() == n);
    // A waiting lookup's deadline passes: it never reaches the wire.
    auto e = error_of([&] { r->resolve("extra.test", 80, AF_INET, io_loop::now() + 20ms); });
    CHECK(e.code() == squall::error::timed_out);
    CHECK(std::string(e.what()).find("'extra.test'") != std::string::npos);
    CHECK(dns.count("extra.test") == 0);
    // One on the wire is cancelled: the first in line takes its place.
    fibers[0].cancel();
    CHECK(error_of([&] { fibers[0].join(); }).code() == squall::error::cancelled);
    for (int i = 0; i < 400 && dns.total() < 65; ++i)
      this_fiber::sleep_for(5ms);
    this_fiber::sleep_for(10ms);
    CHECK(dns.total() == 65);
    CHECK(dns.count("q64.test") == 1);
    CHECK(dns.count("q65.test") == 0);
    // One in line is cancelled: it never reaches the wire either.
    fibers[99].cancel();
    CHECK(error_of([&] { fibers[99].join(); }).code() == squall::error::cancelled);
    CHECK(r->in_flight() == n - 2);
  });
  // Destroying the resolver ends them all, on the wire and in line.
  r.reset();
  CHECK(squall::test::run_until(loop, [&] {
    return std::all_of(fibers.begin(), fibers.end(), [](auto& f) { return f.done(); });
  }));
  for (int i = 1; i < n - 1; ++i)
    CHECK(error_of([&] { fibers[i].join(); }).code() == squall::error::cancelled);
  CHECK(dns.count("q99.test") == 0);
  CHECK(loop.handler_count() == 0);
}

TEST_CASE("the hosts file is read once, again when it changes, and answers without a fiber") {
  char path[] = "/tmp/squall-hosts-XXXXXX";
  ::close(::mkstemp(path));
  auto write = [&](const std::string& text) { std::ofstream(path, std::ios::trunc) << text; };
  write(
      "# comment line\n"
      "10.1.2.3 Alpha.test alias.test   # trailing comment\n"
      "::5\talpha.test\n"
      "not-an-address beta.test\n"
      "10.9.9.9\n");
  squall::detail::set_hosts_file(path, 0s);  // checked on every lookup
  struct restore {
    const char* path;
    ~restore() {
      squall::detail::set_hosts_file("/etc/hosts", 1s);
      ::unlink(path);
    }
  } restore_defaults{path};

  io_loop loop;
  resolver_options o;
  o.servers = {"127.0.0.1:" + std::to_string(free_port())};  // nobody there
  o.search = std::vector<std::string>{};
  o.timeout = 200ms;
  o.tries = 2;
  resolver r(loop, o);
  // Outside a fiber: answered from the file, no query.
  CHECK(hosts_of(r.resolve("alpha.test", 80, AF_INET)) == std::vector<std::string>{"10.1.2.3"});
  CHECK(hosts_of(r.resolve("ALPHA.TEST.", 80, AF_INET6)) == std::vector<std::string>{"::5"});
  CHECK(r.resolve("alpha.test", 80).size() == 2);
  CHECK(r.resolve("alias.test", 443, AF_INET).at(0).to_string() == "10.1.2.3:443");
  // Not in the file (or not for that family): that takes a query, so a fiber.
  CHECK_THROWS_AS(r.resolve("alias.test", 80, AF_INET6), std::logic_error);
  CHECK_THROWS_AS(r.resolve("beta.test", 80), std::logic_error);

  // Rewritten with another size: seen at once.
  write("10.4.4.4 alpha.test\n");
  CHECK(hosts_of(r.resolve("alpha.test", 80)) == std::vector<std::string>{"10.4.4.4"});
  // Same size, new mtime: seen too.
  write("10.5.5.5 alpha.test\n");
  timespec later[2] = {{0, UTIME_OMIT}, {::time(nullptr) + 100, 0}};
  REQUIRE(::utimensat(AT_FDCWD, path, later, 0) == 0);
  CHECK(hosts_of(r.resolve("alpha.test", 80)) == std::vector<std::string>{"10.5.5.5"});
  // hosts_file = false asks DNS (here: nobody).
  auto dns_only = o;
  dns_only.hosts_file = false;
  resolver r2(loop, dns_only);
  run_sync(loop, [&] {
    CHECK(error_of([&] { r2.resolve("alpha.test", 80); }).code() == std::errc::connection_refused);
  });
  // Gone: no names.
  ::unlink(path);
  CHECK_THROWS_AS(r.resolve("alpha.test", 80), std::logic_error);

  // Checked at most every `recheck`: a change within it is not seen yet.
  write("10.6.6.6 alpha.test\n");
  squall::detail::set_hosts_file(path, 1h);
  resolver r3(loop, o);
  CHECK(hosts_of(r3.resolve("alpha.test", 80)) == std::vector<std::string>{"10.6.6.6"});
  write("10.66.6.6 alpha.test\n");
  CHECK(hosts_of(r3.resolve("alpha.test", 80)) == std::vector<std::string>{"10.6.6.6"});
}

TEST_CASE("the search list: tried in order while NXDOMAIN, never for an absolute name") {
  io_loop loop;
  fake_dns dns(loop, [](const dns_query& q, bool) {
    if (q.name == "stop.corp.test") return reply(q, rcode_servfail, {});
    if (q.name != "host.corp.test") return reply(q, rcode_nxdomain, {});
    if (q.type == type_a) return reply(q, 0, {a_record(q.name, "10.0.0.8")});
    return reply(q, 0, {});
  });
  auto o = fake_options(dns);
  o.search = std::vector<std::string>{"other.test", "corp.test"};
  o.ndots = 1;
  resolver r(loop, o);
  run_sync(loop, [&] {
    // No dot (< ndots): the search list first, in order, the name as is last (not reached).
    CHECK(hosts_of(r.resolve("host", 80)) == std::vector<std::string>{"10.0.0.8"});
    CHECK(dns.count("host.other.test", type_a) == 1);
    CHECK(dns.count("host.corp.test", type_a) == 1);
    CHECK(dns.count("host", type_a) == 0);
    // Absolute: as is only.
    int before = dns.total();
    CHECK(error_of([&] { r.resolve("host.", 80); }).code() == squall::error::not_found);
    CHECK(dns.count("host", type_a) == 1);
    CHECK(dns.total() == before + 2);  // A and AAAA for "host", nothing else
    // One dot (>= ndots): as is first, then the list.
    CHECK(error_of([&] { r.resolve("a.b", 80); }).code() == squall::error::not_found);
    CHECK(dns.count("a.b", type_a) == 1);
    CHECK(dns.count("a.b.other.test", type_a) == 1);
    CHECK(dns.count("a.b.corp.test", type_a) == 1);
    // Anything but NXDOMAIN ends the walk.
    auto e = error_of([&] { r.resolve("stop", 80); });
    CHECK(e.code() == squall::error::server_failure);
    CHECK(std::string(e.what()).find("'stop'") != std::string::npos);
    CHECK(dns.count("stop", type_a) == 0);
  });
}
