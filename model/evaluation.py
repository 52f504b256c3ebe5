"""Evaluation library: repeated K-fold and nested cross-validation, permutation importance, timing, the gate.

Nothing here reads files or talks to MLflow: functions take arrays and estimators and return numbers, so the
same code scores a candidate during training (:mod:`model.train`) and a saved artifact in ``housing evaluate``
(:mod:`model.evaluate_cli`, the command line).
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.base import clone
from sklearn.inspection import permutation_importance
from sklearn.metrics import mean_absolute_error, r2_score, root_mean_squared_error
from sklearn.model_selection import GridSearchCV, KFold, RepeatedKFold
from tqdm import tqdm

from model.pipeline import FAST_GBR_PARAMS, GBR_GRID, GBR_PARAMS
from model.schema import TARGET

if TYPE_CHECKING:
    import pandas as pd

    from model.artifact import ModelArtifact

log = logging.getLogger(__name__)

METRICS = ("rmse", "mae", "r2")


@dataclass(frozen=True)
class Plan:
    """How much evaluation a training run does; the defaults are the full run (a few minutes on 2 cores).

    Attributes:
        splits: Folds of the repeated K-fold that scores every candidate (and the outer loop of nested CV).
        repeats: Repeats of that K-fold.
        importance_repeats: Shuffles per feature for permutation importance (0: none).
        nested_repeats: Repeats of the outer K-fold of nested CV (0: no nested CV and no tuning).
        inner_splits: Folds of the inner grid search.
        grid: Gradient boosting settings the inner search tries, by plain name (e.g. ``max_depth``).
        gbr_params: Gradient boosting settings before tuning.
    """

    splits: int = 5
    repeats: int = 3
    importance_repeats: int = 5
    nested_repeats: int = 2
    inner_splits: int = 3
    grid: dict[str, list[Any]] = field(default_factory=lambda: dict(GBR_GRID))
    gbr_params: dict[str, Any] = field(default_factory=lambda: dict(GBR_PARAMS))

    @classmethod
    def fast(cls) -> Plan:
        """Seconds instead of minutes: 3 folds, fewer and larger boosting steps, no nested CV."""
        return cls(
            splits=3,
            repeats=1,
            importance_repeats=2,
            nested_repeats=0,
            grid={},
            gbr_params=dict(FAST_GBR_PARAMS),
        )

    def describe(self) -> str:
        """The evaluation in words, e.g. for the run's parameters."""
        text = f"{self.repeats}x{self.splits}-fold CV"
        if self.nested_repeats and self.grid:
            settings = 1
            for values in self.grid.values():
                settings *= len(values)
            text += (
                f"; nested CV {self.nested_repeats}x{self.splits}-fold outer, {self.inner_splits}-fold inner"
                f" grid search over {settings} settings ({', '.join(self.grid)})"
            )
        return text


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """RMSE and MAE (USD 1000s) and R² of predictions against the truth."""
    return {
        "rmse": float(root_mean_squared_error(y_true, y_pred)),
        "mae": float(mean_absolute_error(y_true, y_pred)),
        "r2": float(r2_score(y_true, y_pred)),
    }


def score_artifact(artifact: ModelArtifact, frame: pd.DataFrame) -> dict[str, float]:
    """RMSE, MAE and R² of a loaded artifact on a validated data frame.

    Args:
        artifact: A loaded artifact (see :func:`model.artifact.load_artifact`).
        frame: Data from :func:`model.dataset.load_dataset` (all features and the target).

    Returns:
        ``rmse``, ``mae`` (USD 1000s) and ``r2``.
    """
    x = frame[artifact.feature_names].to_numpy(dtype="float64")
    return regression_metrics(frame[TARGET].to_numpy(dtype="float64"), artifact.pipeline.predict(x))


@dataclass
class CVResult:
    """Scores of one model over the folds of a cross-validation.

    Attributes:
        folds: Per-fold metrics (``rmse``, ``mae``, ``r2``) on the held-out part.
        fit_seconds: Per-fold training time (including any inner search).
        oof_predictions: Held-out predictions per row, averaged over repeats (NaN for rows never held out).
        importances: Permutation importance per feature (mean increase of RMSE when the column is shuffled,
            over folds), when requested.
        chosen_params: The hyper-parameters the inner search picked in each outer fold (nested CV only).
    """

    folds: list[dict[str, float]] = field(default_factory=list)
    fit_seconds: list[float] = field(default_factory=list)
    oof_predictions: np.ndarray | None = None
    importances: dict[str, float] = field(default_factory=dict)
    chosen_params: list[dict[str, Any]] = field(default_factory=list)

    def mean(self, metric: str) -> float:
        """Mean of a metric over folds."""
        return statistics.fmean(fold[metric] for fold in self.folds)

    def std(self, metric: str) -> float:
        """Sample standard deviation of a metric over folds (0 for a single fold)."""
        values = [fold[metric] for fold in self.folds]
        return statistics.stdev(values) if len(values) > 1 else 0.0

    def summary(self, prefix: str) -> dict[str, float]:
        """Flat metrics: ``{prefix}_rmse_mean``, ``{prefix}_rmse_std``, ..., ``{prefix}_fit_seconds_mean``."""
        figures: dict[str, float] = {}
        for metric in METRICS:
            figures[f"{prefix}_{metric}_mean"] = self.mean(metric)
            figures[f"{prefix}_{metric}_std"] = self.std(metric)
        figures[f"{prefix}_fit_seconds_mean"] = statistics.fmean(self.fit_seconds)
        return figures


def repeated_kfold(n_splits: int, n_repeats: int, seed: int) -> RepeatedKFold:
    """The outer splitter every candidate is scored with (same seed, same folds for all of them)."""
    return RepeatedKFold(n_splits=n_splits, n_repeats=n_repeats, random_state=seed)


def cross_validate(
    estimator: Any,
    x: np.ndarray,
    y: np.ndarray,
    cv: Any,
    *,
    feature_names: Sequence[str] | None = None,
    importance_repeats: int = 0,
    seed: int = 42,
    description: str = "cv",
    progress: bool = True,
) -> CVResult:
    """Fit a fresh copy of ``estimator`` on each training part and score it on the held-out part.

    Args:
        estimator: An unfitted scikit-learn estimator; a ``GridSearchCV`` makes this nested CV.
        x: Features, shape [N, n_features].
        y: Target, shape [N].
        cv: A splitter (e.g. :func:`repeated_kfold`).
        feature_names: Column names, needed for permutation importance.
        importance_repeats: Shuffles per feature for permutation importance on each held-out part (0: skip).
        seed: Seed of the permutation shuffles.
        description: Label of the progress bar and log lines.
        progress: Show a progress bar on standard error.

    Returns:
        Per-fold scores, held-out predictions and, if asked, importances.
    """
    result = CVResult()
    predictions = np.zeros(len(y))
    counts = np.zeros(len(y))
    importances: list[np.ndarray] = []
    splits = list(cv.split(x, y))
    for train, test in tqdm(splits, desc=description, unit="fold", disable=not progress, leave=False):
        model = clone(estimator)
        started = time.perf_counter()
        model.fit(x[train], y[train])
        result.fit_seconds.append(time.perf_counter() - started)
        predicted = model.predict(x[test])
        predictions[test] += predicted
        counts[test] += 1
        result.folds.append(regression_metrics(y[test], predicted))
        if isinstance(model, GridSearchCV):
            result.chosen_params.append(dict(model.best_params_))
        if importance_repeats:
            scores = permutation_importance(
                model,
                x[test],
                y[test],
                scoring="neg_root_mean_squared_error",
                n_repeats=importance_repeats,
                random_state=seed,
            )
            importances.append(scores.importances_mean)
    with np.errstate(invalid="ignore"):
        result.oof_predictions = predictions / counts
    if importances and feature_names is not None:
        means = np.mean(importances, axis=0)
        result.importances = {name: float(value) for name, value in zip(feature_names, means, strict=True)}
    log.info(
        "%s: RMSE %.3f ± %.3f, MAE %.3f, R² %.3f over %d folds",
        description,
        result.mean("rmse"),
        result.std("rmse"),
        result.mean("mae"),
        result.mean("r2"),
        len(result.folds),
    )
    return result


def tuned(estimator: Any, grid: dict[str, list[Any]], seed: int, inner_splits: int = 3) -> GridSearchCV:
    """Wrap an estimator in the inner hyper-parameter search of nested CV (minimising RMSE).

    Args:
        estimator: The unfitted pipeline.
        grid: Parameter grid in pipeline notation (``step__param``).
        seed: Seed of the inner shuffled K-fold.
        inner_splits: Folds of the inner search.
    """
    return GridSearchCV(
        estimator,
        grid,
        cv=KFold(n_splits=inner_splits, shuffle=True, random_state=seed),
        scoring="neg_root_mean_squared_error",
        n_jobs=1,
    )


def timed_fit(estimator: Any, x: np.ndarray, y: np.ndarray) -> tuple[Any, dict[str, float]]:
    """Fit ``estimator`` and time it.

    Returns:
        The fitted estimator, ``fit_seconds`` (wall clock) and ``fit_cpu_seconds`` (this process's CPU
        time, which other work on a shared machine does not inflate).
    """
    wall, cpu = time.perf_counter(), time.process_time()
    estimator.fit(x, y)
    return estimator, {
        "fit_seconds": time.perf_counter() - wall,
        "fit_cpu_seconds": time.process_time() - cpu,
    }


def predict_latency(
    predict: Callable[[np.ndarray], Any], row: np.ndarray, repeats: int = 300
) -> dict[str, float]:
    """In-process latency of a predict call on a single row.

    Args:
        predict: The call to time, e.g. ``estimator.predict`` or the predictor's own path.
        row: One row of features, shape [1, n_features].
        repeats: Timed calls (after a few warm-up calls).

    Returns:
        ``predict_latency_p50_us`` and ``predict_latency_p99_us`` (wall clock) and ``predict_cpu_p50_us``
        (CPU time of this thread, which other work on a shared machine does not inflate), in microseconds.
    """
    for _ in range(10):
        predict(row)
    wall, cpu = [], []
    for _ in range(repeats):
        started, started_cpu = time.perf_counter_ns(), time.thread_time_ns()
        predict(row)
        cpu.append((time.thread_time_ns() - started_cpu) / 1000)
        wall.append((time.perf_counter_ns() - started) / 1000)
    wall.sort()
    return {
        "predict_latency_p50_us": wall[len(wall) // 2],
        "predict_latency_p99_us": wall[min(len(wall) - 1, int(len(wall) * 0.99))],
        "predict_cpu_p50_us": sorted(cpu)[len(cpu) // 2],
    }


@dataclass(frozen=True)
class QualityGate:
    """The minimum quality a model must show before it is published (the original system's promise).

    Attributes:
        min_r2: Smallest acceptable R².
        max_mae: Largest acceptable MAE (USD 1000s).
        max_rmse: Largest acceptable RMSE (USD 1000s).
    """

    min_r2: float = 0.80
    max_mae: float = 3.0
    max_rmse: float = 4.0

    def describe(self) -> str:
        """The thresholds as one phrase."""
        return f"R² >= {self.min_r2}, MAE <= {self.max_mae}, RMSE <= {self.max_rmse}"

    def failures(self, figures: dict[str, float]) -> list[str]:
        """The thresholds that ``figures`` (``rmse``, ``mae``, ``r2``) break; empty when the model passes."""
        problems = []
        if figures["r2"] < self.min_r2:
            problems.append(f"R² {figures['r2']:.3f} < {self.min_r2}")
        if figures["mae"] > self.max_mae:
            problems.append(f"MAE {figures['mae']:.3f} > {self.max_mae}")
        if figures["rmse"] > self.max_rmse:
            problems.append(f"RMSE {figures['rmse']:.3f} > {self.max_rmse}")
        return problems


def format_table(rows: Iterable[tuple[str, str]]) -> str:
    """Two aligned columns, for the figures printed at the end of a command."""
    rows = list(rows)
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
