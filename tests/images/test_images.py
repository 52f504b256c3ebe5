"""The images, built here for real, hold what they should and no more, and the stack runs from them.

Every check goes through the images ``./dev images`` builds (tests/images/conftest.py): what each one holds
(its installed distributions against its dependency group, pinned by docker/constraints.txt), who it runs as,
and the stack docker/compose.yaml describes, started from them with podman and reached through the
transformer's published port.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from housing.processes import wait_until
from images.build import IMAGES
from model.schema import ALL_FEATURES
from tests.conftest import ROOT
from tests.images.compose import podman
from tests.images.conftest import Stack, wait_ready

pytestmark = [pytest.mark.images, pytest.mark.slow]

PROJECT = "housing-kserve"
HOUSE = {
    "crim": 0.00632, "zn": 18.0, "indus": 2.31, "chas": 0, "nox": 0.538, "rm": 6.575, "age": 65.2,
    "dis": 4.09, "rad": 1, "tax": 296, "ptratio": 15.3, "b": 396.9, "lstat": 4.98,
}  # fmt: skip
OTHER_HOUSE = {**HOUSE, "crim": 0.2, "rm": 5.9, "lstat": 14.1, "age": 90.0}
BSL_ALLOWED = {"detector": ["alibi-detect"]}
"""Images allowed a Business Source License dependency (the README says so for alibi-detect)."""


def pins() -> dict[str, str]:
    """docker/constraints.txt as {canonical name: version}."""
    lines = (ROOT / "docker" / "constraints.txt").read_text().splitlines()
    return {
        canonicalize_name(name): version
        for name, _, version in (line.partition("==") for line in lines if line and not line.startswith("#"))
    }


def closure(distributions: dict[str, Any], extra: str, environment: dict[str, str]) -> set[str]:
    """The distributions ``housing-kserve[extra]`` needs, from the image's own metadata and marker values."""
    requires = {canonicalize_name(name): info["requires"] for name, info in distributions.items()}
    seen: set[tuple[str, frozenset[str]]] = set()
    pending = [(canonicalize_name(PROJECT), frozenset({extra}))]
    while pending:
        item = pending.pop()
        if item in seen:
            continue
        seen.add(item)
        name, extras = item
        for requirement in map(Requirement, requires.get(name, [])):
            marker = requirement.marker
            if marker is None or any(marker.evaluate({**environment, "extra": e}) for e in extras or {""}):
                pending.append((canonicalize_name(requirement.name), frozenset(requirement.extras)))
    return {name for name, _ in seen}


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_each_image_holds_its_dependency_group_and_nothing_more(
    name: str, inventories: dict[str, dict[str, Any]]
) -> None:
    inventory = inventories[name]
    installed = {
        canonicalize_name(item): info["version"] for item, info in inventory["distributions"].items()
    }
    expected = closure(inventory["distributions"], IMAGES[name].extra, inventory["environment"])
    assert set(installed) == expected, (
        f"more than [{IMAGES[name].extra}]: {sorted(set(installed) - expected)}; "
        f"missing: {sorted(expected - set(installed))}"
    )
    pinned = pins()
    unpinned = {item: version for item, version in installed.items() if pinned.get(item) != version}
    assert unpinned == {PROJECT: "0.1.0"}, f"versions other than docker/constraints.txt's: {unpinned}"
    assert not inventory["pip"], "pip is importable at run time"


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_each_image_runs_as_10001_without_a_compiler(
    name: str, inventories: dict[str, dict[str, Any]]
) -> None:
    inventory = inventories[name]
    assert (inventory["uid"], inventory["gid"]) == (10001, 10001)
    assert inventory["compilers"] == []
    assert inventory["executable"] == "/opt/venv/bin/python"
    assert inventory["python"].startswith("3.11.")


def test_the_predictor_image_has_no_scikit_learn(inventories: dict[str, dict[str, Any]]) -> None:
    assert not inventories["predictor"]["sklearn"]
    assert inventories["explainer"]["sklearn"], "the explainer needs scikit-learn's trees"


def test_the_detector_oss_image_runs_the_scipy_backend_without_alibi_detect(
    inventories: dict[str, dict[str, Any]],
) -> None:
    installed = {canonicalize_name(name) for name in inventories["detector-oss"]["distributions"]}
    assert "alibi-detect" not in installed and "alibi-detect" in {
        canonicalize_name(name) for name in inventories["detector"]["distributions"]
    }
    assert inventories["detector-oss"]["stats_backend"] == "scipy"
    assert inventories["detector"]["stats_backend"] == "alibi-detect"


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_python_m_pip_is_unusable_in_each_image(name: str, inventories: dict[str, dict[str, Any]]) -> None:
    pip = inventories[name]["pip_run"]
    assert pip["code"] != 0 and "No module named pip" in pip["output"], pip["output"]


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_licences_inside_each_image(name: str, inventories: dict[str, dict[str, Any]]) -> None:
    """scripts/check_licences.py, run by each image's own Python over what the image holds.

    Every licence is allowed but alibi-detect's (BSL 1.1), in the default detector image only (README).
    """
    licences = inventories[name]["licences"]
    listed = json.loads(licences["stdout"])
    assert {canonicalize_name(item["name"]) for item in listed} == {
        canonicalize_name(item) for item in inventories[name]["distributions"]
    }, "the checker lists every distribution of the image"
    refused = {canonicalize_name(item["name"]) for item in listed if not item["allowed"]}
    assert refused == set(BSL_ALLOWED.get(name, [])), licences["stdout"] + licences["stderr"]
    assert licences["code"] == (1 if refused else 0), licences["stderr"]


# --- the stack from the images, wired as docker/compose.yaml -----------------------------------------------


def v2_inputs(*houses: dict[str, float]) -> list[dict[str, Any]]:
    return [
        {"name": name, "datatype": "FP64", "shape": [len(houses)], "data": [house[name] for house in houses]}
        for name in ALL_FEATURES
    ]


def expected(stack: Stack, *houses: dict[str, float]) -> np.ndarray:
    """What the artifact the trainer published predicts, computed here from its scikit-learn pipeline."""
    from model.artifact import load_artifact

    artifact = load_artifact(stack.artifact)
    rows = np.array([[house[name] for name in artifact.feature_names] for house in houses])
    return np.asarray(artifact.pipeline.predict(rows))


def test_v1_and_v2_predictions_through_the_transformer_image(stack: Stack) -> None:
    want = expected(stack, HOUSE, OTHER_HOUSE)
    v1 = httpx.post(
        f"{stack.transformer}/v1/models/housing:predict", json={"instances": [HOUSE, OTHER_HOUSE]}
    )
    assert v1.status_code == 200, v1.text
    assert np.allclose(v1.json()["predictions"], want, atol=1e-3)
    v2 = httpx.post(
        f"{stack.transformer}/v2/models/housing/infer", json={"inputs": v2_inputs(HOUSE, OTHER_HOUSE)}
    )
    assert v2.status_code == 200, v2.text
    assert np.allclose(v2.json()["outputs"][0]["data"], want, atol=1e-3)


def test_explain_through_the_transformer_image(stack: Stack) -> None:
    response = httpx.post(
        f"{stack.transformer}/v1/models/housing:explain", json={"instances": [HOUSE]}, timeout=30
    )
    assert response.status_code == 200, response.text
    (item,) = response.json()["explanations"]
    assert set(item["ranked"]) <= set(ALL_FEATURES) and item["ranked"]
    factors = [item["contributions"][name].get("factor", 1.0) for name in item["ranked"]]
    # A multiplicative explanation of the log-target model: base value times every factor is the prediction.
    assert item["base_value"] * math.prod(factors) == pytest.approx(
        float(expected(stack, HOUSE)[0]), rel=1e-3
    )


def test_the_seed_api_predicts_through_the_transformer_image(stack: Stack) -> None:
    response = httpx.post(f"{stack.transformer}/predict", json=HOUSE)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["prediction"] == pytest.approx(float(expected(stack, HOUSE)[0]), abs=1e-3)
    assert answer["unit"] == "USD 1000s" and answer["model_version"]


def metric(url: str, name: str, **labels: str) -> float:
    """The sum of the samples of one Prometheus series at ``url``/metrics that carry ``labels``."""
    total = 0.0
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        match = re.fullmatch(rf"{re.escape(name)}(?:{{(.*)}})? (\S+)", line)
        if match and all(f'{key}="{value}"' in (match.group(1) or "") for key, value in labels.items()):
            total += float(match.group(2))
    return total


def test_an_inference_reaches_the_detector_image(stack: Stack) -> None:
    detector = stack.containers["detector"].url()
    before = metric(detector, "housing_detector_inferences_total", endpoint="default")
    response = httpx.post(f"{stack.transformer}/v1/models/housing:predict", json={"instances": [HOUSE] * 3})
    assert response.status_code == 200, response.text
    wait_until(
        lambda: metric(detector, "housing_detector_inferences_total", endpoint="default") >= before + 1,
        timeout=60,
        what="the detector joining the inference the transformer logged",
    )
    status = httpx.get(f"{stack.containers['detector'].published(8080)}/status", timeout=10)
    assert status.status_code == 200 and status.json()["ready"], status.text


def test_metrics_on_each_server_count_the_requests(stack: Stack) -> None:
    assert httpx.post(
        f"{stack.transformer}/v1/models/housing:predict", json={"instances": [HOUSE]}
    ).is_success
    explain = httpx.post(
        f"{stack.transformer}/v1/models/housing:explain", json={"instances": [HOUSE]}, timeout=30
    )
    assert explain.is_success, explain.text
    url = {name: container.url() for name, container in stack.containers.items()}
    for component in ("predictor", "transformer"):
        assert metric(url[component], "housing_requests_total", component=component, code="200") >= 1
    assert metric(url["explainer"], "request_explain_seconds_count", model_name="housing") >= 1
    wait_until(
        lambda: (
            metric(url["detector"], "housing_detector_events_total", type="request", outcome="accepted") >= 1
        ),
        timeout=60,
        what="the detector counting the logged requests",
    )


def test_the_same_artifact_from_a_mounted_folder(stack: Stack) -> None:
    """The artifact from Azurite (the stack's predictor) and from a read-only mount answer alike."""
    compose = stack.compose
    command = list(compose.service("predictor")["command"])
    command[command.index("--storage_uri") + 1] = "/mnt/models"
    mounted = compose.up("predictor", name="predictor-mounted", command=command,
                         volumes=[f"{stack.artifact}:/mnt/models:ro"])  # fmt: skip
    wait_ready(compose, mounted, timeout=180)
    body = {"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [1, 12], "data": [
        HOUSE[name] for name in ALL_FEATURES if name != "b"]}]}  # fmt: skip
    from_blob = httpx.post(f"{stack.containers['predictor'].url()}/v2/models/housing/infer", json=body)
    from_folder = httpx.post(f"{mounted.url()}/v2/models/housing/infer", json=body)
    assert from_blob.status_code == from_folder.status_code == 200, from_blob.text + from_folder.text
    assert from_folder.json()["outputs"] == from_blob.json()["outputs"]
    # KServe's server handles SIGTERM as PID 1: it stops within the grace period, not killed (137).
    assert compose.stop(mounted, timeout=20) == 0, compose.logs(mounted)


@pytest.mark.parametrize("service", ["predictor", "transformer", "explainer", "detector"])
def test_each_container_is_unprivileged_with_a_read_only_root(stack: Stack, service: str) -> None:
    container = stack.containers[service]
    status = Path(f"/proc/{container.pid()}/status").read_text()
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert fields["Uid"].split()[:2] == fields["Gid"].split()[:2] == ["10001", "10001"]
    assert fields["CapEff"].strip() == fields["CapPrm"].strip() == "0000000000000000"
    assert fields["NoNewPrivs"].strip() == "1"
    assert podman("inspect", "--format", "{{.HostConfig.ReadonlyRootfs}}", container.name).strip() == "true"
    # Nothing written to the image's file system (only what compose mounts, /tmp and volumes, took writes):
    # the one change is podman's own, the mount points of /etc/hosts, /etc/hostname and /etc/resolv.conf.
    changed = [line for line in podman("diff", container.name).splitlines() if line.strip()]
    assert changed in ([], ["C /etc"]), changed
