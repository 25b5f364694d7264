"""Bounded request heads and keep-alive, over a real socket to ``python -m app`` (uvicorn).

Also the body parser's worst case on the wire: thousands of unclosed brackets are a 400
problem and the same keep-alive connection serves the next request.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import app_env
from tests.support.appserver import AppServer, run_app
from tests.support.localauth import LocalAuth

pytestmark = pytest.mark.timeout(60)

MAX_HEADER_BYTES = 16 * 1024
MAX_HEADER_COUNT = 50


@pytest.fixture(scope="module")
def server(
    localauth: LocalAuth, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AppServer]:
    env = app_env(
        localauth,
        redis_url,
        "sgtest:heads:",
        max_header_bytes=MAX_HEADER_BYTES,
        max_header_count=MAX_HEADER_COUNT,
        rate_limit_enabled="false",
    )
    with run_app(env, tmp_path_factory.mktemp("heads")) as running:
        yield running


def _connect(server: AppServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    return sock


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response (content-length framed) from ``sock``."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a full head: {data[:200]!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status, headers, rest[:length]


def _closed(sock: socket.socket) -> bool:
    sock.settimeout(5)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def _get(path: str, extra: bytes = b"") -> bytes:
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n" + extra + b"\r\n"


def _assert_431(status: int, headers: dict[str, str], body: bytes) -> None:
    assert status == 431
    assert headers["content-type"] == "application/problem+json"
    problem = json.loads(body)
    assert (problem["status"], problem["code"]) == (431, "headers_too_large")


def test_one_huge_header_is_431(server: AppServer) -> None:
    """A head of a megabyte (one header) is refused while it arrives: 431, connection closed,
    and the server still answers everyone else."""
    with _connect(server) as sock:
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Big: ")
        try:
            for _ in range(64):  # 1 MiB in 16 KiB pieces; the server stops reading early
                sock.sendall(b"a" * 16384)
        except (BrokenPipeError, ConnectionResetError):
            pass
        status, headers, body = _read_response(sock)
        _assert_431(status, headers, body)
        assert _closed(sock)
    with _connect(server) as sock:
        sock.sendall(_get("/health/live"))
        assert _read_response(sock)[0] == 200


def test_too_many_headers_is_431(server: AppServer) -> None:
    """More headers than MAX_HEADER_COUNT, each small: 431."""
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(MAX_HEADER_COUNT + 5))
    with _connect(server) as sock:
        sock.sendall(_get("/health/live", many))
        _assert_431(*_read_response(sock))


def test_many_small_headers_over_the_byte_limit_is_431(server: AppServer) -> None:
    """Few enough headers, but more bytes than MAX_HEADER_BYTES in one segment: 431."""
    big = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 1000) for i in range(20))
    with _connect(server) as sock:
        sock.sendall(_get("/health/live", big))
        _assert_431(*_read_response(sock))


def test_a_head_under_the_limits_is_served(server: AppServer) -> None:
    """A large but allowed head (an 8 KiB bearer token, 40 headers) is served."""
    fine = b"Authorization: Bearer " + b"x" * 8000 + b"\r\n"
    fine += b"".join(b"X-H%d: v\r\n" % i for i in range(38))
    with _connect(server) as sock:
        sock.sendall(_get("/health/live", fine))
        assert _read_response(sock)[0] == 200


@pytest.mark.parametrize("body", [b"[" * 5000, b'{"a":' * 3000, b"[" * 40 + b"]" * 40])
def test_deep_bodies_are_400_and_keep_the_connection(server: AppServer, body: bytes) -> None:
    """Thousands of unclosed brackets on login, register and refresh: a 400 problem each,
    all on one keep-alive connection, which then still serves a normal request."""
    with _connect(server) as sock:
        for path in ("/api/v1/auth/login", "/api/v1/auth/register", "/api/v1/auth/refresh"):
            sock.sendall(
                b"POST " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body
            )
            status, headers, answer = _read_response(sock)
            assert status == 400, answer
            assert headers["content-type"] == "application/problem+json"
            assert json.loads(answer)["code"] == "malformed_json"
            assert headers.get("connection", "").lower() != "close"
        sock.sendall(_get("/health/live"))
        assert _read_response(sock)[0] == 200
    assert "Traceback" not in Path(server.log).read_text()


def _read_all(stream: Any, methods: list[str]) -> list[tuple[int, dict[str, str], bytes]]:
    """The answers to requests of ``methods``, read in order from one buffered connection
    (an answer to HEAD has a length but no body)."""
    answers = []
    for method in methods:
        status_line = stream.readline()
        if not status_line:
            raise ConnectionError("closed before every answer arrived")
        headers: dict[str, str] = {}
        while (line := stream.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        body = b"" if method == "HEAD" else stream.read(int(headers.get("content-length", "0")))
        answers.append((int(status_line.split()[1]), headers, body))
    return answers


def test_pipelined_requests_get_whole_answers_in_order(server: AppServer) -> None:
    """Answers are written head and body together (``app.httpserver``): requests sent
    back to back on one connection, a HEAD among them, each get their whole answer, in
    order, and a final ``Connection: close`` one ends the connection after its answer."""
    with _connect(server) as sock:
        sock.sendall(
            _get("/health/live")
            + b"HEAD /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            + _get("/api/v1/auth/me")
            + b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        with sock.makefile("rb") as stream:
            (live, _, body), (head, head_headers, _), (me, _, problem), (last, _, _) = _read_all(
                stream, ["GET", "HEAD", "GET", "GET"]
            )
            rest = stream.read()
        assert (live, json.loads(body)["status"]) == (200, "ok")
        assert head == 200
        assert int(head_headers["content-length"]) > 0
        assert me == 401
        assert json.loads(problem)["status"] == 401
        assert last == 200
        assert rest == b""  # closed after the last answer, nothing more
