"""V1 and V2 (REST and gRPC) through independent clients, against real predictor and transformer processes.

Predictions must equal the in-process ``pipeline.predict`` on the same rows, through the predictor directly
and through transformer -> predictor.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys

import httpx
import numpy as np
import pytest
import tritonclient.http as triton_http
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig

from model.schema import ALL_FEATURES
from tests.conftest import ROOT
from tests.serving.conftest import MODEL, Server

pytestmark = pytest.mark.slow


def triton_grpc(server: Server, inputs: list[dict], output: str, **extra: object) -> dict:
    """tritonclient.grpc's view of a server (in a subprocess: see triton_grpc_client.py); ``extra``: the
    request's ``outputs`` and ``parameters``."""
    completed = subprocess.run(
        [sys.executable, "-m", "tests.serving.triton_grpc_client", server.grpc_address, MODEL, output],
        input=json.dumps({"inputs": inputs, **extra}),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


def triton_inputs(artifact, instances: list[dict[str, float]]) -> list[triton_http.InferInput]:
    """tritonclient's named inputs, one FP64 tensor per feature of the model, for ``instances``."""
    inputs = []
    for name in artifact.feature_names:
        tensor = triton_http.InferInput(name, [len(instances)], "FP64")
        tensor.set_data_from_numpy(np.array([house[name] for house in instances]))
        inputs.append(tensor)
    return inputs


def expected(artifact, rows: np.ndarray) -> np.ndarray:
    return artifact.pipeline.predict(rows)


@pytest.fixture(scope="module")
def batch_1000(houses, rows_of) -> np.ndarray:
    repeated = (houses * 2)[:1000]
    return rows_of(repeated)


# --- predictor, tritonclient --------------------------------------------------------------------------------


@pytest.mark.parametrize("rows", [1, 1000])
def test_predictor_v2_rest_tritonclient(predictor: Server, artifact, batch_1000, rows):
    client = triton_http.InferenceServerClient(f"127.0.0.1:{predictor.http_port}")
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(MODEL)
    metadata = client.get_model_metadata(MODEL)
    n = len(artifact.feature_names)
    assert metadata["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, n]}]
    assert metadata["outputs"] == [
        {"name": name, "datatype": "FP64", "shape": [-1]}
        for name in ("output-0", "price_lower", "price_upper")
    ]
    assert metadata["parameters"]["feature_names"].split(",") == artifact.feature_names
    assert metadata["versions"] == [artifact.version]
    data = batch_1000[:rows]
    tensor = triton_http.InferInput("input-0", list(data.shape), "FP64")
    tensor.set_data_from_numpy(data)
    result = client.infer(MODEL, [tensor]).as_numpy("output-0")
    np.testing.assert_allclose(result, expected(artifact, data), rtol=1e-9)


def test_predictor_accepts_fp32(predictor: Server, artifact, batch_1000):
    client = triton_http.InferenceServerClient(f"127.0.0.1:{predictor.http_port}")
    data = batch_1000[:5].astype(np.float32)
    tensor = triton_http.InferInput("input-0", list(data.shape), "FP32")
    tensor.set_data_from_numpy(data, binary_data=False)
    result = client.infer(MODEL, [tensor]).as_numpy("output-0")
    np.testing.assert_allclose(result, expected(artifact, data.astype(np.float64)), rtol=1e-9)


@pytest.mark.parametrize("rows", [1, 1000])
def test_predictor_v2_grpc_tritonclient(predictor: Server, artifact, batch_1000, rows):
    data = batch_1000[:rows]
    seen = triton_grpc(
        predictor, [{"name": "input-0", "datatype": "FP64", "data": data.tolist()}], "output-0"
    )
    assert seen["live"] and seen["ready"] and seen["model_ready"]
    assert seen["inputs"] == [["input-0", "FP64", [-1, len(artifact.feature_names)]]]
    assert seen["outputs"] == [[name, "FP64", [-1]] for name in ("output-0", "price_lower", "price_upper")]
    np.testing.assert_allclose(seen["result"], expected(artifact, data), rtol=1e-9)


# --- predictor, KServe's own clients ------------------------------------------------------------------------


@pytest.mark.parametrize("rows", [1, 1000])
def test_predictor_kserve_clients(predictor: Server, artifact, batch_1000, rows):
    data = batch_1000[:rows]

    async def call() -> tuple[np.ndarray, np.ndarray]:
        rest = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30))
        assert await rest.is_server_live(predictor.url)
        assert await rest.is_server_ready(predictor.url)
        assert await rest.is_model_ready(predictor.url, MODEL)
        tensor = InferInput("input-0", list(data.shape), "FP64")
        tensor.set_data_from_numpy(data, binary_data=False)
        by_rest = await rest.infer(predictor.url, InferRequest(MODEL, [tensor]), model_name=MODEL)
        await rest.close()
        grpc_client = InferenceGRPCClient(predictor.grpc_address, timeout=30)
        assert await grpc_client.is_server_ready()
        assert await grpc_client.is_model_ready(MODEL)
        tensor = InferInput("input-0", list(data.shape), "FP64")
        tensor.set_data_from_numpy(data, binary_data=True)
        by_grpc = await grpc_client.infer(InferRequest(MODEL, [tensor]))
        await grpc_client.close()
        return by_rest.outputs[0].as_numpy(), by_grpc.outputs[0].as_numpy()

    by_rest, by_grpc = asyncio.run(call())
    np.testing.assert_allclose(by_rest, expected(artifact, data), rtol=1e-9)
    np.testing.assert_allclose(by_grpc, expected(artifact, data), rtol=1e-9)


def test_predictor_v1(predictor: Server, artifact, batch_1000):
    data = batch_1000[:3]
    response = httpx.post(f"{predictor.url}/v1/models/{MODEL}:predict", json={"instances": data.tolist()})
    assert response.status_code == 200
    np.testing.assert_allclose(response.json()["predictions"], expected(artifact, data), rtol=1e-9)
    assert httpx.get(f"{predictor.url}/v1/models/{MODEL}").json() == {"name": MODEL, "ready": True}


# --- transformer -> predictor -------------------------------------------------------------------------------


@pytest.mark.parametrize("rows", [1, 1000])
def test_transformer_v1_named_instances(transformer: Server, artifact, houses, rows_of, rows):
    instances = (houses * 2)[:rows]
    response = httpx.post(
        f"{transformer.url}/v1/models/{MODEL}:predict", json={"instances": instances}, timeout=30
    )
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(
        response.json()["predictions"], expected(artifact, rows_of(instances)), rtol=1e-9
    )


def test_transformer_v1_without_b(transformer: Server, artifact, houses, rows_of):
    instances = [{name: value for name, value in house.items() if name != "b"} for house in houses[:4]]
    response = httpx.post(f"{transformer.url}/v1/models/{MODEL}:predict", json={"instances": instances})
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(
        response.json()["predictions"], expected(artifact, rows_of(instances)), rtol=1e-9
    )


@pytest.mark.parametrize("rows", [1, 1000])
def test_transformer_v2_named_inputs_tritonclient(transformer: Server, artifact, houses, rows_of, rows):
    instances = (houses * 2)[:rows]
    client = triton_http.InferenceServerClient(f"127.0.0.1:{transformer.http_port}")
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(MODEL)
    metadata = client.get_model_metadata(MODEL)
    assert [tensor["name"] for tensor in metadata["inputs"]] == artifact.feature_names
    assert metadata["outputs"] == [
        {"name": name, "datatype": "FP64", "shape": [-1]} for name in ("medv", "price_lower", "price_upper")
    ]
    assert metadata["parameters"]["unit"] == "USD 1000s"
    result = client.infer(MODEL, triton_inputs(artifact, instances)).as_numpy("medv")
    np.testing.assert_allclose(result, expected(artifact, rows_of(instances)), rtol=1e-9)


@pytest.mark.parametrize("rows", [1, 1000])
def test_transformer_v2_matrix_grpc_tritonclient(transformer: Server, artifact, houses, rows_of, rows):
    instances = (houses * 2)[:rows]
    data = [[house[name] for name in ALL_FEATURES] for house in instances]
    seen = triton_grpc(transformer, [{"name": "houses", "datatype": "FP64", "data": data}], "medv")
    assert seen["live"] and seen["ready"] and seen["model_ready"]
    assert seen["outputs"] == [[name, "FP64", [-1]] for name in ("medv", "price_lower", "price_upper")]
    np.testing.assert_allclose(seen["result"], expected(artifact, rows_of(instances)), rtol=1e-9)


def test_transformer_kserve_clients(transformer: Server, artifact, houses, rows_of):
    instances = houses[:7]

    async def call() -> tuple[np.ndarray, np.ndarray]:
        rest = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30))
        assert await rest.is_server_ready(transformer.url)
        inputs = [
            InferInput(name, [7], "FP64", [house[name] for house in instances])
            for name in artifact.feature_names
        ]
        by_rest = await rest.infer(transformer.url, InferRequest(MODEL, inputs), model_name=MODEL)
        await rest.close()
        grpc_client = InferenceGRPCClient(transformer.grpc_address, timeout=30)
        assert await grpc_client.is_model_ready(MODEL)
        inputs = [
            InferInput(name, [7], "FP64", [house[name] for house in instances])
            for name in artifact.feature_names
        ]
        by_grpc = await grpc_client.infer(InferRequest(MODEL, inputs))
        await grpc_client.close()
        return by_rest.outputs[0].as_numpy(), by_grpc.outputs[0].as_numpy()

    by_rest, by_grpc = asyncio.run(call())
    np.testing.assert_allclose(by_rest, expected(artifact, rows_of(instances)), rtol=1e-9)
    np.testing.assert_allclose(by_grpc, expected(artifact, rows_of(instances)), rtol=1e-9)


@pytest.mark.parametrize("protocol", ["v1", "grpc-v2"])
def test_transformer_other_predictor_protocols(
    predictor: Server, log_dir, artifact, houses, rows_of, protocol
):
    from tests.serving.conftest import start_transformer

    server = start_transformer(log_dir, predictor, protocol=protocol, name=f"transformer-{protocol}")
    try:
        response = httpx.post(f"{server.url}/v1/models/{MODEL}:predict", json={"instances": houses[:3]})
        assert response.status_code == 200, response.text
        np.testing.assert_allclose(
            response.json()["predictions"], expected(artifact, rows_of(houses[:3])), rtol=1e-9
        )
    finally:
        server.service.stop()


# --- metrics ------------------------------------------------------------------------------------------------


def sample(metrics: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus text exposition (0 when absent)."""
    for line in metrics.splitlines():
        match = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
        if match:
            found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
            if all(found.get(key) == value for key, value in labels.items()):
                return float(match.group(2))
    return 0.0


def test_metrics_after_traffic(predictor: Server, transformer: Server, artifact, houses):
    httpx.post(
        f"{transformer.url}/v1/models/{MODEL}:predict", json={"instances": houses[:5]}
    ).raise_for_status()
    assert (
        httpx.post(f"{transformer.url}/v1/models/{MODEL}:predict", json={"instances": []}).status_code == 400
    )
    bad = {**houses[0], "nox": 2.0}
    assert (
        httpx.post(f"{transformer.url}/v1/models/{MODEL}:predict", json={"instances": [bad]}).status_code
        == 400
    )
    row = [[houses[0][name] for name in artifact.feature_names]]
    assert "result" in triton_grpc(
        predictor, [{"name": "input-0", "datatype": "FP64", "data": row}], "output-0"
    )

    served = httpx.get(f"{predictor.url}/metrics").text
    version = artifact.version
    assert sample(served, "request_predict_seconds_count", model_name=MODEL) > 0
    assert sample(served, "request_preprocess_seconds_count", model_name=MODEL) > 0
    assert sample(served, "housing_requests_total", component="predictor", model_name=MODEL, code="200") >= 2
    assert (
        sample(served, "housing_request_duration_seconds_count", component="predictor", model_name=MODEL) >= 2
    )
    assert sample(served, "housing_batch_rows_sum", component="predictor", model_name=MODEL) >= 6
    assert sample(served, "housing_predicted_value_count", model_name=MODEL, model_version=version) >= 6
    assert (
        sample(served, "housing_predicted_value_bucket", model_name=MODEL, model_version=version, le="50.0")
        >= 6
    )
    assert (
        sample(served, "housing_model_info", model_name=MODEL, model_version=version, sha256=artifact.sha256)
        == 1
    )

    front = httpx.get(f"{transformer.url}/metrics").text
    assert sample(front, "request_preprocess_seconds_count", model_name=MODEL) > 0
    assert sample(front, "housing_requests_total", component="transformer", model_name=MODEL, code="200") >= 1
    assert sample(front, "housing_requests_total", component="transformer", model_name=MODEL, code="400") >= 2
    assert (
        sample(
            front, "housing_validation_errors_total", model_name=MODEL, field="instances", rule="empty_batch"
        )
        >= 1
    )
    assert (
        sample(front, "housing_validation_errors_total", model_name=MODEL, field="nox", rule="out_of_domain")
        >= 1
    )
    assert sample(front, "housing_batch_rows_count", component="transformer", model_name=MODEL) >= 1
