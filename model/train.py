"""Training library: compare candidates, evaluate the shipped model honestly, fit it, describe its artifact.

The steps stay apart, scikit-learn style: :func:`model.dataset.load_dataset` reads and validates the data,
:func:`train_model` evaluates and fits (no I/O), :func:`compile_model` adds the compiled serving form
(ONNX, :mod:`model.compiled`) once it has checked that it predicts as scikit-learn does,
:func:`artifact_metadata` and :func:`model.artifact.save_artifact` persist, and :mod:`model.tracking` logs
to MLflow. :func:`build_artifact` chains them without MLflow, for tests and notebooks. Progress is reported
only through logging and one progress bar (``progress=False`` turns it off).

**What a full run costs, and why** (2 shared cores; ``housing train``, measured beside the code it replaced,
figures in docs/training.md): the work is about 190 fits of the boosted trees, and every one is
independent of the others once the folds are drawn. So the run is one list of tasks (the final search, each
outer fold of the nested CV with its inner search, each fold of each candidate and of the cost of ``b``) that
:func:`model.evaluation.run_tasks` spreads over the usable cores, longest first. Nothing is fitted twice: the
final model is the final search's refit (it used to be fitted again), and the intervals are calibrated on
the out-of-fold predictions the inner searches make anyway (``GridSearchCV`` threw them away): no extra fit.
The results are those of one process, fold for fold: the same seeds, folds, searches and choices.

The command line, ``housing train`` (arguments, the quality gate, the printed figures), is
:mod:`model.train_cli`; where and how the code was built is recorded by :mod:`model.provenance`.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from model import compiled, coverage, dle, evaluation, importance, intervals, outliers, pipeline
from model.artifact import save_artifact
from model.dataset import load_dataset
from model.evaluation import CVResult, Plan, Task
from model.intervals import Intervals
from model.paths import MODEL_NAME
from model.provenance import git_commit, library_versions
from model.schema import DEFAULT_FEATURES, TARGET, TARGET_DESCRIPTION, TARGET_UNIT, select

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["TrainingResult", "artifact_metadata", "build_artifact", "compile_model", "train_model"]

log = logging.getLogger(__name__)

REFERENCE_ROWS = 300
QUANTILE_LEVELS = (0.0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0)


@dataclass
class TrainingResult:
    """Everything a run learned: the fitted pipeline and the figures that justify it.

    Attributes:
        pipeline: The final model, fitted on all rows.
        candidate: Name of the shipped candidate (see :func:`model.pipeline.make_candidate`).
        features: Its inputs, in model order.
        params: Settings of the run and the fitted estimator (JSON-safe).
        metrics: Flat figures: headline ``rmse``/``mae``/``r2`` (and ``_std``), per-candidate CV, the cost of
            dropping ``b``, permutation importances, fit time and predict latency.
        x: The training features, shape [N, n_features].
        y: The training target.
        evaluation: The CV result behind the headline figures (nested CV in a full run).
        comparison: The repeated K-fold result of every candidate, by name.
        compiled: The serialised ONNX form of ``pipeline`` (see :func:`compile_model`), once compiled.
        global_importance: Mean |TreeSHAP contribution| per feature on the training rows, largest first
            (:mod:`model.importance`; empty for a model that is not a tree ensemble).
        dle: The loss estimator's ``dle.json`` (:mod:`model.dle`): fitted on ``evaluation``'s out-of-fold
            residuals, it lets the detector estimate MAE and RMSE before labels arrive.
        outliers: The outlier density's ``outliers.json`` (:mod:`model.outliers`): fitted on ``x``, it lets
            the detector flag houses unlike any seen in training.
        intervals: The calibrated prediction intervals (:mod:`model.intervals`), ``intervals.json``.
        held_out_intervals: The shipped method's bounds of the outer folds' held-out rows, as the coverage
            figures measured them (for plots).
        strata: Each row's price and ``lstat`` quintile (:func:`model.coverage.strata`).
    """

    pipeline: Any
    candidate: str
    features: tuple[str, ...]
    params: dict[str, Any]
    metrics: dict[str, float]
    x: np.ndarray
    y: np.ndarray
    evaluation: CVResult
    comparison: dict[str, CVResult] = field(default_factory=dict)
    compiled: bytes | None = None
    global_importance: dict[str, float] = field(default_factory=dict)
    dle: bytes | None = None
    outliers: bytes | None = None
    intervals: Intervals | None = None
    held_out_intervals: coverage.HeldOut | None = None
    strata: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def headline(self) -> dict[str, float]:
        """The figures the quality gate judges: ``rmse``, ``mae``, ``r2`` and ``interval_coverage_90``."""
        keys = ("rmse", "mae", "r2", evaluation.COVERAGE)
        return {key: self.metrics[key] for key in keys if key in self.metrics}

    @property
    def importances(self) -> dict[str, float]:
        """Permutation importance of each feature for the shipped candidate, measured on held-out folds."""
        return self.comparison[self.candidate].importances


def features_and_target(frame: pd.DataFrame, features: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The feature matrix (columns in ``features`` order) and target vector of a validated data frame."""
    select(features)
    return frame[list(features)].to_numpy(dtype="float64"), frame[TARGET].to_numpy(dtype="float64")


def train_model(
    frame: pd.DataFrame,
    features: Sequence[str] = DEFAULT_FEATURES,
    *,
    candidate: str | None = None,
    fast: bool = False,
    seed: int = 42,
    progress: bool = True,
    plan: Plan | None = None,
    jobs: int | None = None,
    compare_intervals: bool = False,
) -> TrainingResult:
    """Compare the candidates, evaluate the shipped one and its intervals, measure the cost of ``b``, fit it.

    Every candidate is scored by the same repeated K-fold. In a full run the shipped candidate is also scored
    by nested CV (hyper-parameters chosen by an inner grid search inside each outer fold), which gives the
    headline figures, and the final model is tuned by the same search on all rows. A fast run uses fewer folds
    and fixed settings: its outer loop is the candidates' folds, its headline figures are plain CV.

    The intervals are evaluated in the same outer folds: each method is calibrated on the fold's training
    rows, from the out-of-fold predictions its inner search made, and bounds the held-out rows
    (:mod:`model.coverage`). The shipped intervals are calibrated the same way on the final search's
    out-of-fold predictions on all rows (:func:`model.intervals.calibrate`).

    All of it is a list of independent tasks (a fold, a search), run in ``jobs`` processes: the same results
    for any ``jobs``, since every task seeds its own splits and estimators.

    Args:
        frame: Validated data (see :func:`model.dataset.load_dataset`).
        features: Inputs of the model, in order.
        candidate: The model family to ship; defaults to :data:`model.pipeline.DEFAULT_CANDIDATE`.
        fast: Seconds instead of minutes (tests, smoke runs).
        seed: Seed of every split, shuffle and estimator: same seed and data, same model and figures.
        progress: Show a progress bar on standard error.
        plan: How much evaluation to do; defaults to the full or fast :class:`model.evaluation.Plan`.
        jobs: Worker processes; default: one per usable core in a full run, none (this process) in a fast one.
        compare_intervals: Also compare MAPIE's CV+ and CQR (:data:`model.coverage.MAPIE_METHODS`; minutes).

    Returns:
        The fitted pipeline with its figures and its calibrated intervals.
    """
    features = tuple(features)
    candidate = candidate or pipeline.DEFAULT_CANDIDATE
    plan = plan or (Plan.fast() if fast else Plan())
    jobs = jobs or (1 if fast else evaluation.usable_cores())
    x, y = features_and_target(frame, features)
    gbr_params = plan.gbr_params
    grid = pipeline.param_grid(candidate, plan.grid)
    nested = bool(plan.nested_repeats and grid)
    shipped = pipeline.make_candidate(candidate, seed=seed, params=gbr_params)
    cv = evaluation.repeated_kfold(plan.splits, plan.repeats, seed)
    splits = list(cv.split(x, y))
    methods = (*intervals.METHODS, *(coverage.MAPIE_METHODS if compare_intervals else ()))
    # An outer fold searches its training rows (one setting without nested CV) and evaluates the intervals.
    outer_options = {
        "inner_splits": plan.inner_splits,
        "seed": seed,
        "features": features,
        "interval_methods": methods,
    }

    # The longest tasks first: the final search, the nested CV's outer folds, then the candidates' folds (and
    # the outlier density, which needs only the rows).
    search_options = {"inner_splits": plan.inner_splits, "seed": seed}
    tasks = [
        Task(search_and_explain, (shipped, grid if nested else {}, x, y, features), search_options),
        Task(outliers.fit, (x, features, seed)),
    ]
    outer: list[tuple[np.ndarray, np.ndarray]] = []
    if nested:
        outer = list(evaluation.repeated_kfold(plan.splits, plan.nested_repeats, seed).split(x, y))
        for train, test in outer:
            tasks.append(
                Task(evaluation.score_fold, (shipped, x, y, train, test), {**outer_options, "grid": grid})
            )
    families = [*[family for family in pipeline.CANDIDATES if family != candidate], candidate]
    for name in families:
        model = pipeline.make_candidate(name, seed=seed, params=gbr_params)
        options: dict[str, Any] = {"seed": seed}
        if name == candidate:  # without nested CV, its folds are the outer folds
            options = {
                **options,
                "importance_repeats": plan.importance_repeats,
                **({} if nested else outer_options),
            }
        tasks += [Task(evaluation.score_fold, (model, x, y, train, test), options) for train, test in splits]
    b_tasks, finish_b_cost = b_cost_tasks(frame, features, candidate, gbr_params, cv, seed)
    tasks += b_tasks
    log.info("training: %d tasks in %d process%s", len(tasks), jobs, "es" if jobs > 1 else "")
    results = iter(evaluation.run_tasks(tasks, jobs, "training", progress))

    final, explained = next(results)
    density = next(results)
    nested_folds = [next(results) for _ in outer]
    metrics: dict[str, float] = {}
    comparison: dict[str, CVResult] = {}
    folds: dict[str, list[evaluation.FoldResult]] = {}
    for name in families:
        folds[name] = [next(results) for _ in splits]
        comparison[name] = evaluation.collect(folds[name], len(y), features, description=f"cv {name}")
        metrics.update(comparison[name].summary(f"cv_{name}"))
    metrics.update({f"importance_{name}": value for name, value in comparison[candidate].importances.items()})
    metrics.update(finish_b_cost(comparison[candidate], list(results)))

    outer_folds = nested_folds if nested else folds[candidate]
    evaluated = (
        evaluation.collect(outer_folds, len(y), description=f"nested cv {candidate}")
        if nested
        else comparison[candidate]
    )
    if nested:
        metrics.update(evaluated.summary("nested_cv"))
    for metric in evaluation.METRICS:
        metrics[metric] = evaluated.mean(metric)
        metrics[f"{metric}_std"] = evaluated.std(metric)
    quintiles = interval_strata(frame, y)
    interval_metrics, held_out = interval_figures(y, outer_folds, methods, quintiles)
    metrics.update(interval_metrics)
    calibrated = intervals.calibrate(x, y, final.oof_predictions, features, seed=seed)

    best = pipeline.strip_prefix(candidate, final.best_params) if nested else {}
    final_params = {**gbr_params, **best}
    metrics.update({"fit_seconds": final.fit_seconds, "fit_cpu_seconds": final.fit_cpu_seconds})
    model = final.model
    # Timed the way the predictor serves it (rows validated before they reach the pipeline).
    metrics.update(evaluation.predict_latency(functools.partial(pipeline.predict_validated, model), x[:1]))
    params: dict[str, Any] = {
        "candidate": candidate,
        "seed": seed,
        "fast": fast,
        "cv": plan.describe() if grid else f"{plan.repeats}x{plan.splits}-fold CV",
        "n_rows": len(y),
        "interval_method": calibrated.method,
        **({} if pipeline.booster_prefix(candidate) is None else final_params),
    }
    # Out-of-fold residuals: errors on rows the model did not see, as live rows are (model/dle.py).
    estimator = dle.fit(x, y, evaluated.oof_predictions, features, seed)  # type: ignore[arg-type]
    return TrainingResult(
        model,
        candidate,
        features,
        params,
        metrics,
        x,
        y,
        evaluated,
        comparison,
        global_importance=explained,
        dle=dle.to_bytes(estimator),
        outliers=outliers.to_bytes(density),
        intervals=calibrated,
        held_out_intervals=held_out,
        strata=quintiles,
    )


def search_and_explain(
    estimator: Any,
    grid: dict[str, list[Any]],
    x: np.ndarray,
    y: np.ndarray,
    features: Sequence[str],
    **options: Any,
) -> tuple[evaluation.Search, dict[str, float]]:
    """The final model's search (:func:`model.evaluation.search`), then its TreeSHAP global importance.

    One task, so that the importance is computed in a worker while the other folds run: importing shap
    alone took 3 to 10 s here (it imports numba), which the main process spent after the folds, doing
    nothing else.

    Returns:
        The search, and feature -> mean |TreeSHAP contribution| (empty for a model that is not trees).
    """
    found = evaluation.search(estimator, grid, x, y, **options)
    try:
        explained = importance.global_importance(found.model, x, features)
    except ValueError as error:  # not a tree ensemble (ridge): no TreeSHAP
        log.info("no global importance: %s", error)
        explained = {}
    return found, explained


def interval_strata(frame: pd.DataFrame, y: np.ndarray) -> dict[str, np.ndarray]:
    """Each row's price quintile and ``lstat`` quintile, what coverage is broken down by."""
    columns = {}
    if "lstat" in frame and not frame["lstat"].isna().any():  # archived rows of a model without lstat lack it
        columns["lstat"] = frame["lstat"].to_numpy(dtype="float64")
    return coverage.strata(columns, y)


def interval_figures(
    y: np.ndarray,
    folds: Sequence[evaluation.FoldResult],
    methods: Sequence[str],
    quintiles: dict[str, np.ndarray],
) -> tuple[dict[str, float], coverage.HeldOut | None]:
    """Coverage and width of every method's held-out bounds (:func:`model.coverage.figures`).

    Returns:
        The figures (the shipped method's also as the headline ``interval_*`` ones, which the quality gate
        reads), and the shipped method's held-out bounds.
    """
    sizes = [len(fold.test) for fold in folds]
    figures: dict[str, float] = {}
    shipped = None
    for method in methods:
        if not all(method in fold.bounds for fold in folds):
            continue
        held_out = coverage.HeldOut.pool(
            [(fold.test, fold.predictions, *fold.bounds[method]) for fold in folds]
        )
        figures.update(coverage.figures(f"interval_{method}", y, held_out, sizes, quintiles))
        if method == intervals.SHIPPED:
            figures.update(coverage.figures("interval", y, held_out, sizes, quintiles))
            shipped = held_out
    return figures, shipped


def compile_model(result: TrainingResult) -> TrainingResult:
    """Compile the fitted pipeline (and its intervals) to ONNX, check both forms agree, and time it.

    The parity gate compares both forms, prices and interval bounds, on every training row and on each row
    with one feature at each of its schema edges (:func:`model.compiled.parity_rows`).

    Args:
        result: A trained model (see :func:`train_model`).

    Returns:
        The same result with ``compiled`` set and, in ``metrics``, ``compiled_parity_max_abs_diff`` and
        ``compiled_bounds_parity_max_abs_diff`` (USD 1000s) and the compiled form's one-row predict times
        (``compiled_predict_latency_p50_us``, ...).

    Raises:
        model.compiled.CompileError: The pipeline cannot be compiled, or the two forms differ by more than
            :data:`model.compiled.PARITY_TOLERANCE` on some row (the message says by how much).
    """
    onnx_model = compiled.compile_pipeline(result.pipeline, result.features, result.intervals)
    model = compiled.CompiledModel(onnx_model)
    rows = compiled.parity_rows(result.x, result.features)
    worst, worst_bounds = compiled.check_parity(result.pipeline, model, rows, result.intervals)
    latency = evaluation.predict_latency(model.predict, result.x[:1])
    metrics = {
        **result.metrics,
        "compiled_parity_max_abs_diff": worst,
        **({} if result.intervals is None else {"compiled_bounds_parity_max_abs_diff": worst_bounds}),
        **{f"compiled_{name}": value for name, value in latency.items()},
    }
    log.info(
        "compiled to ONNX: largest difference from scikit-learn %.6f USD 1000s (bounds %.6f)",
        worst,
        worst_bounds,
    )
    return dataclasses.replace(result, compiled=onnx_model, metrics=metrics)


def b_cost_tasks(
    frame: pd.DataFrame,
    features: tuple[str, ...],
    candidate: str,
    gbr_params: dict[str, Any],
    cv: Any,
    seed: int,
) -> tuple[list[Task], Callable[[CVResult, list[Any]], dict[str, float]]]:
    """What leaving out ``b`` costs: the shipped candidate's CV with ``b`` toggled, on ``cv``'s folds.

    Returns:
        The folds to run (see :func:`model.evaluation.run_tasks`), and the function that turns the shipped
        candidate's CV and those folds' results into ``cv_with_b_*`` and ``cv_without_b_*`` means,
        ``b_cost_rmse``/``b_cost_mae`` (how much worse without ``b``, USD 1000s) and ``b_cost_r2`` (R² lost
        without ``b``).
    """
    toggled = tuple(name for name in features if name != "b") if "b" in features else (*features, "b")
    model = pipeline.make_candidate(candidate, seed=seed, params=gbr_params)
    subset = frame[list(toggled)].isna().to_numpy().any()
    if subset:
        # Archived rows (model/archive.py) carry only the served model's inputs: compare on the rows with b.
        frame = frame.dropna(subset=list(toggled)).reset_index(drop=True)
        if len(frame) < 20:  # fewer than the folds need
            log.info("cost of b not measured: %d rows have b", len(frame))
            unmeasured = {name: float("nan") for name in ("b_cost_rmse", "b_cost_mae", "b_cost_r2")}
            return [], lambda scored, results: unmeasured
    splits = list(cv.split(frame))
    tasks = []
    for columns in ((features,) if subset else ()) + (toggled,):
        x, y = features_and_target(frame, columns)
        tasks += [
            Task(evaluation.score_fold, (model, x, y, train, test), {"seed": seed}) for train, test in splits
        ]

    def finish(scored: CVResult, results: list[Any]) -> dict[str, float]:
        if subset:
            scored = evaluation.collect(results[: len(splits)], len(frame), description="cv rows with b")
        other = evaluation.collect(
            results[-len(splits) :],
            len(frame),
            description=f"cv {candidate} {'without' if 'b' in features else 'with'} b",
        )
        with_b, without_b = (scored, other) if "b" in features else (other, scored)
        figures = {**with_b.summary("cv_with_b"), **without_b.summary("cv_without_b")}
        figures["b_cost_rmse"] = without_b.mean("rmse") - with_b.mean("rmse")
        figures["b_cost_mae"] = without_b.mean("mae") - with_b.mean("mae")
        figures["b_cost_r2"] = with_b.mean("r2") - without_b.mean("r2")
        return figures

    return tasks, finish


def reference_sample(result: TrainingResult, rows: int = REFERENCE_ROWS) -> dict[str, Any]:
    """The training data the drift detector compares live traffic with (see :mod:`model.artifact`)."""
    generator = np.random.default_rng(result.params["seed"])
    chosen = np.sort(generator.choice(len(result.y), size=min(rows, len(result.y)), replace=False))
    sample = result.x[chosen]
    quantiles = np.quantile(result.x, QUANTILE_LEVELS, axis=0)
    return {
        "features": sample.tolist(),
        "predictions": [float(value) for value in result.pipeline.predict(sample)],
        "quantiles": {
            name: {f"{level:g}": float(quantiles[i, j]) for i, level in enumerate(QUANTILE_LEVELS)}
            for j, name in enumerate(result.features)
        },
        "n_rows": len(result.y),
    }


def artifact_metadata(
    result: TrainingResult, version: str, created_at: datetime | None = None
) -> dict[str, Any]:
    """The ``model.json`` content of a trained model (see :mod:`model.artifact` for the keys)."""
    created_at = created_at or datetime.now(UTC)
    return {
        "name": MODEL_NAME,
        "version": version,
        "created_at": created_at.isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "libraries": library_versions(),
        "features": [feature.to_dict() for feature in select(result.features)],
        "target": {"name": TARGET, "description": TARGET_DESCRIPTION, "unit": TARGET_UNIT},
        "estimator": pipeline.estimator_name(result.pipeline),
        "params": result.params,
        "metrics": result.metrics,
        "global_importance": result.global_importance,
        "reference": reference_sample(result),
        **({} if result.intervals is None else {"intervals": describe_intervals(result.intervals)}),
    }


def describe_intervals(calibrated: Intervals) -> dict[str, Any]:
    """``model.json``'s ``intervals``: what a client can ask for (the numbers are in ``intervals.json``)."""
    return {
        "method": calibrated.method,
        "levels": list(calibrated.levels),
        "outputs": list(intervals.BOUND_OUTPUTS),
        "parameter": intervals.LEVEL_PARAMETER,
    }


def unregistered_version(created_at: datetime) -> str:
    """The version of a model that no registry numbered, e.g. ``dev-20250101T120000Z``."""
    return "dev-" + created_at.strftime("%Y%m%dT%H%M%SZ")


def build_artifact(
    directory: str | Path,
    *,
    features: Sequence[str] = DEFAULT_FEATURES,
    fast: bool = False,
    seed: int = 42,
    data: str | Path | None = None,
) -> Path:
    """Train on the bundled (or given) data and write an artifact, without MLflow and the quality gate.

    The parity gate of the compiled form still applies (see :func:`compile_model`).

    Args:
        directory: Where to write ``model.joblib``, ``model.onnx``, ``dle.json``, ``outliers.json`` and
            ``model.json``.
        features: Inputs of the model, in order.
        fast: A model in seconds (fewer folds and trees), for tests.
        seed: Random seed.
        data: A CSV to train on instead of the bundled data set.

    Returns:
        The artifact directory.
    """
    result = compile_model(train_model(load_dataset(data), features, fast=fast, seed=seed, progress=False))
    created_at = datetime.now(UTC)
    metadata = artifact_metadata(result, unregistered_version(created_at))
    return save_artifact(
        directory, result.pipeline, metadata, result.compiled, result.dle, result.outliers, result.intervals
    )
