"""The predictor's own Prometheus metrics (the shared serving ones are in :mod:`serving.metrics`)."""

from __future__ import annotations

from prometheus_client import Gauge, Histogram

PREDICTED_VALUE = Histogram(
    "housing_predicted_value",
    "Predicted median home value (USD 1000s).",
    ["model_name", "model_version"],
    buckets=(5, 10, 15, 20, 25, 30, 35, 40, 45, 50),
)
MODEL_INFO = Gauge(
    "housing_model_info", "The model being served (always 1).", ["model_name", "model_version", "sha256"]
)
