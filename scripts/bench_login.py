"""What this service adds to a login: p50/p99 through the app vs. localauth directly.

    uv run python -m scripts.bench_login [--requests 400] [--users 50]

Starts Redis (if none answers), localauth (bcrypt cost 4, so hashing does not drown the
difference) and the app, then interleaves sequential logins against both so drift hits
both sides alike. The logins rotate over ``--users`` accounts, so each holds a handful of
sessions, as real accounts do (one account signed in hundreds of times sits at its
session cap, and every login then also ends its oldest session). A ``GET /health/live``
through the app, interleaved too, is the floor of the extra HTTP hop a proxy adds
(client → app → upstream instead of client → upstream): what is left above it is the
app's own work on a login.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

from scripts.devstack import Stack, free_port, public_key, seed_users, wait_http

PASSWORD = "Bench-login-password-1"
HOP = "hop"  # the timings' name of the app's /health/live: the extra hop's floor


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--users", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack(Path(tmp))
        try:
            redis_url = stack.redis_url()
            supabase = stack.localauth(free_port(), {"LOCALAUTH_BCRYPT_COST": "4"})
            emails = seed_users(supabase, args.users, "bench-login", PASSWORD)
            port = free_port()
            app = stack.spawn(
                [sys.executable, "-m", "app"],
                env={
                    **supabase,
                    "REDIS_URL": redis_url,
                    "REDIS_KEY_PREFIX": stack.scratch_prefix(redis_url, "bench-login"),
                    "PORT": str(port),
                    "LOG_LEVEL": "warning",
                    # One client logs in hundreds of times a minute: raise the per-IP limit
                    # (the limiter and the lockout guard stay on, as in production: a login
                    # pays for both).
                    "RATE_LIMITS": "login=1000000/60",
                },
                quiet=True,
            )
            wait_http(f"http://127.0.0.1:{port}/health/live", app, "the app")
            run(f"http://127.0.0.1:{port}", supabase, emails, args.requests)
        finally:
            stack.stop()


def measure(
    app_url: str,
    supabase: Mapping[str, str],
    emails: Sequence[str],
    count: int,
    others: Mapping[str, str] | None = None,
) -> dict[str, list[float]]:
    """Milliseconds of ``count`` logins each way, interleaved, by path: "app", "direct",
    each of ``others`` (name: base URL of another app instance), and ``HOP`` (the app's
    ``/health/live``). Each round signs the next of ``emails`` in on every path."""
    direct_url = supabase["SUPABASE_URL"] + "/auth/v1/token?grant_type=password"
    login = "/api/v1/auth/login"
    direct_headers = {"apikey": public_key(supabase)}
    paths: list[tuple[str, str, dict[str, str]]] = [
        ("app", app_url + login, {}),
        ("direct", direct_url, direct_headers),
        *((name, url + login, {}) for name, url in (others or {}).items()),
    ]
    timings: dict[str, list[float]] = {name: [] for name, _, _ in paths}
    timings[HOP] = []
    accounts = itertools.cycle(emails)
    with httpx.Client(timeout=10) as client:

        def one(url: str, headers: dict[str, str], email: str) -> float:
            body = {"email": email, "password": PASSWORD}
            started = time.perf_counter()
            response = client.post(url, json=body, headers=headers)
            elapsed = (time.perf_counter() - started) * 1000
            response.raise_for_status()
            return elapsed

        def hop() -> float:
            started = time.perf_counter()
            response = client.get(app_url + "/health/live")
            elapsed = (time.perf_counter() - started) * 1000
            response.raise_for_status()
            return elapsed

        for _ in range(20):  # warm every path: connections, JWKS, code paths
            email = next(accounts)
            for _, url, headers in paths:
                one(url, headers, email)
            hop()
        for _ in range(count):
            email = next(accounts)
            for name, url, headers in paths:
                timings[name].append(one(url, headers, email))
            timings[HOP].append(hop())
    return timings


def run(app_url: str, supabase: Mapping[str, str], emails: Sequence[str], count: int) -> None:
    timings = measure(app_url, supabase, emails, count)
    app, direct, hop = timings["app"], timings["direct"], timings[HOP]
    print(f"logins: {count} each, sequential, interleaved, over {len(emails)} accounts")
    for label, samples in (
        ("localauth direct ", direct),
        ("through the app  ", app),
        ("app /health/live ", hop),
    ):
        p50, p99 = statistics.median(samples), percentile(samples, 0.99)
        print(f"  {label}: p50 {p50:6.2f} ms   p99 {p99:6.2f} ms")
    added = statistics.median(app) - statistics.median(direct)
    print(
        f"  added by the app : p50 {added:6.2f} ms"
        f"   p99 {percentile(app, 0.99) - percentile(direct, 0.99):6.2f} ms"
    )
    print(
        f"  of which the extra HTTP hop (floor: /health/live) {statistics.median(hop):.2f} ms,"
        f" the app's own work on a login {added - statistics.median(hop):.2f} ms"
    )


if __name__ == "__main__":
    main()
