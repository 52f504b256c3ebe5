"""The transformer: validates named features, calls a predictor with one tensor in that predictor's order.

``preprocess`` picks the predictor (the stable one or a canary, :mod:`transformer.routing`) and turns the
client's payload (see :mod:`transformer.payload`) into rows in that predictor's feature order, which it reads
from the predictor's V2 model metadata (``parameters.feature_names``), so the transformer never spells the
feature list out. ``predict`` is KServe's own call to the predictor (REST V1/V2 or gRPC V2), with failures
turned into 503 (unreachable, not ready) or 504 (too slow). ``postprocess`` logs the request and response
(when a request logger is set) and answers in the client's protocol: predictions are the median home value in
USD 1000s.

**Intervals** (:mod:`serving.outputs` says how a request asks for them): the transformer checks what is asked
(a 400 for an unknown output or a level not served), asks the chosen predictor for the bounds at that level
(each arm's model gives its own), and answers them in the client's protocol; V2 without ``outputs`` gets
exactly the answer it always got. With a request logger, the bounds at the monitored level (90%) are asked
for every request whose client did not ask for a level, so the detector can score every label
(``housing_interval_coverage``); the client's answer is unchanged by it.

Faults stay bounded (:mod:`transformer.resilience`): each request has a deadline from its arrival (the
predictor timeout, or less with ``x-request-timeout``) that covers every wait; a predictor whose circuit
breaker is open is not called (503 at once); beyond ``max_in_flight`` requests in flight the transformer
answers 503 at once instead of queueing.

The request id is the one the client knows: the V2 body's ``id``, else the ``x-request-id`` header, else a
new UUID. It is the ``ce-id`` of the logged events (so ``POST /feedback`` to the detector finds the
prediction), the ``id`` of a V2 answer, and the ``x-request-id`` header of every REST answer. An id that
could not be carried so (not 1-256 printable ASCII characters) is refused with a 400 before preprocess
(:mod:`serving.inputs`).
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
from kserve import InferRequest, InferResponse, Model
from kserve.errors import InvalidInput
from kserve.model import InferenceVerb

from model.intervals import BOUND_OUTPUTS, LEVEL_PARAMETER
from model.schema import FEATURES_BY_NAME, TARGET, TARGET_DESCRIPTION, TARGET_UNIT
from serving.errors import PredictorUnavailableError
from serving.metrics import BATCH_ROWS
from serving.outputs import (
    INTERVALS,
    PRICE_ONLY,
    NoIntervalsError,
    Outputs,
    requested,
    v1_intervals,
    v2_outputs,
)
from serving.payload import FEATURE_NAMES
from serving.policy import rows_limit
from transformer.explain import ExplainerClient, check_same_model
from transformer.metrics import IN_FLIGHT, SHED, VALIDATION_ERRORS
from transformer.payload import PayloadError, rows_from
from transformer.request_logger import RequestLogger
from transformer.resilience import DEFAULT_MAX_IN_FLIGHT, Admission, Deadline
from transformer.routing import Answer, PredictorArm, PredictorMetadata, Router
from transformer.shadow import Shadow

REQUEST_ID_HEADER = "x-request-id"
MODEL_VERSION_HEADER = "x-model-version"
"""The version of the model that answered, on every REST prediction (the seed API's ``model_version``)."""
ARM_HEADER = "x-housing-arm"
"""Which predictor answered (``stable`` or the canary's name), on every REST prediction: an A/B test's arm."""

MAX_BATCH_ROWS = rows_limit("transformer", "/v2/models/{name}/infer")
"""The largest request accepted, in rows (houses; serving/policy.py); the detector refuses larger logged
events alike."""


@dataclass(frozen=True)
class ValidatedRequest:
    """One client request, validated: its rows, the predictor they are for, the answer it wants."""

    rows: np.ndarray
    request_id: str
    arm: PredictorArm
    model: PredictorMetadata
    reply_v2: bool
    deadline: Deadline
    binary_outputs: bool = False
    payload: Any = None  # as the client sent it: a shadow with other features validates it for its own
    outputs: Outputs = PRICE_ONLY  # what the client asked for
    # The interval level asked of the predictor: the client's, else the monitored one (for the detector).
    level: float | None = None


@dataclass(frozen=True)
class Prediction:
    """The predictor's answer for a batch."""

    batch: ValidatedRequest
    answer: Answer


@dataclass(frozen=True)
class Explanation:
    """The explainer's answer for a batch."""

    batch: ValidatedRequest
    answer: dict[str, Any]


class HousingTransformer(Model):
    """Validates payloads against the schema and forwards them to the stable predictor or a canary.

    Args:
        name: The model name (``housing``), the same on the transformer and the predictors.
        router: The predictors and the draw that picks one per request.
        max_batch_rows: The largest batch accepted.
        request_logger: Where to send inference CloudEvents, or ``None``.
        max_in_flight: Requests admitted at once (in flight or queued); the rest get 503 at once.
        explainer: Where ``:explain`` goes (:mod:`transformer.explain`), or ``None``: 501.
        shadow: The predictor that gets copies of the requests (:mod:`transformer.shadow`), or ``None``.
    """

    def __init__(
        self,
        name: str,
        router: Router,
        *,
        max_batch_rows: int = MAX_BATCH_ROWS,
        request_logger: RequestLogger | None = None,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        explainer: ExplainerClient | None = None,
        shadow: Shadow | None = None,
    ):
        # KServe then hands ``response_headers`` to predict and postprocess: the request id goes back in them.
        super().__init__(name, return_response_headers=True)
        self.router = router
        self.max_batch_rows = max_batch_rows
        self.request_logger = request_logger
        self.timeout = router.stable.timeout
        self.explainer = explainer
        self.shadow = shadow
        self.explainer_host = explainer.host if explainer else None  # KServe's attribute, for introspection
        in_flight = IN_FLIGHT.labels(name)
        self.admission = Admission(max_in_flight, on_change=in_flight.set, on_refuse=SHED.labels(name).inc)
        # Ready to validate, whatever the predictors' state: their faults are answered per request with
        # 503/504, so a predictor that is down never takes the transformer out of its Service.
        self.ready = True

    async def __call__(
        self,
        body: Any,
        headers: dict[str, str] | None = None,
        verb: InferenceVerb = InferenceVerb.PREDICT,
    ) -> Any:
        """KServe's steps (preprocess, predict, postprocess), or 503 at once when too many are in flight."""
        with self.admission.admit():
            return await super().__call__(body, headers, verb)

    async def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> ValidatedRequest:
        """Start the request's deadline, choose the predictor, validate the payload and build its rows."""
        deadline = Deadline.start(self.timeout, headers)
        arm, model = await self.router.arm_and_model(deadline, headers)
        try:
            outputs = requested(payload, TARGET)
            level = self._level(outputs, model)
        except InvalidInput:  # an unknown output, a level not served, or bounds from a model without them
            VALIDATION_ERRORS.labels(self.name, "other", "bad_output").inc()
            raise
        try:
            rows = rows_from(payload, model.feature_names, self.max_batch_rows)
        except PayloadError as error:
            field = (
                error.field
                if error.field in FEATURES_BY_NAME or error.field in ("instances", "inputs")
                else "other"
            )
            VALIDATION_ERRORS.labels(self.name, field, error.rule).inc()
            raise
        BATCH_ROWS.labels(component="transformer", model_name=self.name).observe(len(rows))
        request_id = (
            (payload.id if isinstance(payload, InferRequest) else None)
            or (headers or {}).get(REQUEST_ID_HEADER)
            or str(uuid.uuid4())
        )
        v2 = isinstance(payload, InferRequest)
        binary = payload.use_binary_outputs if isinstance(payload, InferRequest) else False
        return ValidatedRequest(rows, request_id, arm, model, v2, deadline, binary, payload, outputs, level)

    def dead(self) -> str | None:
        """Why the transformer cannot do its whole job again without a restart (liveness fails), or ``None``.

        A request logger whose sender stopped would lose every inference from then on while predictions
        still succeed: only a restart brings it back (:attr:`RequestLogger.alive`).
        """
        if self.request_logger is not None and not self.request_logger.alive:
            return "the request logger stopped: inferences are no longer logged"
        return None

    def validate(self, payload: Any) -> Any:
        """Nothing to add: :meth:`preprocess` validated the payload against the schema."""
        return payload

    async def predict(
        self,
        batch: ValidatedRequest,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> Prediction:
        """Ask the chosen predictor, merged with other waiting requests for it unless batching is off.

        A canary that cannot be reached hands its request to the stable predictor (:meth:`Router.fallback`),
        within what is left of the same deadline.
        """
        try:
            answer = await batch.arm.predict(
                batch.rows, batch.model, batch.request_id, headers, batch.deadline, batch.level
            )
        except PredictorUnavailableError as error:
            stable = self.router.fallback(batch.arm, batch.model)
            if stable is None:
                raise
            if stable.cached_model is not None and batch.level is not None:
                try:  # the stable model's own intervals: the monitored level may go, the client's is refused
                    batch = dataclasses.replace(batch, level=self._level(batch.outputs, stable.cached_model))
                except InvalidInput:
                    raise error from None
            batch = dataclasses.replace(batch, arm=stable)
            answer = await stable.predict(
                batch.rows, batch.model, batch.request_id, headers, batch.deadline, batch.level
            )
        return Prediction(batch, answer)

    def _level(self, outputs: Outputs, model: PredictorMetadata) -> float | None:
        """The interval level to ask ``model``'s predictor for.

        The client's, else the monitored one (when logging and the model has it), else none.

        Raises:
            InvalidInput: The client asked for bounds the model cannot give (trained before intervals).
        """
        if outputs.level is not None:
            if outputs.level not in model.interval_levels:
                raise NoIntervalsError(
                    f"{LEVEL_PARAMETER}: the model that answers (version {model.version}) has no intervals "
                    "(it was trained before them); ask for the price alone"
                )
            return outputs.level
        return model.monitored_level if self.request_logger is not None else None

    async def explain(self, payload: ValidatedRequest, headers: dict[str, str] | None = None) -> Explanation:
        """Send the validated houses to the explainer (V1 ``:explain``), within the request's deadline.

        Raises:
            NotImplementedError: No explainer is configured (KServe answers 501).
            UpstreamError: The explainer failed, timed out or explains another model (see
                :mod:`transformer.explain`).
        """
        if self.explainer is None:
            raise NotImplementedError(
                ":explain: this transformer has no explainer (start it with --explainer_host HOST:PORT)"
            )
        batch = payload
        answer = await self.explainer.explain(batch.model.feature_names, batch.rows, batch.deadline, headers)
        stable = await self.router.stable.model(batch.deadline)
        check_same_model(answer, stable.version, self.explainer.host)
        return Explanation(batch, answer)

    def postprocess(
        self,
        prediction: Prediction | Explanation,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> Any:
        """Log the request and response, give the id back, and answer in the client's protocol."""
        if isinstance(prediction, Explanation):  # not logged: the detector watches predictions
            if response_headers is not None:
                response_headers[REQUEST_ID_HEADER] = prediction.batch.request_id
            return prediction.answer
        batch, answer = prediction.batch, prediction.answer
        if self.request_logger is not None:
            self.request_logger.log(
                batch.model.feature_names,
                batch.rows,
                answer.values,
                model_version=answer.model_version,
                request_id=batch.request_id,
                endpoint=batch.arm.endpoint,
                intervals=None if answer.level is None else (answer.level, answer.lower, answer.upper),
            )
        if self.shadow is not None:  # after the answer is ready: the client never waits for the copy
            self.shadow.mirror(
                batch.payload, batch.rows, batch.model.feature_names, batch.request_id, headers
            )
        if response_headers is not None:  # REST only: KServe's gRPC server drops them (V2 has ``id``)
            response_headers[REQUEST_ID_HEADER] = batch.request_id
            response_headers[MODEL_VERSION_HEADER] = answer.model_version
            response_headers[ARM_HEADER] = batch.arm.spec.name
        outputs = batch.outputs
        if not batch.reply_v2:
            if outputs.level is not None and answer.lower is not None and answer.upper is not None:
                intervals = v1_intervals(outputs.level, answer.lower, answer.upper)
                return {"predictions": answer.values.tolist(), INTERVALS: intervals}
            return {"predictions": answer.values.tolist()}
        tensors = v2_outputs(
            outputs, TARGET, answer.values, answer.lower, answer.upper, binary=batch.binary_outputs
        )
        return InferResponse(
            batch.request_id,
            self.name,
            tensors,
            model_version=answer.model_version,
            use_binary_outputs=batch.binary_outputs,
        )

    def get_input_types(self) -> list[dict[str, Any]]:
        """One FP64 input per feature, shape [-1] (the other accepted layouts are in the module docs)."""
        model = self.router.stable.cached_model
        names = model.feature_names if model else ()
        return [{"name": name, "datatype": "FP64", "shape": [-1]} for name in names]

    def get_output_types(self) -> list[dict[str, Any]]:
        """``medv``, the median home value in USD 1000s, and its interval's bounds (asked for by name)."""
        model = self.router.stable.cached_model
        names = (TARGET, *(BOUND_OUTPUTS if model is None or model.interval_levels else ()))
        return [{"name": name, "datatype": "FP64", "shape": [-1]} for name in names]

    async def describe(self) -> dict[str, Any]:
        """Units, the stable predictor's feature order and version, limits: added to the V2 model metadata."""
        model = await self.router.stable.model(Deadline.start(self.timeout, None))
        return {
            "platform": "kserve-transformer",
            "versions": [model.version],
            "inputs": self.get_input_types(),
            "parameters": {
                FEATURE_NAMES: model.feature_list,
                "model_version": model.version,
                "target": TARGET,
                "description": TARGET_DESCRIPTION,
                "unit": TARGET_UNIT,
                "max_batch_rows": self.max_batch_rows,
                **(
                    {"interval_levels": ",".join(f"{level:g}" for level in model.interval_levels)}
                    if model.interval_levels
                    else {}
                ),
            },
        }
