"""The feature order travels with each tensor: the predictor reads columns by name, so a stale order is
harmless."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from kserve import InferenceGRPCClient, InferInput, InferRequest

from tests.serving.conftest import MODEL, Server, start_predictor, start_transformer
from tests.serving.test_faults import restart_predictor_on
from tests.serving.test_protocols import expected, sample

pytestmark = pytest.mark.slow


def v2_tensor(rows: np.ndarray, names: list[str] | None = None) -> dict:
    """A V2 REST body with one [N, k] tensor, its columns named when ``names`` is given."""
    tensor = {"name": "input-0", "datatype": "FP64", "shape": list(rows.shape), "data": rows.ravel().tolist()}
    if names is not None:
        tensor["parameters"] = {"feature_names": ",".join(names)}
    return {"inputs": [tensor]}


def infer_rest(server: Server, body: dict) -> httpx.Response:
    return httpx.post(f"{server.url}/v2/models/{MODEL}/infer", json=body, timeout=30)


def infer_grpc(server: Server, rows: np.ndarray, names: list[str]) -> np.ndarray:
    """KServe's gRPC client, the tensor's column names in its parameters."""

    async def call() -> np.ndarray:
        client = InferenceGRPCClient(server.grpc_address, timeout=30)
        parameters = {"feature_names": ",".join(names)}
        tensor = InferInput("input-0", list(rows.shape), "FP64", parameters=parameters)
        tensor.set_data_from_numpy(rows, binary_data=True)
        try:
            return (await client.infer(InferRequest(MODEL, [tensor]))).outputs[0].as_numpy()
        finally:
            await client.close()

    return asyncio.run(call())


@pytest.fixture(scope="module")
def shuffled(artifact) -> list[str]:
    """The model's features in another order, with ``b`` (which the model does not use) among them."""
    names = [*artifact.feature_names, "b"]
    order = np.random.default_rng(7).permutation(len(names))
    return [names[index] for index in order]


def test_the_predictor_reads_named_columns_by_name(predictor: Server, artifact, houses, rows_of, shuffled):
    ordered = rows_of(houses[:5])
    in_shuffled_order = np.array([[house[name] for name in shuffled] for house in houses[:5]])
    want = expected(artifact, ordered)

    for body in (v2_tensor(ordered), v2_tensor(ordered, artifact.feature_names)):  # no names, same order
        response = infer_rest(predictor, body)
        assert response.status_code == 200, response.text
        np.testing.assert_allclose(response.json()["outputs"][0]["data"], want, rtol=1e-9)
        assert response.json()["model_version"] == artifact.version  # the version that answered

    response = infer_rest(predictor, v2_tensor(in_shuffled_order, shuffled))
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(response.json()["outputs"][0]["data"], want, rtol=1e-9)
    np.testing.assert_allclose(infer_grpc(predictor, in_shuffled_order, shuffled), want, rtol=1e-9)
    # The same shuffled columns without their names are read in the model's order: a wrong answer, which
    # is what the names are there to prevent (and shows the case above is not passing by chance).
    without_b = [index for index, name in enumerate(shuffled) if name != "b"]
    unnamed = infer_rest(predictor, v2_tensor(in_shuffled_order[:, without_b]))
    assert not np.allclose(unnamed.json()["outputs"][0]["data"], want, rtol=1e-3)


def test_a_missing_or_repeated_feature_is_a_400_naming_it(predictor: Server, artifact, houses):
    names = [name for name in artifact.feature_names if name not in ("lstat", "rm")]
    rows = np.array([[house[name] for name in names] for house in houses[:2]])
    response = infer_rest(predictor, v2_tensor(rows, names))
    assert response.status_code == 400
    assert "parameters.feature_names lacks rm, lstat, which the model needs" in response.json()["error"]

    with pytest.raises(grpc.RpcError) as raised:
        infer_grpc(predictor, rows, names)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "lacks rm, lstat" in str(raised.value.details())

    twice = [*artifact.feature_names, "crim"]
    response = infer_rest(predictor, v2_tensor(np.zeros((1, len(twice))), twice))
    assert response.status_code == 400
    assert "names a column twice" in response.json()["error"]

    # Named columns and the tensor's width must agree.
    response = infer_rest(predictor, v2_tensor(np.zeros((1, 3)), artifact.feature_names))
    assert response.status_code == 400
    assert f"must be numbers of shape [N, {len(artifact.feature_names)}]" in response.json()["error"]


@pytest.mark.parametrize("protocol", ["v2", "grpc-v2"])
def test_a_transformer_with_a_stale_feature_order_still_predicts_right(
    artifact_dir: Path,
    reversed_artifact_dir: Path,
    log_dir: Path,
    artifact,
    reversed_artifact,
    houses,
    protocol: str,
):
    """The predictor is replaced, under the transformer, by one whose model takes its features reversed."""
    first = start_predictor(log_dir, str(artifact_dir), name=f"predictor-first-{protocol}")
    first.service.wait_ready(f"{first.url}/v2/health/ready")
    transformer = start_transformer(log_dir, first, protocol=protocol, name=f"transformer-stale-{protocol}")
    replaced = None
    instances = houses[:6]
    inputs = [
        {"name": name, "datatype": "FP64", "shape": [len(instances)], "data": [h[name] for h in instances]}
        for name in artifact.feature_names
    ]
    try:
        before = infer_rest(transformer, {"inputs": inputs}).json()
        assert before["model_version"] == artifact.version  # the first model's order is now cached
        first.service.stop()
        replaced = restart_predictor_on(first, log_dir, str(reversed_artifact_dir))

        after = infer_rest(transformer, {"inputs": inputs})
        assert after.status_code == 200, after.text
        reversed_rows = np.array([[h[name] for name in reversed_artifact.feature_names] for h in instances])
        np.testing.assert_allclose(
            after.json()["outputs"][0]["data"], expected(reversed_artifact, reversed_rows), rtol=1e-9
        )
        assert after.json()["model_version"] == reversed_artifact.version  # as the answering predictor said
        # No call failed, so the transformer never re-read the metadata: it sent the old order, and the
        # replaced predictor read the columns by their names.
        metrics = httpx.get(f"{transformer.url}/metrics").text
        for reason in ("timeout", "unavailable", "error"):
            assert sample(metrics, "housing_predictor_errors_total", model_name=MODEL, reason=reason) == 0
    finally:
        transformer.service.stop()
        first.service.stop()
        if replaced:
            replaced.service.stop()
