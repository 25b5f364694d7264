"""The account-lifecycle bodies: one secret form, proofs, profile shape, PKCE challenge."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError
from supabase_auth.helpers import generate_pkce_challenge, generate_pkce_verifier

from app.lifecycle_schemas import (
    EmailedSecretBody,
    MfaVerifyBody,
    PasswordChangeBody,
    ProfileBody,
    check_merged_profile,
)
from services.flows import EmailedSecret
from services.oauth import _challenge

HASH = "a" * 56


@pytest.mark.parametrize(
    "body",
    [
        {"email": "a@example.com", "code": "123456"},
        {"token_hash": HASH},
        {"token_hash": "pkce_" + HASH},
    ],
)
def test_one_secret_form_is_accepted(body: dict[str, Any]) -> None:
    EmailedSecretBody.model_validate(body)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"email": "a@example.com"},
        {"code": "123456"},
        {"email": "a@example.com", "code": "123456", "token_hash": HASH},
        {"code": "123456", "token_hash": HASH},
        {"email": "a@example.com", "code": "12345"},
        {"email": "a@example.com", "code": "１２３４５６"},  # full-width digits
        {"token_hash": "A" * 56},
        {"token_hash": HASH, "extra": 1},
    ],
)
def test_other_secret_bodies_are_refused(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        EmailedSecretBody.model_validate(body)


def test_secret_params_normalise_the_address() -> None:
    secret = EmailedSecret(email=" Ann@Example.COM ", code="123456")
    assert secret.params("recovery") == {
        "email": "ann@example.com",
        "token": "123456",
        "type": "recovery",
    }
    assert EmailedSecret(token_hash=HASH).params("email") == {"token_hash": HASH, "type": "email"}


def test_a_password_change_needs_exactly_one_proof() -> None:
    PasswordChangeBody.model_validate({"password": "x", "current_password": "y"})
    PasswordChangeBody.model_validate({"password": "x", "nonce": "123456"})
    for body in ({"password": "x"}, {"password": "x", "current_password": "y", "nonce": "123456"}):
        with pytest.raises(ValidationError):
            PasswordChangeBody.model_validate(body)


def test_profile_shape_limits() -> None:
    ProfileBody.model_validate({"data": {"a": {"b": {"c": {"d": 1}}}, "n": None}})
    for data in (
        {"a": {"b": {"c": {"d": {"e": 1}}}}},
        {"": 1},
        {"k" * 65: 1},
        {f"k{i}": 1 for i in range(51)},
        {"bio": "x" * 4100},
        {"deep": [[[[[1]]]]]},
    ):
        with pytest.raises(ValidationError):
            ProfileBody.model_validate({"data": data})
    check_merged_profile({"a": "x" * 3000}, {"a": None, "b": "y" * 3000})
    with pytest.raises(ValueError, match="exceed"):
        check_merged_profile({"a": "x" * 3000}, {"b": "y" * 3000})


def test_mfa_code_is_six_digits() -> None:
    MfaVerifyBody.model_validate(
        {"challenge_id": "0" * 8 + "-0000-4000-8000-" + "0" * 12, "code": "012345"}
    )
    with pytest.raises(ValidationError):
        MfaVerifyBody.model_validate({"challenge_id": "x", "code": "012345"})


def test_the_pkce_challenge_is_the_sdks_s256() -> None:
    verifier = generate_pkce_verifier()
    assert _challenge(verifier) == generate_pkce_challenge(verifier)
