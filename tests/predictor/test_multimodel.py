"""Several models in one predictor: pinned artifacts loaded and unloaded at run time, the champion alias.

One real ``python -m predictor --models_config ...`` process serves copies of the session's artifact under
versions 3, 4 and 5 (``model.json`` edited: what its sha256s cover is unchanged), loaded through the V2
repository extension's REST routes; a pin that does not match, a directory without a pin and an unknown name
are refused and never served.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from housing.processes import Service, free_port, python_service
from model.artifact import METADATA_FILE, ONNX, ONNX_FILE, ONNX_SHA256, load_artifact, read_metadata
from model.dataset import load_dataset
from predictor.__main__ import parse_args
from tests.conftest import Azurite

pytestmark = pytest.mark.slow

ALIAS = "housing"
WRONG_PIN = "0" * 64


def copy_as_version(source: Path, target: Path, version: str) -> Path:
    """The artifact under another version: only ``model.json`` changes, which no sha256 covers."""
    shutil.copytree(source, target)
    metadata = json.loads((target / METADATA_FILE).read_text())
    metadata["version"] = version
    (target / METADATA_FILE).write_text(json.dumps(metadata))
    return target


class Predictor:
    """The running multi-model predictor and its HTTP calls."""

    def __init__(self, service: Service, port: int):
        self.service, self.url = service, f"http://127.0.0.1:{port}"

    def load(self, name: str, **parameters: object) -> httpx.Response:
        body = {"parameters": parameters} if parameters else {}
        return httpx.post(f"{self.url}/v2/repository/models/{name}/load", json=body, timeout=60)

    def unload(self, name: str) -> httpx.Response:
        return httpx.post(f"{self.url}/v2/repository/models/{name}/unload")

    def infer(self, name: str, rows: np.ndarray) -> httpx.Response:
        tensor = {
            "name": "input-0",
            "datatype": "FP64",
            "shape": list(rows.shape),
            "data": rows.ravel().tolist(),
        }
        return httpx.post(f"{self.url}/v2/models/{name}/infer", json={"inputs": [tensor]})

    def version(self, name: str, rows: np.ndarray) -> str:
        response = self.infer(name, rows)
        assert response.status_code == 200, response.text
        return str(response.json()["model_version"])

    def index(self) -> dict[str, dict[str, str]]:
        return {entry["name"]: entry for entry in httpx.get(f"{self.url}/v2/repository/index").json()}


@pytest.fixture(scope="module")
def models(artifact_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Versions 3, 4 and 5 of the artifact, and a models root holding an unpinned one (``housing-9``)."""
    root = tmp_path_factory.mktemp("models")
    directories = {f"housing-{v}": copy_as_version(artifact_dir, root / f"housing-{v}", v) for v in "345"}
    copy_as_version(artifact_dir, root / "housing-9", "9")
    return directories


@pytest.fixture(scope="module")
def predictor(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Predictor]:
    """``python -m predictor --models_config`` with champion housing-3, and ``wrong-pin`` pinned wrongly."""
    directory = tmp_path_factory.mktemp("multimodel")
    pin = read_metadata(models["housing-3"])[ONNX_SHA256]
    pins = {name: {"storage_uri": str(path), "sha256": pin} for name, path in models.items()}
    pins["wrong-pin"] = {"storage_uri": str(models["housing-4"]), "sha256": WRONG_PIN}
    config = directory / "models.json"
    config.write_text(json.dumps({"champion": "housing-3", "models": pins}))
    port = free_port()
    root = str(models["housing-3"].parent)
    args = ["-m", "predictor", "--models_config", str(config), "--models_root", root,
            "--enable_repository_api", "--http_port", str(port), "--grpc_port", str(free_port())]  # fmt: skip
    service = python_service("predictor", args, directory).start()
    server = Predictor(service, port)
    service.wait_ready(f"{server.url}/v2/health/ready")
    yield server
    service.stop()


@pytest.fixture(scope="module")
def rows(artifact_dir: Path) -> np.ndarray:
    names = load_artifact(artifact_dir, model_format=ONNX).feature_names
    return load_dataset()[names].to_numpy(dtype=np.float64)[:5]


@pytest.fixture(scope="module")
def expected(artifact_dir: Path, rows: np.ndarray) -> np.ndarray:
    return np.asarray(load_artifact(artifact_dir, model_format=ONNX).pipeline.predict(rows))


def test_the_champion_loads_at_start_and_answers_as_the_alias(predictor: Predictor, rows: np.ndarray) -> None:
    assert predictor.version(ALIAS, rows) == "3"
    assert predictor.version("housing-3", rows) == "3"
    index = predictor.index()
    assert index[ALIAS]["reason"] == "alias of housing-3"
    assert index["housing-5"]["state"] == "UNAVAILABLE"


def test_two_models_loaded_at_run_time_answer_by_name(
    predictor: Predictor, rows: np.ndarray, expected: np.ndarray
) -> None:
    loaded = predictor.load("housing-4")
    assert loaded.status_code == 200, loaded.text
    assert loaded.json() == {"name": "housing-4", "load": True, "version": "4", "champion": False}
    for name, version in (("housing-3", "3"), ("housing-4", "4")):
        response = predictor.infer(name, rows)
        assert response.status_code == 200, response.text
        assert response.json()["model_version"] == version
        np.testing.assert_allclose(response.json()["outputs"][0]["data"], expected, atol=1e-4)
        assert httpx.get(f"{predictor.url}/v2/models/{name}/ready").json()["ready"] is True
        assert httpx.get(f"{predictor.url}/v2/models/{name}").json()["versions"] == [version]
    assert predictor.version(ALIAS, rows) == "3"  # loading a model does not make it the champion


def test_a_load_with_the_champion_parameter_moves_the_alias(predictor: Predictor, rows: np.ndarray) -> None:
    try:
        assert predictor.load("housing-4", champion=True).json()["champion"] is True
        assert predictor.version(ALIAS, rows) == "4"
        assert predictor.index()[ALIAS]["reason"] == "alias of housing-4"
        assert predictor.version("housing-3", rows) == "3"  # the former champion still serves by name
        for name in ("housing-4", ALIAS):  # what housing resolves to is never taken down
            refused = predictor.unload(name)
            assert refused.status_code == 409 and "make another model the champion" in refused.json()["error"]
        assert predictor.version(ALIAS, rows) == "4"
    finally:
        assert predictor.load("housing-3", champion=True).status_code == 200
    assert predictor.version(ALIAS, rows) == "3"
    assert predictor.unload("housing-4").status_code == 200  # no longer the champion
    assert predictor.infer("housing-4", rows).status_code == 404


def test_an_unloaded_model_is_gone_while_the_others_serve(predictor: Predictor, rows: np.ndarray) -> None:
    assert predictor.load("housing-5").status_code == 200
    assert 'model_name="housing-5"' in httpx.get(f"{predictor.url}/metrics").text
    assert predictor.unload("housing-5").json() == {"name": "housing-5", "unload": True}
    assert predictor.infer("housing-5", rows).status_code == 404
    assert httpx.get(f"{predictor.url}/v2/models/housing-5/ready").status_code == 404
    assert predictor.unload("housing-5").status_code == 404
    assert predictor.index()["housing-5"]["reason"] == "not loaded"
    assert 'housing_model_info{model_name="housing-5"' not in httpx.get(f"{predictor.url}/metrics").text
    assert predictor.version("housing-3", rows) == "3"
    assert predictor.version(ALIAS, rows) == "3"
    assert httpx.get(f"{predictor.url}/v2/health/ready").status_code == 200


def test_a_wrong_pin_is_refused_and_never_served(predictor: Predictor, rows: np.ndarray) -> None:
    refused = predictor.load("wrong-pin")
    assert refused.status_code == 409, refused.text
    assert WRONG_PIN in refused.json()["error"] and "pinned sha256" in refused.json()["error"]
    assert predictor.infer("wrong-pin", rows).status_code == 404
    assert predictor.index()["wrong-pin"]["state"] == "UNAVAILABLE"


def test_a_tampered_reload_keeps_the_verified_model_serving(
    predictor: Predictor, models: dict[str, Path], rows: np.ndarray
) -> None:
    assert predictor.load("housing-5").status_code == 200
    onnx = models["housing-5"] / ONNX_FILE
    original = onnx.read_bytes()
    try:
        onnx.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        refused = predictor.load("housing-5")
        assert refused.status_code == 409, refused.text
        assert "sha256" in refused.json()["error"]
        assert predictor.version("housing-5", rows) == "5"  # the verified copy loaded before still serves
    finally:
        onnx.write_bytes(original)
        predictor.unload("housing-5")


@pytest.mark.parametrize(
    ("name", "body", "status", "says"),
    [
        ("housing-7", {}, 404, "no model named housing-7 is pinned"),
        ("housing-9", {}, 403, "no sha256 pin"),  # a directory under --models_root, not in the config
        (ALIAS, {}, 400, "alias"),
        ("housing-4", {"parameters": {"champion": "yes"}}, 400, "parameters.champion must be true or false"),
    ],
)
def test_refused_loads_name_the_reason(
    predictor: Predictor, rows: np.ndarray, name: str, body: dict, status: int, says: str
) -> None:
    response = httpx.post(f"{predictor.url}/v2/repository/models/{name}/load", json=body)
    assert response.status_code == status, response.text
    assert says in response.json()["error"]
    if status in (403, 404):
        assert predictor.infer(name, rows).status_code == 404


@pytest.mark.parametrize(
    ("config", "says"),
    [
        ({"champion": "a", "models": {"a": {"storage_uri": "/x"}}}, "sha256 must be 64 hex digits"),
        (
            {"champion": "b", "models": {"a": {"storage_uri": "/x", "sha256": WRONG_PIN}}},
            "'b' is not one of the pinned",
        ),
        ({"models": {"a": {"storage_uri": "/x", "sha256": WRONG_PIN}}}, "no champion"),
        ({"champion": ALIAS, "models": {ALIAS: {"storage_uri": "/x", "sha256": WRONG_PIN}}}, "not the alias"),
    ],
)
def test_a_malformed_models_config_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], config: dict, says: str
) -> None:
    path = tmp_path / "models.json"
    path.write_text(json.dumps(config))
    with pytest.raises(SystemExit) as exit_:
        parse_args(["--models_config", str(path)])
    assert exit_.value.code == 2
    assert says in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--storage_uri", "/y", "--model", f"a=/x@{WRONG_PIN}", "--champion", "a"], "two champions"),
        (["--model", f"a=/x@{WRONG_PIN}", "--champion", "a", "--load", "b"], "'b' is not one of the pinned"),
        (
            ["--model", f"a=/x@{WRONG_PIN}", "--champion", "a", "--expected_sha256", WRONG_PIN],
            "pins --storage_uri",
        ),
        (["--storage_uri", "/y", "--load", "a"], "give --models_config or --model"),
        (["--model", "a=/x", "--champion", "a"], "expected NAME=URI@SHA256"),
    ],
)
def test_contradictory_flags_are_usage_errors(
    capsys: pytest.CaptureFixture[str], argv: list[str], says: str
) -> None:
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert says in capsys.readouterr().err


def test_flags_pin_models_without_a_file() -> None:
    args = parse_args(["--model", f"a=/x@{WRONG_PIN.upper()}", "--champion", "a", "--load", "a"])
    assert args.models.pins["a"].sha256 == WRONG_PIN and args.models.champion == "a"
    assert args.models.load == []  # the champion loads at start anyway


def test_the_single_model_flags_give_the_champion_and_load_loads_at_start(
    models: dict[str, Path], tmp_path: Path, rows: np.ndarray
) -> None:
    pin = read_metadata(models["housing-4"])[ONNX_SHA256]
    port = free_port()
    args = ["-m", "predictor", "--storage_uri", str(models["housing-3"]), "--expected_sha256", pin,
            "--model", f"housing-4={models['housing-4']}@{pin}", "--load", "housing-4",
            "--enable_repository_api", "--http_port", str(port), "--grpc_port", str(free_port())]  # fmt: skip
    service = python_service("predictor", args, tmp_path).start()
    server = Predictor(service, port)
    try:
        service.wait_ready(f"{server.url}/v2/health/ready")  # ready once both are loaded
        assert server.version(ALIAS, rows) == "3"
        assert server.version("housing-4", rows) == "4"
        assert server.index()[ALIAS]["reason"] == "the champion given by --storage_uri"
        assert server.load("housing-4", champion=True).status_code == 200
        assert server.version(ALIAS, rows) == "4"
        assert server.index()[ALIAS]["reason"] == "alias of housing-4"
    finally:
        service.stop()


def test_a_model_from_blob_storage_loads_and_its_download_goes_with_it(
    azurite: Azurite, models: dict[str, Path], tmp_path: Path, rows: np.ndarray
) -> None:
    from model.storage import publish

    url = azurite.url("models", "housing/4")
    publish(models["housing-4"], url, progress=False)
    pin = read_metadata(models["housing-4"])[ONNX_SHA256]
    downloads = tmp_path / "tmp"
    downloads.mkdir()
    port = free_port()
    args = ["-m", "predictor", "--model", f"housing-3={models['housing-3']}@{pin}", "--champion", "housing-3",
            "--model", f"housing-4={url}@{pin}", "--enable_repository_api",
            "--http_port", str(port), "--grpc_port", str(free_port())]  # fmt: skip
    service = python_service("predictor-blob", args, tmp_path, env={"TMPDIR": str(downloads)}).start()
    server = Predictor(service, port)
    try:
        service.wait_ready(f"{server.url}/v2/health/ready")
        assert server.load("housing-4").status_code == 200
        assert server.version("housing-4", rows) == "4"
        assert len(list(downloads.glob("housing-model-*"))) == 1  # the download, verified and loaded
        assert server.unload("housing-4").status_code == 200
        assert list(downloads.glob("housing-model-*")) == []
        assert server.version(ALIAS, rows) == "3"
    finally:
        service.stop()
