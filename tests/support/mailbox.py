"""Reading localauth's mailbox (``GET /mailbox/messages?to=``) from tests."""

from __future__ import annotations

from typing import Any

import anyio
import httpx

from tests.support.localauth import LocalAuth


async def messages(auth: LocalAuth, to: str, kind: str | None = None) -> list[dict[str, Any]]:
    """Every mail to ``to`` (of ``kind``), newest first."""
    async with httpx.AsyncClient(base_url=auth.url, timeout=5) as client:
        response = await client.get("/mailbox/messages", params={"to": to})
    response.raise_for_status()
    found: list[dict[str, Any]] = response.json()["messages"]
    return [m for m in found if kind is None or m["type"] == kind]


async def latest(auth: LocalAuth, to: str, kind: str) -> dict[str, Any]:
    """The newest mail of ``kind`` to ``to``; waits (at most 5 s) for it to arrive."""
    with anyio.fail_after(5.0):
        while True:
            found = await messages(auth, to, kind)
            if found:
                return found[0]
            await anyio.sleep(0.05)
