"""The transformer's own Prometheus metrics (the shared serving ones are in :mod:`serving.metrics`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

VALIDATION_ERRORS = Counter(
    "housing_validation_errors_total", "Payloads refused, by field and rule.", ["model_name", "field", "rule"]
)
PREDICTOR_ERRORS = Counter(
    "housing_predictor_errors_total", "Failed calls to the predictor, by reason.", ["model_name", "reason"]
)
CANARY_FALLBACKS = Counter(
    "housing_canary_fallbacks_total",
    "Requests a canary could not take (unreachable or not ready) that the stable predictor answered.",
    ["model_name", "canary"],
)
LOGGER_EVENTS = Counter(
    "housing_logger_events_total",
    "Inference CloudEvents of the local request logger by outcome: sent, dropped (queue full), failed.",
    ["component", "outcome"],
)
LOGGER_INFERENCES = Counter(
    "housing_logger_inferences_total",
    "Inferences (a request and its response) the request logger was offered, delivered to the detector, "
    "dropped whole at random under overload, or failed to send.",
    ["component", "endpoint", "outcome"],
)
LOGGER_SAMPLING = Gauge(
    "housing_logger_sampling_ratio",
    "Share of the endpoint's inferences the request logger delivered over its last second (on the events).",
    ["component", "endpoint"],
)
SHADOW_REQUESTS = Counter(
    "housing_shadow_requests_total",
    "Request copies for a shadow predictor, by outcome: answered, dropped (too many in flight), refused "
    "(invalid for the shadow's model), timeout, unavailable (down or its breaker open), error. Clients never "
    "see any of them.",
    ["model_name", "shadow", "outcome"],
)
BREAKER_STATE = Gauge(
    "housing_predictor_breaker_state",
    "Circuit breaker of each predictor arm: 0 closed, 1 half-open (one probe out), 2 open (not called).",
    ["model_name", "arm"],
)
SHORT_CIRCUITS = Counter(
    "housing_predictor_short_circuits_total",
    "Requests answered 503 at once because their predictor's circuit breaker was open.",
    ["model_name", "arm"],
)
IN_FLIGHT = Gauge(
    "housing_requests_in_flight", "Inference requests in flight or queued in the transformer.", ["model_name"]
)
SHED = Counter(
    "housing_requests_shed_total",
    "Requests refused at once with 503 because the transformer's in-flight limit was reached.",
    ["model_name"],
)
