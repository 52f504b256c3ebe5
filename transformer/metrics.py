"""The transformer's own Prometheus metrics (the shared serving ones are in :mod:`serving.metrics`)."""

from __future__ import annotations

from prometheus_client import Counter

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
