"""GOTRUE_JWT_KEYS (RSA/EC/oct JWKs with kid, alg, key_ops), RS256 and the JWKS."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, HMACAlgorithm, RSAAlgorithm

from tests.localauth.conftest import (
    PASSWORD,
    admin_api,
    assert_clean_log,
    unique_email,
    user_client,
)
from tests.support.localauth import LocalAuth, run_localauth


def _rsa(kid: str, ops: list[str]) -> dict[str, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk: dict[str, Any] = RSAAlgorithm.to_jwk(key, as_dict=True)
    return {**jwk, "kid": kid, "alg": "RS256", "key_ops": ops}


def _ec(kid: str, ops: list[str]) -> dict[str, Any]:
    key = ec.generate_private_key(ec.SECP256R1())
    jwk: dict[str, Any] = ECAlgorithm(ECAlgorithm.SHA256).to_jwk(key, as_dict=True)
    return {**jwk, "kid": kid, "alg": "ES256", "key_ops": ops}


def _oct(kid: str, secret: bytes) -> dict[str, Any]:
    jwk: dict[str, Any] = HMACAlgorithm.to_jwk(secret, as_dict=True)
    return {**jwk, "kid": kid, "alg": "HS256", "key_ops": ["verify"]}


def _session(la: LocalAuth, http: httpx.Client) -> tuple[str, str]:
    email = unique_email()
    admin_api(la, http).create_user({"email": email, "password": PASSWORD, "email_confirm": True})
    session = (
        user_client(la, http).sign_in_with_password({"email": email, "password": PASSWORD}).session
    )
    assert session is not None
    return session.access_token, session.refresh_token


def test_configured_rs256_key_signs_and_the_jwks_lists_public_verify_keys(
    tmp_path: Path,
) -> None:
    signer, old_ec = _rsa("rsa-2026", ["sign", "verify"]), _ec("ec-2025", ["verify"])
    hmac_secret = b"h" * 32
    keys = [signer, old_ec, _oct("hs-legacy", hmac_secret)]
    env = {"GOTRUE_JWT_KEYS": json.dumps(keys)}
    with run_localauth(tmp_path, env=env) as la, httpx.Client() as http:
        response = http.get(la.url + "/auth/v1/.well-known/jwks.json")
        published = response.json()["keys"]
        assert [k["kid"] for k in published] == ["rsa-2026", "ec-2025"]  # no oct key
        for key in published:
            assert "d" not in key
            assert (key["key_ops"], key["use"]) == (["verify"], "sig")
        assert {k for k in published[0] if k not in {"kid", "alg", "key_ops", "use"}} == {
            "kty",
            "n",
            "e",
        }
        access, _ = _session(la, http)
        header = jwt.get_unverified_header(access)
        assert (header["alg"], header["kid"]) == ("RS256", "rsa-2026")
        jwks_client = jwt.PyJWKClient(la.url + "/auth/v1/.well-known/jwks.json")
        claims = jwt.decode(
            access,
            jwks_client.get_signing_key_from_jwt(access).key,
            algorithms=["RS256"],
            audience="authenticated",
            issuer=f"{la.url}/auth/v1",
        )
        assert claims["role"] == "authenticated"
        got = user_client(la, http).get_claims(access)  # the SDK checks it against the JWKS
        assert got is not None
        assert got["claims"]["sub"] == claims["sub"]
        # the verify-only keys are still accepted (tokens from before a rotation)
        ec_key = ECAlgorithm(ECAlgorithm.SHA256).from_jwk(old_ec)
        assert isinstance(ec_key, ec.EllipticCurvePrivateKey)
        by_ec = jwt.encode(claims, ec_key, algorithm="ES256", headers={"kid": "ec-2025"})
        by_oct = jwt.encode(claims, hmac_secret, algorithm="HS256", headers={"kid": "hs-legacy"})
        for token in (by_ec, by_oct):
            user = user_client(la, http).get_user(token)
            assert user is not None
            assert user.user.id == claims["sub"]
        forged = jwt.encode(
            claims,
            rsa.generate_private_key(public_exponent=65537, key_size=2048),
            algorithm="RS256",
            headers={"kid": "rsa-2026"},
        )
        bad = http.get(la.url + "/user", headers={"Authorization": f"Bearer {forged}"})
        assert (bad.status_code, bad.json()["error_code"]) == (403, "bad_jwt")
        unknown = jwt.encode(claims, ec_key, algorithm="ES256", headers={"kid": "nope"})
        bad = http.get(la.url + "/user", headers={"Authorization": f"Bearer {unknown}"})
        assert bad.status_code == 403
    assert_clean_log(tmp_path, la.port)


def test_rotating_the_configured_keys_keeps_old_tokens_valid(tmp_path: Path) -> None:
    db = tmp_path / "rotate.sqlite3"
    rsa_key, ec_key = _rsa("rsa-a", ["sign", "verify"]), _ec("ec-b", ["verify"])
    first_env = {"GOTRUE_JWT_KEYS": json.dumps([rsa_key, ec_key])}
    with run_localauth(tmp_path / "1", db_path=db, env=first_env) as la, httpx.Client() as http:
        old_access, refresh = _session(la, http)
    rotated = [{**rsa_key, "key_ops": ["verify"]}, {**ec_key, "key_ops": ["sign", "verify"]}]
    second_env = {"GOTRUE_JWT_KEYS": json.dumps(rotated)}
    with run_localauth(tmp_path / "2", db_path=db, env=second_env) as la, httpx.Client() as http:
        assert user_client(la, http).get_user(old_access) is not None
        session = user_client(la, http).refresh_session(refresh).session
        assert session is not None
        assert jwt.get_unverified_header(session.access_token)["kid"] == "ec-b"
        kids = [k["kid"] for k in http.get(la.url + "/.well-known/jwks.json").json()["keys"]]
        assert kids == ["rsa-a", "ec-b"]


def test_rs256_key_file_mode_and_rotate_keys(tmp_path: Path) -> None:
    with run_localauth(tmp_path, jwt_alg="RS256") as la, httpx.Client() as http:
        ((first_kid, first_alg),) = [
            (k["kid"], k["alg"])
            for k in http.get(la.url + "/.well-known/jwks.json").json()["keys"]
            if k["kty"] == "RSA"
        ]
        assert first_alg == "RS256"
        token, _ = _session(la, http)
        assert jwt.get_unverified_header(token) == {"alg": "RS256", "kid": first_kid, "typ": "JWT"}
        subprocess.run(
            [
                sys.executable,
                "-m",
                "localauth",
                "rotate-keys",
                "--db",
                str(la.db_path),
                "--alg",
                "RS256",
            ],
            check=True,
            capture_output=True,
        )
        deadline = time.monotonic() + 10
        while True:
            rsa_kids = [
                k["kid"]
                for k in http.get(la.url + "/.well-known/jwks.json").json()["keys"]
                if k["kty"] == "RSA"
            ]
            if len(rsa_kids) == 2:
                break
            assert time.monotonic() < deadline, "rotated key never showed up"
            time.sleep(0.1)
        assert rsa_kids[1] == first_kid
        new_token, _ = _session(la, http)
        assert jwt.get_unverified_header(new_token)["kid"] == rsa_kids[0]
        assert user_client(la, http).get_user(token) is not None


def test_bad_jwt_keys_stop_the_server_with_a_clear_message(tmp_path: Path) -> None:
    two_signers = [_ec("a", ["sign"]), _ec("b", ["sign", "verify"])]
    cases = {
        "not json": "GOTRUE_JWT_KEYS: not JSON",
        json.dumps(two_signers): "multiple signing keys detected",
        json.dumps([_ec("a", ["verify"])]): "no signing key detected",
        json.dumps([{**_ec("a", ["sign"]), "alg": "XX1"}]): "unsupported alg",
    }
    for raw, message in cases.items():
        result = subprocess.run(
            [sys.executable, "-m", "localauth", "--db", str(tmp_path / "x.db"), "--port", "1"],
            env={"GOTRUE_JWT_KEYS": raw, "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 2
        assert message in result.stderr
