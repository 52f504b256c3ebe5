"""What a request does not pay for: KServe's per-request timing middleware and log lines."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from timing_asgi import TimingClient, TimingMiddleware
from timing_asgi.integrations import StarletteScopeToName

from serving.server import _build_without_timing
from tests.serving.conftest import MODEL, Server


class Recorder(TimingClient):
    def __init__(self) -> None:
        self.timings: list[str] = []

    def timing(self, metric_name, timing, tags) -> None:
        self.timings.append(metric_name)


def middleware_classes(app) -> list[type]:
    classes, layer = [], app
    while hasattr(layer, "app"):
        classes.append(type(layer))
        layer = layer.app
    return classes


def test_the_timing_middleware_is_left_out_of_the_stack():
    app = FastAPI()
    app.add_middleware(
        TimingMiddleware, client=Recorder(), metric_namer=StarletteScopeToName(prefix="p", starlette_app=app)
    )
    assert TimingMiddleware in middleware_classes(app.build_middleware_stack())
    assert TimingMiddleware not in middleware_classes(_build_without_timing(app))


def test_requests_add_no_log_lines(predictor: Server, houses, rows_of):
    row = rows_of(houses[:1])
    body = {
        "inputs": [
            {"name": "input-0", "datatype": "FP64", "shape": [1, row.shape[1]], "data": row[0].tolist()}
        ]
    }
    url = f"{predictor.url}/v2/models/{MODEL}/infer"
    assert httpx.post(url, json=body).status_code == 200
    before = predictor.service.log(characters=10**6)
    with httpx.Client() as client:
        for _ in range(50):
            assert client.post(url, json=body).status_code == 200
    assert predictor.service.log(characters=10**6) == before
