"""``python -m app.diagnose``: is this deployment able to work, and if not, what to change.

Reads the same environment as ``python -m app`` and checks, in order: the settings, Redis,
Supabase Auth reachability and latency, the publishable (or legacy anon) key, the secret (or
legacy service_role) key (a harmless ``list users, 1 per page`` and an admin write to a user
that cannot exist), the JWKS, and the clock against the server's ``Date``. Every
result comes with a concrete suggestion; the exit code is 1 if anything failed, 2 if the
settings themselves are invalid. Nothing secret is ever printed.
"""

from __future__ import annotations

import argparse
import email.utils
import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, TextIO

import httpx
import redis

from app import diagnose_keys as keys
from app.settings import ConfigurationError, Settings
from services.apikeys import KeyFamily, KeySlot, request_headers


@dataclass
class Result:
    name: str
    ok: bool
    detail: str
    suggestion: str = ""
    latency_ms: float | None = None


class Diagnosis:
    def __init__(self, settings: Settings, timeout: float) -> None:
        self.settings = settings
        self.timeout = timeout
        self.http = httpx.Client(timeout=timeout, follow_redirects=False)
        self.server_date: str | None = None
        self.reachable = False

    def close(self) -> None:
        self.http.close()

    def run(self) -> list[Result]:
        checks: list[Callable[[], Result]] = [
            self.redis,
            self.upstream,
            self.public_key,
            self.server_key,
            self.jwks,
            self.clock,
        ]
        return [self._safely(check) for check in checks]

    def _safely(self, check: Callable[[], Result]) -> Result:
        try:
            return check()
        except Exception as exc:  # A bug here must not hide the other results.
            return Result(check.__name__, False, f"check crashed: {type(exc).__name__}")

    # -- the checks ------------------------------------------------------------------------

    def redis(self) -> Result:
        s = self.settings
        client = redis.Redis.from_url(
            s.redis_url, socket_timeout=self.timeout, socket_connect_timeout=self.timeout
        )
        started = time.perf_counter()
        try:
            client.ping()
        except redis.AuthenticationError:
            return Result(
                "redis",
                False,
                "Redis refused the credentials",
                "fix the password in REDIS_URL (redis://default:PASSWORD@host:port/0); on "
                "Railway reference the Redis service's variable: ${{Redis.REDIS_URL}}",
            )
        except (redis.RedisError, OSError) as exc:
            return Result(
                "redis",
                False,
                f"cannot reach Redis at {_redis_location(s.redis_url)} ({type(exc).__name__})",
                "check REDIS_URL and that Redis is running and reachable from this service "
                "(on Railway: the private host redis.railway.internal, IPv6); raise "
                "REDIS_TIMEOUT_SECONDS only if the network is known to be slow",
            )
        finally:
            client.close()
        return Result(
            "redis", True, f"PING ok at {_redis_location(s.redis_url)}", latency_ms=_ms(started)
        )

    def upstream(self) -> Result:
        url = self.settings.auth_url + "/health"
        started = time.perf_counter()
        try:
            response = self.http.get(url, headers=request_headers(self.settings.public_api_key))
        except httpx.TimeoutException:
            return Result(
                "supabase_auth",
                False,
                f"no answer from {self.settings.auth_url} within {self.timeout}s",
                "check SUPABASE_URL and the network path to it; a slow upstream will also "
                "trip UPSTREAM_DEADLINE_SECONDS",
            )
        except httpx.HTTPError as exc:
            return Result(
                "supabase_auth",
                False,
                f"cannot connect to {self.settings.auth_url} ({type(exc).__name__})",
                "check SUPABASE_URL: it should be the project URL, e.g. "
                "https://<project-ref>.supabase.co (without /auth/v1), and reachable from here",
            )
        latency = _ms(started)
        self.server_date = response.headers.get("date")
        if response.status_code == 200 and _json(response) is not None:
            self.reachable = True
            return Result(
                "supabase_auth",
                True,
                f"{self.settings.auth_url} answered 200",
                "" if latency < 1000 else "latency is high; the app's deadlines may trip",
                latency_ms=latency,
            )
        return Result(
            "supabase_auth",
            False,
            f"{url} answered {response.status_code}, not Supabase Auth's health document",
            "check SUPABASE_URL points at the Supabase project (not at this service, Kong, "
            "or a path with /auth/v1 already in it)",
            latency_ms=latency,
        )

    def public_key(self) -> Result:
        name = "publishable_key"
        if not self.reachable:
            return _skipped(name)
        key = self.settings.public_api_key
        where = keys.source(self.settings, KeySlot.PUBLIC)
        if key.family is KeyFamily.UNKNOWN:
            return Result(
                name,
                False,
                f"{where} is neither sb_publishable_… nor a JWT",
                "copy the publishable key of this project (Project Settings → API Keys) into "
                "SUPABASE_PUBLISHABLE_KEY",
            )
        # Bogus credentials: a working key gets GoTrue's 400 invalid_credentials, a refused
        # key gets 401 from the API gateway in front of GoTrue.
        response = self.http.post(
            self.settings.auth_url + "/token",
            params={"grant_type": "password"},
            json={"email": "diagnose@invalid.example", "password": "not-a-real-password"},
            headers=request_headers(key),
        )
        code, message = keys.error_of(response)
        if response.status_code == 400 and code in ("invalid_credentials", "invalid_grant"):
            return Result(
                name,
                True,
                f"{where}: {key.label} accepted (a bogus sign-in got invalid_credentials)",
                keys.legacy_advice(key, keys.shadowed(self.settings, KeySlot.PUBLIC)),
            )
        if response.status_code in (401, 403):
            return Result(
                name,
                False,
                f"{where}: {key.label} refused in the apikey header "
                f"({response.status_code} {code or message})".rstrip(),
                keys.refused_advice(message, public=True),
            )
        return Result(
            name,
            False,
            f"unexpected answer {response.status_code} {code or ''}".strip(),
            f"check SUPABASE_URL and {where} belong to the same project",
        )

    def server_key(self) -> Result:
        name = "secret_key"
        if not self.reachable:
            return _skipped(name)
        key = self.settings.server_api_key
        where = keys.source(self.settings, KeySlot.SERVER)
        if key.family is KeyFamily.UNKNOWN:
            return Result(
                name,
                False,
                f"{where} is neither sb_secret_… nor a JWT",
                "copy a secret key of this project (Project Settings → API Keys) into "
                "SUPABASE_SECRET_KEY",
            )
        headers = request_headers(key)
        started = time.perf_counter()
        read = self.http.get(
            self.settings.auth_url + "/admin/users",
            params={"page": 1, "per_page": 1},
            headers=headers,
        )
        latency = _ms(started)
        if read.status_code != 200:
            code, message = keys.error_of(read)
            return Result(
                name,
                False,
                f"{where}: {key.label} refused: admin list users answered "
                f"{read.status_code} {code or message}".rstrip(),
                keys.refused_advice(message, public=False, code=code),
                latency_ms=latency,
            )
        # A write to a user that cannot exist: 404 means the key may write, and nothing
        # changes. Some new projects let admin reads through and refuse writes.
        write = self.http.put(
            self.settings.auth_url + "/admin/users/00000000-0000-0000-0000-000000000000",
            json={},
            headers=headers,
        )
        if write.status_code in (404, 422):
            return Result(
                name,
                True,
                f"{where}: {key.label} accepted (admin read, and a write to no user)",
                keys.legacy_advice(key, keys.shadowed(self.settings, KeySlot.SERVER)),
                latency_ms=latency,
            )
        code, message = keys.error_of(write)
        return Result(
            name,
            False,
            f"{where}: {key.label} may read users but an admin write answered "
            f"{write.status_code} {code or message}".rstrip(),
            "registration and the admin routes write through the Admin API: check the secret "
            "key in Project Settings → API Keys (supabase/supabase#48288 reports this on new "
            "projects); until it is fixed, unset SUPABASE_SECRET_KEY and set "
            "SUPABASE_SERVICE_ROLE_KEY to the legacy service_role key",
            latency_ms=latency,
        )

    def jwks(self) -> Result:
        if not self.reachable:
            return _skipped("jwks")
        response = self.http.get(self.settings.auth_url + "/.well-known/jwks.json")
        body = _json(response) or {}
        keys = body.get("keys") if isinstance(body, dict) else None
        hs256 = self.settings.supabase_jwt_secret is not None
        if response.status_code == 200 and isinstance(keys, list) and keys:
            kinds = sorted({str(k.get("alg") or k.get("kty")) for k in keys if isinstance(k, dict)})
            return Result("jwks", True, f"{len(keys)} signing key(s): {', '.join(kinds)}")
        if hs256:
            return Result(
                "jwks", True, "no asymmetric keys published; verifying with SUPABASE_JWT_SECRET"
            )
        return Result(
            "jwks",
            False,
            f"no signing keys at {self.settings.auth_url}/.well-known/jwks.json "
            f"({response.status_code})",
            "the project signs with the legacy HS256 secret: set SUPABASE_JWT_SECRET "
            "(Project Settings → API → JWT secret), or migrate it to asymmetric JWT keys",
        )

    def clock(self) -> Result:
        if self.server_date is None:
            return _skipped("clock")
        parsed = email.utils.parsedate_to_datetime(self.server_date)
        skew = time.time() - parsed.timestamp()
        leeway = self.settings.jwt_leeway_seconds
        # The Date header has one-second resolution.
        if abs(skew) <= max(1.5, leeway / 2):
            return Result("clock", True, f"skew {skew:+.1f}s against the server's Date")
        return Result(
            "clock",
            False,
            f"skew {skew:+.1f}s against the server's Date (JWT leeway {leeway:.0f}s)",
            "sync this host's clock (NTP/chrony); fresh tokens may look not-yet-valid or "
            "expired. JWT_LEEWAY_SECONDS only hides the symptom",
        )


def _skipped(name: str) -> Result:
    return Result(name, False, "not checked: Supabase Auth is unreachable", "fix the above first")


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _redis_location(url: str) -> str:
    """host:port/db of a Redis URL, never its password."""
    parsed = httpx.URL(url.replace("redis://", "http://", 1).replace("rediss://", "https://", 1))
    return f"{parsed.host}:{parsed.port or 6379}{parsed.path or ''}"


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def render(results: list[Result], out: TextIO) -> None:
    for result in results:
        mark = " OK " if result.ok else "FAIL"
        latency = f" ({result.latency_ms:.0f} ms)" if result.latency_ms is not None else ""
        out.write(f"[{mark}] {result.name:<17} {result.detail}{latency}\n")
        if result.suggestion:
            out.write(f"       -> {result.suggestion}\n")


def main(
    argv: list[str] | None = None,
    environ: Mapping[str, str] | None = None,
    out: TextIO | None = None,
) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m app.diagnose", description="Check this deployment's configuration."
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--timeout", type=float, default=5.0, help="per-check timeout (s)")
    args = parser.parse_args(argv)
    out = out or sys.stdout
    try:
        settings = Settings.from_environ(os.environ if environ is None else environ)
    except ConfigurationError as exc:
        result = Result(
            "settings",
            False,
            str(exc).replace("\n", "; "),
            "set the named environment variables (see README, 'Deploying on Railway')",
        )
        _emit([result], args.json, out)
        return 2
    diagnosis = Diagnosis(settings, timeout=args.timeout)
    try:
        results = [Result("settings", True, f"valid ({settings.environment})")]
        results.extend(diagnosis.run())
    finally:
        diagnosis.close()
    _emit(results, args.json, out)
    return 0 if all(r.ok for r in results) else 1


def _emit(results: list[Result], as_json: bool, out: TextIO) -> None:
    if as_json:
        out.write(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    else:
        render(results, out)


if __name__ == "__main__":
    sys.exit(main())
