"""The chart's explainer (spec.explainer) as KServe's controller runs it, in both deployment modes.

The container's args are read back with the explainer's and the transformer's own argument parsers, after
the controller has added its flags (tests/k8s/kserve_controller.py encodes which).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.k8s import kserve_controller as kserve
from tests.k8s import servers
from tests.k8s.conftest import NAMESPACE, SHA_B, Render, render
from tests.k8s.test_kserve_controller import flag_values, stable, transformer_args
from tests.k8s.test_network_policies import allowed

MODES = {"defaults": kserve.STANDARD, "knative-explainer": kserve.KNATIVE}


def explainer(rendered: Render) -> dict[str, Any]:
    return stable(rendered)["spec"]["explainer"]  # type: ignore[no-any-return]


def test_the_explainer_serves_the_stable_artifact_pinned_to_model_joblib(renders: dict[str, Render]) -> None:
    """explainer_custom.go GetContainer adds --predictor_host and --http_port 8080: the explainer accepts
    them, loads the predictor's storage URI, and pins explainer.sha256 (model.joblib), not model.sha256
    (model.onnx)."""
    for name in MODES:
        isvc = stable(renders[name])
        container = explainer(renders[name])["containers"][0]
        assert container["command"] == ["python", "-m", "explainer"]
        assert container["image"].rsplit("/", 1)[-1].startswith("housing-explainer:")
        args = servers.parse(renders[name], "explainer")  # with KServe's flags, $(POD_IP) expanded
        predictor = isvc["spec"]["predictor"]["containers"][0]["args"]
        assert args.storage_uri == predictor[predictor.index("--storage_uri") + 1], name
        assert (args.model_name, args.http_port, args.enable_grpc) == ("housing", 8080, False), name
        assert args.expected_sha256 == (SHA_B if name == "knative-explainer" else None), name
        assert explainer(renders[name])["annotations"]["housing.kserve.dev/model-sha256"] == (
            SHA_B if name == "knative-explainer" else "unpinned"
        )
        assert [p["containerPort"] for p in container["ports"]] == [8080]


def test_explain_reaches_the_explainer_in_either_mode(renders: dict[str, Render]) -> None:
    """The transformer is given the explainer's Service (KServe would not); in Knative mode KServe's ingress
    also sends :explain there through the gateway, so both paths must be open, and nothing else."""
    for name, mode in MODES.items():
        rendered = renders[name]
        isvc = stable(rendered)
        service = kserve.component_service(isvc, "explainer")
        assert flag_values(transformer_args(rendered), "--explainer_host") == [f"{service.name}.{NAMESPACE}"]
        assert not service.agent
        assert kserve.explain_route(isvc) == ("explainer" if mode == kserve.KNATIVE else "transformer")
        if mode == kserve.STANDARD:
            assert allowed(rendered, "transformer", "explainer", service.target_port)
            for source in ("gateway", "predictor", "detector", "stranger", "other-namespace"):
                assert not allowed(rendered, source, "explainer", service.target_port), (name, source)
        else:
            for source in ("gateway", "activator"):
                assert allowed(rendered, source, "explainer", kserve.KNATIVE_QUEUE_PORT), (name, source)
            assert allowed(rendered, "activator", "explainer", kserve.KNATIVE_AUTOSCALER_METRICS_PORT)
            assert not allowed(rendered, "stranger", "explainer", kserve.KNATIVE_QUEUE_PORT)
        assert allowed(rendered, "prometheus", "explainer", 8080)
        assert allowed(rendered, "explainer", "internet", 443)  # the artifact, from Blob Storage
        assert not allowed(rendered, "explainer", "predictor", 8080)


def test_the_explainer_scales_and_is_scraped_like_the_other_components(renders: dict[str, Render]) -> None:
    for name, mode in MODES.items():
        rendered = renders[name]
        spec = explainer(rendered)
        isvc = stable(rendered)
        kserve.admit(isvc)
        expected = (1, 2, "cpu") if mode == kserve.STANDARD else (0, 4, "concurrency")
        assert (spec["minReplicas"], spec["maxReplicas"], spec["scaleMetric"]) == expected, name
        labels = kserve.pod_labels(isvc, "explainer")
        assert labels["app.kubernetes.io/component"] == "explainer"
        assert all(len(derived) <= kserve.MAX_NAME for derived in kserve.derived_names(isvc).values())
        (monitor,) = [
            m for m in rendered.of_kind("PodMonitor") if m["metadata"]["name"].endswith("-explainer")
        ]
        container = spec["containers"][0]
        ports = kserve.knative_container_ports(container) if mode == kserve.KNATIVE else container["ports"]
        assert {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]} <= {p["name"] for p in ports}
        assert container["securityContext"] == isvc["spec"]["predictor"]["containers"][0]["securityContext"]


def test_explainer_off_removes_it_and_its_route(renders: dict[str, Render]) -> None:
    rendered = renders["explainer-off"]
    assert "explainer" not in stable(rendered)["spec"]
    assert not flag_values(transformer_args(rendered), "--explainer_host")  # :explain answers 501
    names = [doc["metadata"]["name"] for doc in rendered.documents]
    assert not [name for name in names if name.endswith("-explainer")]


def test_scale_to_zero_of_the_explainer_needs_knative(tmp_path: Path) -> None:
    result = render({"explainer": {"minReplicas": 0}}, tmp_path, "explainer-zero")
    assert result.returncode != 0
    assert "explainer.minReplicas is 0, but scale to zero needs Knative" in result.stderr
    result = render({"explainer": {"sha256": "ABC"}}, tmp_path, "explainer-bad-pin")
    assert result.returncode != 0 and "explainer.sha256" in result.stderr
