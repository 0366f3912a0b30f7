#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The Python `websockets` library (Debian's python3-websockets) as a peer of squall.

Started by tests/ws_peers_test.cpp:

  ws_peer_websockets.py client URL [--no-compression]
      Talks to squall's echo server at URL: subprotocols, text and binary messages of many sizes,
      a fragmented message, a ping, then a close with 4000 "bye". Prints "OK" when every check
      passed; anything else (an exception) fails the test.

  ws_peer_websockets.py server [--no-compression]
      An echo server on 127.0.0.1 for squall's client: prints its port, then serves until
      killed. "close-me" makes it close with 4001 "asked"; "subprotocol?" is answered with the
      subprotocol chosen; after each connection it prints "closed CODE REASON".
"""
import asyncio
import sys

import websockets


def sizes_payloads():
    out = []
    for n in (0, 1, 125, 126, 127, 65535, 65536, 1 << 20):
        out.append("".join(chr(ord("a") + i % 26) for i in range(n)))
        out.append(bytes(i % 251 for i in range(n)))
    out.append("κόσμε – UTF-8 ✓ 𝄞")
    return out


async def client(url, compression):
    kwargs = {} if compression else {"compression": None}
    async with websockets.connect(
        url, subprotocols=["chat.v1", "chat.v2"], max_size=None, **kwargs
    ) as ws:
        assert ws.subprotocol == "chat.v2", ws.subprotocol
        ext = ws.response_headers.get("Sec-WebSocket-Extensions", "")
        assert ("permessage-deflate" in ext) == compression, ext
        for p in sizes_payloads():
            await ws.send(p)
            got = await ws.recv()
            assert got == p, (type(got), len(got), len(p))
        # A fragmented message, and one with fragments arriving around a ping.
        await ws.send(["frag1", "frag2", "frag3"])
        assert await ws.recv() == "frag1frag2frag3"
        pong = await ws.ping(b"are you there")
        await asyncio.wait_for(pong, 5)
        await ws.close(4000, "bye")
        assert ws.close_code == 4000, ws.close_code
    print("OK", flush=True)


async def server(compression):
    async def handler(ws, path=None):
        try:
            async for msg in ws:
                if msg == "close-me":
                    await ws.close(4001, "asked")
                elif msg == "subprotocol?":
                    await ws.send(ws.subprotocol or "")
                else:
                    await ws.send(msg)
        except websockets.ConnectionClosed:
            pass
        print("closed %s %s" % (ws.close_code, ws.close_reason), flush=True)

    kwargs = {} if compression else {"compression": None}
    async with websockets.serve(
        handler,
        "127.0.0.1",
        0,
        subprotocols=["chat.v2", "chat.v1"],
        max_size=None,
        **kwargs,
    ) as srv:
        port = srv.sockets[0].getsockname()[1]
        print(port, flush=True)
        await asyncio.Future()


def main():
    compression = "--no-compression" not in sys.argv
    if sys.argv[1] == "client":
        asyncio.run(client(sys.argv[2], compression))
    else:
        asyncio.run(server(compression))


if __name__ == "__main__":
    main()
