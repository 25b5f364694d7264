"""Find a Redis for the tests, or start private ones: a single node (optionally with TLS),
a Sentinel group (1 master, 1 replica, 3 sentinels) and a 3-master Cluster, all from
``redis-server`` on free ports. Never flush a Redis we did not start."""

from __future__ import annotations

import contextlib
import random
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis as sync_redis

_START_SECONDS = 10.0


def answers(host: str, port: int, *, tls: ssl.SSLContext | None = None) -> bool:
    """Does a Redis answer PING at host:port?"""
    try:
        with socket.create_connection((host, port), timeout=0.5) as raw:
            if tls is None:
                raw.sendall(b"PING\r\n")
                return raw.recv(64).startswith((b"+PONG", b"-NOAUTH"))
            with tls.wrap_socket(raw, server_hostname=host) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


def command(client: sync_redis.Redis, *args: object) -> Any:
    """A raw command (redis-py's execute_command is untyped)."""
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(*, bus: bool = False) -> int:
    """A free port; with ``bus``, port + 10000 is free too (a cluster node's bus port)."""
    for _ in range(200):
        port = random.randint(20000, 45000)
        if _bindable(port) and (not bus or _bindable(port + 10000)):
            return port
    raise RuntimeError("no free port")


def redis_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(
            "no Redis answers on 127.0.0.1:6379 and redis-server is not installed; "
            "install it (Debian: apt-get install redis-server) or set TEST_REDIS_URL"
        )
    return binary


@dataclass
class RedisServer:
    """A redis-server process this test run owns, so it may stop and restart it."""

    port: int
    workdir: Path
    args: Sequence[str] = ()
    tls: ssl.SSLContext | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        port_args = ["--port", "0", "--tls-port", str(self.port)] if self.tls else []
        self.process = subprocess.Popen(
            [
                redis_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                *port_args,
                *self.args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.workdir,
        )
        deadline = time.monotonic() + _START_SECONDS
        while not answers("127.0.0.1", self.port, tls=self.tls):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    def kill(self) -> None:
        """SIGKILL: no shutdown, nothing flushed to replicas that was not sent already."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def client(self, **kwargs: object) -> sync_redis.Redis:
        return sync_redis.Redis(host="127.0.0.1", port=self.port, **kwargs)  # type: ignore[arg-type]


@contextmanager
def private_redis(workdir: Path, *args: str) -> Iterator[RedisServer]:
    server = RedisServer(port=free_port(), workdir=workdir, args=args)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# -- Sentinel ----------------------------------------------------------------------------


@dataclass
class SentinelGroup:
    master: RedisServer
    replica: RedisServer
    sentinels: list[RedisServer]
    replicas: list[RedisServer] = field(default_factory=list)
    name: str = "mymaster"
    servers: dict[int, RedisServer] = field(default_factory=dict)

    @property
    def sentinel_addresses(self) -> str:
        return ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)

    @property
    def url(self) -> str:
        return f"redis+sentinel://{self.sentinel_addresses}/{self.name}/0"

    def master_port(self) -> int:
        for sentinel in self.sentinels:
            with contextlib.suppress(sync_redis.RedisError):
                client = sentinel.client(socket_timeout=1)
                try:
                    _, port = command(client, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.name)
                    return int(port)
                finally:
                    client.close()
        raise RuntimeError("no sentinel answers")

    def current_master(self) -> RedisServer:
        return self.servers[self.master_port()]

    def wait_master_change(self, old_port: int, timeout: float = 30.0) -> int:
        """Until the sentinels name a new master that says it is one; its port."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(sync_redis.RedisError, RuntimeError):
                port = self.master_port()
                if port != old_port:
                    client = self.servers[port].client(socket_timeout=1)
                    try:
                        if command(client, "ROLE")[0] == b"master":
                            return port
                    finally:
                        client.close()
            time.sleep(0.05)
        raise TimeoutError("no failover within the bound")

    def wait_replica_linked(self, timeout: float = 20.0) -> None:
        """Until the current master has a replica online (replication caught up)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(sync_redis.RedisError, RuntimeError, KeyError):
                client = self.current_master().client(socket_timeout=1)
                try:
                    info = client.info("replication")
                    wanted = max(1, len(self.replicas))
                    online = sum(
                        1 for i in range(wanted) if "online" in str(info.get(f"slave{i}", ""))
                    )
                    # "online" can precede the replica's first acknowledgement: wait for
                    # WAIT itself to see every replica.
                    if int(info.get("connected_slaves", 0)) >= wanted and online == wanted:
                        client.set("sgtest-replication-probe", "1", px=1000)
                        if int(command(client, "WAIT", wanted, 100)) >= wanted:
                            return
                finally:
                    client.close()
            time.sleep(0.05)
        raise TimeoutError("replica did not link")

    def wait_sentinels_see_replica(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ok = 0
            for sentinel in self.sentinels:
                with contextlib.suppress(sync_redis.RedisError):
                    client = sentinel.client(socket_timeout=1)
                    try:
                        replicas = command(client, "SENTINEL", "REPLICAS", self.name)
                        if len(replicas) >= max(1, len(self.replicas)):
                            ok += 1
                    finally:
                        client.close()
            if ok == len(self.sentinels):
                return
            time.sleep(0.1)
        raise TimeoutError("sentinels did not discover the replica")


_FAST_REPL = ("--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0")


@contextmanager
def sentinel_group(
    workdir: Path, *, down_after_ms: int = 1000, replicas: int = 1
) -> Iterator[SentinelGroup]:
    """1 master, ``replicas`` replicas, 3 sentinels (quorum 2), all on free ports."""
    started: list[RedisServer] = []
    try:
        master = RedisServer(free_port(), workdir / "master", args=_FAST_REPL)
        master.start()
        started.append(master)
        copies = []
        for index in range(replicas):
            replica = RedisServer(
                free_port(),
                workdir / f"replica{index}",
                args=(*_FAST_REPL, "--replicaof", "127.0.0.1", str(master.port)),
            )
            replica.start()
            started.append(replica)
            copies.append(replica)
        sentinels: list[RedisServer] = []
        for index in range(3):
            port = free_port()
            folder = workdir / f"sentinel{index}"
            folder.mkdir(parents=True, exist_ok=True)
            conf = folder / "sentinel.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {folder}\n"
                f"sentinel monitor mymaster 127.0.0.1 {master.port} 2\n"
                f"sentinel down-after-milliseconds mymaster {down_after_ms}\n"
                "sentinel failover-timeout mymaster 10000\n"
                "sentinel parallel-syncs mymaster 1\n"
            )
            sentinel = _SentinelProcess(port, folder, conf=conf)
            sentinel.start()
            started.append(sentinel)
            sentinels.append(sentinel)
        group = SentinelGroup(master, copies[0], sentinels, replicas=copies)
        group.servers = {master.port: master, **{r.port: r for r in copies}}
        group.wait_replica_linked()
        group.wait_sentinels_see_replica()
        yield group
    finally:
        for server in reversed(started):
            with contextlib.suppress(Exception):
                server.stop()


@dataclass
class _SentinelProcess(RedisServer):
    conf: Path | None = None

    def start(self) -> None:
        assert self.conf is not None
        self.process = subprocess.Popen(
            [redis_binary(), str(self.conf), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.workdir,
        )
        deadline = time.monotonic() + _START_SECONDS
        while not answers("127.0.0.1", self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-sentinel did not start on port {self.port}")
            time.sleep(0.02)


# -- Cluster -----------------------------------------------------------------------------


@dataclass
class Cluster:
    nodes: list[RedisServer]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)
        return f"redis+cluster://{hosts}"


@contextmanager
def redis_cluster(workdir: Path, *, masters: int = 3, replicas: int = 0) -> Iterator[Cluster]:
    """``masters`` nodes (and ``replicas`` per master), slots split evenly by
    ``redis-cli --cluster create``."""
    nodes: list[RedisServer] = []
    try:
        for index in range(masters * (1 + replicas)):
            port = free_port(bus=True)
            node = RedisServer(
                port,
                workdir / f"node{index}",
                args=(
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    f"nodes-{port}.conf",
                    "--cluster-node-timeout",
                    "2000",
                    *_FAST_REPL,
                ),
            )
            node.start()
            nodes.append(node)
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RuntimeError("redis-cli is not installed (Debian: apt-get install redis-tools)")
        subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in nodes),
                "--cluster-replicas",
                str(replicas),
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        deadline = time.monotonic() + 20
        while True:
            states = []
            for node in nodes:
                client = node.client(socket_timeout=1)
                try:
                    states.append(command(client, "CLUSTER", "INFO"))
                finally:
                    client.close()
            if all(b"cluster_state:ok" in s for s in states) and _replicas_synced(nodes, replicas):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster did not become ok")
            time.sleep(0.05)
        yield Cluster(nodes)
    finally:
        for node in reversed(nodes):
            with contextlib.suppress(Exception):
                node.stop()


def _replicas_synced(nodes: list[RedisServer], per_master: int) -> bool:
    if per_master == 0:
        return True
    online = 0
    for node in nodes:
        client = node.client(socket_timeout=1)
        try:
            info = client.info("replication")
        finally:
            client.close()
        if info.get("role") == "master":
            online += sum(
                1 for k, v in info.items() if k.startswith("slave") and "online" in str(v)
            )
    return online >= len(nodes) - len(nodes) // (1 + per_master)


# -- ACL ---------------------------------------------------------------------------------


def add_acl_user(
    server: RedisServer,
    name: str,
    password: str,
    *,
    prefix: str,
    commands: Sequence[str],
    tls: dict[str, object] | None = None,
) -> None:
    """An ACL user allowed exactly ``commands`` on keys and channels under ``prefix``."""
    client = server.client(**(tls or {}))
    try:
        command(
            client,
            "ACL",
            "SETUSER",
            name,
            "reset",
            "on",
            f">{password}",
            f"~{prefix}*",
            f"&{prefix}*",
            "-@all",
            *(f"+{c}" for c in commands),
        )
    finally:
        client.close()
