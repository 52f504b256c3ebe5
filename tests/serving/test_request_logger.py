"""The local request logger: CloudEvents a detector can decode, sent without ever holding up an inference."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import pytest
from cloudevents.http import from_dict
from kserve import InferenceGRPCClient, InferInput, InferRequest
from prometheus_client import REGISTRY

from housing.processes import free_port, wait_until
from model.dataset import load_dataset
from serving.events import (
    BATCH_CONTENT_TYPE,
    METADATA_MODEL_VERSION,
    REQUEST_TYPE,
    RESPONSE_TYPE,
    SAMPLE_RATE,
    decode_metadata,
    encode_metadata,
    replica_for,
)
from tests.serving.conftest import MODEL, Server, start_transformer
from tests.serving.test_batching import predictor_calls
from transformer.request_logger import Connection, Inference, RequestLogger

Received = list[tuple[dict[str, str], bytes]]


@pytest.fixture
def receiver() -> Iterator[tuple[str, Received]]:
    """A real HTTP server on loopback recording every event posted to it."""
    received: Received = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            headers = {key.lower(): value for key, value in self.headers.items()}
            received.append(({**headers, ":path": self.path}, body))
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
        wait_until(lambda: len(received) >= 1, timeout=20, what="one batch received")
    finally:
        transformer.service.stop()

    (headers, body), *more = received
    assert not more, "the request and its response travel in one batch"
    assert headers["content-type"] == BATCH_CONTENT_TYPE
    elements = json.loads(body)
    events = {element["type"]: from_dict(element) for element in elements}  # each a valid CloudEvent 1.0
    assert [element["type"] for element in elements] == [REQUEST_TYPE, RESPONSE_TYPE]
    for event in events.values():
        assert event["specversion"] == "1.0"
        assert event["id"] == "req-42"
        assert event["component"] == "transformer"
        assert event["endpoint"] == "default"  # the stable predictor answered
        assert event["inferenceservicename"] == MODEL
        assert event["datacontenttype"] == "application/json"
        assert event[SAMPLE_RATE] == "1"  # not sampled: the queue was nearly empty
        assert decode_metadata(event["metadata"])[METADATA_MODEL_VERSION] == artifact.version
    logged = events[REQUEST_TYPE].get_data()["instances"]
    assert [list(instance) for instance in logged] == [
        artifact.feature_names
    ] * 3  # model features, b dropped
    np.testing.assert_allclose(rows_of(logged), rows_of(houses[:3]))
    assert events[REQUEST_TYPE]["time"] == events[RESPONSE_TYPE]["time"]
    assert abs(datetime.fromisoformat(events[REQUEST_TYPE]["time"]).timestamp() - time.time()) < 60
    predictions = events[RESPONSE_TYPE].get_data()["predictions"]
    np.testing.assert_allclose(predictions, response.json()["predictions"])
    # The client asked for no interval, and got none; the detector gets the 90% bounds (the monitored level).
    assert list(response.json()) == ["predictions"]
    intervals = events[RESPONSE_TYPE].get_data()["intervals"]
    _, lower, upper = artifact.pipeline.predict_bounds(rows_of(houses[:3]))
    assert intervals["level"] == 0.9
    np.testing.assert_allclose(intervals["lower"], lower[:, 1], rtol=1e-9)
    np.testing.assert_allclose(intervals["upper"], upper[:, 1], rtol=1e-9)


@pytest.mark.slow
def test_feedback_finds_each_prediction_by_the_id_the_client_sent(
    predictor: Server, log_dir: Path, start_detector, artifact, houses, rows_of
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
    # Each label was scored a hit or a miss of its prediction's 90% interval, merged predictor calls included.
    rows_asked = np.concatenate([indices for indices in asked.values()])
    _, lower, upper = artifact.pipeline.predict_bounds(rows_of([houses[index] for index in rows_asked]))
    inside = (truth[rows_asked] >= lower[:, 1]) & (truth[rows_asked] <= upper[:, 1])
    coverage = detector.status()["keys"][key]["coverage"]
    assert coverage["0.9"]["labels"] == rows and coverage["0.9"]["coverage"] == pytest.approx(inside.mean())
    assert coverage["0.9"]["width"] == pytest.approx(np.mean(upper[:, 1] - lower[:, 1]), rel=1e-6)


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


class _Closer(BaseHTTPRequestHandler):
    """Answers ``/`` with 202 and keeps the connection, ``/refuse`` with 503, ``/fail`` with 500; then closes
    idle connections."""

    protocol_version = "HTTP/1.1"  # keep-alive, as a detector behind uvicorn does
    timeout = 0.2  # an idle keep-alive connection is closed after 0.2 s: the sender's next batch meets it

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        self.server.posts.append(self.path)  # type: ignore[attr-defined]
        self.send_response({"/refuse": 503, "/fail": 500}.get(self.path, 202))
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def closer() -> Iterator[tuple[str, list[str]]]:
    """A real HTTP/1.1 server on loopback that closes keep-alive connections idle for 0.2 s."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Closer)
    server.posts = []  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", server.posts  # type: ignore[attr-defined]
    server.shutdown()
    server.server_close()


def test_connection_is_kept_alive_and_renewed_when_the_detector_closed_it(closer):
    base, posts = closer
    connection = Connection(f"{base}/", timeout=2.0)
    assert [connection.post(b"[]", {"content-type": BATCH_CONTENT_TYPE}) for _ in range(3)] == [202] * 3
    first = connection._connection
    assert first is not None  # one connection carried the three
    time.sleep(0.5)  # the server closes the idle connection; the next post must not fail for it
    assert connection.post(b"[]", {}) == 202 and connection._connection is not first
    assert posts == ["/"] * 4  # each batch taken exactly once
    connection.close()


def test_a_failed_batch_counts_its_inferences_failed_once(closer):
    base, posts = closer
    failing = RequestLogger(f"{base}/fail", component="test-failed", batch_events=2)
    before = inferences("test-failed", "failed")
    failing.log(["crim"], np.array([[0.1]]), np.array([20.0]), model_version="v1")
    failing.close()
    assert inferences("test-failed", "failed") == before + 1 and posts == ["/fail"]  # maybe taken: once
    with pytest.raises(ValueError, match="http"):
        Connection("ftp://detector/", timeout=1.0)
    assert Connection("https://detector.example:8443/events?x=1", 1.0).path == "/events?x=1"


def test_a_batch_the_detector_did_not_take_is_sent_again_until_close_gives_up(closer):
    base, posts = closer
    refused = RequestLogger(f"{base}/refuse", component="test-refused", batch_events=2, timeout=0.5)
    refused.log(["crim"], np.array([[0.1]]), np.array([20.0]), model_version="v1")
    time.sleep(0.3)  # 503: sent again after 50 ms, 100 ms, ...
    assert len(posts) >= 2 and set(posts) == {"/refuse"}
    assert inferences("test-refused", "failed") == 0
    assert "1 failed" in refused.close(timeout=1.0)  # retried until 0.5 s before the end, then counted
    assert inferences("test-refused", "failed") == 1


def test_events_kept_while_nothing_listens_reach_the_detector_once_it_is_back():
    port = free_port()
    logger = RequestLogger(f"http://127.0.0.1:{port}/", component="test-restart", batch_events=4)
    for _ in range(5):  # nothing listens: connection refused, kept
        logger.log(["crim"], np.array([[0.1]]), np.array([20.0]), model_version="v1")
    time.sleep(0.3)
    server = ThreadingHTTPServer(("127.0.0.1", port), _Closer)
    server.posts = []  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert "in all 5 delivered, 0 failed" in logger.close(timeout=5.0)
        assert inferences("test-restart", "delivered") == 5 and inferences("test-restart", "failed") == 0
    finally:
        server.shutdown()
        server.server_close()


def inferences(component: str, outcome: str, endpoint: str = "default") -> float:
    labels = {"component": component, "endpoint": endpoint, "outcome": outcome}
    return REGISTRY.get_sample_value("housing_logger_inferences_total", labels) or 0.0


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


def test_admission_falls_from_one_at_the_watermark_to_zero_when_full(receiver):
    url, _ = receiver
    logger = RequestLogger(url, component="test-admission", max_queue=100)
    try:
        lane = logger._lanes[0]
        assert [lane.admission(waiting) for waiting in (0, 49, 50, 75, 99, 100, 120)] == [
            1.0, 1.0, 1.0, 0.5, 0.02, 0.0, 0.0
        ]  # fmt: skip
    finally:
        logger.close()


def test_overload_drops_whole_inferences_and_stamps_their_probability(receiver):
    """A buffer of 20 that waits 5 s to fill a batch (close sends it), offered 400 inferences at once.

    Most are dropped, whole; each delivered one carries the share of inferences taken.
    """
    url, received = receiver
    component = "test-sampled"
    logger = RequestLogger(
        url, component=component, max_queue=20, batch_events=200, flush_seconds=5.0, seed=7
    )
    offered = inferences(component, "offered")
    for index in range(400):
        logger.log(
            ["crim"], np.array([[float(index)]]), np.array([20.0]), model_version="v1", request_id=f"s{index}"
        )
    logger.close()
    elements = [element for _, body in received for element in json.loads(body)]
    by_id: dict[str, list[str]] = {}
    for element in elements:
        by_id.setdefault(element["id"], []).append(element["type"])
    assert all(types == [REQUEST_TYPE, RESPONSE_TYPE] for types in by_id.values()), "never half an inference"
    delivered, dropped = inferences(component, "delivered"), inferences(component, "dropped")
    assert inferences(component, "offered") - offered == 400
    assert delivered == len(by_id) and delivered + dropped == 400
    assert 11 <= delivered <= 20  # the first 11 at probability 1 (to 10 waiting), then ever less likely
    # Each event says which share of the offered inferences was taken (here all in the same second).
    rates = [float(element[SAMPLE_RATE]) for element in elements]
    assert rates == pytest.approx([delivered / 400] * len(elements), abs=1e-5)
    gauge = {"component": component, "endpoint": "default"}
    assert REGISTRY.get_sample_value("housing_logger_sampling_ratio", gauge) == pytest.approx(delivered / 400)


def test_each_id_maps_to_one_replica_and_replicas_share_evenly(receiver):
    """100,000 ids over 3 replicas: the logger sends each id's request and response to the replica that
    ``replica_for`` names (where its feedback goes too), and each replica gets about a third."""
    ids = [str(uuid.UUID(int=random.Random(index).getrandbits(128))) for index in range(100_000)]
    replicas = [replica_for(event_id, 3) for event_id in ids]
    assert replicas == [replica_for(event_id, 3) for event_id in ids]  # a pure function of the id
    shares = np.bincount(replicas, minlength=3) / len(ids)
    assert np.all(np.abs(shares - 1 / 3) < 0.01), shares
    # Pinned: clients computing the replica of their /feedback depend on these exact values.
    assert [replica_for(name, 3) for name in ("req-42", "v2-rest", "a")] == [
        zlib.crc32(name.encode()) % 3 for name in ("req-42", "v2-rest", "a")
    ]
    with pytest.raises(ValueError, match="replicas: must be at least 1"):
        replica_for("x", 0)
    url, received = receiver
    urls = [f"{url}?replica={index}" for index in range(3)]
    logger = RequestLogger(urls, component="test-replicas", batch_events=1000, flush_seconds=0.05)
    for event_id in ids[:300]:
        logger.log(["crim"], np.array([[0.1]]), np.array([20.0]), model_version="v1", request_id=event_id)
    logger.close()
    assert sum(len(json.loads(body)) for _, body in received) == 600
    for headers, body in received:
        replica = int(headers[":path"].split("replica=")[1])
        assert {replica_for(element["id"], 3) for element in json.loads(body)} == {replica}


def test_a_full_batch_goes_at_once_and_a_partial_one_within_the_flush_period(receiver):
    url, received = receiver
    full = RequestLogger(url, component="test-flush", batch_events=4, flush_seconds=30.0)
    started = time.monotonic()
    for index in range(2):  # 2 inferences = 4 events: the batch is full, the sender must not wait 30 s
        full.log(
            ["crim"], np.array([[float(index)]]), np.array([20.0]), model_version="v1", request_id=f"f{index}"
        )
    wait_until(lambda: len(received) == 1, timeout=5, what="the full batch")
    assert time.monotonic() - started < 5 and len(json.loads(received[0][1])) == 4
    full.close()
    partial = RequestLogger(url, component="test-flush", batch_events=1000, flush_seconds=0.05)
    partial.log(["crim"], np.array([[1.0]]), np.array([20.0]), model_version="v1", request_id="p")
    wait_until(lambda: len(received) == 2, timeout=5, what="the partial batch, after one flush period")
    partial.close()
    assert [element["id"] for element in json.loads(received[1][1])] == ["p", "p"]


def test_batch_body_is_valid_cloudevents_with_each_endpoints_rate(receiver):
    """The body is joined from bytes: every element must still be a CloudEvent the SDK reads, with its own
    endpoint's sampling rate, the rows named by the inputs of the model that answered, an RFC 3339 time."""
    url, _ = receiver
    logger = RequestLogger(url, component="test-body", namespace="ns", inference_service="svc")
    try:
        made = time.time()
        rows = np.array([[1.5, 2.0], [3.25, 4.0]], dtype=np.float32)[:, ::-1]  # float32, not contiguous
        three, four = encode_metadata({"model_version": "3"}), encode_metadata({"model_version": "4"})
        batch = [
            Inference('quote"id', "default", three, ["x", "y"], rows, np.array([[9.5], [8]]), made),
            Inference("b", "canary", four, ("x", "rm"), np.array([[7.0, 8.0]]), [1.25], made),
        ]
        elements = json.loads(logger.body(batch, {"default": 0.5, "canary": 1.0}))
    finally:
        logger.close()
    events = [from_dict(element) for element in elements]
    assert [(event["id"], event["type"]) for event in events] == [
        ('quote"id', REQUEST_TYPE), ('quote"id', RESPONSE_TYPE), ("b", REQUEST_TYPE), ("b", RESPONSE_TYPE)
    ]  # fmt: skip
    assert [event[SAMPLE_RATE] for event in events] == ["0.5", "0.5", "1", "1"]
    assert [event["endpoint"] for event in events] == ["default", "default", "canary", "canary"]
    assert {(event["namespace"], event["inferenceservicename"], event["component"]) for event in events} == {
        ("ns", "svc", "test-body")
    }
    assert decode_metadata(events[2]["metadata"]) == {"model_version": "4"}
    assert events[0].get_data() == {"instances": [{"x": 2.0, "y": 1.5}, {"x": 4.0, "y": 3.25}]}
    assert events[2].get_data() == {"instances": [{"x": 7.0, "rm": 8.0}]}  # each model's own inputs
    assert events[1].get_data() == {"predictions": [9.5, 8.0]}
    assert events[3].get_data() == {"predictions": [1.25]}
    assert datetime.fromisoformat(events[0]["time"]).timestamp() == pytest.approx(made, abs=1e-5)
