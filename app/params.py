"""Query and path parameters, parsed strictly: ASCII digits within bounds, canonical UUIDs.

``str.isdigit`` and ``int`` accept far more than ASCII digits (Arabic-Indic and full-width
digits; superscripts pass ``isdigit`` and then fail ``int``), and ``uuid.UUID`` accepts
braces, ``urn:uuid:`` and missing hyphens. Every route reads its parameters through here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from services import errors

_DIGITS = re.compile(r"[0-9]{1,18}", re.ASCII)
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.ASCII)


def query_int(
    params: Mapping[str, str], name: str, *, default: int, lower: int = 1, upper: int
) -> int:
    """``name`` as an integer from ``lower`` to ``upper`` (ASCII digits only), or ``default``
    when absent; anything else is a 422 naming the parameter."""
    raw = params.get(name)
    if raw is None:
        return default
    value = int(raw) if _DIGITS.fullmatch(raw) else None
    if value is None or not lower <= value <= upper:
        raise errors.ValidationFailed(
            errors=[
                {
                    "field": name,
                    "message": f"must be an integer from {lower} to {upper}",
                    "type": "int_range",
                }
            ]
        )
    return value


def path_uuid(params: Mapping[str, object], name: str, *, what: str) -> str:
    """The path parameter ``name`` as a canonical lower-case UUID; anything else is a 404
    (no resource can have that id)."""
    raw = str(params.get(name, "")).lower()
    if not _UUID.fullmatch(raw):
        raise errors.NotFound(f"No such {what}.")
    return raw
