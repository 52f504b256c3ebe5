"""Bad input to the transformer: an exact status each, and a message naming the field and the rule."""

from __future__ import annotations

import asyncio
import json
import re

import grpc
import httpx
import pytest
from kserve import InferenceGRPCClient, InferInput, InferRequest

from model.schema import ALL_FEATURES
from tests.serving.conftest import MODEL, Server

pytestmark = pytest.mark.slow

HOUSE = {"crim": 0.00632, "zn": 18.0, "indus": 2.31, "chas": 0, "nox": 0.538, "rm": 6.575, "age": 65.2,
         "dis": 4.09, "rad": 1, "tax": 296.0, "ptratio": 15.3, "b": 396.9, "lstat": 4.98}  # fmt: skip
ROW = [HOUSE[name] for name in ALL_FEATURES]


def v1(*instances: object) -> str:
    return json.dumps({"instances": list(instances)})


def house(**changes: object) -> dict:
    return {**HOUSE, **changes}


def without(name: str) -> dict:
    return {key: value for key, value in HOUSE.items() if key != name}


def named_inputs(rows: int = 1, skip: str = "", **overrides: tuple[str, list]) -> str:
    inputs = []
    for name in ALL_FEATURES:
        if name == skip:
            continue
        datatype, data = overrides.get(name, ("FP64", [HOUSE[name]] * rows))
        inputs.append({"name": name, "datatype": datatype, "shape": [len(data)], "data": data})
    for name, (datatype, data) in overrides.items():
        if name not in ALL_FEATURES:
            inputs.append({"name": name, "datatype": datatype, "shape": [len(data)], "data": data})
    return json.dumps({"inputs": inputs})


def matrix(shape: list[int], data: list) -> str:
    return json.dumps({"inputs": [{"name": "input-0", "datatype": "FP64", "shape": shape, "data": data}]})


V1_CASES = {
    "malformed json": ('{"instances": [', 400, ["not valid JSON"]),
    "body is a list": ("[1, 2]", 400, ["instances", "missing"]),
    "no instances": ('{"rows": []}', 400, ["instances", "missing"]),
    "instances not a list": ('{"instances": 3}', 400, ["instances", "must be a list"]),
    "empty batch": (v1(), 400, ["instances", "empty batch"]),
    "batch over the limit": (v1(*[HOUSE] * 1001), 400, ["instances", "1001 rows", "limit of 1000"]),
    "instance not an object": (v1(ROW), 400, ["instances[0]", "must be an object"]),
    "missing field": (v1(HOUSE, without("lstat")), 400, ["instances[1].lstat", "missing"]),
    "unknown field": (v1(house(color="red")), 400, ["instances[0].color", "unknown field"]),
    "string value": (v1(house(rm="six")), 400, ["instances[0].rm", "must be a number, got str"]),
    "boolean value": (v1(house(chas=True)), 400, ["instances[0].chas", "must be a number, got bool"]),
    "null value": (v1(house(age=None)), 400, ["instances[0].age", "must be a number, got NoneType"]),
    "NaN literal": (
        v1(HOUSE, house(crim=float("nan"))),
        400,
        ["instances[1].crim", "must be a finite number"],
    ),
    "Infinity literal": (v1(house(tax=float("inf"))), 400, ["instances[0].tax", "must be a finite number"]),
    "nox out of (0, 1)": (
        v1(HOUSE, HOUSE, house(nox=1.5)),
        400,
        ["instances[2].nox", "must be in (0, 1), got 1.5"],
    ),
    "negative crime rate": (v1(house(crim=-1)), 400, ["instances[0].crim", "must be in [0, inf)"]),
    "chas not binary": (v1(house(chas=0.5)), 400, ["instances[0].chas", "must be 0 or 1"]),
    "rad not whole": (v1(house(rad=2.5)), 400, ["instances[0].rad", "must be a whole number"]),
    "zn over 100 %": (v1(house(zn=101)), 400, ["instances[0].zn", "must be in [0, 100]"]),
    "unused b still validated": (v1(house(b=500)), 400, ["instances[0].b", "must be in [0, 396.9]"]),
}

V2_CASES = {
    "v2 malformed json": ('{"inputs": [', 400, ["not valid JSON"]),
    "v2 inputs not a list": ('{"inputs": 5}', 400, ["inputs", "valid list"]),
    "v2 no inputs": ('{"inputs": []}', 400, ["inputs", "at least one input"]),
    "v2 wrong datatype": (
        named_inputs(crim=("BYTES", ["a"])),
        400,
        ["crim", "datatype BYTES is not accepted"],
    ),
    "v2 boolean datatype": (
        named_inputs(chas=("BOOL", [True])),
        400,
        ["chas", "datatype BOOL is not accepted"],
    ),
    "v2 matrix wrong width": (matrix([1, 5], ROW[:5]), 400, ["input-0", "shape [1, 5] must be [N, 13]"]),
    "v2 data does not fit shape": (matrix([2, 13], ROW), 400, ["input-0", "does not fit", "[2, 13]"]),
    "v2 unknown input": (named_inputs(foo=("FP64", [1.0])), 400, ["foo", "unknown input"]),
    "v2 missing input": (named_inputs(skip="lstat"), 400, ["lstat", "missing input"]),
    "v2 ragged inputs": (named_inputs(rows=2, rm=("FP64", [6.5])), 400, ["inputs", "same number of rows"]),
    "v2 NaN value": (named_inputs(nox=("FP64", [float("nan")])), 400, ["nox[0]", "must be a finite number"]),
    "v2 matrix out of domain": (
        matrix([2, 13], ROW + ROW[:6] + [101] + ROW[7:]),
        400,
        ["input-0[1].age", "[0, 100]"],
    ),
    "v2 empty batch": (matrix([0, 13], []), 400, ["input-0", "empty batch"]),
    "v2 negative dimension": (matrix([-1, 13], ROW), 400, ["input-0", "[-1, 13]", "dimensions are unsigned"]),
    "v2 negative named input": (
        named_inputs(rm=("FP64", [6.5])).replace('"shape": [1]', '"shape": [-1]', 1),
        400,
        ["crim", "[-1]", "dimensions are unsigned"],
    ),
}


@pytest.mark.parametrize(("body", "status", "fragments"), V1_CASES.values(), ids=V1_CASES.keys())
def test_v1_bad_input(transformer: Server, body: str, status: int, fragments: list[str]):
    response = httpx.post(
        f"{transformer.url}/v1/models/{MODEL}:predict",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == status, response.text
    message = response.json()["error"]
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize(("body", "status", "fragments"), V2_CASES.values(), ids=V2_CASES.keys())
def test_v2_bad_input(transformer: Server, body: str, status: int, fragments: list[str]):
    response = httpx.post(
        f"{transformer.url}/v2/models/{MODEL}/infer",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == status, response.text
    message = response.json()["error"]
    for fragment in fragments:
        assert fragment in message


def test_grpc_bad_input_is_invalid_argument(transformer: Server):
    async def call() -> None:
        client = InferenceGRPCClient(transformer.grpc_address, timeout=10, retries=0)
        try:
            data = [*ROW[:4], 1.7, *ROW[5:]]
            await client.infer(InferRequest(MODEL, [InferInput("input-0", [1, 13], "FP64", data)]))
        finally:
            await client.close()

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        asyncio.run(call())
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert re.search(r"input-0\[0\]\.nox: must be in \(0, 1\)", raised.value.details())


def test_bad_input_is_logged_without_a_stack_trace(transformer: Server):
    httpx.post(f"{transformer.url}/v1/models/{MODEL}:predict", content=v1(house(rm="six")))
    log = transformer.service.log()
    assert "instances[0].rm: must be a number" in log
    assert "Traceback" not in log


def test_batch_limit_is_a_flag(predictor: Server, log_dir):
    from tests.serving.conftest import start_transformer

    server = start_transformer(log_dir, predictor, "--max_batch_rows", "2", name="transformer-small-batches")
    try:
        url = f"{server.url}/v1/models/{MODEL}:predict"
        assert httpx.post(url, content=v1(HOUSE, HOUSE)).status_code == 200
        response = httpx.post(url, content=v1(HOUSE, HOUSE, HOUSE))
        assert response.status_code == 400
        assert "limit of 2" in response.json()["error"]
    finally:
        server.service.stop()
