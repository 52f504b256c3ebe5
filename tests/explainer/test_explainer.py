"""The explainer: exact TreeSHAP explanations of the verified artifact, over a real KServe server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from explainer.__main__ import parse_args
from explainer.model import HousingExplainer, explanation
from housing.processes import Service, free_port, python_service, wait_until
from model.artifact import METADATA_FILE
from model.dataset import load_dataset
from model.importance import tree_model
from tests.explainer.conftest import MODEL, start_explainer, wait_explainer


@pytest.fixture(scope="module")
def explainer(artifact_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """``python -m explainer`` serving the session's artifact, pinned to its sha256."""
    service = start_explainer(tmp_path_factory.mktemp("explainer-logs"), artifact_dir)
    try:
        yield wait_explainer(service)
    finally:
        service.stop()


@pytest.fixture(scope="module")
def loaded(artifact_dir: Path) -> HousingExplainer:
    model = HousingExplainer(MODEL, str(artifact_dir))
    model.load()
    return model


@pytest.fixture(scope="module")
def houses(loaded: HousingExplainer) -> np.ndarray:
    """1,000 houses drawn from the data set, in the model's feature order."""
    rows = load_dataset(None)[loaded.artifact.feature_names].to_numpy(dtype=np.float64)  # type: ignore[union-attr]
    return rows[np.random.default_rng(7).integers(0, len(rows), 1000)]


def test_contributions_add_up_to_the_model_output(loaded: HousingExplainer, houses: np.ndarray) -> None:
    """base + sum of contributions == the trees' output, log(medv), to 1e-6 on 1,000 rows."""
    answer = asyncio.run(loaded.explain({"instances": houses.tolist()}))
    predictions = loaded.artifact.pipeline.predict(houses)  # type: ignore[union-attr]
    for item, price in zip(answer["explanations"], predictions, strict=True):
        total = item["base_output"] + sum(c["contribution"] for c in item["contributions"].values())
        assert total == pytest.approx(np.log(price), abs=1e-6)
        assert item["prediction"] == pytest.approx(price, rel=1e-9)
        factors = np.prod([c["factor"] for c in item["contributions"].values()])
        assert item["base_value"] * factors == pytest.approx(price, rel=1e-9)  # the product a person reads


def test_lstat_and_rm_matter_most(loaded: HousingExplainer, houses: np.ndarray) -> None:
    """A sanity check on the trained model: the two largest mean |contributions| are lstat and rm."""
    answer = asyncio.run(loaded.explain({"instances": houses.tolist()}))
    names = loaded.artifact.feature_names  # type: ignore[union-attr]
    mean_abs = {
        name: np.mean([abs(item["contributions"][name]["contribution"]) for item in answer["explanations"]])
        for name in names
    }
    assert sorted(mean_abs, key=mean_abs.__getitem__, reverse=True)[:2] == ["lstat", "rm"], mean_abs


def test_explain_over_http_names_the_model_it_explained(
    explainer: Service, artifact_dir: Path, loaded: HousingExplainer
) -> None:
    metadata = json.loads((artifact_dir / METADATA_FILE).read_text())
    house = {"crim": 0.00632, "zn": 18, "indus": 2.31, "chas": 0, "nox": 0.538, "rm": 6.575, "age": 65.2,
             "dis": 4.09, "rad": 1, "tax": 296, "ptratio": 15.3, "lstat": 4.98, "b": 396.9}  # fmt: skip
    response = httpx.post(
        f"{explainer.url}/v1/models/{MODEL}:explain", json={"instances": [house]}, timeout=10
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["model_version"], answer["sha256"]) == (str(metadata["version"]), metadata["sha256"])
    (item,) = answer["explanations"]
    assert list(item["contributions"]) == loaded.artifact.feature_names  # type: ignore[union-attr]
    assert "b" not in item["contributions"]  # sent, not used by the model: left out
    assert item["contributions"]["lstat"]["value"] == 4.98
    assert item["ranked"][0] in ("lstat", "rm")
    assert answer["unit"] == "USD 1000s"


def test_predict_on_the_explainer_is_a_501_that_points_to_the_predictor(explainer: Service) -> None:
    # Deliberate: the explainer only explains; KServe answers a model's NotImplementedError with 501.
    response = httpx.post(f"{explainer.url}/v1/models/{MODEL}:predict", json={"instances": [[0] * 12]})
    assert response.status_code == 501, response.text
    assert "predictions come from the predictor" in response.text


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"instances": [{"crim": 1.0}]}, "every house needs"),
        ({"instances": []}, "at least one house"),
        ({"instances": [[1.0, 2.0]]}, "rows of 12 numbers"),
        ({"rows": []}, "instances"),
    ],
)
def test_bad_input_is_a_400_that_says_why(explainer: Service, body: dict, message: str) -> None:
    response = httpx.post(f"{explainer.url}/v1/models/{MODEL}:explain", json=body, timeout=10)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]


def test_a_tampered_artifact_is_never_explained(artifact_dir: Path, tmp_path: Path) -> None:
    """The same verification as the predictor's: a pin that does not match keeps the explainer unready."""
    port = free_port()
    args = ["-m", "explainer", "--storage_uri", str(artifact_dir), "--expected_sha256", "0" * 64,
            "--http_port", str(port), "--grpc_port", str(free_port())]  # fmt: skip
    service = python_service("explainer-pinned-wrong", args, tmp_path, port=port).start()
    try:
        service.wait_ready(f"{service.url}/v2/health/live", timeout=60)
        wait_until(lambda: "refusing to serve the artifact" in service.log(), timeout=60, what="the refusal")
        assert httpx.get(f"{service.url}/v1/models/{MODEL}", timeout=5).status_code == 503
        response = httpx.post(f"{service.url}/v1/models/{MODEL}:explain", json={"instances": [[0] * 12]})
        assert response.status_code == 503
    finally:
        service.stop()


def test_only_tree_ensembles_are_explained() -> None:
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    with pytest.raises(ValueError, match="preprocessing steps"):
        tree_model(Pipeline([("scale", StandardScaler()), ("regressor", Ridge())]))
    with pytest.raises(ValueError, match="not a tree ensemble"):
        tree_model(Pipeline([("regressor", Ridge())]))


def test_an_additive_model_explains_in_usd() -> None:
    item = explanation(["a", "b"], np.array([1.0, 2.0]), np.array([0.5, -1.5]), 20.0, log_target=False)
    assert (
        item["prediction"] == 19.0
        and item["base_value"] == 20.0
        and "factor" not in item["contributions"]["a"]
    )
    assert item["ranked"] == ["b", "a"]


def test_the_command_line_needs_a_storage_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STORAGE_URI", raising=False)
    with pytest.raises(SystemExit):
        parse_args([])
    assert parse_args(["--storage_uri", "x"]).model_name == MODEL
