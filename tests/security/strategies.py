"""Hypothesis strategies for hostile input: the classes of issue 9, not single cases."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

# JSON that Python's json module accepts and Supabase (Go + Postgres) does not, or that
# breaks a recursive parser.
FORBIDDEN_NUMBERS = st.sampled_from(
    ["NaN", "Infinity", "-Infinity", "1e999", "-1e400", "9" * 400, "-" + "9" * 30, "1" + "0" * 20]
)
BAD_STRINGS = st.sampled_from(
    ['"\\ud800"', '"\\udfff"', '"a\\ud83dz"', '"\\u0000"', '"x\\u0000y"', '"\\udc00\\ud800"']
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**60), max_value=2**60),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=12), children, max_size=4),
    ),
    max_leaves=20,
)


def _deep(depth: int, closed: bool, opener: str) -> str:
    closer = "]" if opener == "[" else "}"
    if opener == "{":
        return '{"a":' * depth + "1" + closer * depth if closed else '{"a":' * depth
    return opener * depth + (closer * depth if closed else "")


deep_bodies = st.builds(
    _deep, st.integers(min_value=33, max_value=5000), st.booleans(), st.sampled_from("[{")
)


@st.composite
def field_bodies(draw: st.DrawFn, fields: list[str]) -> str:
    """An object whose fields hold a forbidden number or string, duplicate keys, or odd
    values, serialized by hand (json.dumps would refuse or normalise them)."""
    parts: list[str] = []
    for name in draw(st.lists(st.sampled_from([*fields, "data", "extra"]), max_size=5)):
        kind = draw(st.sampled_from(["number", "string", "value", "nested"]))
        if kind == "number":
            value = draw(FORBIDDEN_NUMBERS)
        elif kind == "string":
            value = draw(BAD_STRINGS)
        elif kind == "nested":
            value = '{"k": ' + draw(st.one_of(FORBIDDEN_NUMBERS, BAD_STRINGS)) + "}"
        else:
            value = json.dumps(draw(json_values))
        parts.append(f"{json.dumps(name)}: {value}")
    if draw(st.booleans()) and parts:
        parts.append(parts[0])  # a duplicate key
    return "{" + ", ".join(parts) + "}"


def bodies(fields: list[str]) -> st.SearchStrategy[bytes]:
    text = st.one_of(
        field_bodies(fields),
        deep_bodies,
        json_values.map(json.dumps),
        st.builds(lambda v: json.dumps(v), st.dictionaries(st.sampled_from(fields), json_values)),
    )
    return st.one_of(
        text.map(lambda t: t.encode("utf-8", "surrogatepass")),
        st.binary(max_size=64),
    )


def valid_with(fields: dict[str, Any]) -> str:
    return json.dumps(fields)
