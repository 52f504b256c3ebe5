"""Security and lint gates: checkov (one run over every rendered scenario, the Dockerfiles and the workflows),
actionlint over the workflows, and the deployment script's interface."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, require_tool

WORKFLOWS = ROOT / ".github" / "workflows"


@pytest.fixture(scope="module")
def checkov_results(render_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """checkov's JSON report per framework, from one run over a tree that holds everything to scan."""
    checkov = require_tool("checkov")
    tree = tmp_path_factory.mktemp("checkov")
    shutil.copytree(render_dir, tree / "rendered")
    shutil.copytree(
        ROOT / "docker", tree / "docker", ignore=shutil.ignore_patterns("*.yaml", "*.yml", "*.txt")
    )
    shutil.copytree(WORKFLOWS, tree / ".github" / "workflows")
    result = subprocess.run(
        [
            checkov,
            "--config-file",
            str(ROOT / ".checkov.yaml"),
            "-d",
            str(tree),
            "-o",
            "json",
            "--framework",
            "kubernetes",
            "dockerfile",
            "github_actions",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    # checkov prints nothing and exits 0 when it finds nothing to scan: the report must name each framework.
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    return {entry["check_type"]: entry for entry in reports}


def test_checkov_finds_no_failed_check(checkov_results: dict[str, dict]) -> None:
    assert set(checkov_results) == {"kubernetes", "dockerfile", "github_actions"}
    for framework, report in checkov_results.items():
        failed = [
            f"{check['check_id']} {check['check_name']} @ {check['resource']} ({check['file_path']})"
            for check in report["results"]["failed_checks"]
        ]
        assert not failed, f"{framework}:\n" + "\n".join(failed)
        assert report["summary"]["parsing_errors"] == 0


def test_checkov_scanned_every_object(checkov_results: dict[str, dict], render_dir: Path) -> None:
    summary = checkov_results["kubernetes"]["summary"]
    assert summary["passed"] > 1000
    objects = sum(
        1 for path in render_dir.glob("*.yaml") for doc in yaml.safe_load_all(path.read_text()) if doc
    )
    # InferenceService, PodMonitor and PrometheusRule are custom kinds checkov has no policies for.
    assert summary["resource_count"] >= objects * 0.6
    assert checkov_results["dockerfile"]["summary"]["resource_count"] == len(
        list((ROOT / "docker").glob("*.Dockerfile"))
    )
    assert checkov_results["github_actions"]["summary"]["passed"] > 20


def test_every_checkov_skip_has_a_reason() -> None:
    config = yaml.safe_load((ROOT / ".checkov.yaml").read_text())
    lines = (ROOT / ".checkov.yaml").read_text().splitlines()
    for check in config["skip-check"]:
        [line] = [line for line in lines if line.strip().startswith(f"- {check}")]
        reason = line.partition("#")[2].strip()
        assert len(reason.split()) >= 8, f"{check} is skipped without a reason"
    chart = ROOT / "helm" / "housing-kserve" / "templates"
    for annotation in re.findall(
        r"checkov\.io/skip\d+: (.*)", "".join(p.read_text() for p in chart.rglob("*.yaml"))
    ):
        check, _, reason = annotation.partition("=")
        assert re.fullmatch(r"CKV_K8S_\d+", check) and len(reason.split()) >= 5, annotation


def test_actionlint_is_clean() -> None:
    actionlint = require_tool("actionlint")
    result = subprocess.run(
        [actionlint, str(WORKFLOWS / "*.yml")], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Checking 2 workflow file(s)" in result.stdout


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    actionlint = require_tool("actionlint")
    bad = tmp_path / "bad.yml"
    text = (WORKFLOWS / "ci-cd.yml").read_text().replace("runs-on: ubuntu-22.04", "runs-on: [ubuntu-22.04", 1)
    bad.write_text(text)
    result = subprocess.run([actionlint, str(bad)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stdout


def test_workflows_use_oidc_and_no_stored_credentials() -> None:
    ci = yaml.safe_load((WORKFLOWS / "ci-cd.yml").read_text())
    training = yaml.safe_load((WORKFLOWS / "model-training.yml").read_text())
    for workflow in (ci, training):
        assert workflow["permissions"] == {"contents": "read"}
        for job in workflow["jobs"].values():
            logins = [step for step in job["steps"] if step.get("uses", "").startswith("azure/login@")]
            for login in logins:
                assert set(login["with"]) == {"client-id", "tenant-id", "subscription-id"}
                assert job["permissions"]["id-token"] == "write"
    text = (WORKFLOWS / "ci-cd.yml").read_text() + (WORKFLOWS / "model-training.yml").read_text()
    assert "secrets." not in text and not re.search(r"password\s*:", text, re.I) and "creds:" not in text
    assert "./dev test" in (ROOT / ".ci" / "run").read_text() and ".ci/run" in text
    assert "helm upgrade --install" in (ROOT / "scripts" / "deploy-aks.sh").read_text()
    on = training[True]  # PyYAML reads the key `on` as True
    assert on["schedule"] == [{"cron": "0 3 * * 1"}] and "workflow_dispatch" in on
    steps = " ".join(step.get("run", "") for step in training["jobs"]["train-and-canary"]["steps"])
    assert "housing train" in steps and "--publish" in steps and "housing rollout canary" in steps


def test_deploy_script_help_and_dry_run() -> None:
    script = ROOT / "scripts" / "deploy-aks.sh"
    help_text = subprocess.run(
        ["bash", str(script), "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "Usage: scripts/deploy-aks.sh" in help_text and "--model-sha256" in help_text
    sha = "c" * 64
    result = subprocess.run(
        [
            "bash",
            str(script),
            "--acr",
            "housingacr",
            "--resource-group",
            "rg",
            "--cluster",
            "aks",
            "--tag",
            "abc123",
            "--model-uri",
            "https://housingmodels.blob.core.windows.net/models/housing/v3",
            "--model-sha256",
            sha,
            "--dry-run",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = result.stdout.splitlines()
    builds = [line for line in lines if line.startswith("az acr build")]
    assert len(builds) == len(list((ROOT / "docker").glob("*.Dockerfile"))) and all(
        "housing-" in line and ":abc123" in line for line in builds
    )
    [upgrade] = [line for line in lines if line.startswith("helm upgrade --install")]
    assert f"model.sha256={sha}" in upgrade and "image.registry=housingacr.azurecr.io" in upgrade
    refused = subprocess.run(
        [
            "bash",
            str(script),
            "--acr",
            "housingacr",
            "--resource-group",
            "rg",
            "--cluster",
            "aks",
            "--model-uri",
            "https://housingmodels.blob.core.windows.net/models/housing/v3",
            "--dry-run",
        ],
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 2 and "--model-uri needs --model-sha256" in refused.stderr
