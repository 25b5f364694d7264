"""Every account-lifecycle route is described by its own OpenAPI entry, not the fallback."""

from __future__ import annotations

import httpx
import pytest

from app.main import lifecycle_routes
from app.openapi import iter_routes
from app.openapi_lifecycle import OPERATIONS

pytestmark = pytest.mark.anyio


async def test_lifecycle_routes_have_their_own_entries(app: httpx.AsyncClient) -> None:
    spec = (await app.get("/openapi.json")).json()
    routes = iter_routes(lifecycle_routes())
    assert {name for _, name, _ in routes} == set(OPERATIONS)
    for path, name, methods in routes:
        for method in methods:
            entry = spec["paths"][path][method.lower()]
            assert entry["summary"] == OPERATIONS[name].summary
            assert str(OPERATIONS[name].ok_status) in entry["responses"]
            body = OPERATIONS[name].body
            if body is not None:
                ref = entry["requestBody"]["content"]["application/json"]["schema"]["$ref"]
                assert ref.endswith("/" + body.__name__)
                assert body.__name__ in spec["components"]["schemas"]
    reset = spec["components"]["schemas"]["PasswordResetBody"]
    assert {"email", "code", "token_hash", "password"} <= set(reset["properties"])
