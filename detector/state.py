"""The saved state, ``STATE_DIR/state.json``: read (upgrading older formats) and written atomically.

:meth:`detector.monitor.Monitor.snapshot` builds the document; format 2 names every field (objects with keys).
Format 1, written by the first release, held positional lists and ``endpoint/model_version`` strings; it is
still read, so that an upgrade keeps the windows, labels and episodes it had.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from detector.keys import WindowKey
from model.files import write_atomic

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
    return upgrade_format_1(state) if state.get("format") == 1 else state


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
