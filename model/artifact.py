"""The model artifact: a directory with ``model.joblib``, its compiled form ``model.onnx`` and ``model.json``.

This is the one module that writes and reads artifacts; the trainer, the predictor and the detector use it.
A pickle runs code when it is loaded, and an ONNX file decides every prediction, so :func:`load_artifact`
checks the sha256 of every model file against the one recorded in ``model.json`` (and the file it loads
against the sha256 the deployment pins, if any) *before* it unpickles or parses anything, and loads the very
bytes it checked (read once: a file swapped in after the check is never opened).

Two forms of the same model: ``model.joblib`` (the fitted scikit-learn pipeline: what training, evaluation,
MLflow and the detector use) and ``model.onnx`` (:mod:`model.compiled`: what the predictor serves, with
onnxruntime alone). Artifacts written before the compiled form have only ``model.joblib``.

**What a pin names.** A deployment pins the file its predictor loads (:func:`serving_format`): the sha256 of
``model.onnx`` (``onnx_sha256``; the registry's ``onnx_sha256`` tag) to serve the compiled form, that of
``model.joblib`` (``sha256``; the registry's ``sha256`` tag, what deployments pinned before) for scikit-learn.
A pin of ``model.joblib`` cannot vouch for ``model.onnx``: nothing ties the two but ``model.json``, which the
pin does not cover, and checking that one is the other's compilation needs scikit-learn. So a predictor
pinned to ``model.joblib`` serves ``model.joblib``, and says how to serve the compiled form instead.

``model.json`` holds (format version 1):

- ``name``, ``version``, ``created_at`` (ISO 8601, UTC), ``git_commit``, ``libraries`` (name -> version)
- ``features``: the schema entries of the model's inputs, in the order the model expects them
- ``target``: ``{"name", "description", "unit"}``
- ``estimator``, ``params``: what was fitted
- ``metrics``: evaluation figures (cross-validated RMSE, MAE, R², ...; the compiled form's parity with
  scikit-learn, ``compiled_parity_max_abs_diff``, and both forms' one-row predict times,
  ``predict_latency_p50_us`` and ``compiled_predict_latency_p50_us``)
- ``global_importance``: feature -> mean |TreeSHAP contribution| on the training rows, in the trees'
  output space (:mod:`model.importance`; empty for a model that is not a tree ensemble)
- ``reference``: training data for drift detection: ``features`` (rows of a training sample, feature order),
  ``predictions`` (the model's predictions for those rows), ``quantiles`` (per feature), ``n_rows``
- ``sha256``: of ``model.joblib``
- ``onnx_sha256``: of ``model.onnx`` (absent in artifacts without a compiled form)
- ``dle_sha256``: of ``dle.json``, the loss estimator the detector uses before labels arrive
  (:mod:`model.dle`; JSON arrays, no pickle; absent in older artifacts)
- ``outliers_sha256``: of ``outliers.json``, the density the detector flags houses unlike any seen in training
  with (:mod:`model.outliers`; JSON arrays, no pickle; absent in older artifacts, which get no outlier scores)
- ``intervals_sha256``: of ``intervals.json``, the calibrated prediction intervals (:mod:`model.intervals`; a
  few numbers, no pickle; the compiled form carries the same numbers in its graph). Absent in older artifacts,
  which serve no intervals
- ``intervals``: what a client can ask for: ``{"method", "levels", "outputs"}``
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.files import write_atomic
from model.intervals import Intervals

MODEL_FILE = "model.joblib"
ONNX_FILE = "model.onnx"
ONNX_SHA256 = "onnx_sha256"
"""The ``model.json`` key of ``model.onnx``'s sha256."""
DLE_FILE = "dle.json"
DLE_SHA256 = "dle_sha256"
"""The ``model.json`` key of ``dle.json``'s sha256 (:mod:`model.dle`)."""
OUTLIERS_FILE = "outliers.json"
OUTLIERS_SHA256 = "outliers_sha256"
"""The ``model.json`` key of ``outliers.json``'s sha256 (:mod:`model.outliers`)."""
INTERVALS_FILE = "intervals.json"
INTERVALS_SHA256 = "intervals_sha256"
"""The ``model.json`` key of ``intervals.json``'s sha256 (:mod:`model.intervals`)."""
SKLEARN, ONNX = "sklearn", "onnx"
MODEL_FORMATS = (ONNX, SKLEARN)
"""The forms a model can be loaded in: the compiled one (the predictor's default) and scikit-learn's."""
FILES = {ONNX: ONNX_FILE, SKLEARN: MODEL_FILE}
RECORDED = {ONNX: ONNX_SHA256, SKLEARN: "sha256"}
METADATA_FILE = "model.json"
FORMAT_VERSION = 1


class ArtifactError(RuntimeError):
    """The artifact is missing, malformed, or fails its integrity check; it must not be served."""


@dataclass(frozen=True)
class ModelArtifact:
    """A loaded, verified artifact.

    Attributes:
        pipeline: The loaded model: the fitted scikit-learn pipeline, or its compiled form
            (:class:`model.compiled.CompiledModel`). Either's ``predict`` takes an array of shape
            [N, n_features] and returns [N] predictions.
        metadata: The parsed ``model.json``.
        path: The directory it was loaded from.
        format: Which file was loaded: ``sklearn`` (``model.joblib``) or ``onnx`` (``model.onnx``).
        intervals: The calibrated intervals (``intervals.json``), or ``None`` for an artifact without them.
    """

    pipeline: Any
    metadata: dict[str, Any]
    path: Path
    format: str = SKLEARN
    intervals: Intervals | None = None

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
        """The sha256 of the file loaded (``model.joblib`` or ``model.onnx``): what a deployment pins."""
        return str(self.metadata[RECORDED[self.format]])


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


def save_artifact(
    directory: str | Path,
    pipeline: Any,
    metadata: dict[str, Any],
    compiled: bytes | None = None,
    dle: bytes | None = None,
    outliers: bytes | None = None,
    intervals: Intervals | None = None,
) -> Path:
    """Write ``model.joblib``, ``model.onnx`` (given the compiled form) and ``model.json`` into ``directory``.

    The sha256s and format version are filled in here; everything else in ``metadata`` is the caller's. Every
    file is written to a temporary name and renamed, so a reader never sees half a file.

    Args:
        directory: Target directory (created if needed).
        pipeline: The fitted estimator.
        metadata: The ``model.json`` content without sha256s (see the module docstring for the keys).
        compiled: The serialised ONNX model (:func:`model.compiled.compile_pipeline`), if any.
        dle: The loss estimator's ``dle.json`` (:func:`model.dle.to_bytes`), if any.
        outliers: The outlier density's ``outliers.json`` (:func:`model.outliers.to_bytes`), if any.
        intervals: The calibrated intervals (``intervals.json``), if any.

    Returns:
        The artifact directory.
    """
    import joblib

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model_tmp = directory / f".{MODEL_FILE}.tmp"
    joblib.dump(pipeline, model_tmp)
    document = {**metadata, "format_version": FORMAT_VERSION, "sha256": sha256_file(model_tmp)}
    if compiled is not None:
        onnx_tmp = directory / f".{ONNX_FILE}.tmp"
        onnx_tmp.write_bytes(compiled)
        os.replace(onnx_tmp, directory / ONNX_FILE)
        document[ONNX_SHA256] = hashlib.sha256(compiled).hexdigest()
    if dle is not None:
        write_atomic(directory / DLE_FILE, dle.decode())
        document[DLE_SHA256] = hashlib.sha256(dle).hexdigest()
    if outliers is not None:
        write_atomic(directory / OUTLIERS_FILE, outliers.decode())
        document[OUTLIERS_SHA256] = hashlib.sha256(outliers).hexdigest()
    if intervals is not None:
        data = intervals.to_bytes()
        write_atomic(directory / INTERVALS_FILE, data.decode())
        document[INTERVALS_SHA256] = hashlib.sha256(data).hexdigest()
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


def serving_format(
    metadata: dict[str, Any], requested: str, expected_sha256: str | None = None
) -> tuple[str, str | None]:
    """The form to serve: the one requested, unless the artifact lacks it or the pin names the other file.

    Args:
        metadata: The artifact's ``model.json``.
        requested: ``onnx`` or ``sklearn``.
        expected_sha256: The sha256 the deployment pins, if any.

    Returns:
        The format, and why it is not the one requested (``None`` when it is).
    """
    if requested == SKLEARN:
        return SKLEARN, None
    if ONNX_SHA256 not in metadata:
        return SKLEARN, f"the artifact has no {ONNX_FILE} (an older artifact): serving {MODEL_FILE}"
    if expected_sha256 and expected_sha256.lower() == metadata["sha256"]:
        return SKLEARN, (
            f"the pinned sha256 names {MODEL_FILE}, which is served; pin {ONNX_FILE}'s sha256 "
            f"{metadata[ONNX_SHA256]} to serve the compiled form"
        )
    return ONNX, None


def verify_artifact(
    directory: str | Path, expected_sha256: str | None = None, model_format: str = SKLEARN
) -> dict[str, Any]:
    """Check that the model file is the one ``model.json`` describes, and the one the deployment pinned.

    Args:
        directory: The artifact directory.
        expected_sha256: The sha256 the deployment expects, if it pins one.
        model_format: Which file to check: ``sklearn`` (``model.joblib``) or ``onnx`` (``model.onnx``).

    Returns:
        The metadata.

    Raises:
        ArtifactError: A file is missing or a checksum does not match.
    """
    directory = Path(directory)
    metadata = read_metadata(directory)
    path = directory / FILES[model_format]
    if not path.is_file():
        raise ArtifactError(f"{path} not found")
    check_sha256(path, sha256_file(path), metadata, expected_sha256, model_format)
    return metadata


def check_sha256(
    path: Path, actual: str, metadata: dict[str, Any], expected_sha256: str | None, model_format: str
) -> None:
    """Compare a model file's sha256 with the one ``model.json`` records and the pinned one.

    Raises:
        ArtifactError: Either differs (or ``model.json`` records none for this file).
    """
    recorded = metadata.get(RECORDED[model_format])
    if actual != recorded:
        raise ArtifactError(
            f"{path} sha256 {actual} does not match {recorded} recorded in {METADATA_FILE}: "
            f"refusing to {'unpickle' if model_format == SKLEARN else 'load'} a file that was modified"
        )
    if expected_sha256 and actual != expected_sha256.lower():
        raise ArtifactError(
            f"{path} sha256 {actual} does not match the pinned sha256 {expected_sha256}: "
            "refusing to serve a model the deployment did not approve"
        )


def load_artifact(
    directory: str | Path,
    expected_sha256: str | None = None,
    model_format: str = SKLEARN,
    intra_op_threads: int = 1,
) -> ModelArtifact:
    """Verify, then load, an artifact in one of its forms.

    Args:
        directory: The artifact directory.
        expected_sha256: The sha256 the deployment pins, if any (see :func:`verify_artifact`).
        model_format: ``sklearn`` (unpickle ``model.joblib``) or ``onnx`` (``model.onnx`` under onnxruntime;
            see :func:`serving_format` for when to choose it).
        intra_op_threads: Threads of one onnxruntime call (``onnx`` only).

    Returns:
        The loaded artifact.

    Raises:
        ArtifactError: The integrity check failed (nothing was loaded) or the file could not be loaded.
    """
    directory = Path(directory)
    if model_format == ONNX:
        return _load_compiled(directory, expected_sha256, intra_op_threads)
    metadata = read_metadata(directory)
    data = _read_verified(directory, metadata, expected_sha256, SKLEARN)
    if ONNX_SHA256 in metadata:  # hashed, not loaded: an artifact with any file modified is refused whole
        verify_artifact(directory, model_format=ONNX)
    read_dle(directory, metadata)
    read_outliers(directory, metadata)
    calibrated = read_intervals(directory, metadata)
    try:
        import joblib

        # From the bytes checked, never from the path again: a file swapped in since would be unpickled.
        pipeline = joblib.load(io.BytesIO(data))
    except ImportError as error:
        raise ArtifactError(
            f"cannot load {MODEL_FILE}: {error.name} is not installed (the predictor-sklearn extra); "
            f"serve {ONNX_FILE} instead"
        ) from error
    except Exception as error:  # a verified file that still fails to load: wrong library versions, most often
        raise ArtifactError(
            f"cannot load {MODEL_FILE} (libraries {metadata.get('libraries')}): {error}"
        ) from error
    return ModelArtifact(pipeline=pipeline, metadata=metadata, path=directory, intervals=calibrated)


def _load_compiled(directory: Path, expected_sha256: str | None, intra_op_threads: int) -> ModelArtifact:
    from model.compiled import CompiledModel

    # model.joblib is hashed too, never loaded: an artifact with any file modified is refused as a whole.
    metadata = verify_artifact(directory)
    read_dle(directory, metadata)
    read_outliers(directory, metadata)
    calibrated = read_intervals(directory, metadata)
    data = _read_verified(directory, metadata, expected_sha256, ONNX)
    try:
        compiled = CompiledModel(data, intra_op_threads)  # from the bytes checked, not from the path
    except Exception as error:  # onnxruntime raises its own types: a file it cannot run, most often
        raise ArtifactError(
            f"cannot load {ONNX_FILE} (libraries {metadata.get('libraries')}): {error}"
        ) from error
    return ModelArtifact(
        pipeline=compiled, metadata=metadata, path=directory, format=ONNX, intervals=calibrated
    )


def _read_verified(
    directory: Path, metadata: dict[str, Any], expected_sha256: str | None, model_format: str
) -> bytes:
    """The bytes of the model file of ``model_format``, read once and checked (:func:`check_sha256`).

    The caller loads these bytes, never the file again: what was checked is what runs.

    Raises:
        ArtifactError: The file is missing or its sha256 differs.
    """
    path = directory / FILES[model_format]
    if not path.is_file():  # a directory or a pipe is no model file
        raise ArtifactError(f"{path} not found")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ArtifactError(f"{path} not found") from None
    check_sha256(path, hashlib.sha256(data).hexdigest(), metadata, expected_sha256, model_format)
    return data


def read_dle(directory: str | Path, metadata: dict[str, Any]) -> bytes | None:
    """The verified bytes of ``dle.json`` (:mod:`model.dle`), or ``None`` for an artifact without one.

    Read once, so the bytes checked are the bytes parsed.

    Raises:
        ArtifactError: ``model.json`` records a ``dle.json`` that is missing or whose sha256 differs.
    """
    return _read_recorded(Path(directory) / DLE_FILE, metadata.get(DLE_SHA256))


def read_outliers(directory: str | Path, metadata: dict[str, Any]) -> bytes | None:
    """The verified bytes of ``outliers.json`` (:mod:`model.outliers`), or ``None`` for an artifact without.

    Raises:
        ArtifactError: ``model.json`` records an ``outliers.json`` that is missing or whose sha256 differs.
    """
    return _read_recorded(Path(directory) / OUTLIERS_FILE, metadata.get(OUTLIERS_SHA256))


def read_intervals(directory: str | Path, metadata: dict[str, Any]) -> Intervals | None:
    """The verified calibrated intervals (``intervals.json``), or ``None`` for an artifact without them.

    Raises:
        ArtifactError: ``model.json`` records an ``intervals.json`` that is missing, modified or unreadable.
    """
    path = Path(directory) / INTERVALS_FILE
    data = _read_recorded(path, metadata.get(INTERVALS_SHA256))
    if data is None:
        return None
    try:
        return Intervals.from_bytes(data)
    except ValueError as error:
        raise ArtifactError(f"{path}: {error}") from error


def _read_recorded(path: Path, recorded: str | None) -> bytes | None:
    """A JSON side file's bytes, read once and checked against the sha256 ``model.json`` records."""
    if recorded is None:
        return None
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ArtifactError(f"{path} not found ({METADATA_FILE} records its sha256)") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != recorded:
        raise ArtifactError(
            f"{path} sha256 {actual} does not match {recorded} recorded in {METADATA_FILE}: "
            "refusing to load a file that was modified"
        )
    return data
