// SPDX-License-Identifier: MIT
// What the squall tool's subcommands share.
#pragma once

#include <string_view>

#include "squall/io_loop.hpp"

namespace squall::tool {

// "io_uring", "epoll" or "kqueue" -> the backend; false for anything else.
bool parse_backend(std::string_view s, backend_kind& out);

// `squall serve` (serve.cpp). argv holds the options after the subcommand.
int serve_main(int argc, char** argv);

// `squall get URL [-X METHOD] [-H 'K: V']... [-d DATA] [-o FILE] [-v] [--timeout SECONDS]`
// (get.cpp): a small curl. argv[0] is "get". Returns the process exit status.
int get_main(int argc, char** argv);

}  // namespace squall::tool
