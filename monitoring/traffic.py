"""Request bodies for load and drift demonstrations: real houses from the data set, as sent or shifted.

The locust file, the soak benchmark and the live monitoring test all send these, through the transformer
(named-feature V1: ``{"instances": [{"crim": ..., ...}]}``).
"""

from __future__ import annotations

from collections.abc import Callable

from model.dataset import load_dataset
from model.schema import DEFAULT_FEATURES, TARGET

PREDICT_PATH = "/v1/models/housing:predict"

SHIFT: dict[str, Callable[[float], float]] = {
    "crim": lambda value: value * 8 + 5,
    "rm": lambda value: value + 2.0,
    "lstat": lambda value: min(value * 2.5, 100.0),
    "nox": lambda value: min(value * 1.4, 0.99),
    "age": lambda value: min(value + 30.0, 100.0),
    "dis": lambda value: value * 3,
    "tax": lambda value: value * 1.8,
    "ptratio": lambda value: value + 4.0,
    "indus": lambda value: min(value * 2.0, 100.0),
}
"""A different city: every changed value stays inside its schema domain, so the transformer accepts it and
only the drift detector can tell."""


def houses(shifted: bool = False) -> list[dict[str, float]]:
    """The 506 houses of the bundled data set with the default model's features.

    Args:
        shifted: Apply :data:`SHIFT`, so that the inputs drift away from the training data.

    Returns:
        One ``{feature: value}`` per house.
    """
    frame = load_dataset()[list(DEFAULT_FEATURES)]
    if shifted:
        for name, change in SHIFT.items():
            frame[name] = frame[name].map(change)
    return [{name: float(value) for name, value in row.items()} for row in frame.to_dict("records")]


def targets() -> list[float]:
    """The true median value (USD 1000s) of each house of :func:`houses`, in the same order."""
    return [float(value) for value in load_dataset()[TARGET]]


def v1_body(rows: list[dict[str, float]]) -> dict[str, list[dict[str, float]]]:
    """A V1 predict body for the transformer."""
    return {"instances": rows}
