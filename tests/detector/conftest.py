"""Detector fixtures: real ``python -m detector`` processes, KServe-format CloudEvents, held-out rows."""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent

from housing.cli import main
from housing.processes import Service, free_port, python_service, wait_until
from serving.events import BATCH_CONTENT_TYPE, REQUEST_TYPE, RESPONSE_TYPE, SAMPLE_RATE, encode_metadata
from tests.conftest import ROOT


def drift(*args: str) -> int:
    """``housing drift ARGS`` in this process; its exit code."""
    handlers = logging.root.handlers[:]
    try:
        return main(["drift", *args])
    finally:  # the CLI points logging at the captured stderr, which pytest closes after the test
        logging.root.handlers[:] = handlers


def cloud_event(
    kind: str,
    event_id: str,
    body: Any,
    *,
    endpoint: str = "default",
    version: str | None = None,
    structured: bool = False,
) -> tuple[dict[str, str], bytes]:
    """Headers and body of one KServe logger event, built with the cloudevents SDK."""
    attributes = {
        "type": REQUEST_TYPE if kind == "request" else RESPONSE_TYPE,
        "source": "http://localhost/transformer/housing",
        "id": event_id,
        "inferenceservicename": "housing",
        "namespace": "test",
        "component": "transformer",
        "endpoint": endpoint,
        "recordedtime": "2026-01-01T00:00:00Z",
    }
    if version:
        attributes["metadata"] = encode_metadata({"model_version": version})
    event = CloudEvent(attributes, body)
    return to_structured(event) if structured else to_binary(event)


def batch_element(
    kind: str, event_id: str, data: Any, *, endpoint: str = "default", rate: float | None = None
) -> dict[str, Any]:
    """One structured-mode event of a batch, as the transformer's request logger builds it."""
    element = {
        "specversion": "1.0",
        "id": event_id,
        "type": REQUEST_TYPE if kind == "request" else RESPONSE_TYPE,
        "source": "http://localhost/transformer/housing",
        "datacontenttype": "application/json",
        "component": "transformer",
        "endpoint": endpoint,
        "data": data,
    }
    if rate is not None:
        element[SAMPLE_RATE] = str(rate)
    return element


def held_out_rows(artifact_dir: Path) -> np.ndarray:
    """Data set rows (model feature order) that are not in the artifact's reference sample."""
    from model.artifact import read_metadata
    from model.dataset import load_dataset

    metadata = read_metadata(artifact_dir)
    names = [feature["name"] for feature in metadata["features"]]
    rows = load_dataset()[names].to_numpy()
    reference = {tuple(np.round(row, 6)) for row in metadata["reference"]["features"]}
    return np.array([row for row in rows if tuple(np.round(row, 6)) not in reference])


def without_alibi(directory: Path) -> dict[str, str]:
    """An environment whose Python processes, and the processes they start, find no alibi-detect.

    A ``sitecustomize`` on PYTHONPATH runs at every interpreter's start and marks the module absent.
    """
    directory.mkdir(exist_ok=True)
    (directory / "sitecustomize.py").write_text('import sys\nsys.modules["alibi_detect"] = None\n')
    return {"PYTHONPATH": os.pathsep.join([str(directory), str(ROOT)])}


@dataclass
class DetectorProcess:
    """A running detector and a client for it."""

    service: Service
    url: str
    features: list[str]
    client: httpx.Client

    def send(self, kind: str, event_id: str, body: Any, **options: Any) -> httpx.Response:
        headers, data = cloud_event(kind, event_id, body, **options)
        return self.client.post(self.url + "/", headers=headers, content=data)

    def send_batch(self, elements: list[Any]) -> httpx.Response:
        """POST ``elements`` in CloudEvents' batched content mode."""
        headers = {"content-type": BATCH_CONTENT_TYPE}
        return self.client.post(self.url + "/", headers=headers, content=json.dumps(elements))

    def send_rows(
        self, rows: np.ndarray, predictions: Sequence[float], *, prefix: str = "", **options: Any
    ) -> None:
        """One request/response pair per row (V1 named instances, V1 predictions)."""
        for index, (row, prediction) in enumerate(zip(rows, predictions, strict=True)):
            event_id = f"{prefix}{index}-{uuid.uuid4().hex[:8]}"
            instance = dict(zip(self.features, map(float, row), strict=True))
            assert self.send("request", event_id, {"instances": [instance]}, **options).status_code == 202
            assert (
                self.send("response", event_id, {"predictions": [float(prediction)]}, **options).status_code
                == 202
            )
        self.settle()

    def settle(self) -> None:
        """Wait until the worker has tested every full window."""
        wait_until(lambda: self.status()["windows_queued"] == 0, timeout=60, what="queued windows tested")

    def status(self) -> dict[str, Any]:
        return self.client.get(self.url + "/status").json()

    def metric(self, name: str, **labels: str) -> float:
        """The value of one sample on /metrics (0 when absent)."""
        return metric_value(self.client.get(self.url + "/metrics").text, name, **labels)


def metric_value(text: str, name: str, **labels: str) -> float:
    """The first sample of ``name`` with ``labels`` in a Prometheus exposition (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(key) == value for key, value in labels.items()):
                return float(sample.value)
    return 0.0


def _starter(
    artifact_dir: Path, tmp_path: Path
) -> tuple[Callable[..., DetectorProcess], list[DetectorProcess]]:
    started: list[DetectorProcess] = []
    features = [
        feature["name"] for feature in json.loads((artifact_dir / "model.json").read_text())["features"]
    ]

    def start(
        *args: str,
        state_dir: Path | None = None,
        name: str = "detector",
        storage_uri: str | None = None,
        env: dict[str, str] | None = None,
        ready_path: str = "/readyz",
    ) -> DetectorProcess:
        port = free_port()
        state = state_dir or tmp_path / f"state-{port}"
        command = ["-m", "detector", "--storage_uri", storage_uri or str(artifact_dir), "--host", "127.0.0.1",
                   "--http_port", str(port), "--state_dir", str(state), "--flush_interval", "0.2",
                   *args]  # fmt: skip
        service = python_service(f"{name}-{port}", command, tmp_path, env).start()
        url = f"http://127.0.0.1:{port}"
        process = DetectorProcess(service, url, features, httpx.Client(timeout=10))
        started.append(process)
        service.wait_ready(url + ready_path, timeout=120)
        return process

    return start, started


def _stop(started: list[DetectorProcess]) -> None:
    for process in started:
        process.client.close()
        process.service.stop()


@pytest.fixture
def start_detector(artifact_dir: Path, tmp_path: Path) -> Iterator[Callable[..., DetectorProcess]]:
    """Start real detector processes: ``start_detector("--window_size", "50", state_dir=...)``."""
    start, started = _starter(artifact_dir, tmp_path)
    yield start
    _stop(started)


@pytest.fixture(scope="module")
def shared_detector(
    artifact_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DetectorProcess]:
    """One detector for the tests that keep apart by model version (``ce-metadata``).

    Counters are compared as differences. Window 100 rows; labels: 50 kept, 20 needed for R²; pending events
    expire after 1 s; no cool-down.
    """
    start, started = _starter(artifact_dir, tmp_path_factory.mktemp("shared-detector"))
    yield start(
        "--window_size",
        "100",
        "--label_window",
        "50",
        "--min_labels",
        "20",
        "--pending_ttl",
        "1",
        "--cooldown",
        "0",
        name="shared",
    )
    _stop(started)
