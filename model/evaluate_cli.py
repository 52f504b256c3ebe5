"""``housing evaluate``: the command line that re-scores a saved artifact and applies the quality gate.

The scoring itself is :func:`model.evaluation.score_artifact`; this module loads, prints and exits. Like every
command module it imports pandas and scikit-learn only inside :func:`run`, so that ``housing --help`` is fast.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from model.artifact import ArtifactError, load_artifact
from model.storage import StorageError, download

HELP = "Re-score a model artifact on a data set (default: the bundled data) and apply the quality gate."


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
    from model.dataset import DataValidationError, load_dataset
    from model.evaluation import QualityGate, format_table, score_artifact

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
