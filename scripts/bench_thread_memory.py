"""What one gateway worker thread costs in memory.

    uv run python -m scripts.bench_thread_memory [N ...]   (default: 16 64 128)

For each N, in a fresh process: N sign-ins through a real ``SupabaseGateway`` (production
HTTP client) against a local TCP server that accepts and never answers, so each holds a
worker thread blocked in a socket read with its connection and request. Prints the
resident-memory (VmRSS) growth per thread. Each thread also reserves a stack of
``ulimit -s`` (usually 8 MiB) of *virtual* memory, which costs no RAM until touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import threading

from services import errors
from services.gateway import GatewayConfig, SupabaseGateway


def _status(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1])
    raise RuntimeError(field)


async def _measure(count: int) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1024)
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            accepted.append(server.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    port = server.getsockname()[1]
    gateway = SupabaseGateway(
        GatewayConfig(
            url=f"http://127.0.0.1:{port}/auth/v1",
            anon_key="anon",
            service_role_key="service",
            pool_size=count,
            initial_limit=count,
            min_limit=count,
            deadline=30,
        )
    )
    await asyncio.sleep(0.2)
    rss, threads = _status("VmRSS"), _status("Threads")

    async def sign_in(index: int) -> None:
        with contextlib.suppress(errors.AuthServiceError):
            await gateway.sign_in(f"user{index}@example.com", "password")

    tasks = [asyncio.create_task(sign_in(i)) for i in range(count)]
    for _ in range(200):
        if len(accepted) >= count:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    grown, now = _status("VmRSS") - rss, _status("Threads") - threads
    print(
        f"{count:4d} blocked calls: +{now} threads, RSS +{grown} KiB, "
        f"{grown / max(1, now):.0f} KiB per thread (its stack, connection and request)"
    )
    del tasks
    os._exit(0)  # the threads are blocked on purpose; do not wait for them


def main() -> None:
    counts = [int(a) for a in sys.argv[1:]] or [16, 64, 128]
    if len(counts) == 1 and os.environ.get("_BENCH_CHILD"):
        asyncio.run(_measure(counts[0]))
        return
    for count in counts:
        env = {**os.environ, "_BENCH_CHILD": "1"}
        subprocess.run([sys.executable, "-m", "scripts.bench_thread_memory", str(count)], env=env)


if __name__ == "__main__":
    main()
