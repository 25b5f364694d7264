"""``POST /api/v1/internal/supabase-events``: Supabase-side user changes, signed as
Standard Webhooks (the scheme Supabase Auth Hooks use). See ``docs/supabase-events.md``.

The signature is the credential: failures are counted per source before it is checked
(``services.credentials``), deliveries older or newer than five minutes are refused, and a
delivery id is applied once. The body is parsed strictly only after it verifies.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field
from standardwebhooks.webhooks import Webhook
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app.body import parse_model, read_limited, require_json
from app.schemas import Body
from app.state import Services
from services import errors

_UUID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
_SIGNATURE_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
Change = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[a-z_]+$")]


class EventData(Body):
    user_id: Annotated[str, Field(pattern=_UUID)]
    changes: Annotated[list[Change], Field(max_length=16)] = Field(default_factory=list)


class EventBody(Body):
    type: Literal["user.updated", "user.deleted"]
    timestamp: Annotated[str, Field(max_length=64)] | None = None
    data: EventData


def verified(secrets: list[str], body: bytes, headers: dict[str, str]) -> bool:
    """Whether any of ``secrets`` signed ``body`` with these headers.

    ``standardwebhooks`` does the signing scheme and the timestamp tolerance; it raises
    plain ``ValueError``/``binascii.Error`` (not only its own error) on malformed headers,
    and ``UnicodeDecodeError`` on a non-UTF-8 body, so every exception is a refusal."""
    for secret in secrets:
        try:
            Webhook(secret).verify(body, headers, json_parse=False)
        except Exception:  # noqa: S112 - any failure is "not this secret"
            continue
        return True
    return False


async def supabase_events(request: Request) -> Response:
    services: Services = request.app.state.services
    settings = services.settings
    if not settings.supabase_events_secret or services.events is None:
        raise errors.NotFound("Supabase events are not configured (SUPABASE_EVENTS_SECRET).")
    source = request.client.host if request.client else ""
    guard = services.credential_guard
    if guard is not None:
        await guard.before("supabase_events", source)
    body = await read_limited(request)
    headers = {name: request.headers.get(name, "")[:1024] for name in _SIGNATURE_HEADERS}
    secrets = [s.get_secret_value() for s in settings.supabase_events_secret]
    if not verified(secrets, body, headers):
        if guard is not None:
            await guard.failed("supabase_events", source)
        raise errors.InvalidWebhookSignature()
    if guard is not None:
        await guard.succeeded("supabase_events", source)
    require_json(request)
    event = parse_model(body, EventBody)
    user_id = event.data.user_id.lower()
    if event.type == "user.deleted":
        outcome = await services.events.user_deleted(headers["webhook-id"], user_id)
    else:
        outcome = await services.events.user_changed(
            headers["webhook-id"], user_id, event.data.changes
        )
    return JSONResponse({"status": outcome.status, "sessions_ended": outcome.sessions_ended})
