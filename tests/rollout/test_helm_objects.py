"""``housing rollout`` on the InferenceService the Helm chart renders, compared with what the chart renders.

The chart (``helm template``, real helm) expresses a canary itself (``rollout.canaryTrafficPercent`` in
Knative mode, ``rollout.canaries`` in Standard mode), so the objects the command writes must equal the
chart's own rendering of the same rollout. The API server is the stand-in of ``conftest.py``: no cluster
runs here.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
import yaml

from housing.cli import main
from tests.conftest import ROOT, require_tool

CHART = ROOT / "helm" / "housing-kserve"
STABLE = {
    "storageUri": "https://acct.blob.core.windows.net/models/housing/1.0.0",
    "sha256": "a" * 64,
    "version": "1.0.0",
}
CANARY = {
    "storageUri": "https://acct.blob.core.windows.net/models/housing/1.1.0",
    "sha256": "b" * 64,
    "version": "1.1.0",
}
# The chart gives autoscaling settings to the stable endpoint only; the command keeps them on a canary (copied
# from the stable predictor, and in Knative mode the same spec that becomes stable on promotion).
STABLE_ONLY_FIELDS = {"minReplicas", "maxReplicas", "scaleMetric", "scaleTarget"}


def without_autoscaling(predictor: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in predictor.items() if key not in STABLE_ONLY_FIELDS}


def render(mode: str, model: dict[str, Any], **rollout: Any) -> dict[str, Any]:
    """The InferenceService that ``helm template`` renders for these values."""
    helm = require_tool("helm")
    values = {"deploymentMode": mode, "model": model, "rollout": rollout}
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
            f"model={json.dumps(values['model'])}",
            "--set-json",
            f"rollout={json.dumps(rollout)}",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return next(doc for doc in yaml.safe_load_all(result.stdout) if doc and doc["kind"] == "InferenceService")


def rollout(kubeconfig, *args: str) -> int:
    return main(["rollout", *args, "--kubeconfig", str(kubeconfig)])


def canary_args(percent: int) -> list[str]:
    return [
        "--model-uri",
        CANARY["storageUri"],
        "--sha256",
        CANARY["sha256"],
        "--model-version",
        CANARY["version"],
        "--percent",
        str(percent),
    ]


@pytest.fixture(autouse=True)
def _chart_present():
    if not (CHART / "Chart.yaml").exists():
        pytest.fail(f"{CHART} is missing")


def test_knative_canary_promote_rollback_match_the_chart(api_server, kubeconfig):
    name = "h-housing-kserve"
    api_server.put_object(render("Knative", STABLE))
    assert rollout(kubeconfig, "canary", name, *canary_args(10)) == 0
    after = api_server.get_object("ml", name)
    expected = render("Knative", CANARY, canaryTrafficPercent=10)["spec"]
    assert without_autoscaling(after["spec"]["predictor"]) == without_autoscaling(expected["predictor"])
    assert after["spec"]["transformer"] == expected["transformer"]

    assert rollout(kubeconfig, "rollback", name) == 0
    assert api_server.get_object("ml", name)["spec"] == render("Knative", STABLE)["spec"]

    assert rollout(kubeconfig, "canary", name, *canary_args(10)) == 0
    assert rollout(kubeconfig, "promote", name) == 0
    assert api_server.get_object("ml", name)["spec"] == render("Knative", CANARY)["spec"]


def test_standard_canary_and_promote_match_the_chart(api_server, kubeconfig):
    name = "h-housing-kserve"
    api_server.put_object(render("Standard", STABLE))
    assert rollout(kubeconfig, "canary", name, *canary_args(20)) == 0
    after = api_server.get_object("ml", name)
    expected = render(
        "Standard", STABLE, canaries=[{"name": "canary", "trafficPercent": 20, "model": CANARY}]
    )
    (entry,) = after["spec"]["canary"]
    (chart_entry,) = expected["spec"]["canary"]
    assert entry["trafficPercent"] == chart_entry["trafficPercent"]
    assert without_autoscaling(entry["predictor"]) == chart_entry["predictor"]
    assert after["spec"]["predictor"] == expected["spec"]["predictor"]

    assert rollout(kubeconfig, "promote", name) == 0
    assert api_server.get_object("ml", name)["spec"] == render("Standard", CANARY)["spec"]
