"""The predictor: the trained model behind KServe's V1 and V2 (REST and gRPC) protocols.

It serves the artifact's compiled form (``model.onnx`` under onnxruntime, :mod:`model.compiled`) by default,
or the scikit-learn pipeline (``model.joblib``) with ``model_format="sklearn"``, for an artifact without
``model.onnx``, or when the deployment pins ``model.joblib`` (:func:`model.artifact.serving_format`).

Input: one FP32/FP64 tensor of shape [N, n_features], columns in the model's feature order (listed in the
V2 model metadata ``parameters.feature_names``). Output: ``predictions``, median home value in USD 1000s; a
V2 answer carries the artifact's version in ``model_version``.

Intervals (:mod:`model.intervals`), when asked for as :mod:`serving.outputs` says (V2: ``outputs``
``price_lower``/``price_upper`` with ``parameters.interval_level``; V1: ``parameters.interval_level``): the
compiled form computes them in the same onnxruntime call as the prices, the scikit-learn form from
``intervals.json``. The price output keeps KServe's name, ``output-0``.

A V2 tensor may name its columns in its own ``parameters.feature_names`` (comma-separated), as the
transformer always does: a predictor can be replaced under a running transformer (a rolling update, a Knative
revision) by one whose model takes another order. Names equal to the model's order cost one string compare;
other names are mapped: the model's columns are taken by name and extra columns are ignored; a feature the
model needs but the tensor lacks is a 400 that names it. A tensor without names (and V1) must be in the
model's order, as the metadata says.

A request of more than ``max_batch_rows`` rows (:data:`MAX_BATCH_ROWS` by default) is refused with a 400
before its data are converted.
"""

from __future__ import annotations

import collections
import functools
import logging
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

import numpy as np
from kserve import InferRequest, InferResponse, Model
from kserve.errors import InvalidInput, ModelNotReady
from kserve.utils.utils import generate_uuid, get_predict_input, get_predict_response

from model import storage
from model.artifact import ONNX, SKLEARN, ModelArtifact, load_artifact, read_metadata, serving_format
from model.intervals import BOUND_OUTPUTS, LEVEL_PARAMETER
from model.schema import TARGET, TARGET_UNIT
from predictor.metrics import MODEL_INFO, PREDICTED_VALUE
from serving.metrics import BATCH_ROWS
from serving.outputs import INTERVALS, Outputs, requested, v1_intervals, v2_outputs
from serving.payload import FEATURE_NAMES, check_batch_rows, check_unsigned_shape, select_columns
from serving.policy import rows_limit

NUMERIC_DATATYPES = ("FP32", "FP64")
PRICE_OUTPUT = "output-0"
"""The price's output name: KServe's default for a model's first output, as it always was here."""
Bounds = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]
MAX_BATCH_ROWS = rows_limit("predictor", "/v2/models/{name}/infer")
"""The most rows one request may hold (``--max_batch_rows``): the transformer's default ``--max_batch_rows``,
the most its calls carry, merged or not (raise both together). 1,000 rows of V1 JSON cost about 7 ms here,
10,000 about 0.1 s; the 56 MB request (about 280,000 rows) that took 905 MB is refused before any row is
built (measured: 10-15 us a row, mostly turning JSON into an array)."""

log = logging.getLogger("predictor")

_INFO_HOLDERS: collections.Counter[tuple[str, str, str]] = collections.Counter()
"""Loaded models per ``housing_model_info`` series: a reloaded model's series outlives the one it replaces."""


class HousingModel(Model):
    """Serves one verified model artifact.

    Args:
        name: The model name in the endpoint paths (``housing``).
        storage_uri: Local path, ``file://`` URL or Blob Storage URL of the artifact directory.
        expected_sha256: The sha256 of the model file the deployment pins, if any (``model.onnx``'s to serve
            the compiled form; ``model.joblib``'s serves scikit-learn, see :mod:`model.artifact`).
        model_format: ``onnx`` (the compiled form, the default) or ``sklearn``.
        intra_op_threads: Threads of one onnxruntime call.
        max_batch_rows: The most rows one request may hold; more get a 400.
    """

    def __init__(
        self,
        name: str,
        storage_uri: str,
        expected_sha256: str | None = None,
        model_format: str = ONNX,
        intra_op_threads: int = 1,
        max_batch_rows: int = MAX_BATCH_ROWS,
    ):
        super().__init__(name)
        self.storage_uri = storage_uri
        self.expected_sha256 = expected_sha256
        self.model_format = model_format
        self.intra_op_threads = intra_op_threads
        self.max_batch_rows = max_batch_rows
        self.artifact: ModelArtifact | None = None
        self._download_dir: str | None = None
        self._feature_list = ""
        self._predict: Callable[[np.ndarray], np.ndarray] = self._unloaded
        self._bounds: Bounds | None = None
        self._info: tuple[str, str, str] | None = None  # its housing_model_info labels, while it holds them

    def load(self) -> bool:
        """Download, verify (before loading anything) and load the artifact in the form to serve.

        Raises:
            StorageError: Storage cannot be reached or holds no artifact.
            ArtifactError: The artifact fails its checks (nothing was unpickled).
        """
        if self._download_dir is None:  # local artifacts are read in place: nothing is written there
            self._download_dir = (
                tempfile.mkdtemp(prefix="housing-model-") if storage.is_blob_url(self.storage_uri) else ""
            )
        # No retries inside the storage SDK: the caller retries with its own bounded back-off and says why.
        directory = storage.download(
            self.storage_uri, self._download_dir, retry_total=0, connection_timeout=10
        )
        metadata = read_metadata(directory)
        model_format, reason = serving_format(metadata, self.model_format, self.expected_sha256)
        if reason:
            log.warning("serving %s, not %s: %s", model_format, self.model_format, reason)
        artifact = load_artifact(directory, self.expected_sha256, model_format, self.intra_op_threads)
        if model_format == SKLEARN:
            from model.pipeline import predict_validated  # scikit-learn: only the fallback imports it

            self._predict = functools.partial(predict_validated, artifact.pipeline)
        else:
            self._predict = artifact.pipeline.predict
        self._bounds = _bounds(artifact, self._predict)
        self.artifact = artifact
        self._feature_list = ",".join(self.artifact.feature_names)
        # Labelled once here, not per request: a labels() lookup costs about as much as the trees.
        self._batch_rows = BATCH_ROWS.labels(component="predictor", model_name=self.name)
        self._predicted_value = PREDICTED_VALUE.labels(self.name, artifact.version)
        if self._info is None:
            self._info = (self.name, artifact.version, artifact.sha256)
            _INFO_HOLDERS[self._info] += 1
        MODEL_INFO.labels(*self._info).set(1)
        self.ready = True
        return self.ready

    def stop(self) -> None:
        """No longer served (unloaded, or the server stops): not ready, out of ``housing_model_info``."""
        self.ready = False
        if self._info is not None:
            _INFO_HOLDERS[self._info] -= 1
            if not _INFO_HOLDERS[self._info]:  # unless a reload of the same model holds it too
                MODEL_INFO.remove(*self._info)
            self._info = None
        if self._download_dir:  # a Blob download: the files are no longer needed
            shutil.rmtree(self._download_dir, ignore_errors=True)

    def describe_loaded(self) -> str:
        """The model served, for the log line that says the predictor is ready."""
        artifact = self._loaded()
        return (
            f"model {self.name} version {artifact.version} ({artifact.format}) sha256 {artifact.sha256}, "
            f"features {','.join(artifact.feature_names)}"
        )

    def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        """Predict for every row of the payload's tensor, with the bounds it asks for (if any)."""
        artifact = self._loaded()
        outputs = requested(payload, PRICE_OUTPUT)
        rows = self._rows(payload, artifact.feature_names, self._feature_list, self.max_batch_rows)
        lower = upper = None
        if outputs.bounds:
            predictions, lower, upper = self._interval(rows, outputs, artifact)
        else:
            predictions = self._predict(rows)  # the rows were checked just above
        self._batch_rows.observe(len(rows))
        for value in predictions:
            self._predicted_value.observe(value)
        if isinstance(payload, InferRequest) and outputs.names is not None:
            tensors = v2_outputs(
                outputs, PRICE_OUTPUT, predictions, lower, upper, binary=payload.use_binary_outputs
            )
            return InferResponse(
                payload.id or generate_uuid(),
                self.name,
                tensors,
                model_version=artifact.version,
                use_binary_outputs=payload.use_binary_outputs,
            )
        response = get_predict_response(payload, predictions, self.name)
        if isinstance(response, InferResponse):  # the transformer logs the version that answered
            response.model_version = artifact.version
        elif outputs.bounds:
            response[INTERVALS] = v1_intervals(outputs.level, lower, upper)  # type: ignore[arg-type]
        return response

    def _interval(
        self, rows: np.ndarray, outputs: Outputs, artifact: ModelArtifact
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Prices and their bounds at the level asked for."""
        if self._bounds is None or artifact.intervals is None:
            raise InvalidInput(
                f"{LEVEL_PARAMETER}: model {self.name} version {artifact.version} has no intervals (its "
                "artifact was trained before them); ask for the price alone"
            )
        predictions, lower, upper = self._bounds(rows)
        column = artifact.intervals.level_index(outputs.level)  # type: ignore[arg-type]
        return predictions, lower[:, column], upper[:, column]

    def get_input_types(self) -> list[dict[str, Any]]:
        """One tensor of shape [-1, n_features]."""
        return [{"name": "input-0", "datatype": "FP64", "shape": [-1, len(self._loaded().feature_names)]}]

    def get_output_types(self) -> list[dict[str, Any]]:
        """The price (median home value, USD 1000s) and, when the model has them, its interval's bounds."""
        names = (PRICE_OUTPUT, *(BOUND_OUTPUTS if self._loaded().intervals is not None else ()))
        return [{"name": name, "datatype": "FP64", "shape": [-1]} for name in names]

    async def describe(self) -> dict[str, Any]:
        """Model version, feature order and units, added to the V2 model metadata."""
        artifact = self._loaded()
        return {
            "platform": "onnxruntime_onnx" if artifact.format == ONNX else "sklearn",
            "versions": [artifact.version],
            "parameters": {
                FEATURE_NAMES: ",".join(artifact.feature_names),
                "model_version": artifact.version,
                "model_format": artifact.format,
                "sha256": artifact.sha256,
                "target": TARGET,
                "unit": TARGET_UNIT,
                "max_batch_rows": self.max_batch_rows,
                **interval_parameters(artifact),
            },
        }

    def _unloaded(self, rows: np.ndarray) -> np.ndarray:
        raise ModelNotReady(self.name, "the model is still loading")

    def _loaded(self) -> ModelArtifact:
        if self.artifact is None:
            raise ModelNotReady(self.name, "the model is still loading")
        return self.artifact

    @staticmethod
    def _rows(payload: Any, feature_names: list[str], feature_list: str, max_rows: int) -> np.ndarray:
        columns = feature_names
        if isinstance(payload, InferRequest):
            if len(payload.inputs) != 1:
                raise InvalidInput(
                    f"expected one input tensor that {_shape_rule(columns)}, got {len(payload.inputs)}"
                )
            try:
                check_unsigned_shape(payload.inputs[0].name, payload.inputs[0].shape)
            except ValueError as error:
                raise InvalidInput(str(error)) from None
            if payload.inputs[0].datatype not in NUMERIC_DATATYPES:
                raise InvalidInput(
                    f"input-0: datatype {payload.inputs[0].datatype} is not supported; use FP32 or FP64"
                )
            columns = _named_columns(payload.inputs[0].parameters, feature_names, feature_list)
        _check_row_count(payload, max_rows)
        try:
            rows = np.asarray(get_predict_input(payload, columns=feature_names), dtype=np.float64)
        except (ValueError, TypeError, KeyError, IndexError) as error:
            raise InvalidInput(f"input-0: {_shape_rule(columns)} ({error})") from None
        if rows.ndim != 2 or rows.shape[1] != len(columns) or rows.shape[0] == 0:
            raise InvalidInput(f"input-0: {_shape_rule(columns)}, got shape {list(rows.shape)}")
        rows = select_columns(rows, columns, feature_names)  # named in another order, or with extra columns
        if not np.isfinite(rows).all():
            raise InvalidInput("input-0: every value must be a finite number (no NaN or infinity)")
        return rows


def interval_parameters(artifact: ModelArtifact) -> dict[str, str]:
    """What the V2 metadata says about the model's intervals: its levels and method (nothing without them)."""
    if artifact.intervals is None:
        return {}
    return {
        "interval_levels": ",".join(f"{level:g}" for level in artifact.intervals.levels),
        "interval_method": artifact.intervals.method,
    }


def _bounds(artifact: ModelArtifact, predict: Callable[[np.ndarray], np.ndarray]) -> Bounds | None:
    """How the loaded form computes prices with their bounds at every level; ``None`` without intervals.

    The compiled form computes both in one onnxruntime call; the scikit-learn form applies ``intervals.json``
    to its prices.
    """
    calibrated = artifact.intervals
    if calibrated is None:
        return None
    if artifact.format == ONNX and getattr(artifact.pipeline, "levels", ()) == calibrated.levels:
        return artifact.pipeline.predict_bounds

    def bounds(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        predictions = predict(rows)
        return predictions, *calibrated.bounds(rows, predictions)

    return bounds


def _check_row_count(payload: Any, max_rows: int) -> None:
    """Refuse more than ``max_rows`` rows before any is converted.

    V2 counts by the tensor's declared shape (data that do not fit it are refused when converted), V1 by the
    length of its list.
    """
    if isinstance(payload, InferRequest):
        field, shape = payload.inputs[0].name, payload.inputs[0].shape
        rows = shape[0] if shape else 0
    else:
        field = "inputs" if isinstance(payload, dict) and "inputs" in payload else "instances"
        values = payload.get(field) if isinstance(payload, dict) else None
        rows = len(values) if isinstance(values, list) else 0
    try:
        check_batch_rows(field, rows, max_rows)
    except ValueError as error:
        raise InvalidInput(str(error)) from None


def _shape_rule(columns: list[str]) -> str:
    return f"must be numbers of shape [N, {len(columns)}], columns {', '.join(columns)}"


def _named_columns(parameters: Any, feature_names: list[str], feature_list: str) -> list[str]:
    """The tensor's column names: ``feature_names`` itself when it names none or the same order.

    Args:
        parameters: The tensor's parameters (``feature_names``, comma-separated, if given).
        feature_names: The model's features, in its order.
        feature_list: The same, joined by commas (computed once, compared on every request).

    Raises:
        InvalidInput: The names are malformed, repeated, or lack a feature the model needs.
    """
    given = (parameters or {}).get(FEATURE_NAMES)
    if given is None or given == feature_list:  # the hot path: one string compare
        return feature_names
    if not isinstance(given, str):
        raise InvalidInput(f"input-0: parameters.{FEATURE_NAMES} must be a comma-separated string of names")
    columns = given.split(",")
    if len(set(columns)) != len(columns):
        raise InvalidInput(f"input-0: parameters.{FEATURE_NAMES} names a column twice: {given}")
    missing = [name for name in feature_names if name not in columns]
    if missing:
        raise InvalidInput(
            f"input-0: parameters.{FEATURE_NAMES} lacks {', '.join(missing)}, which the model needs "
            f"(it takes {', '.join(feature_names)})"
        )
    return columns
