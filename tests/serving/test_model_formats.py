"""The predictor's two forms of the model: the compiled one (``model.onnx``, the default) and scikit-learn's.

Which one a predictor serves follows ``--model_format``, what the artifact holds and which file the deployment
pins (``model.artifact.serving_format``); every file is checked before anything is loaded. Real predictor
processes, started side by side.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest

from housing.processes import wait_until
from model.artifact import (
    INTERVALS_FILE,
    INTERVALS_SHA256,
    METADATA_FILE,
    MODEL_FILE,
    ONNX_FILE,
    ONNX_SHA256,
    load_artifact,
    read_metadata,
)
from tests.serving.conftest import MODEL, Server, start_predictor

pytestmark = pytest.mark.slow


def v2(rows: np.ndarray) -> dict:
    return {
        "inputs": [
            {"name": "input-0", "datatype": "FP64", "shape": list(rows.shape), "data": rows.ravel().tolist()}
        ]
    }


def listening(server: Server) -> bool:
    try:
        return httpx.get(f"{server.url}/v2/health/live").status_code == 200
    except httpx.TransportError:
        return False


def served(server: Server, rows: np.ndarray) -> tuple[str, np.ndarray]:
    """The form a ready predictor serves (its metadata) and its predictions for ``rows``."""
    server.service.wait_ready(f"{server.url}/v2/health/ready", timeout=60)
    metadata = httpx.get(f"{server.url}/v2/models/{MODEL}").json()
    response = httpx.post(f"{server.url}/v2/models/{MODEL}/infer", json=v2(rows))
    assert response.status_code == 200, response.text
    return metadata["parameters"]["model_format"], np.array(response.json()["outputs"][0]["data"])


@pytest.fixture(scope="module")
def rows(houses, rows_of) -> np.ndarray:
    return rows_of(houses[:50])


@pytest.fixture(scope="module")
def without_onnx(artifact_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The artifact as training wrote it before the compiled form: no model.onnx, no onnx_sha256, and no
    intervals (which came later still)."""
    directory = Path(shutil.copytree(artifact_dir, tmp_path_factory.mktemp("old") / "artifact"))
    (directory / ONNX_FILE).unlink()
    (directory / INTERVALS_FILE).unlink()
    metadata = read_metadata(directory)
    del metadata[ONNX_SHA256], metadata[INTERVALS_SHA256], metadata["intervals"]
    (directory / METADATA_FILE).write_text(json.dumps(metadata))
    return directory


def bounds(server: Server, rows: np.ndarray) -> httpx.Response:
    """The predictor's answer to ``rows`` asking for the 90% interval's bounds by name."""
    body = {**v2(rows), "outputs": [{"name": "price_lower"}, {"name": "price_upper"}]}
    return httpx.post(
        f"{server.url}/v2/models/{MODEL}/infer", json={**body, "parameters": {"interval_level": 0.9}}
    )


def test_each_form_serves_its_own_predictions(artifact_dir, without_onnx, log_dir, rows):
    sklearn_model = load_artifact(artifact_dir).pipeline
    compiled_model = load_artifact(artifact_dir, model_format="onnx").pipeline
    joblib_sha256 = read_metadata(artifact_dir)["sha256"]
    onnx_sha256 = read_metadata(artifact_dir)[ONNX_SHA256]
    servers = {
        "default": start_predictor(log_dir, str(artifact_dir), name="predictor-default"),
        "sklearn": start_predictor(
            log_dir, str(artifact_dir), "--model_format", "sklearn", name="predictor-sk"
        ),
        "old": start_predictor(log_dir, str(without_onnx), name="predictor-old-artifact"),
        "pin onnx": start_predictor(
            log_dir, str(artifact_dir), "--expected_sha256", onnx_sha256, name="predictor-pin-onnx"
        ),
        "pin joblib": start_predictor(
            log_dir, str(artifact_dir), env={"EXPECTED_SHA256": joblib_sha256}, name="predictor-pin-joblib"
        ),
    }
    try:
        forms = {name: served(server, rows) for name, server in servers.items()}
        for name in ("default", "pin onnx"):
            assert forms[name][0] == "onnx"
            np.testing.assert_allclose(forms[name][1], compiled_model.predict(rows), rtol=1e-9)
        for name in ("sklearn", "old", "pin joblib"):
            assert forms[name][0] == "sklearn"
            np.testing.assert_allclose(forms[name][1], sklearn_model.predict(rows), rtol=1e-9)
        # The two forms differ by float32 rounding only.
        np.testing.assert_allclose(forms["default"][1], forms["sklearn"][1], atol=0.01)
        assert "has no model.onnx" in servers["old"].service.log()
        assert f"pin model.onnx's sha256 {onnx_sha256}" in servers["pin joblib"].service.log()
        assert "WARNING" not in servers["default"].service.log()
        # Both forms give the intervals, the compiled one from its graph, scikit-learn's from intervals.json,
        # within the parity training checked; an artifact trained before intervals says it has none.
        answers = {name: bounds(servers[name], rows).json()["outputs"] for name in ("default", "sklearn")}
        for lower_and_upper in zip(*(answer for answer in answers.values()), strict=True):
            np.testing.assert_allclose(*(output["data"] for output in lower_and_upper), atol=0.01)
        refused = bounds(servers["old"], rows)
        assert refused.status_code == 400 and "has no intervals" in refused.text
    finally:
        for server in servers.values():
            server.service.stop()


@pytest.mark.parametrize(
    ("changed", "refusal"),
    [
        (ONNX_FILE, "refusing to load a file that was modified"),
        # Not loaded when the compiled form is served, but an artifact with a file modified is refused whole.
        (MODEL_FILE, "refusing to unpickle a file that was modified"),
    ],
)
def test_a_modified_file_is_refused_before_loading(artifact_dir, log_dir, tmp_path, changed, refusal):
    tampered = Path(shutil.copytree(artifact_dir, tmp_path / "tampered"))
    with open(tampered / changed, "ab") as handle:
        handle.write(b"\0")
    server = start_predictor(log_dir, str(tampered), name=f"predictor-tampered-{changed}")
    try:
        wait_until(lambda: "refusing to serve" in server.service.log(), timeout=60, what="refusal logged")
        assert refusal in server.service.log()
        wait_until(lambda: listening(server), timeout=30, what="server listening")
        assert httpx.get(f"{server.url}/v2/health/ready").status_code == 503
    finally:
        server.service.stop()


def test_a_negative_dimension_is_refused_naming_the_input_and_the_rule(predictor: Server):
    body = {"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [-1, 12], "data": [1.0] * 12}]}
    response = httpx.post(f"{predictor.url}/v2/models/{MODEL}/infer", json=body)
    assert response.status_code == 400
    assert response.json()["error"] == (
        "input-0: shape [-1, 12] has a negative dimension; dimensions are unsigned (Open Inference Protocol)"
    )


def test_fewer_than_one_onnxruntime_thread_is_a_usage_error(capsys):
    from predictor.__main__ import parse_args

    assert parse_args(["--storage_uri", "x"]).intra_op_threads == 1
    with pytest.raises(SystemExit) as exited:
        parse_args(["--storage_uri", "x", "--intra_op_threads", "0"])
    assert exited.value.code == 2
    assert "--intra_op_threads must be at least 1, got 0" in capsys.readouterr().err
