#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Tornado's HTTP server on 127.0.0.1, a peer squall's HTTP client did not write.

Started by tests/http_client_test.cpp: binds a free port, prints it on stdout once listening,
and serves until killed. The handlers cover what the client test checks: plain and chunked
bodies, gzip, redirect chains, basic auth, a slow answer, the client's port (pool reuse),
concurrency, large bodies and servers that close connections.
"""
import asyncio
import base64
import sys

import tornado.ioloop
import tornado.netutil
import tornado.web
from tornado.httpserver import HTTPServer

PATTERN = bytes(range(251))  # the large body: byte i is i % 251


def pattern(n):
    return (PATTERN * (n // len(PATTERN) + 1))[:n]


class Hello(tornado.web.RequestHandler):
    def get(self):
        self.write("Hello, world")


class Echo(tornado.web.RequestHandler):
    """Method, target, headers as received, then the body, as text the test can search."""

    def _echo(self, *args):
        self.set_header("Content-Type", "application/octet-stream")
        lines = ["method: " + self.request.method, "uri: " + self.request.uri]
        for name, value in self.request.headers.get_all():
            lines.append("h: %s: %s" % (name, value))
        lines.append("body-length: %d" % len(self.request.body))
        self.write("\n".join(lines).encode() + b"\n\n" + self.request.body)

    get = post = put = patch = delete = options = head = _echo


class Chunked(tornado.web.RequestHandler):
    """Pieces flushed one by one: Transfer-Encoding: chunked, several reads on the client."""

    async def get(self):
        gzip_ok = self.get_argument("text", "0") == "1"
        self.set_header("Content-Type", "text/plain" if gzip_ok else "application/octet-stream")
        for i in range(int(self.get_argument("n", "5"))):
            self.write("piece %d;" % i * int(self.get_argument("repeat", "1")))
            await self.flush()
            await asyncio.sleep(0.01)


class Gzip(tornado.web.RequestHandler):
    """Compressible text over 1 KiB: compress_response gzips it when asked to."""

    def get(self):
        self.set_header("Content-Type", "text/plain")
        n = int(self.get_argument("n", "2000"))
        self.write("".join("line %d of the gzip test\n" % i for i in range(n)))


class Redirect(tornado.web.RequestHandler):
    """/redir?code=302&to=LOCATION: Location exactly as given (relative ones too)."""

    def _redirect(self, *args):
        self.set_status(int(self.get_argument("code", "302")))
        self.set_header("Location", self.get_argument("to"))
        self.finish("redirecting")

    get = post = put = head = delete = _redirect


class Chain(tornado.web.RequestHandler):
    """/chain/N redirects to the relative "N-1" until /chain/0."""

    def get(self, n):
        n = int(n)
        if n == 0:
            self.write("end of chain")
            return
        self.set_status(302)
        self.set_header("Location", str(n - 1))
        self.finish("next")


class Loop(tornado.web.RequestHandler):
    def get(self):
        self.set_status(302)
        self.set_header("Location", "/loop")
        self.finish()


class Auth(tornado.web.RequestHandler):
    """Basic auth for alice / s3cr:et."""

    def get(self):
        header = self.request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            if user == "alice" and password == "s3cr:et":
                self.write("welcome " + user)
                return
        self.set_status(401)
        self.set_header("WWW-Authenticate", 'Basic realm="squall"')
        self.finish("who are you?")


class Slow(tornado.web.RequestHandler):
    async def get(self):
        await asyncio.sleep(float(self.get_argument("delay", "2")))
        self.write("finally")


class Whoami(tornado.web.RequestHandler):
    """The client's port: the same port twice means the same connection."""

    def get(self):
        self.write(str(self.request.connection.context.address[1]))


class Concurrent(tornado.web.RequestHandler):
    """Holds each request 250 ms and records how many were in here at once (/peak).

    With ?expect=N a request is held, beyond the 250 ms, until N have been in here at once since
    the last /peak (for at most 5 s): a client that may send N at a time then shows N however
    slowly this machine runs them, and one that sends more than it may still shows more, since
    its requests overlap for 250 ms.
    """

    current = 0
    peak = 0

    async def get(self):
        expect = int(self.get_argument("expect", "0"))
        Concurrent.current += 1
        Concurrent.peak = max(Concurrent.peak, Concurrent.current)
        try:
            await asyncio.sleep(0.25)
            for _ in range(475):
                if Concurrent.peak >= expect:
                    break
                await asyncio.sleep(0.01)
        finally:
            Concurrent.current -= 1
        self.write(str(self.request.connection.context.address[1]))


class Peak(tornado.web.RequestHandler):
    def get(self):
        self.write(str(Concurrent.peak))
        Concurrent.peak = 0


class Large(tornado.web.RequestHandler):
    """/large?size=N: N bytes of the pattern, with Content-Length or (&chunked=1) chunked."""

    async def get(self):
        self.set_header("Content-Type", "application/octet-stream")
        body = pattern(int(self.get_argument("size")))
        if self.get_argument("chunked", "0") != "1":
            self.write(body)
            return
        for at in range(0, len(body), 100000):
            self.write(body[at : at + 100000])
            await self.flush()

    head = get


class Status(tornado.web.RequestHandler):
    def get(self, code):
        self.set_status(int(code))
        if int(code) not in (204, 304):
            self.write("status " + code)


class Close(tornado.web.RequestHandler):
    """Answers with Connection: close and closes once the answer is out."""

    async def get(self):
        self.set_header("Connection", "close")
        await self.finish("closing")
        self.request.connection.stream.close()


class Drop(tornado.web.RequestHandler):
    """Answers normally (keep-alive), then closes the idle connection 50 ms later, as a server
    whose keep-alive timeout is short does. /dropped counts the connections closed so."""

    closed = 0

    def get(self):
        stream = self.request.connection.stream

        def close():
            stream.close()
            Drop.closed += 1

        tornado.ioloop.IOLoop.current().call_later(0.05, close)
        self.write("bye soon")


class Dropped(tornado.web.RequestHandler):
    def get(self):
        self.write(str(Drop.closed))


def main():
    app = tornado.web.Application(
        [
            (r"/hello", Hello),
            (r"/echo.*", Echo),
            (r"/any/.*", Echo),
            (r"/chunked", Chunked),
            (r"/gzip", Gzip),
            (r"/redir.*", Redirect),
            (r"/chain/(\d+)", Chain),
            (r"/loop", Loop),
            (r"/auth", Auth),
            (r"/slow", Slow),
            (r"/whoami", Whoami),
            (r"/concurrent", Concurrent),
            (r"/peak", Peak),
            (r"/large", Large),
            (r"/status/(\d+)", Status),
            (r"/close", Close),
            (r"/drop", Drop),
            (r"/dropped", Dropped),
        ],
        compress_response=True,
    )
    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
    server = HTTPServer(app, max_buffer_size=64 * 1024 * 1024)
    server.add_sockets(sockets)
    print(sockets[0].getsockname()[1], flush=True)
    tornado.ioloop.IOLoop.current().start()


if __name__ == "__main__":
    sys.exit(main())
