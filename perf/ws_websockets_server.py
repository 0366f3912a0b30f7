#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""ws_websockets_server: Python's `websockets` as a WebSocket echo server, a peer of perf/run_ws.

    python3 perf/ws_websockets_server.py PORT      (listens on 127.0.0.1:PORT, any path)

The library is Debian's python3-websockets (10.x on Debian 12), on the default asyncio loop,
one process. Settings: compression off (the library offers permessage-deflate by default),
max_size 16 MiB, no keep-alive pings (ping_interval None: the load client does not answer
pings), listen backlog 1024; everything else the library's default. Each message is sent back
as it came (str as text, bytes as binary). Prints one line once listening:

    ws_websockets_server listening on 127.0.0.1:PORT (websockets 10.4, Python 3.11.2)

SIGTERM ends it.
"""

import asyncio
import platform
import signal
import sys

import websockets


async def echo(ws, path=None):  # websockets 10.0 passes the path, 10.1+ may not
    try:
        async for message in ws:
            await ws.send(message)
    except websockets.ConnectionClosed:
        pass


async def main(port):
    stop = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set_result, None)
    async with websockets.serve(echo, "127.0.0.1", port, compression=None, max_size=16 << 20,
                                ping_interval=None, backlog=1024):
        print(f"ws_websockets_server listening on 127.0.0.1:{port} (websockets "
              f"{websockets.__version__}, Python {platform.python_version()})", flush=True)
        await stop


if __name__ == "__main__":
    if len(sys.argv) != 2 or not sys.argv[1].isdigit():
        print("usage: ws_websockets_server.py PORT", file=sys.stderr)
        sys.exit(2)
    asyncio.run(main(int(sys.argv[1])))
