"""``housing evaluate``: re-score a saved artifact on data and apply the quality gate."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

HELP = "Re-score a model artifact on a data set (default: the bundled data) and apply the quality gate."


def score_artifact(artifact: Any, frame: Any) -> dict[str, float]:
    """RMSE, MAE and R² of a loaded artifact on a validated data frame.

    Args:
        artifact: A :class:`model.artifact.ModelArtifact`.
        frame: Data from :func:`model.dataset.load_dataset` (all features and the target).

    Returns:
        ``rmse``, ``mae`` (USD 1000s) and ``r2``.
    """
    from model.evaluation import regression_metrics
    from model.schema import TARGET

    x = frame[artifact.feature_names].to_numpy(dtype="float64")
    return regression_metrics(frame[TARGET].to_numpy(dtype="float64"), artifact.pipeline.predict(x))


def configure(parser: argparse.ArgumentParser) -> None:
    """Declare the arguments of ``housing evaluate``."""
    parser.add_argument("artifact", help="artifact directory, file:// or Blob Storage URL")
    parser.add_argument(
        "--data", type=Path, help="CSV to score on (default: the bundled data, i.e. in-sample)"
    )
    parser.add_argument("--expected-sha256", help="refuse the artifact unless model.joblib has this sha256")


def run(args: argparse.Namespace) -> int:
    """Score the artifact, print the figures next to those recorded at training, and gate.

    Returns:
        0, or 1 when the artifact or data is invalid or the model fails the gate.
    """
    from model.artifact import ArtifactError, load_artifact
    from model.dataset import DataValidationError, load_dataset
    from model.evaluation import QualityGate, format_table
    from model.storage import StorageError, download

    with tempfile.TemporaryDirectory() as scratch:
        try:
            artifact = load_artifact(download(args.artifact, scratch), args.expected_sha256)
            frame = load_dataset(args.data)
        except (ArtifactError, StorageError, DataValidationError, OSError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    figures = score_artifact(artifact, frame)
    recorded = artifact.metadata.get("metrics", {})
    source = str(args.data) if args.data else "bundled data (in-sample: the model was trained on it)"
    rows = [("artifact", f"{artifact.metadata['name']} version {artifact.version}"), ("data", source)]
    for name in ("rmse", "mae", "r2"):
        at_training = f"  (CV at training {recorded[name]:.3f})" if name in recorded else ""
        rows.append((name, f"{figures[name]:.3f}{at_training}"))
    print(format_table(rows))
    failures = QualityGate().failures(figures)
    if failures:
        print(
            f"error: quality gate failed: {'; '.join(failures)} (needs {QualityGate().describe()})",
            file=sys.stderr,
        )
        return 1
    print("quality gate: passed")
    return 0
