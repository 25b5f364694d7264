"""Answer failures no faster than successes, so timing does not tell which accounts exist.

Supabase Auth answers a sign-in for an unknown address at once but checks a bcrypt hash for
a known one (tens of milliseconds, more at production cost factors), so the time of a failed
sign-in says whether the address has an account. ``LatencyFloor`` learns how long the
successful path takes (the upstream checked a real password: the slow path) and pads every
failure up to a high quantile of it (the median while fewer than 20 are known). The pad
is an ``asyncio.sleep`` after the upstream call has returned: it holds no thread, no
gateway slot and no lock, only the caller waits.

Only successes teach the floor, and only the caller's own credentials can produce one, so
no caller can lower it; it is capped so a slow upstream moment cannot make failures slow
for long.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque


class LatencyFloor:
    def __init__(
        self,
        *,
        initial: float = 0.1,
        quantile: float = 0.9,
        window: int = 64,
        minimum_samples: int = 5,
        quantile_samples: int = 20,
        cap: float = 2.0,
    ) -> None:
        self.initial = initial
        self.quantile = quantile
        self.minimum_samples = minimum_samples
        self.quantile_samples = quantile_samples
        self.cap = cap
        self._samples: deque[float] = deque(maxlen=window)
        self._floor = initial
        self._stale = False

    @property
    def floor(self) -> float:
        # Worked out when a failure needs it, not on every success (a sort of the window).
        if self._stale:
            self._stale = False
            if len(self._samples) >= self.minimum_samples:
                ordered = sorted(self._samples)
                # Few samples: the median, so one slow moment does not set the floor; enough
                # of them: the high quantile, so most known-account failures are padded too.
                q = self.quantile if len(ordered) >= self.quantile_samples else 0.5
                index = min(len(ordered) - 1, int(q * len(ordered)))
                self._floor = min(self.cap, ordered[index])
        return self._floor

    def observe(self, seconds: float) -> None:
        """One successful path took ``seconds``."""
        self._samples.append(seconds)
        self._stale = True

    async def pad(self, started: float) -> None:
        """Sleep until ``started`` (a ``time.monotonic()``) plus the floor."""
        remaining = started + self.floor - time.monotonic()
        if remaining > 0:
            await asyncio.sleep(remaining)
