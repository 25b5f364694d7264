"""``GOTRUE_JWT_KEYS``: a JSON array of private JWKs, as GoTrue reads it.

Each key needs ``kid`` and ``alg``; exactly one carries ``sign`` in ``key_ops`` and signs.
Asymmetric keys (RSA, EC, OKP) are published in the JWKS as public halves with
``key_ops: ["verify"]`` and ``use: "sig"``; symmetric (oct) keys verify but are never published.
"""

from __future__ import annotations

import json
from typing import Any

import jwt
from jwt.algorithms import HMACAlgorithm

from localauth.config import ConfigError
from localauth.keys import SigningKey

__all__ = ["parse_jwt_keys"]

_ASYMMETRIC = {"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "EdDSA"}
_SYMMETRIC = {"HS256", "HS384", "HS512"}


def _one(jwk: Any, index: int) -> SigningKey:
    if not isinstance(jwk, dict):
        raise ConfigError(f"GOTRUE_JWT_KEYS[{index}]: a JWK must be a JSON object")
    kid, alg = jwk.get("kid"), jwk.get("alg")
    if not isinstance(kid, str) or not kid:
        raise ConfigError(f"GOTRUE_JWT_KEYS[{index}]: kid is required")
    if alg not in _ASYMMETRIC | _SYMMETRIC:
        raise ConfigError(f"GOTRUE_JWT_KEYS[{index}]: unsupported alg {alg!r}")
    ops = jwk.get("key_ops") or []
    if not isinstance(ops, list) or not all(isinstance(o, str) for o in ops):
        raise ConfigError(f"GOTRUE_JWT_KEYS[{index}]: key_ops must be a list of strings")
    algorithm = jwt.get_algorithm_by_name(alg)
    if alg in _SYMMETRIC and jwk.get("kty") != "oct":
        raise ConfigError(f"GOTRUE_JWT_KEYS[{index}]: an {alg} key must have kty oct")
    try:
        if alg in _SYMMETRIC:
            secret = HMACAlgorithm.from_jwk(jwk)
            return SigningKey(
                kid=kid, private=secret, public_jwk=None, alg=alg, can_sign="sign" in ops
            )
        private = algorithm.from_jwk(jwk)
    except (ValueError, KeyError, TypeError, jwt.InvalidKeyError) as exc:
        raise ConfigError(f"GOTRUE_JWT_KEYS[{index}]: invalid JWK: {exc}") from None
    if not hasattr(private, "public_key"):
        raise ConfigError(f"GOTRUE_JWT_KEYS[{index}]: a private key is required (d missing)")
    public: dict[str, Any] = algorithm.to_jwk(private.public_key(), as_dict=True)
    public.update({"kid": kid, "alg": alg, "key_ops": ["verify"], "use": "sig"})
    return SigningKey(kid=kid, private=private, public_jwk=public, alg=alg, can_sign="sign" in ops)


def parse_jwt_keys(text: str | None) -> tuple[SigningKey, ...]:
    if not text:
        return ()
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"GOTRUE_JWT_KEYS: not JSON: {exc}") from None
    if not isinstance(raw, list) or not raw:
        raise ConfigError("GOTRUE_JWT_KEYS: must be a non-empty JSON array of JWKs")
    keys = tuple(_one(jwk, i) for i, jwk in enumerate(raw))
    signers = [k for k in keys if k.can_sign]
    if not signers:
        raise ConfigError("GOTRUE_JWT_KEYS: no signing key detected")
    if len(signers) > 1:
        raise ConfigError(
            "GOTRUE_JWT_KEYS: multiple signing keys detected, only 1 signing key is supported"
        )
    if len({k.kid for k in keys}) != len(keys):
        raise ConfigError("GOTRUE_JWT_KEYS: kids must be unique")
    return keys
