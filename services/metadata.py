"""Limits on ``user_metadata``, derived from the largest access token this service accepts.

Supabase copies ``user_metadata`` and ``app_metadata`` into every access token it issues,
and ``services.tokens`` refuses a token over ``MAX_TOKEN_BYTES``. Metadata that makes a
token too large therefore makes the account unusable: it signs in, and then every request
is refused. So the edge refuses such metadata at registration, with a 422.

The budget, in bytes of the token (a JWS: base64url(header) . base64url(payload) . sig):

    MAX_TOKEN_BYTES                                         8192
    - header  (alg, kid, typ: at most 128 bytes -> base64)  - 171
    - signature (RS256, the largest Supabase uses: 256 B)   - 342
    - two dots                                              -   2
    = base64url of the payload                              7677  -> 5757 payload bytes
    - standard claims (iss, sub, aud, exp, iat, email up to 254, phone, role, aal, amr,
      session_id, is_anonymous) and the identity fields GoTrue adds to user_metadata
      (sub, email, email_verified, phone_verified)                               - 1400
    - app_metadata (provider, providers, and roles: 32 roles of up to 64 characters,
      as ``PUT /admin/users/{id}/roles`` allows)                                 - 2400
    = left for the caller's own user_metadata                                      1957

``USER_METADATA_MAX_BYTES`` is that, rounded down to 1 KiB steps with headroom (1536).
Size is measured the way Go's ``encoding/json`` writes it (what GoTrue puts in the token):
compact, with ``<``, ``>``, ``&``, U+2028 and U+2029 escaped to six bytes each, other
non-ASCII as UTF-8. Shape limits keep the record cheap for every reader: depth, key length,
and the number of values.
"""

from __future__ import annotations

import json
import math
from typing import Any

from services.tokens import MAX_TOKEN_BYTES

_HEADER_BYTES = 128
_SIGNATURE_BYTES = 256
_STANDARD_CLAIMS_BYTES = 1400
_APP_METADATA_BYTES = 2400


def _b64_len(n: int) -> int:
    return math.ceil(n * 4 / 3)


PAYLOAD_BUDGET = (
    (MAX_TOKEN_BYTES - _b64_len(_HEADER_BYTES) - _b64_len(_SIGNATURE_BYTES) - 2) * 3 // 4
)
_LEFT = PAYLOAD_BUDGET - _STANDARD_CLAIMS_BYTES - _APP_METADATA_BYTES
USER_METADATA_MAX_BYTES = min(1536, _LEFT)
USER_METADATA_MAX_DEPTH = 8
USER_METADATA_MAX_KEY_CHARS = 64
USER_METADATA_MAX_VALUES = 256

_GO_ESCAPED = ("<", ">", "&", "\u2028", "\u2029")


def encoded_size(value: Any) -> int:
    """Bytes of ``value`` as Go's ``encoding/json`` (GoTrue) writes it."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    # Each escaped character becomes six ASCII bytes instead of its UTF-8 length.
    extra = sum(text.count(ch) * (6 - len(ch.encode())) for ch in _GO_ESCAPED)
    return len(text.encode()) + extra


def metadata_problems(data: dict[str, Any]) -> list[str]:
    """Why ``data`` cannot be ``user_metadata`` (an empty list when it can)."""
    problems: list[str] = []
    values = 0
    deepest = 0
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        item, depth = stack.pop()
        values += 1
        deepest = max(deepest, depth)
        if isinstance(item, dict):
            for key, child in item.items():
                if len(key) > USER_METADATA_MAX_KEY_CHARS:
                    problems.append(f"keys may be at most {USER_METADATA_MAX_KEY_CHARS} characters")
                    break
                stack.append((child, depth + 1))
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
    if deepest > USER_METADATA_MAX_DEPTH:
        problems.append(f"may be nested at most {USER_METADATA_MAX_DEPTH} levels deep")
    if values > USER_METADATA_MAX_VALUES:
        problems.append(f"may hold at most {USER_METADATA_MAX_VALUES} values")
    size = encoded_size(data)
    if size > USER_METADATA_MAX_BYTES:
        problems.append(
            f"is {size} bytes as JSON; at most {USER_METADATA_MAX_BYTES} keep the access "
            f"token under {MAX_TOKEN_BYTES} bytes"
        )
    return sorted(set(problems))
