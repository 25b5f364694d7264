"""Worker-thread bookkeeping for the gateway: a slot that follows its thread, and the
release of idle anyio worker threads."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import threading

import anyio
import anyio.to_thread

from services.admission import AdmissionController, Outcome, Ticket

__all__ = ["IdleThreadReaper", "ThreadSlot"]


class _SlotState(enum.Enum):
    PENDING = enum.auto()  # the thread has not started
    RUNNING = enum.auto()  # the thread runs and its caller still awaits it
    DONE = enum.auto()  # the thread ended; the awaiting caller releases (``settle``)
    ABANDONED = enum.auto()  # the caller gave up before the thread started
    ORPHANED = enum.auto()  # the caller gave up while the thread ran: the thread releases
    RELEASED = enum.auto()


class ThreadSlot:
    """One admission slot, released exactly once.

    * The thread never started (the await was cancelled first: anyio then skips the call,
      so a ``finally`` in the thread would never run): released by ``abandon`` at once.
    * The caller still awaits when the thread ends: released by the caller (``settle``)
      after it has told the breaker what happened, so a queued call admitted into that slot
      sees the breaker's new state.
    * The caller gave up while the thread runs: released by the thread when it really ends
      (``finish``), so abandoned threads can never pile up beyond the bound.
    """

    __slots__ = ("_admission", "_lock", "_loop", "_outcome", "_state", "_ticket")

    def __init__(
        self, admission: AdmissionController, ticket: Ticket, loop: asyncio.AbstractEventLoop
    ) -> None:
        self._admission = admission
        self._ticket = ticket
        self._loop = loop
        self._lock = threading.Lock()
        self._state = _SlotState.PENDING
        self._outcome = Outcome.NONE

    def start(self) -> bool:
        """Called first thing in the worker thread; False if the caller already gave up."""
        with self._lock:
            if self._state is _SlotState.ABANDONED:
                return False
            self._state = _SlotState.RUNNING
            self._admission.mark_started(self._ticket)
            return True

    def finish(self, outcome: Outcome) -> None:
        """Called last thing in the worker thread."""
        with self._lock:
            self._outcome = outcome
            if self._state is not _SlotState.ORPHANED:
                self._state = _SlotState.DONE
                return
            self._state = _SlotState.RELEASED
        # A closed loop (shutdown) has nothing left to release to.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._admission.release, self._ticket, outcome)

    def settle(self) -> None:
        """Called on the loop once the caller is done with the answer (idempotent)."""
        with self._lock:
            if self._state is not _SlotState.DONE:
                return
            self._state = _SlotState.RELEASED
        self._admission.release(self._ticket, self._outcome)

    def abandon(self) -> None:
        """Called on the loop when the await ends without a result."""
        with self._lock:
            state = self._state
            if state is _SlotState.RUNNING:
                self._state = _SlotState.ORPHANED
                return
            if state not in (_SlotState.PENDING, _SlotState.DONE):
                return
            self._state = (
                _SlotState.ABANDONED if state is _SlotState.PENDING else (_SlotState.RELEASED)
            )
        self._admission.release(self._ticket, self._outcome)


class IdleThreadReaper:
    """anyio keeps an idle worker thread until it has been idle for
    ``WorkerThread.MAX_IDLE_TIME`` (10 s) *and* another ``to_thread`` call comes by to
    prune it: after a burst with no later call, every thread would stay. A no-op call a
    little after the last busy moment does that pruning."""

    DELAY = 11.0

    def __init__(self, limiter: anyio.CapacityLimiter) -> None:
        self._limiter = limiter
        self._handle: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None

    def busy(self) -> None:
        loop = asyncio.get_running_loop()
        if self._handle is not None:
            self._handle.cancel()
        self._handle = loop.call_later(self.DELAY, self._fire, loop)

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._handle = None
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._prune())

    async def _prune(self) -> None:
        await anyio.to_thread.run_sync(_noop, limiter=self._limiter)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


def _noop() -> None:
    return None
