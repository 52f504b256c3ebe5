"""The serving metrics every KServe server of the project exports, defined once (the default registry).

``housing_requests_total{component,model_name,code}`` and ``housing_request_duration_seconds`` are recorded by
:mod:`serving.server` (REST around the whole HTTP exchange, gRPC at the data plane, the status mapped to its
HTTP equivalent); ``housing_batch_rows`` by each component for the rows it reads; the edge's refusals
(``housing_requests_rate_limited_total``, ``housing_auth_refused_total``) by :mod:`serving.ratelimit` and
:mod:`serving.auth`. Component-specific metrics live in ``predictor/metrics.py``, ``transformer/metrics.py``
and ``detector/metrics.py``.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

REQUESTS = Counter(
    "housing_requests_total",
    "Inference requests by HTTP status code (gRPC statuses mapped to their HTTP equivalent).",
    ["component", "model_name", "code"],
)
REQUEST_SECONDS = Histogram(
    "housing_request_duration_seconds",
    "Whole inference request, from the first byte in to the last byte out.",
    ["component", "model_name"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
BATCH_ROWS = Histogram(
    "housing_batch_rows",
    "Rows (houses) per inference request.",
    ["component", "model_name"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 2000, 5000),
)

RATE_LIMITED = Counter(
    "housing_requests_rate_limited_total",
    "Requests answered 429 by the local rate limit (a token bucket per client, serving/ratelimit.py).",
    ["component"],
)
AUTH_REFUSED = Counter(
    "housing_auth_refused_total",
    "Requests refused by local authentication: missing, invalid or ambiguous credential (401, 400), "
    "forbidden (403), or an address throttled for failing too often (429).",
    ["component", "reason"],
)
EDGE_REFUSED = Counter(
    "housing_edge_refused_total",
    "Requests the edge answered itself (serving/edge.py): no such route or route off (404), header too "
    "large (431), body too large (413) or too slow (408), authentication (400/401/403), rate (429).",
    ["component", "reason"],
)


def observe_request(component: str, model_name: str, code: int, seconds: float) -> None:
    """Count one inference request and record its duration."""
    REQUESTS.labels(component=component, model_name=model_name, code=str(code)).inc()
    REQUEST_SECONDS.labels(component=component, model_name=model_name).observe(seconds)
