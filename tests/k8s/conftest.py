"""Renders of the Helm chart, made once per session and shared by every test in tests/k8s.

Each scenario is a real ``helm template`` run (helm >= 3.17 from ./dev setup); the rendered documents
are parsed with PyYAML's C loader. A scenario that fails to render fails every test that uses it, with
helm's message.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT, require_tool

CHART = ROOT / "helm" / "housing-kserve"
RELEASE, NAMESPACE = "housing", "ml"
SHA_A = "a" * 64
SHA_B = "b" * 64
CLIENT_ID = "00000000-1111-2222-3333-444444444444"

# A 10% canary serving model version 2 (the stable predictor serves version 1).
CANARY_V2 = {
    "canaries": [
        {
            "name": "v2",
            "trafficPercent": 10,
            "model": {
                "storageUri": "https://housingmodels.blob.core.windows.net/models/housing/v2",
                "sha256": SHA_B,
                "version": "2",
            },
        }
    ]
}

# JWTs from Microsoft Entra ID, predictions only with the Housing.Predict role.
AUTH = {
    "enabled": True,
    "issuer": f"https://login.microsoftonline.com/{CLIENT_ID}/v2.0",
    "audiences": ["api://housing"],
    "jwksUri": f"https://login.microsoftonline.com/{CLIENT_ID}/discovery/v2.0/keys",
    "predictClaims": {"roles": ["Housing.Predict"]},
}

SCENARIOS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "knative-canary": {
        "deploymentMode": "Knative",
        "model": {"sha256": SHA_A, "version": "1"},
        "rollout": CANARY_V2,
    },
    "standard-canary": {
        "model": {"sha256": SHA_A, "version": "1"},
        "rollout": CANARY_V2,
    },
    "ab-test": {
        "model": {"sha256": SHA_A, "version": "1"},
        "rollout": {**CANARY_V2, "stickyHeader": "x-user-id"},
    },
    "shadow": {
        "model": {"sha256": SHA_A, "version": "1"},
        "rollout": {
            "shadow": {
                "name": "next",
                "percent": 100,
                "model": {
                    "storageUri": "https://housingmodels.blob.core.windows.net/models/housing/v3",
                    "sha256": SHA_B,
                    "version": "3",
                },
            }
        },
    },
    "logger-url": {"logger": {"url": "http://collector.observability.svc.cluster.local:9000/events"}},
    "istio": {"networkPolicy": {"istio": {"enabled": True}}},
    "edge": {
        "networkPolicy": {"istio": {"enabled": True}},
        "edge": {
            "enabled": True,
            "host": "housing.contoso.com",
            "auth": AUTH,
            # STRICT refuses plain text: the values confirm that Prometheus scrapes with Istio's certificates.
            "mtls": {"strict": True, "peersInMesh": {"prometheus": True}},
            "cors": {"allowOrigins": ["https://app.contoso.com"]},
        },
    },
    "knative-edge": {
        "deploymentMode": "Knative",
        "networkPolicy": {"istio": {"enabled": True}},
        "edge": {"enabled": True},
    },
    # Knative with JWTs at the edge (no STRICT: the activator and autoscaler speak plain text), and a shadow.
    "knative-edge-auth": {
        "deploymentMode": "Knative",
        "model": {"sha256": SHA_A, "version": "1"},
        "networkPolicy": {"istio": {"enabled": True}},
        "edge": {"enabled": True, "host": "housing.contoso.com", "auth": AUTH},
        "rollout": {
            "shadow": {
                "name": "next",
                "percent": 10,
                "model": {
                    "storageUri": "https://housingmodels.blob.core.windows.net/models/housing/v3",
                    "sha256": SHA_B,
                    "version": "3",
                },
            }
        },
    },
    # The predictor's repository API, for operators with the admin app role (edge and auth on, a second model
    # pinned beside the champion).
    "repository-api": {
        "model": {"sha256": SHA_A, "version": "1"},
        "networkPolicy": {"istio": {"enabled": True}},
        "edge": {"enabled": True, "host": "housing.contoso.com", "auth": AUTH},
        "predictor": {
            "repositoryApi": {"enabled": True},
            "extraArgs": [
                "--model",
                f"housing-3=https://housingmodels.blob.core.windows.net/models/housing/3@{SHA_B}",
                "--load",
                "housing-3",
            ],
        },
    },
    "highly-available": {
        "predictor": {"minReplicas": 2},
        "transformer": {"minReplicas": 3, "maxReplicas": 6},
    },
    "detector-off": {"detector": {"enabled": False}, "logger": {"enabled": False}},
    "explainer-off": {"explainer": {"enabled": False}},
    "knative-explainer": {
        "deploymentMode": "Knative",
        "model": {"sha256": SHA_A, "version": "1"},
        "explainer": {"sha256": SHA_B, "minReplicas": 0, "maxReplicas": 4, "scaleTarget": 5},
    },
    "monitoring-off": {
        "monitoring": {
            "podMonitors": {"enabled": False},
            "prometheusRule": {"enabled": False},
            "dashboards": {"enabled": False},
        }
    },
    "aks-workload-identity": {
        "image": {"registry": "contosoml.azurecr.io", "tag": "3f2c1ab"},
        "model": {"sha256": SHA_A},
        "azure": {"workloadIdentity": {"enabled": True, "clientId": CLIENT_ID}},
    },
}


@dataclass(frozen=True)
class Render:
    """One scenario's rendered documents."""

    name: str
    text: str
    documents: list[dict[str, Any]]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [doc for doc in self.documents if doc["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [doc for doc in self.of_kind(kind) if name is None or doc["metadata"]["name"] == name]
        assert len(found) == 1, f"{self.name}: expected one {kind} {name or ''}, found {len(found)}"
        return found[0]


def helm(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run helm; the caller decides what a failure means."""
    binary = require_tool("helm")
    result = subprocess.run([binary, *map(str, args)], capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        pytest.fail(f"helm {' '.join(map(str, args))} failed:\n{result.stderr}", pytrace=False)
    return result


def render(
    values: dict[str, Any], directory: Path, name: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    """``helm template`` the chart with ``values`` written to a file (so types stay YAML types)."""
    values_file = directory / f"{name}.values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    return helm("template", RELEASE, CHART, "--namespace", NAMESPACE, "-f", values_file, *extra, check=False)


def parse(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.load_all(text, Loader=yaml.CSafeLoader) if doc]


@pytest.fixture(scope="session")
def renders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Render]:
    """Every scenario rendered once."""
    directory = tmp_path_factory.mktemp("renders")
    result: dict[str, Render] = {}
    for name, values in SCENARIOS.items():
        completed = render(values, directory, name)
        if completed.returncode != 0:
            pytest.fail(f"scenario {name} does not render:\n{completed.stderr}", pytrace=False)
        result[name] = Render(name, completed.stdout, parse(completed.stdout))
    return result


@pytest.fixture(scope="session")
def render_dir(renders: dict[str, Render], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding ``SCENARIO.yaml`` for every scenario and nothing else (checkov scans it once)."""
    directory = tmp_path_factory.mktemp("rendered")
    for name, rendered in renders.items():
        (directory / f"{name}.yaml").write_text(rendered.text)
    return directory
