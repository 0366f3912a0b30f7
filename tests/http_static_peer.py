#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""http_static_test's Python peer: requests sent with http.client over one kept-alive connection.

usage: http_static_peer.py HOST PORT OUTDIR REQUEST...

Each REQUEST is "METHOD PATH", then optional header lines "Name: value", separated by newlines.
The path is sent as given (http.client does not normalise "/../" or decode escapes). For the
i-th response (from 0) the body goes to OUTDIR/<i>.body and stdout gets

    RESPONSE <i> <status>
    Name: value
    ...
    <empty line>

http.client opens a new connection by itself after a response that closes one.
"""
import http.client
import os
import sys


def main():
    host, port, outdir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    conn = http.client.HTTPConnection(host, port, timeout=30)
    for i, spec in enumerate(sys.argv[4:]):
        lines = spec.split("\n")
        method, path = lines[0].split(" ", 1)
        headers = {}
        for line in lines[1:]:
            if line:
                name, value = line.split(":", 1)
                headers[name.strip()] = value.strip()
        conn.request(method, path, headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        with open(os.path.join(outdir, f"{i}.body"), "wb") as f:
            f.write(body)
        out = [f"RESPONSE {i} {resp.status}"]
        out += [f"{name}: {value}" for name, value in resp.getheaders()]
        print("\n".join(out) + "\n", flush=True)
    conn.close()


if __name__ == "__main__":
    main()
