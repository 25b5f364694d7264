"""Which layers guard which route: the one table to read to know who may call what.

Adding a check is one class (``app.authz.layers``) and one entry here.
"""

from __future__ import annotations

from app.authz.base import Layer
from app.authz.layers import Bearer, SessionAlive, VerifyToken

AUTHENTICATED: tuple[Layer, ...] = (Bearer(), VerifyToken(), SessionAlive())

POLICIES: dict[str, tuple[Layer, ...]] = {
    "auth:register": (),
    "auth:login": (),
    "auth:refresh": (),
    "auth:logout": AUTHENTICATED,
    "auth:me": AUTHENTICATED,
    "auth:sessions": AUTHENTICATED,
    "auth:session": AUTHENTICATED,
}
