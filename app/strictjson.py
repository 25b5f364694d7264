"""RFC 8259 JSON, and only that, for every body that crosses the edge.

Python's ``json`` module accepts more than the standard, and more than Supabase Auth (Go's
``encoding/json`` over Postgres ``jsonb``) accepts: ``NaN``/``Infinity``, numbers that do
not fit a double (``1e999``), lone UTF-16 surrogates (``"\\ud800"``), duplicate keys (the
last silently wins), and any depth (deep enough is a ``RecursionError``). Anything it lets
through reaches the upstream, which then fails in ways that look like an outage. So:

* The depth is measured **before** parsing, by a regex scan that skips strings, so a body
  of thousands of ``[`` never reaches the recursive parser.
* The bytes must be UTF-8 (RFC 8259 section 8.1; ``json.loads`` would guess UTF-16/32).
* ``NaN``, ``Infinity`` and ``-Infinity`` are refused.
* A number must be finite as a double, and an integer must lie within +-(2^53 - 1), the
  range every JSON implementation (JavaScript, Go's ``float64``) holds exactly.
* Strings and keys must be valid Unicode: a lone surrogate escape is refused, and so is
  U+0000, which Postgres (where Supabase stores everything) cannot hold.
* Duplicate keys are refused (RFC 8259 says names SHOULD be unique; implementations
  disagree on which one wins, so accepting them lets a proxy and this service read two
  different requests).

Every refusal is a ``StrictJsonError`` whose message says which rule the body broke.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_DEPTH = 32
MAX_SAFE_INTEGER = 2**53 - 1
# Longest integer literal that can still be within the bound (16 digits and a sign).
_MAX_INT_CHARS = 17

# A JSON string (with escapes) or one bracket; everything else is skipped by finditer.
_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)
# NUL: valid JSON, but Postgres text and jsonb (where Supabase keeps it) refuse it.
_SURROGATE = re.compile("[\x00\ud800-\udfff]")


class StrictJsonError(ValueError):
    """The body is not interoperable RFC 8259 JSON; the message says why."""


def nesting_depth(raw: bytes) -> int:
    """The deepest nesting of arrays and objects, ignoring brackets inside strings."""
    depth = deepest = 0
    for match in _TOKENS.finditer(raw):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            if depth > deepest:
                deepest = depth
        elif token in (b"]", b"}"):
            depth -= 1
    return deepest


def _constant(name: str) -> Any:
    raise StrictJsonError(f"{name} is not a JSON number.")


def _float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise StrictJsonError(f"The number {text[:32]} is too large.")
    return value


def _int(text: str) -> int:
    if len(text) > _MAX_INT_CHARS or abs(value := int(text)) > MAX_SAFE_INTEGER:
        raise StrictJsonError(f"Integers must lie within +-{MAX_SAFE_INTEGER}.")
    return value


def _string_ok(value: str) -> None:
    if _SURROGATE.search(value):
        raise StrictJsonError("A string holds a NUL character or a lone UTF-16 surrogate.")


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise StrictJsonError(f"The key {key[:64]!r} appears twice in one object.")
        _string_ok(key)
        if isinstance(value, str):
            _string_ok(value)
        result[key] = value
    return result


def _check_strings(value: Any) -> None:
    # Object members were checked by the hook; strings inside arrays and the top level are
    # not, and are found here (iteratively: depth is already bounded, but no recursion).
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            _string_ok(item)
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(v for v in item.values() if isinstance(v, list | dict))


def loads(raw: bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse ``raw`` as strict RFC 8259 JSON (see the module docstring)."""
    if nesting_depth(raw) > max_depth:
        raise StrictJsonError(f"The JSON is nested deeper than {max_depth} levels.")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise StrictJsonError("The body is not UTF-8.") from None
    try:
        value = json.loads(
            text,
            parse_constant=_constant,
            parse_float=_float,
            parse_int=_int,
            object_pairs_hook=_object,
        )
    except StrictJsonError:
        raise
    except (ValueError, RecursionError):
        raise StrictJsonError("The body is not valid JSON.") from None
    _check_strings(value)
    return value
