"""The window-testing worker process: it builds the drift tests once, then tests the windows sent.

The service hands full windows to one such process (a ``ProcessPoolExecutor``), so ingest never waits for the
KS tests and the tests use a second core.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import numpy as np

from detector.stats import DriftResult, DriftTester, Reference

_tester: DriftTester | None = None


def start(reference: Reference, options: dict[str, Any]) -> None:
    """Exit with the detector, then build the tester (the pool's initializer).

    The watch starts first: building the tests takes seconds (alibi-detect's imports), and a detector killed
    meanwhile would otherwise leave this process waiting for work for ever.
    """
    global _tester
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), name="parent-watch", daemon=True).start()
    _tester = DriftTester(reference, **options)


def _exit_with_parent(parent: int) -> None:
    """Exit once the detector is gone: after its ``kill -9`` a pool worker would wait for work forever."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def ready() -> bool:
    """Whether :func:`start` has run (submitted once to wait for the worker)."""
    return _tester is not None


def test(rows: np.ndarray, predictions: np.ndarray) -> DriftResult:
    """Test one window (see :meth:`detector.stats.DriftTester.test`)."""
    if _tester is None:
        raise RuntimeError("worker not started")
    return _tester.test(rows, predictions)
