"""One upstream HTTP client per worker thread.

The SDK is blocking, so each upstream call runs in a thread of its own, and one call at a
time runs in each thread. A single ``httpx.Client`` shared by all of them funnels every
call through its pool's one lock, and while holding it httpcore checks every pooled
connection for expiry (a ``poll`` system call each): under a burst, with a hundred
connections pooled, each call paid a hundred system calls inside a lock the other threads
queued on, and the queueing looked to admission like a slower upstream. A client per
thread needs no lock shared with any other call, and keeps the same number of connections
(one per thread, kept alive with it).

A thread's client is closed when the thread ends (idle worker threads are released, see
``services.threads``) and every remaining one by ``close``.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

import httpx

__all__ = ["ThreadClients"]

T = TypeVar("T")


class ThreadClients(Generic[T]):
    """``get()`` is this thread's ``(client, extra)``: ``extra`` is built once per thread
    from its client by ``attach`` (the SDK objects that hold the client)."""

    def __init__(
        self,
        build: Callable[[], httpx.Client],
        attach: Callable[[httpx.Client], T],
        *,
        shared: httpx.Client | None = None,
    ) -> None:
        # ``shared``: one given client for every thread (tests answering with a mock).
        self._build = build
        self._attach = attach
        self._shared = (shared, attach(shared)) if shared is not None else None
        self._local = threading.local()
        # Re-entrant: a finalizer (``_discard``) may run from garbage collection in a thread
        # that is inside one of these methods already.
        self._lock = threading.RLock()
        self._open: set[httpx.Client] = set()
        self._closed = False

    def get(self) -> tuple[httpx.Client, T]:
        if self._shared is not None:
            return self._shared
        mine: tuple[httpx.Client, T] | None = getattr(self._local, "mine", None)
        if mine is None:
            client = self._build()
            with self._lock:
                if self._closed:
                    client.close()
                    raise RuntimeError("the upstream clients are closed")
                self._open.add(client)
            mine = (client, self._attach(client))
            self._local.mine = mine
            # When the thread object goes away (a released worker), its client follows.
            weakref.finalize(threading.current_thread(), self._discard, client)
        return mine

    @property
    def count(self) -> int:
        """Clients open now (one per thread that has called the upstream)."""
        with self._lock:
            return len(self._open)

    def _discard(self, client: httpx.Client) -> None:
        with self._lock:
            self._open.discard(client)
        client.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            clients, self._open = self._open, set()
        for client in clients:
            client.close()
        if self._shared is not None:
            self._shared[0].close()
