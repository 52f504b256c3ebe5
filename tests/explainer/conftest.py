"""Explainer fixtures: real ``python -m explainer`` processes serving the session's artifact."""

from __future__ import annotations

import json
from pathlib import Path

from housing.processes import Service, free_port, python_service
from model.artifact import METADATA_FILE

MODEL = "housing"


def start_explainer(log_dir: Path, artifact_dir: Path, *extra: str, name: str = "explainer") -> Service:
    """Start ``python -m explainer`` on ``artifact_dir``, pinned to its model.joblib sha256 (not waiting)."""
    sha256 = json.loads((artifact_dir / METADATA_FILE).read_text())["sha256"]
    port = free_port()
    args = ["-m", "explainer", "--model_name", MODEL, "--storage_uri", str(artifact_dir), "--expected_sha256",
            sha256, "--http_port", str(port), "--grpc_port", str(free_port()), *extra]  # fmt: skip
    return python_service(name, args, log_dir, port=port).start()


def wait_explainer(service: Service) -> Service:
    """Wait until the explainer has loaded and verified its artifact."""
    return service.wait_ready(f"{service.url}/v1/models/{MODEL}", timeout=60)
