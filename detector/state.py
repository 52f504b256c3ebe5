"""The saved state, ``STATE_DIR/state.json``: read (upgrading older formats), validated, written atomically.

:meth:`detector.monitor.Monitor.snapshot` builds the document; format 2 names every field (objects with keys).
Format 1, written by the first release, held positional lists and ``endpoint/model_version`` strings; it is
still read, so that an upgrade keeps the windows, labels and episodes it had.

**Validated when loaded** (:func:`validated`): a state written by an older or buggy version, or edited on the
volume, may hold what ingest now refuses: a label of ``1e300`` (which once made ``/status`` answer 500 for
good), infinities, an endpoint not taken, thousands of forged model versions, megabyte ids. Each entry is
checked by the rules ingest applies (:mod:`detector.events`, :mod:`detector.labels`); what breaks one is
dropped, logged and counted in ``housing_detector_state_dropped_total{section}``, and the rest is resumed.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from detector import metrics
from detector.events import MAX_NAME_CHARS, InvalidEventError, check_id
from detector.keys import WindowKey
from model.files import write_atomic
from model.intervals import LEVELS
from model.schema import TARGET_DOMAIN

if TYPE_CHECKING:
    from detector.settings import Settings

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
STATE_FORMAT = 2


def read_state(path: Path) -> dict[str, Any]:
    """The state saved at ``path`` in the current format; empty when there is none or it is unreadable."""
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError) as error:
        log.error("state file %s unreadable (%s): starting afresh", path, error)
        return {}
    if not isinstance(state, dict):
        return {}
    if state.get("format") != 1:
        return state
    try:
        return upgrade_format_1(state)
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        log.error("state file %s: format 1 unreadable (%s): starting afresh", path, error)
        return {}


def write_state(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` through a temporary file renamed over it, so a crash never leaves half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(state, separators=(",", ":")))


def upgrade_format_1(state: dict[str, Any]) -> dict[str, Any]:
    """The format-1 ``state`` (positional lists, keys as ``endpoint/model_version``) in the current format."""

    def key(text: str) -> dict[str, str]:
        return WindowKey.parse(text).labels()

    retrain = state.get("retrain") or {}
    return {
        "format": STATE_FORMAT,
        "reference_version": state.get("reference_version"),
        "pending": [
            {
                "component": component,
                "request_id": request_id,
                "kind": kind,
                "time": when,
                "endpoint": endpoint,
                "model_version": version,
                "values": values,
            }
            for component, request_id, kind, when, endpoint, version, values in state.get("pending", [])
        ],
        "windows": [{**key(text), **window} for text, window in state.get("windows", {}).items()],
        "queued": [
            {**key(text), "rows": rows, "predictions": predictions}
            for text, rows, predictions in state.get("queued", [])
        ],
        "results": [{**key(text), "result": result} for text, result in state.get("results", {}).items()],
        "labels": [
            {
                **key(text),
                "true_values": [truth for truth, _ in pairs],
                "predictions": [prediction for _, prediction in pairs],
            }
            for text, pairs in state.get("labels", {}).items()
        ],
        "recent": [
            {"request_id": request_id, **key(text), "predictions": predictions}
            for request_id, text, predictions in state.get("recent", [])
        ],
        "retrain": {**retrain, "active": [key(text) for text in retrain.get("active", [])]},
    }


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``None`` (JSON has no NaN or infinity)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value


class _InvalidEntryError(ValueError):
    """An entry of the saved state breaks a rule."""


def validated(
    state: dict[str, Any], settings: Settings, width: int, reference_version: str
) -> dict[str, Any]:
    """``state`` (format 2) without the entries that break the rules ingest applies.

    Args:
        state: As :func:`read_state` returned it.
        settings: The monitor's settings: the endpoints taken, the model versions tracked at most.
        width: The model's number of inputs (a row's length).
        reference_version: The reference's model version (always kept among the tracked versions).

    Returns:
        The state with each invalid entry dropped (logged, counted by section); labels are checked one by one.
    """
    if state.get("format") != STATE_FORMAT:
        return state
    dropped: Counter[str] = Counter()
    versions = [reference_version]

    def key(saved: Any, finite: bool = True) -> WindowKey:
        if not isinstance(saved, dict):
            raise _InvalidEntryError("not an object")
        if finite:
            _finite(saved)
        endpoint, version = saved.get("endpoint"), saved.get("model_version")
        if endpoint not in settings.endpoints:
            raise _InvalidEntryError(f"endpoint {str(endpoint)[:40]!r} not taken")
        if not isinstance(version, str) or not version or len(version) > MAX_NAME_CHARS:
            raise _InvalidEntryError("model_version: not a short string")
        if version not in versions:
            if len(versions) >= settings.max_model_versions:
                raise _InvalidEntryError(f"more than {settings.max_model_versions} model versions")
            versions.append(version)
        return WindowKey(endpoint, version)

    def rows(values: Any, columns: int | None) -> int:
        if not isinstance(values, list) or not all(
            _is_number(item)
            if columns is None
            else isinstance(item, list)
            and len(item) == columns
            and all(_is_number(number) for number in item)
            for item in values
        ):
            raise _InvalidEntryError("values: not numbers of the model's shape")
        return len(values)

    def pending(saved: Any) -> None:
        if not isinstance(saved, dict):
            raise _InvalidEntryError("not an object")
        _finite(saved)
        _id(saved.get("request_id"))
        component = saved.get("component")
        if not isinstance(component, str) or len(component) > MAX_NAME_CHARS:
            raise _InvalidEntryError("component: not a short string")
        if saved.get("endpoint") not in settings.endpoints or saved.get("kind") not in (
            "request",
            "response",
        ):
            raise _InvalidEntryError("endpoint or kind not taken")
        version = saved.get("model_version")
        if version is not None and (not isinstance(version, str) or len(version) > MAX_NAME_CHARS):
            raise _InvalidEntryError("model_version: not a short string")
        if not _is_number(saved.get("time")):
            raise _InvalidEntryError("time: not a number")
        rows(saved.get("values"), width if saved["kind"] == "request" else None)

    def window(saved: Any) -> None:
        key(saved)
        if rows(saved.get("rows"), width) != rows(saved.get("predictions"), None):
            raise _InvalidEntryError("rows and predictions differ in number")

    def result(saved: Any) -> None:
        from detector.stats import DriftResult

        key(saved)
        try:
            DriftResult.from_dict(saved["result"])
        except (KeyError, TypeError) as error:
            raise _InvalidEntryError(f"result: {error}") from None

    def history(saved: Any) -> None:
        key(saved)
        if not isinstance(saved.get("entries"), list) or not all(
            isinstance(e, dict) for e in saved["entries"]
        ):
            raise _InvalidEntryError("entries: not a list of objects")

    def recent(saved: Any) -> None:
        key(saved)
        _id(saved.get("request_id"))
        count = rows(saved.get("predictions"), None)
        if "level" in saved:  # saved with its intervals
            _level(saved["level"])
            lower, upper = saved.get("lower"), saved.get("upper")
            if rows(lower, None) != count or rows(upper, None) != count:
                raise _InvalidEntryError("lower, upper: not one bound each per prediction")
            if any(low > high for low, high in zip(lower, upper, strict=True)):
                raise _InvalidEntryError("lower: a bound above its upper bound")

    def coverage(saved: Any) -> None:
        key(saved)
        _level(saved.get("level"))
        hits, widths = saved.get("hits"), saved.get("widths")
        if not isinstance(hits, list) or not all(isinstance(hit, bool) for hit in hits):
            raise _InvalidEntryError("hits: not a list of booleans")
        if rows(widths, None) != len(hits) or any(width < 0 for width in widths):
            raise _InvalidEntryError("widths: not one width (>= 0) per hit")

    def labelled(saved: Any) -> None:
        if not isinstance(saved, dict):
            raise _InvalidEntryError("not an object")
        _id(saved.get("request_id"))
        truth = saved.get("true_values")
        if not isinstance(truth, list) or not truth or any(TARGET_DOMAIN.violation(value) for value in truth):
            raise _InvalidEntryError("true_values: not labels in the target's domain")

    clean: dict[str, Any] = dict(state)
    checks: dict[str, Callable[[Any], Any]] = {
        "pending": pending,
        "windows": window,
        "queued": window,
        "results": result,
        "history": history,
        "recent": recent,
        "coverage": coverage,
        "labelled": labelled,
    }
    for section, check in checks.items():
        clean[section] = _kept(state.get(section), section, check, dropped)
    clean["labels"] = [
        label_set
        for saved in _kept(state.get("labels"), "labels", lambda saved: key(saved, finite=False), dropped)
        if (label_set := _labels(saved, dropped))
    ]
    saved_retrain = state.get("retrain")
    retrain: dict[str, Any] = saved_retrain if isinstance(saved_retrain, dict) else {}
    clean["retrain"] = {
        "active": _kept(retrain.get("active"), "retrain", key, dropped),
        "last_fired": retrain.get("last_fired") if _is_number(retrain.get("last_fired")) else None,
        "firings": [
            item for item in retrain.get("firings") or [] if isinstance(item, dict) and _finite_ok(item)
        ]
        if isinstance(retrain.get("firings"), list)
        else [],
    }
    if dropped:
        for section, count in dropped.items():
            metrics.STATE_DROPPED.labels(section=section).inc(count)
        log.warning("saved state: dropped %d invalid entries (%s)", sum(dropped.values()), dict(dropped))
    return clean


def _kept(items: Any, section: str, check: Callable[[Any], Any], dropped: Counter[str]) -> list[Any]:
    """The items of one section that pass ``check``; the others counted in ``dropped``."""
    if not isinstance(items, list):
        if items is not None:
            dropped[section] += 1
        return []
    kept = []
    for item in items:
        try:
            check(item)
        except Exception as error:  # _InvalidEntryError, or an entry too malformed for a check to read
            dropped[section] += 1
            log.debug("saved state: %s entry dropped: %s", section, error)
        else:
            kept.append(item)
    return kept


def _labels(saved: dict[str, Any], dropped: Counter[str]) -> dict[str, Any] | None:
    """One key's labelled predictions without the pairs that break the label rule (each pair counted)."""
    truth, predictions = saved.get("true_values"), saved.get("predictions")
    if not isinstance(truth, list) or not isinstance(predictions, list) or len(truth) != len(predictions):
        dropped["labels"] += 1
        return None
    ids = saved.get("request_ids") or [""] * len(truth)  # saved before ids were kept
    if not isinstance(ids, list) or len(ids) != len(truth):
        dropped["labels"] += 1
        return None
    kept = [
        (value, prediction, request_id)
        for value, prediction, request_id in zip(truth, predictions, ids, strict=True)
        if TARGET_DOMAIN.violation(value) is None
        and _is_number(prediction)
        and (request_id == "" or _valid_id(request_id))
    ]
    dropped["labels"] += len(truth) - len(kept)
    if not kept:
        return None
    return {
        **saved,
        "true_values": [value for value, _, _ in kept],
        "predictions": [prediction for _, prediction, _ in kept],
        "request_ids": [request_id for _, _, request_id in kept],
    }


def _is_number(value: Any) -> bool:
    """Whether ``value`` is a finite JSON number (an integer too large for a float is not)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _finite_ok(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (ValueError, TypeError, RecursionError):
        return False
    return True


def _finite(value: Any) -> None:
    if not _finite_ok(value):
        raise _InvalidEntryError("holds a number that is not finite")


def _valid_id(value: Any) -> bool:
    try:
        check_id(value, "request_id")
    except InvalidEventError:
        return False
    return True


def _id(value: Any) -> None:
    if not _valid_id(value):
        raise _InvalidEntryError("request_id: not an inference id")


def _level(value: Any) -> None:
    if not _is_number(value) or value not in LEVELS:
        raise _InvalidEntryError("level: not an interval level served")
