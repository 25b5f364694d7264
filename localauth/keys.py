"""Signing keys kept beside the database in ``<db>.keys.json`` (mode 0600).

The file is shared by every localauth process on the same database, and is re-read when it
changes, so ``rotate-keys`` takes effect in running servers without a restart.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

__all__ = ["KeyFile", "KeyRing", "SigningKey", "keys_path", "rotate_keys"]

_ES256 = ECAlgorithm(ECAlgorithm.SHA256)


def keys_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".keys.json")


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private: ec.EllipticCurvePrivateKey
    public_jwk: dict[str, Any]


@dataclass(frozen=True)
class KeyFile:
    jwt_secret: str
    created_at: int
    es256: tuple[SigningKey, ...]  # the first one signs


def _new_es256_jwk() -> dict[str, Any]:
    private = ec.generate_private_key(ec.SECP256R1())
    jwk: dict[str, Any] = _ES256.to_jwk(private, as_dict=True)
    jwk.update({"kid": str(uuid.uuid4()), "alg": "ES256", "key_ops": ["sign", "verify"]})
    return jwk


def _signing_key(jwk: dict[str, Any]) -> SigningKey:
    private = _ES256.from_jwk(jwk)
    if not isinstance(private, ec.EllipticCurvePrivateKey):
        raise TypeError("key file holds a non-private EC key")
    public = {k: jwk[k] for k in ("kty", "crv", "x", "y")}
    public.update({"alg": "ES256", "kid": jwk["kid"], "key_ops": ["verify"], "use": "sig"})
    return SigningKey(kid=str(jwk["kid"]), private=private, public_jwk=public)


def _write_new(path: Path, data: dict[str, Any], *, replace: bool) -> bool:
    """Write atomically, mode 0600. Without ``replace``, quietly lose to a concurrent creator."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())
    try:
        if replace:
            os.replace(tmp, path)
            return True
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _load_raw(path: Path) -> dict[str, Any]:
    if not path.exists():
        raw = {
            "jwt_secret": secrets.token_urlsafe(48),
            "created_at": int(time.time()),
            "es256_keys": [_new_es256_jwk()],
        }
        _write_new(path, raw, replace=False)
    with path.open() as fh:
        loaded: dict[str, Any] = json.load(fh)
    return loaded


def _parse(raw: dict[str, Any]) -> KeyFile:
    return KeyFile(
        jwt_secret=str(raw["jwt_secret"]),
        created_at=int(raw["created_at"]),
        es256=tuple(_signing_key(jwk) for jwk in raw["es256_keys"]),
    )


def rotate_keys(db_path: Path) -> str:
    """Put a new ES256 signing key in front; older keys keep verifying. Returns the new kid."""
    path = keys_path(db_path)
    raw = _load_raw(path)
    jwk = _new_es256_jwk()
    raw["es256_keys"] = [jwk, *raw["es256_keys"]]
    _write_new(path, raw, replace=True)
    return str(jwk["kid"])


class KeyRing:
    """The current key file, reloaded (off the event loop, by the caller) when it changes."""

    def __init__(self, db_path: Path) -> None:
        self.path = keys_path(db_path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._keys = self._read()

    def _file_stamp(self) -> tuple[int, int, int]:
        st = self.path.stat()
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _read(self) -> KeyFile:
        if not self.path.exists():
            _load_raw(self.path)
        # Stamp before reading: a write racing with us is then seen on the next tick.
        stamp = self._file_stamp()
        keys = _parse(_load_raw(self.path))
        self._stamp = stamp
        return keys

    @property
    def current(self) -> KeyFile:
        return self._keys

    def reload_if_changed(self) -> bool:
        """Blocking: call from a worker thread."""
        with self._lock:
            try:
                if self._file_stamp() == self._stamp:
                    return False
                self._keys = self._read()
            except (OSError, ValueError, KeyError, TypeError):
                # A half-visible or damaged file must not take the server down; keep serving
                # with the keys we have and try again on the next tick.
                return False
            return True
