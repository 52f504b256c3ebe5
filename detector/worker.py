"""The window-testing worker process: it builds the alibi-detect detectors once, then tests the windows sent.

The service hands full windows to one such process (a ``ProcessPoolExecutor``), so ingest never waits for the
KS tests and the tests use a second core.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from detector.stats import DriftResult, DriftTester, Reference

_tester: DriftTester | None = None


def start(reference: Reference, options: dict[str, Any]) -> None:
    """Build the tester (the pool's initializer)."""
    global _tester
    _tester = DriftTester(reference, **options)


def ready() -> bool:
    """Whether :func:`start` has run (submitted once to wait for the worker)."""
    return _tester is not None


def test(rows: np.ndarray, predictions: np.ndarray) -> DriftResult:
    """Test one window (see :meth:`detector.stats.DriftTester.test`)."""
    if _tester is None:
        raise RuntimeError("worker not started")
    return _tester.test(rows, predictions)
