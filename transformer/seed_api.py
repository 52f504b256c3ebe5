"""The original system's API, served by the transformer next to V1 and V2 (its users' scripts call it today).

- ``GET /health``: 200 ``{"status": "healthy", "model_version": ...}`` while the stable predictor serves the
  model, else 503 ``{"status": "unhealthy", "reason": ...}`` (predictor unreachable, its model not ready or
  gone, or its circuit breaker open; or the transformer itself cannot recover, as liveness says: its request
  logger stopped); the transformer's readiness asks the same question;
- ``POST /predict`` with one flat house (``{"crim": 0.00632, ..., "b": 396.9, "lstat": 4.98}``, ``b``
  accepted and ignored when the model does not use it) -> ``{"prediction": ..., "interval": {"level": 0.9,
  "lower": ..., "upper": ...}, "model_version": ..., "unit": "USD 1000s"}``;
- ``POST /predict/batch`` with ``{"instances": [house, ...]}`` -> ``{"predictions": [...], "intervals":
  [...], ...}``, one interval per house;
- ``POST /explain`` with one flat house, as ``/predict`` takes it -> the explainer's answer for it (each
  feature's contribution, the base value, the prediction; docs/explainer.md); 501 without an explainer;
- ``GET /metrics`` is KServe's own (Prometheus).

**The interval is always included** (the 90% one; ``?interval_level=0.8`` or ``0.95`` for another, any other
value is a 400): a price is half an answer without its range, and a client that reads ``prediction`` is not
disturbed by a key beside it. A model trained before intervals answers without ``interval`` unless a level is
asked for explicitly (then a 400 says why).

The predict and explain routes are V1 requests underneath: they go through KServe's data plane into
:class:`transformer.model.HousingTransformer`, so the same validation and 400s (naming the field and the
rule), admission, deadlines, routing to canaries, batching and inference logging to the detector apply, and
they are counted in ``housing_requests_total``. The routes are FastAPI's, so they are listed in
``/openapi.json`` (and ``/docs`` with ``--enable_docs_url true``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from kserve.protocol.dataplane import DataPlane
from pydantic import BaseModel, Field

from model.intervals import DEFAULT_LEVEL, LEVEL_PARAMETER, level_rule
from model.schema import FEATURES, TARGET_DESCRIPTION, TARGET_UNIT
from serving.errors import UpstreamError
from serving.inputs import parse_json
from serving.outputs import INTERVALS, NoIntervalsError
from transformer.model import MODEL_VERSION_HEADER, REQUEST_ID_HEADER, HousingTransformer
from transformer.payload import PayloadError
from transformer.resilience import Deadline

HEALTH_SECONDS = 2.0
"""How long ``/health`` waits for the predictor's metadata at most."""

_HOUSE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "One house: every feature the model uses (``b`` optional, accepted and ignored by the "
    "default model)",
    "properties": {
        feature.name: {
            "type": "integer" if feature.kind in ("integer", "binary") else "number",
            "description": f"{feature.description} ({feature.unit}); valid: {feature.domain}",
        }
        for feature in FEATURES
    },
    "example": {
        "crim": 0.00632, "zn": 18.0, "indus": 2.31, "chas": 0, "nox": 0.538, "rm": 6.575, "age": 65.2,
        "dis": 4.09, "rad": 1, "tax": 296, "ptratio": 15.3, "b": 396.9, "lstat": 4.98,
    },
}  # fmt: skip


class Interval(BaseModel):
    """A price's calibrated range: the true price lies inside it ``level`` of the time (docs/training.md)."""

    level: float = Field(description="nominal coverage: 0.8, 0.9 or 0.95")
    lower: float = Field(description=f"lower bound, {TARGET_UNIT}")
    upper: float = Field(description=f"upper bound, {TARGET_UNIT}")


class SeedPrediction(BaseModel):
    """The answer of ``POST /predict``."""

    prediction: float = Field(description=f"{TARGET_DESCRIPTION}, {TARGET_UNIT}")
    interval: Interval | None = Field(None, description="absent for a model trained before intervals")
    model_version: str
    unit: str = TARGET_UNIT


class SeedBatchPrediction(BaseModel):
    """The answer of ``POST /predict/batch``: one prediction per house, in order."""

    predictions: list[float] = Field(description=f"{TARGET_DESCRIPTION}, {TARGET_UNIT}")
    intervals: list[Interval] | None = Field(None, description="one per house, in order")
    model_version: str
    unit: str = TARGET_UNIT


LEVEL_QUERY = Query(
    None,
    alias=LEVEL_PARAMETER,
    description=f"the interval's level, default {DEFAULT_LEVEL} ({level_rule()})",
)


class Health(BaseModel):
    """The answer of ``GET /health``."""

    status: str
    model_name: str
    model_version: str | None = None
    reason: str | None = None


def seed_router(dataplane: DataPlane, model: HousingTransformer) -> APIRouter:
    """The seed's routes, answering through ``dataplane`` with ``model``."""
    router = APIRouter(tags=["original API"])

    async def infer(
        body: Any, request: Request, asked: str | None
    ) -> tuple[Any, list[Interval] | None, dict[str, str]]:
        """The predictions and their intervals (at the level ``asked``, else the default one).

        The level is checked by the transformer, as a V1 request's is (a 400 naming the rule, counted).
        """
        level = DEFAULT_LEVEL if asked is None else asked
        # A body that is not an object goes as it came: the transformer's 400 names what is wrong with it.
        with_level = {**body, "parameters": {LEVEL_PARAMETER: level}} if isinstance(body, dict) else body
        try:
            response, headers = await dataplane.infer(model.name, with_level, dict(request.headers.items()))
        except NoIntervalsError:
            if asked is not None:
                raise
            response, headers = await dataplane.infer(model.name, body, dict(request.headers.items()))
        intervals = response.get(INTERVALS)
        return response["predictions"], intervals and [Interval(**bound) for bound in intervals], headers

    @router.get(
        "/health", response_model=Health, response_model_exclude_none=True, responses={503: {"model": Health}}
    )
    async def health() -> Any:
        """200 with the model version while the predictor serves the model, else 503 with the reason."""
        try:
            reason = model.dead() or await model.router.stable.unserved(HEALTH_SECONDS)
            if reason is None:
                metadata = await model.router.stable.model(Deadline.start(HEALTH_SECONDS, None))
        except UpstreamError as error:
            reason = str(error)
        if reason is not None:
            return JSONResponse(
                {"status": "unhealthy", "model_name": model.name, "reason": reason}, status_code=503
            )
        return Health(status="healthy", model_name=model.name, model_version=metadata.version)

    @router.post(
        "/predict",
        response_model=SeedPrediction,
        openapi_extra={
            "requestBody": {"required": True, "content": {"application/json": {"schema": _HOUSE_SCHEMA}}}
        },
    )
    async def predict(request: Request, interval_level: str | None = LEVEL_QUERY) -> Any:
        """The median value of one house, and its interval (the original payload: one flat house)."""
        house = _house(_json(await request.body()))
        with _one_house():
            predictions, intervals, headers = await infer({"instances": [house]}, request, interval_level)
        interval = intervals[0] if intervals else None
        answer = SeedPrediction(prediction=predictions[0], interval=interval, model_version=_version(headers))
        return _answer(answer, headers)

    @router.post(
        "/predict/batch",
        response_model=SeedBatchPrediction,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["instances"],
                            "properties": {"instances": {"type": "array", "items": _HOUSE_SCHEMA}},
                        }
                    }
                },
            }
        },
    )
    async def predict_batch(request: Request, interval_level: str | None = LEVEL_QUERY) -> Any:
        """The median values of several houses, with their intervals: ``{"instances": [house, ...]}``."""
        body = _json(await request.body())
        predictions, intervals, headers = await infer(body, request, interval_level)
        answer = SeedBatchPrediction(
            predictions=predictions, intervals=intervals, model_version=_version(headers)
        )
        return _answer(answer, headers)

    @router.post(
        "/explain",
        openapi_extra={
            "requestBody": {"required": True, "content": {"application/json": {"schema": _HOUSE_SCHEMA}}}
        },
    )
    async def explain(request: Request) -> Any:
        """Why this price: each feature's contribution for one house (the explainer's V1 ``:explain``)."""
        house = _house(_json(await request.body()))
        with _one_house():
            answer, headers = await dataplane.explain(
                model.name, {"instances": [house]}, dict(request.headers.items())
            )
        return JSONResponse(answer, headers={REQUEST_ID_HEADER: headers.get(REQUEST_ID_HEADER, "")})

    return router


@contextlib.contextmanager
def _one_house() -> Iterator[None]:
    """The house is the whole body of ``/predict`` and ``/explain``: errors name its field alone."""
    try:
        yield
    except PayloadError as error:
        raise PayloadError(
            str(error).removeprefix("instances[0]."), field=error.field, rule=error.rule
        ) from None


def _house(body: Any) -> dict[str, Any]:
    """The flat house of ``/predict`` and ``/explain``, or a 400."""
    if not isinstance(body, dict):
        raise PayloadError(
            f"body: must be an object of feature values, got {type(body).__name__}",
            field="instances",
            rule="malformed",
        )
    return body


def _json(body: bytes) -> Any:
    try:
        return parse_json(body)
    except ValueError as error:
        raise PayloadError(str(error), field="instances", rule="malformed") from None


def _version(headers: dict[str, str]) -> str:
    return headers.get(MODEL_VERSION_HEADER, "unknown")


def _answer(content: BaseModel, headers: dict[str, str]) -> JSONResponse:
    return JSONResponse(
        content.model_dump(exclude_none=True), headers={REQUEST_ID_HEADER: headers.get(REQUEST_ID_HEADER, "")}
    )
