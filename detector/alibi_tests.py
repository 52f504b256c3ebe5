"""The alibi-detect backend: ``KSDrift`` and ``ChiSquareDrift`` as :class:`detector.univariate.FeatureTest`.

The only module that imports alibi-detect (an import-linter contract in pyproject.toml keeps it so), and only
:class:`detector.stats.DriftTester` with ``backend="alibi-detect"`` imports it: the scipy backend
(:mod:`detector.univariate`) and the rest of the detector run without alibi-detect installed. alibi-detect
0.12 and later is under the Business Source License 1.1 (docs/detector.md, "Statistics backends and
licences").

Importing alibi-detect imports transformers, which warns on every start that none of PyTorch, TensorFlow or
Flax is installed (none is needed for these tests); the warning is kept back unless logging is at DEBUG.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from detector.univariate import Outcome

log = logging.getLogger(__name__)

_ADVISORY = "TRANSFORMERS_NO_ADVISORY_WARNINGS"
"""transformers' switch for its advisory warnings, read when the warning is logged (during the import)."""


def _import_alibi() -> Any:
    """``alibi_detect.cd``, imported with transformers' advisory warnings off unless logging is at DEBUG."""
    quiet = not log.isEnabledFor(logging.DEBUG)
    saved = os.environ.get(_ADVISORY)
    if quiet:
        os.environ[_ADVISORY] = "1"
    try:
        import alibi_detect.cd as cd
    finally:  # leave the environment as it was, for the processes the detector starts
        if quiet and saved is None:
            del os.environ[_ADVISORY]
    return cd


_cd = _import_alibi()


class AlibiTest:
    """An alibi-detect univariate detector, its verdict read back feature by feature.

    Args:
        detector: A ``KSDrift`` or ``ChiSquareDrift`` built on the reference.
        drift_type: ``batch`` (the detector's correction across features) or ``feature`` (each at its level).
    """

    def __init__(self, detector: Any, drift_type: str) -> None:
        self.detector = detector
        self.drift_type = drift_type

    def test(self, window: np.ndarray) -> Outcome:
        """Run the detector's ``predict`` and say which features it found significant."""
        data = self.detector.predict(window, drift_type=self.drift_type)["data"]
        p_values = np.asarray(data["p_val"], dtype=np.float32)
        threshold = data["threshold"]
        if self.drift_type == "feature":
            significant = np.asarray(data["is_drift"], dtype=bool)
        elif np.ndim(threshold) != 0:  # FDR where no rank passes: alibi returns every rank's level instead
            significant = np.zeros(len(p_values), dtype=bool)
        elif self.detector.correction == "bonferroni":  # level / n, compared in float32 as alibi does
            significant = p_values < float(threshold)
        else:  # the FDR cut-off, compared in float64 as alibi compares the sorted p-values with it
            significant = p_values.astype(np.float64) < float(threshold)
        return Outcome(p_values, np.asarray(data["distance"], dtype=np.float32), significant)


def ks_test(reference: np.ndarray, level: float, correction: str | None) -> AlibiTest:
    """``KSDrift`` on each continuous feature; ``correction=None`` tests each at ``level``."""
    detector = _cd.KSDrift(reference, p_val=level, correction=correction or "bonferroni")
    return AlibiTest(detector, "batch" if correction else "feature")


def chi2_test(reference: np.ndarray, level: float) -> AlibiTest:
    """``ChiSquareDrift`` on each categorical feature (integer codes), each at ``level``."""
    return AlibiTest(_cd.ChiSquareDrift(reference, p_val=level), "feature")
