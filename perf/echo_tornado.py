#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""echo_tornado: the Tornado echo server of perf/run_net (informational: squall's model).

    python3 perf/echo_tornado.py [--port P]     (127.0.0.1:P, default 8007; prints "listening")

A tornado.tcpserver.TCPServer whose handle_stream coroutine reads with
read_bytes(65536, partial=True) and awaits write() of what it read, until the stream closes;
TCP_NODELAY on each stream. One process, the asyncio event loop (epoll). SIGTERM ends it.
"""

import asyncio
import signal
import sys

import tornado
from tornado.iostream import StreamClosedError
from tornado.tcpserver import TCPServer


class EchoServer(TCPServer):
    async def handle_stream(self, stream, address):
        stream.set_nodelay(True)
        try:
            while True:
                data = await stream.read_bytes(65536, partial=True)
                await stream.write(data)
        except StreamClosedError:
            pass


async def main(port):
    server = EchoServer()
    server.listen(port, address="127.0.0.1")
    print(f"echo_tornado listening on 127.0.0.1:{port} (tornado {tornado.version})", flush=True)
    loop = asyncio.get_running_loop()

    # A client that disconnects while a write is pending leaves Tornado (6.2) with a cancelled
    # future whose done-callback logs CancelledError with a traceback: not an error here.
    def quiet(loop, context):
        if not isinstance(context.get("exception"), asyncio.CancelledError):
            loop.default_exception_handler(context)

    loop.set_exception_handler(quiet)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()


if __name__ == "__main__":
    args = sys.argv[1:]
    port = 8007
    if len(args) == 2 and args[0] == "--port":
        port = int(args[1])
    elif args:
        print("usage: echo_tornado.py [--port P]", file=sys.stderr)
        sys.exit(2)
    asyncio.run(main(port))
