"""The V2 repository API turned on (``--enable_repository_api``) on a multi-model predictor with ``--auth``.

Loading and unloading need the ``admin`` role; what ``housing`` resolves to is never unloaded (409) until
another model is made the champion; the gRPC repository calls stay refused (gRPC checks no credential). One
predictor serves the module: champion ``v3``, ``v4`` pinned beside it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

from housing.processes import Service, free_port, python_service
from model.artifact import ONNX_SHA256, read_metadata
from tests.security.attacks import Answer, request

pytestmark = pytest.mark.slow

KEYS = {"admin": "k-admin-0123456789", "predict": "k-predict-0123456789"}
ROWS = [[0.00632, 18.0, 2.31, 0.0, 0.538, 6.575, 65.2, 4.09, 1.0, 296.0, 15.3, 4.98]]


@dataclass
class Repository:
    service: Service
    port: int
    grpc_port: int

    def call(self, verb: str, name: str, role: str | None = None, body: dict | None = None) -> Answer:
        headers = {"x-api-key": KEYS[role]} if role else {}
        path = f"/v2/repository/models/{name}/{verb}"
        return request(self.port, "POST", path, json.dumps(body or {}).encode(), headers)

    def version(self, name: str) -> str:
        infer = {"inputs": [{"name": "input-0", "shape": [1, 12], "datatype": "FP64", "data": ROWS}]}
        answer = request(self.port, "POST", f"/v2/models/{name}/infer", infer)
        assert answer.status == 200, answer.text
        return str(answer.json()["model_version"])


@pytest.fixture(scope="module")
def repository(artifact_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Repository]:
    root = tmp_path_factory.mktemp("repository")
    pins = {}
    for version in ("3", "4"):
        directory = shutil.copytree(artifact_dir, root / f"v{version}")
        metadata = json.loads((directory / "model.json").read_text())
        (directory / "model.json").write_text(json.dumps({**metadata, "version": version}))
        pins[f"v{version}"] = {"storage_uri": str(directory), "sha256": read_metadata(directory)[ONNX_SHA256]}
    config = root / "models.json"
    config.write_text(json.dumps({"champion": "v3", "models": pins}))
    keys = root / "keys"
    keys.write_text("".join(f"{key}={role}\n" for role, key in KEYS.items()))
    port, grpc_port = free_port(), free_port()
    args = ["-m", "predictor", "--models_config", str(config), "--enable_repository_api", "--auth",
            "--api_keys_file", str(keys), "--http_port", str(port),
            "--grpc_port", str(grpc_port)]  # fmt: skip
    service = python_service("predictor-repository", args, root).start()
    try:
        service.wait_ready(f"http://127.0.0.1:{port}/v2/health/ready", timeout=120)
        yield Repository(service, port, grpc_port)
    finally:
        service.stop()


def test_loading_without_a_credential_is_401(repository: Repository) -> None:
    answer = repository.call("load", "v4")
    assert answer.status == 401, answer.text
    assert repository.version("housing") == "3"


def test_unloading_with_the_predict_role_is_403(repository: Repository) -> None:
    answer = repository.call("unload", "housing", "predict")
    assert answer.status == 403, answer.text
    assert "needs role 'admin'" in answer.json()["error"]
    assert repository.version("housing") == "3"


def test_the_index_needs_the_admin_role(repository: Repository) -> None:
    assert request(repository.port, "GET", "/v2/repository/index").status == 401
    listed = request(repository.port, "GET", "/v2/repository/index", headers={"x-api-key": KEYS["admin"]})
    assert listed.status == 200 and {entry["name"] for entry in listed.json()} == {"v3", "v4", "housing"}


@pytest.mark.parametrize("name", ["housing", "v3"])
def test_an_admin_cannot_unload_what_housing_serves(repository: Repository, name: str) -> None:
    answer = repository.call("unload", name, "admin")
    assert answer.status == 409, answer.text
    assert "make another model the champion first" in answer.json()["error"]
    assert repository.version("housing") == "3"
    assert request(repository.port, "GET", "/v2/health/ready").status == 200


def test_a_new_champion_first_then_the_old_one_may_go(repository: Repository) -> None:
    assert repository.call("load", "v4", "admin", {"parameters": {"champion": True}}).status == 200
    assert repository.version("housing") == "4"
    unloaded = repository.call("unload", "v3", "admin")
    assert unloaded.status == 200, unloaded.text
    assert repository.version("housing") == "4"
    assert request(repository.port, "GET", "/v2/health/ready").status == 200


def test_grpc_repository_calls_stay_refused_with_the_api_on(repository: Repository) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{repository.grpc_port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for call, message in (
            (stub.RepositoryModelUnload, pb.RepositoryModelUnloadRequest(model_name="housing")),
            (stub.RepositoryModelLoad, pb.RepositoryModelLoadRequest(model_name="v3")),
        ):
            with pytest.raises(grpc.RpcError) as refused:
                call(message, timeout=10)
            assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert stub.ModelReady(pb.ModelReadyRequest(name="housing"), timeout=10).ready


def test_a_load_body_nested_too_deeply_is_a_400_that_names_the_rule(repository: Repository) -> None:
    body = b'{"parameters": ' + b"[" * 1500 + b"]" * 1500 + b"}"  # under the route's 4 KiB
    served = repository.version("housing")
    answer = request(
        repository.port, "POST", "/v2/repository/models/v4/load", body, {"x-api-key": KEYS["admin"]}
    )
    assert answer.status == 400, answer.text
    assert "nested deeper than" in answer.text
    assert repository.version("housing") == served
