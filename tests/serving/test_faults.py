"""Faults: the predictor goes away or hangs, storage is down at start-up, the artifact was tampered with."""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from housing.processes import free_port, wait_until
from housing.stack import AZURITE_ACCOUNT, AZURITE_KEY
from model.artifact import MODEL_FILE, sha256_file
from model.storage import publish
from tests.conftest import start_azurite
from tests.serving.conftest import MODEL, Server, start_predictor, start_transformer
from tests.serving.test_protocols import sample

pytestmark = pytest.mark.slow


def predict(server: Server, houses: list[dict]) -> httpx.Response:
    # The client's own timeout bounds every call: a hang fails the test instead of stalling it.
    return httpx.post(f"{server.url}/v1/models/{MODEL}:predict", json={"instances": houses}, timeout=20.0)


def status(url: str) -> int:
    return httpx.get(url, timeout=5.0).status_code


def wait_listening(server: Server) -> None:
    """Wait until the server answers at all (the loader may log before the HTTP port is open)."""
    wait_until(lambda: status(f"{server.url}/v2/health/live") == 200, timeout=30, what="server listening")


def restart_predictor_on(server: Server, log_dir: Path, storage_uri: str) -> Server:
    """A new predictor process on the same ports (the transformer keeps its --predictor_host)."""
    from housing.processes import python_service

    args = ["-m", "predictor", "--model_name", MODEL, "--storage_uri", storage_uri,
            "--http_port", str(server.http_port), "--grpc_port", str(server.grpc_port)]  # fmt: skip
    restarted = Server(
        python_service("predictor-restarted", args, log_dir).start(), server.http_port, server.grpc_port
    )
    restarted.service.wait_ready(f"{restarted.url}/v2/health/ready")
    return restarted


@pytest.mark.parametrize("protocol", ["v2", "grpc-v2"])
def test_predictor_down_then_back(artifact_dir: Path, log_dir: Path, houses, protocol: str):
    predictor = start_predictor(log_dir, str(artifact_dir), name=f"predictor-fault-{protocol}")
    predictor.service.wait_ready(f"{predictor.url}/v2/health/ready")
    transformer = start_transformer(
        log_dir, predictor, protocol=protocol, name=f"transformer-fault-{protocol}"
    )
    restarted = None
    try:
        assert predict(transformer, houses[:2]).status_code == 200
        predictor.service.stop()

        response = predict(transformer, houses[:2])
        assert response.status_code == 503
        assert "the predictor at 127.0.0.1:" in response.json()["error"]
        assert "unreachable" in response.json()["error"]
        assert status(f"{transformer.url}/v2/health/live") == 200  # the transformer itself stays up

        restarted = restart_predictor_on(predictor, log_dir, str(artifact_dir))
        # REST reconnects at once; a gRPC channel retries its connection within a second (the back-off cap).
        wait_until(lambda: predict(transformer, houses[:2]).status_code == 200, timeout=15, what="recovery")

        metrics = httpx.get(f"{transformer.url}/metrics").text
        assert sample(metrics, "housing_predictor_errors_total", model_name=MODEL, reason="unavailable") >= 1
        assert (
            sample(metrics, "housing_requests_total", component="transformer", model_name=MODEL, code="503")
            >= 1
        )
    finally:
        transformer.service.stop()
        predictor.service.stop()
        if restarted:
            restarted.service.stop()


def test_requests_queued_behind_a_hung_predictor_fail_within_the_timeout(
    artifact_dir: Path, log_dir: Path, houses
):
    predictor = start_predictor(log_dir, str(artifact_dir), name="predictor-to-freeze")
    predictor.service.wait_ready(f"{predictor.url}/v2/health/ready")
    transformer = start_transformer(
        log_dir,
        predictor,
        "--predictor_request_timeout_seconds",
        "2",
        protocol="grpc-v2",
        name="transformer-queued",
    )
    assert predict(transformer, houses[:1]).status_code == 200  # the feature order is read and cached
    process = predictor.service.process
    assert process is not None
    try:
        process.send_signal(signal.SIGSTOP)  # hung mid-flight: connections open, no answers

        async def burst() -> list[tuple[int, float]]:
            async with httpx.AsyncClient(timeout=20) as client:

                async def one(index: int) -> tuple[int, float]:
                    started = time.monotonic()
                    url = f"{transformer.url}/v1/models/{MODEL}:predict"
                    response = await client.post(url, json={"instances": houses[index : index + 1]})
                    return response.status_code, time.monotonic() - started

                return await asyncio.gather(*(one(index) for index in range(6)))

        # Two calls go out and hang; four requests queue for a call slot. All must fail after one timeout
        # (2 s), not after two (4 s: first the hung calls', then their own); 1 s of slack for a loaded CI.
        outcomes = asyncio.run(burst())
        assert [code for code, _ in outcomes] == [504] * 6
        assert max(seconds for _, seconds in outcomes) < 3.0, outcomes
    finally:
        process.send_signal(signal.SIGCONT)
        transformer.service.stop()
        predictor.service.stop()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A real TCP listener that accepts connections and never answers: a hung predictor."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    listener.close()


@pytest.mark.parametrize("protocol", ["v2", "grpc-v2"])
def test_hung_predictor_gives_504_within_the_timeout(silent_port: int, log_dir: Path, houses, protocol: str):
    hung = Server(service=None, http_port=silent_port, grpc_port=silent_port)  # type: ignore[arg-type]
    transformer = start_transformer(
        log_dir,
        hung,
        "--predictor_request_timeout_seconds",
        "1",
        protocol=protocol,
        name=f"transformer-hung-{protocol}",
        wait="/v2/health/live",  # not ready: its predictor never answers
    )
    try:
        response = predict(transformer, houses[:1])
        assert response.status_code == 504
        assert "did not answer within 1 s" in response.json()["error"]
        # The hung read is counted when its own timeout ends it, a moment after the request's deadline.
        wait_until(
            lambda: (
                sample(
                    httpx.get(f"{transformer.url}/metrics").text,
                    "housing_predictor_errors_total",
                    model_name=MODEL,
                    reason="timeout",
                )
                >= 1
            ),
            timeout=5,
            what="timeout counted",
        )
    finally:
        transformer.service.stop()


def test_azurite_down_at_start_then_back(artifact_dir: Path, log_dir: Path, tmp_path: Path, houses):
    port = free_port()
    connection_string = (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
        f"BlobEndpoint=http://127.0.0.1:{port}/{AZURITE_ACCOUNT};"
    )
    url = f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}/models/housing/v1"
    env = {"AZURE_STORAGE_CONNECTION_STRING": connection_string}
    predictor = start_predictor(log_dir, url, "--retry_max_seconds", "2", env=env, name="predictor-azurite")
    azurite = None
    try:
        wait_until(
            lambda: "model storage unreachable" in predictor.service.log(), timeout=60, what="retry logged"
        )
        wait_listening(predictor)
        assert status(f"{predictor.url}/v2/health/ready") == 503
        assert status(f"{predictor.url}/v2/models/{MODEL}/ready") == 503
        assert predict(predictor, [[0.0] * 12]).status_code == 503

        azurite = start_azurite(tmp_path / "azurite", port)
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("AZURE_STORAGE_CONNECTION_STRING", connection_string)
            publish(artifact_dir, url, progress=False)
        predictor.service.wait_ready(f"{predictor.url}/v2/health/ready", timeout=60)
        assert status(f"{predictor.url}/v2/models/{MODEL}/ready") == 200
        assert "ready: model housing" in predictor.service.log()
    finally:
        predictor.service.stop()
        if azurite:
            azurite.service.stop()


def test_tampered_artifact_is_refused(artifact_dir: Path, log_dir: Path, tmp_path: Path):
    tampered = tmp_path / "tampered"
    shutil.copytree(artifact_dir, tampered)
    with open(tampered / MODEL_FILE, "ab") as handle:
        handle.write(b"\0")
    predictor = start_predictor(log_dir, str(tampered), name="predictor-tampered")
    try:
        wait_until(lambda: "refusing to serve" in predictor.service.log(), timeout=60, what="refusal logged")
        log = predictor.service.log()
        assert "refusing to unpickle a file that was modified" in log
        wait_listening(predictor)
        assert status(f"{predictor.url}/v2/health/ready") == 503
        assert status(f"{predictor.url}/v2/models/{MODEL}/ready") == 503
    finally:
        predictor.service.stop()


def test_pinned_sha256_is_enforced(artifact_dir: Path, log_dir: Path):
    wrong = start_predictor(
        log_dir, str(artifact_dir), "--expected_sha256", "0" * 64, name="predictor-wrong-pin"
    )
    right = start_predictor(
        log_dir,
        str(artifact_dir),
        env={"EXPECTED_SHA256": sha256_file(artifact_dir / MODEL_FILE)},
        name="predictor-pin",
    )
    try:
        right.service.wait_ready(f"{right.url}/v2/health/ready")
        wait_until(lambda: "refusing to serve" in wrong.service.log(), timeout=60, what="refusal logged")
        assert "does not match the pinned sha256" in wrong.service.log()
        wait_listening(wrong)
        assert status(f"{wrong.url}/v2/health/ready") == 503
    finally:
        wrong.service.stop()
        right.service.stop()
