"""What admission hands its callers (``services.admission``): the priority a call asks at,
the slot it is given (``Ticket``), how the call ended (``Outcome``), and the refusal
(``Shed``)."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

__all__ = ["Outcome", "Priority", "Shed", "Ticket"]


class Priority(enum.IntEnum):
    CONTROL = 0  # refresh, logout: never starved by a login storm
    NORMAL = 1  # login, registration, admin calls
    PROBE = 2  # readiness: admitted only when a slot is free now, never queued


class Outcome(enum.Enum):
    ANSWERED = "answered"  # the upstream answered (any status it meant): a latency sample
    OVERLOAD = "overload"  # a timeout or transport failure: the limit backs off
    NONE = "none"  # nothing learnt (cancelled before start, failed before sending)


class Shed(Exception):
    """The call was refused by admission; ``reason`` is a metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(eq=False)
class Ticket:
    """A slot held by one call; give it back with ``AdmissionController.release``."""

    operation: str
    priority: Priority
    admitted: float
    queued_for: float
    started: float = 0.0  # when its thread began the work (0: never started)
    released: bool = False
    occupancy: float = 0.0  # the controller's slot-seconds integral when it was admitted
    # The service time predicted when it was admitted (0: too little observed to say):
    # what a timeout is judged against (services.upstream_call).
    expected: float = 0.0
    deadline: float = math.inf  # when its caller stops waiting for it
