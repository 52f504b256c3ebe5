"""SIGTERM drains every server (serving/lifecycle.py), with real processes: readiness red, requests in flight
answered, then what the process holds flushed; a second SIGTERM stops it at once.

Requests are held in flight by stopping the predictor (SIGSTOP) under a real transformer: they wait on it,
within their 5 s deadline, until it is continued (SIGCONT).
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from housing.processes import listening, wait_until
from predictor.repository import ArtifactRepository, ModelPin
from tests.serving.conftest import MODEL, Server, start_predictor, start_transformer

HOUSE = {"crim": 0.00632, "zn": 18, "indus": 2.31, "chas": 0, "nox": 0.538, "rm": 6.575, "age": 65.2,
         "dis": 4.09, "rad": 1, "tax": 296, "ptratio": 15.3, "lstat": 4.98}  # fmt: skip
PREDICT = f"/v1/models/{MODEL}:predict"


class _Collector(BaseHTTPRequestHandler):
    """A detector stand-in that takes every batch of CloudEvents and keeps their ids (a real HTTP server)."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        self.server.events.extend(event["id"] for event in json.loads(body))  # type: ignore[attr-defined]
        self.send_response(202)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    server.events = []  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def predictor(artifact_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A predictor of this module's own: the tests stop and continue it (each continues it when done)."""
    server = start_predictor(tmp_path_factory.mktemp("drain"), str(artifact_dir))
    server.service.wait_ready(f"{server.url}/v2/health/ready")
    yield server
    os.kill(server.service.pid, signal.SIGCONT)
    server.service.stop()


@pytest.fixture
def paused(predictor: Server) -> Iterator[None]:
    """The predictor stopped (SIGSTOP) for the test's body: requests to it wait."""
    os.kill(predictor.service.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(predictor.service.pid, signal.SIGCONT)


def _send(url: str, request_id: str) -> int | str:
    try:
        return httpx.post(url + PREDICT, json={"instances": [HOUSE]}, headers={"x-request-id": request_id},
                          timeout=30).status_code  # fmt: skip
    except httpx.HTTPError as error:
        return type(error).__name__


def test_sigterm_answers_requests_in_flight_then_flushes_the_inference_log(
    predictor: Server, collector: ThreadingHTTPServer, tmp_path: Path
) -> None:
    logger_url = f"http://127.0.0.1:{collector.server_address[1]}/"
    transformer = start_transformer(
        tmp_path, predictor, "--logger_url", logger_url,
        "--logger_flush_ms", "600000", "--logger_batch_events", "10000",  # held until the shutdown's flush
        protocol="grpc-v2",
    )  # fmt: skip
    answered = [_send(transformer.url, f"before-{number}") for number in range(20)]
    assert answered == [200] * 20
    assert collector.events == []  # type: ignore[attr-defined]  # held in the logger's buffer
    probe = httpx.Client(timeout=10)
    assert probe.get(transformer.url + "/v2/health/ready").status_code == 200  # a kept-alive connection
    os.kill(predictor.service.pid, signal.SIGSTOP)
    with ThreadPoolExecutor(8) as pool:
        try:
            in_flight = [pool.submit(_send, transformer.url, f"in-flight-{number}") for number in range(8)]
            time.sleep(1.0)  # the 8 wait on the stopped predictor
            transformer.service.terminate()
            # Readiness turns red first: over the connection already open, and no new connection is taken.
            wait_until(lambda: probe.get(transformer.url + "/v2/health/ready").status_code == 503, timeout=5)
            wait_until(lambda: not listening(transformer.http_port), timeout=5)
            assert transformer.service.running()  # still draining: its requests are in flight
        finally:
            os.kill(predictor.service.pid, signal.SIGCONT)  # the next test's predictor too
        assert [future.result() for future in in_flight] == [200] * 8
    assert transformer.service.process is not None and transformer.service.process.wait(timeout=20) == 0
    events = collector.events  # type: ignore[attr-defined]
    assert sorted(set(events)) == sorted(
        [f"before-{n}" for n in range(20)] + [f"in-flight-{n}" for n in range(8)]
    )
    assert len(events) == 56  # a request and a response event each
    log = transformer.service.log()
    draining = re.search(r"transformer: SIGTERM: readiness red, draining (\d+) requests in flight", log)
    assert draining is not None and int(draining[1]) >= 8  # and a readiness probe, if it came first
    assert "flushed the inference log: 28 inferences waiting: 28 delivered, 0 failed, 0 left" in log
    assert "transformer: stopped" in log
    probe.close()


def test_a_second_sigterm_stops_at_once(predictor: Server, paused: None, tmp_path: Path) -> None:
    transformer = start_transformer(tmp_path, predictor, protocol="grpc-v2", wait="/v2/health/live")
    with ThreadPoolExecutor(4) as pool:
        in_flight = [pool.submit(_send, transformer.url, f"cut-{number}") for number in range(4)]
        time.sleep(1.0)
        transformer.service.terminate()
        time.sleep(0.5)
        assert transformer.service.running()  # draining: it would wait up to its grace period (10 s)
        start = time.monotonic()
        transformer.service.terminate()
        assert transformer.service.process is not None
        transformer.service.process.wait(timeout=10)
        stopped_after = time.monotonic() - start
        outcomes = [future.result() for future in in_flight]
    assert stopped_after < 3.0  # at once: not the grace period, not the predictor's 5 s deadline
    assert 200 not in outcomes
    log = transformer.service.log(10**6)  # the whole log: the cut-off requests' tracebacks follow the line
    assert "a second SIGTERM: stopping at once, 4 requests in flight cut off" in log


def test_the_detector_saves_its_state_and_seals_its_archive_on_sigterm(
    start_detector, tmp_path: Path
) -> None:
    state = tmp_path / "detector-state"
    detector = start_detector(
        "--flush_interval", "3600", "--archive_uri", str(tmp_path / "archive"), state_dir=state
    )  # no periodic save: what is saved, the shutdown saved
    row = {name: HOUSE[name] for name in detector.features}
    for kind, event_id, body in [
        ("request", "waiting-1", {"instances": [row]}),
        ("request", "joined-1", {"instances": [row]}),
        ("response", "joined-1", {"predictions": [20.0]}),
    ]:
        assert detector.send(kind, event_id, body).status_code == 202
    assert not (state / "state.json").exists()
    detector.service.stop()
    assert detector.service.process is not None and detector.service.process.returncode == 0
    saved = json.loads((state / "state.json").read_text())
    assert [item["request_id"] for item in saved["pending"]] == ["waiting-1"]
    log = detector.service.log()
    assert "detector: flushed the state" in log and "1 pending" in log
    assert "detector: flushed the archive: 1 rows and labels sealed" in log


def test_a_model_swap_in_flight_finishes_before_the_predictor_stops() -> None:
    loaded = threading.Event()

    class SlowModel:
        name, ready = "slow", False

        def load(self) -> bool:
            time.sleep(0.5)
            self.ready = True
            loaded.set()
            return True

        def describe_loaded(self) -> str:
            return "slow"

        def stop(self) -> None:
            self.ready = False

    repository = ArtifactRepository(
        {"slow": ModelPin("slow", "/nowhere", "0" * 64)}, MODEL, lambda pin: SlowModel()
    )
    swap = threading.Thread(target=repository.load, args=("slow", True))
    swap.start()
    time.sleep(0.1)
    said = repository.settle(timeout=5.0)
    assert loaded.is_set() and repository.champion == "slow"
    assert said.startswith("1 model loads in progress, 0 still running")
    swap.join()
