// SPDX-License-Identifier: MIT
// What the squall tool's subcommands share.
#pragma once

#include <string_view>

#include "squall/io_loop.hpp"

namespace squall::http {
class router;
}

namespace squall::tool {

// "io_uring", "epoll" or "kqueue" -> the backend; false for anything else.
bool parse_backend(std::string_view s, backend_kind& out);

// `squall serve` (serve.cpp). argv holds the options after the subcommand.
int serve_main(int argc, char** argv);

// `squall get URL [-X METHOD] [-H 'K: V']... [-d DATA] [-o FILE] [-v] [--timeout SECONDS]`
// (get.cpp): a small curl. argv[0] is "get". Returns the process exit status.
int get_main(int argc, char** argv);

// `squall ws URL [-H 'K: V']... [--subprotocol P]... [--compress]` (ws.cpp): a wscat-like
// WebSocket client. argv[0] is "ws". Returns the process exit status.
int ws_main(int argc, char** argv);

// Adds the WebSocket routes of `squall serve` (ws_routes.cpp): /ws/echo echoes every message,
// /chat is a chat room page whose browsers all see every message (over /chat/ws).
void add_ws_routes(squall::http::router& routes);

}  // namespace squall::tool
