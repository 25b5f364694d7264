"""The Starlette application and its lifespan."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import anyio
import anyio.to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from localauth.admin_api import AdminApi
from localauth.apikeys import ApiKeyEdge, load_project_keys
from localauth.config import Settings
from localauth.core import Core
from localauth.errors import error_response, plain_not_found, unexpected_failure
from localauth.keys import KeyRing
from localauth.more_routes import build_extras, extra_table, mailbox_routes
from localauth.routes import Context, logger, routes
from localauth.store import Database
from localauth.user_api import UserApi

__all__ = ["build_app"]

_KEY_POLL_SECONDS = 1.0


async def _http_exception(request: Request, exc: Exception) -> Response:
    if isinstance(exc, HTTPException) and exc.status_code == 404:
        return plain_not_found()
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    return Response(f"{status} {exc}\n", status_code=status, media_type="text/plain")


async def _last_resort(request: Request, exc: Exception) -> Response:
    logger.error("unexpected failure outside a handler: %r", exc)
    return error_response(request, unexpected_failure())


async def _watch_keys(keyring: KeyRing) -> None:
    while True:
        await anyio.sleep(_KEY_POLL_SECONDS)
        await anyio.to_thread.run_sync(keyring.reload_if_changed)


def build_app(settings: Settings, db: Database, keyring: KeyRing) -> Starlette:
    """``db`` must already be initialised and ``keyring`` loaded (both block)."""
    core = Core(settings, db, keyring)
    ctx = Context(
        settings=settings,
        keyring=keyring,
        core=core,
        users=UserApi(core),
        admin=AdminApi(core),
        limiter=anyio.CapacityLimiter(settings.threads),
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_watch_keys, keyring)
            yield
            tg.cancel_scope.cancel()
        await anyio.to_thread.run_sync(db.close)

    app = Starlette(
        routes=[*routes(extra_table()), *mailbox_routes()],
        exception_handlers={HTTPException: _http_exception, Exception: _last_resort},
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    app.state.extras = build_extras(core)
    app.add_middleware(
        ApiKeyEdge, settings=settings, keyring=keyring, keys=load_project_keys(settings)
    )
    return app
