"""Fixtures of the serving tests: real predictor, transformer and detector processes on free ports."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from housing.processes import Service, free_port, python_service
from model.artifact import METADATA_FILE, ONNX, ModelArtifact, load_artifact
from model.dataset import load_dataset
from tests.detector.conftest import start_detector  # noqa: F401  (the detector tests' fixture, reused here)

MODEL = "housing"


@dataclass
class Server:
    """A running predictor or transformer."""

    service: Service
    http_port: int
    grpc_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"


def start_predictor(
    log_dir: Path, storage_uri: str, *extra: str, env: dict[str, str] | None = None, name: str = "predictor"
) -> Server:
    """Start ``python -m predictor`` (not waiting for readiness)."""
    http_port, grpc_port = free_port(), free_port()
    args = ["-m", "predictor", "--model_name", MODEL, "--storage_uri", storage_uri,
            "--http_port", str(http_port), "--grpc_port", str(grpc_port), *extra]  # fmt: skip
    return Server(python_service(name, args, log_dir, env).start(), http_port, grpc_port)


def predictor_host(predictor: Server, protocol: str) -> str:
    """The address the transformer calls ``predictor`` at with ``protocol``."""
    return predictor.grpc_address if protocol == "grpc-v2" else f"127.0.0.1:{predictor.http_port}"


def canary_flag(name: str, percent: int, predictor: Server, protocol: str) -> list[str]:
    """``--canary NAME=PERCENT,HOST,REST_HOST`` for a canary served by ``predictor``."""
    host = predictor_host(predictor, protocol)
    return ["--canary", f"{name}={percent},{host},127.0.0.1:{predictor.http_port}"]


def start_transformer(
    log_dir: Path,
    predictor: Server,
    *extra: str,
    protocol: str = "v2",
    name: str = "transformer",
    wait: str = "/v2/health/ready",
) -> Server:
    """Start ``python -m transformer`` in front of ``predictor`` and wait until ``wait`` answers 200.

    Ready means its predictor serves the model too: ``wait="/v2/health/live"`` for a predictor that is down.
    """
    http_port, grpc_port = free_port(), free_port()
    host = predictor_host(predictor, protocol)
    args = ["-m", "transformer", "--model_name", MODEL, "--predictor_host", host, "--protocol", protocol,
            "--predictor_rest_host", f"127.0.0.1:{predictor.http_port}",
            "--http_port", str(http_port), "--grpc_port", str(grpc_port), *extra]  # fmt: skip
    server = Server(python_service(name, args, log_dir).start(), http_port, grpc_port)
    try:
        server.service.wait_ready(f"{server.url}{wait}")
    except BaseException:  # not ready: stop it rather than leave it running after the test
        server.service.stop()
        raise
    return server


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("serving-logs")


@pytest.fixture(scope="module")
def predictor(artifact_dir: Path, log_dir: Path) -> Iterator[Server]:
    """A predictor serving the session's artifact from a local path."""
    server = start_predictor(log_dir, str(artifact_dir))
    server.service.wait_ready(f"{server.url}/v2/health/ready")
    yield server
    server.service.stop()


@pytest.fixture(scope="module")
def transformer(predictor: Server, log_dir: Path) -> Iterator[Server]:
    """A transformer calling the predictor over REST V2."""
    server = start_transformer(log_dir, predictor)
    yield server
    server.service.stop()


@pytest.fixture(scope="session")
def reversed_artifact_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second artifact, as a canary or a replaced predictor would serve: the default features in reverse
    order, version ``reversed-1``."""
    from model.schema import DEFAULT_FEATURES
    from model.train import build_artifact

    directory = build_artifact(
        tmp_path_factory.mktemp("reversed"), features=list(reversed(DEFAULT_FEATURES)), fast=True
    )
    metadata = json.loads((directory / METADATA_FILE).read_text())
    metadata["version"] = "reversed-1"  # the sha256 in model.json is of model.joblib: still right
    (directory / METADATA_FILE).write_text(json.dumps(metadata))
    return directory


@pytest.fixture(scope="session")
def reversed_artifact(reversed_artifact_dir: Path) -> ModelArtifact:
    """The reversed artifact's compiled form, loaded in-process (the reference for its predictions)."""
    return load_artifact(reversed_artifact_dir, model_format=ONNX)


@pytest.fixture(scope="session")
def artifact(artifact_dir: Path) -> ModelArtifact:
    """The served artifact's compiled form, loaded in-process (the reference for predictions)."""
    return load_artifact(artifact_dir, model_format=ONNX)


@pytest.fixture(scope="session")
def houses() -> list[dict[str, float]]:
    """Every row of the bundled data as a V1 instance (all 13 schema features, ``b`` included)."""
    frame = load_dataset().drop(columns=["medv"])
    return [{name: float(value) for name, value in row.items()} for row in frame.to_dict(orient="records")]


@pytest.fixture(scope="session")
def rows_of(artifact: ModelArtifact) -> Callable[[list[dict[str, float]]], np.ndarray]:
    """Instances -> the [N, n_features] array in the model's feature order."""

    def rows(instances: list[dict[str, float]]) -> np.ndarray:
        return np.array(
            [[house[name] for name in artifact.feature_names] for house in instances], dtype=np.float64
        )

    return rows
