"""``housing train``: the command line of :mod:`model.train` (arguments, the quality gate, writing, output).

It trains with :func:`model.train.train_model`, prints the figures, refuses a model that fails the quality
gate (exit 1, nothing written), writes the artifact to ``var/artifacts/housing-price/<version>/`` (or
``--output``) and points ``var/artifacts/housing-price/latest`` at it (see :mod:`model.paths`), logs and
registers it in MLflow (:mod:`model.tracking`) and optionally publishes it. Like every command module it
imports scikit-learn and pandas only inside :func:`run`, so that ``housing --help`` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from model import tracking
from model.artifact import save_artifact
from model.paths import MODEL_NAME, default_artifact_dir, point_latest_at
from model.publish import publish_and_report
from model.schema import ALL_FEATURES, DEFAULT_FEATURES
from model.storage import StorageError

if TYPE_CHECKING:
    from model.train import TrainingResult

log = logging.getLogger(__name__)

HELP = "Train, evaluate and gate the model, write its artifact, log and register it in MLflow."
CANDIDATE_CHOICES = ("gbr_log", "gbr", "linear", "dummy")
"""``--candidate`` values, the default first (spelled out here so that ``--help`` needs no scikit-learn)."""


def configure(parser: argparse.ArgumentParser) -> None:
    """Declare the arguments of ``housing train``."""
    parser.add_argument(
        "--data",
        nargs="+",
        metavar="SOURCE",
        help="training data, one or more of: a CSV; 'bundled' (the bundled Boston Housing data, the "
        "default); a traffic archive, Blob URL or directory: its labelled rows (docs/detector.md)",
    )
    chosen = parser.add_mutually_exclusive_group()
    chosen.add_argument(
        "--features",
        nargs="+",
        choices=ALL_FEATURES,
        metavar="NAME",
        help=f"model inputs in order (default: all but b: {' '.join(DEFAULT_FEATURES)})",
    )
    chosen.add_argument("--with-b", action="store_true", help="use all 13 features, b included")
    parser.add_argument(
        "--candidate",
        choices=CANDIDATE_CHOICES,
        help=f"model family to ship (default: {CANDIDATE_CHOICES[0]}; dummy only shows the gate failing)",
    )
    parser.add_argument(
        "--output", type=Path, help="artifact directory (default: var/artifacts/housing-price/<version>)"
    )
    parser.add_argument("--fast", action="store_true", help="few folds, fewer trees, no nested CV: seconds")
    parser.add_argument("--seed", type=int, default=42, help="random seed (default: %(default)s)")
    parser.add_argument(
        "--jobs",
        type=int,
        metavar="N",
        help="worker processes for the folds (default: one per usable core; --fast: none); "
        "the figures are the same for any N",
    )
    parser.add_argument(
        "--compare-intervals",
        action="store_true",
        help="also compare MAPIE's CV+ and conformalized quantile regression with the shipped intervals "
        "on the same folds (minutes more; docs/training.md)",
    )
    parser.add_argument(
        "--no-mlflow", action="store_true", help="do not log to MLflow nor register the model"
    )
    parser.add_argument(
        "--publish", metavar="URL", help="also upload the artifact to Blob Storage (Azure/Azurite)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    azureml = parser.add_argument_group(
        "Azure ML", "run the training as an Azure ML command job (azureml/train-job.yml) instead of here"
    )
    azureml.add_argument("--azureml", action="store_true", help="submit the job to an Azure ML workspace")
    azureml.add_argument("--azureml-image", help="trainer image (default: the job file's)")
    azureml.add_argument("--azureml-compute", help="compute cluster (default: the job file's)")
    azureml.add_argument(
        "--azureml-data", help="training CSV: azureml:// datastore path or https:// blob URL"
    )
    azureml.add_argument(
        "--subscription", default=os.environ.get("AZURE_SUBSCRIPTION_ID"), help="subscription ID"
    )
    azureml.add_argument(
        "--resource-group", default=os.environ.get("AZUREML_RESOURCE_GROUP"), help="resource group"
    )
    azureml.add_argument("--workspace", default=os.environ.get("AZUREML_WORKSPACE"), help="workspace name")
    azureml.add_argument("--dry-run", action="store_true", help="print the validated job and send nothing")


def run(args: argparse.Namespace) -> int:
    """Train, gate, write, register and optionally publish; print the figures.

    Returns:
        0, or 1 when the data is invalid or the model fails the quality gate (nothing is written then).
    """
    if args.azureml:
        return run_on_azureml(args)
    from model.archive import load_training_data
    from model.compiled import CompileError
    from model.dataset import DataValidationError
    from model.evaluation import QualityGate, format_table
    from model.train import artifact_metadata, compile_model, train_model, unregistered_version

    features = ALL_FEATURES if args.with_b else tuple(args.features or DEFAULT_FEATURES)
    if "b" in features:
        log.warning("training with b, a variable built on an assumption about race (see model.schema)")
    try:
        frame, provenance = load_training_data(args.data or [], features)
    except (DataValidationError, StorageError, ValueError, OSError) as error:
        print(f"error: invalid training data: {error}", file=sys.stderr)
        return 1
    print(f"training data: {provenance['data_rows']} rows from {provenance['data_sources']} "
          f"({provenance['data_archive_rows']} archived), sha256 {provenance['data_sha256']}")  # fmt: skip
    result = train_model(
        frame,
        features,
        candidate=args.candidate,
        fast=args.fast,
        seed=args.seed,
        progress=not args.no_progress,
        jobs=args.jobs,
        compare_intervals=args.compare_intervals,
    )
    result.params.update(provenance)  # into model.json's params and the MLflow run's
    print(format_table(figure_rows(result)))
    failures = QualityGate().failures(result.headline)
    if failures:
        if not args.no_mlflow:
            tracking.log_failed(result, failures)
        print(
            f"error: quality gate failed for {result.candidate}: {'; '.join(failures)} "
            f"(needs {QualityGate().describe()}); no artifact written",
            file=sys.stderr,
        )
        return 1
    try:
        result = compile_model(result)
    except CompileError as error:
        if not args.no_mlflow:
            tracking.log_failed(result, [f"compiled form: {error}"])
        print(f"error: {error}; no artifact written", file=sys.stderr)
        return 1
    print(format_table(compiled_rows(result)))

    created_at = datetime.now(UTC)

    def write(version: str | None) -> Path:
        version = version or unregistered_version(created_at)
        directory = args.output or default_artifact_dir(version)
        metadata = artifact_metadata(result, version, created_at)
        save_artifact(
            directory,
            result.pipeline,
            metadata,
            result.compiled,
            result.dle,
            result.outliers,
            result.intervals,
        )
        if args.output is None:
            point_latest_at(directory)
        return Path(directory)

    if not args.no_mlflow:
        logged = tracking.log_trained(result, write)
        directory = logged.artifact_dir
        print(f"mlflow run id: {logged.run_id}")
        print(f"registered model: {MODEL_NAME} version {logged.version} (alias challenger)")
    else:
        directory = write(None)
    print(f"artifact: {directory}")
    if args.publish:
        return publish_and_report(directory, args.publish)
    return 0


def run_on_azureml(args: argparse.Namespace) -> int:
    """Build the Azure ML job, print it (``--dry-run``) or submit it; 2 when the workspace is not named."""
    import yaml

    from model import azureml

    job = azureml.build_job(image=args.azureml_image, compute=args.azureml_compute, data=args.azureml_data)
    if args.dry_run:
        print(yaml.safe_dump(azureml.describe(job), sort_keys=False), end="")
        return 0
    missing = [flag for flag in ("subscription", "resource_group", "workspace") if not getattr(args, flag)]
    if missing:
        names = ", ".join("--" + flag.replace("_", "-") for flag in missing)
        print(f"error: --azureml needs {names} (or AZURE_SUBSCRIPTION_ID, AZUREML_RESOURCE_GROUP, "
              "AZUREML_WORKSPACE)", file=sys.stderr)  # fmt: skip
        return 2
    workspace = azureml.Workspace(args.subscription, args.resource_group, args.workspace)
    print(f"submitted: {azureml.submit(job, workspace)}")
    return 0


def figure_rows(result: TrainingResult) -> list[tuple[str, str]]:
    """The figures printed at the end of training, one (name, value) per line."""
    metrics = result.metrics
    method = "nested CV" if "nested_cv_rmse_mean" in metrics else "CV"
    rows = [
        ("model", f"{result.candidate} on {len(result.features)} features"),
        ("evaluation", result.params["cv"]),
    ]
    for name in ("rmse", "mae", "r2"):
        rows.append((f"{name} ({method})", f"{metrics[name]:.3f} ± {metrics[name + '_std']:.3f}"))
    for family in result.comparison:
        rows.append(
            (
                f"cv {family}",
                f"RMSE {metrics[f'cv_{family}_rmse_mean']:.3f}  MAE {metrics[f'cv_{family}_mae_mean']:.3f}  "
                f"R² {metrics[f'cv_{family}_r2_mean']:.3f}",
            )
        )
    rows.append(
        (
            "cost of excluding b (same folds)",
            f"RMSE {metrics['b_cost_rmse']:+.3f}  MAE {metrics['b_cost_mae']:+.3f}  "
            f"R² {-metrics['b_cost_r2']:+.3f}",
        )
    )
    if result.intervals is not None:
        rows += coverage_rows(result, method)
    top = sorted(result.importances.items(), key=lambda item: -item[1])[:5]
    rows.append(("top importances", ", ".join(f"{name} {value:.2f}" for name, value in top)))
    rows.append(("final fit", f"{metrics['fit_seconds']:.3f} s (CPU {metrics['fit_cpu_seconds']:.3f} s)"))
    rows.append(
        (
            "predict 1 row",
            f"p50 {metrics['predict_latency_p50_us']:.0f} µs, p99 {metrics['predict_latency_p99_us']:.0f} µs "
            f"(CPU p50 {metrics['predict_cpu_p50_us']:.0f} µs)",
        )
    )
    return rows


def coverage_rows(result: TrainingResult, method: str) -> list[tuple[str, str]]:
    """The held-out coverage of the shipped intervals, by quintile, and every method compared."""
    from model.coverage import MAPIE_METHODS, comparison_rows
    from model.intervals import METHODS

    metrics = result.metrics
    quintiles = []
    for stratum in ("price", "lstat"):
        shares = [metrics.get(f"interval_coverage_90_{stratum}_q{quintile}") for quintile in range(1, 6)]
        if None not in shares:
            quintiles.append(f"{stratum} " + " ".join(f"{share:.2f}" for share in shares))
    levels = " / ".join(f"{metrics[f'interval_coverage_{level}']:.3f}" for level in (80, 90, 95))
    rows = [
        (
            f"intervals ({result.intervals.method}, {method})" if result.intervals else "intervals",
            f"coverage 80/90/95% {levels}",
        ),
        ("90% coverage by quintile", ", ".join(quintiles)),
    ]
    return rows + comparison_rows(metrics, (*METHODS, *MAPIE_METHODS))


def compiled_rows(result: TrainingResult) -> list[tuple[str, str]]:
    """The figures of the compiled form, printed once it passed its parity gate."""
    metrics = result.metrics
    bounds = metrics.get("compiled_bounds_parity_max_abs_diff")
    return [
        (
            "compiled (ONNX) parity",
            f"max |diff| {metrics['compiled_parity_max_abs_diff']:.6f} USD 1000s"
            + ("" if bounds is None else f", interval bounds {bounds:.6f}"),
        ),
        (
            "compiled predict 1 row",
            f"p50 {metrics['compiled_predict_latency_p50_us']:.0f} µs, "
            f"p99 {metrics['compiled_predict_latency_p99_us']:.0f} µs "
            f"(CPU p50 {metrics['compiled_predict_cpu_p50_us']:.0f} µs)",
        ),
    ]
