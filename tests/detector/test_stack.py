"""``housing up`` (detector on by default): a prediction through the transformer reaches the detector."""

from __future__ import annotations

import argparse
from pathlib import Path

import httpx
import pytest

from housing import stack as local_stack
from housing.processes import free_port, wait_until
from model.dataset import load_dataset
from model.schema import DEFAULT_FEATURES
from tests.detector.conftest import metric_value

pytestmark = pytest.mark.slow


def test_prediction_through_the_transformer_reaches_the_detector(
    artifact_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOUSING_VAR_DIR", str(tmp_path))
    parser = argparse.ArgumentParser()
    local_stack.configure(parser)
    flags = ["--predictor-port", "--predictor-grpc-port", "--transformer-port", "--transformer-grpc-port",
             "--detector-port"]  # fmt: skip
    ports = [item for flag in flags for item in (flag, str(free_port()))]
    args = parser.parse_args(["--detector", "--no-explainer", *ports])
    specs = {spec.name: spec for spec in local_stack.services(args, str(artifact_dir), {})}
    assert set(specs) == {"predictor", "transformer", "detector"}
    stack = local_stack.Stack(tmp_path / "logs")
    try:
        for spec in specs.values():
            stack.start(spec)
        for spec in specs.values():
            stack.wait_ready(spec, 180)
        detector = specs["detector"].url
        house = load_dataset().iloc[0]
        body = {"instances": [{name: float(house[name]) for name in DEFAULT_FEATURES}]}
        answer = httpx.post(f"{specs['transformer'].url}/v1/models/housing:predict", json=body, timeout=30)
        assert answer.status_code == 200, answer.text

        def arrived() -> bool:
            text = httpx.get(detector + "/metrics", timeout=5).text
            return all(
                metric_value(text, "housing_detector_events_total", type=kind, outcome="accepted") >= 1
                for kind in ("request", "response")
            )

        wait_until(arrived, timeout=30, what="the inference events reached the detector")
        status = httpx.get(detector + "/status", timeout=5).json()
        assert sum(key["window_rows"] for key in status["keys"].values()) == 1
    finally:
        stack.stop()
    assert (tmp_path / "detector" / "state.json").is_file()  # saved on shutdown, under the stack's var dir
