"""Experiments on the cluster (docs/experiments.md): a sticky A/B split and a shadow, by the transformer."""

from __future__ import annotations

from pathlib import Path

from tests.k8s import kserve_controller as kserve
from tests.k8s.conftest import CANARY_V2, NAMESPACE, SHA_A, Render, render
from tests.k8s.test_kserve_controller import flag_values, inference_services, stable, transformer_args
from tests.k8s.test_network_policies import allowed


def test_a_sticky_header_makes_the_canary_split_an_ab_test(renders: dict[str, Render]) -> None:
    args = transformer_args(renders["ab-test"])
    assert flag_values(args, "--sticky_header") == ["x-user-id"]
    assert len(flag_values(args, "--canary")) == 1  # the split itself is the canary's
    assert flag_values(transformer_args(renders["standard-canary"]), "--sticky_header") == []


def test_a_header_name_that_is_not_a_token_is_refused(tmp_path: Path) -> None:
    values = {"model": {"sha256": SHA_A}, "rollout": {**CANARY_V2, "stickyHeader": "x user id"}}
    completed = render(values, tmp_path, "bad-sticky")
    assert completed.returncode != 0
    assert "stickyHeader" in completed.stderr


def test_a_shadow_is_its_own_predictor_the_transformer_copies_requests_to(renders: dict[str, Render]) -> None:
    """Like a canary, a predictor-only InferenceService that KServe admits as it is
    (inference_service_validation.go, checked for every scenario in test_kserve_controller.py) and serves as
    ISVC-predictor (components/predictor.go, reconcilers/service/service_reconciler.go createDefaultSvc); its
    pods carry the InferenceService's labels (utils.Union in components/predictor.go), so the predictor's
    NetworkPolicies and PodMonitor apply, with endpoint "shadow"."""
    rendered = renders["shadow"]
    (shadow,) = [isvc for isvc in inference_services(rendered) if isvc is not stable(rendered)]
    labels = shadow["metadata"]["labels"]
    assert labels["housing.kserve.dev/shadow-of"] == stable(rendered)["metadata"]["name"]
    assert "housing.kserve.dev/canary-of" not in labels  # rollouts leave it alone
    assert kserve.pod_labels(shadow, "predictor")["housing.kserve.dev/endpoint"] == "shadow"
    service = kserve.component_service(shadow)
    assert flag_values(transformer_args(rendered), "--shadow") == [f"next=100,{service.name}.{NAMESPACE}"]
    assert flag_values(transformer_args(rendered), "--canary") == []
    assert allowed(rendered, "transformer", "predictor", service.target_port)  # the copies get through


def test_a_shadow_without_a_model_or_a_share_is_refused(tmp_path: Path) -> None:
    no_model = render({"rollout": {"shadow": {"name": "next", "percent": 10}}}, tmp_path, "shadow-no-model")
    assert no_model.returncode != 0 and "a shadow needs a model" in no_model.stderr
    model = {"storageUri": "https://acct.blob.core.windows.net/models/housing/v3", "sha256": "b" * 64}
    no_share = render({"rollout": {"shadow": {"name": "next", "model": model}}}, tmp_path, "shadow-no-share")
    assert no_share.returncode != 0 and "rollout.shadow.percent must be 1 to 100" in no_share.stderr
