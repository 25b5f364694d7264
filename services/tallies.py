"""Hot-path counts without a lock per update, moved into Prometheus series in batches.

``prometheus_client`` takes a ``threading.Lock`` and two method calls on every ``inc()``
and ``observe()``. A request to ``/me`` updated five series (request count, latency sum and
bucket, token-cache hit, session-cache hit): about a tenth of the request's CPU. The
hot path runs on the event loop's one thread, so plain integer adds there are safe; a
``Tally`` or ``LatencyTally`` holds them and ``flush()`` adds them into the real series.

``flush()`` runs on the loop before every scrape (``/metrics``), so a scrape always sees
every request answered before it, and once a second (``flush_forever``) so that a
multi-process registry (``PROMETHEUS_MULTIPROC_DIR``), which reads each worker's files,
is at most a second behind. Only code on the event loop's thread may update a tally.
"""

from __future__ import annotations

import asyncio
import bisect
from typing import Any, Protocol

_ALL: list[Tally | LatencyTally] = []


class _Incrementable(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class Tally:
    """A count for one labelled Prometheus counter: ``tally.n += 1`` on the hot path."""

    __slots__ = ("_series", "n")

    def __init__(self, series: _Incrementable) -> None:
        self.n = 0
        self._series = series
        _ALL.append(self)

    def flush(self) -> None:
        if self.n:
            n, self.n = self.n, 0
            self._series.inc(n)


class LatencyTally:
    """Observations for one labelled Prometheus histogram, kept as bucket counts.

    ``flush`` adds them to the histogram's own bucket and sum values (the ones its
    ``observe`` adds to, process-local or multi-process alike); the bounds are the
    histogram's, so the exposition is exactly what ``observe`` would have produced
    (``tests/unit/test_tallies.py`` compares the two).
    """

    __slots__ = ("_bounds", "_buckets", "_counts", "_sum", "_total")

    def __init__(self, series: Any) -> None:
        # prometheus_client keeps a histogram child's values in ``_buckets`` (one per upper
        # bound, +Inf last; not cumulative) and ``_sum``, with the bounds in
        # ``_upper_bounds``: the one place this module reads its internals.
        self._bounds: list[float] = list(series._upper_bounds)
        self._buckets: list[_Incrementable] = list(series._buckets)
        self._sum: _Incrementable = series._sum
        if len(self._bounds) != len(self._buckets):
            raise TypeError("not a prometheus_client histogram child")
        self._counts = [0] * len(self._bounds)
        self._total = 0.0
        _ALL.append(self)

    def observe(self, seconds: float) -> None:
        # bisect_left: a value equal to a bound falls in that bound's bucket (le).
        self._counts[bisect.bisect_left(self._bounds, seconds)] += 1
        self._total += seconds

    def flush(self) -> None:
        counts, total = self._counts, self._total
        if not any(counts):
            return
        self._counts = [0] * len(counts)
        self._total = 0.0
        for bucket, n in zip(self._buckets, counts, strict=True):
            if n:
                bucket.inc(n)
        self._sum.inc(total)


_BY_LABELS: dict[tuple[int, tuple[str, ...]], Any] = {}


def count(metric: Any, *labels: str) -> None:
    """``metric.labels(*labels).inc()`` for code on the loop (labels from code, bounded)."""
    key = (id(metric), labels)
    tally = _BY_LABELS.get(key)
    if tally is None:
        tally = _BY_LABELS[key] = Tally(metric.labels(*labels))
    tally.n += 1


def observe(metric: Any, seconds: float, *labels: str) -> None:
    """``metric.labels(*labels).observe(seconds)`` for code on the loop."""
    key = (id(metric), labels)
    tally = _BY_LABELS.get(key)
    if tally is None:
        tally = _BY_LABELS[key] = LatencyTally(metric.labels(*labels))
    tally.observe(seconds)


def flush() -> None:
    """Move every tally into its series (call on the event loop's thread)."""
    for tally in _ALL:
        tally.flush()


async def flush_forever(interval: float = 1.0) -> None:
    """Flush every ``interval`` seconds until cancelled (a lifespan task)."""
    try:
        while True:
            await asyncio.sleep(interval)
            flush()
    finally:
        flush()
