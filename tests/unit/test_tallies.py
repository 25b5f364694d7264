"""Hot-path tallies expose exactly what prometheus_client's own updates would."""

from __future__ import annotations

import asyncio
import random

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from services import tallies
from services.tallies import LatencyTally, Tally

pytestmark = [pytest.mark.timeout(30), pytest.mark.anyio]

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


def test_a_latency_tally_gives_the_same_exposition_as_observe() -> None:
    direct, tallied = CollectorRegistry(), CollectorRegistry()
    a = Histogram("lat", "x", ["route"], buckets=BUCKETS, registry=direct).labels("/me")
    b = Histogram("lat", "x", ["route"], buckets=BUCKETS, registry=tallied).labels("/me")
    tally = LatencyTally(b)
    rng = random.Random(7)
    # Values on the bounds themselves included: ``le`` means a bound's own value counts in.
    values = [rng.expovariate(200) for _ in range(5_000)] + list(BUCKETS) + [0.0, 50.0]
    for i, value in enumerate(values):
        a.observe(value)
        tally.observe(value)
        if i % 997 == 0:
            tally.flush()  # several flushes add up
    tally.flush()

    def lines(registry: CollectorRegistry) -> list[str]:
        text = generate_latest(registry).decode()
        return [
            line for line in text.splitlines() if not line.startswith(("lat_created", "lat_sum"))
        ]

    # Every bucket and the count exactly; the sum up to float addition order.
    assert lines(tallied) == lines(direct)
    assert tallied.get_sample_value("lat_sum", {"route": "/me"}) == pytest.approx(
        direct.get_sample_value("lat_sum", {"route": "/me"}), rel=1e-12
    )


def test_a_tally_counts_only_when_flushed_and_never_twice() -> None:
    registry = CollectorRegistry()
    child = Counter("hits", "x", ["kind"], registry=registry).labels("hit")
    tally = Tally(child)
    for _ in range(41):
        tally.n += 1
    assert registry.get_sample_value("hits_total", {"kind": "hit"}) == 0
    tally.flush()
    tally.flush()
    assert registry.get_sample_value("hits_total", {"kind": "hit"}) == 41
    tally.n += 1
    tallies.flush()  # the module-wide flush reaches every tally made
    assert registry.get_sample_value("hits_total", {"kind": "hit"}) == 42


async def test_the_periodic_flush_runs_and_flushes_once_more_when_stopped() -> None:
    registry = CollectorRegistry()
    tally = Tally(Counter("ticks", "x", registry=registry))
    task = asyncio.create_task(tallies.flush_forever(interval=0.01))
    tally.n += 3
    for _ in range(200):
        await asyncio.sleep(0.01)
        if registry.get_sample_value("ticks_total") == 3:
            break
    assert registry.get_sample_value("ticks_total") == 3
    tally.n += 2
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert registry.get_sample_value("ticks_total") == 5
