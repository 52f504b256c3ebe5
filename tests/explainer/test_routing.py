"""``:explain`` through the transformer: real predictor, explainer and transformer processes."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from housing.processes import Service
from tests.explainer.conftest import MODEL, start_explainer, wait_explainer
from tests.serving.conftest import (
    Server,
    reversed_artifact_dir,  # noqa: F401  (the serving tests' fixture, reused)
    start_predictor,
    start_transformer,
)

HOUSE = {"crim": 0.00632, "zn": 18, "indus": 2.31, "chas": 0, "nox": 0.538, "rm": 6.575, "age": 65.2,
         "dis": 4.09, "rad": 1, "tax": 296, "ptratio": 15.3, "lstat": 4.98, "b": 396.9}  # fmt: skip


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("explain-routing-logs")


@pytest.fixture(scope="module")
def predictor(artifact_dir: Path, log_dir: Path) -> Iterator[Server]:
    server = start_predictor(log_dir, str(artifact_dir))
    try:
        server.service.wait_ready(f"{server.url}/v2/health/ready")
        yield server
    finally:
        server.service.stop()


@pytest.fixture(scope="module")
def explainer(artifact_dir: Path, log_dir: Path) -> Iterator[Service]:
    service = start_explainer(log_dir, artifact_dir)
    try:
        yield wait_explainer(service)
    finally:
        service.stop()


@pytest.fixture(scope="module")
def transformer(predictor: Server, explainer: Service, log_dir: Path) -> Iterator[Server]:
    """A transformer with ``--explainer_host`` (REST V2 to the predictor)."""
    server = start_transformer(log_dir, predictor, "--explainer_host", f"127.0.0.1:{explainer.port}")
    try:
        yield server
    finally:
        server.service.stop()


def explain(server: Server, body: dict, **headers: str) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/models/{MODEL}:explain", json=body, headers=headers, timeout=30)


def test_explain_matches_the_transformers_own_prediction(transformer: Server) -> None:
    """The same house: the explanation's base value times its factors is the price :predict answers."""
    houses = [HOUSE, {**HOUSE, "lstat": 20.0, "rm": 5.5}]
    predicted = httpx.post(
        f"{transformer.url}/v1/models/{MODEL}:predict", json={"instances": houses}, timeout=30
    )
    assert predicted.status_code == 200, predicted.text
    response = explain(transformer, {"instances": houses}, **{"x-request-id": "why-1"})
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"] == "why-1"
    answer = response.json()
    version = httpx.get(f"{transformer.url}/v2/models/{MODEL}", timeout=10).json()["versions"][0]
    assert answer["model_version"] == version
    for item, price in zip(answer["explanations"], predicted.json()["predictions"], strict=True):
        product = item["base_value"] * math.prod(c["factor"] for c in item["contributions"].values())
        # the predictor serves the ONNX form (within 0.00007 of scikit-learn's), the explainer the trees
        assert product == pytest.approx(price, abs=1e-3)
        assert "b" not in item["contributions"]
    # the poorer, smaller house is cheaper, and lstat's factor says so
    first, second = answer["explanations"]
    assert second["contributions"]["lstat"]["factor"] < first["contributions"]["lstat"]["factor"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"instances": [{**HOUSE, "nox": 1.5}]}, "instances[0].nox"),
        ({"instances": [{k: v for k, v in HOUSE.items() if k != "rm"}]}, "instances[0].rm"),
        ({"instances": []}, "instances"),
    ],
)
def test_a_bad_house_is_a_400_naming_the_field(transformer: Server, body: dict, field: str) -> None:
    response = explain(transformer, body)
    assert response.status_code == 400, response.text
    assert field in response.json()["error"]


def test_without_an_explainer_explain_is_a_501(predictor: Server, log_dir: Path) -> None:
    server = start_transformer(log_dir, predictor, name="transformer-no-explainer")
    try:
        response = explain(server, {"instances": [HOUSE]})
        assert response.status_code == 501, response.text
        assert "--explainer_host" in response.json()["error"]
        # and a bad house is still named first: validation does not depend on the explainer
        assert explain(server, {"instances": [{**HOUSE, "nox": 1.5}]}).status_code == 400
    finally:
        server.service.stop()


def test_an_explainer_that_is_down_is_a_503_at_once(
    predictor: Server, artifact_dir: Path, log_dir: Path
) -> None:
    """Connection refused is answered at once (503), not after the request's deadline (30 s here)."""
    explainer = wait_explainer(start_explainer(log_dir, artifact_dir, name="explainer-stopped"))
    server = start_transformer(
        log_dir, predictor, "--explainer_host", f"127.0.0.1:{explainer.port}",
        "--predictor_request_timeout_seconds", "30", name="transformer-explainer-stopped",
    )  # fmt: skip
    try:
        assert explain(server, {"instances": [HOUSE]}).status_code == 200
        explainer.stop()
        started = time.monotonic()
        response = explain(server, {"instances": [HOUSE]})
        elapsed = time.monotonic() - started
        assert response.status_code == 503, response.text
        assert "unreachable" in response.json()["error"]
        assert elapsed < 15, f"took {elapsed:.1f} s: waited for the deadline instead of failing at once"
        # predictions do not depend on the explainer
        predicted = httpx.post(f"{server.url}/v1/models/{MODEL}:predict", json={"instances": [HOUSE]})
        assert predicted.status_code == 200
    finally:
        server.service.stop()
        explainer.stop()


def test_a_slow_explainer_is_a_504_within_the_deadline(transformer: Server) -> None:
    """A client deadline shorter than any explanation takes: 504, within about that deadline."""
    explain(transformer, {"instances": [HOUSE]})  # the predictor's metadata is cached
    response = explain(transformer, {"instances": [HOUSE] * 1000}, **{"x-request-timeout": "0.001"})
    assert response.status_code == 504, response.text
    assert "did not answer within" in response.json()["error"]


def test_an_explainer_of_another_model_is_refused(
    predictor: Server,
    reversed_artifact_dir: Path,  # noqa: F811
    log_dir: Path,
) -> None:
    """Never stale: an explainer serving another version than the predictor's gets no answer through."""
    other = wait_explainer(start_explainer(log_dir, reversed_artifact_dir, name="explainer-other"))
    server = start_transformer(
        log_dir, predictor, "--explainer_host", f"127.0.0.1:{other.port}", name="transformer-other"
    )
    try:
        response = explain(server, {"instances": [HOUSE]})
        assert response.status_code == 503, response.text
        assert "explains model version reversed-1" in response.json()["error"]
    finally:
        server.service.stop()
        other.stop()


def test_the_seed_api_explains_one_flat_house(transformer: Server) -> None:
    """``POST /explain`` takes the house as ``POST /predict`` does, and answers as ``:explain``."""
    response = httpx.post(f"{transformer.url}/explain", json=HOUSE, timeout=30)
    assert response.status_code == 200, response.text
    (item,) = response.json()["explanations"]
    predicted = httpx.post(f"{transformer.url}/predict", json=HOUSE, timeout=30).json()["prediction"]
    product = item["base_value"] * math.prod(c["factor"] for c in item["contributions"].values())
    assert product == pytest.approx(predicted, abs=1e-3)
    bad = httpx.post(f"{transformer.url}/explain", json={**HOUSE, "nox": 1.5}, timeout=30)
    assert bad.status_code == 400 and bad.json()["error"].startswith("nox: "), bad.text
    assert "/explain" in httpx.get(f"{transformer.url}/openapi.json", timeout=10).json()["paths"]
