"""N worker processes on the listening sockets ``app.__main__`` already bound.

``fork_workers(n)`` returns only in a worker (each then runs the one-process server as
before: its own event loop, Redis pool, token and session caches, and its own invalidation
subscription, so a revocation published once reaches every worker). The parent stays a
small supervisor: it forwards SIGTERM/SIGINT to the workers (each drains), and if one
worker dies unasked it stops the others and exits non-zero, so the platform restarts the
whole instance (Railway's restart policy) rather than leaving it at reduced capacity.

Why not uvicorn's ``--workers`` supervisor: it *spawns* workers, pickling the config, and
cannot carry this service's pre-bound dual-stack socket set-up, the app built in the parent
or the bounded HTTP protocol class; forking after binding keeps all three unchanged.
Forking is safe here because nothing before this point starts a thread or an event loop
(``create_app`` builds clients only in the lifespan, inside each worker).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from types import FrameType

import structlog

log = structlog.get_logger("app.workers")


def fork_workers(count: int) -> None:
    """Fork ``count`` workers; returns in each worker, never in the supervisor."""
    children: set[int] = set()
    for index in range(count):
        pid = os.fork()
        if pid == 0:
            os.environ["SUPAGUARD_WORKER"] = str(index)
            return
        children.add(pid)
    log.info("workers_started", count=count, pids=sorted(children))
    sys.exit(_supervise(children))


def _supervise(children: set[int]) -> int:
    stopping = False

    # SIGTERM to the workers for both: a terminal's Ctrl-C already sent them SIGINT, and a
    # second SIGINT would make uvicorn skip the drain.
    def forward(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    status = 0
    while children:
        try:
            pid, wait_status = os.wait()
        except ChildProcessError:
            break
        children.discard(pid)
        code = os.waitstatus_to_exitcode(wait_status)
        if code != 0:
            status = status or (code if code > 0 else 1)
        if not stopping:
            # A worker died on its own: take the instance down so it is restarted whole.
            log.error("worker_exited", pid=pid, code=code)
            forward(signal.SIGTERM, None)
            status = status or 1
    return status
