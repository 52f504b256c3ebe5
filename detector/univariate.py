"""Per-feature two-sample tests with a multiple-testing correction, on scipy and numpy alone.

The licence-clean twin of alibi-detect's ``KSDrift`` and ``ChiSquareDrift`` (alibi-detect 0.12 and later is
under the Business Source License 1.1): the same scipy calls and the same rules, so both backends reach the
same decisions (``tests/detector/test_univariate.py`` checks it on thousands of windows).
:mod:`detector.alibi_tests` is the other backend; :class:`detector.stats.DriftTester` picks one by name and
builds everything else once.

As in alibi-detect, a test is one per-feature score (:func:`ks_score`, :func:`chi2_score`) plugged into one
tester (:class:`UnivariateTest`), where the correction lives. The rules, as alibi-detect 0.13 applies them
(``cd/base.py``, ``BaseUnivariateDrift.predict``; ``utils/statstest.py``, ``fdr``):

- p-values and statistics are kept as float32, as alibi-detect's arrays hold them;
- ``bonferroni``: a feature is significant when ``p < level / n_features``, compared in float32 (numpy
  compares a float32 array with a Python float in float32);
- ``fdr`` (Benjamini-Hochberg): with the p-values sorted, the largest rank i where ``p_(i) < level * i / n``
  (compared in float64) gives the cut-off ``level * i / n``; the features below it are significant, none when
  no rank passes;
- no correction (alibi-detect's ``drift_type="feature"``): ``p < level``, in float32.

The last two digits of float32 matter only for a p-value within 1e-7 of its cut-off, but there the same
comparison is what makes the decisions the same, not merely close.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

CORRECTIONS = ("fdr", "bonferroni")
"""Corrections across the features of one test; ``None`` (no correction) is for a test of one feature."""

Score = Callable[[np.ndarray, np.ndarray], tuple[float, float]]
"""A per-feature score: (reference column, window column) -> (p-value, statistic)."""


@dataclass(frozen=True)
class Outcome:
    """One test of a window, feature by feature.

    Attributes:
        p_values: Each feature's p-value before correction (float32, shape [n_features]).
        statistics: Each feature's test statistic (float32: the KS distance or the chi-squared statistic).
        significant: Whether each feature's test rejects after the correction (bool).
    """

    p_values: np.ndarray
    statistics: np.ndarray
    significant: np.ndarray


class FeatureTest(Protocol):
    """What both backends build per group of features: a test of windows against a fixed reference."""

    def test(self, window: np.ndarray) -> Outcome:
        """Test a window (shape [n, n_features], the reference's columns)."""
        ...


class Backend(Protocol):
    """A backend's module, how it builds the tests: this module, or :mod:`detector.alibi_tests`."""

    def ks_test(self, reference: np.ndarray, level: float, correction: str | None) -> FeatureTest:
        """KS on each continuous feature of ``reference`` (shape [n_rows, n_features])."""
        ...

    def chi2_test(self, reference: np.ndarray, level: float) -> FeatureTest:
        """Chi-squared on each categorical feature (integer codes), each at ``level``."""
        ...


def ks_score(reference: np.ndarray, window: np.ndarray) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov test, two-sided, asymptotic p-value (alibi-detect's choice)."""
    from scipy.stats import ks_2samp

    result = ks_2samp(reference, window, alternative="two-sided", method="asymp")
    return float(result.pvalue), float(result.statistic)


def chi2_score(reference: np.ndarray, window: np.ndarray) -> tuple[float, float]:
    """Chi-squared test of a 2 x k table: the counts of each category seen in either sample.

    Categories are the values of both samples (integers), so no column is empty: a category that neither
    holds would make the expected frequencies zero and the test undefined.
    """
    from scipy.stats import chi2_contingency

    categories = np.union1d(reference, window)
    table = np.vstack([(reference[:, None] == categories).sum(0), (window[:, None] == categories).sum(0)])
    statistic, p, _, _ = chi2_contingency(table)
    return float(p), float(statistic)


def check_correction(correction: str | None) -> None:
    """Refuse a correction other than those of :data:`CORRECTIONS` or ``None``."""
    if correction is not None and correction not in CORRECTIONS:
        raise ValueError(f"correction must be one of {CORRECTIONS} or None, got {correction!r}")


def significant(p_values: np.ndarray, level: float, correction: str | None) -> np.ndarray:
    """Which float32 p-values reject at ``level`` after ``correction`` (see the module docstring)."""
    check_correction(correction)
    level = float(level)  # a Python float: compared with float32 p-values in float32, as alibi-detect does
    if correction is None:
        return np.asarray(p_values < level)
    if correction == "bonferroni":
        return np.asarray(p_values < level / len(p_values))
    count = len(p_values)  # fdr
    levels = level * np.arange(1, count + 1) / count
    passing = np.flatnonzero(np.sort(p_values) < levels)
    if not len(passing):
        return np.zeros(count, dtype=bool)
    return np.asarray(p_values.astype(np.float64) < levels[passing.max()])


class UnivariateTest:
    """One score per feature against a fixed reference, then one correction across the features.

    Args:
        reference: Reference sample, shape [n_rows, n_features].
        score: The per-feature score.
        level: Significance level (the FDR level with ``correction="fdr"``).
        correction: ``fdr``, ``bonferroni`` or ``None`` (each feature at ``level``).
    """

    def __init__(self, reference: np.ndarray, score: Score, level: float, correction: str | None) -> None:
        check_correction(correction)
        self.reference = np.asarray(reference)
        self.score = score
        self.level = level
        self.correction = correction

    def test(self, window: np.ndarray) -> Outcome:
        """Score each feature of ``window`` against the reference, then correct."""
        window = np.asarray(window)
        count = self.reference.shape[1]
        p_values, statistics = np.zeros(count, dtype=np.float32), np.zeros(count, dtype=np.float32)
        for feature in range(count):
            p_values[feature], statistics[feature] = self.score(
                self.reference[:, feature], window[:, feature]
            )
        return Outcome(p_values, statistics, significant(p_values, self.level, self.correction))


def ks_test(reference: np.ndarray, level: float, correction: str | None) -> UnivariateTest:
    """KS on each continuous feature (alibi-detect's ``KSDrift``)."""
    import scipy.stats  # noqa: F401 (now, with the tests, rather than in the first window's 0.5 s)

    return UnivariateTest(reference, ks_score, level, correction)


def chi2_test(reference: np.ndarray, level: float) -> UnivariateTest:
    """Chi-squared on each categorical feature (integer codes), each at ``level`` (``ChiSquareDrift``)."""
    import scipy.stats  # noqa: F401 (see ks_test)

    return UnivariateTest(reference, chi2_score, level, None)
