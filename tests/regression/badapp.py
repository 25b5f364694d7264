"""The original bad pattern, as a tiny app for the harness to catch.

``BADAPP_MODE=executor``: ``await asyncio.wait_for(loop.run_in_executor(None, fn), 10)``
on the default executor with one shared SDK client (the incident). ``BADAPP_MODE=onloop``:
the SDK call made right on the event loop. Serve it with
``python -m tests.regression.badapp`` (HOST, PORT, SUPABASE_URL, SUPABASE_ANON_KEY).
"""

from __future__ import annotations

import asyncio
import os

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from supabase_auth import SyncGoTrueClient
from supabase_auth.errors import AuthError

MODE = os.environ.get("BADAPP_MODE", "executor")
SHARED = SyncGoTrueClient(
    url=os.environ["SUPABASE_URL"].rstrip("/") + "/auth/v1",
    headers={"apikey": os.environ["SUPABASE_ANON_KEY"]},
    persist_session=True,
    auto_refresh_token=False,
)


async def live(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def login(request: Request) -> Response:
    body = await request.json()

    def call() -> object:
        return SHARED.sign_in_with_password({"email": body["email"], "password": body["password"]})

    try:
        if MODE == "onloop":
            call()
        else:
            loop = asyncio.get_running_loop()
            await asyncio.wait_for(loop.run_in_executor(None, call), 10)
    except TimeoutError:
        return JSONResponse({"code": "timeout"}, status_code=504)
    except AuthError:
        return JSONResponse({"code": "upstream"}, status_code=503)
    return JSONResponse({"ok": True})


app = Starlette(
    routes=[
        Route("/health/live", live, methods=["GET"]),
        Route("/api/v1/auth/login", login, methods=["POST"]),
    ]
)

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ["PORT"]), log_level="warning")
