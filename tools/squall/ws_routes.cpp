// SPDX-License-Identifier: MIT
// The WebSocket routes of `squall serve`:
//
//   /ws/echo   echoes every message (text or binary), with permessage-deflate when offered.
//   /chat      a chat room page (HTML and JS, below): every browser on it sees every message.
//   /chat/ws   the room's WebSocket: each text message is sent to every member, the newest
//              100 messages greet a newcomer.
//
// Each member has its own queue and writer fiber, so a member that stops reading holds up only
// itself: past 256 queued messages it is dropped (close 1008) instead of growing memory.
// With --workers N each worker process has its own room.
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "squall/fiber.hpp"
#include "squall/http/server.hpp"
#include "squall/locks.hpp"
#include "squall/log.hpp"
#include "squall/websocket/websocket.hpp"
#include "tool.hpp"

namespace squall::tool {
namespace {

// The page. Messages are shown with textContent (never as HTML). `?name=N` sets the name,
// `?say=TEXT` posts TEXT once the socket is open (handy for scripted browsers and demos).
constexpr std::string_view chat_html = R"html(<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>squall chat</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 48em; padding: 1em; }
  h1 { font-size: 1.3em; }
  #status { color: #666; font-size: 0.9em; margin-bottom: 0.5em; }
  #inbox { border: 1px solid #ccc; border-radius: 4px; height: 60vh; overflow-y: auto;
           padding: 0.5em; }
  .message { padding: 0.15em 0; white-space: pre-wrap; word-wrap: break-word; }
  form { display: flex; gap: 0.5em; margin-top: 0.5em; }
  #name { width: 8em; }
  #text { flex: 1; }
</style>
</head>
<body>
<h1>squall chat</h1>
<div id="status">connecting&hellip;</div>
<div id="inbox"></div>
<form id="form" autocomplete="off">
  <input id="name" aria-label="name">
  <input id="text" aria-label="message" placeholder="Say something" autofocus>
  <button type="submit">Send</button>
</form>
<script>
(function () {
  "use strict";
  var params = new URLSearchParams(window.location.search);
  var status = document.getElementById("status");
  var inbox = document.getElementById("inbox");
  var nameBox = document.getElementById("name");
  var textBox = document.getElementById("text");
  nameBox.value = params.get("name") || "guest-" + Math.floor(Math.random() * 10000);

  function show(text) {
    var line = document.createElement("div");
    line.className = "message";
    line.textContent = text;
    inbox.appendChild(line);
    inbox.scrollTop = inbox.scrollHeight;
  }

  var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
  var sock = new WebSocket(scheme + window.location.host + "/chat/ws");
  sock.onopen = function () {
    status.textContent = "connected";
    var say = params.get("say");
    if (say) sock.send(nameBox.value + ": " + say);
  };
  sock.onmessage = function (event) { show(event.data); };
  sock.onclose = function (event) {
    status.textContent = "disconnected (" + event.code + ")";
  };
  document.getElementById("form").addEventListener("submit", function (event) {
    event.preventDefault();
    var text = textBox.value.trim();
    if (!text || sock.readyState !== WebSocket.OPEN) return;
    sock.send(nameBox.value + ": " + text);
    textBox.value = "";
  });
})();
</script>
</body>
</html>
)html";

using shared_text = std::shared_ptr<const std::string>;

struct member {
  websocket::connection* conn;  // valid while `gone` is false
  std::deque<shared_text> outbox;
  condition ready;
  bool gone = false;  // the member's handler has ended
  bool too_slow = false;
};

struct chat_room {
  static constexpr std::size_t history_size = 100;
  static constexpr std::size_t max_queued = 256;
  std::vector<std::shared_ptr<member>> members;
  std::deque<shared_text> history;

  void broadcast(std::string_view text) {
    auto msg = std::make_shared<const std::string>(text);
    history.push_back(msg);
    if (history.size() > history_size) history.pop_front();
    for (auto& m : members) {
      if (m->outbox.size() >= max_queued)
        m->too_slow = true;
      else
        m->outbox.push_back(msg);
      m->ready.notify_one();
    }
  }
};

// Sends the member's queue in order until the member is gone.
void write_queue(const std::shared_ptr<member>& me) {
  try {
    for (;;) {
      while (me->outbox.empty() && !me->gone && !me->too_slow)
        me->ready.wait();
      if (me->gone) return;
      if (me->too_slow) {
        log(log_level::info, "chat", "dropping a member that does not read");
        me->conn->close(websocket::close_code::policy_violation, "too slow");
        return;
      }
      shared_text msg = me->outbox.front();
      me->outbox.pop_front();
      me->conn->send_text(*msg);
    }
  } catch (const std::system_error&) {
    // The connection ended (or this fiber was cancelled when it did).
  }
}

void chat_socket(chat_room& room, http::request& req, http::response& resp) {
  websocket::options opts;
  opts.max_message_size = 64 * 1024;
  opts.compression = true;
  websocket::connection c = websocket::accept(req, resp, std::move(opts));
  auto me = std::make_shared<member>();
  me->conn = &c;
  me->outbox.assign(room.history.begin(), room.history.end());
  room.members.push_back(me);
  auto writer = spawn(this_fiber::loop(), [me] { write_queue(me); }, {.name = "chat-writer"});
  // However this ends, the writer lets go of the connection before it is destroyed.
  struct leave {
    chat_room& room;
    std::shared_ptr<member> me;
    fiber<void>& writer;
    ~leave() {
      std::erase(room.members, me);
      me->gone = true;
      me->ready.notify_one();
      writer.cancel();
    }
  } guard{room, me, writer};
  while (auto m = c.receive()) {
    if (m->is_text()) room.broadcast(m->data);
  }
}

}  // namespace

void add_ws_routes(http::router& routes) {
  routes.get("/ws/echo", [](http::request& req, http::response& resp) {
    websocket::options opts;
    opts.compression = true;
    websocket::connection c = websocket::accept(req, resp, std::move(opts));
    while (auto m = c.receive())
      c.send(m->data, m->type);
  });
  routes.get("/chat", [](http::request&, http::response& resp) {
    resp.add_header("Content-Type", "text/html; charset=utf-8");
    resp.send(chat_html);
  });
  auto room = std::make_shared<chat_room>();
  routes.get("/chat/ws",
             [room](http::request& req, http::response& resp) { chat_socket(*room, req, resp); });
}

}  // namespace squall::tool
