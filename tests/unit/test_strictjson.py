"""The strict JSON parser: refuses exactly the non-interoperable classes, and nothing that
is plain RFC 8259 (a property test: every value json.dumps writes within the rules parses
back unchanged)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app import strictjson
from app.edgeguard import HostPatterns
from services.metadata import encoded_size

safe_text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"))
values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-strictjson.MAX_SAFE_INTEGER, max_value=strictjson.MAX_SAFE_INTEGER)
    | st.floats(allow_nan=False, allow_infinity=False)
    | safe_text,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(safe_text, children, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(values)
def test_plain_json_round_trips(value: Any) -> None:
    """No false refusals: strings full of brackets, quotes and escapes included."""
    raw = json.dumps(value, ensure_ascii=False).encode()
    if strictjson.nesting_depth(raw) <= strictjson.MAX_DEPTH:
        assert strictjson.loads(raw) == value


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(st.text(alphabet='[]{}"\\ab,:', max_size=60))
def test_depth_ignores_brackets_inside_strings(inner: str) -> None:
    raw = json.dumps({"s": inner}).encode()
    assert strictjson.nesting_depth(raw) == 1


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 100_000,
        b'{"a":' * 50_000,
        b"[" * 33 + b"]" * 33,
        b'{"n": NaN}',
        b'{"n": Infinity}',
        b"[-Infinity]",
        b"1e999",
        b'{"n": -1.5e400}',
        b"9007199254740992",
        b"-" + b"9" * 5000,
        b'"\\ud800"',
        b'["\\udc00"]',
        b'{"\\ud800": 1}',
        b'{"a": "\\u0000"}',
        b'{"a": 1, "a": 1}',
        b"\xff\xfe{}",
        '{"a": 1}'.encode("utf-16"),
        b'{"a": }',
    ],
)
def test_refused(raw: bytes) -> None:
    with pytest.raises(strictjson.StrictJsonError):
        strictjson.loads(raw)


def test_accepted_edges() -> None:
    assert strictjson.loads(b"9007199254740991") == 2**53 - 1
    assert strictjson.loads(b"1e-400") == 0.0
    assert strictjson.loads(b'"\\ud83d\\ude00"') == "\U0001f600"
    assert strictjson.loads(b"[" * 32 + b"]" * 32) is not None


def test_metadata_size_counts_go_escapes() -> None:
    assert encoded_size({"a": "b"}) == len('{"a":"b"}')
    assert encoded_size({"a": "<"}) == len('{"a":"\\u003c"}')
    assert encoded_size({"a": "é"}) == len('{"a":"é"}'.encode())


def test_host_patterns() -> None:
    hosts = HostPatterns(["api.example.com", "*.example.org"])
    assert hosts.allows(b"api.example.com")
    assert hosts.allows(b"API.EXAMPLE.COM:443")
    assert hosts.allows(b"a.b.example.org")
    assert not hosts.allows(b"example.org")
    assert not hosts.allows(b"api.example.com.evil")
    assert not hosts.allows(None)
    assert HostPatterns([]).allows(b"anything")
    assert HostPatterns(["[::1]"]).allows(b"[::1]:8000")


@pytest.mark.anyio
async def test_latency_floor_learns_successes_and_pads_failures() -> None:
    """Until enough successes are seen the initial floor holds; then a high quantile of
    them, capped; the pad sleeps only what is left."""
    import time

    from services.timing import LatencyFloor

    floor = LatencyFloor(initial=0.05, quantile=0.9, minimum_samples=5, cap=0.2)
    assert floor.floor == 0.05
    for seconds in (0.01, 0.02, 0.03, 0.04):
        floor.observe(seconds)
    assert floor.floor == 0.05
    floor.observe(0.15)  # one slow moment among few samples does not set the floor
    assert floor.floor == 0.03
    for _ in range(15):
        floor.observe(0.02)
    assert floor.floor == 0.04  # twenty samples: p90
    for _ in range(64):  # the window forgets the older ones
        floor.observe(0.01)
    assert floor.floor == 0.01
    floor.observe(10.0)
    assert floor.floor <= 0.2
    started = time.monotonic()
    await floor.pad(started)
    assert time.monotonic() - started >= floor.floor * 0.9
    before = time.monotonic()
    await floor.pad(started - 5)  # already past the floor: no sleep
    assert time.monotonic() - before < 0.01
