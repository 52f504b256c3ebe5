"""The transformer: validates named features, calls the predictor with one tensor in the model's order.

``preprocess`` turns the client's payload (see :mod:`transformer.payload`) into rows in the model's
feature order, which it reads from the predictor's V2 model metadata (``parameters.feature_names``), so the
transformer never spells the feature list out. ``predict`` is KServe's own call to the predictor (REST
V1/V2 or gRPC V2), with failures turned into 503 (unreachable, not ready) or 504 (too slow).
``postprocess`` answers in the client's protocol: predictions are the median home value in USD 1000s.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
from grpc import StatusCode
from grpc.aio import AioRpcError
from kserve import InferenceGRPCClient, InferInput, InferOutput, InferRequest, InferResponse, Model
from prometheus_client import Counter

from model.request_logger import RequestLogger
from model.schema import FEATURES_BY_NAME, TARGET, TARGET_DESCRIPTION, TARGET_UNIT
from predictor.server import BATCH_ROWS, PredictorTimeoutError, PredictorUnavailableError, UpstreamError
from transformer.batching import Coalescer
from transformer.payload import PayloadError, rows_from_v1, rows_from_v2

VALIDATION_ERRORS = Counter(
    "housing_validation_errors_total", "Payloads refused, by field and rule.", ["model_name", "field", "rule"]
)
PREDICTOR_ERRORS = Counter(
    "housing_predictor_errors_total", "Failed calls to the predictor, by reason.", ["model_name", "reason"]
)


@dataclass(frozen=True)
class PredictorModel:
    """What the transformer learns from the predictor's V2 metadata."""

    feature_names: list[str]
    version: str


@dataclass(frozen=True)
class Batch:
    """Validated rows, and how the client wants its answer."""

    rows: np.ndarray
    request_id: str
    reply_v2: bool
    binary_outputs: bool = False


@dataclass(frozen=True)
class Prediction:
    """The predictor's answer for a batch."""

    batch: Batch
    values: np.ndarray
    model: PredictorModel


class HousingTransformer(Model):
    """Validates payloads against the schema and forwards them to the predictor.

    Args:
        name: The model name (``housing``), the same on the transformer and the predictor.
        metadata_url: Base URL of the predictor's REST server, to read its V2 model metadata.
        max_batch_rows: The largest batch accepted.
        timeout: Seconds allowed for each call to the predictor.
        request_logger: Where to send inference CloudEvents (local stack only), or ``None``.
        coalesce_rows: Merge the rows of requests that wait at the same time into predictor calls of up to
            this many rows (see :mod:`transformer.batching`); 0 sends every request on its own.
    """

    _grpc_client_stub: InferenceGRPCClient | None

    def __init__(
        self,
        name: str,
        metadata_url: str,
        *,
        max_batch_rows: int = 1000,
        timeout: float = 5.0,
        request_logger: RequestLogger | None = None,
        coalesce_rows: int = 256,
    ):
        super().__init__(name)
        self.metadata_url = metadata_url.rstrip("/")
        self.max_batch_rows = max_batch_rows
        self.timeout = timeout
        self.request_logger = request_logger
        self._predictor_model: PredictorModel | None = None
        self._metadata_lock = asyncio.Lock()
        self._coalescer = (
            Coalescer(self._call_coalesced, max_rows=coalesce_rows) if coalesce_rows > 0 else None
        )
        self.ready = True  # ready to validate; predictor faults are answered per request with 503/504

    async def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> Batch:
        """Validate the payload and build rows in the model's feature order."""
        features = (await self.predictor_model()).feature_names
        try:
            if isinstance(payload, InferRequest):
                rows = rows_from_v2(payload, features, self.max_batch_rows)
            else:
                rows = rows_from_v1(payload, features, self.max_batch_rows)
        except PayloadError as error:
            field = (
                error.field
                if error.field in FEATURES_BY_NAME or error.field in ("instances", "inputs")
                else "other"
            )
            VALIDATION_ERRORS.labels(self.name, field, error.rule).inc()
            raise
        BATCH_ROWS.labels(component="transformer", model_name=self.name).observe(len(rows))
        request_id = (payload.id if isinstance(payload, InferRequest) else None) or (headers or {}).get(
            "x-request-id"
        )
        if isinstance(payload, InferRequest):
            return Batch(rows, request_id or str(uuid.uuid4()), True, payload.use_binary_outputs)
        return Batch(rows, request_id or str(uuid.uuid4()), False)

    def validate(self, payload: Any) -> Any:
        """Nothing to add: :meth:`preprocess` validated the payload against the schema."""
        return payload

    async def predict(self, batch: Batch, headers: dict[str, str] | None = None) -> Prediction:
        """Ask the predictor, merged with other waiting requests unless batching is off."""
        model = await self.predictor_model()
        if self._coalescer is None:
            values = await self._call_predictor(batch.rows, batch.request_id, headers)
        else:
            # Requests merge only with others that carry the same credentials to the predictor. The timeout
            # covers the wait for a call slot too: a request queued behind a hung call still fails in time.
            key = (headers or {}).get("authorization")
            waiting = self._coalescer.predict(batch.rows, key=key, context=(batch.request_id, headers))
            try:
                values = await asyncio.wait_for(waiting, self.timeout)
            except TimeoutError as error:  # the hung call itself is counted when its own timeout ends it
                raise self._predictor_failure(error, counted=False) from error
        return Prediction(batch, values, model)

    async def _call_predictor(
        self, rows: np.ndarray, request_id: str | None = None, headers: dict[str, str] | None = None
    ) -> np.ndarray:
        """One call to the predictor through KServe's own REST or gRPC client; its predictions as FP64."""
        if self.predictor_config.protocol == "v1":
            request: Any = {"instances": rows.tolist()}
        else:
            tensor = InferInput("input-0", list(rows.shape), "FP64")
            # gRPC carries the tensor as raw bytes; REST as JSON (KServe's REST binary extension fails here).
            tensor.set_data_from_numpy(rows, binary_data=self.predictor_config.protocol == "grpc-v2")
            request = InferRequest(self.name, [tensor], request_id=request_id or str(uuid.uuid4()))
        try:
            response = await super().predict(request, headers)
        except Exception as error:
            raise self._predictor_failure(error) from error
        if isinstance(response, InferResponse):
            return response.outputs[0].as_numpy().reshape(-1)
        return np.asarray(response["predictions"], dtype=np.float64)

    async def _call_coalesced(self, rows: np.ndarray, contexts: list[Any]) -> np.ndarray:
        # A lone request keeps its id and headers; a merged call gets its own id and the shared credentials.
        request_id, headers = contexts[0]
        if len(contexts) > 1:
            authorization = (headers or {}).get("authorization")
            request_id, headers = None, {"authorization": authorization} if authorization else None
        return await self._call_predictor(rows, request_id, headers)

    def postprocess(self, prediction: Prediction, headers: dict[str, str] | None = None) -> Any:
        """Answer in the client's protocol; hand the event to the request logger if there is one."""
        batch, values = prediction.batch, prediction.values
        if self.request_logger is not None:
            self.request_logger.log(
                prediction.model.feature_names,
                batch.rows,
                values,
                model_version=prediction.model.version,
                request_id=batch.request_id,
            )
        if not batch.reply_v2:
            return {"predictions": values.tolist()}
        output = InferOutput(TARGET, [len(values)], "FP64")
        output.set_data_from_numpy(values, binary_data=batch.binary_outputs)
        return InferResponse(
            batch.request_id,
            self.name,
            [output],
            model_version=prediction.model.version,
            use_binary_outputs=batch.binary_outputs,
        )

    @property
    def _grpc_client(self) -> InferenceGRPCClient:
        # KServe's channel backs off up to 120 s once the predictor has gone away; capped at 1 s here, so a
        # predictor that comes back is used again within a second.
        if self._grpc_client_stub is None:
            config = self.predictor_config
            self._grpc_client_stub = InferenceGRPCClient(
                config.predictor_host,
                use_ssl=config.use_ssl,
                timeout=config.timeout,
                retries=config.retries,
                channel_args=[
                    ("grpc.max_send_message_length", -1),
                    ("grpc.max_receive_message_length", -1),
                    ("grpc.initial_reconnect_backoff_ms", 100),
                    ("grpc.min_reconnect_backoff_ms", 100),
                    ("grpc.max_reconnect_backoff_ms", 1000),
                ],
            )
        return self._grpc_client_stub

    async def predictor_model(self) -> PredictorModel:
        """The predictor's feature order and version, read from its V2 model metadata once and cached."""
        if self._predictor_model is None:
            async with self._metadata_lock:  # one read for a burst of first requests
                if self._predictor_model is None:
                    self._predictor_model = await self._read_predictor_metadata()
        return self._predictor_model

    async def _read_predictor_metadata(self) -> PredictorModel:
        url = f"{self.metadata_url}/v2/models/{self.name}"
        try:
            async with httpx.AsyncClient(timeout=self.timeout) as client:
                response = await client.get(url)
            response.raise_for_status()
            metadata = response.json()
            names = metadata["parameters"]["feature_names"].split(",")
        except Exception as error:
            raise self._predictor_failure(error, f"cannot read the predictor's metadata at {url}") from error
        return PredictorModel(names, str(metadata.get("versions", ["unknown"])[0]))

    def get_input_types(self) -> list[dict[str, Any]]:
        """One FP64 input per feature, shape [-1] (the other accepted layouts are in the module docs)."""
        names = self._predictor_model.feature_names if self._predictor_model else []
        return [{"name": name, "datatype": "FP64", "shape": [-1]} for name in names]

    def get_output_types(self) -> list[dict[str, Any]]:
        """``medv``: median home value, USD 1000s."""
        return [{"name": TARGET, "datatype": "FP64", "shape": [-1]}]

    async def describe(self) -> dict[str, Any]:
        """Units, feature order and limits, added to the V2 model metadata."""
        model = await self.predictor_model()
        return {
            "platform": "kserve-transformer",
            "versions": [model.version],
            "inputs": self.get_input_types(),
            "parameters": {
                "feature_names": ",".join(model.feature_names),
                "model_version": model.version,
                "target": TARGET,
                "description": TARGET_DESCRIPTION,
                "unit": TARGET_UNIT,
                "max_batch_rows": self.max_batch_rows,
            },
        }

    def _predictor_failure(
        self, error: BaseException, context: str = "predictor call failed", *, counted: bool = True
    ) -> UpstreamError:
        self._predictor_model = None  # re-read the metadata next time: the predictor may have changed
        host = self.predictor_config.predictor_host if self.predictor_config else self.metadata_url
        failure: UpstreamError
        if isinstance(error, httpx.TimeoutException | asyncio.TimeoutError) or (
            isinstance(error, AioRpcError) and error.code() == StatusCode.DEADLINE_EXCEEDED
        ):
            failure = PredictorTimeoutError(
                f"{context}: the predictor at {host} did not answer within {self.timeout:g} s"
            )
        elif isinstance(error, httpx.TransportError) or (
            isinstance(error, AioRpcError) and error.code() == StatusCode.UNAVAILABLE
        ):
            failure = PredictorUnavailableError(f"{context}: the predictor at {host} is unreachable: {error}")
        elif isinstance(error, httpx.HTTPStatusError) and error.response.status_code == 503:
            failure = PredictorUnavailableError(f"{context}: the predictor at {host} is not ready")
        elif isinstance(error, UpstreamError):
            return error
        else:
            failure = UpstreamError(f"{context}: {error}")
        reason = {PredictorTimeoutError: "timeout", PredictorUnavailableError: "unavailable"}.get(
            type(failure), "error"
        )
        if counted:
            PREDICTOR_ERRORS.labels(self.name, reason).inc()
        return failure
