"""The local request logger: CloudEvents a detector can decode, sent without ever holding up an inference."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import pytest
from cloudevents.http import from_http
from prometheus_client import REGISTRY

from model.request_logger import (
    HEADER_COMPONENT,
    HEADER_ENDPOINT,
    HEADER_ID,
    HEADER_INFERENCE_SERVICE,
    HEADER_METADATA,
    HEADER_TYPE,
    METADATA_MODEL_VERSION,
    REQUEST_TYPE,
    RESPONSE_TYPE,
    RequestLogger,
    decode_metadata,
    encode_metadata,
)
from tests.conftest import free_port, wait_until
from tests.serving.conftest import MODEL, Server, start_transformer

Received = list[tuple[dict[str, str], bytes]]


@pytest.fixture
def receiver() -> Iterator[tuple[str, Received]]:
    """A real HTTP server on loopback recording every event posted to it."""
    received: Received = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            received.append(({key.lower(): value for key, value in self.headers.items()}, body))
            self.send_response(202)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", received
    server.shutdown()
    server.server_close()


def counted(component: str, outcome: str) -> float:
    labels = {"component": component, "outcome": outcome}
    return REGISTRY.get_sample_value("housing_logger_events_total", labels) or 0.0


@pytest.mark.slow
def test_transformer_emits_request_and_response_events(
    predictor: Server, log_dir: Path, receiver, artifact, houses, rows_of
):
    url, received = receiver
    transformer = start_transformer(
        log_dir, predictor, "--logger_url", url, "--endpoint", "canary", name="transformer-logger"
    )
    try:
        response = httpx.post(
            f"{transformer.url}/v1/models/{MODEL}:predict",
            json={"instances": houses[:3]},
            headers={"x-request-id": "req-42"},
        )
        assert response.status_code == 200
        wait_until(lambda: len(received) >= 2, timeout=20, what="two events received")
    finally:
        transformer.service.stop()

    events = {headers[HEADER_TYPE]: (headers, body) for headers, body in received}
    assert set(events) == {REQUEST_TYPE, RESPONSE_TYPE}
    for headers, body in events.values():
        event = from_http(headers, body)  # a valid CloudEvent in binary mode
        assert event["specversion"] == "1.0"
        assert headers[HEADER_ID] == "req-42"
        assert headers[HEADER_COMPONENT] == "transformer"
        assert headers[HEADER_ENDPOINT] == "canary"
        assert headers[HEADER_INFERENCE_SERVICE] == MODEL
        assert headers["content-type"] == "application/json"
        assert decode_metadata(headers[HEADER_METADATA])[METADATA_MODEL_VERSION] == artifact.version
    logged = json.loads(events[REQUEST_TYPE][1])["instances"]
    assert [list(instance) for instance in logged] == [
        artifact.feature_names
    ] * 3  # model features, b dropped
    np.testing.assert_allclose(rows_of(logged), rows_of(houses[:3]))
    predictions = json.loads(events[RESPONSE_TYPE][1])["predictions"]
    np.testing.assert_allclose(predictions, response.json()["predictions"])


def test_unreachable_logger_counts_failures():
    logger = RequestLogger(f"http://127.0.0.1:{free_port()}/", component="test-failed", timeout=1.0)
    before = counted("test-failed", "failed")
    logger.log(["crim"], np.array([[0.1]]), np.array([20.0]), model_version="v1")
    logger.close()
    assert counted("test-failed", "failed") == before + 2


def test_full_queue_drops_and_counts_without_blocking():
    listener_port = free_port()
    import socket

    hung = socket.socket()
    hung.bind(("127.0.0.1", listener_port))
    hung.listen(8)  # accepts connections, never answers: the sender thread is stuck on its first event
    try:
        logger = RequestLogger(
            f"http://127.0.0.1:{listener_port}/", component="test-dropped", max_queue=2, timeout=5.0
        )
        before = counted("test-dropped", "dropped")
        for _ in range(10):  # would hang here if logging waited for the stuck sender
            logger.log(["crim"], np.array([[0.1]]), np.array([20.0]), model_version="v1")
        assert counted("test-dropped", "dropped") >= before + 10  # 20 events, at most 2 queued + 1 in flight
    finally:
        hung.close()


def test_metadata_round_trip_and_kserve_form():
    assert decode_metadata(encode_metadata({"model_version": "7"})) == {"model_version": "7"}
    assert decode_metadata('{"model_version": ["7"], "other": []}') == {"model_version": "7"}
    assert decode_metadata("not json") == {}
    assert decode_metadata(None) == {}
