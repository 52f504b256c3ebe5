"""``housing rollout`` on the InferenceService the Helm chart renders, compared with what the chart renders.

The chart expresses a canary itself (``rollout.canaries``: a predictor-only InferenceService per canary and a
``--canary`` arg on the transformer, in either mode), so what the command writes must equal the chart's own
rendering of the same rollout, and ``helm upgrade`` and ``housing rollout`` never fight. ``helm template`` is
the real helm; the API server is the mock of ``conftest.py`` (no cluster runs here), which admits every write
as KServe's webhook would.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
import yaml

from housing.rollout import objects
from tests.conftest import ROOT, require_tool
from tests.k8s import helm_rules
from tests.rollout.shapes import CANARY, STABLE, housing, mark_ready

CHART = ROOT / "helm" / "housing-kserve"
RELEASE = "h"
FULLNAME = "h-housing-kserve"
SERVER_FIELDS = ("resourceVersion", "generation")
CANARY_FLAGS = ["--model-uri", str(CANARY.storage_uri), "--sha256", str(CANARY.sha256)]
CANARY_FLAGS += ["--model-version", str(CANARY.version)]


def values(model: Any) -> dict[str, Any]:
    return {"storageUri": model.storage_uri, "sha256": model.sha256, "version": model.version}


def render(
    mode: str,
    model: Any,
    canaries: list[dict[str, Any]] | None = None,
    *,
    kubeconfig: Any = None,
    tag: str | None = None,
) -> dict[str, dict[str, Any]]:
    """The InferenceServices ``helm template`` renders for these values, by name.

    With ``kubeconfig``, as ``helm upgrade`` renders them against that cluster (``--dry-run=server``: the
    chart's ``lookup`` reads it, here the mock API server)."""
    helm = require_tool("helm")
    args = [helm, "template", RELEASE, str(CHART), "--namespace", "ml"]
    args += [
        "--set-json",
        f"deploymentMode={json.dumps(mode)}",
        "--set-json",
        f"model={json.dumps(values(model))}",
    ]
    args += ["--set-json", f"rollout={json.dumps({'canaries': canaries or []})}"]
    if tag is not None:
        args += ["--set-string", f"image.tag={tag}"]
    if kubeconfig is not None:
        args += ["--dry-run=server", "--kubeconfig", str(kubeconfig)]
    result = subprocess.run(args, capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stderr
    documents = [
        doc for doc in yaml.safe_load_all(result.stdout) if doc and doc["kind"] == "InferenceService"
    ]
    return {doc["metadata"]["name"]: doc for doc in documents}


def as_rendered(obj: dict[str, Any]) -> dict[str, Any]:
    """A stored object without what the API server adds."""
    metadata = {key: value for key, value in obj["metadata"].items() if key not in SERVER_FIELDS}
    return {key: value for key, value in obj.items() if key != "status"} | {"metadata": metadata}


@pytest.fixture(autouse=True)
def _chart_present(api_server):
    if not (CHART / "Chart.yaml").exists():
        pytest.fail(f"{CHART} is missing")
    api_server.anonymous_reads = True  # helm's lookup sends no token over plain HTTP


@pytest.mark.parametrize("mode", ["Standard", "Knative"])
def test_canary_promote_rollback_write_what_the_chart_renders(api_server, kubeconfig, mode):
    """What the command writes is what the chart renders for it: with the canary in the values, the same but
    for who started it (the values' canary has no started-by annotation); on an upgrade that finds it
    running, exactly that."""
    api_server.after_create = mark_ready
    api_server.put_object(render(mode, STABLE)[FULLNAME])
    assert housing(kubeconfig, "canary", FULLNAME, *CANARY_FLAGS, "--percent", "10") == 0
    live = {name: as_rendered(obj) for (_, name), obj in api_server.objects.items()}
    assert live == render(mode, STABLE, kubeconfig=kubeconfig)
    declared = render(mode, STABLE, [{"name": "canary", "trafficPercent": 10, "model": values(CANARY)}])
    assert set(declared) == set(live) == {FULLNAME, f"{FULLNAME}-canary"}
    started = live[f"{FULLNAME}-canary"]
    assert started["metadata"]["annotations"].pop(objects.STARTED_BY_ANNOTATION) == objects.STARTED_BY
    owned = declared[FULLNAME]["spec"]["transformer"].pop("annotations")  # the values' own canaries
    assert owned == {objects.HELM_CANARIES_ANNOTATION: "canary"}
    assert live == declared

    assert housing(kubeconfig, "rollback", FULLNAME) == 0
    assert {name: as_rendered(obj) for (_, name), obj in api_server.objects.items()} == render(mode, STABLE)

    assert housing(kubeconfig, "canary", FULLNAME, *CANARY_FLAGS, "--percent", "10") == 0
    assert housing(kubeconfig, "promote", FULLNAME) == 0
    assert {name: as_rendered(obj) for (_, name), obj in api_server.objects.items()} == render(mode, CANARY)


# ---- one owner: `helm upgrade` after `housing rollout canary` --------------------------------------------
#
# Helm's side is tests/k8s/helm_rules.py (helm v3.17.3: ownership check, adoption, JSON merge patches of
# custom resources from the recorded manifest, deletion of what is no longer rendered); the chart is rendered
# by the real helm with --dry-run=server, so its `lookup` reads the mock API server as it would read the
# cluster.


def helm_cluster(api_server: Any) -> helm_rules.Cluster:
    """Helm's client on the mock API server (which admits every write as KServe's webhook would)."""

    def get(k: helm_rules.Key) -> dict[str, Any] | None:
        found = api_server.objects.get((k[1], k[2]))
        return dict(found) if found is not None else None

    def create(obj: dict[str, Any]) -> None:
        code, body = api_server.create(obj["metadata"]["namespace"], obj)
        assert code == 201, body

    def patch(k: helm_rules.Key, body: dict[str, Any]) -> None:
        code, answer = api_server.write(k[1], k[2], "PATCH", "application/merge-patch+json", body)
        assert code == 200, answer

    def delete(k: helm_rules.Key) -> None:
        api_server.delete(k[1], k[2])

    return helm_rules.Cluster(get, create, patch, delete)


INSTALL = helm_rules.Release(RELEASE, "ml")  # no release yet: `helm upgrade --install`


def upgrade(
    release: helm_rules.Release,
    cluster: helm_rules.Cluster,
    kubeconfig: Any,
    mode: str,
    tag: str,
    canaries: list[dict[str, Any]] | None = None,
) -> helm_rules.Release:
    """``helm upgrade --install`` with these values (the stable model is STABLE), against the mock cluster."""
    rendered = render(mode, STABLE, canaries, kubeconfig=kubeconfig, tag=tag)
    return helm_rules.upgrade(release, list(rendered.values()), cluster)


def install_then_start_a_canary(api_server: Any, kubeconfig: Any, mode: str) -> tuple[Any, Any]:
    """`helm install` of the stable model (image 1), then `housing rollout canary` at 10 %."""
    api_server.after_create = mark_ready
    cluster = helm_cluster(api_server)
    release = upgrade(INSTALL, cluster, kubeconfig, mode, "1")
    assert housing(kubeconfig, "canary", FULLNAME, *CANARY_FLAGS, "--percent", "10") == 0
    return release, cluster


def image_tag(isvc: dict[str, Any], component: str) -> str:
    return str(isvc["spec"][component]["containers"][0]["image"].rsplit(":", 1)[1])


@pytest.mark.parametrize("mode", ["Standard", "Knative"])
def test_helm_upgrade_keeps_a_canary_the_command_started_until_the_command_ends_it(
    api_server, kubeconfig, mode
):
    """The issue's path: CI's `helm upgrade` (a new image, values without the canary) between `housing rollout
    canary` and its end. A custom resource's update is a JSON merge patch from the recorded manifest, and the
    containers list changed, so the transformer would lose --canary: the split would end silently and the
    canary InferenceService stay behind. The chart finds the running canary (lookup), renders it, and Helm
    adopts it (the command wrote Helm's ownership metadata); the command ends it, and the next upgrade
    agrees."""
    release, cluster = install_then_start_a_canary(api_server, kubeconfig, mode)
    started = api_server.get_object("ml", f"{FULLNAME}-canary")
    helm_rules.check_ownership(started, RELEASE, "ml")  # Helm may take it into the release

    release = upgrade(release, cluster, kubeconfig, mode, "2")
    stable_isvc = api_server.get_object("ml", FULLNAME)
    assert [route.name for route in objects.routes(stable_isvc)] == ["canary"], "the split ended silently"
    assert objects.routes(stable_isvc)[0].percent == 10
    assert image_tag(stable_isvc, "transformer") == "2"
    assert ("InferenceService", "ml", f"{FULLNAME}-canary") in release.manifest  # one owner from now on
    assert (
        objects.read_model(objects.predictor_spec(api_server.get_object("ml", f"{FULLNAME}-canary")))
        == CANARY
    )

    release = upgrade(release, cluster, kubeconfig, mode, "3")  # rolls the canary too
    assert image_tag(api_server.get_object("ml", f"{FULLNAME}-canary"), "predictor") == "3"

    assert housing(kubeconfig, "rollback", FULLNAME) == 0
    release = upgrade(release, cluster, kubeconfig, mode, "4")
    assert set(api_server.objects) == {("ml", FULLNAME)}
    assert objects.routes(api_server.get_object("ml", FULLNAME)) == []
    assert set(release.manifest) == {("InferenceService", "ml", FULLNAME)}


@pytest.mark.parametrize("mode", ["Standard", "Knative"])
def test_values_that_name_the_running_canary_take_it_over(api_server, kubeconfig, mode, capsys):
    """Helm's checkOwnership (pkg/action/validate.go) refused the command's canary when the values then named
    it: "exists and cannot be imported into the current release". Now the values take it over, and from then
    on the command leaves it to them."""
    release, cluster = install_then_start_a_canary(api_server, kubeconfig, mode)
    declared = [{"name": "canary", "trafficPercent": 20, "model": values(CANARY)}]
    release = upgrade(release, cluster, kubeconfig, mode, "1", declared)
    assert objects.routes(api_server.get_object("ml", FULLNAME))[0].percent == 20

    assert housing(kubeconfig, "rollback", FULLNAME) == 1
    assert "rollout.canaries" in capsys.readouterr().err  # the values own it: end it there
    release = upgrade(release, cluster, kubeconfig, mode, "1")
    assert set(api_server.objects) == {("ml", FULLNAME)}  # `rollout.canaries: []` ends it cleanly
    assert objects.routes(api_server.get_object("ml", FULLNAME)) == []
