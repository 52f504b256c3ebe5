"""Prediction intervals through every protocol shape, against real predictor and transformer processes.

Bounds must equal the in-process compiled model's (``CompiledModel.predict_bounds``) on the same rows; an
answer that did not ask for them must be exactly what it always was; a bad level or output name is a 400.
"""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest
import tritonclient.http as triton_http
from kserve import InferenceGRPCClient, InferInput, InferRequest

from model.intervals import LEVELS
from model.schema import ALL_FEATURES
from tests.serving.conftest import MODEL, Server, start_transformer
from tests.serving.test_protocols import triton_grpc, triton_inputs

pytestmark = pytest.mark.slow

BOUNDS = ["price_lower", "price_upper"]
LEVEL_RULE = "interval_level: must be one of 0.8, 0.9, 0.95, got "


def reference(artifact, rows: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The price and the bounds at ``level`` of the in-process compiled model."""
    price, lower, upper = artifact.pipeline.predict_bounds(rows)
    column = LEVELS.index(level)
    return price, lower[:, column], upper[:, column]


@pytest.fixture(scope="module")
def batch_1000(houses, rows_of) -> np.ndarray:
    return rows_of((houses * 2)[:1000])


# --- predictor ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rows", [1, 1000])
def test_predictor_v2_rest_answers_the_outputs_asked_for_by_name(
    predictor: Server, artifact, batch_1000, rows
):
    client = triton_http.InferenceServerClient(f"127.0.0.1:{predictor.http_port}")
    metadata = client.get_model_metadata(MODEL)
    assert [output["name"] for output in metadata["outputs"]] == ["output-0", *BOUNDS]
    assert metadata["parameters"]["interval_levels"] == "0.8,0.9,0.95"
    tensor = triton_http.InferInput("input-0", [rows, len(artifact.feature_names)], "FP64")
    tensor.set_data_from_numpy(batch_1000[:rows])
    asked = [triton_http.InferRequestedOutput(name) for name in ("output-0", *BOUNDS)]
    result = client.infer(MODEL, [tensor], outputs=asked, parameters={"interval_level": 0.8})
    price, lower, upper = reference(artifact, batch_1000[:rows], 0.8)
    np.testing.assert_allclose(result.as_numpy("output-0"), price, rtol=1e-12)
    np.testing.assert_allclose(result.as_numpy("price_lower"), lower, rtol=1e-12)
    np.testing.assert_allclose(result.as_numpy("price_upper"), upper, rtol=1e-12)
    assert (lower < price).all() and (price < upper).all()


def test_predictor_v2_grpc_takes_the_level_as_a_string(predictor: Server, artifact, batch_1000):
    rows = batch_1000[:5].tolist()
    request = {"inputs": [{"name": "input-0", "datatype": "FP64", "data": rows}], "outputs": BOUNDS}
    seen = triton_grpc_request(predictor, {**request, "parameters": {"interval_level": "0.95"}})
    _, lower, upper = reference(artifact, batch_1000[:5], 0.95)
    np.testing.assert_allclose(seen["results"]["price_lower"], lower, rtol=1e-12)
    np.testing.assert_allclose(seen["results"]["price_upper"], upper, rtol=1e-12)
    assert seen["output_names"] == BOUNDS
    # tritonclient sends a Python float as a double, which KServe's gRPC parameters cannot carry: a clear 400.
    refused = triton_grpc_request(predictor, {**request, "parameters": {"interval_level": 0.95}})
    assert refused["error"]["status"] == "StatusCode.INVALID_ARGUMENT"
    assert 'send it as a string (e.g. "0.9") over gRPC' in refused["error"]["message"]


def test_predictor_v1_adds_intervals_beside_predictions(predictor: Server, artifact, batch_1000):
    body = {"instances": batch_1000[:3].tolist(), "parameters": {"interval_level": 0.9}}
    answer = httpx.post(f"{predictor.url}/v1/models/{MODEL}:predict", json=body).json()
    price, lower, upper = reference(artifact, batch_1000[:3], 0.9)
    np.testing.assert_allclose(answer["predictions"], price, rtol=1e-12)
    assert [bound["level"] for bound in answer["intervals"]] == [0.9] * 3
    np.testing.assert_allclose([bound["lower"] for bound in answer["intervals"]], lower, rtol=1e-12)
    np.testing.assert_allclose([bound["upper"] for bound in answer["intervals"]], upper, rtol=1e-12)


# --- transformer --------------------------------------------------------------------------------------------


def named_inputs(artifact, instances: list[dict[str, float]]) -> list[dict]:
    return [
        {
            "name": name,
            "datatype": "FP64",
            "shape": [len(instances)],
            "data": [house[name] for house in instances],
        }
        for name in artifact.feature_names
    ]


@pytest.mark.parametrize("rows", [1, 1000])
def test_transformer_v2_rest_answers_the_outputs_asked_for_in_their_order(
    transformer: Server, artifact, houses, rows_of, rows
):
    instances = (houses * 2)[:rows]
    client = triton_http.InferenceServerClient(f"127.0.0.1:{transformer.http_port}")
    metadata = client.get_model_metadata(MODEL)
    assert [output["name"] for output in metadata["outputs"]] == ["medv", *BOUNDS]
    assert metadata["parameters"]["interval_levels"] == "0.8,0.9,0.95"
    asked = [triton_http.InferRequestedOutput(name) for name in ("price_upper", "medv", "price_lower")]
    inputs = triton_inputs(artifact, instances)
    result = client.infer(MODEL, inputs, outputs=asked, parameters={"interval_level": 0.95})
    answer = result.get_response()
    assert [output["name"] for output in answer["outputs"]] == ["price_upper", "medv", "price_lower"]
    assert answer["outputs"][0]["parameters"] == {"interval_level": "0.95"}
    price, lower, upper = reference(artifact, rows_of(instances), 0.95)
    np.testing.assert_allclose(result.as_numpy("medv"), price, rtol=1e-9)
    np.testing.assert_allclose(result.as_numpy("price_lower"), lower, rtol=1e-9)
    np.testing.assert_allclose(result.as_numpy("price_upper"), upper, rtol=1e-9)


def test_transformer_v2_without_outputs_answers_exactly_as_before(
    transformer: Server, artifact, houses, rows_of
):
    url = f"{transformer.url}/v2/models/{MODEL}/infer"
    for parameters in ({}, {"parameters": {"interval_level": 0.8}}):  # a level alone asks for no output
        body = {"id": "same-as-ever", "inputs": named_inputs(artifact, houses[:2]), **parameters}
        answer = httpx.post(url, json=body).json()
        assert answer == {  # KServe's rendering of the one output the transformer has always answered
            "id": "same-as-ever",
            "model_name": MODEL,
            "model_version": artifact.version,
            "parameters": None,
            "outputs": [
                {
                    "name": "medv",
                    "datatype": "FP64",
                    "shape": [2],
                    "parameters": None,
                    "data": answer["outputs"][0]["data"],
                }
            ],
        }
        np.testing.assert_allclose(
            answer["outputs"][0]["data"], artifact.pipeline.predict(rows_of(houses[:2]))
        )
    only = {"inputs": named_inputs(artifact, houses[:2]), "outputs": [{"name": "price_lower"}]}
    answer = httpx.post(url, json=only).json()  # bounds alone, at the default level (0.9)
    assert [output["name"] for output in answer["outputs"]] == ["price_lower"]
    np.testing.assert_allclose(answer["outputs"][0]["data"], reference(artifact, rows_of(houses[:2]), 0.9)[1])


def test_transformer_v2_grpc(transformer: Server, artifact, houses, rows_of):
    data = [[house[name] for name in ALL_FEATURES] for house in houses[:4]]
    request = {"inputs": [{"name": "houses", "datatype": "FP64", "data": data}], "outputs": ["medv", *BOUNDS]}
    seen = triton_grpc_request(transformer, {**request, "parameters": {"interval_level": "0.8"}})
    assert seen["outputs"] == [
        ["medv", "FP64", [-1]],
        ["price_lower", "FP64", [-1]],
        ["price_upper", "FP64", [-1]],
    ]
    price, lower, upper = reference(artifact, rows_of(houses[:4]), 0.8)
    np.testing.assert_allclose(seen["results"]["medv"], price, rtol=1e-9)
    np.testing.assert_allclose(seen["results"]["price_lower"], lower, rtol=1e-9)
    np.testing.assert_allclose(seen["results"]["price_upper"], upper, rtol=1e-9)
    refused = triton_grpc_request(transformer, {**request, "parameters": {"interval_level": "0.5"}})
    assert refused["error"]["status"] == "StatusCode.INVALID_ARGUMENT"
    assert LEVEL_RULE + "'0.5'" in refused["error"]["message"]


def test_transformer_v2_grpc_with_kserve_client(transformer: Server, artifact, houses, rows_of):
    from kserve.protocol.infer_type import RequestedOutput

    async def call() -> dict[str, np.ndarray]:
        client = InferenceGRPCClient(transformer.grpc_address, timeout=30)
        inputs = [
            InferInput(name, [3], "FP64", [house[name] for house in houses[:3]])
            for name in artifact.feature_names
        ]
        request = InferRequest(
            MODEL,
            inputs,
            parameters={"interval_level": "0.9"},
            request_outputs=[RequestedOutput("price_upper")],
        )
        answer = await client.infer(request)
        await client.close()
        return {output.name: output.as_numpy() for output in answer.outputs}

    outputs = asyncio.run(call())
    assert list(outputs) == ["price_upper"]
    np.testing.assert_allclose(
        outputs["price_upper"], reference(artifact, rows_of(houses[:3]), 0.9)[2], rtol=1e-9
    )


def test_transformer_v1_adds_intervals_beside_predictions(transformer: Server, artifact, houses, rows_of):
    url = f"{transformer.url}/v1/models/{MODEL}:predict"
    plain = httpx.post(url, json={"instances": houses[:3]}).json()
    assert list(plain) == ["predictions"]  # as it always was
    answer = httpx.post(url, json={"instances": houses[:3], "parameters": {"interval_level": 0.8}}).json()
    price, lower, upper = reference(artifact, rows_of(houses[:3]), 0.8)
    np.testing.assert_allclose(answer["predictions"], price, rtol=1e-9)
    assert answer["predictions"] == plain["predictions"]
    assert [sorted(bound) for bound in answer["intervals"]] == [["level", "lower", "upper"]] * 3
    assert [bound["level"] for bound in answer["intervals"]] == [0.8] * 3
    np.testing.assert_allclose([bound["lower"] for bound in answer["intervals"]], lower, rtol=1e-9)
    np.testing.assert_allclose([bound["upper"] for bound in answer["intervals"]], upper, rtol=1e-9)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"parameters": {"interval_level": 0.85}}, LEVEL_RULE + "0.85"),
        ({"parameters": {"interval_level": "wide"}}, LEVEL_RULE + "'wide'"),
        ({"parameters": "0.9"}, "parameters: must be an object"),
    ],
)
def test_transformer_v1_refuses_a_bad_level(transformer: Server, houses, body, message):
    response = httpx.post(
        f"{transformer.url}/v1/models/{MODEL}:predict", json={"instances": houses[:1], **body}
    )
    assert response.status_code == 400 and message in response.text


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"outputs": [{"name": "price"}]}, "outputs: unknown output 'price'; this model's outputs are medv, "
                                           "price_lower, price_upper"),
        ({"outputs": [{"name": "medv"}, {"name": "medv"}]}, "outputs: an output is named twice"),
        ({"outputs": [{"name": "price_lower"}], "parameters": {"interval_level": 0.99}}, LEVEL_RULE + "0.99"),
        ({"parameters": {"interval_level": 0.5}}, LEVEL_RULE + "0.5"),
    ],
)  # fmt: skip
def test_transformer_v2_refuses_a_bad_output_or_level(transformer: Server, artifact, houses, extra, message):
    body = {"inputs": named_inputs(artifact, houses[:1]), **extra}
    response = httpx.post(f"{transformer.url}/v2/models/{MODEL}/infer", json=body)
    assert response.status_code == 400 and message in response.text


@pytest.mark.parametrize("protocol", ["v1", "grpc-v2"])
def test_intervals_through_the_other_predictor_protocols(
    predictor: Server, log_dir, artifact, houses, rows_of, protocol
):
    server = start_transformer(
        log_dir, predictor, protocol=protocol, name=f"transformer-intervals-{protocol}"
    )
    try:
        body = {"instances": houses[:3], "parameters": {"interval_level": 0.95}}
        answer = httpx.post(f"{server.url}/v1/models/{MODEL}:predict", json=body).json()
    finally:
        server.service.stop()
    price, lower, upper = reference(artifact, rows_of(houses[:3]), 0.95)
    np.testing.assert_allclose(answer["predictions"], price, rtol=1e-9)
    np.testing.assert_allclose([bound["lower"] for bound in answer["intervals"]], lower, rtol=1e-9)
    np.testing.assert_allclose([bound["upper"] for bound in answer["intervals"]], upper, rtol=1e-9)


# --- the original API ---------------------------------------------------------------------------------------


def test_seed_predict_always_answers_with_the_interval(transformer: Server, artifact, houses, rows_of):
    answer = httpx.post(f"{transformer.url}/predict", json=houses[0]).json()
    price, lower, upper = reference(artifact, rows_of(houses[:1]), 0.9)
    assert answer["prediction"] == pytest.approx(price[0], rel=1e-9)
    assert answer["interval"] == {
        "level": 0.9,
        "lower": pytest.approx(lower[0]),
        "upper": pytest.approx(upper[0]),
    }
    assert answer["model_version"] == artifact.version and answer["unit"] == "USD 1000s"
    wide = httpx.post(f"{transformer.url}/predict?interval_level=0.95", json=houses[0]).json()["interval"]
    assert wide["level"] == 0.95 and wide["lower"] < answer["interval"]["lower"] < answer["prediction"]
    batch = httpx.post(
        f"{transformer.url}/predict/batch?interval_level=0.8", json={"instances": houses[:3]}
    ).json()
    price, lower, upper = reference(artifact, rows_of(houses[:3]), 0.8)
    assert [interval["level"] for interval in batch["intervals"]] == [0.8] * 3
    np.testing.assert_allclose([interval["upper"] for interval in batch["intervals"]], upper, rtol=1e-9)
    refused = httpx.post(f"{transformer.url}/predict?interval_level=0.7", json=houses[0])
    assert refused.status_code == 400 and LEVEL_RULE + "'0.7'" in refused.text


def test_openapi_shows_the_intervals(transformer: Server):
    spec = httpx.get(f"{transformer.url}/openapi.json").json()
    schemas = spec["components"]["schemas"]
    assert set(schemas["Interval"]["properties"]) == {"level", "lower", "upper"}
    assert "interval" in schemas["SeedPrediction"]["properties"]
    assert "intervals" in schemas["SeedBatchPrediction"]["properties"]
    parameters = spec["paths"]["/predict"]["post"]["parameters"]
    assert [parameter["name"] for parameter in parameters] == ["interval_level"]


def triton_grpc_request(server: Server, request: dict) -> dict:
    """tritonclient.grpc's answer to a request with ``outputs`` and ``parameters`` (triton_grpc_client.py)."""
    extra = {key: value for key, value in request.items() if key != "inputs"}
    return triton_grpc(server, request["inputs"], request["outputs"][0], **extra)
