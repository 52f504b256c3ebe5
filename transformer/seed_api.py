"""The original system's API, served by the transformer next to V1 and V2 (its users' scripts call it today).

- ``GET /health``: 200 ``{"status": "healthy", "model_version": ...}`` while the stable predictor serves the
  model, else 503 ``{"status": "unhealthy", "reason": ...}`` (predictor unreachable, its model not ready or
  gone, or its circuit breaker open; or the transformer itself cannot recover, as liveness says: its request
  logger stopped); the transformer's readiness asks the same question;
- ``POST /predict`` with one flat house (``{"crim": 0.00632, ..., "b": 396.9, "lstat": 4.98}``, ``b``
  accepted and ignored when the model does not use it) -> ``{"prediction": ..., "model_version": ...,
  "unit": "USD 1000s"}``;
- ``POST /predict/batch`` with ``{"instances": [house, ...]}`` -> ``{"predictions": [...], ...}``;
- ``POST /explain`` with one flat house, as ``/predict`` takes it -> the explainer's answer for it (each
  feature's contribution, the base value, the prediction; docs/explainer.md); 501 without an explainer;
- ``GET /metrics`` is KServe's own (Prometheus).

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

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from kserve.protocol.dataplane import DataPlane
from pydantic import BaseModel, Field

from model.schema import FEATURES, TARGET_DESCRIPTION, TARGET_UNIT
from serving.errors import UpstreamError
from serving.inputs import parse_json
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


class SeedPrediction(BaseModel):
    """The answer of ``POST /predict``."""

    prediction: float = Field(description=f"{TARGET_DESCRIPTION}, {TARGET_UNIT}")
    model_version: str
    unit: str = TARGET_UNIT


class SeedBatchPrediction(BaseModel):
    """The answer of ``POST /predict/batch``: one prediction per house, in order."""

    predictions: list[float] = Field(description=f"{TARGET_DESCRIPTION}, {TARGET_UNIT}")
    model_version: str
    unit: str = TARGET_UNIT


class Health(BaseModel):
    """The answer of ``GET /health``."""

    status: str
    model_name: str
    model_version: str | None = None
    reason: str | None = None


def seed_router(dataplane: DataPlane, model: HousingTransformer) -> APIRouter:
    """The seed's routes, answering through ``dataplane`` with ``model``."""
    router = APIRouter(tags=["original API"])

    async def infer(body: dict[str, Any], request: Request) -> tuple[Any, dict[str, str]]:
        response, headers = await dataplane.infer(model.name, body, dict(request.headers.items()))
        return response["predictions"], headers

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
    async def predict(request: Request) -> Any:
        """The median value of one house (the original system's payload: a flat object of features)."""
        house = _house(_json(await request.body()))
        with _one_house():
            predictions, headers = await infer({"instances": [house]}, request)
        return _answer(SeedPrediction(prediction=predictions[0], model_version=_version(headers)), headers)

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
    async def predict_batch(request: Request) -> Any:
        """The median values of several houses: ``{"instances": [house, ...]}``, answered in order."""
        predictions, headers = await infer(_json(await request.body()), request)
        return _answer(SeedBatchPrediction(predictions=predictions, model_version=_version(headers)), headers)

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
    return JSONResponse(content.model_dump(), headers={REQUEST_ID_HEADER: headers.get(REQUEST_ID_HEADER, "")})
