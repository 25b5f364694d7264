"""An out-of-process /health/live prober: ``python -m tests.regression.probe HOST PORT OUT``.

It runs in its own process so the latency it records is the server's, not the load
generator's event-loop lag. One keep-alive connection, a GET every 20 ms; each line of OUT
is one latency in seconds, or ``fail``. It stops when its stdin closes.
"""

from __future__ import annotations

import socket
import sys
import threading
import time

REQUEST = b"GET /health/live HTTP/1.1\r\nHost: probe\r\n\r\n"


def _read_response(sock: socket.socket) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise ConnectionError(head.split(b"\r\n")[0].decode())
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed")
        body += chunk


def main() -> int:
    host, port, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    interval = float(sys.argv[4]) if len(sys.argv) > 4 else 0.02
    stop = threading.Event()

    def wait_for_eof() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=wait_for_eof, daemon=True).start()
    sock: socket.socket | None = None
    with open(out, "w", buffering=1) as sink:
        print("ready", file=sink)
        while not stop.is_set():
            started = time.monotonic()
            try:
                if sock is None:
                    sock = socket.create_connection((host, port), timeout=30)
                sock.sendall(REQUEST)
                _read_response(sock)
                print(f"{time.monotonic() - started:.6f}", file=sink)
            except OSError:
                print("fail", file=sink)
                if sock is not None:
                    sock.close()
                sock = None
            stop.wait(interval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
