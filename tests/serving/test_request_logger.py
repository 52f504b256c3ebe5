"""The local request logger: CloudEvents a detector can decode, sent without ever holding up an inference."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import pytest
from cloudevents.http import from_http
from kserve import InferenceGRPCClient, InferInput, InferRequest
from prometheus_client import REGISTRY

from housing.processes import free_port, wait_until
from model.dataset import load_dataset
from serving.events import (
    HEADER_COMPONENT,
    HEADER_ENDPOINT,
    HEADER_ID,
    HEADER_INFERENCE_SERVICE,
    HEADER_METADATA,
    HEADER_TYPE,
    METADATA_MODEL_VERSION,
    REQUEST_TYPE,
    RESPONSE_TYPE,
    decode_metadata,
    encode_metadata,
)
from tests.serving.conftest import MODEL, Server, start_transformer
from tests.serving.test_batching import predictor_calls
from transformer.request_logger import RequestLogger

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
    transformer = start_transformer(log_dir, predictor, "--logger_url", url, name="transformer-logger")
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
        assert headers[HEADER_ENDPOINT] == "default"  # the stable predictor answered
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


@pytest.mark.slow
def test_feedback_finds_each_prediction_by_the_id_the_client_sent(
    predictor: Server, log_dir: Path, start_detector, artifact, houses
):
    """Transformer -> predictor, logging to a real detector; the truth is posted back by the clients' ids."""
    detector = start_detector()
    transformer = start_transformer(
        log_dir, predictor, "--logger_url", f"{detector.url}/", protocol="grpc-v2", name="transformer-ids"
    )
    asked: dict[str, list[int]] = {}  # request id -> the houses (data set rows) it asked about
    answered: dict[str, list[float]] = {}  # request id -> the predictions it got
    try:
        # V1 with x-request-id, forty at once: batching merges their predictor calls, their ids stay apart.
        burst = {f"v1-{index}-{uuid.uuid4().hex[:8]}": [index, index + 1] for index in range(0, 80, 2)}
        calls_before, _ = predictor_calls(predictor)
        for request_id, response in zip(
            burst, asyncio.run(v1_burst(transformer, burst, houses)), strict=True
        ):
            assert response.headers["x-request-id"] == request_id  # the id comes back to the client
            asked[request_id], answered[request_id] = burst[request_id], response.json()["predictions"]
        calls_after, _ = predictor_calls(predictor)
        assert calls_after - calls_before < len(burst), "the burst should have shared predictor calls"

        # V2 REST with the id in the body only.
        body = {"id": "v2-rest", "inputs": named_inputs(houses, [100])}
        response = httpx.post(f"{transformer.url}/v2/models/{MODEL}/infer", json=body)
        assert response.status_code == 200, response.text
        assert response.json()["id"] == response.headers["x-request-id"] == "v2-rest"
        asked["v2-rest"], answered["v2-rest"] = [100], response.json()["outputs"][0]["data"]

        # V2 gRPC with the id in the request.
        asked["v2-grpc"] = [101, 102]
        answered["v2-grpc"] = asyncio.run(
            grpc_infer(transformer, "v2-grpc", named_inputs(houses, [101, 102]))
        )

        # No id at all: the transformer makes one and says which.
        body = {"instances": houses[103:104]}
        response = httpx.post(f"{transformer.url}/v1/models/{MODEL}:predict", json=body)
        assert response.status_code == 200, response.text
        made = str(uuid.UUID(response.headers["x-request-id"]))
        asked[made], answered[made] = [103], response.json()["predictions"]
    finally:
        transformer.service.stop()

    key, rows = f"default/{artifact.version}", sum(len(indices) for indices in asked.values())
    wait_until(
        lambda: detector.status()["keys"].get(key, {}).get("window_rows") == rows, timeout=30, what="events"
    )
    truth = load_dataset()["medv"].to_numpy()  # ``houses`` are the data set's rows, in order
    labels = [{"id": request_id, "value": truth[indices].tolist()} for request_id, indices in asked.items()]
    response = detector.client.post(f"{detector.url}/feedback", json={"labels": labels})
    assert response.json() == {"accepted": len(asked), "unmatched": []}
    live = detector.status()["keys"][key]["live"]
    assert live["labels"] == rows
    errors = [truth[indices] - answered[request_id] for request_id, indices in asked.items()]
    assert live["mae"] == pytest.approx(np.mean(np.abs(np.concatenate(errors))), rel=1e-9)


async def v1_burst(
    server: Server, requests: dict[str, list[int]], houses: list[dict[str, float]]
) -> list[httpx.Response]:
    """Send every V1 request at once, each with its x-request-id; the responses, in order."""
    async with httpx.AsyncClient(timeout=30) as client:
        responses = await asyncio.gather(
            *(
                client.post(
                    f"{server.url}/v1/models/{MODEL}:predict",
                    json={"instances": [houses[index] for index in indices]},
                    headers={"x-request-id": request_id},
                )
                for request_id, indices in requests.items()
            )
        )
    for response in responses:
        assert response.status_code == 200, response.text
    return list(responses)


def named_inputs(houses: list[dict[str, float]], indices: list[int]) -> list[dict]:
    """V2 inputs, one per feature, for the given houses."""
    return [
        {
            "name": name,
            "datatype": "FP64",
            "shape": [len(indices)],
            "data": [houses[i][name] for i in indices],
        }
        for name in houses[0]
    ]


async def grpc_infer(server: Server, request_id: str, inputs: list[dict]) -> list[float]:
    """A V2 request over gRPC with KServe's client; its predictions (and its id checked)."""
    client = InferenceGRPCClient(server.grpc_address, timeout=30)
    tensors = [InferInput(tensor["name"], tensor["shape"], "FP64", tensor["data"]) for tensor in inputs]
    try:
        response = await client.infer(InferRequest(MODEL, tensors, request_id=request_id))
    finally:
        await client.close()
    assert response.id == request_id
    return response.outputs[0].as_numpy().tolist()


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
