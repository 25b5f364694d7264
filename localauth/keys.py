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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

__all__ = ["KeyFile", "KeyRing", "SigningKey", "ensure_signing_key", "keys_path", "rotate_keys"]

_ES256 = ECAlgorithm(ECAlgorithm.SHA256)
_RS256 = RSAAlgorithm(RSAAlgorithm.SHA256)
# key-file list per algorithm; ES256 keeps its historical name
_LISTS = {"ES256": "es256_keys", "RS256": "rs256_keys"}


def keys_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".keys.json")


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private: Any  # an EC/RSA/Ed25519 private key object, or bytes for an oct (HMAC) key
    public_jwk: dict[str, Any] | None  # None for symmetric keys, which are never published
    alg: str = "ES256"
    can_sign: bool = True

    def verify_key(self) -> Any:
        return self.private if isinstance(self.private, bytes) else self.private.public_key()


@dataclass(frozen=True)
class KeyFile:
    jwt_secret: str
    created_at: int
    es256: tuple[SigningKey, ...]  # the first one signs
    rs256: tuple[SigningKey, ...] = ()  # the first one signs (LOCALAUTH_JWT_ALG=RS256)
    # GOTRUE_JWT_KEYS: when set, these replace the key file's asymmetric keys
    configured: tuple[SigningKey, ...] = ()

    def by_kid(self, kid: str) -> SigningKey | None:
        pool = self.configured or (*self.es256, *self.rs256)
        return next((k for k in pool if k.kid == kid), None)


def _new_es256_jwk() -> dict[str, Any]:
    private = ec.generate_private_key(ec.SECP256R1())
    jwk: dict[str, Any] = _ES256.to_jwk(private, as_dict=True)
    jwk.update({"kid": str(uuid.uuid4()), "alg": "ES256", "key_ops": ["sign", "verify"]})
    return jwk


def _new_rs256_jwk() -> dict[str, Any]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk: dict[str, Any] = _RS256.to_jwk(private, as_dict=True)
    jwk.update({"kid": str(uuid.uuid4()), "alg": "RS256", "key_ops": ["sign", "verify"]})
    return jwk


def _signing_key(jwk: dict[str, Any]) -> SigningKey:
    private = _ES256.from_jwk(jwk)
    if not isinstance(private, ec.EllipticCurvePrivateKey):
        raise TypeError("key file holds a non-private EC key")
    public = {k: jwk[k] for k in ("kty", "crv", "x", "y")}
    public.update({"alg": "ES256", "kid": jwk["kid"], "key_ops": ["verify"], "use": "sig"})
    return SigningKey(kid=str(jwk["kid"]), private=private, public_jwk=public)


def _rsa_signing_key(jwk: dict[str, Any]) -> SigningKey:
    private = _RS256.from_jwk(jwk)
    if not isinstance(private, rsa.RSAPrivateKey):
        raise TypeError("key file holds a non-private RSA key")
    public = {k: jwk[k] for k in ("kty", "n", "e")}
    public.update({"alg": "RS256", "kid": jwk["kid"], "key_ops": ["verify"], "use": "sig"})
    return SigningKey(kid=str(jwk["kid"]), private=private, public_jwk=public, alg="RS256")


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
        rs256=tuple(_rsa_signing_key(jwk) for jwk in raw.get("rs256_keys", [])),
    )


def rotate_keys(db_path: Path, alg: str = "ES256") -> str:
    """Put a new signing key of ``alg`` in front; older keys keep verifying. Returns its kid."""
    if alg not in _LISTS:
        raise ValueError(f"rotate-keys supports {', '.join(_LISTS)}, not {alg!r}")
    path = keys_path(db_path)
    raw = _load_raw(path)
    jwk = _new_es256_jwk() if alg == "ES256" else _new_rs256_jwk()
    raw[_LISTS[alg]] = [jwk, *raw.get(_LISTS[alg], [])]
    _write_new(path, raw, replace=True)
    return str(jwk["kid"])


def ensure_signing_key(db_path: Path, alg: str) -> None:
    """Make sure the key file has a key of ``alg`` (RS256 keys are only made when asked for)."""
    if alg in _LISTS and not _load_raw(keys_path(db_path)).get(_LISTS[alg]):
        rotate_keys(db_path, alg)


class KeyRing:
    """The current key file, reloaded (off the event loop, by the caller) when it changes."""

    def __init__(self, db_path: Path, configured: tuple[SigningKey, ...] = ()) -> None:
        self.path = keys_path(db_path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._configured = configured
        self._keys = self._read()

    def _file_stamp(self) -> tuple[int, int, int]:
        st = self.path.stat()
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _read(self) -> KeyFile:
        if not self.path.exists():
            _load_raw(self.path)
        # Stamp before reading: a write racing with us is then seen on the next tick.
        stamp = self._file_stamp()
        keys = replace(_parse(_load_raw(self.path)), configured=self._configured)
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
