"""Where experiments get their labelled outcomes: the detector's ``GET /outcomes``, or a CSV file."""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from housing.sequential import CHALLENGER, CHAMPION

API_KEY_ENV = "HOUSING_API_KEY"  # pragma: allowlist secret (a variable name)
"""A key with the ``analyst`` role, sent to a detector run with ``--auth`` (docs/security.md)."""


class OutcomesError(RuntimeError):
    """The outcomes could not be read, or do not hold the arms asked for."""


def fetch_outcomes(detector: str) -> dict[str, dict[str, list[float]]]:
    """The detector's labelled predictions per ``endpoint/model_version`` (sends ``HOUSING_API_KEY``)."""
    key = os.environ.get(API_KEY_ENV)
    headers = {"x-api-key": key} if key else {}
    # Here, not at the top: the trainer image (training extra, no httpx) imports this module for `housing`.
    import httpx

    try:
        response = httpx.get(f"{detector.rstrip('/')}/outcomes", headers=headers, timeout=10)
    except httpx.HTTPError as error:
        raise OutcomesError(f"cannot reach the detector at {detector}: {error}") from error
    if response.status_code != 200:
        raise OutcomesError(f"{detector}/outcomes answered {response.status_code}: {response.text[:200]}")
    return dict(response.json()["keys"])


def arm_errors(outcomes: Mapping[str, Mapping[str, list[Any]]], arm: str) -> tuple[np.ndarray, str]:
    """Truth - prediction of the key that ``arm`` names (an endpoint alone: its only model version)."""
    chosen = [key for key in outcomes if key == arm or key.split("/", 1)[0] == arm]
    if not chosen:
        known = ", ".join(sorted(outcomes)) or "none yet"
        raise OutcomesError(f"no labelled predictions for {arm!r} (known: {known})")
    if len(chosen) > 1 and "/" not in arm:
        raise OutcomesError(f"{arm!r} served several model versions ({', '.join(chosen)}): name one")
    key = chosen[0]
    truth = np.asarray(outcomes[key]["true_values"], dtype=float)
    return truth - np.asarray(outcomes[key]["predictions"], dtype=float), key


def paired_errors(
    outcomes: Mapping[str, Mapping[str, list[Any]]], champion: str, challenger: str
) -> tuple[np.ndarray, np.ndarray, str, str]:
    """Both arms' errors on the houses both priced (a shadow), matched by request id and row, in order.

    Returns:
        The champion's errors, the challenger's on the same rows, and the two keys.
    """
    first, first_key = arm_errors(outcomes, champion)
    second, second_key = arm_errors(outcomes, challenger)
    ids = [_row_ids(outcomes[key].get("request_ids", [])) for key in (first_key, second_key)]
    position = {row: index for index, row in enumerate(ids[1])}
    matched = [(index, position[row]) for index, row in enumerate(ids[0]) if row[0] and row in position]
    if not matched:
        raise OutcomesError(f"no request was labelled for both {first_key} and {second_key}")
    left, right = (np.array(side) for side in zip(*matched, strict=True))
    return first[left], second[right], first_key, second_key


def _row_ids(request_ids: list[str]) -> list[tuple[str, int]]:
    """(request id, row within it): a request of several houses has one label per row."""
    seen: dict[str, int] = {}
    rows = []
    for request_id in request_ids:
        rows.append((request_id, seen.get(request_id, 0)))
        seen[request_id] = rows[-1][1] + 1
    return rows


def read_csv(path: Path, paired: bool) -> tuple[np.ndarray, np.ndarray]:
    """Errors of the champion and the challenger from a CSV; paired by ``id`` when asked."""
    errors: dict[str, dict[str, float]] = {CHAMPION: {}, CHALLENGER: {}}
    try:
        with path.open(newline="") as stream:
            for line, row in enumerate(csv.DictReader(stream), start=2):
                arm = row.get("arm")
                if arm not in errors:
                    raise OutcomesError(f"{path}:{line}: arm must be champion or challenger, got {arm!r}")
                errors[arm][row["id"]] = float(row["truth"]) - float(row["prediction"])
    except (OSError, KeyError, ValueError) as error:
        raise OutcomesError(f"{path}: {error!r} (columns: id,arm,truth,prediction)") from error
    if paired:
        both = [key for key in errors[CHAMPION] if key in errors[CHALLENGER]]
        return (
            np.array([errors[CHAMPION][key] for key in both]),
            np.array([errors[CHALLENGER][key] for key in both]),
        )
    return np.array(list(errors[CHAMPION].values())), np.array(list(errors[CHALLENGER].values()))
