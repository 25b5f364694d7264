"""Opt-in pytest plugin: fail on any blocking call made on the event loop by app/ or services/.

    uv run pytest tests/integration -p tests.regression.blockbuster_plugin

(or ``BLOCKBUSTER=1`` with ``-p tests.regression.blockbuster_plugin``). blockbuster patches
blocking functions (socket, file, time.sleep, ...) and raises ``BlockingError`` when one
runs on a thread with a running event loop and a frame of app/ or services/ is on the
stack; worker threads (the gateway's SDK calls) have no running loop and are not flagged.
localauth runs in its own subprocess and is not affected. Every violation is also recorded
here, so one swallowed by an ``except Exception`` still fails the session.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from blockbuster import BlockBuster
from blockbuster import blockbuster as _bb_module

VIOLATIONS: list[str] = []
# Known, bounded library stalls (file, function): redis-py 8 reads its package metadata
# (importlib.metadata: os.stat and a small file read) once per *new* pooled connection,
# not per command. Reported upstream-worthy, harmless at our connection churn.
ALLOWED: list[tuple[str, set[str]]] = [
    ("redis/driver_info.py", {"__post_init__", "resolve_driver_info"}),
]
_original_init = _bb_module.BlockingError.__init__


def _recording_init(self: Any, func: str) -> None:
    VIOLATIONS.append(func)
    _original_init(self, func)


def _enabled(config: pytest.Config) -> bool:
    return os.environ.get("BLOCKBUSTER", "1") != "0"


@pytest.fixture(autouse=True)
def _blockbuster(request: pytest.FixtureRequest) -> Iterator[None]:
    if not _enabled(request.config):
        yield
        return
    _bb_module.BlockingError.__init__ = _recording_init  # type: ignore[method-assign]
    buster = BlockBuster(["app", "services"])
    for function in buster.functions.values():
        for filename, names in ALLOWED:
            function.can_block_in(filename, names)
    buster.activate()
    try:
        yield
    finally:
        buster.deactivate()
        _bb_module.BlockingError.__init__ = _original_init  # type: ignore[method-assign]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if VIOLATIONS:
        print(f"\nblockbuster: blocking calls on the event loop: {sorted(set(VIOLATIONS))}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
