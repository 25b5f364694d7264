"""Prometheus metrics, one definition each.

Metrics are per process: scrape every worker (one uvicorn worker per Railway replica is
the supported layout), or run several workers with ``PROMETHEUS_MULTIPROC_DIR`` set.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

REQUESTS = Counter(
    "sg_http_requests_total",
    "HTTP requests by route template and status",
    ["route", "method", "status"],
)
REQUEST_LATENCY = Histogram(
    "sg_http_request_duration_seconds",
    "HTTP request latency by route template",
    ["route", "method"],
    buckets=_LATENCY_BUCKETS,
)
AUTH_OUTCOMES = Counter(
    "sg_auth_outcomes_total", "Authentication outcomes by kind", ["action", "outcome"]
)
UPSTREAM_CALLS = Counter(
    "sg_upstream_calls_total",
    "Supabase Auth calls by operation and outcome",
    ["operation", "outcome"],
)
UPSTREAM_LATENCY = Histogram(
    "sg_upstream_call_duration_seconds",
    "Supabase Auth call latency, queueing included",
    ["operation"],
    buckets=_LATENCY_BUCKETS,
)
UPSTREAM_RETRIES = Counter(
    "sg_upstream_retries_total", "Retried Supabase Auth attempts", ["operation"]
)
BREAKER_STATE = Gauge("sg_upstream_breaker_state", "Circuit breaker: 0 closed, 1 half-open, 2 open")
POOL_IN_USE = Gauge("sg_upstream_pool_in_use", "Supabase thread-pool slots in use")
POOL_WAITING = Gauge("sg_upstream_pool_waiting", "Requests waiting for a Supabase thread-pool slot")
POOL_SIZE = Gauge("sg_upstream_pool_size", "Supabase thread-pool size")
ADMISSION_LIMIT = Gauge(
    "sg_upstream_admission_limit", "Adaptive concurrency limit on Supabase calls in flight"
)
ADMISSION_QUEUE = Gauge(
    "sg_upstream_admission_queue", "Supabase calls waiting for a slot, by priority", ["priority"]
)
ADMISSION_SHED = Counter(
    "sg_upstream_admission_shed_total",
    "Supabase calls refused by admission, by reason and priority",
    ["reason", "priority"],
)
ADMISSION_SERVICE_TIME = Gauge(
    "sg_upstream_admission_service_seconds",
    "Predicted service time of a Supabase call (EWMA, or the current silence if longer)",
)
TOKEN_CACHE = Counter("sg_token_cache_total", "Verified-token cache lookups", ["result"])
REDIS_ERRORS = Counter("sg_redis_errors_total", "Redis failures by operation", ["operation"])
REJECTIONS = Counter("sg_rejections_total", "Requests refused by a limit", ["kind"])

# -- audit and clock (alerting: monitoring/alerts.yml) ---------------------------------------
AUDIT_EVENTS = Counter(
    "sg_audit_events_total", "Security events written to the audit log", ["event"]
)
CLOCK_SKEW = Gauge(
    "sg_clock_skew_seconds",
    "This host's clock minus a reference's: supabase_auth (the iat of the last token it "
    "issued here), redis (its TIME, at each readiness check)",
    ["reference"],
)
