// SPDX-License-Identifier: MIT
// The resolver: c-ares channels driven by the loop's fd handlers and timers.
//
// Lookups share a channel (one UDP socket per server for all of them), yet cancelling a lookup
// stops its queries. c-ares 1.18 can only cancel every query of a channel at once, so squall
// does the per-lookup part itself, in the socket functions it gives c-ares:
//
//  - Every query of a lookup is first sent from inside that lookup's own ares_getaddrinfo()
//    call: squall walks the search list itself (channels have none) and reads the hosts file
//    itself (lookups "b"), so c-ares never starts a query later on its own. The DNS ID of each
//    datagram sent while `issuing` is set therefore belongs to that lookup, and a later datagram
//    with the same ID is a retry of it.
//  - A cancelled lookup (deadline, cancel) becomes a zombie: its slot stops pointing into the
//    fiber's stack, its retries are swallowed by the send function (reported sent, never sent),
//    and a truncated answer to it is dropped before c-ares would ask again over TCP. (A query
//    already moved to TCP is not stopped; it ends with its channel's zombies, below.)
//  - A channel with a zombie takes no new lookups (it is retired); once its last live lookup
//    ends, ares_cancel() clears the zombies and the channel takes lookups again. A lookup
//    cancelled while alone on its channel is ares_cancel()led at once.
//
// Two more things keep a burst cheap: at most lookups_on_wire lookups are on the wire per
// resolver (the rest queue in squall, first come first served), and a channel's timer is kept
// at most one first-try timeout ahead instead of being recomputed per packet (ares_timeout()
// walks every query of the channel).
//
// The one thing to know: c-ares calls back (sockets, answers) only from inside our calls into
// it. Answers wake their fiber through the callback queue (wake(), not wake_now()), so no fiber
// runs, and no channel is cancelled or freed, while c-ares is on the stack.
#include "squall/resolver.hpp"

#include <ares.h>
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <list>
#include <mutex>
#include <new>
#include <sstream>
#include <stdexcept>
#include <unordered_map>

#include "squall/fiber.hpp"
#include "squall/log.hpp"

namespace squall {
namespace detail {
namespace {

// The hosts file squall reads, and how often a resolver checks it for changes.
struct hosts_file_settings {
  std::string path = "/etc/hosts";
  duration recheck = std::chrono::seconds(1);
};

hosts_file_settings& hosts_file_config() {
  static hosts_file_settings settings;
  return settings;
}

// Lookups on the wire at once per resolver (128 queries: A and AAAA); more wait in squall, first
// come first served. A local dnsmasq with the default 208 KiB socket buffer holds about 200
// queries and drops the rest, which then wait out a whole timeout (5 s by default) before c-ares
// asks again; 64 keeps a burst clear of that and still keeps such a server busy
// (perf/resolver_bench: as many lookups/s with 64 on the wire as with 128, and far more than
// with all 1,000 on it, which overflows dnsmasq's buffer).
constexpr std::size_t lookups_on_wire = 64;

struct channel;
struct query_slot;

// One lookup, on the resolving fiber's stack. The c-ares callback fills it in through its
// slot; the slot forgets it before the fiber can leave resolve().
struct lookup {
  query_slot* slot = nullptr;
  waiter* w = nullptr;  // set while the fiber is suspended and the wait not abandoned
  bool done = false;
  int status = ARES_SUCCESS;
  int timeouts = 0;
  int datagrams = 0;  // answers to its queries (see channel::refused)
  int refused = 0;    // reads on its channel that failed with ECONNREFUSED while it ran
  ares_addrinfo* result = nullptr;
};

// One ares_getaddrinfo() call: the callback's argument. Owned by the resolver, not the fiber,
// because a cancelled lookup's c-ares queries outlive its fiber (as a zombie).
struct query_slot {
  channel* chan = nullptr;
  lookup* lk = nullptr;                // null once abandoned: a zombie
  std::array<std::uint16_t, 4> ids{};  // DNS IDs of its queries (A and AAAA)
  std::size_t nids = 0;
  unsigned refused_at = 0;  // the channel's refused count when it was issued
  int datagrams = 0;
};

}  // namespace

struct resolver_impl;

namespace {

struct channel {
  resolver_impl* owner = nullptr;
  ares_channel ch = nullptr;
  std::list<channel>::iterator self;
  std::vector<std::pair<int, unsigned>> fds;  // sockets c-ares asked us to watch, and for what
  std::vector<int> stream_fds;                // its TCP sockets (not filtered)
  timer_handle timer;
  time_point timer_at = time_point::max();
  duration first_timeout = std::chrono::seconds(5);  // c-ares's timeout for a first try
  // The search list and ndots c-ares read (resolv.conf or options); squall applies them.
  std::vector<std::string> search;
  int ndots = 1;
  std::unordered_map<std::uint16_t, query_slot*> ids;  // DNS ID -> the lookup that sent it
  query_slot* issuing = nullptr;  // set during ares_getaddrinfo(): what it sends is this slot's
  std::size_t live = 0;           // slots whose fiber waits
  std::size_t zombies = 0;        // slots abandoned while their queries ran
  bool retired = false;           // has (had) zombies: takes no new lookup until cleared
  // What its sockets saw. c-ares 1.18 reports a SERVFAIL or REFUSED answer as
  // ARES_ECONNREFUSED, like a server that is not there; these tell the two apart.
  unsigned refused = 0;  // reads that failed with ECONNREFUSED (ICMP port unreachable)

  void watch(int fd, unsigned events) noexcept;
  void on_ready(int fd, unsigned got);
  void on_timer();
  void keep_timer();
  void arm(time_point at);
  void settle();
  bool is_stream(int fd) const noexcept {
    return std::find(stream_fds.begin(), stream_fds.end(), fd) != stream_fds.end();
  }
};

// The hosts file, parsed: lower-case name -> addresses, in file order.
struct hosts_table {
  struct entry {
    int family;
    std::array<unsigned char, 16> bytes;
  };
  std::unordered_map<std::string, std::vector<entry>> names;
  std::string path;
  bool loaded = false;
  time_point checked{};
  // What the file was when read: a change to any of these reloads it.
  timespec mtime{};
  off_t size = -1;
  ino_t inode = 0;
  dev_t device = 0;
};

}  // namespace

struct resolver_impl {
  io_loop& loop;
  resolver_options opts;
  std::string servers_csv;     // for ares_set_servers_ports_csv; empty: resolv.conf's
  std::string servers_text;    // for messages
  std::list<channel> chans;    // every open channel (stable addresses)
  channel* current = nullptr;  // the channel new lookups go to
  std::vector<channel*> idle;  // clear channels besides the current one
  std::unordered_map<std::string, std::vector<address>> overrides;
  std::size_t in_flight = 0;
  std::size_t on_wire = 0;  // lookups holding one of the lookups_on_wire units
  wait_list queue;          // lookups waiting for a unit
  bool closed = false;
  hosts_table hosts;

  struct cache_entry {
    std::string key;
    std::vector<address> addrs;  // port 0
    time_point expires;
  };
  std::list<cache_entry> lru;  // most recently used first
  std::unordered_map<std::string, std::list<cache_entry>::iterator> cache_index;

  time_point ifaces_checked{};
  bool ifaces_known = false;
  bool have_v4 = true;
  bool have_v6 = true;

  resolver_impl(io_loop& l, resolver_options o) : loop(l), opts(std::move(o)) {}

  channel& take_channel();
  channel& open_channel();
  void open(channel& c);
  void cleared(channel& c);
  void destroy(channel& c);
  void shutdown();
  void wait_for_wire(time_point deadline, const std::string& name);
  void leave_wire();

  std::vector<address> resolve(std::string_view host, std::uint16_t port, int family,
                               time_point deadline);
  std::vector<address> query(const std::string& name, int family, time_point deadline,
                             int& min_ttl);
  std::error_code query_one(const std::string& name, int family, time_point deadline, lookup& lk);
  std::vector<address> system_lookup(const std::string& name, int family, time_point deadline);
  bool from_hosts(const std::string& key, int family, std::vector<address>& out);
  void load_hosts();
  const std::vector<address>* cached(const std::string& key);
  void remember(const std::string& key, const std::vector<address>& addrs, int ttl);
  void refresh_interfaces();
};

namespace {

// --- Small helpers ---------------------------------------------------------------------------

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& ch : out)
    if (ch >= 'A' && ch <= 'Z') ch = static_cast<char>(ch - 'A' + 'a');
  return out;
}

// The key for overrides and the cache: lower case, without the trailing dot of an absolute name.
std::string key_of(std::string_view host) {
  if (!host.empty() && host.back() == '.') host.remove_suffix(1);
  return lower(host);
}

// "squall: resolve 'host' (why): <the code's message>"
[[noreturn]] void fail(std::error_code ec, std::string_view host, const std::string& why) {
  std::string what = "squall: resolve '" + std::string(host) + "'";
  if (!why.empty()) what += " (" + why + ")";
  throw std::system_error(ec, what);
}

// RFC 1035/1123 shape: labels of 1-63 letters, digits, '-' or '_', at most 253 characters.
bool valid_name(std::string_view host) {
  if (!host.empty() && host.back() == '.') host.remove_suffix(1);
  if (host.empty() || host.size() > 253) return false;
  std::size_t label = 0;
  for (char ch : host) {
    if (ch == '.') {
      if (label == 0) return false;
      label = 0;
      continue;
    }
    bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '-' || ch == '_';
    if (!ok || ++label > 63) return false;
  }
  return label > 0;
}

address with_port(const address& a, std::uint16_t port) {
  if (a.family() == AF_INET) {
    sockaddr_in v4;
    std::memcpy(&v4, a.data(), sizeof v4);
    v4.sin_port = htons(port);
    return address(reinterpret_cast<const sockaddr*>(&v4), sizeof v4);
  }
  if (a.family() == AF_INET6) {
    sockaddr_in6 v6;
    std::memcpy(&v6, a.data(), sizeof v6);
    v6.sin6_port = htons(port);
    return address(reinterpret_cast<const sockaddr*>(&v6), sizeof v6);
  }
  return a;
}

std::vector<address> filtered(const std::vector<address>& in, std::uint16_t port, int family) {
  std::vector<address> out;
  for (const auto& a : in)
    if (family == AF_UNSPEC || a.family() == family)
      out.push_back(a.port() == 0 ? with_port(a, port) : a);
  return out;
}

const char* family_name(int family) {
  return family == AF_INET ? "IPv4" : family == AF_INET6 ? "IPv6" : "any";
}

// "IP", "IP:PORT" or "[IPv6]:PORT".
address parse_server(std::string_view s) {
  std::string_view host = s;
  std::string_view port_text;
  if (!s.empty() && s.front() == '[') {
    std::size_t close = s.find(']');
    if (close != std::string_view::npos) {
      host = s.substr(1, close - 1);
      std::string_view rest = s.substr(close + 1);
      if (!rest.empty() && rest.front() == ':') port_text = rest.substr(1);
      if (!rest.empty() && port_text.empty()) host = {};  // "[::1]x" or "[::1]:"
    }
  } else if (std::count(s.begin(), s.end(), ':') == 1) {
    std::size_t colon = s.find(':');
    host = s.substr(0, colon);
    port_text = s.substr(colon + 1);
    if (port_text.empty()) host = {};
  }
  unsigned long port = 53;
  if (!port_text.empty()) {
    port = 0;
    for (char ch : port_text) {
      if (ch < '0' || ch > '9' || port > 65535) {
        port = 0;
        break;
      }
      port = port * 10 + static_cast<unsigned long>(ch - '0');
    }
  }
  auto a = address::parse_ip(host, static_cast<std::uint16_t>(port));
  if (!a || port == 0 || port > 65535)
    throw std::invalid_argument("squall: resolver: DNS server '" + std::string(s) +
                                "' is not IP or IP:PORT");
  return *a;
}

// --- c-ares callbacks -------------------------------------------------------------------------

void on_sock_state(void* data, ares_socket_t fd, int readable, int writable) {
  static_cast<channel*>(data)->watch(
      fd, (readable ? io_loop::read : 0u) | (writable ? io_loop::write : 0u));
}

void on_answer(void* arg, int status, int timeouts, ares_addrinfo* res);

constexpr std::size_t dns_header = 12;

std::uint16_t dns_id(const unsigned char* p) {
  return static_cast<std::uint16_t>(p[0] << 8 | p[1]);
}

query_slot* slot_of(channel& c, std::uint16_t id) {
  auto it = c.ids.find(id);
  return it == c.ids.end() ? nullptr : it->second;
}

// c-ares's socket calls, as c-ares would make them, plus the per-lookup bookkeeping above.
ares_socket_t sock_open(int family, int type, int protocol, void* data) {
  int fd = ::socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, protocol);
  if (fd >= 0 && type == SOCK_STREAM) static_cast<channel*>(data)->stream_fds.push_back(fd);
  return fd;
}

int sock_close(ares_socket_t fd, void* data) {
  auto& streams = static_cast<channel*>(data)->stream_fds;
  streams.erase(std::remove(streams.begin(), streams.end(), fd), streams.end());
  return ::close(fd);
}

int sock_connect(ares_socket_t fd, const sockaddr* to, ares_socklen_t len, void*) {
  return ::connect(fd, to, len);
}

ares_ssize_t sock_recvfrom(ares_socket_t fd, void* buf, std::size_t len, int flags, sockaddr* from,
                           ares_socklen_t* from_len, void* data) {
  auto* c = static_cast<channel*>(data);
  bool datagram = !c->is_stream(fd);
  for (;;) {
    ssize_t n =
        from ? ::recvfrom(fd, buf, len, flags, from, from_len) : ::recv(fd, buf, len, flags);
    int saved = errno;
    if (n < 0 && saved == ECONNREFUSED) ++c->refused;
    if (datagram && n >= static_cast<ssize_t>(dns_header)) {
      auto* p = static_cast<const unsigned char*>(buf);
      if (query_slot* s = slot_of(*c, dns_id(p))) {
        // A truncated answer to a zombie: dropped, or c-ares would ask again over TCP.
        if (!s->lk && (p[2] & 0x02)) continue;
        ++s->datagrams;
      }
    }
    errno = saved;
    return n;
  }
}

ares_ssize_t sock_sendv(ares_socket_t fd, const iovec* iov, int count, void* data) {
  auto* c = static_cast<channel*>(data);
  if (!c->is_stream(fd)) {
    std::size_t total = 0;
    unsigned char head[2];
    for (int i = 0; i < count; ++i) {
      for (std::size_t k = 0; k < iov[i].iov_len && total + k < 2; ++k)
        head[total + k] = static_cast<const unsigned char*>(iov[i].iov_base)[k];
      total += iov[i].iov_len;
    }
    if (total >= dns_header) {
      std::uint16_t id = dns_id(head);
      if (query_slot* s = c->issuing) {  // a first send: the issuing lookup's query
        c->ids[id] = s;
        if (s->nids < s->ids.size()) s->ids[s->nids++] = id;
      } else if (query_slot* s = slot_of(*c, id); s && !s->lk) {
        return static_cast<ares_ssize_t>(total);  // a zombie's retry: "sent", never sent
      }
    }
  }
  return ::writev(fd, iov, count);
}

const ares_socket_functions socket_functions = {sock_open, sock_close, sock_connect, sock_recvfrom,
                                                sock_sendv};

void channel::watch(int fd, unsigned events) noexcept {
  io_loop& loop = owner->loop;
  auto it = std::find_if(fds.begin(), fds.end(), [fd](const auto& p) { return p.first == fd; });
  try {
    if (events == 0) {
      if (it != fds.end()) {
        loop.remove_handler(fd);
        fds.erase(it);
      }
    } else if (it != fds.end()) {
      if (it->second != events) loop.update_handler(fd, events);
      it->second = events;
    } else {
      loop.add_handler(fd, events, [this](int ready_fd, unsigned got) { on_ready(ready_fd, got); });
      fds.emplace_back(fd, events);
    }
  } catch (const std::exception& e) {
    log(log_level::error, "resolver", "cannot watch c-ares socket %d: %s", fd, e.what());
  }
}

void channel::on_ready(int fd, unsigned got) {
  unsigned interest = 0;
  for (const auto& [f, ev] : fds)
    if (f == fd) interest = ev;
  // An error or hang-up goes to whichever side c-ares waits on, so it reads or writes and sees it.
  bool err = (got & io_loop::error) != 0;
  bool r = (got & io_loop::read) || (err && (interest & io_loop::read));
  bool w = (got & io_loop::write) || (err && (interest & io_loop::write));
  if (!r && !w) r = true;
  ares_process_fd(ch, r ? fd : ARES_SOCKET_BAD, w ? fd : ARES_SOCKET_BAD);
  settle();
}

void channel::arm(time_point at) {
  timer.cancel();
  timer_at = at;
  timer = owner->loop.call_at(at, [this] { on_timer(); });
}

// Keeps the channel's timer no later than c-ares's next timeout, cheaply. Every query c-ares
// sends times out at least first_timeout after it was sent (later tries wait longer), so a timer
// due within first_timeout from now is early enough whatever was just sent; when it fires,
// on_timer() asks c-ares for the exact time (ares_timeout() walks every query: once per
// firing, not once per packet).
void channel::keep_timer() {
  if (live + zombies == 0) {
    timer.cancel();
    timer_at = time_point::max();
    return;
  }
  time_point latest = clock::now() + first_timeout;
  if (timer.pending() && timer_at <= latest) return;
  arm(latest);
}

void channel::on_timer() {
  timer_at = time_point::max();
  ares_process_fd(ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
  timeval tv;
  if (live + zombies > 0 && ares_timeout(ch, nullptr, &tv))
    arm(clock::now() + std::chrono::seconds(tv.tv_sec) + std::chrono::microseconds(tv.tv_usec));
  settle();
}

// After every call into c-ares: the timer, and a retired channel whose live lookups are all done
// loses its zombies (c-ares is off the stack here, so ares_cancel is safe).
void channel::settle() {
  if (retired && live == 0) {
    if (zombies > 0) ares_cancel(ch);  // calls on_answer for each: zombies drops to 0
    retired = false;
    keep_timer();
    owner->cleared(*this);
    return;
  }
  keep_timer();
}

void forget_ids(query_slot& s) {
  channel& c = *s.chan;
  for (std::size_t i = 0; i < s.nids; ++i)
    if (auto it = c.ids.find(s.ids[i]); it != c.ids.end() && it->second == &s) c.ids.erase(it);
}

// c-ares's answer (also on cancel and destruction). Runs inside a c-ares call.
void on_answer(void* arg, int status, int timeouts, ares_addrinfo* res) {
  auto* s = static_cast<query_slot*>(arg);
  channel& c = *s->chan;
  if (c.issuing == s) c.issuing = nullptr;  // answered inside ares_getaddrinfo()
  forget_ids(*s);
  lookup* lk = s->lk;
  if (!lk) {  // a zombie: nobody waits any more
    if (res) ares_freeaddrinfo(res);
    --c.zombies;
    delete s;
    return;
  }
  --c.live;
  lk->done = true;
  lk->status = status;
  lk->timeouts = timeouts;
  lk->datagrams = s->datagrams;
  lk->refused = static_cast<int>(c.refused - s->refused_at);
  lk->result = res;
  lk->slot = nullptr;
  delete s;
  c.owner->leave_wire();
  if (lk->w) wake(*lk->w);  // through the callback queue: c-ares is still on the stack
}

// Deadline, cancellation or loop shutdown. Alone on its channel, the lookup's queries are
// cancelled (ares_cancel calls on_answer at once); otherwise it becomes a zombie: its queries
// are left to c-ares but never sent again, and the channel is retired until its live lookups end.
// Either way the fiber's stack is never touched after this.
void abandon_lookup(waiter& w) {
  auto* lk = static_cast<lookup*>(w.data);
  lk->w = nullptr;
  if (!lk->done && lk->slot) {
    query_slot* s = std::exchange(lk->slot, nullptr);
    channel& c = *s->chan;
    s->lk = nullptr;
    --c.live;
    ++c.zombies;
    c.owner->leave_wire();
    if (c.live == 0) {
      ares_cancel(c.ch);
      c.settle();
    } else if (!c.retired) {
      c.retired = true;
      if (c.owner->current == &c) c.owner->current = nullptr;
    }
  }
  wake(w, w.abandon_reason);
}

std::string describe_status(int status) {
  return ares_strerror(status);
}

// --- RFC 6724 destination ordering ----------------------------------------------------------

struct rank {
  int usable;      // rule 1: avoid destinations we have no source address for
  int precedence;  // rule 6: the default policy table
  int scope;       // rule 8: smaller scope first
};

rank rank_v4(std::uint32_t ip, bool have_v4) {
  bool loopback = (ip >> 24) == 127;
  bool link_local = (ip >> 16) == 0xA9FE;  // 169.254/16
  return {loopback || have_v4 ? 1 : 0, 35, loopback || link_local ? 2 : 14};
}

rank rank_of(const address& a, bool have_v4, bool have_v6) {
  if (a.family() == AF_INET) {
    sockaddr_in v4;
    std::memcpy(&v4, a.data(), sizeof v4);
    return rank_v4(ntohl(v4.sin_addr.s_addr), have_v4);
  }
  if (a.family() != AF_INET6) return {1, 0, 0};
  sockaddr_in6 v6;
  std::memcpy(&v6, a.data(), sizeof v6);
  const in6_addr& ip = v6.sin6_addr;
  const unsigned char* b = ip.s6_addr;
  if (IN6_IS_ADDR_LOOPBACK(&ip)) return {1, 50, 2};
  if (IN6_IS_ADDR_V4MAPPED(&ip)) {
    std::uint32_t v4 = (std::uint32_t(b[12]) << 24) | (std::uint32_t(b[13]) << 16) |
                       (std::uint32_t(b[14]) << 8) | b[15];
    return rank_v4(v4, have_v4);
  }
  int precedence = 40;
  if (b[0] == 0x20 && b[1] == 0x02) {
    precedence = 30;  // 6to4, 2002::/16
  } else if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0 && b[3] == 0) {
    precedence = 5;  // Teredo, 2001::/32
  } else if ((b[0] & 0xfe) == 0xfc) {
    precedence = 3;  // unique local, fc00::/7
  } else if (IN6_IS_ADDR_V4COMPAT(&ip) || IN6_IS_ADDR_SITELOCAL(&ip) ||
             (b[0] == 0x3f && b[1] == 0xfe)) {
    precedence = 1;  // deprecated: ::/96, fec0::/10, 6bone 3ffe::/16
  }
  int scope = 14;
  if (IN6_IS_ADDR_LINKLOCAL(&ip)) {
    scope = 2;
  } else if (IN6_IS_ADDR_SITELOCAL(&ip)) {
    scope = 5;
  } else if (IN6_IS_ADDR_MULTICAST(&ip)) {
    scope = b[1] & 0x0f;
  }
  return {have_v6 ? 1 : 0, precedence, scope};
}

// --- getaddrinfo on the thread pool ---------------------------------------------------------

struct system_answer {
  int rc = 0;
  int err = 0;  // errno for EAI_SYSTEM
  std::vector<address> addrs;
};

system_answer run_getaddrinfo(const std::string& name, int family) {
  addrinfo hints{};
  hints.ai_family = family;
  hints.ai_socktype = SOCK_STREAM;  // one entry per address, not one per socket type
  addrinfo* res = nullptr;
  system_answer out;
  out.rc = ::getaddrinfo(name.c_str(), nullptr, &hints, &res);
  out.err = errno;
  if (out.rc != 0) return out;
  for (addrinfo* p = res; p; p = p->ai_next)
    if (p->ai_family == AF_INET || p->ai_family == AF_INET6)
      out.addrs.emplace_back(p->ai_addr, p->ai_addrlen);
  ::freeaddrinfo(res);
  return out;
}

void add_unique(std::vector<address>& v, const address& a) {
  if (std::find(v.begin(), v.end(), a) == v.end()) v.push_back(a);
}

}  // namespace

// --- resolver_impl -----------------------------------------------------------------------------

// The channel new lookups go to. Called from fibers and the constructor only (never from inside
// c-ares or a handler), which is why surplus idle channels are closed here.
channel& resolver_impl::take_channel() {
  while (idle.size() > opts.max_idle_channels) {
    channel* extra = idle.front();
    idle.erase(idle.begin());
    destroy(*extra);
  }
  if (!current) {
    if (!idle.empty()) {
      current = idle.back();
      idle.pop_back();
    } else {
      current = &open_channel();
    }
  }
  return *current;
}

channel& resolver_impl::open_channel() {
  chans.emplace_back();
  channel& c = chans.back();
  c.owner = this;
  c.self = std::prev(chans.end());
  try {
    open(c);
  } catch (...) {
    chans.erase(c.self);
    throw;
  }
  return c;
}

void resolver_impl::open(channel& c) {
  ares_options o{};
  int mask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_LOOKUPS | ARES_OPT_FLAGS;
  o.flags = ARES_FLAG_STAYOPEN;
  o.sock_state_cb = on_sock_state;
  o.sock_state_cb_data = &c;
  char lookups_dns[] = "b";  // the hosts file is squall's (from_hosts)
  o.lookups = lookups_dns;
  if (opts.timeout > duration::zero()) {
    mask |= ARES_OPT_TIMEOUTMS;
    auto ms = std::chrono::ceil<std::chrono::milliseconds>(opts.timeout).count();
    o.timeout = static_cast<int>(std::min<long long>(ms, 1 << 30));
  }
  if (opts.tries > 0) {
    mask |= ARES_OPT_TRIES;
    o.tries = opts.tries;
  }
  if (opts.ndots >= 0) {
    mask |= ARES_OPT_NDOTS;
    o.ndots = opts.ndots;
  }
  if (opts.search) {  // squall's own search list; the channel gets none
    mask |= ARES_OPT_DOMAINS;
    o.domains = nullptr;
    o.ndomains = 0;
  }
  if (!opts.resolv_conf.empty()) {
    mask |= ARES_OPT_RESOLVCONF;
    o.resolvconf_path = opts.resolv_conf.data();
  }
  auto start = [&] {
    int rc = ares_init_options(&c.ch, &o, mask);
    if (rc != ARES_SUCCESS) {
      c.ch = nullptr;
      throw std::system_error(
          make_error_code(error::server_failure),
          std::string("squall: resolver: c-ares cannot start: ") + describe_status(rc));
    }
  };
  start();
  // What c-ares read from resolv.conf (or the options): the first try's timeout, ndots and the
  // search list, which squall walks itself; a channel with search domains is started again
  // without them (c-ares 1.18 has no call to change them).
  ares_options saved{};
  int saved_mask = 0;
  if (ares_save_options(c.ch, &saved, &saved_mask) == ARES_SUCCESS) {
    if (saved.timeout > 0) c.first_timeout = std::chrono::milliseconds(saved.timeout);
    c.ndots = saved.ndots;
    if (!opts.search)
      for (int i = 0; i < saved.ndomains; ++i)
        c.search.emplace_back(saved.domains[i]);
    ares_destroy_options(&saved);
  }
  if (opts.search) c.search = *opts.search;
  if (!opts.search && !c.search.empty()) {
    ares_destroy(c.ch);
    c.ch = nullptr;
    mask |= ARES_OPT_DOMAINS;
    o.domains = nullptr;
    o.ndomains = 0;
    start();
  }
  ares_set_socket_functions(c.ch, &socket_functions, &c);
  if (!servers_csv.empty()) {
    int rc = ares_set_servers_ports_csv(c.ch, servers_csv.c_str());
    if (rc != ARES_SUCCESS) {
      ares_destroy(c.ch);
      c.ch = nullptr;
      throw std::invalid_argument("squall: resolver: c-ares refused the servers '" + servers_csv +
                                  "': " + describe_status(rc));
    }
  }
}

// A retired channel is clear again (no lookup, no zombie): it takes lookups again.
void resolver_impl::cleared(channel& c) {
  if (closed || current == &c) return;
  if (!current) {
    current = &c;
  } else {
    idle.push_back(&c);  // take_channel() closes what max_idle_channels does not keep
  }
}

void resolver_impl::destroy(channel& c) {
  c.timer.cancel();
  if (c.ch) {
    if (c.live + c.zombies > 0) ares_cancel(c.ch);
    ares_destroy(c.ch);  // closes its sockets, which unwatches them through on_sock_state
    c.ch = nullptr;
  }
  for (const auto& [fd, ev] : c.fds) {
    try {
      loop.remove_handler(fd);
    } catch (...) {
    }
  }
  chans.erase(c.self);
}

void resolver_impl::shutdown() {
  if (closed) return;
  closed = true;
  // Queued lookups first, then the ones on the wire: every waiting fiber gets error::cancelled
  // and is queued to resume.
  while (waiter* w = queue.pop_front())
    wake(*w, error::cancelled);
  for (auto& c : chans)
    if (c.live + c.zombies > 0) ares_cancel(c.ch);
  idle.clear();
  current = nullptr;
  while (!chans.empty())
    destroy(chans.front());
}

// Takes one of the lookups_on_wire units, waiting in line for it if they are all out.
void resolver_impl::wait_for_wire(time_point deadline, const std::string& name) {
  if (on_wire < lookups_on_wire && queue.empty()) {
    ++on_wire;
    return;
  }
  waiter w;
  w.what = "resolve (queued)";
  w.data = this;
  w.abandon = [](waiter& me) {
    static_cast<resolver_impl*>(me.data)->queue.remove(me);
    wake(me, me.abandon_reason);
  };
  queue.push_back(w);
  // Woken without an error: leave_wire() handed its unit straight to us.
  std::error_code ec = suspend(w, deadline);
  if (ec == error::timed_out) fail(ec, name, "deadline passed, asked " + servers_text);
  if (ec) fail(ec, name, closed ? "the resolver was shut down" : "");
}

void resolver_impl::leave_wire() {
  if (waiter* w = queue.pop_front()) {
    wake(*w);  // the unit goes to the longest waiter; once woken it can no longer be abandoned
  } else {
    --on_wire;
  }
}

// --- The hosts file ----------------------------------------------------------------------------

// Reads the hosts file again if it changed (mtime, size or inode; checked at most every
// hosts_file_config().recheck), as c-ares would have read it: "address name alias...", '#'
// comments, names matched case-insensitively. A file that cannot be read has no names.
void resolver_impl::load_hosts() {
  const hosts_file_settings& cfg = hosts_file_config();
  time_point now = clock::now();
  bool same_path = hosts.loaded && hosts.path == cfg.path;
  if (same_path && now - hosts.checked < cfg.recheck) return;
  hosts.checked = now;
  struct stat st;
  bool exists = ::stat(cfg.path.c_str(), &st) == 0;
  if (same_path) {
    if (!exists && hosts.size < 0) return;
    if (exists && st.st_mtim.tv_sec == hosts.mtime.tv_sec &&
        st.st_mtim.tv_nsec == hosts.mtime.tv_nsec && st.st_size == hosts.size &&
        st.st_ino == hosts.inode && st.st_dev == hosts.device)
      return;
  }
  hosts.loaded = true;
  hosts.path = cfg.path;
  hosts.names.clear();
  hosts.size = -1;
  if (!exists) return;
  std::ifstream in(cfg.path);
  if (!in) return;
  hosts.mtime = st.st_mtim;
  hosts.size = st.st_size;
  hosts.inode = st.st_ino;
  hosts.device = st.st_dev;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line.substr(0, line.find('#')));
    std::string text, name;
    if (!(fields >> text)) continue;
    hosts_table::entry e{};
    if (::inet_pton(AF_INET, text.c_str(), e.bytes.data()) == 1) {
      e.family = AF_INET;
    } else if (::inet_pton(AF_INET6, text.c_str(), e.bytes.data()) == 1) {
      e.family = AF_INET6;
    } else {
      continue;
    }
    while (fields >> name) {
      auto& list = hosts.names[key_of(name)];
      bool dup = std::any_of(list.begin(), list.end(), [&](const hosts_table::entry& x) {
        return x.family == e.family && x.bytes == e.bytes;
      });
      if (!dup) list.push_back(e);
    }
  }
}

// The hosts file's addresses of `family` for `key` (lower case, no trailing dot), port 0.
bool resolver_impl::from_hosts(const std::string& key, int family, std::vector<address>& out) {
  load_hosts();
  auto it = hosts.names.find(key);
  if (it == hosts.names.end()) return false;
  for (const auto& e : it->second) {
    if (family != AF_UNSPEC && e.family != family) continue;
    if (e.family == AF_INET) {
      sockaddr_in v4{};
      v4.sin_family = AF_INET;
      std::memcpy(&v4.sin_addr, e.bytes.data(), 4);
      out.emplace_back(reinterpret_cast<const sockaddr*>(&v4), sizeof v4);
    } else {
      sockaddr_in6 v6{};
      v6.sin6_family = AF_INET6;
      std::memcpy(&v6.sin6_addr, e.bytes.data(), 16);
      out.emplace_back(reinterpret_cast<const sockaddr*>(&v6), sizeof v6);
    }
  }
  return !out.empty();
}

void resolver_impl::refresh_interfaces() {
  time_point now = clock::now();
  if (ifaces_known && now - ifaces_checked < std::chrono::seconds(10)) return;
  ifaces_known = true;
  ifaces_checked = now;
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) {
    have_v4 = have_v6 = true;  // unknown: do not demote anything
    return;
  }
  have_v4 = have_v6 = false;
  for (ifaddrs* p = list; p; p = p->ifa_next) {
    if (!p->ifa_addr) continue;
    if (p->ifa_addr->sa_family == AF_INET) {
      sockaddr_in v4;
      std::memcpy(&v4, p->ifa_addr, sizeof v4);
      if ((ntohl(v4.sin_addr.s_addr) >> 24) != 127) have_v4 = true;
    } else if (p->ifa_addr->sa_family == AF_INET6) {
      sockaddr_in6 v6;
      std::memcpy(&v6, p->ifa_addr, sizeof v6);
      if (!IN6_IS_ADDR_LOOPBACK(&v6.sin6_addr) && !IN6_IS_ADDR_LINKLOCAL(&v6.sin6_addr))
        have_v6 = true;
    }
  }
  ::freeifaddrs(list);
}

const std::vector<address>* resolver_impl::cached(const std::string& key) {
  auto it = cache_index.find(key);
  if (it == cache_index.end()) return nullptr;
  if (clock::now() >= it->second->expires) {
    lru.erase(it->second);
    cache_index.erase(it);
    return nullptr;
  }
  lru.splice(lru.begin(), lru, it->second);
  return &it->second->addrs;
}

void resolver_impl::remember(const std::string& key, const std::vector<address>& addrs, int ttl) {
  if (opts.cache_size == 0 || ttl <= 0 || addrs.empty()) return;
  duration keep = std::min<duration>(std::chrono::seconds(ttl), opts.cache_max_ttl);
  if (keep <= duration::zero()) return;
  if (auto it = cache_index.find(key); it != cache_index.end()) {
    lru.erase(it->second);
    cache_index.erase(it);
  }
  while (lru.size() >= opts.cache_size) {
    cache_index.erase(lru.back().key);
    lru.pop_back();
  }
  lru.push_front({key, addrs, clock::now() + keep});
  cache_index.emplace(key, lru.begin());
}

std::vector<address> resolver_impl::resolve(std::string_view host, std::uint16_t port, int family,
                                            time_point deadline) {
  if (family != AF_UNSPEC && family != AF_INET && family != AF_INET6)
    throw std::invalid_argument("squall: resolve: family must be AF_UNSPEC, AF_INET or AF_INET6");
  if (closed) fail(error::cancelled, host, "the resolver was shut down");

  // Numeric addresses need nobody.
  if (auto a = address::parse_ip(host, port)) {
    if (family != AF_UNSPEC && a->family() != family)
      fail(error::no_data, host,
           std::string("is an ") + family_name(a->family()) + " address, " + family_name(family) +
               " was asked for");
    return {*a};
  }
  if (!valid_name(host)) fail(error::bad_name, host, "");

  std::string key = key_of(host);
  std::vector<address> found;
  if (key == "localhost" || key.ends_with(".localhost")) {  // RFC 6761 section 6.3
    found = filtered({address::ip("::1", 0), address::ip("127.0.0.1", 0)}, port, family);
  } else if (auto it = overrides.find(key); it != overrides.end()) {
    found = filtered(it->second, port, family);
    if (found.empty())
      fail(error::no_data, host,
           std::string("the override has no ") + family_name(family) + " address");
  } else if (std::vector<address> listed;
             opts.hosts_file && !opts.use_getaddrinfo && from_hosts(key, family, listed)) {
    found = filtered(listed, port, family);  // the hosts file before DNS, as c-ares would
  } else {
    std::string cache_key = opts.cache_size ? key + '/' + family_name(family) : std::string();
    if (const auto* hit = opts.cache_size ? cached(cache_key) : nullptr) {
      found = filtered(*hit, port, family);
    } else {
      if (!this_fiber::active() || &this_fiber::loop() != &loop)
        throw std::logic_error("squall: resolve '" + std::string(host) +
                               "': a DNS lookup must run in a fiber on the resolver's loop");
      int ttl = 0;
      std::string name(host);
      std::vector<address> raw = opts.use_getaddrinfo ? system_lookup(name, family, deadline)
                                                      : query(name, family, deadline, ttl);
      if (opts.cache_size) remember(cache_key, raw, ttl);
      found = filtered(raw, port, family);
    }
  }
  refresh_interfaces();
  sort_for_connect(found, have_v4, have_v6);
  return found;
}

// One ares_getaddrinfo() for `name` as is (the channels have no search list), on the wire once a
// unit is free. Returns how the wait for the answer ended (timed_out, cancelled); `lk` holds
// c-ares's answer if it came.
std::error_code resolver_impl::query_one(const std::string& name, int family, time_point deadline,
                                         lookup& lk) {
  if (closed) fail(error::cancelled, name, "the resolver was shut down");
  wait_for_wire(deadline, name);
  channel* c = nullptr;
  try {
    c = &take_channel();
  } catch (...) {
    leave_wire();
    throw;
  }
  auto* s = new query_slot;
  s->chan = c;
  s->lk = &lk;
  s->refused_at = c->refused;
  lk.slot = s;
  ++c->live;
  ares_addrinfo_hints hints{};
  hints.ai_family = family;
  hints.ai_flags = ARES_AI_NOSORT;  // we sort ourselves, without c-ares's connect() probes
  c->issuing = s;
  ares_getaddrinfo(c->ch, name.c_str(), nullptr, &hints, on_answer, s);
  c->issuing = nullptr;
  c->settle();
  if (lk.done) return {};
  waiter w;
  w.what = "resolve";
  w.data = &lk;
  w.abandon = abandon_lookup;
  lk.w = &w;
  std::error_code ec = suspend(w, deadline);
  lk.w = nullptr;
  return ec;
}

std::vector<address> resolver_impl::query(const std::string& name, int family, time_point deadline,
                                          int& min_ttl) {
  struct counted {
    std::size_t& n;
    explicit counted(std::size_t& v) : n(v) { ++n; }
    ~counted() { --n; }
  } count(in_flight);

  // The search list, as c-ares 1.18 walks it: a name with at least ndots dots is tried as is
  // first, one with fewer last; an absolute name (trailing dot) only as is. The walk goes on
  // only while the answer is NXDOMAIN.
  std::vector<std::string> names;
  {
    channel& c = take_channel();
    bool absolute = name.back() == '.';
    if (absolute || c.search.empty()) {
      names.push_back(name);
    } else {
      bool as_is_first = std::count(name.begin(), name.end(), '.') >= c.ndots;
      if (as_is_first) names.push_back(name);
      for (const auto& d : c.search)
        names.push_back(name + '.' + d);
      if (!as_is_first) names.push_back(name);
    }
  }

  int status = ARES_ENOTFOUND;
  int timeouts = 0;
  std::unique_ptr<ares_addrinfo, void (*)(ares_addrinfo*)> res(nullptr, ares_freeaddrinfo);
  for (const auto& candidate : names) {
    lookup lk;
    struct freed {
      lookup& lk;
      ~freed() {
        if (lk.result) ares_freeaddrinfo(lk.result);
      }
    } free_result{lk};
    std::error_code ec = query_one(candidate, family, deadline, lk);
    timeouts += lk.timeouts;
    if (ec == error::timed_out) fail(ec, name, "deadline passed, asked " + servers_text);
    if (ec) fail(ec, name, closed ? "the resolver was shut down" : "");
    status = lk.status;
    if (status == ARES_ECONNREFUSED && lk.refused == 0 && lk.datagrams > 0)
      status = ARES_ESERVFAIL;  // answered, but with SERVFAIL or REFUSED (see channel::refused)
    if (status == ARES_ETIMEOUT && lk.refused > 0 && lk.datagrams == 0)
      status = ARES_ECONNREFUSED;  // every try was refused: no server there
    res.reset(std::exchange(lk.result, nullptr));
    if (status != ARES_ENOTFOUND) break;
  }

  switch (status) {
    case ARES_SUCCESS:
      break;
    case ARES_ENOTFOUND:
      fail(error::not_found, name, "NXDOMAIN, asked " + servers_text);
    case ARES_ENODATA:
      fail(error::no_data, name, std::string("no ") + family_name(family) + " address");
    case ARES_ESERVFAIL:
    case ARES_EREFUSED:
    case ARES_EFORMERR:
    case ARES_EBADRESP:
    case ARES_ENOTIMP:
      fail(error::server_failure, name,
           (status == ARES_ESERVFAIL || status == ARES_EREFUSED ? std::string("SERVFAIL or REFUSED")
                                                                : describe_status(status)) +
               " from " + servers_text);
    case ARES_ETIMEOUT:
      fail(error::timed_out, name,
           "no answer from " + servers_text + " in " + std::to_string(timeouts) +
               (timeouts == 1 ? " try" : " tries"));
    case ARES_ECONNREFUSED:
      fail(std::make_error_code(std::errc::connection_refused), name, "asked " + servers_text);
    case ARES_EBADNAME:
    case ARES_EBADFAMILY:
      fail(error::bad_name, name, describe_status(status));
    case ARES_ECANCELLED:
    case ARES_EDESTRUCTION:
      fail(error::cancelled, name, "");
    case ARES_ENOMEM:
      throw std::bad_alloc();
    default:
      fail(error::server_failure, name, describe_status(status) + ", asked " + servers_text);
  }

  std::vector<address> out;
  min_ttl = 0;
  bool first = true;
  for (ares_addrinfo_node* n = res ? res->nodes : nullptr; n; n = n->ai_next) {
    if (n->ai_family != AF_INET && n->ai_family != AF_INET6) continue;
    add_unique(out, address(n->ai_addr, n->ai_addrlen));
    min_ttl = first ? n->ai_ttl : std::min(min_ttl, n->ai_ttl);
    first = false;
  }
  if (out.empty())
    fail(error::no_data, name, std::string("no ") + family_name(family) + " address");
  return out;
}

std::vector<address> resolver_impl::system_lookup(const std::string& name, int family,
                                                  time_point deadline) {
  ++in_flight;
  system_answer ans;
  try {
    ans = this_fiber::run_in_executor([name, family] { return run_getaddrinfo(name, family); },
                                      deadline);
  } catch (const std::system_error& e) {
    --in_flight;
    if (e.code() == error::timed_out) fail(e.code(), name, "deadline passed, asked getaddrinfo");
    if (e.code() == error::cancelled) fail(e.code(), name, "getaddrinfo");
    throw;
  } catch (...) {
    --in_flight;
    throw;
  }
  --in_flight;
  switch (ans.rc) {
    case 0:
      break;
    case EAI_NONAME:
      fail(error::not_found, name, "getaddrinfo");
#ifdef EAI_NODATA
    case EAI_NODATA:
#endif
#ifdef EAI_ADDRFAMILY
    case EAI_ADDRFAMILY:
#endif
      fail(error::no_data, name,
           std::string("no ") + family_name(family) + " address, getaddrinfo");
    case EAI_MEMORY:
      throw std::bad_alloc();
    case EAI_SYSTEM:
      fail(std::error_code(ans.err, std::system_category()), name, "getaddrinfo");
    default:  // EAI_AGAIN (no answer, or SERVFAIL), EAI_FAIL
      fail(error::server_failure, name, std::string("getaddrinfo: ") + ::gai_strerror(ans.rc));
  }
  std::vector<address> out;
  for (const auto& a : ans.addrs)
    add_unique(out, with_port(a, 0));
  if (out.empty())
    fail(error::no_data, name, std::string("no ") + family_name(family) + " address");
  return out;
}

// For tests: another hosts file, and how often resolvers check it for changes (default
// /etc/hosts, 1 s). Not thread-safe: call it while no resolver runs.
void set_hosts_file(std::string path, duration recheck) {
  hosts_file_config() = {std::move(path), recheck};
}

}  // namespace detail

// --- Public API --------------------------------------------------------------------------------

void sort_for_connect(std::vector<address>& addrs, bool have_ipv4, bool have_ipv6) {
  std::stable_sort(addrs.begin(), addrs.end(), [&](const address& a, const address& b) {
    detail::rank ra = detail::rank_of(a, have_ipv4, have_ipv6);
    detail::rank rb = detail::rank_of(b, have_ipv4, have_ipv6);
    if (ra.usable != rb.usable) return ra.usable > rb.usable;
    if (ra.precedence != rb.precedence) return ra.precedence > rb.precedence;
    return ra.scope < rb.scope;
  });
}

resolver::resolver(io_loop& loop, resolver_options opts) {
  static std::once_flag init;
  std::call_once(init, [] { ares_library_init(ARES_LIB_INIT_ALL); });
  impl_ = std::make_shared<detail::resolver_impl>(loop, std::move(opts));
  auto& r = *impl_;
  for (const auto& s : r.opts.servers) {
    std::string one = detail::parse_server(s).to_string();
    r.servers_csv += (r.servers_csv.empty() ? "" : ",") + one;
    r.servers_text += (r.servers_text.empty() ? "" : ", ") + one;
  }
  for (const auto& [host, addrs] : r.opts.overrides)
    r.overrides[detail::key_of(host)] = addrs;
  if (r.opts.use_getaddrinfo) {
    r.servers_text = "the system resolver";
    return;
  }
  // One channel now: reads resolv.conf, tells which servers it found, and takes the lookups.
  detail::channel* c = &r.take_channel();
  if (r.servers_text.empty()) {
    ares_addr_port_node* list = nullptr;
    if (ares_get_servers_ports(c->ch, &list) == ARES_SUCCESS) {
      for (ares_addr_port_node* n = list; n; n = n->next) {
        std::uint16_t port = static_cast<std::uint16_t>(n->udp_port ? n->udp_port : 53);
        char text[INET6_ADDRSTRLEN] = "";
        ::inet_ntop(n->family, &n->addr, text, sizeof text);
        auto a = address::parse_ip(text, port);
        if (!a) continue;
        r.servers_text += (r.servers_text.empty() ? "" : ", ") + a->to_string();
      }
      ares_free_data(list);
    }
    if (r.servers_text.empty()) r.servers_text = "no server";
  }
}

resolver::~resolver() {
  if (impl_) impl_->shutdown();
}

std::vector<address> resolver::resolve(std::string_view host, std::uint16_t port, int family,
                                       time_point deadline) {
  std::shared_ptr<detail::resolver_impl> keep = impl_;  // outlives a resolver destroyed meanwhile
  return keep->resolve(host, port, family, deadline);
}

void resolver::set_override(std::string_view host, std::vector<address> addresses) {
  impl_->overrides[detail::key_of(host)] = std::move(addresses);
}

void resolver::remove_override(std::string_view host) {
  impl_->overrides.erase(detail::key_of(host));
}

void resolver::clear_cache() {
  impl_->lru.clear();
  impl_->cache_index.clear();
}

std::size_t resolver::cache_entries() const noexcept {
  return impl_->lru.size();
}

std::size_t resolver::in_flight() const noexcept {
  return impl_->in_flight;
}

std::size_t resolver::channels() const noexcept {
  return impl_->chans.size();
}

const std::string& resolver::servers() const noexcept {
  return impl_->servers_text;
}

io_loop& resolver::loop() const noexcept {
  return impl_->loop;
}

namespace {

struct resolver_extension final : io_loop::extension {
  std::unique_ptr<resolver> r;
};

const char resolver_key = 0;

}  // namespace

resolver& get_resolver(io_loop& loop) {
  if (auto* e = loop.find_extension(&resolver_key)) {
    auto& ext = static_cast<resolver_extension&>(*e);
    if (!ext.r) ext.r = std::make_unique<resolver>(loop);
    return *ext.r;
  }
  auto ext = std::make_unique<resolver_extension>();
  ext->r = std::make_unique<resolver>(loop);
  return *static_cast<resolver_extension&>(loop.add_extension(&resolver_key, std::move(ext))).r;
}

void set_resolver_options(io_loop& loop, resolver_options opts) {
  auto fresh = std::make_unique<resolver>(loop, std::move(opts));
  if (auto* e = loop.find_extension(&resolver_key)) {
    static_cast<resolver_extension&>(*e).r = std::move(fresh);
    return;
  }
  auto ext = std::make_unique<resolver_extension>();
  ext->r = std::move(fresh);
  loop.add_extension(&resolver_key, std::move(ext));
}

std::vector<address> resolve(std::string_view host, std::uint16_t port, int family,
                             time_point deadline) {
  io_loop* loop = this_fiber::active() ? &this_fiber::loop() : io_loop::current_or_null();
  if (!loop) throw std::logic_error("squall: resolve: no loop (call it from a fiber)");
  return get_resolver(*loop).resolve(host, port, family, deadline);
}

}  // namespace squall
