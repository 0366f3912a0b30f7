#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Tornado's WebSocket client and server (Debian's python3-tornado) as peers of squall.

Started by tests/ws_peers_test.cpp:

  ws_peer_tornado.py client URL [--no-compression]
      websocket_connect() to squall's echo server at URL, with pings every 50 ms (squall must
      answer them or Tornado drops the connection): subprotocols, text and binary messages of
      many sizes, an idle stretch, then a close with 4000 "bye". Prints "OK" when every check
      passed.

  ws_peer_tornado.py server [--no-compression]
      An echo server (WebSocketHandler at /echo) on 127.0.0.1, pinging every 50 ms: prints its
      port, then serves until killed. "close-me" makes it close with 4001 "asked";
      "subprotocol?" is answered with the subprotocol chosen; "compressed?" with whether
      permessage-deflate is on; after each connection it prints "closed CODE REASON".
"""
import asyncio
import sys

import tornado.httpserver
import tornado.ioloop
import tornado.netutil
import tornado.web
import tornado.websocket


def payloads():
    out = []
    for n in (0, 1, 125, 126, 127, 65535, 65536, 1 << 20):
        out.append("".join(chr(ord("a") + i % 26) for i in range(n)))
        out.append(bytes(i % 251 for i in range(n)))
    out.append("κόσμε – UTF-8 ✓ 𝄞")
    return out


async def client(url, compression):
    conn = await tornado.websocket.websocket_connect(
        url,
        compression_options={} if compression else None,
        subprotocols=["chat.v1", "chat.v2"],
        ping_interval=0.05,
        ping_timeout=1,
        max_message_size=16 << 20,
    )
    assert conn.selected_subprotocol == "chat.v2", conn.selected_subprotocol
    ext = conn.headers.get("Sec-WebSocket-Extensions", "")
    assert ("permessage-deflate" in ext) == compression, ext
    for p in payloads():
        await conn.write_message(p, binary=isinstance(p, bytes))
        got = await conn.read_message()
        assert got == p, (type(got), len(got or ""), len(p))
    # Idle for a while: Tornado's pings must be answered for the connection to survive.
    await asyncio.sleep(0.5)
    await conn.write_message("still here")
    assert await conn.read_message() == "still here"
    conn.close(4000, "bye")
    assert await conn.read_message() is None
    assert conn.close_code == 4000, conn.close_code
    print("OK", flush=True)


class Echo(tornado.websocket.WebSocketHandler):
    compression = True

    def get_compression_options(self):
        return {} if Echo.compression else None

    def select_subprotocol(self, subprotocols):
        return "chat.v1" if "chat.v1" in subprotocols else None

    def on_message(self, message):
        if message == "close-me":
            self.close(4001, "asked")
        elif message == "subprotocol?":
            self.write_message(self.selected_subprotocol or "")
        elif message == "compressed?":
            ext = self.request.headers.get("Sec-WebSocket-Extensions", "")
            self.write_message("yes" if Echo.compression and "permessage-deflate" in ext else "no")
        else:
            self.write_message(message, binary=isinstance(message, bytes))

    def on_close(self):
        print("closed %s %s" % (self.close_code, self.close_reason), flush=True)


async def server(compression):
    Echo.compression = compression
    app = tornado.web.Application(
        [(r"/echo", Echo)],
        websocket_ping_interval=0.05,
        websocket_ping_timeout=2,
        websocket_max_message_size=16 << 20,
    )
    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
    srv = tornado.httpserver.HTTPServer(app)
    srv.add_sockets(sockets)
    print(sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()


def main():
    compression = "--no-compression" not in sys.argv
    if sys.argv[1] == "client":
        asyncio.run(client(sys.argv[2], compression))
    else:
        asyncio.run(server(compression))


if __name__ == "__main__":
    main()
