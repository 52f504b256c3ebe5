"""manifests/ (plain YAML for `kubectl apply -k`) stays equal to the chart's render."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import ROOT, require_tool
from tests.k8s.conftest import helm

MANIFESTS = ROOT / "manifests"


def _objects(text: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def test_base_is_the_default_render() -> None:
    rendered = helm(
        "template",
        "housing-kserve",
        ROOT / "helm" / "housing-kserve",
        "--namespace",
        "housing",
        "--skip-tests",
    )
    committed = (MANIFESTS / "base" / "housing-kserve.yaml").read_text()
    assert _objects(committed) == _objects(rendered.stdout), "run scripts/render-manifests.sh"


def test_generator_reports_manifests_in_sync() -> None:
    require_tool("helm")
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "render_manifests.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


def test_generator_detects_a_stale_file(tmp_path: Path) -> None:
    require_tool("helm")
    out = tmp_path / "manifests"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "render_manifests.py"), "--out", str(out)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    (out / "base" / "housing-kserve.yaml").write_text("# edited by hand\n")
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "render_manifests.py"), "--check", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and "base/housing-kserve.yaml" in result.stderr


def test_aks_overlay_adds_workload_identity_to_the_base() -> None:
    kustomization = yaml.safe_load((MANIFESTS / "overlays" / "aks" / "kustomization.yaml").read_text())
    assert kustomization["resources"] == ["../../base"]
    patches = _objects((MANIFESTS / "overlays" / "aks" / "patches.yaml").read_text())
    accounts = [p for p in patches if p["kind"] == "ServiceAccount"]
    assert len(accounts) == 2
    assert all("azure.workload.identity/client-id" in a["metadata"]["annotations"] for a in accounts)
    isvc = next(p for p in patches if p["kind"] == "InferenceService")
    assert isvc["spec"]["predictor"]["labels"]["azure.workload.identity/use"] == "true"
