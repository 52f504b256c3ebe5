"""The drift statistics, shared by the detector service and the ``housing drift`` batch command.

One window of live rows is compared with the reference (the training sample stored in the model artifact):

- every continuous feature with a two-sample Kolmogorov-Smirnov test (alibi-detect ``KSDrift``, corrected for
  testing many features at once: Benjamini-Hochberg FDR by default, or Bonferroni);
- each binary feature (``chas``) with a chi-squared test (alibi-detect ``ChiSquareDrift``, at the same level);
  both tests come from one of two backends with the same decisions: ``alibi-detect`` (the default; Business
  Source License 1.1, :mod:`detector.alibi_tests`) or ``scipy`` (:mod:`detector.univariate`, scipy and numpy
  alone, for a deployment that may not run alibi-detect);
- every feature also with the population stability index (PSI) and the Jensen-Shannon distance, both on bins
  cut at the reference's deciles;
- the model's predictions with a KS test and the JS distance (prediction drift);
- all features together with the PCA reconstruction error (:mod:`detector.multivariate`), which sees a change
  in how the features move together while every marginal stays the same.

**Drift score.** A feature's drift score is its JS distance (base 2, in [0, 1]) when its test rejects after
the correction, else 0; the feature *drifted* when that score exceeds the threshold, i.e. when its change is
both statistically significant and large. The window's drift score is the largest feature drift score, so it
lies in [0, 1] and drift is declared when it exceeds the threshold (default 0.3, the original system's). The
test keeps sampling noise of small windows from raising alarms; the JS distance keeps tiny but significant
changes of large windows from raising them, and gives the score a meaning: how far the most changed input
moved. The window also drifted when its reconstruction error is beyond the reference's (multivariate drift),
whatever the score. The benchmark (``./dev bench detector``) measures both error rates; see
docs/detector.md.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from detector.multivariate import ReconstructionDrift, ReconstructionResult
from detector.univariate import CORRECTIONS, Backend, FeatureTest, Outcome
from model.schema import FEATURES_BY_NAME

DEFAULT_THRESHOLD = 0.3
DEFAULT_P_VALUE = 0.05
DEFAULT_BINS = 10
DEFAULT_CORRECTION = "fdr"
BACKENDS = ("alibi-detect", "scipy")
"""Where the KS and chi-squared tests come from (see the module docstring)."""
DEFAULT_BACKEND = "alibi-detect"
BACKEND_HELP = (
    "where the KS and chi-squared tests come from: alibi-detect (Business Source License 1.1) or scipy "
    "(scipy and numpy alone, the same decisions) [env STATS_BACKEND]"
)
"""The help of the detector's ``--stats_backend`` and ``housing drift --stats-backend``."""
# PSI is undefined for empty bins; this floor is the usual remedy and caps one bin's contribution.
PSI_FLOOR = 1e-4


@dataclass(frozen=True)
class Reference:
    """What live traffic is compared with.

    Attributes:
        features: Input names, in the column order of ``rows``.
        rows: Reference inputs, shape [n_rows, n_features].
        predictions: The model's predictions for ``rows`` (shape [n_rows]), or ``None`` when unknown.
        version: The model version the reference belongs to.
    """

    features: tuple[str, ...]
    rows: np.ndarray
    predictions: np.ndarray | None = None
    version: str = "unknown"

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any]) -> Reference:
        """The reference recorded in an artifact's ``model.json`` (see :mod:`model.artifact`).

        Raises:
            ValueError: The metadata holds no usable ``reference``.
        """
        features = tuple(feature["name"] for feature in metadata["features"])
        reference = metadata.get("reference") or {}
        rows = np.asarray(reference.get("features") or [], dtype=float)
        if rows.ndim != 2 or rows.shape[1] != len(features) or len(rows) < 2:
            raise ValueError(
                f"model.json reference.features must be rows of {len(features)} values {list(features)}, "
                f"got shape {rows.shape}"
            )
        predictions = reference.get("predictions")
        return cls(
            features=features,
            rows=rows,
            predictions=np.asarray(predictions, dtype=float) if predictions else None,
            version=str(metadata.get("version", "unknown")),
        )


@dataclass
class FeatureResult:
    """One feature's (or the prediction's) comparison with the reference.

    Attributes:
        name: Feature name, or ``prediction``.
        test: ``ks`` or ``chi2``.
        statistic: The KS distance or the chi-squared statistic.
        p_value: The test's p-value (before correction).
        psi: Population stability index on reference-decile bins.
        js_distance: Jensen-Shannon distance (base 2, in [0, 1]) on the same bins.
        significant: Whether the test rejects after the multiple-testing correction.
        score: The feature's drift score: ``js_distance`` when ``significant``, else 0.
        drifted: ``score`` above the threshold.
    """

    name: str
    test: str
    statistic: float
    p_value: float
    psi: float
    js_distance: float
    significant: bool
    score: float
    drifted: bool


@dataclass
class DriftResult:
    """The verdict on one window.

    Attributes:
        score: Drift score in [0, 1] (see the module docstring).
        drifted: ``score > threshold``.
        threshold: The threshold used.
        rows: Rows in the window.
        features: Per-feature results, in reference order.
        prediction: The prediction-drift result, when predictions were compared.
        multivariate: The reconstruction-error result (``None`` in results saved before it existed).
    """

    score: float
    drifted: bool
    threshold: float
    rows: int
    features: list[FeatureResult]
    prediction: FeatureResult | None = None
    multivariate: ReconstructionResult | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe form (for the state file and the HTTP API)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DriftResult:
        """The inverse of :meth:`to_dict`."""
        prediction, multivariate = data.get("prediction"), data.get("multivariate")
        return cls(
            score=data["score"],
            drifted=data["drifted"],
            threshold=data["threshold"],
            rows=data["rows"],
            features=[FeatureResult(**item) for item in data["features"]],
            prediction=FeatureResult(**prediction) if prediction else None,
            multivariate=ReconstructionResult(**multivariate) if multivariate else None,
        )


def bin_edges(reference: np.ndarray, bins: int = DEFAULT_BINS) -> np.ndarray:
    """Interior bin edges at the reference's quantiles, repeated edges merged.

    Bins are (e[i-1], e[i]], so a value at an edge (the 0 of a binary feature, the many zeros of ``zn``) falls
    in the bin below it.
    """
    return np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))


def proportions(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Share of ``values`` in each of the ``len(edges) + 1`` bins that ``edges`` cut."""
    counts = np.bincount(np.searchsorted(edges, values, side="left"), minlength=len(edges) + 1)
    return counts / max(counts.sum(), 1)


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index, sum((a - e) * ln(a / e)), with empty bins floored at ``PSI_FLOOR``."""
    expected = np.clip(expected, PSI_FLOOR, None)
    actual = np.clip(actual, PSI_FLOOR, None)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def js_distance(expected: np.ndarray, actual: np.ndarray) -> float:
    """Jensen-Shannon distance in base 2: 0 for equal distributions, 1 for disjoint ones."""
    from scipy.spatial.distance import jensenshannon  # here, so that ``housing --help`` stays quick

    return float(np.nan_to_num(jensenshannon(expected, actual, base=2)))


def load_backend(name: str) -> Backend:
    """The module that builds a backend's tests (:class:`detector.univariate.Backend`).

    Only ``alibi-detect`` imports alibi-detect, here and only when chosen.
    """
    if name == "scipy":
        from detector import univariate

        return univariate
    if name == "alibi-detect":
        from detector import alibi_tests

        return alibi_tests
    raise ValueError(f"stats backend must be one of {BACKENDS}, got {name!r}")


def backend_problem(name: str) -> str | None:
    """Why backend ``name`` cannot run here (unknown, or alibi-detect not installed), else ``None``.

    Checked at start-up, so that an image built without alibi-detect and left at the default backend says what
    to set instead of failing at its first window.
    """
    from importlib.util import find_spec

    if name not in BACKENDS:
        return f"stats backend must be one of {BACKENDS}, got {name!r}"
    if name == "alibi-detect" and find_spec("alibi_detect") is None:
        return (
            "stats backend alibi-detect: alibi-detect is not installed here (the detector-oss install); "
            "choose the scipy backend: STATS_BACKEND=scipy (the detector's --stats_backend, housing drift's "
            "--stats-backend, the chart's detector.statsBackend)"
        )
    return None


class DriftTester:
    """Compares windows with one reference; the per-feature tests are built once, here.

    Args:
        reference: The reference sample.
        threshold: Drift threshold on the score, in [0, 1].
        p_value: Significance level of the tests (the FDR level with ``correction="fdr"``).
        correction: ``fdr`` (Benjamini-Hochberg) or ``bonferroni``, across the continuous features.
        bins: Number of reference-quantile bins for PSI and JS distance.
        backend: Where the KS and chi-squared tests come from: ``alibi-detect`` or ``scipy`` (same decisions).
    """

    def __init__(
        self,
        reference: Reference,
        *,
        threshold: float = DEFAULT_THRESHOLD,
        p_value: float = DEFAULT_P_VALUE,
        correction: str = DEFAULT_CORRECTION,
        bins: int = DEFAULT_BINS,
        backend: str = DEFAULT_BACKEND,
    ) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        if correction not in CORRECTIONS:
            raise ValueError(f"correction must be one of {CORRECTIONS}, got {correction!r}")
        tests = load_backend(backend)
        self.reference = reference
        self.threshold = threshold
        self.backend = backend
        rows = reference.rows
        kinds = [
            FEATURES_BY_NAME[name].kind if name in FEATURES_BY_NAME else "continuous"
            for name in reference.features
        ]
        self.binary = [index for index, kind in enumerate(kinds) if kind == "binary"]
        self.continuous = [index for index, kind in enumerate(kinds) if kind != "binary"]
        self.edges = [bin_edges(rows[:, index], bins) for index in range(rows.shape[1])]
        self.expected = [proportions(rows[:, index], edges) for index, edges in enumerate(self.edges)]
        self.ks: FeatureTest | None = (
            tests.ks_test(rows[:, self.continuous], p_value, correction) if self.continuous else None
        )
        self.chi2: FeatureTest | None = (
            tests.chi2_test(rows[:, self.binary].astype(int), p_value) if self.binary else None
        )
        self.reconstruction = ReconstructionDrift(rows)
        self.prediction_ks: FeatureTest | None = None
        if reference.predictions is not None:
            self.prediction_edges = bin_edges(reference.predictions, bins)
            self.prediction_expected = proportions(reference.predictions, self.prediction_edges)
            # One feature: no correction, the same as Bonferroni over one.
            self.prediction_ks = tests.ks_test(reference.predictions.reshape(-1, 1), p_value, None)

    def test(self, rows: np.ndarray, predictions: np.ndarray | None = None) -> DriftResult:
        """Compare one window with the reference.

        Args:
            rows: Live inputs, shape [n, n_features] in reference order.
            predictions: The model's predictions for ``rows`` (shape [n]), if known.

        Returns:
            The per-feature results, the drift score and the verdict.
        """
        rows = np.asarray(rows, dtype=float)
        if rows.ndim != 2 or rows.shape[1] != len(self.reference.features) or len(rows) == 0:
            raise ValueError(f"rows must have shape [n, {len(self.reference.features)}], got {rows.shape}")
        tests: dict[int, tuple[str, Outcome, int]] = {}
        for name, test, columns, window in (
            ("ks", self.ks, self.continuous, rows[:, self.continuous]),
            ("chi2", self.chi2, self.binary, rows[:, self.binary].astype(int)),
        ):
            if test is not None:
                outcome = test.test(window)
                tests.update({index: (name, outcome, position) for position, index in enumerate(columns)})
        features = []
        for index, name in enumerate(self.reference.features):
            test_name, outcome, position = tests[index]
            actual = proportions(rows[:, index], self.edges[index])
            features.append(self._feature(name, test_name, outcome, position, self.expected[index], actual))
        score = max((feature.score for feature in features), default=0.0)
        multivariate = self.reconstruction.test(rows)
        return DriftResult(
            score=score,
            drifted=score > self.threshold or multivariate.drifted,
            threshold=self.threshold,
            rows=len(rows),
            features=features,
            prediction=self._test_predictions(predictions),
            multivariate=multivariate,
        )

    def _feature(
        self, name: str, test: str, outcome: Outcome, position: int, expected: np.ndarray, actual: np.ndarray
    ) -> FeatureResult:
        """One feature's result: its test's verdict, PSI and JS distance, and its drift score."""
        js = js_distance(expected, actual)
        significant = bool(outcome.significant[position])
        return FeatureResult(
            name=name,
            test=test,
            statistic=float(outcome.statistics[position]),
            p_value=float(outcome.p_values[position]),
            psi=psi(expected, actual),
            js_distance=js,
            significant=significant,
            score=js if significant else 0.0,
            drifted=significant and js > self.threshold,
        )

    def _test_predictions(self, predictions: np.ndarray | None) -> FeatureResult | None:
        if self.prediction_ks is None or predictions is None or len(predictions) == 0:
            return None
        values = np.asarray(predictions, dtype=float).reshape(-1)
        outcome = self.prediction_ks.test(values.reshape(-1, 1))
        actual = proportions(values, self.prediction_edges)
        return self._feature("prediction", "ks", outcome, 0, self.prediction_expected, actual)


def summarize(result: DriftResult) -> str:
    """A fixed-width table of the per-feature results and the verdict (for the CLI and logs)."""
    lines = [f"{'feature':<12} {'test':<5} {'p-value':>9} {'PSI':>8} {'JS dist':>8}  drifted"]
    for item in [*result.features, *([result.prediction] if result.prediction else [])]:
        flag = "YES" if item.drifted else ("significant" if item.significant else "no")
        figures = f"{item.p_value:>9.2e} {item.psi:>8.3f} {item.js_distance:>8.3f}"
        lines.append(f"{item.name:<12} {item.test:<5} {figures}  {flag}")
    if result.multivariate is not None:
        mv = result.multivariate
        lines.append(
            f"{'joint (PCA)':<12} {'recon':<5} error {mv.error:.3f} vs {mv.expected:.3f} "
            f"(threshold {mv.threshold:.3f}, z {mv.z_score:+.1f})  {'YES' if mv.drifted else 'no'}"
        )
    verdict = "DRIFT" if result.drifted else "no drift"
    lines.append(
        f"drift score {result.score:.3f} (threshold {result.threshold:g}, {result.rows} rows): {verdict}"
    )
    return "\n".join(lines)
