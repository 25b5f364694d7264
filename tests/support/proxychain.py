"""A real chain of two reverse proxies in front of the app: haproxy as the platform edge,
nginx as the gateway, configured the way Railway's edge and Kong forward requests.

    user (127.0.1.N) --> haproxy "edge" 127.0.0.1:E --(from 127.0.0.2)--> nginx "gateway"
    127.0.0.2:G --(from ::1)--> app [::]:A

* The edge appends the address it sees to ``X-Forwarded-For`` (haproxy ``option
  forwardfor`` adds a header line of its own) and says ``X-Forwarded-Proto: https``, as a
  TLS-terminating edge does.
* The gateway does what Kong does with ``trusted_ips`` = the edge, ``real_ip_header =
  X-Forwarded-For`` and ``real_ip_recursive = on``: it believes the edge's forwarded
  headers, sends ``X-Forwarded-For: <incoming>, <its peer>`` and its own request id as
  ``X-Kong-Request-Id`` upstream, and prints that id in its access log. A client's
  ``X-Forwarded-Prefix`` is dropped (Kong sets its own).

Every process runs in the foreground on free ports with a generated config, and is stopped
when the context exits. Loopback addresses other than 127.0.0.1 tell the hops apart.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.localauth import free_port

EDGE_SOURCE = "127.0.0.2"  # the edge connects to the gateway from here
GATEWAY_PEER = "::1"  # the gateway connects to the app from here
_START_SECONDS = 10.0


@dataclass(frozen=True)
class ProxyChain:
    url: str  # the edge, where users connect
    gateway_log: Path


def require(tool: str) -> str:
    path = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/usr/local/sbin")
    if path is None:
        pytest.fail(f"{tool} is not installed (scripts/test installs it with apt-get)")
    return path


def _haproxy_config(edge_port: int, gateway_port: int) -> str:
    return f"""
global
    maxconn 512

defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s

frontend edge
    bind 127.0.0.1:{edge_port}
    option forwardfor
    http-request set-header X-Forwarded-Proto https
    default_backend gateway

backend gateway
    server gateway {EDGE_SOURCE}:{gateway_port} source {EDGE_SOURCE}
"""


def _nginx_config(workdir: Path, gateway_port: int, app_port: int) -> str:
    return f"""
daemon off;
master_process off;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log warn;
events {{ worker_connections 512; }}
http {{
    client_body_temp_path {workdir}/body;
    proxy_temp_path {workdir}/proxy;
    fastcgi_temp_path {workdir}/fastcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;
    log_format gateway '$request_id $realip_remote_addr $remote_addr "$request" $status';
    access_log {workdir}/gateway-access.log gateway;

    set_real_ip_from {EDGE_SOURCE};
    real_ip_header X-Forwarded-For;
    real_ip_recursive on;

    geo $realip_remote_addr $from_edge {{ default 0; {EDGE_SOURCE} 1; }}
    map "$from_edge:$http_x_forwarded_proto" $forwarded_proto {{
        default $scheme;
        "~^1:(?<proto>https?)$" $proto;
    }}
    map $http_x_forwarded_for $forwarded_for {{
        "" $realip_remote_addr;
        default "$http_x_forwarded_for, $realip_remote_addr";
    }}

    server {{
        listen {EDGE_SOURCE}:{gateway_port};
        location / {{
            proxy_pass http://[{GATEWAY_PEER}]:{app_port};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $forwarded_for;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-Proto $forwarded_proto;
            proxy_set_header X-Forwarded-Prefix "";
            proxy_set_header X-Kong-Request-Id $request_id;
        }}
    }}
}}
"""


def _wait_listening(host: str, port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + _START_SECONDS
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited:\n{log.read_text()[-3000:]}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError as exc:
            if time.monotonic() > deadline:
                tail = log.read_text()[-3000:]
                raise RuntimeError(f"{process.args!r} did not listen:\n{tail}") from exc
            time.sleep(0.05)


@contextmanager
def _process(argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as sink:
        process = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def proxy_chain(app_port: int, workdir: Path) -> Iterator[ProxyChain]:
    """haproxy (edge) -> nginx (gateway) -> the app listening on ``[::]:app_port``."""
    haproxy, nginx = require("haproxy"), require("nginx")
    workdir.mkdir(parents=True, exist_ok=True)
    edge_port, gateway_port = free_port(), free_port()
    (workdir / "nginx.conf").write_text(_nginx_config(workdir, gateway_port, app_port))
    (workdir / "haproxy.cfg").write_text(_haproxy_config(edge_port, gateway_port))
    with ExitStack() as stack:
        log = workdir / "nginx.out"
        gateway = stack.enter_context(
            _process([nginx, "-p", str(workdir), "-c", str(workdir / "nginx.conf")], log)
        )
        _wait_listening(EDGE_SOURCE, gateway_port, gateway, log)
        log = workdir / "haproxy.out"
        edge = stack.enter_context(
            _process([haproxy, "-db", "-f", str(workdir / "haproxy.cfg")], log)
        )
        _wait_listening("127.0.0.1", edge_port, edge, log)
        yield ProxyChain(
            url=f"http://127.0.0.1:{edge_port}", gateway_log=workdir / "gateway-access.log"
        )
