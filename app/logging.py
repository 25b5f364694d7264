"""Structured JSON logs. Every line carries the request id when there is one."""

from __future__ import annotations

import logging
import random
import re
import sys
from collections.abc import MutableMapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog

# The current request's id; set by ``app.middleware.EdgeMiddleware``, added to every line.
REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)


def new_request_id() -> str:
    """32 hex digits that tell one request's log lines and answer from every other's.

    Correlation, not a secret: drawn from the process's seeded generator (reseeded in every
    forked worker), which costs a fraction of ``os.urandom``'s system call on each request.
    """
    return f"{random.getrandbits(128):032x}"


def _add_request_id(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    request_id = REQUEST_ID.get()
    if request_id is not None:
        event.setdefault("request_id", request_id)
    return event


# Never logged, whatever a caller passes: a last line of defence.
_SECRET_KEYS = frozenset(
    {
        "password",
        "token",
        "access_token",
        "refresh_token",
        "authorization",
        "apikey",
        "secret",
        "key",
    }
)


# JWTs (access tokens, Supabase API keys) and bearer credentials inside any text value,
# such as an exception message that quotes a request.
_SECRET_TEXT = re.compile(
    r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"
    r"|(?i:bearer)\s+[A-Za-z0-9._~+/=-]{16,}"
    r"|sb_(?:secret|publishable)_[A-Za-z0-9_-]{8,}"
)


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    # Every line passes here, the per-request access line included: one regex search over
    # all text values, and a substitution pass only when something matched.
    texts: list[str] = []
    for name, value in event.items():
        if name.lower() in _SECRET_KEYS:
            event[name] = "[redacted]"
        elif isinstance(value, str):
            texts.append(value)
        elif isinstance(value, list):
            texts.extend(v for v in value if isinstance(v, str))
    if texts and _SECRET_TEXT.search("\n".join(texts)):
        for name, value in event.items():
            if isinstance(value, str):
                event[name] = _SECRET_TEXT.sub("[redacted]", value)
            elif isinstance(value, list):
                event[name] = [
                    _SECRET_TEXT.sub("[redacted]", v) if isinstance(v, str) else v for v in value
                ]
    return event


def _redact_exception(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """After ``format_exc_info``: the traceback text is the only new value to clean."""
    text = event.get("exception")
    if isinstance(text, str):
        event["exception"] = _SECRET_TEXT.sub("[redacted]", text)
    return event


def _access_fields(
    _: Any, method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """The access line's common fields, cheaply: every other field is the app's own (method
    from a fixed set, route template, numbers, verified user id), so only the two values a
    client can influence, its request id and its forwarded address, are scanned."""
    request_id = REQUEST_ID.get()
    event["request_id"] = request_id
    event["level"] = method
    event["timestamp"] = datetime.now(UTC)
    client_ip = event.get("client_ip")
    if _SECRET_TEXT.search(f"{request_id}\n{client_ip}"):
        event["request_id"] = _SECRET_TEXT.sub("[redacted]", str(request_id))
        event["client_ip"] = _SECRET_TEXT.sub("[redacted]", str(client_ip))
    return event


def _orjson_utc(event: Any, **kwargs: Any) -> bytes:
    return orjson.dumps(event, option=orjson.OPT_UTC_Z, **kwargs)


# How ``access_logger`` builds its logger; set by ``configure_logging``.
_ACCESS: dict[str, Any] = {}


def access_logger() -> Any:
    """The per-request access logger. With ``configure_logging``'s JSON output it runs a
    pipeline of its own (two processors instead of eight, orjson to bytes), because it
    writes on every request, the hot path included; otherwise the configured one."""
    if not _ACCESS:
        return structlog.get_logger("access").bind()
    return structlog.wrap_logger(
        structlog.BytesLogger(_ACCESS["stream"]),
        processors=[_access_fields, structlog.processors.JSONRenderer(serializer=_orjson_utc)],
        wrapper_class=_ACCESS["wrapper"],
    )


# Third-party loggers that are noisy below WARNING and add nothing an operator needs.
_QUIET_LOGGERS = ("httpx", "httpcore", "hpack", "asyncio", "multipart")


def configure_logging(*, level: str = "info", json: bool = True) -> None:
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        _add_request_id,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    text_renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    _route_stdlib_logging(level, shared, text_renderer)
    # Lines of our own (the access log on every request among them) are rendered by orjson
    # straight to bytes: about a tenth of the json module's cost per line.
    stream = getattr(sys.stdout, "buffer", None)
    renderer = text_renderer
    factory: Any = structlog.WriteLoggerFactory(sys.stdout)
    wrapper = structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()])
    _ACCESS.clear()
    if json and stream is not None:
        renderer = structlog.processors.JSONRenderer(serializer=orjson.dumps)
        factory = structlog.BytesLoggerFactory(stream)
        _ACCESS.update(stream=stream, wrapper=wrapper)
    structlog.configure(
        processors=[
            *shared,
            _redact,
            structlog.processors.format_exc_info,
            _redact_exception,
            renderer,
        ],
        wrapper_class=wrapper,
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )


def _route_stdlib_logging(
    level: str, shared: list[structlog.types.Processor], renderer: structlog.types.Processor
) -> None:
    """uvicorn's own lines (start-up, shutdown, errors) as the same JSON, request id included."""
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _redact,
            structlog.processors.format_exc_info,
            _redact,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_supaguard", False):
            root.removeHandler(old)
    handler._supaguard = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.getLevelNamesMapping()[level.upper()])
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(root.level, logging.WARNING))
