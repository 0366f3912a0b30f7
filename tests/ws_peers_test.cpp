// SPDX-License-Identifier: MIT
// squall's WebSocket server and client against peers we did not write, all on loopback:
// Python's `websockets` and Tornado (client and server, compression on and off), Node's `ws`
// (client), the squall tool (`squall ws`, and `squall serve`'s /ws/echo and /chat), and headless
// Chromium on the /chat page talking with a squall client through the server.
//
// A missing peer fails its test with the command that installs it (tools/dev installs them
// all); nothing is downloaded at run time.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "doctest/doctest.h"
#include "http_test_util.hpp"
#include "squall/fiber.hpp"
#include "squall/http/client.hpp"
#include "squall/http/server.hpp"
#include "squall/websocket/websocket.hpp"
#include "test_util.hpp"

using namespace squall;
using namespace squall::test;
using namespace std::chrono_literals;
namespace ws = squall::websocket;

namespace {

const std::string source_root = SQUALL_SOURCE_ROOT;

// The squall tool: $SQUALL_TOOL if set (to try a build elsewhere), else the one built here.
std::string squall_tool() {
  const char* env = std::getenv("SQUALL_TOOL");
  return env && *env ? env : SQUALL_TOOL;
}

std::string npm_dir() {
  const char* env = std::getenv("SQUALL_NPM_DIR");
  return env && *env ? env : "/var/cache/squall-npm";
}

// A child process, killed (SIGTERM, then waited for) when this goes away, and by the kernel if
// the test process dies first, so no peer outlives a test run.
class child {
 public:
  child() = default;
  child(const child&) = delete;
  child& operator=(const child&) = delete;
  ~child() { stop(); }

  // Runs argv with stdin from /dev/null, stdout to a pipe, stderr to `err_file`.
  void start(const std::vector<std::string>& argv, const std::string& err_file) {
    int p[2];
    REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
    // Everything the child needs is made before fork(): no allocation after it.
    std::vector<char*> args;
    for (const auto& a : argv)
      args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    pid_ = ::fork();
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      ::setpgid(0, 0);  // its own group: stop() ends everything it started
      int in = ::open("/dev/null", O_RDONLY);
      ::dup2(in, 0);
      ::dup2(p[1], 1);
      int err = ::open(err_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ::dup2(err, 2);
      ::execvp(args[0], args.data());
      ::_exit(127);
    }
    ::close(p[1]);
    out_ = p[0];
  }

  void stop() {
    if (pid_ > 0) {
      ::kill(-pid_, SIGTERM);
      ::kill(pid_, SIGTERM);
      auto end = std::chrono::steady_clock::now() + 5s;
      int status;
      while (::waitpid(pid_, &status, WNOHANG) == 0) {
        if (std::chrono::steady_clock::now() > end) {
          ::kill(-pid_, SIGKILL);
          ::kill(pid_, SIGKILL);
          ::waitpid(pid_, &status, 0);
          break;
        }
        ::usleep(10000);
      }
      ::kill(-pid_, SIGKILL);  // whatever of its group is left (browser helpers)
      pid_ = -1;
    }
    if (out_ >= 0) ::close(out_);
    out_ = -1;
  }

  // One line of the child's stdout (without '\n'); empty on EOF or after `timeout`. Blocking:
  // call it off the loop's thread while the loop must run, or when the loop has nothing to do.
  std::string read_line(std::chrono::milliseconds timeout) {
    std::string line;
    auto end = std::chrono::steady_clock::now() + timeout;
    char c;
    while (std::chrono::steady_clock::now() < end) {
      pollfd pfd{out_, POLLIN, 0};
      if (::poll(&pfd, 1, 50) <= 0) continue;
      if (::read(out_, &c, 1) != 1) return line;
      if (c == '\n') return line;
      line += c;
    }
    return line;
  }

  bool running() {
    int status;
    return pid_ > 0 && ::waitpid(pid_, &status, WNOHANG) == 0;
  }

 private:
  pid_t pid_ = -1;
  int out_ = -1;
};

std::string file_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

std::string temp_dir() {
  char tmpl[] = "/tmp/squall-ws-XXXXXX";
  return mkdtemp(tmpl);
}

// The Python with `module`, or a failed REQUIRE naming the Debian package.
std::string python_or_fail(const std::string& module, const std::string& package) {
  std::string py = python_with(module);
  if (py.empty())
    FAIL("Python module '" << module << "' is missing: apt-get install " << package
                           << " (tools/dev installs it)");
  return py;
}

// An in-process squall server: /echo (subprotocol chat.v2 when offered, permessage-deflate when
// offered) records how each connection ended.
struct echo_server {
  io_loop loop;
  std::unique_ptr<http::server> srv;
  std::uint16_t port = 0;
  std::vector<std::pair<std::uint16_t, std::string>> closes;
  std::vector<bool> compressed;
  std::vector<std::string> protocols;

  explicit echo_server(http::router extra = {}) {
    http::router routes = std::move(extra);
    routes.get("/echo", [this](http::request& req, http::response& resp) {
      ws::options o;
      o.subprotocols = {"chat.v2"};
      o.compression = true;
      o.max_message_size = 16 << 20;
      auto c = ws::accept(req, resp, std::move(o));
      compressed.push_back(c.compressed());
      protocols.push_back(c.subprotocol());
      while (auto m = c.receive())
        c.send(m->data, m->type);
      closes.emplace_back(c.close_code(), c.close_reason());
    });
    srv = std::make_unique<http::server>(loop, std::move(routes));
    srv->listen(0, "127.0.0.1");
    port = srv->addresses().at(0).port();
  }
  std::string url(std::string_view path = "/echo") const {
    return "ws://127.0.0.1:" + std::to_string(port) + std::string(path);
  }
  // Runs a shell command off the loop while the loop serves; returns its output.
  std::string run(const std::string& cmd, int* status = nullptr) {
    return off_loop(
        loop, [&] { return run_command(cmd, status); }, 120s);
  }
  ~echo_server() {
    srv.reset();
    run_until(
        loop, [&] { return fiber_count(loop) == 0; }, 5s);
  }
};

// What squall's client does against a peer's echo server (Python websockets or Tornado) whose
// stdout then says "closed CODE REASON" for each connection.
void client_against(child& peer, io_loop& loop, const std::string& url, bool compression,
                    const std::string& expect_protocol) {
  run_sync(loop, [&] {
    ws::options o;
    o.compression = compression;
    o.subprotocols = {"chat.v1"};
    o.max_message_size = 16 << 20;
    auto c = ws::connect(url, std::move(o));
    CHECK(c.compressed() == compression);
    CHECK(c.subprotocol() == expect_protocol);
    c.send_text("subprotocol?");
    auto m = c.receive();
    REQUIRE(m);
    CHECK(m->data == expect_protocol);
    for (std::size_t n : {0, 1, 125, 126, 127, 65535, 65536, 1 << 20}) {
      std::string t(n, 'x'), b(n, '\0');
      for (std::size_t i = 0; i < n; ++i) {
        t[i] = static_cast<char>('a' + i % 26);
        b[i] = static_cast<char>(i % 251);
      }
      c.send_text(t);
      m = c.receive(io_loop::now() + 20s);
      REQUIRE(m);
      CHECK(m->is_text());
      CHECK(m->data == t);
      c.send_binary(b);
      m = c.receive(io_loop::now() + 20s);
      REQUIRE(m);
      CHECK(m->type == ws::opcode::binary);
      CHECK(m->data == b);
    }
    const std::string utf8 = "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5 \xf0\x9d\x84\x9e";
    c.send_text(utf8);
    CHECK(c.receive()->data == utf8);
    // Idle for a while: a peer that pings gets its pongs from receive().
    CHECK(code_of([&] { c.receive(io_loop::now() + 400ms); }) == error::timed_out);
    c.ping("ping from squall");
    c.send_text("still here");
    CHECK(c.receive()->data == "still here");
    c.close(4000, "bye");
    CHECK(c.close_code() == 4000);
  });
  CHECK(peer.read_line(10s) == "closed 4000 bye");
  // The peer closes.
  run_sync(loop, [&] {
    auto c = ws::connect(url);
    c.send_text("close-me");
    CHECK(!c.receive(io_loop::now() + 10s));
    CHECK(c.close_code() == 4001);
    CHECK(c.close_reason() == "asked");
  });
  // (The peer reports our echo of its close: the code, without a reason.)
  CHECK(peer.read_line(10s).starts_with("closed 4001 "));
  CHECK(run_until(
      loop, [&] { return fiber_count(loop) == 0; }, 5s));
}

}  // namespace

// --- Python websockets ---------------------------------------------------------------------------

TEST_CASE("Python websockets as a client of squall's server, compression on and off") {
  std::string py = python_or_fail("websockets", "python3-websockets");
  echo_server s;
  std::string script = source_root + "/tests/ws_peer_websockets.py";
  int st = 0;
  std::string out = s.run(py + " " + script + " client " + s.url() + " 2>&1", &st);
  CHECK_MESSAGE(out == "OK\n", out);
  CHECK(st == 0);
  out = s.run(py + " " + script + " client " + s.url() + " --no-compression 2>&1", &st);
  CHECK_MESSAGE(out == "OK\n", out);
  CHECK(st == 0);
  REQUIRE(run_until(s.loop, [&] { return s.closes.size() == 2; }));
  CHECK(s.compressed == std::vector<bool>{true, false});
  CHECK(s.protocols == std::vector<std::string>{"chat.v2", "chat.v2"});
  for (const auto& [code, reason] : s.closes) {
    CHECK(code == 4000);
    CHECK(reason == "bye");
  }
}

TEST_CASE("squall's client against a Python websockets server, compression on and off") {
  std::string py = python_or_fail("websockets", "python3-websockets");
  std::string dir = temp_dir();
  for (bool compression : {true, false}) {
    CAPTURE(compression);
    child peer;
    std::vector<std::string> argv = {py, source_root + "/tests/ws_peer_websockets.py", "server"};
    if (!compression) argv.push_back("--no-compression");
    peer.start(argv, dir + "/websockets.err");
    std::string port = peer.read_line(20s);
    REQUIRE_MESSAGE(!port.empty(), file_text(dir + "/websockets.err"));
    io_loop loop;
    client_against(peer, loop, "ws://127.0.0.1:" + port + "/", compression, "chat.v1");
  }
  std::filesystem::remove_all(dir);
}

// --- Tornado -------------------------------------------------------------------------------------

TEST_CASE("Tornado's websocket client against squall's server (pings every 50 ms)") {
  std::string py = python_or_fail("tornado", "python3-tornado");
  echo_server s;
  std::string script = source_root + "/tests/ws_peer_tornado.py";
  int st = 0;
  std::string out = s.run(py + " " + script + " client " + s.url() + " 2>&1", &st);
  CHECK_MESSAGE(out == "OK\n", out);
  CHECK(st == 0);
  out = s.run(py + " " + script + " client " + s.url() + " --no-compression 2>&1", &st);
  CHECK_MESSAGE(out == "OK\n", out);
  CHECK(st == 0);
  REQUIRE(run_until(s.loop, [&] { return s.closes.size() == 2; }));
  CHECK(s.compressed == std::vector<bool>{true, false});
  for (const auto& [code, reason] : s.closes) {
    CHECK(code == 4000);
    CHECK(reason == "bye");
  }
}

TEST_CASE("squall's client against a Tornado websocket server, compression on and off") {
  std::string py = python_or_fail("tornado", "python3-tornado");
  std::string dir = temp_dir();
  for (bool compression : {true, false}) {
    CAPTURE(compression);
    child peer;
    std::vector<std::string> argv = {py, source_root + "/tests/ws_peer_tornado.py", "server"};
    if (!compression) argv.push_back("--no-compression");
    peer.start(argv, dir + "/tornado.err");
    std::string port = peer.read_line(20s);
    REQUIRE_MESSAGE(!port.empty(), file_text(dir + "/tornado.err"));
    io_loop loop;
    client_against(peer, loop, "ws://127.0.0.1:" + port + "/echo", compression, "chat.v1");
  }
  std::filesystem::remove_all(dir);
}

// --- Node's ws -----------------------------------------------------------------------------------

TEST_CASE("Node's ws package as a client of squall's server") {
  if (!have_program("node")) FAIL("node is missing: apt-get install nodejs (tools/dev does it)");
  if (!std::filesystem::exists(npm_dir() + "/node_modules/ws/package.json"))
    FAIL("Node's ws package is missing: npm install --prefix " << npm_dir()
                                                               << " ws (tools/dev does it)");
  echo_server s;
  std::string script = source_root + "/tests/ws_peer_node.js";
  int st = 0;
  std::string env = "SQUALL_NPM_DIR=" + npm_dir() + " ";
  std::string out = s.run(env + "node " + script + " " + s.url() + " 2>&1", &st);
  CHECK_MESSAGE(out == "OK\n", out);
  CHECK(st == 0);
  out = s.run(env + "node " + script + " " + s.url() + " --no-compression 2>&1", &st);
  CHECK_MESSAGE(out == "OK\n", out);
  CHECK(st == 0);
  REQUIRE(run_until(s.loop, [&] { return s.closes.size() == 2; }));
  CHECK(s.compressed == std::vector<bool>{true, false});
  CHECK(s.protocols == std::vector<std::string>{"chat.v2", "chat.v2"});
  for (const auto& [code, reason] : s.closes) {
    CHECK(code == 4000);
    CHECK(reason == "bye");
  }
}

// --- The squall tool -----------------------------------------------------------------------------

TEST_CASE("squall ws: stdin lines out, messages printed, the close code on stderr") {
  std::string tool = squall_tool();
  if (tool.empty()) {
    MESSAGE("skipped: the squall tool is not built (-Dtools=false)");
    return;
  }
  http::router r;
  r.get("/bye", [](http::request& req, http::response& resp) {
    auto c = ws::accept(req, resp);
    c.send_text("first");
    c.send_binary(std::string(5, '\x01'));
    c.close(4002, "server says bye");
  });
  echo_server s(std::move(r));
  std::string dir = temp_dir();
  int st = -1;
  // stdin ends: a close 1000 goes out after the lines' echoes came back.
  std::string out =
      s.run("printf 'hello\\nworld\\n\\nlast line without newline' | " + tool + " ws " + s.url() +
                " --compress --subprotocol chat.v2 2>" + dir + "/err",
            &st);
  std::string err = file_text(dir + "/err");
  CHECK_MESSAGE(out == "hello\nworld\n\nlast line without newline\n", err);
  CHECK_MESSAGE(err.find("closed: 1000") != std::string::npos, err);
  CHECK(err.find("subprotocol: chat.v2") != std::string::npos);
  CHECK(err.find("compression: permessage-deflate") != std::string::npos);
  CHECK(st == 0);
  // The server closes first; stdin is a terminal-like pipe that never ends.
  out = s.run("sleep 30 | " + tool + " ws " + s.url("/bye") + " 2>" + dir + "/err", &st);
  err = file_text(dir + "/err");
  CHECK(out == "first\n<binary 5 bytes>\n");
  CHECK_MESSAGE(err.find("closed: 4002 server says bye") != std::string::npos, err);
  CHECK(st == 1);
  // stdin from /dev/null (cannot be polled: read through the thread pool) and from a file.
  out = s.run(tool + " ws " + s.url() + " </dev/null 2>" + dir + "/err", &st);
  CHECK(out == "");
  CHECK(st == 0);
  { std::ofstream(dir + "/in") << "from a file\n"; }
  out = s.run(tool + " ws " + s.url() + " <" + dir + "/in 2>" + dir + "/err", &st);
  CHECK(out == "from a file\n");
  CHECK(st == 0);
  // Refused handshakes and bad usage.
  out = s.run(tool + " ws " + s.url("/nowhere") + " </dev/null 2>" + dir + "/err", &st);
  CHECK(st == 1);
  CHECK(file_text(dir + "/err").find("404") != std::string::npos);
  s.run(tool + " ws 2>/dev/null", &st);
  CHECK(st == 2);
  std::filesystem::remove_all(dir);
}

namespace {

// `squall serve --port 0` on 127.0.0.1, its port read from the line it prints.
struct serve_process {
  child proc;
  std::string port;
  std::string dir = temp_dir();
  serve_process() {
    std::string tool = squall_tool();
    REQUIRE_MESSAGE(!tool.empty(), "squall serve is needed: build with -Dtools=true");
    proc.start({tool, "serve", "--port", "0", "--host", "127.0.0.1", "--quiet"},
               dir + "/serve.err");
    std::string line = proc.read_line(20s);
    std::size_t at = line.find("http://127.0.0.1:");
    REQUIRE_MESSAGE(at != std::string::npos, line << file_text(dir + "/serve.err"));
    port = line.substr(at + 17, line.find('/', at + 17) - at - 17);
  }
  ~serve_process() {
    proc.stop();
    std::filesystem::remove_all(dir);
  }
  std::string base() const { return "127.0.0.1:" + port; }
};

}  // namespace

TEST_CASE("squall serve: /ws/echo echoes, /chat serves the page, /chat/ws is a room") {
  serve_process serve;
  io_loop loop;
  run_sync(loop, [&] {
    http::client hc(loop);
    auto page = hc.get("http://" + serve.base() + "/chat");
    REQUIRE_MESSAGE(page.code == 200, "squall serve has no /chat: is add_ws_routes wired in?");
    CHECK(page.header("Content-Type").starts_with("text/html"));
    CHECK(page.body.find("new WebSocket(") != std::string::npos);

    ws::options o;
    o.compression = true;
    auto e = ws::connect("ws://" + serve.base() + "/ws/echo", std::move(o));
    CHECK(e.compressed());
    for (std::size_t n : {0, 10, 100000}) {
      std::string t(n, 'e');
      e.send_text(t);
      CHECK(e.receive()->data == t);
    }
    e.send_binary("\x01\x02");
    auto m = e.receive();
    CHECK(m->type == ws::opcode::binary);
    e.close();
    CHECK(e.close_code() == 1000);

    // Two members: each sees every message, in order; a newcomer gets the history.
    auto a = ws::connect("ws://" + serve.base() + "/chat/ws");
    auto b = ws::connect("ws://" + serve.base() + "/chat/ws");
    a.send_text("a: one");
    CHECK(a.receive(io_loop::now() + 5s)->data == "a: one");
    CHECK(b.receive(io_loop::now() + 5s)->data == "a: one");
    b.send_text("b: two");
    CHECK(a.receive(io_loop::now() + 5s)->data == "b: two");
    CHECK(b.receive(io_loop::now() + 5s)->data == "b: two");
    auto c = ws::connect("ws://" + serve.base() + "/chat/ws");
    CHECK(c.receive(io_loop::now() + 5s)->data == "a: one");
    CHECK(c.receive(io_loop::now() + 5s)->data == "b: two");
    a.close();
    b.close();
    c.close();
  });
}

// --- Headless Chromium on the chat page ----------------------------------------------------------

namespace {

std::string chromium_binary() {
  for (const char* name : {"chromium", "chromium-browser", "google-chrome"})
    if (have_program(name)) return name;
  return {};
}

// The value of the first "key": "value" string after `from` in a JSON text (no unescaping
// beyond \/ ; good for URLs and ids).
std::string json_string(std::string_view json, std::string_view key, std::size_t from = 0) {
  std::string k = "\"" + std::string(key) + "\"";
  std::size_t at = json.find(k, from);
  if (at == std::string_view::npos) return {};
  std::size_t q1 = json.find('"', json.find(':', at + k.size()) + 1);
  std::size_t q2 = json.find('"', q1 + 1);
  if (q1 == std::string_view::npos || q2 == std::string_view::npos) return {};
  return std::string(json.substr(q1 + 1, q2 - q1 - 1));
}

// Evaluates `expression` in the page through the DevTools protocol: the raw JSON reply.
std::string devtools_eval(ws::connection& cdp, int id, const std::string& expression) {
  std::string req = "{\"id\":" + std::to_string(id) +
                    ",\"method\":\"Runtime.evaluate\",\"params\":{\"expression\":\"" + expression +
                    "\",\"returnByValue\":true}}";
  cdp.send_text(req);
  std::string marker = "\"id\":" + std::to_string(id) + ",";
  for (;;) {
    auto m = cdp.receive(io_loop::now() + 20s);
    if (!m) return {};
    if (m->data.find(marker) != std::string_view::npos) return std::string(m->data);
  }
}

}  // namespace

TEST_CASE("headless Chromium on /chat: the browser and a squall client see each other's messages") {
  std::string browser = chromium_binary();
  if (browser.empty()) FAIL("Chromium is missing: apt-get install chromium (tools/dev does it)");
  serve_process serve;
  std::string profile = temp_dir();
  io_loop loop;
  child chrome;
  run_sync(loop, [&] {
    // The squall member joins first, so every message of the browser reaches it.
    auto me = ws::connect("ws://" + serve.base() + "/chat/ws");
    chrome.start(
        {browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
         "--disable-sync", "--disable-component-update", "--disable-dev-shm-usage",
         "--user-data-dir=" + profile, "--proxy-server=direct://",
         "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "--remote-debugging-port=0",
         "http://" + serve.base() + "/chat?name=browser&say=hello-from-browser"},
        profile + "/chrome.err");
    // The browser posts on load (?say=...).
    std::optional<std::string> got;
    while (auto m = me.receive(io_loop::now() + 60s)) {
      got = std::string(m->data);
      if (*got == "browser: hello-from-browser") break;
    }
    REQUIRE_MESSAGE(got == "browser: hello-from-browser", file_text(profile + "/chrome.err"));
    me.send_text("squall: hello-from-squall");

    // Read the page through the DevTools protocol: its port is in DevToolsActivePort.
    std::string port;
    for (int i = 0; i < 200 && port.empty(); ++i) {
      std::ifstream f(profile + "/DevToolsActivePort");
      std::getline(f, port);
      if (port.empty()) this_fiber::sleep_for(50ms);
    }
    REQUIRE(!port.empty());
    http::client hc(loop);
    auto list = hc.get("http://127.0.0.1:" + port + "/json/list");
    REQUIRE(list.code == 200);
    std::size_t page = list.body.find("\"type\": \"page\"");
    REQUIRE(page != std::string::npos);
    std::size_t obj = list.body.rfind('{', page);
    std::string target = json_string(list.body, "webSocketDebuggerUrl", obj);
    REQUIRE_MESSAGE(target.starts_with("ws://"), list.body);
    auto cdp = ws::connect(target);
    std::string inbox;
    for (int i = 1; i < 300; ++i) {
      inbox = devtools_eval(cdp, i, "document.getElementById('inbox').innerText");
      if (inbox.find("hello-from-squall") != std::string::npos) break;
      this_fiber::sleep_for(100ms);
    }
    CHECK_MESSAGE(inbox.find("squall: hello-from-squall") != std::string::npos, inbox);
    CHECK(inbox.find("browser: hello-from-browser") != std::string::npos);
    std::string status = devtools_eval(cdp, 1000, "document.getElementById('status').textContent");
    CHECK_MESSAGE(status.find("connected") != std::string::npos, status);
    cdp.close();
    me.close();
  });
  chrome.stop();
  std::filesystem::remove_all(profile);
}
