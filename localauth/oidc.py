"""``POST /token?grant_type=id_token``: localauth has no OAuth/OIDC provider enabled, so it
answers as GoTrue does when the provider is off or unknown (its ``getProvider`` checks)."""

from __future__ import annotations

from localauth.errors import ApiError
from localauth.params import Body

__all__ = ["KNOWN_PROVIDERS", "authorize_refusal", "id_token_refusal"]

_ISSUERS = {
    "apple": "https://appleid.apple.com",
    "google": "https://accounts.google.com",
    "facebook": "https://www.facebook.com",
    "kakao": "https://kauth.kakao.com",
    "snapchat": "https://auth.snapchat.com",
    "keycloak": "",
}


def id_token_refusal(body: Body) -> ApiError:
    provider = body.text("provider") or ""
    issuer = body.text("issuer") or ""
    if not body.text("id_token"):
        return ApiError(400, "validation_failed", "id_token required")
    if not provider and not issuer:
        return ApiError(400, "validation_failed", "provider or client_id and issuer required")
    if provider in _ISSUERS:
        return ApiError(
            400, "provider_disabled", f'Provider (issuer "{_ISSUERS[provider]}") is not enabled'
        )
    if provider == "azure":
        return ApiError(
            400, "validation_failed", "Unable to detect issuer in ID token for Azure provider"
        )
    if provider.startswith("custom:"):
        return ApiError(400, "validation_failed", "Custom OAuth providers are disabled")
    return ApiError(400, "validation_failed", f'Custom OIDC provider "{provider}" not allowed')


# the OAuth providers GoTrue knows; localauth enables none of them
KNOWN_PROVIDERS = frozenset(
    {
        "apple", "azure", "bitbucket", "discord", "facebook", "figma", "fly", "github", "gitlab",
        "google", "kakao", "keycloak", "linkedin", "linkedin_oidc", "notion", "slack",
        "slack_oidc", "snapchat", "spotify", "twitch", "twitter", "workos", "x", "zoom",
    }
)  # fmt: skip


def authorize_refusal(provider: str) -> ApiError:
    """``GET /authorize?provider=...``: GoTrue's answer for a disabled or unknown provider."""
    if provider.lower() in KNOWN_PROVIDERS:
        return ApiError(400, "validation_failed", "Unsupported provider: provider is not enabled")
    return ApiError(
        400, "validation_failed", f"Unsupported provider: Provider {provider} could not be found"
    )
