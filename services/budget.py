"""The time a request has: counted from its arrival, not from each upstream call.

The HTTP edge opens a ``Budget`` as a request arrives; the gateway ends every upstream call
of that request by ``arrival + deadline``. So the configured deadline bounds the answer the
client waits for, whatever came before the call (reading the body, the lockout check, a
busy event loop during a burst) and however many upstream calls one request makes (a
registration creates the user, then signs in).

A task started while a request runs copies the request's context, and with it the budget;
the edge closes the budget when the request ends, so work that outlives its request is
timed from its own calls again.
"""

from __future__ import annotations

import time
from contextvars import ContextVar

__all__ = ["Budget", "call_deadline", "opened"]


class Budget:
    __slots__ = ("arrived", "open")

    def __init__(self, arrived: float) -> None:
        self.arrived = arrived
        self.open = True


_BUDGET: ContextVar[Budget | None] = ContextVar("request_budget", default=None)


def opened() -> Budget:
    """Start the budget of the request being served (the edge calls this on arrival, in
    the request's own task, and sets ``open = False`` when the request is over)."""
    budget = Budget(time.monotonic())
    _BUDGET.set(budget)
    return budget


def call_deadline(seconds: float, now: float) -> float:
    """When an upstream call starting at ``now`` (monotonic) must be over: ``seconds`` after
    its request arrived, or after ``now`` outside a request."""
    budget = _BUDGET.get()
    if budget is None or not budget.open:
        return now + seconds
    return min(now, budget.arrived) + seconds
