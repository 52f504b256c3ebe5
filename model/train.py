"""Training library: compare candidates, evaluate the shipped model honestly, fit it, describe its artifact.

The steps stay apart, scikit-learn style: :func:`model.dataset.load_dataset` reads and validates the data,
:func:`train_model` evaluates and fits (no I/O), :func:`compile_model` adds the compiled serving form
(ONNX, :mod:`model.compiled`) once it has checked that it predicts as scikit-learn does,
:func:`artifact_metadata` and :func:`model.artifact.save_artifact` persist, and :mod:`model.tracking` logs
to MLflow. :func:`build_artifact` chains them without MLflow, for tests and notebooks. Progress is reported
only through logging and the progress bars of :func:`model.evaluation.cross_validate` (``progress=False``
turns them off).

The command line, ``housing train`` (arguments, the quality gate, the printed figures), is
:mod:`model.train_cli`; where and how the code was built is recorded by :mod:`model.provenance`.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from model import compiled, dle, evaluation, importance, outliers, pipeline
from model.artifact import save_artifact
from model.dataset import load_dataset
from model.evaluation import CVResult, Plan
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

    @property
    def headline(self) -> dict[str, float]:
        """The figures the quality gate judges: ``rmse``, ``mae``, ``r2``."""
        return {key: self.metrics[key] for key in ("rmse", "mae", "r2")}

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
) -> TrainingResult:
    """Compare the candidates, evaluate the shipped one, measure the cost of ``b``, and fit the final model.

    Every candidate is scored by the same repeated K-fold. In a full run the shipped candidate is also scored
    by nested CV (hyper-parameters chosen by an inner grid search inside each outer fold), which gives the
    headline figures, and the final model is tuned by the same search on all rows. A fast run uses fewer folds
    and fixed settings, and its headline figures come from plain CV.

    Args:
        frame: Validated data (see :func:`model.dataset.load_dataset`).
        features: Inputs of the model, in order.
        candidate: The model family to ship; defaults to :data:`model.pipeline.DEFAULT_CANDIDATE`.
        fast: Seconds instead of minutes (tests, smoke runs).
        seed: Seed of every split, shuffle and estimator: same seed and data, same model and figures.
        progress: Show progress bars on standard error.
        plan: How much evaluation to do; defaults to the full or fast :class:`model.evaluation.Plan`.

    Returns:
        The fitted pipeline with its figures.
    """
    features = tuple(features)
    candidate = candidate or pipeline.DEFAULT_CANDIDATE
    plan = plan or (Plan.fast() if fast else Plan())
    x, y = features_and_target(frame, features)
    cv = evaluation.repeated_kfold(plan.splits, plan.repeats, seed)
    gbr_params = plan.gbr_params
    metrics: dict[str, float] = {}

    comparison: dict[str, CVResult] = {}
    for name in [*[family for family in pipeline.CANDIDATES if family != candidate], candidate]:
        comparison[name] = evaluation.cross_validate(
            pipeline.make_candidate(name, seed=seed, params=gbr_params),
            x,
            y,
            cv,
            feature_names=features,
            importance_repeats=plan.importance_repeats if name == candidate else 0,
            seed=seed,
            description=f"cv {name}",
            progress=progress,
        )
        metrics.update(comparison[name].summary(f"cv_{name}"))
    shipped = comparison[candidate]
    metrics.update({f"importance_{name}": value for name, value in shipped.importances.items()})
    metrics.update(b_cost(frame, features, candidate, gbr_params, shipped, cv, seed, progress))

    best: dict[str, Any] = {}
    evaluated = shipped
    grid = pipeline.param_grid(candidate, plan.grid)
    if plan.nested_repeats and grid:
        search = evaluation.tuned(
            pipeline.make_candidate(candidate, seed=seed, params=gbr_params), grid, seed, plan.inner_splits
        )
        outer = evaluation.repeated_kfold(plan.splits, plan.nested_repeats, seed)
        evaluated = evaluation.cross_validate(
            search, x, y, outer, seed=seed, description=f"nested cv {candidate}", progress=progress
        )
        metrics.update(evaluated.summary("nested_cv"))
        log.info("tuning the final model on all %d rows", len(y))
        best = pipeline.strip_prefix(candidate, search.fit(x, y).best_params_)
    for metric in evaluation.METRICS:
        metrics[metric] = evaluated.mean(metric)
        metrics[f"{metric}_std"] = evaluated.std(metric)

    final_params = {**gbr_params, **best}
    final, fit_times = evaluation.timed_fit(
        pipeline.make_candidate(candidate, seed=seed, params=final_params), x, y
    )
    metrics.update(fit_times)
    # Timed the way the predictor serves it (rows validated before they reach the pipeline).
    metrics.update(evaluation.predict_latency(functools.partial(pipeline.predict_validated, final), x[:1]))
    params: dict[str, Any] = {
        "candidate": candidate,
        "seed": seed,
        "fast": fast,
        "cv": plan.describe() if grid else f"{plan.repeats}x{plan.splits}-fold CV",
        "n_rows": len(y),
        **({} if pipeline.booster_prefix(candidate) is None else final_params),
    }
    try:
        explained = importance.global_importance(final, x, features)
    except ValueError as error:  # not a tree ensemble (ridge): no TreeSHAP
        log.info("no global importance: %s", error)
        explained = {}
    # Out-of-fold residuals: errors on rows the model did not see, as live rows are (model/dle.py).
    estimator = dle.fit(x, y, evaluated.oof_predictions, features, seed)  # type: ignore[arg-type]
    return TrainingResult(
        final,
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
        outliers=outliers.to_bytes(outliers.fit(x, features, seed)),
    )


def compile_model(result: TrainingResult) -> TrainingResult:
    """Compile the fitted pipeline to ONNX, check it predicts as scikit-learn does, and time it.

    The parity gate compares both forms on every training row and on each row with one feature at each of
    its schema edges (:func:`model.compiled.parity_rows`).

    Args:
        result: A trained model (see :func:`train_model`).

    Returns:
        The same result with ``compiled`` set and, in ``metrics``, ``compiled_parity_max_abs_diff`` (USD
        1000s) and the compiled form's one-row predict times (``compiled_predict_latency_p50_us``, ...).

    Raises:
        model.compiled.CompileError: The pipeline cannot be compiled, or the two forms differ by more than
            :data:`model.compiled.PARITY_TOLERANCE` on some row (the message says by how much).
    """
    onnx_model = compiled.compile_pipeline(result.pipeline, result.features)
    model = compiled.CompiledModel(onnx_model)
    worst = compiled.check_parity(result.pipeline, model, compiled.parity_rows(result.x, result.features))
    latency = evaluation.predict_latency(model.predict, result.x[:1])
    metrics = {
        **result.metrics,
        "compiled_parity_max_abs_diff": worst,
        **{f"compiled_{name}": value for name, value in latency.items()},
    }
    log.info("compiled to ONNX: largest difference from scikit-learn %.6f USD 1000s", worst)
    return dataclasses.replace(result, compiled=onnx_model, metrics=metrics)


def b_cost(
    frame: pd.DataFrame,
    features: tuple[str, ...],
    candidate: str,
    gbr_params: dict[str, Any],
    scored: CVResult,
    cv: Any,
    seed: int,
    progress: bool,
) -> dict[str, float]:
    """What leaving out ``b`` costs: the shipped candidate's CV with ``b`` toggled, on the same folds.

    Returns:
        ``cv_with_b_*`` and ``cv_without_b_*`` means, and ``b_cost_rmse``/``b_cost_mae`` (how much worse
        without ``b``, USD 1000s) and ``b_cost_r2`` (R² lost without ``b``).
    """
    toggled = tuple(name for name in features if name != "b") if "b" in features else (*features, "b")
    if frame[list(toggled)].isna().to_numpy().any():
        # Archived rows (model/archive.py) carry only the served model's inputs: compare on the rows with b.
        frame = frame.dropna(subset=list(toggled)).reset_index(drop=True)
        if len(frame) < 20:  # fewer than the folds need
            log.info("cost of b not measured: %d rows have b", len(frame))
            return {name: float("nan") for name in ("b_cost_rmse", "b_cost_mae", "b_cost_r2")}
        model = pipeline.make_candidate(candidate, seed=seed, params=gbr_params)
        x, y = features_and_target(frame, features)
        scored = evaluation.cross_validate(
            model, x, y, cv, seed=seed, description="cv rows with b", progress=progress
        )
    x, y = features_and_target(frame, toggled)
    other = evaluation.cross_validate(
        pipeline.make_candidate(candidate, seed=seed, params=gbr_params),
        x,
        y,
        cv,
        seed=seed,
        description=f"cv {candidate} {'without' if 'b' in features else 'with'} b",
        progress=progress,
    )
    with_b, without_b = (scored, other) if "b" in features else (other, scored)
    figures = {**with_b.summary("cv_with_b"), **without_b.summary("cv_without_b")}
    figures["b_cost_rmse"] = without_b.mean("rmse") - with_b.mean("rmse")
    figures["b_cost_mae"] = without_b.mean("mae") - with_b.mean("mae")
    figures["b_cost_r2"] = with_b.mean("r2") - without_b.mean("r2")
    return figures


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
    return save_artifact(directory, result.pipeline, metadata, result.compiled, result.dle, result.outliers)
