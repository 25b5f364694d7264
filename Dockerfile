# The supaguard app as a container image, for platforms other than Railway (which builds
# from railway.json). Build: `docker build -t supaguard .`
# Run:   `docker run -p 8080:8080 --env-file supaguard.env supaguard`
# The image holds the runtime dependencies only (no test tools, no localauth extra), runs
# as an unprivileged user and serves `supaguard serve` on $HOST:$PORT (`::`: IPv6 and IPv4
# on one socket, falling back to 0.0.0.0 where the host has no IPv6).
ARG PYTHON_VERSION=3.11
ARG UV_VERSION=0.13

FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv

FROM python:${PYTHON_VERSION}-slim AS build
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never
WORKDIR /srv
# Dependencies first, from the lock file alone, so a code change reuses this layer.
COPY pyproject.toml uv.lock README.md LICENSE ./
RUN uv sync --frozen --no-dev --no-install-project
COPY app ./app
COPY services ./services
COPY localauth ./localauth
RUN uv sync --frozen --no-dev --no-editable

FROM python:${PYTHON_VERSION}-slim
RUN useradd --system --uid 10001 --no-create-home supaguard
COPY --from=build /srv/.venv /srv/.venv
ENV PATH=/srv/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    ENVIRONMENT=production \
    HOST=:: \
    PORT=8080
USER supaguard
EXPOSE 8080
# Liveness only: readiness (/health/ready) is for the load balancer, which must not restart
# an instance because Supabase Auth is down.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('PORT', '8080')}/health/live\", timeout=2)"]
# SIGTERM drains in-flight requests for SHUTDOWN_DRAIN_SECONDS, then exits 0: give the
# container at least that long to stop (docker stop --time, Kubernetes terminationGracePeriod).
STOPSIGNAL SIGTERM
CMD ["supaguard", "serve"]
