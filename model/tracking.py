"""MLflow tracking and registration of training runs.

The tracking URI comes from ``MLFLOW_TRACKING_URI``; without it runs go to a local SQLite store,
``var/mlflow/mlflow.db``, with artifacts in ``var/mlflow/artifacts`` (see :mod:`model.paths`). Runs land in
the experiment ``housing-price-prediction``; every model that passes the quality gate becomes a version of the
registered model ``housing-price`` with the alias ``challenger``, and ``housing promote`` moves ``champion``.
The run's ``git_commit`` tag and the model's pinned requirements come from :mod:`model.provenance`, which also
fills the artifact's ``model.json``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from model.artifact import ONNX_SHA256, read_metadata
from model.paths import MODEL_NAME, mlflow_dir
from model.provenance import git_commit, pip_requirements

if TYPE_CHECKING:
    from model.train import TrainingResult

TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
EXPERIMENT = "housing-price-prediction"
REGISTERED_MODEL = MODEL_NAME
CHALLENGER = "challenger"
CHAMPION = "champion"


@dataclass(frozen=True)
class LoggedRun:
    """A training run recorded in MLflow.

    Attributes:
        run_id: The MLflow run.
        version: The registered model version.
        artifact_dir: Where the project artifact (``model.joblib`` + ``model.json``) was written.
    """

    run_id: str
    version: str
    artifact_dir: Path


def tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI``, or the project's local SQLite store (created on first use)."""
    configured = os.environ.get(TRACKING_URI_ENV)
    if configured:
        return configured
    directory = mlflow_dir()
    directory.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(directory / 'mlflow.db').resolve()}"


def artifact_location(uri: str) -> str | None:
    """Where a new experiment keeps run artifacts: beside a SQLite store, else the server's default."""
    parsed = urlparse(uri)
    if parsed.scheme != "sqlite":
        return None
    database = Path(unquote(parsed.path)[1:] if parsed.path.startswith("//") else unquote(parsed.path))
    return (database.parent / "artifacts").resolve().as_uri()


def use_tracking() -> Any:
    """Point MLflow at the tracking store, create the experiment if needed, and return an ``MlflowClient``."""
    import mlflow

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    if mlflow.get_experiment_by_name(EXPERIMENT) is None:
        mlflow.create_experiment(EXPERIMENT, artifact_location=artifact_location(uri))
    mlflow.set_experiment(EXPERIMENT)
    return mlflow.MlflowClient()


def log_trained(result: TrainingResult, write_artifact: Callable[[str | None], Path]) -> LoggedRun:
    """Log a run that passed the gate, register its model as ``challenger`` and write the artifact.

    Args:
        result: The trained model and its figures.
        write_artifact: Writes the project artifact for a version and returns its directory; it is called once
            the registry has numbered the version, so ``model.json`` carries the registered version.

    Returns:
        The run id, registered version and artifact directory.
    """
    import mlflow

    client = use_tracking()
    with mlflow.start_run(run_name=f"{result.candidate}-seed{result.params['seed']}") as run:
        _log_figures(result)
        mlflow.set_tag("quality_gate", "passed")
        info = _log_model(result)
        _log_compiled(result)
        version = str(info.registered_model_version)
        client.set_registered_model_alias(REGISTERED_MODEL, CHALLENGER, version)
        directory = write_artifact(version)
        mlflow.log_artifacts(str(directory), "artifact")
        mlflow.set_tag("artifact_dir", str(Path(directory).resolve()))
        metadata = read_metadata(directory)
        # The pin of each form (model.artifact explains which file a pin names).
        for tag in ("sha256", ONNX_SHA256):
            if tag in metadata:
                client.set_model_version_tag(REGISTERED_MODEL, version, tag, metadata[tag])
        client.set_model_version_tag(
            REGISTERED_MODEL, version, "artifact_dir", str(Path(directory).resolve())
        )
    return LoggedRun(run_id=run.info.run_id, version=version, artifact_dir=Path(directory))


def log_failed(result: TrainingResult, failures: list[str]) -> str:
    """Record a run that failed the quality gate (figures and plots, no model, nothing registered).

    Returns:
        The run id.
    """
    import mlflow

    use_tracking()
    with mlflow.start_run(run_name=f"{result.candidate}-seed{result.params['seed']}") as run:
        _log_figures(result)
        mlflow.set_tag("quality_gate", "failed: " + "; ".join(failures))
    return str(run.info.run_id)


def _log_figures(result: TrainingResult) -> None:
    import mlflow

    from model.importance import save_importance_plot, tree_model
    from model.plots import save_interval_plot, save_plots

    mlflow.log_params({**result.params, "features": ",".join(result.features)})
    mlflow.log_metrics(result.metrics)
    mlflow.log_metrics({f"global_importance_{k}": v for k, v in result.global_importance.items()})
    commit = git_commit()
    if commit:
        mlflow.set_tag("git_commit", commit)
    if result.evaluation.chosen_params:
        mlflow.log_dict({"outer_folds": result.evaluation.chosen_params}, "nested_cv_chosen_params.json")
    with tempfile.TemporaryDirectory() as scratch:
        predicted = result.evaluation.oof_predictions
        if predicted is None:
            return
        for path in save_plots(scratch, result.y, predicted, result.importances):
            mlflow.log_artifact(str(path), "plots")
        if result.held_out_intervals is not None:  # held-out prices in their intervals, coverage by quintile
            plot = save_interval_plot(scratch, result.y, result.held_out_intervals, result.strata)
            mlflow.log_artifact(str(plot), "plots")
        if result.global_importance:  # mean |TreeSHAP contribution| (model/importance.py)
            log_target = tree_model(result.pipeline).log_target
            plot = save_importance_plot(scratch, result.global_importance, log_target=log_target)
            mlflow.log_artifact(str(plot), "plots")


def _log_model(result: TrainingResult) -> Any:
    import mlflow.sklearn
    from mlflow.models import infer_signature

    example = result.x[:5]
    return mlflow.sklearn.log_model(
        result.pipeline,
        name="model",
        signature=infer_signature(example, result.pipeline.predict(example)),
        input_example=example,
        registered_model_name=REGISTERED_MODEL,
        pip_requirements=pip_requirements(),
        # skops, not pickle: loading it runs no code; the fitted trees are the one type to trust explicitly.
        serialization_format="skops",
        skops_trusted_types=["sklearn.tree._tree.Tree"],
    )


def _log_compiled(result: TrainingResult) -> None:
    """Log the compiled form as an MLflow ``onnx`` model beside the scikit-learn one (not registered)."""
    if result.compiled is None:
        return
    import mlflow.onnx
    import onnx

    mlflow.onnx.log_model(
        onnx.load_from_string(result.compiled),
        name="onnx",
        input_example=result.x[:5].astype("float32"),
        pip_requirements=pip_requirements(("onnxruntime",)),
    )
