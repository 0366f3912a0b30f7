// SPDX-License-Identifier: MIT
// io_stream over real sockets: reads (partial, delimited, bounded), writes with backpressure,
// end of stream, reset, half-close, timeouts, cancellation and close in every wait.
#include "squall/io_stream.hpp"

#include <doctest/doctest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "buffer_pool.hpp"
#include "squall/locks.hpp"
#include "squall/tcp_client.hpp"
#include "squall/tcp_server.hpp"
#include "test_util.hpp"

using namespace std::chrono_literals;
using squall::io_loop;
using squall::io_stream;
using squall::run_sync;
using squall::spawn;
using squall::time_point;
using squall::test::code_of;
namespace this_fiber = squall::this_fiber;

namespace {

// A connected pair of streams over a Unix socketpair.
struct stream_pair {
  io_stream a, b;
  stream_pair(io_loop& loop, squall::io_stream_options oa = {}, squall::io_stream_options ob = {}) {
    int sv[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    a = io_stream(loop, sv[0], oa);
    b = io_stream(loop, sv[1], ob);
  }
};

// A finished fiber's stack is unmapped at once, so that a touch of it after the fiber is gone
// faults instead of landing in a pooled stack.
void unpool_stacks(io_loop& loop) {
  auto cfg = squall::get_fiber_config(loop);
  cfg.max_pooled_stacks = 0;
  squall::set_fiber_config(loop, cfg);
}

}  // namespace

TEST_CASE("round trip over TCP: write, flush, read_exactly") {
  io_loop loop;
  squall::tcp_server server(loop, squall::test::echo);
  server.listen(0, "127.0.0.1");
  auto addr = server.addresses().at(0);
  CHECK(addr.port() != 0);
  std::string got = run_sync(loop, [&] {
    io_stream c = squall::tcp_connect(addr);
    c.write("hello, ");
    c.write("squall");
    c.flush();
    return std::string(c.read_exactly(13));
  });
  CHECK(got == "hello, squall");
}

TEST_CASE("gathered writes: pieces of every short length arrive whole and in order") {
  // Short pieces are copied by size class (under 4, 4-7, 8-16, longer); each length from 0 to
  // 40 is written after every other, so that each starts at every offset of the buffer.
  io_loop loop;
  stream_pair p(loop);
  std::string sent;
  std::uint8_t next = 0;
  auto piece = [&](std::size_t n) {
    std::string s;
    for (std::size_t i = 0; i < n; ++i)
      s += static_cast<char>(next++ % 251);
    return s;
  };
  std::string got = run_sync(loop, [&] {
    for (std::size_t a = 0; a <= 40; ++a) {
      for (std::size_t b = 0; b <= 40; ++b) {
        std::string x = piece(a), y = piece(b), z = piece((a + b) % 7);
        std::string_view pieces[] = {x, y, {}, z};
        p.a.write(pieces);
        sent += x + y + z;
      }
      p.a.flush();
    }
    return std::string(p.b.read_exactly(sent.size()));
  });
  CHECK(got.size() == sent.size());
  CHECK(got == sent);
}

TEST_CASE("read_exactly collects bytes that arrive one at a time") {
  io_loop loop;
  stream_pair p(loop);
  auto writer = spawn(loop, [&] {
    for (char c : std::string("0123456789")) {
      p.b.write(std::string_view(&c, 1));
      p.b.flush();
      this_fiber::sleep_for(1ms);
    }
  });
  auto got = run_sync(loop, [&] { return std::string(p.a.read_exactly(10)); });
  CHECK(got == "0123456789");
  run_sync(loop, [&] { writer.join(); });
}

TEST_CASE("read_until finds a delimiter split across reads and across buffer growth") {
  io_loop loop;
  squall::io_stream_options small;
  small.read_chunk = 3;  // forces many reads and several reallocations
  stream_pair p(loop, small);
  std::string head(1000, 'h');
  auto writer = spawn(loop, [&] {
    p.b.write(head + "\r\n");
    p.b.flush();
    this_fiber::sleep_for(2ms);
    p.b.write("\r\nbody");
    p.b.flush();
  });
  run_sync(loop, [&] {
    auto v = p.a.read_until("\r\n\r\n", 4096);
    CHECK(v == head + "\r\n\r\n");
    CHECK(std::string(p.a.read_exactly(4)) == "body");
    writer.join();
  });
}

TEST_CASE("read_until past max_bytes is buffer_full, and the bytes stay readable") {
  io_loop loop;
  stream_pair p(loop);
  run_sync(loop, [&] {
    p.b.write("no delimiter in these twenty-nine bytes");
    p.b.flush();
    CHECK(code_of([&] { p.a.read_until("\n", 16); }) == squall::error::buffer_full);
    // Nothing was lost: the buffered bytes come back from the next read.
    auto rest = p.a.read_exactly(39);
    CHECK(rest == "no delimiter in these twenty-nine bytes");
  });
}

TEST_CASE("end of stream: read_some is empty, read_exactly and read_until fail with closed") {
  io_loop loop;
  stream_pair p(loop);
  run_sync(loop, [&] {
    p.b.write("abc");
    p.b.close();
    CHECK(code_of([&] { p.a.read_exactly(5); }) == squall::error::closed);
    CHECK(p.a.read_some() == "abc");  // what did arrive is still there
    CHECK(p.a.read_some().empty());
    CHECK(code_of([&] { p.a.read_until("\n", 100); }) == squall::error::closed);
  });
}

TEST_CASE("read_until_close returns everything; past max_bytes it is buffer_full") {
  io_loop loop;
  stream_pair p(loop), q(loop);
  run_sync(loop, [&] {
    std::string big(100000, 'z');
    auto w = spawn(loop, [&] {
      p.b.write(big);
      p.b.close();
      q.b.write(big);
      q.b.close();
    });
    CHECK(p.a.read_until_close(1 << 20).size() == big.size());
    CHECK(code_of([&] { q.a.read_until_close(50000); }) == squall::error::buffer_full);
    w.join();
  });
}

TEST_CASE(
    "a writer to a peer that does not read blocks at the high-water mark; memory stays bounded") {
  io_loop loop;
  squall::io_stream_options o;
  o.write_high_water = 16 * 1024;
  stream_pair p(loop, o);
  std::size_t sent = 0, max_pending = 0;
  const std::size_t total = 8 * 1024 * 1024;
  std::string chunk(4096, 'w');
  auto writer = spawn(loop, [&] {
    while (sent < total) {
      p.a.write(chunk);
      sent += chunk.size();
      max_pending = std::max(max_pending, p.a.pending_write());
    }
    p.a.flush();
  });
  run_sync(loop, [&] {
    this_fiber::sleep_for(20ms);
    // The reader has not read: the writer is stuck far short of the total.
    CHECK(sent < total);
    CHECK_FALSE(writer.done());
    std::size_t got = 0;
    while (got < total)
      got += p.b.read_some().size();
    CHECK(got == total);
    writer.join();
  });
  CHECK(max_pending <= o.write_high_water);
}

TEST_CASE("a reset by the peer is error::reset") {
  io_loop loop;
  stream_pair p(loop);
  run_sync(loop, [&] {
    p.a.write("unread");
    p.a.flush();
    // Closing with unread data in the receive queue makes the kernel send a reset (RST).
    p.b.close();
    this_fiber::sleep_for(5ms);
    auto ec = code_of([&] {
      for (int i = 0; i < 100; ++i) {
        p.a.write(std::string(65536, 'x'));
        p.a.flush();
      }
    });
    CHECK(ec == squall::error::reset);
  });
}

TEST_CASE("half-close: the peer reads end of stream and can still answer") {
  io_loop loop;
  squall::tcp_server server(loop, [](io_stream& s, const squall::address&) {
    auto req = std::string(s.read_until_close(1024));
    s.write("got " + std::to_string(req.size()));
  });
  server.listen(0, "127.0.0.1");
  auto reply = run_sync(loop, [&] {
    io_stream c = squall::tcp_connect(server.addresses().at(0));
    c.write("twelve bytes");
    c.shutdown_write();
    return std::string(c.read_until_close(1024));
  });
  CHECK(reply == "got 12");
}

// io_uring runs a send that cannot go on in a kernel worker; cancelling it there (the deadline)
// ends it with EINTR rather than ECANCELED. Either way the caller hears of its deadline.
TEST_CASE("a send stuck on a peer that half-closed and stopped reading times out as timed_out") {
  io_loop loop;
  squall::event stop;
  squall::tcp_server server(loop, [&](io_stream& s, const squall::address&) {
    s.shutdown_write();  // FIN, then never a read
    stop.wait();
  });
  server.listen(0, "127.0.0.1");
  run_sync(loop, [&] {
    io_stream c = squall::tcp_connect(server.addresses().at(0));
    CHECK(c.read_some().empty());  // the peer's FIN
    std::string big(1 << 20, 'b');
    CHECK(code_of([&] {
            for (;;)
              c.write(big, io_loop::now() + 50ms);
          }) == squall::error::timed_out);
    stop.set();
  });
}

TEST_CASE("a cancel that comes before a large write's first send ends the write") {
  // The cancel is asked while the writer is runnable, so it reaches the writer's first wait: a
  // send the kernel may complete in part anyway (the cancel must then go on to the next send),
  // or, with the peer's side shut, hold between its first try and its worker, where a cancel
  // finds nothing yet (io_uring: the cancel is tried again until it takes).
  for (bool peer_shut : {false, true}) {
    CAPTURE(peer_shut);
    io_loop loop;
    squall::event stop;
    squall::tcp_server server(loop, [&](io_stream& s, const squall::address&) {
      if (peer_shut) s.shutdown_write();
      stop.wait();  // never a read
    });
    server.listen(0, "127.0.0.1");
    run_sync(loop, [&] {
      io_stream c = squall::tcp_connect(server.addresses().at(0));
      if (peer_shut) CHECK(c.read_some().empty());
      std::string big(32 << 20, 'b');
      squall::event go;
      std::error_code ended;
      auto writer = spawn([&] {
        go.wait();
        ended = code_of([&] { c.write(big, io_loop::now() + 20s); });
      });
      this_fiber::sleep_for(50ms);
      auto t0 = io_loop::now();
      go.set();  // runnable now; the cancel waits for its next wait
      writer.cancel();
      writer.join();
      CHECK(ended == squall::error::cancelled);
      CHECK(io_loop::now() - t0 < 5s);
      stop.set();
    });
  }
}

TEST_CASE("deadlines and the idle timeout end reads with timed_out") {
  io_loop loop;
  squall::io_stream_options idle;
  idle.idle_timeout = 20ms;
  stream_pair p(loop, idle);
  run_sync(loop, [&] {
    auto t0 = io_loop::now();
    CHECK(code_of([&] { p.b.read_some(io_loop::now() + 15ms); }) == squall::error::timed_out);
    CHECK(code_of([&] { p.a.read_some(); }) == squall::error::timed_out);  // idle timeout
    CHECK(io_loop::now() - t0 >= 30ms);
    // The streams still work after a timeout.
    p.b.write("ok");
    p.b.flush();
    CHECK(p.a.read_exactly(2) == "ok");
  });
}

TEST_CASE("cancelling a read loses no data: what arrives afterwards is read next") {
  io_loop loop;
  stream_pair p(loop);
  auto reader = spawn(loop, [&] { p.a.read_some(); });
  run_sync(loop, [&] {
    this_fiber::sleep_for(5ms);  // the reader is waiting (a ring operation on io_uring)
    reader.cancel();
    CHECK(code_of([&] { reader.join(); }) == squall::error::cancelled);
    p.b.write("after cancel");
    p.b.flush();
    CHECK(p.a.read_exactly(12) == "after cancel");
  });
}

TEST_CASE("cancelling a writer blocked by backpressure, and a fiber blocked in accept") {
  io_loop loop;
  stream_pair p(loop);
  auto writer = spawn(loop, [&] {
    std::string big(1 << 20, 'b');
    for (;;) {
      p.a.write(big);
      p.a.flush();
    }
  });
  auto lfds = squall::bind_sockets(0, "127.0.0.1");
  squall::async_fd listener(loop, lfds.at(0));
  auto acceptor = spawn(loop, [&] { listener.accept(); });
  run_sync(loop, [&] {
    this_fiber::sleep_for(10ms);
    writer.cancel();
    acceptor.cancel();
    CHECK(code_of([&] { writer.join(); }) == squall::error::cancelled);
    CHECK(code_of([&] { acceptor.join(); }) == squall::error::cancelled);
  });
}

TEST_CASE("closing a stream ends another fiber's read with closed") {
  io_loop loop;
  stream_pair p(loop);
  auto reader = spawn(loop, [&] { p.a.read_some(); });
  run_sync(loop, [&] {
    this_fiber::sleep_for(5ms);
    p.a.close();
    CHECK(code_of([&] { reader.join(); }) == squall::error::closed);
    CHECK(code_of([&] { p.a.read_some(); }) == squall::error::closed);
  });
}

TEST_CASE("close() and release() let go of the socket at once: the peer sees the end") {
  // On io_uring the loop holds a reference of its own to each socket it uses (a fixed-file
  // entry); one left behind would keep the socket open after the fd is closed.
  io_loop loop;
  int sv[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  squall::async_fd a(loop, sv[0]);
  io_stream b(loop, sv[1]);
  run_sync(loop, [&] {
    for (int i = 0; i < 2; ++i) {  // the second through the socket's entry, if it has one
      a.write_some("x", 1);
      CHECK(b.read_exactly(1, io_loop::now() + 5s) == "x");
    }
    SUBCASE("release(), then the caller closes the fd") {
      int fd = a.release();
      CHECK(fd == sv[0]);
      CHECK(!a.is_open());
      CHECK(::send(fd, "y", 1, MSG_NOSIGNAL) == 1);  // still the caller's socket
      CHECK(b.read_exactly(1, io_loop::now() + 5s) == "y");
      ::close(fd);
    }
    SUBCASE("close()") {
      a.close();
    }
    // Read in the same iteration: the end must be there without the loop waiting first.
    char c;
    CHECK(::recv(sv[1], &c, 1, MSG_DONTWAIT) == 0);
    CHECK(b.read_some(io_loop::now() + 5s).empty());
  });
}

TEST_CASE("pipelined writes go out together when the reader has to wait") {
  io_loop loop;
  stream_pair p(loop);
  run_sync(loop, [&] {
    // Three small responses are buffered, then a read that must wait flushes them.
    p.a.write("one;");
    p.a.write("two;");
    p.a.write("three;");
    CHECK(p.a.pending_write() == 14);
    auto peer = spawn(loop, [&] {
      auto got = std::string(p.b.read_exactly(14));
      CHECK(got == "one;two;three;");
      p.b.write("next");
      p.b.flush();
    });
    CHECK(p.a.read_exactly(4) == "next");
    CHECK(p.a.pending_write() == 0);
    peer.join();
  });
}

TEST_CASE("a large write goes out at once instead of being copied into the buffer") {
  io_loop loop;
  stream_pair p(loop);
  run_sync(loop, [&] {
    p.a.write("small");
    CHECK(p.a.pending_write() == 5);  // gathered
    std::string big(32 * 1024, 'L');
    p.a.write(big);
    CHECK(p.a.pending_write() == 0);  // sent with the buffered bytes, from our memory
    auto got = std::string(p.b.read_exactly(5 + big.size()));
    CHECK(got == "small" + big);
  });
}

TEST_CASE("a reading fiber and a writing fiber share one stream without corrupting it") {
  io_loop loop;
  squall::tcp_server server(loop, squall::test::echo);
  server.listen(0, "127.0.0.1");
  auto lines = run_sync(loop, [&] {
    io_stream c = squall::tcp_connect(server.addresses().at(0));
    constexpr int n = 300;
    // The writer flushes now and then; the reader writes too, so its reads flush (duplex on
    // io_uring) while the writer may be sending.
    auto writer = spawn(loop, [&] {
      for (int i = 0; i < n; ++i) {
        c.write("w" + std::to_string(i) + "\n");
        if (i % 7 == 0) c.flush();
        if (i % 13 == 0) this_fiber::yield();
      }
      c.flush();
    });
    std::vector<std::string> got;
    int r = 0;
    while (static_cast<int>(got.size()) < 2 * n) {
      if (r < n) c.write("r" + std::to_string(r++) + "\n");
      got.emplace_back(c.read_until("\n", 64));
    }
    writer.join();
    return got;
  });
  int w = 0, r = 0;
  for (auto& l : lines) {
    REQUIRE(l.size() >= 3);
    // Each line arrives whole, and each writer's lines keep their order.
    if (l[0] == 'w')
      CHECK(l == "w" + std::to_string(w++) + "\n");
    else
      CHECK(l == "r" + std::to_string(r++) + "\n");
  }
  CHECK(w == 300);
  CHECK(r == 300);
}

TEST_CASE("cancelling a read that first flushed: the bytes went out, and later data is read") {
  io_loop loop;
  stream_pair p(loop);
  auto reader = spawn(loop, [&] {
    p.a.write("request");
    p.a.read_some();  // flushes "request", then waits
  });
  run_sync(loop, [&] {
    CHECK(p.b.read_exactly(7) == "request");
    reader.cancel();
    CHECK(code_of([&] { reader.join(); }) == squall::error::cancelled);
    p.b.write("reply");
    p.b.flush();
    CHECK(p.a.read_exactly(5) == "reply");
  });
}

// --- Regressions from review: each failed (wrong data, hang, use-after-free) before its fix.

TEST_CASE("a read queued in the same iteration as another fiber's close never reads a reused fd") {
  io_loop loop;
  int sv[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  auto a = std::make_unique<squall::async_fd>(loop, sv[0]);
  int fresh[2] = {-1, -1};
  std::error_code reader_error;
  std::size_t reader_got = 0;
  auto reader = spawn(loop, [&] {
    char buf[64];
    try {
      reader_got = a->read_some(buf, sizeof buf);
    } catch (const std::system_error& e) {
      reader_error = e.code();
    }
  });
  auto closer = spawn(loop, [&] {
    a->close();
    // The number is free again: a new connection gets it, and its peer sends a secret.
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fresh) == 0);
    REQUIRE(::write(fresh[1], "SECRET", 6) == 6);
  });
  for (int i = 0; i < 20; ++i)
    loop.run_once(5ms);
  CHECK(reader_got == 0);
  CHECK(reader_error == squall::error::closed);
  char b[16];
  CHECK(::recv(fresh[0], b, sizeof b, MSG_DONTWAIT) == 6);  // the secret is still there
  ::close(fresh[0]);
  ::close(fresh[1]);
  ::close(sv[1]);
}

TEST_CASE("closing a stream whose reader is flushing first does not wait for the peer") {
  io_loop loop;
  stream_pair p(loop);
  auto reader = spawn(loop, [&] {
    p.a.write("pending");
    p.a.read_some();  // flushes "pending" (with the receive, on io_uring), then waits
  });
  run_sync(loop, [&] {
    this_fiber::sleep_for(5ms);
    auto t0 = io_loop::now();
    p.a.close();  // must not wait for the reader's receive, which waits for the peer
    CHECK(io_loop::now() - t0 < 1s);
    CHECK(code_of([&] { reader.join(); }) == squall::error::closed);
  });
}

TEST_CASE("destroying a stream while another fiber waits on it ends that wait with closed") {
  io_loop loop;
  auto p = std::make_unique<stream_pair>(loop);
  auto reader = spawn(loop, [&] {
    p->a.write("x");
    p->a.read_some();
  });
  auto writer = spawn(loop, [&] { p->a.write("y"); });  // waits for the reader's send
  run_sync(loop, [&] {
    this_fiber::yield();
    p.reset();  // ASan would catch any touch of the freed stream by the resuming fibers
    CHECK(code_of([&] { reader.join(); }) == squall::error::closed);
    auto ec = code_of([&] { writer.join(); });
    CHECK((!ec || ec == squall::error::closed));
  });
}

TEST_CASE("destroying a stream under a stuck send and two waiting writers ends all three") {
  // The reader's send cannot finish (the peer reads nothing), so both writers really wait for
  // it. The calls left behind share the stream's buffers, which the last to end frees: ASan
  // reports a touch of the freed stream, a double free or a leak.
  for (int order = 0; order < 2; ++order) {
    CAPTURE(order);
    io_loop loop;
    auto p =
        std::make_unique<stream_pair>(loop, squall::io_stream_options{.write_high_water = 8 << 20});
    const std::string big(4 << 20, 'b');
    bool sending_seen = false;
    auto reader = spawn(loop, [&] {
      p->a.write(std::string_view(big).substr(0, 8000));  // buffered, sent by the read
      p->a.write(std::string_view(big).substr(0, 15000));
      for (int i = 0; i < 200; ++i)
        p->a.write(std::string_view(big).substr(0, 15000));
      p->a.read_some();
    });
    auto w1 = spawn(loop, [&] { p->a.write("one"); });
    auto w2 = spawn(loop, [&] { p->a.write("two"); });
    run_sync(loop, [&] {
      this_fiber::sleep_for(20ms);
      sending_seen = p->a.pending_write() == 0;  // the reader took the buffer to send it
      p.reset();
      // The fibers end in either order; both ways the last call frees the buffers.
      auto& first = order == 0 ? w1 : w2;
      auto& second = order == 0 ? w2 : w1;
      CHECK(code_of([&] { first.join(); }) == squall::error::closed);
      CHECK(code_of([&] { reader.join(); }) == squall::error::closed);
      CHECK(code_of([&] { second.join(); }) == squall::error::closed);
    });
    CHECK(sending_seen);
  }
}

TEST_CASE("bytes received while a flush-first read times out are not lost") {
  io_loop loop;
  stream_pair p(loop);
  run_sync(loop, [&] {
    // Fill the socket buffers so that the next send cannot complete.
    std::string big(1 << 20, 'b');
    CHECK(code_of([&] {
            for (;;)
              p.a.write(big, io_loop::now() + 50ms);
          }) == squall::error::timed_out);
    p.b.write("HELLO");
    p.b.flush();
    p.a.write("z");  // buffered: the next read flushes it first, and that send cannot finish
    std::string got;
    // The read times out on its send; what it received must come back, now or from the next
    // read, and the failed send is reported by the next write.
    for (int i = 0; i < 3 && got.size() < 5; ++i) {
      try {
        got += std::string(p.a.read_some(io_loop::now() + 50ms));
      } catch (const std::system_error& e) {
        CHECK((e.code() == squall::error::timed_out));
      }
    }
    CHECK(got == "HELLO");
  });
}

TEST_CASE("loop shutdown unwinds a fiber mid send-and-receive only after both are done") {
  int sv[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  int attempts = 0;
  {
    io_loop loop;
    unpool_stacks(loop);
    spawn(loop, [fd0 = sv[0], &attempts] {
      squall::async_fd fd(this_fiber::loop(), fd0);
      std::vector<char> big(8 << 20, 'x');
      char buf[64];
      for (;;) {  // swallows cancellation: shutdown has to unwind it
        iovec v{big.data(), big.size()};
        try {
          ++attempts;
          fd.write_all_read_some(&v, 1, buf, sizeof buf);
        } catch (const std::system_error&) {
        }
      }
    }).detach();
    for (int i = 0; i < 5; ++i)
      loop.run_once(5ms);
  }  // must not crash, and ASan must see no write into a dead stack
  CHECK(attempts >= 1);
  ::close(sv[1]);
}

// --- write_all_read_some's deferred send (epoll, kqueue: the loop makes the send at the end of
// its iteration, together with other connections'; io_uring takes the ring's path for the same
// calls, and must behave the same).

namespace {

struct fd_pair {
  squall::async_fd a, b;
  explicit fd_pair(io_loop& loop) {
    int sv[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    a = squall::async_fd(loop, sv[0]);
    b = squall::async_fd(loop, sv[1]);
  }
};

std::string read_n(squall::async_fd& fd, std::size_t n) {
  std::string out(n, '\0');
  for (std::size_t got = 0; got < n;) {
    std::size_t r = fd.read_some(out.data() + got, n - got, io_loop::now() + 20s);
    REQUIRE(r > 0);
    got += r;
  }
  return out;
}

void write_str(squall::async_fd& fd, std::string_view s) {
  iovec v{const_cast<char*>(s.data()), s.size()};
  fd.write_all(&v, 1, io_loop::now() + 20s);
}

// write_all_read_some of `req`, returning what it read.
std::string exchange(squall::async_fd& fd, std::string_view req, time_point deadline) {
  char buf[64];
  iovec v[2] = {{const_cast<char*>(req.data()), req.size() / 2},
                {const_cast<char*>(req.data()) + req.size() / 2, req.size() - req.size() / 2}};
  std::size_t n = fd.write_all_read_some(v, 2, buf, sizeof buf, deadline);
  return std::string(buf, n);
}

// One exchange answered by the peer: afterwards `a` has drained its socket, which is when a
// readiness backend defers the next exchange's send.
void prime(io_loop& loop, fd_pair& p) {
  auto peer = spawn(loop, [&] {
    CHECK(read_n(p.b, 5) == "prime");
    write_str(p.b, "ok");
  });
  CHECK(exchange(p.a, "prime", io_loop::now() + 20s) == "ok");
  peer.join();
}

}  // namespace

TEST_CASE("write_all_read_some: a send bigger than the socket buffer goes out whole, first") {
  io_loop loop;
  fd_pair p(loop);
  std::string big(8 << 20, '\0');
  for (std::size_t i = 0; i < big.size(); ++i)
    big[i] = static_cast<char>(i * 7 + i / 4093);
  run_sync(loop, [&] {
    prime(loop, p);
    auto peer = spawn(loop, [&] {
      this_fiber::sleep_for(20ms);  // the first attempt finds the buffer full
      CHECK(read_n(p.b, big.size()) == big);
      write_str(p.b, "done");
    });
    CHECK(exchange(p.a, big, io_loop::now() + 20s) == "done");
    peer.join();
  });
}

TEST_CASE("write_all_read_some: the sends of many connections in one iteration all arrive") {
  io_loop loop;
  constexpr int n = 50;
  std::vector<std::unique_ptr<fd_pair>> pairs;
  for (int i = 0; i < n; ++i)
    pairs.push_back(std::make_unique<fd_pair>(loop));
  int answered = 0;
  std::vector<squall::fiber<void>> fibers;
  for (int i = 0; i < n; ++i) {
    fd_pair& p = *pairs[static_cast<std::size_t>(i)];
    // Peers echo the request, upper-cased, after reading it whole.
    fibers.push_back(spawn(loop, [&p, i] {
      for (int round = 0; round < 2; ++round) {
        std::string req = "request " + std::to_string(i);
        std::string got = read_n(p.b, req.size());
        CHECK(got == req);
        for (char& c : got)
          c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        write_str(p.b, got);
      }
    }));
    // Each asks twice: the second exchange, deferred, starts right after the first answer.
    fibers.push_back(spawn(loop, [&p, i, &answered] {
      for (int round = 0; round < 2; ++round) {
        std::string req = "request " + std::to_string(i);
        std::string want = "REQUEST " + std::to_string(i);
        CHECK(exchange(p.a, req, io_loop::now() + 20s) == want);
      }
      ++answered;
    }));
  }
  run_sync(loop, [&] {
    for (auto& f : fibers)
      f.join();
  });
  CHECK(answered == n);
}

TEST_CASE("write_all_read_some: cancelled before the loop sent it, the request still goes out") {
  io_loop loop;
  fd_pair p(loop);
  run_sync(loop, [&] { prime(loop, p); });
  // Both start in the same iteration: the exchange is queued, then cancelled before the
  // iteration's end.
  auto asker = spawn(loop, [&] { exchange(p.a, "hello", time_point::max()); });
  auto canceller = spawn(loop, [&] { asker.cancel(); });
  run_sync(loop, [&] {
    canceller.join();
    CHECK(code_of([&] { asker.join(); }) == squall::error::cancelled);
    CHECK(read_n(p.b, 5) == "hello");
  });
}

TEST_CASE("write_all_read_some: a deadline that passes while the answer is awaited") {
  io_loop loop;
  fd_pair p(loop);
  run_sync(loop, [&] {
    prime(loop, p);
    auto t0 = io_loop::now();
    CHECK(code_of([&] { exchange(p.a, "ping", t0 + 30ms); }) == squall::error::timed_out);
    CHECK(io_loop::now() - t0 >= 30ms);
    CHECK(read_n(p.b, 4) == "ping");  // sent before the wait timed out
    // The next exchange on the same fd works.
    auto peer = spawn(loop, [&] {
      CHECK(read_n(p.b, 4) == "ping");
      write_str(p.b, "pong");
    });
    CHECK(exchange(p.a, "ping", io_loop::now() + 20s) == "pong");
    peer.join();
  });
}

TEST_CASE("write_all_read_some: a peer gone before the loop's send is an error, not a hang") {
  io_loop loop;
  fd_pair p(loop);
  run_sync(loop, [&] { prime(loop, p); });
  auto asker = spawn(loop, [&] { exchange(p.a, "anyone?", io_loop::now() + 5s); });
  auto closer = spawn(loop, [&] { p.b.close(); });  // same iteration, before the send
  run_sync(loop, [&] {
    closer.join();
    auto t0 = io_loop::now();
    auto ec = code_of([&] { asker.join(); });
    CHECK(ec);
    CHECK(ec != squall::error::timed_out);
    CHECK(io_loop::now() - t0 < 4s);
  });
}

TEST_CASE("write_all_read_some: the fd closed by another fiber while the send is queued") {
  io_loop loop;
  fd_pair p(loop);
  run_sync(loop, [&] { prime(loop, p); });
  // The loop's queued send must not outlive the fd's state (ASan), nor reach a reused fd.
  auto asker = spawn(loop, [&] { exchange(p.a, "lost", io_loop::now() + 5s); });
  auto closer = spawn(loop, [&] { p.a.close(); });
  run_sync(loop, [&] {
    closer.join();
    CHECK(code_of([&] { asker.join(); }) == squall::error::closed);
    // The peer sees the end of the stream, after at most the request (io_uring had already
    // handed it to the kernel when the close came).
    char c[8];
    std::size_t n = p.b.read_some(c, sizeof c, io_loop::now() + 5s);
    if (n) {
      CHECK(std::string(c, n) == std::string("lost").substr(0, n));
      while (std::size_t more = p.b.read_some(c, sizeof c, io_loop::now() + 5s))
        CHECK(more <= 4);
    }
  });
}

TEST_CASE("write_all_read_some: loop shutdown with a deferred send leaves nothing behind") {
  int sv[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  REQUIRE(::write(sv[1], "ok", 2) == 2);  // the first read comes up short: the socket drains
  int attempts = 0;
  {
    io_loop loop;
    unpool_stacks(loop);
    spawn(loop, [fd0 = sv[0], &attempts] {
      squall::async_fd fd(this_fiber::loop(), fd0);
      char buf[64];
      CHECK(fd.read_some(buf, sizeof buf) == 2);
      for (;;) {  // swallows cancellation: shutdown has to unwind it
        std::string req = "request " + std::to_string(attempts);
        try {
          ++attempts;
          exchange(fd, req, time_point::max());
        } catch (const std::system_error&) {
        }
      }
    }).detach();
    for (int i = 0; i < 3; ++i)
      loop.run_once(5ms);
  }  // the loop's queued sends must not read the unwound frames, nor wake a dead waiter
  CHECK(attempts >= 1);
  // What the peer got is whole requests, nothing from a dead frame.
  char buf[4096];
  ssize_t n = ::recv(sv[1], buf, sizeof buf, MSG_DONTWAIT);
  std::string got(buf, n > 0 ? static_cast<std::size_t>(n) : 0);
  std::string want;
  for (int i = 0; want.size() < got.size(); ++i)
    want += "request " + std::to_string(i);
  CHECK(got == want.substr(0, got.size()));
  ::close(sv[1]);
}

// --- flush_later(), and a flush-first read that lets other writers in once its send is done.

TEST_CASE("flush_later: with no read after it, the loop sends the buffer at the iteration's end") {
  io_loop loop;
  stream_pair p(loop);
  squall::event got;
  auto writer = spawn(loop, [&] {
    p.a.write("soon");
    p.a.flush_later();
    p.a.flush_later();  // once is enough; a second call adds nothing
    CHECK(p.a.pending_write() == 4);
    got.wait(io_loop::now() + 5s);  // not a read: nothing here sends it
    CHECK(p.a.pending_write() == 0);
  });
  run_sync(loop, [&] {
    CHECK(p.b.read_exactly(4, io_loop::now() + 5s) == "soon");
    got.set();
    writer.join();
    // Sent once: the next bytes are the next write's.
    p.a.write("next");
    p.a.flush();
    CHECK(p.b.read_exactly(4, io_loop::now() + 5s) == "next");
  });
}

TEST_CASE("flush_later then a read: the read sends it with its wait, once") {
  io_loop loop;
  stream_pair p(loop);
  run_sync(loop, [&] {
    auto peer = spawn(loop, [&] {
      CHECK(p.b.read_exactly(3, io_loop::now() + 5s) == "req");
      p.b.write("ans");
      p.b.flush();
      CHECK(p.b.read_exactly(3, io_loop::now() + 5s) == "end");
    });
    p.a.write("req");
    p.a.flush_later();
    CHECK(p.a.read_exactly(3, io_loop::now() + 5s) == "ans");
    p.a.write("end");
    p.a.flush();
    peer.join();
  });
}

TEST_CASE("flush_later of more than the socket takes: a fiber sends the rest") {
  io_loop loop;
  squall::io_stream_options big;
  big.write_high_water = 4 * 1024 * 1024;  // everything stays buffered until flushed
  stream_pair p(loop, big);
  std::string data;
  for (int i = 0; data.size() < 1024 * 1024; ++i)
    data += std::to_string(i) + ",";
  squall::event got;
  auto writer = spawn(loop, [&] {
    for (std::size_t off = 0; off < data.size(); off += 8000)
      p.a.write(std::string_view(data).substr(off, 8000));
    p.a.flush_later();
    got.wait(io_loop::now() + 10s);
  });
  run_sync(loop, [&] {
    this_fiber::sleep_for(20ms);  // the loop's send fills the socket and leaves the rest
    CHECK(p.a.pending_write() > 0);
    CHECK(p.a.pending_write() < data.size());
    CHECK(p.b.read_exactly(data.size(), io_loop::now() + 10s) == data);
    got.set();
    writer.join();
    CHECK(p.a.pending_write() == 0);
  });
}

TEST_CASE("flush_later to a peer that is gone: the next write reports it") {
  io_loop loop;
  stream_pair p(loop);
  run_sync(loop, [&] {
    p.b.close();
    p.a.write("into the void");
    p.a.flush_later();
    this_fiber::sleep_for(5ms);  // the iteration ends; its send fails
    CHECK(p.a.pending_write() == 0);
    CHECK(code_of([&] { p.a.write("more"); }) == squall::error::reset);
  });
}

TEST_CASE("a read that flushed first lets another fiber write as soon as its send is done") {
  // The peer answers only once it has both writes. Were the second writer made to wait for the
  // reader's receive (not just its send), neither would ever finish.
  io_loop loop;
  stream_pair p(loop);
  auto reader = spawn(loop, [&] {
    p.a.write("first;");
    CHECK(p.a.read_exactly(4, io_loop::now() + 10s) == "done");
  });
  auto peer = spawn(loop, [&] {
    CHECK(p.b.read_exactly(13, io_loop::now() + 10s) == "first;second;");
    p.b.write("done");
    p.b.flush();
  });
  run_sync(loop, [&] {
    this_fiber::sleep_for(5ms);  // the reader has sent and waits for the answer
    auto t0 = io_loop::now();
    p.a.write("second;");
    p.a.flush(io_loop::now() + 5s);
    CHECK(io_loop::now() - t0 < 1s);
    reader.join();
    peer.join();
  });
}

TEST_CASE("close() from outside a fiber still sends what the socket takes") {
  io_loop loop;
  stream_pair p(loop);
  run_sync(loop, [&] { p.a.write("bye"); });
  CHECK(p.a.pending_write() == 3);
  p.a.close();  // not in a fiber: no waiting, but the socket has room
  run_sync(loop, [&] { CHECK(p.b.read_until_close(100, io_loop::now() + 5s) == "bye"); });
}

// --- Buffers lent from the loop's pool (io_stream_options::lend_buffers) ----------------------

namespace {

// Loop options for the two ways an io_uring loop receives, as subcases: into the loop's shared
// region, or into each stream's own buffer (on epoll and kqueue both are the same).
io_loop::options receive_modes() {
  io_loop::options lo;
  SUBCASE("with the shared receive region (io_uring, Linux 6.12)") {
    lo.shared_receive_from = 0;
  }
  SUBCASE("without it") {
    lo.shared_receive_from = SIZE_MAX;
  }
  return lo;
}

// io_uring without incremental buffer rings (before Linux 6.12) hands its receive a buffer when
// it is submitted, which the kernel then holds while the stream waits; with them, the kernel
// picks one in the loop's region on arrival.
bool receive_holds_buffer(io_stream& s) {
  return s.handle().reads_at_submit() && !s.handle().provides_read_buffers();
}

// From a fiber: waits until another fiber has set `flag` (a second at most).
void wait_for_flag(const bool& flag) {
  for (int i = 0; i < 1000 && !flag; ++i)
    this_fiber::sleep_for(1ms);
  REQUIRE(flag);
}

}  // namespace

TEST_CASE("an idle stream gives its buffers back to the loop's pool") {
  io_loop loop(receive_modes());
  auto& pool = squall::detail::buffer_pool_of(loop);
  stream_pair p(loop);
  bool held_in_kernel = receive_holds_buffer(p.a);
  REQUIRE(pool.free_count() == 0);
  run_sync(loop, [&] {
    p.b.write("ping");
    CHECK(pool.free_count() == 0);  // b holds the bytes
    p.b.flush();
    CHECK(pool.free_count() == 1);  // sent: the buffer is back
    p.b.write(std::string_view{});
    CHECK(pool.free_count() == 1);  // nothing to hold: nothing borrowed
  });
  bool got_ping = false;
  auto reader = spawn(loop, [&] {
    CHECK(p.a.read_some(io_loop::now() + 5s) == "ping");
    CHECK(pool.free_count() == 0);  // the view is into the borrowed buffer
    got_ping = true;
    CHECK(p.a.read_some(io_loop::now() + 5s) == "pong");
  });
  run_sync(loop, [&] {
    wait_for_flag(got_ping);
    this_fiber::sleep_for(5ms);  // the reader waits for the next bytes
    // The empty buffer is back while the reader waits, unless the receive holds it.
    CHECK(pool.free_count() == (held_in_kernel ? 0u : 1u));
    p.b.write("pong");
    p.b.flush();
    reader.join();
  });
}

TEST_CASE("a message that comes in pieces is read on into the buffer it started in") {
  // The first bytes stay buffered while the rest is read, as when a parser waits for the end of
  // a head. The read after them has 64 KiB less those bytes of room, which must do: demanding a
  // whole 64 KiB made the buffer grow to 128 KiB, and a grown buffer stays with its stream, so
  // every connection that once got a request in two pieces held 128 KiB even when idle.
  io_loop loop(receive_modes());
  auto& pool = squall::detail::buffer_pool_of(loop);
  stream_pair p(loop);
  bool held_in_kernel = receive_holds_buffer(p.a);
  constexpr std::string_view first = "GET / HTTP/1.1\r\n",
                             whole = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  bool got_first = false, got_whole = false;
  auto reader = spawn(loop, [&] {
    auto deadline = io_loop::now() + 5s;
    while (p.a.peek().size() < first.size())
      REQUIRE(p.a.read_more(deadline));
    CHECK(p.a.peek() == first);
    const char* at = p.a.peek().data();
    got_first = true;
    while (p.a.peek().size() < whole.size())
      REQUIRE(p.a.read_more(deadline));
    CHECK(p.a.peek() == whole);
    CHECK(p.a.peek().data() == at);  // the same buffer: it did not have to grow
    p.a.consume(whole.size());
    got_whole = true;
    CHECK(p.a.read_some(deadline) == "next");
  });
  run_sync(loop, [&] {
    p.b.write(first);
    p.b.flush();
    wait_for_flag(got_first);
    p.b.write(whole.substr(first.size()));
    p.b.flush();
    wait_for_flag(got_whole);
    this_fiber::sleep_for(5ms);  // the reader waits for the next bytes
    // b's write buffer is back, and so is a's empty read buffer (a 64 KiB block, not a grown
    // one), unless a receive submitted with it holds it.
    CHECK(pool.free_count() == (held_in_kernel ? 1u : 2u));
    p.b.write("next");
    p.b.flush();
    reader.join();
  });
}

TEST_CASE("a view stays intact until the next read while other streams borrow and return") {
  // Many streams share a pool of one block (free_buffers = 1): a stream that gave its buffer
  // back too early, or lent one it still had bytes in, would see another stream's bytes.
  io_loop::options lo;
  lo.free_buffers = 1;
  io_loop loop(lo);
  constexpr int n = 24;
  std::vector<std::unique_ptr<stream_pair>> pairs;
  for (int i = 0; i < n; ++i)
    pairs.push_back(std::make_unique<stream_pair>(loop));
  int ok = 0;
  std::vector<squall::fiber<void>> fibers;
  for (int i = 0; i < n; ++i) {
    fibers.push_back(spawn(loop, [&, i] {
      stream_pair& p = *pairs[i];
      std::string line = "line " + std::to_string(i) + " of stream " + std::to_string(i) + "\n";
      for (int round = 0; round < 20; ++round) {
        // Two lines, the second in two pieces, so that the buffer is sometimes left non-empty.
        p.b.write(line);
        p.b.write(std::string_view(line).substr(0, 5));
        p.b.flush();
        std::string_view got = p.a.read_until("\n", 1000, io_loop::now() + 5s);
        this_fiber::sleep_for(std::chrono::microseconds(100 * (i % 3)));  // others run
        CHECK(got == line);  // still this stream's bytes
        p.b.write(std::string_view(line).substr(5));
        p.b.flush();
        CHECK(p.a.read_until("\n", 1000, io_loop::now() + 5s) == line);
      }
      ++ok;
    }));
  }
  run_sync(loop, [&] {
    for (auto& f : fibers)
      f.join();
  });
  CHECK(ok == n);
  CHECK(squall::detail::buffer_pool_of(loop).free_count() <= 1);
}

namespace {

// Stream i's bytes in round r: a size and a content no other stream or round has.
std::string message_of(int i, int round, std::size_t size) {
  std::string m(size, '\0');
  for (std::size_t k = 0; k < size; ++k)
    m[k] = static_cast<char>('!' + (i * 7 + round * 13 + static_cast<int>(k)) % 90);
  m.replace(0, std::min<std::size_t>(size, 12),
            (std::to_string(i) + "/" + std::to_string(round) + ":").substr(0, size));
  return m;
}

// Every reader first drains one small message, so that its next receive waits (on io_uring
// with buffer rings, a receive into the loop's shared region); then in each round all writers
// send at once, and every reader checks that it got exactly its own bytes.
void receive_together(io_loop& loop, int pairs_n, int rounds, std::size_t (*size_of)(int, int)) {
  std::vector<std::unique_ptr<stream_pair>> pairs;
  for (int i = 0; i < pairs_n; ++i)
    pairs.push_back(std::make_unique<stream_pair>(loop));
  int ok = 0;
  std::vector<squall::fiber<void>> readers;
  for (int i = 0; i < pairs_n; ++i)
    readers.push_back(spawn(loop, [&, i] {
      io_stream& a = pairs[i]->a;
      CHECK(a.read_exactly(1, io_loop::now() + 10s) == "h");
      for (int r = 0; r < rounds; ++r) {
        std::string want = message_of(i, r, size_of(i, r));
        std::string_view got = a.read_exactly(want.size(), io_loop::now() + 10s);
        if (got != want) {
          FAIL_CHECK("stream " << i << " round " << r << ": wrong bytes");
          return;
        }
      }
      ++ok;
    }));
  run_sync(loop, [&] {
    for (auto& p : pairs) {
      p->b.write("h");
      p->b.flush();
    }
    this_fiber::sleep_for(5ms);  // every reader waits for its next bytes
    for (int r = 0; r < rounds; ++r) {
      // Straight to the sockets, without yielding in between: the receives all find their
      // bytes at the loop's next turn, in one batch.
      std::vector<std::string> left;
      for (int i = 0; i < pairs_n; ++i)
        left.push_back(message_of(i, r, size_of(i, r)));
      for (bool more = true; more;) {
        more = false;
        for (int i = 0; i < pairs_n; ++i) {
          std::string& m = left[i];
          ssize_t n = m.empty() ? 0 : ::send(pairs[i]->b.fd(), m.data(), m.size(), MSG_DONTWAIT);
          if (n > 0) m.erase(0, static_cast<std::size_t>(n));
          more = more || !m.empty();
        }
        if (more) this_fiber::sleep_for(1ms);  // a full socket buffer: let the readers read
      }
    }
    for (auto& f : readers)
      f.join();
  });
  CHECK(ok == pairs_n);
}

}  // namespace

TEST_CASE("bytes that many streams receive in one batch each land in their own stream") {
  // On io_uring with buffer rings the kernel packs them one after another into the loop's
  // receive region, and which bytes belong to whom follows from the completions' order: a
  // miscounted offset would hand a stream its neighbour's bytes.
  io_loop::options lo;
  lo.shared_receive_from = 0;  // from the first socket on
  io_loop loop(lo);
  receive_together(loop, 64, 30, [](int i, int r) -> std::size_t {
    return 1 + static_cast<std::size_t>((i * 37 + r * 101) % 3000);
  });
}

TEST_CASE("streams receiving more at once than the shared receive region holds lose nothing") {
  // 600 streams receive 5 KiB each in one batch. A receive into io_uring's 2 MiB region asks
  // for 4 KiB at most, so the batch wants more than the region holds: receives that find it
  // full (ENOBUFS) read into their own buffers instead.
  io_loop::options lo;
  lo.shared_receive_from = 0;
  io_loop loop(lo);
  receive_together(loop, 600, 2, [](int, int) -> std::size_t { return 5 * 1024; });
}

TEST_CASE("a closed stream's buffers go back to the pool, which keeps at most free_buffers") {
  io_loop::options lo;
  lo.free_buffers = 2;
  io_loop loop(lo);
  auto& pool = squall::detail::buffer_pool_of(loop);
  {
    std::vector<std::unique_ptr<stream_pair>> pairs;
    for (int i = 0; i < 4; ++i)
      pairs.push_back(std::make_unique<stream_pair>(loop));
    run_sync(loop, [&] {
      for (auto& p : pairs) {
        p->a.write("unsent");  // a write buffer each, not flushed
        p->b.write("x");
        p->b.flush();
        CHECK(p->a.read_exactly(1, io_loop::now() + 5s) == "x");
        p->a.write("more");
      }
    });
    CHECK(pool.free_count() <= 1);
  }
  CHECK(pool.free_count() == 2);
}

TEST_CASE("with lend_buffers off a stream keeps its own buffers") {
  io_loop loop;
  auto& pool = squall::detail::buffer_pool_of(loop);
  squall::io_stream_options own;
  own.lend_buffers = false;
  {
    stream_pair p(loop, own, own);
    run_sync(loop, [&] {
      for (int i = 0; i < 3; ++i) {
        p.b.write("hello");
        p.b.flush();
        CHECK(p.a.read_exactly(5, io_loop::now() + 5s) == "hello");
      }
    });
  }
  CHECK(pool.free_count() == 0);  // never borrowed from, never given to
}
