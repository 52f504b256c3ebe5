"""The original system's serving design, a baseline: FastAPI, a pydantic model per house, the joblib pipeline.

``POST /predict`` with ``{"instances": [{"crim": ..., "lstat": ...}]}`` answers ``{"predictions": [...]}``.
Run by ``python -m benchmarks.serving fastapi-server ARTIFACT PORT`` (a helper of ``./dev bench serving``).
No ``from __future__ import annotations`` here: FastAPI reads the request model from the endpoint's
annotations at run time.
"""

import numpy as np
from fastapi import FastAPI
from pydantic import BaseModel

from model.artifact import load_artifact


class House(BaseModel):
    """The default model's features (the original payload; ``b`` is accepted and unused)."""

    crim: float
    zn: float
    indus: float
    chas: float
    nox: float
    rm: float
    age: float
    dis: float
    rad: float
    tax: float
    ptratio: float
    b: float | None = None
    lstat: float


class PredictRequest(BaseModel):
    """Houses to price."""

    instances: list[House]


def build_app(artifact_dir: str) -> FastAPI:
    """The app serving the pipeline of ``artifact_dir``."""
    artifact = load_artifact(artifact_dir)
    names = artifact.feature_names
    app = FastAPI()

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/predict")
    def predict(request: PredictRequest) -> dict[str, list[float]]:
        rows = np.array([[getattr(house, name) for name in names] for house in request.instances])
        return {"predictions": artifact.pipeline.predict(rows).tolist()}

    return app
