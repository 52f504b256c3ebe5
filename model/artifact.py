"""The model artifact: a directory with ``model.joblib`` and a self-describing ``model.json``.

This is the one module that writes and reads artifacts; the trainer, the predictor and the detector use it.
A pickle runs code when it is loaded, so :func:`load_artifact` checks the sha256 recorded in ``model.json``
(and, when the deployment pins one, the expected sha256) *before* it unpickles anything.

``model.json`` holds (format version 1):

- ``name``, ``version``, ``created_at`` (ISO 8601, UTC), ``git_commit``, ``libraries`` (name -> version)
- ``features``: the schema entries of the model's inputs, in the order the model expects them
- ``target``: ``{"name", "description", "unit"}``
- ``estimator``, ``params``: what was fitted
- ``metrics``: evaluation figures (cross-validated RMSE, MAE, R², ...)
- ``reference``: training data for drift detection: ``features`` (rows of a training sample, feature order),
  ``predictions`` (the model's predictions for those rows), ``quantiles`` (per feature), ``n_rows``
- ``sha256``: of ``model.joblib``
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.files import write_atomic

MODEL_FILE = "model.joblib"
METADATA_FILE = "model.json"
FORMAT_VERSION = 1


class ArtifactError(RuntimeError):
    """The artifact is missing, malformed, or fails its integrity check; it must not be served."""


@dataclass(frozen=True)
class ModelArtifact:
    """A loaded, verified artifact.

    Attributes:
        pipeline: The fitted scikit-learn pipeline (``predict`` takes an array of shape [N, n_features]).
        metadata: The parsed ``model.json``.
        path: The directory it was loaded from.
    """

    pipeline: Any
    metadata: dict[str, Any]
    path: Path

    @property
    def feature_names(self) -> list[str]:
        """The model's inputs in the order ``pipeline.predict`` expects them."""
        return feature_names(self.metadata)

    @property
    def version(self) -> str:
        """The model version recorded at training time."""
        return str(self.metadata["version"])

    @property
    def sha256(self) -> str:
        """The sha256 of ``model.joblib``."""
        return str(self.metadata["sha256"])


def feature_names(metadata: dict[str, Any]) -> list[str]:
    """The input names recorded in an artifact's metadata, in model order."""
    return [feature["name"] for feature in metadata["features"]]


def sha256_file(path: str | Path) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_artifact(directory: str | Path, pipeline: Any, metadata: dict[str, Any]) -> Path:
    """Write ``model.joblib`` and ``model.json`` into ``directory``.

    The sha256 and format version are filled in here; everything else in ``metadata`` is the caller's. Both
    files are written to temporary names and renamed, so a reader never sees half an artifact.

    Args:
        directory: Target directory (created if needed).
        pipeline: The fitted estimator.
        metadata: The ``model.json`` content without ``sha256`` (see the module docstring for the keys).

    Returns:
        The artifact directory.
    """
    import joblib

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model_tmp = directory / f".{MODEL_FILE}.tmp"
    joblib.dump(pipeline, model_tmp)
    document = {**metadata, "format_version": FORMAT_VERSION, "sha256": sha256_file(model_tmp)}
    write_atomic(directory / METADATA_FILE, json.dumps(document, indent=2, sort_keys=True) + "\n")
    os.replace(model_tmp, directory / MODEL_FILE)
    return directory


def read_metadata(directory: str | Path) -> dict[str, Any]:
    """Read and check ``model.json`` without touching the pickle.

    Raises:
        ArtifactError: The file is missing, not JSON, or lacks a required key.
    """
    path = Path(directory) / METADATA_FILE
    try:
        metadata = json.loads(path.read_text())
    except FileNotFoundError as error:
        raise ArtifactError(f"{path} not found: not a model artifact directory") from error
    except json.JSONDecodeError as error:
        raise ArtifactError(f"{path} is not valid JSON: {error}") from error
    missing = [key for key in ("name", "version", "features", "target", "sha256") if key not in metadata]
    if missing:
        raise ArtifactError(f"{path} lacks required keys {missing}")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"{path}: format_version {metadata.get('format_version')!r}, expected {FORMAT_VERSION}"
        )
    return metadata


def verify_artifact(directory: str | Path, expected_sha256: str | None = None) -> dict[str, Any]:
    """Check that ``model.joblib`` is the file ``model.json`` describes, and the one the deployment pinned.

    Args:
        directory: The artifact directory.
        expected_sha256: The sha256 the deployment expects, if it pins one.

    Returns:
        The metadata.

    Raises:
        ArtifactError: A file is missing or a checksum does not match.
    """
    directory = Path(directory)
    metadata = read_metadata(directory)
    model_path = directory / MODEL_FILE
    if not model_path.is_file():
        raise ArtifactError(f"{model_path} not found")
    actual = sha256_file(model_path)
    if actual != metadata["sha256"]:
        raise ArtifactError(
            f"{model_path} sha256 {actual} does not match {metadata['sha256']} recorded in {METADATA_FILE}: "
            "refusing to unpickle a file that was modified"
        )
    if expected_sha256 and actual != expected_sha256.lower():
        raise ArtifactError(
            f"{model_path} sha256 {actual} does not match the pinned sha256 {expected_sha256}: "
            "refusing to serve a model the deployment did not approve"
        )
    return metadata


def load_artifact(directory: str | Path, expected_sha256: str | None = None) -> ModelArtifact:
    """Verify, then unpickle, an artifact.

    Args:
        directory: The artifact directory.
        expected_sha256: The sha256 the deployment pins, if any (see :func:`verify_artifact`).

    Returns:
        The loaded artifact.

    Raises:
        ArtifactError: The integrity check failed (nothing was unpickled) or the pickle could not be loaded.
    """
    import joblib

    metadata = verify_artifact(directory, expected_sha256)
    try:
        pipeline = joblib.load(Path(directory) / MODEL_FILE)
    except Exception as error:  # a verified file that still fails to load: wrong library versions, most often
        raise ArtifactError(
            f"cannot load {MODEL_FILE} (libraries {metadata.get('libraries')}): {error}"
        ) from error
    return ModelArtifact(pipeline=pipeline, metadata=metadata, path=Path(directory))
