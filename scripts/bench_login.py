"""What this service adds to a login: p50/p99 through the app vs. localauth directly.

    uv run python -m scripts.bench_login [--requests 400]

Starts Redis (if none answers), localauth (bcrypt cost 4, so hashing does not drown the
difference) and the app, then interleaves sequential logins against both so drift hits
both sides alike.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from scripts.devstack import (
    DEMO_EMAIL,
    DEMO_PASSWORD,
    Stack,
    free_port,
    public_key,
    seed_demo_user,
    wait_http,
)


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=400)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack(Path(tmp))
        try:
            redis_url = stack.redis_url()
            supabase = stack.localauth(free_port(), {"LOCALAUTH_BCRYPT_COST": "4"})
            seed_demo_user(supabase)
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
            run(f"http://127.0.0.1:{port}/api/v1/auth/login", supabase, args.requests)
        finally:
            stack.stop()


def measure(
    app_url: str, supabase: dict[str, str], count: int, others: Mapping[str, str] | None = None
) -> dict[str, list[float]]:
    """Milliseconds of ``count`` logins each way, interleaved, by path: "app", "direct",
    and each of ``others`` (name: login URL of another app instance)."""
    direct_url = supabase["SUPABASE_URL"] + "/auth/v1/token?grant_type=password"
    credentials = {"email": DEMO_EMAIL, "password": DEMO_PASSWORD}
    direct_headers = {"apikey": public_key(supabase)}
    paths: list[tuple[str, str, dict[str, str]]] = [
        ("app", app_url, {}),
        ("direct", direct_url, direct_headers),
        *((name, url, {}) for name, url in (others or {}).items()),
    ]
    timings: dict[str, list[float]] = {name: [] for name, _, _ in paths}
    with httpx.Client(timeout=10) as client:
        for _ in range(20):  # warm every path: connections, JWKS, code paths
            for _, url, headers in paths:
                client.post(url, json=credentials, headers=headers).raise_for_status()
        for _ in range(count):
            for name, url, headers in paths:
                started = time.perf_counter()
                response = client.post(url, json=credentials, headers=headers)
                timings[name].append((time.perf_counter() - started) * 1000)
                response.raise_for_status()
    return timings


def run(app_url: str, supabase: dict[str, str], count: int) -> None:
    timings = measure(app_url, supabase, count)
    app, direct = timings["app"], timings["direct"]
    print(f"logins: {count} each, sequential, interleaved")
    for label, samples in (("localauth direct", direct), ("through the app ", app)):
        p50, p99 = statistics.median(samples), percentile(samples, 0.99)
        print(f"  {label} : p50 {p50:6.2f} ms   p99 {p99:6.2f} ms")
    print(
        f"  added by the app : p50 {statistics.median(app) - statistics.median(direct):6.2f} ms"
        f"   p99 {percentile(app, 0.99) - percentile(direct, 0.99):6.2f} ms"
    )


if __name__ == "__main__":
    main()
