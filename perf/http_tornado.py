#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""http_tornado: Tornado's hello world, the HTTP server of perf/run_http that squall's model is.

    python3 perf/http_tornado.py [--port] P     (127.0.0.1:P, default 8080; prints "listening")

The hello world of Tornado's documentation: a tornado.web.Application with one RequestHandler
whose get() writes "Hello, World!" (Content-Type text/plain), served by tornado.httpserver's
HTTPServer (HTTP/1.1, keep-alive, pipelined requests answered in order). One process, the
asyncio event loop (epoll), no debug mode, no access log output (Tornado's access log is at
INFO level and no logging is configured). The listening socket's backlog is 4096 (Tornado's
default is 128), as for the other servers, so the 1,000-connection load connects at once.
SIGTERM ends it.
"""

import asyncio
import signal
import sys

import tornado
import tornado.httpserver
import tornado.netutil
import tornado.web


class HelloHandler(tornado.web.RequestHandler):
    def get(self):
        self.set_header("Content-Type", "text/plain")
        self.write("Hello, World!")


async def main(port):
    app = tornado.web.Application([(r"/.*", HelloHandler)])
    server = tornado.httpserver.HTTPServer(app)
    server.add_sockets(tornado.netutil.bind_sockets(port, address="127.0.0.1", backlog=4096))
    print(f"http_tornado listening on 127.0.0.1:{port} (tornado {tornado.version})", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--port"]:
        args = args[1:]
    try:
        port = int(args[0]) if len(args) == 1 else 8080 if not args else None
    except ValueError:
        port = None
    if port is None or not 0 < port < 65536:
        print("usage: http_tornado.py [--port] PORT", file=sys.stderr)
        sys.exit(2)
    asyncio.run(main(port))
