"""Evaluation library: repeated K-fold and nested cross-validation, permutation importance, timing, the gate.

Nothing here reads files or talks to MLflow: functions take arrays and estimators and return numbers, so the
same code scores a candidate during training (:mod:`model.train`) and a saved artifact in ``housing evaluate``
(:mod:`model.evaluate_cli`, the command line).
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.base import clone
from sklearn.inspection import permutation_importance
from sklearn.metrics import mean_absolute_error, r2_score, root_mean_squared_error
from sklearn.model_selection import KFold, RepeatedKFold
from tqdm import tqdm

from model.pipeline import FAST_GBR_PARAMS, GBR_GRID, GBR_PARAMS
from model.schema import TARGET

if TYPE_CHECKING:
    import pandas as pd

    from model.artifact import ModelArtifact

log = logging.getLogger(__name__)

METRICS = ("rmse", "mae", "r2")
COVERAGE = "interval_coverage_90"
"""The held-out coverage of the shipped 90% intervals (:mod:`model.coverage`): the quality gate judges it."""


@dataclass(frozen=True)
class Plan:
    """How much evaluation a training run does; the defaults are the full run (1-2 minutes on 2 cores).

    Attributes:
        splits: Folds of the repeated K-fold that scores every candidate (and the outer loop of nested CV).
        repeats: Repeats of that K-fold.
        importance_repeats: Shuffles per feature for permutation importance (0: none).
        nested_repeats: Repeats of the outer K-fold of nested CV (0: no nested CV and no tuning; the outer
            folds are then the candidates' own).
        inner_splits: Folds of the inner grid search (and of the out-of-fold predictions that calibrate the
            intervals, with or without a grid).
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
    jobs: int = 1,
) -> CVResult:
    """Fit a fresh copy of ``estimator`` on each training part and score it on the held-out part.

    Args:
        estimator: An unfitted scikit-learn estimator.
        x: Features, shape [N, n_features].
        y: Target, shape [N].
        cv: A splitter (e.g. :func:`repeated_kfold`).
        feature_names: Column names, needed for permutation importance.
        importance_repeats: Shuffles per feature for permutation importance on each held-out part (0: skip).
        seed: Seed of the permutation shuffles.
        description: Label of the progress bar and log lines.
        progress: Show a progress bar on standard error.
        jobs: Processes the folds run in (see :func:`run_tasks`).

    Returns:
        Per-fold scores, held-out predictions and, if asked, importances.
    """
    tasks = [
        Task(
            score_fold,
            (estimator, x, y, train, test),
            {"importance_repeats": importance_repeats, "seed": seed},
        )
        for train, test in cv.split(x, y)
    ]
    return collect(run_tasks(tasks, jobs, description, progress), len(y), feature_names, description)


@dataclass(frozen=True)
class Task:
    """One independent piece of a training run: a module-level function and its arguments (picklable)."""

    function: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, which a container's cpuset narrows)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run_tasks(tasks: Sequence[Task], jobs: int, description: str, progress: bool) -> list[Any]:
    """Run independent tasks, in ``jobs`` worker processes when more than one; their results, in order.

    Every task seeds its own estimators and splits, so the results are the same whatever ``jobs`` is (the
    tests check it). Gradient boosting is single-threaded: with two cores, two processes (joblib's loky
    backend, whose workers stay up between calls) do twice the work of one; threads would share one
    interpreter lock. Give the longest tasks first: they are handed out in order.
    """
    bar = tqdm(total=len(tasks), desc=description, unit="task", disable=not progress, leave=False)
    if jobs <= 1 or len(tasks) <= 1:
        results = []
        for task in tasks:
            results.append(_run_checked_data(task.function, task.args, task.kwargs))
            bar.update()
    else:
        from joblib import Parallel, delayed

        parallel = Parallel(n_jobs=min(jobs, len(tasks)), return_as="generator")
        results = []
        calls = (delayed(_run_checked_data)(task.function, task.args, task.kwargs) for task in tasks)
        for result in parallel(calls):
            results.append(result)
            bar.update()
    bar.close()
    return results


def _run_checked_data(function: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``function(*args, **kwargs)`` without scikit-learn's per-call checks of data already validated.

    The rows were checked once (:func:`model.dataset.load_dataset`: finite, in their domains) and the
    estimators' settings are the project's own, yet scikit-learn re-checks both in every one of the 500 trees
    of every fit and in every ``predict`` of permutation importance. Skipping those checks (as the serving
    path does, :func:`model.pipeline.predict_validated`) cut a fit's CPU time by 10-15% here (0.38 -> 0.33 s)
    with predictions equal to the last bit; the tests compare the figures with and without workers.
    """
    import sklearn

    with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
        return function(*args, **kwargs)


@dataclass
class FoldResult:
    """What one outer fold gives back: held-out predictions and scores (and, in nested CV, the inner choice).

    Attributes:
        test: The held-out rows.
        predictions: The model's predictions for them (USD 1000s).
        metrics: ``rmse``, ``mae``, ``r2`` on them.
        fit_seconds: Training time, any inner search included.
        importances: Permutation importance per feature, when asked.
        chosen_params: The inner search's choice (nested CV only).
        bounds: Interval bounds for the held-out rows per method: ``(lower, upper)``, each [n_test, n_levels].
    """

    test: np.ndarray
    predictions: np.ndarray
    metrics: dict[str, float]
    fit_seconds: float
    importances: np.ndarray | None = None
    chosen_params: dict[str, Any] | None = None
    bounds: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


def score_fold(
    estimator: Any,
    x: np.ndarray,
    y: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    *,
    grid: dict[str, list[Any]] | None = None,
    inner_splits: int = 0,
    importance_repeats: int = 0,
    seed: int = 42,
    features: Sequence[str] = (),
    interval_methods: Sequence[str] = (),
) -> FoldResult:
    """One fold of a CV: fit on ``train`` rows, score on ``test`` rows (with an inner search, an outer fold).

    With ``inner_splits``, the model is the inner search's choice (:func:`search`): an outer fold of nested
    CV, whose intervals are evaluated too.

    Args:
        estimator: The unfitted pipeline.
        x: Features, shape [N, n_features].
        y: Target, shape [N].
        train: The fold's training rows.
        test: Its held-out rows.
        grid: Settings the inner search tries on ``train`` rows (see :func:`search`); empty: one setting.
        inner_splits: Folds of that search; 0 fits ``estimator`` on ``train`` rows as it is, without one.
        importance_repeats: Shuffles per feature for permutation importance on the held-out rows (0: skip).
        seed: Seed of the inner folds and the permutation shuffles.
        features: Column names (for the intervals).
        interval_methods: Interval methods to calibrate on ``train`` rows alone (their out-of-fold
            predictions from the inner search) and apply to ``test`` rows
            (:func:`model.coverage.fold_bounds`); needs an inner search.
    """
    started = time.perf_counter()
    inner = None
    if inner_splits:
        inner = search(estimator, grid or {}, x[train], y[train], inner_splits=inner_splits, seed=seed)
        model = inner.model
    else:
        model = clone(estimator).fit(x[train], y[train])
    seconds = time.perf_counter() - started
    predicted = model.predict(x[test])
    result = FoldResult(test, predicted, regression_metrics(y[test], predicted), seconds)
    if inner is not None and grid:
        result.chosen_params = inner.best_params
    if inner is not None and interval_methods:
        from model import coverage

        result.bounds = coverage.fold_bounds(
            model,
            x[train],
            y[train],
            inner.oof_predictions,
            x[test],
            predicted,
            features,
            methods=interval_methods,
            seed=seed,
        )
    if importance_repeats:
        result.importances = permutation_importance(
            model,
            x[test],
            y[test],
            scoring="neg_root_mean_squared_error",
            n_repeats=importance_repeats,
            random_state=seed,
        ).importances_mean
    return result


@dataclass
class Search:
    """An inner hyper-parameter search, fitted: the choice, its out-of-fold predictions and the refit model.

    Attributes:
        best_params: The grid point of lowest mean inner RMSE (the first of equals, as ``GridSearchCV``).
        oof_predictions: Each row's prediction by the chosen setting's model of the inner fold that held it:
            the residuals a model makes on rows it did not see, which calibrate the intervals
            (:func:`model.intervals.calibrate`) at no extra fit.
        model: The chosen setting refitted on every row.
        fit_seconds: Wall-clock seconds of that refit.
        fit_cpu_seconds: CPU seconds of that refit (which other work on a shared machine does not inflate).
        search_seconds: Wall-clock seconds of the whole search, refit included.
    """

    best_params: dict[str, Any]
    oof_predictions: np.ndarray
    model: Any
    fit_seconds: float
    fit_cpu_seconds: float
    search_seconds: float


def search(
    estimator: Any, grid: dict[str, list[Any]], x: np.ndarray, y: np.ndarray, *, inner_splits: int, seed: int
) -> Search:
    """The inner loop of nested CV: the grid point with the lowest mean RMSE over shuffled K folds, refitted.

    The choice is ``GridSearchCV``'s exactly (same grid order, folds, scores and tie-break), but the held-out
    predictions are kept: they are the out-of-fold residuals the intervals are calibrated on, which
    ``GridSearchCV`` computes and throws away. An empty grid is one setting: its out-of-fold predictions and
    refit.

    Args:
        estimator: The unfitted pipeline.
        grid: Settings to try, in pipeline notation (``step__param``); may be empty.
        x: Features, shape [N, n_features].
        y: Target, shape [N].
        inner_splits: Folds of the search.
        seed: Seed of the shuffled K-fold.
    """
    from sklearn.model_selection import ParameterGrid

    started = time.perf_counter()
    folds = list(KFold(n_splits=inner_splits, shuffle=True, random_state=seed).split(x))
    settings = list(ParameterGrid(grid))
    means, predictions = [], []
    for setting in settings:
        predicted = np.empty(len(y))
        scores = []
        for train, held_out in folds:
            model = clone(estimator).set_params(**setting).fit(x[train], y[train])
            predicted[held_out] = model.predict(x[held_out])
            scores.append(-root_mean_squared_error(y[held_out], predicted[held_out]))
        means.append(np.average(scores))
        predictions.append(predicted)
    best = int(np.argmax(means))
    wall, cpu = time.perf_counter(), time.process_time()
    model = clone(estimator).set_params(**settings[best]).fit(x, y)
    now = time.perf_counter()
    return Search(
        dict(settings[best]), predictions[best], model, now - wall, time.process_time() - cpu, now - started
    )


def collect(
    folds: Sequence[FoldResult],
    n_rows: int,
    feature_names: Sequence[str] | None = None,
    description: str = "cv",
) -> CVResult:
    """The :class:`CVResult` of a cross-validation's folds (held-out predictions averaged over repeats)."""
    result = CVResult()
    predictions, counts = np.zeros(n_rows), np.zeros(n_rows)
    for fold in folds:
        predictions[fold.test] += fold.predictions
        counts[fold.test] += 1
        result.folds.append(fold.metrics)
        result.fit_seconds.append(fold.fit_seconds)
        if fold.chosen_params is not None:
            result.chosen_params.append(fold.chosen_params)
    with np.errstate(invalid="ignore"):
        result.oof_predictions = predictions / counts
    importances = [fold.importances for fold in folds if fold.importances is not None]
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
        coverage: The range the held-out coverage of the 90% intervals must fall in: an interval that covers
            less is overconfident, one that covers more is wider than it needs to be.
    """

    min_r2: float = 0.80
    max_mae: float = 3.0
    max_rmse: float = 4.0
    coverage: tuple[float, float] = (0.85, 0.95)

    def describe(self) -> str:
        """The thresholds as one phrase."""
        low, high = self.coverage
        return (
            f"R² >= {self.min_r2}, MAE <= {self.max_mae}, RMSE <= {self.max_rmse}, "
            f"90% interval coverage in [{low:.0%}, {high:.0%}]"
        )

    def failures(self, figures: dict[str, float]) -> list[str]:
        """The thresholds that ``figures`` break; empty when the model passes.

        Args:
            figures: ``rmse``, ``mae``, ``r2``, and ``interval_coverage_90`` when the model has intervals.
        """
        problems = []
        if figures["r2"] < self.min_r2:
            problems.append(f"R² {figures['r2']:.3f} < {self.min_r2}")
        if figures["mae"] > self.max_mae:
            problems.append(f"MAE {figures['mae']:.3f} > {self.max_mae}")
        if figures["rmse"] > self.max_rmse:
            problems.append(f"RMSE {figures['rmse']:.3f} > {self.max_rmse}")
        covered, (low, high) = figures.get(COVERAGE), self.coverage
        if covered is not None and not low <= covered <= high:
            problems.append(f"90% interval coverage {covered:.1%} outside [{low:.0%}, {high:.0%}]")
        return problems


def format_table(rows: Iterable[tuple[str, str]]) -> str:
    """Two aligned columns, for the figures printed at the end of a command."""
    rows = list(rows)
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
