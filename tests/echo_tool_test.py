#!/usr/bin/env python3
"""`squall echo` against Python's socket module: echo, a fiber dump on SIGUSR1, clean exit."""
import os
import re
import signal
import socket
import subprocess
import sys

squall = sys.argv[1]
proc = subprocess.Popen([squall, "echo", "--port", "0", "--host", "127.0.0.1"],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
try:
    line = proc.stdout.readline()
    m = re.search(r"listening on 127\.0\.0\.1:(\d+) \((\w+) backend\)", line)
    assert m, f"unexpected first line: {line!r}"
    port, backend = int(m.group(1)), m.group(2)
    want = os.environ.get("SQUALL_BACKEND")
    assert not want or backend == want, f"running {backend}, asked for {want}"

    conns = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(3)]
    for i, c in enumerate(conns):
        payload = (f"message {i} " * 1000).encode()
        c.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = c.recv(65536)
            assert chunk, "server closed early"
            got += chunk
        assert got == payload, "echo differs"

    proc.send_signal(signal.SIGUSR1)
    for c in conns:
        c.close()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, f"exit {proc.returncode}: {err}"
    assert "live fibers" in err and "accept 127.0.0.1:" in err, f"no fiber dump: {err}"
    print("1 passed, 0 failed")
finally:
    if proc.poll() is None:
        proc.kill()
