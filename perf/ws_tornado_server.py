#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""ws_tornado_server: Tornado's WebSocketHandler as an echo server, a peer of perf/run_ws.

    python3 perf/ws_tornado_server.py PORT         (listens on 127.0.0.1:PORT, path /ws/echo)

Debian's python3-tornado (6.2 on Debian 12), one process, asyncio loop. Settings: no
compression (get_compression_options returns None, Tornado's default), websocket_max_message_size
16 MiB, no pings (Tornado's default), listen backlog 1024. Each message is written back as it
came (str as text, bytes as binary). Prints one line once listening:

    ws_tornado_server listening on 127.0.0.1:PORT (Tornado 6.2, Python 3.11.2)

SIGTERM ends it.
"""

import asyncio
import platform
import signal
import sys

import tornado
import tornado.httpserver
import tornado.netutil
import tornado.web
import tornado.websocket


class Echo(tornado.websocket.WebSocketHandler):
    def on_message(self, message):
        self.write_message(message, binary=isinstance(message, bytes))


async def main(port):
    app = tornado.web.Application([(r"/ws/echo", Echo)], websocket_max_message_size=16 << 20)
    server = tornado.httpserver.HTTPServer(app)
    server.add_sockets(tornado.netutil.bind_sockets(port, "127.0.0.1", backlog=1024))
    stop = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set_result, None)
    print(f"ws_tornado_server listening on 127.0.0.1:{port} (Tornado {tornado.version}, "
          f"Python {platform.python_version()})", flush=True)
    await stop


if __name__ == "__main__":
    if len(sys.argv) != 2 or not sys.argv[1].isdigit():
        print("usage: ws_tornado_server.py PORT", file=sys.stderr)
        sys.exit(2)
    asyncio.run(main(int(sys.argv[1])))
