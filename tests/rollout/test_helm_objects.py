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

from tests.conftest import ROOT, require_tool
from tests.rollout.shapes import CANARY, STABLE, housing, mark_ready

CHART = ROOT / "helm" / "housing-kserve"
FULLNAME = "h-housing-kserve"
SERVER_FIELDS = ("resourceVersion", "generation")


def values(model: Any) -> dict[str, Any]:
    return {"storageUri": model.storage_uri, "sha256": model.sha256, "version": model.version}


def render(mode: str, model: Any, canaries: list[dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """The InferenceServices ``helm template`` renders for these values, by name."""
    helm = require_tool("helm")
    result = subprocess.run(
        [
            helm,
            "template",
            "h",
            str(CHART),
            "--namespace",
            "ml",
            "--set-json",
            f"deploymentMode={json.dumps(mode)}",
            "--set-json",
            f"model={json.dumps(values(model))}",
            "--set-json",
            f"rollout={json.dumps({'canaries': canaries or []})}",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
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
def _chart_present():
    if not (CHART / "Chart.yaml").exists():
        pytest.fail(f"{CHART} is missing")


@pytest.mark.parametrize("mode", ["Standard", "Knative"])
def test_canary_promote_rollback_write_what_the_chart_renders(api_server, kubeconfig, mode):
    api_server.after_create = mark_ready
    api_server.put_object(render(mode, STABLE)[FULLNAME])
    flags = ["--model-uri", str(CANARY.storage_uri), "--sha256", str(CANARY.sha256)]
    flags += ["--model-version", str(CANARY.version)]
    assert housing(kubeconfig, "canary", FULLNAME, *flags, "--percent", "10") == 0
    chart = render(mode, STABLE, [{"name": "canary", "trafficPercent": 10, "model": values(CANARY)}])
    assert set(chart) == {FULLNAME, f"{FULLNAME}-canary"}
    for name, rendered in chart.items():
        assert as_rendered(api_server.get_object("ml", name)) == rendered, name

    assert housing(kubeconfig, "rollback", FULLNAME) == 0
    assert {name: as_rendered(obj) for (_, name), obj in api_server.objects.items()} == render(mode, STABLE)

    assert housing(kubeconfig, "canary", FULLNAME, *flags, "--percent", "10") == 0
    assert housing(kubeconfig, "promote", FULLNAME) == 0
    assert {name: as_rendered(obj) for (_, name), obj in api_server.objects.items()} == render(mode, CANARY)
