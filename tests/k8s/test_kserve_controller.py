"""The rendered chart as KServe's controller, webhooks and Knative run it (tests/k8s/kserve_controller.py).

Each test names the KServe or Knative source it encodes. No cluster runs here: these rules stand in for one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.k8s import kserve_controller as kserve
from tests.k8s.conftest import NAMESPACE, Render, parse, render
from tests.k8s.test_network_policies import PEERS, Peer, allowed

CANARY_SCENARIOS = ("standard-canary", "knative-canary")
KNATIVE_SCENARIOS = ("knative-canary",)


def inference_services(rendered: Render) -> list[dict[str, Any]]:
    return rendered.of_kind("InferenceService")


def stable(rendered: Render) -> dict[str, Any]:
    """The InferenceService clients call: the one with the transformer."""
    (found,) = [isvc for isvc in inference_services(rendered) if isvc["spec"].get("transformer")]
    return found


def transformer_args(rendered: Render) -> list[str]:
    return [str(arg) for arg in stable(rendered)["spec"]["transformer"]["containers"][0]["args"]]


def flag_values(args: list[str], flag: str) -> list[str]:
    return [args[index + 1] for index, arg in enumerate(args[:-1]) if arg == flag]


def test_every_inference_service_is_admitted(renders: dict[str, Render]) -> None:
    """inference_service_validation.go: a refused object never deploys; `helm upgrade` would fail."""
    for rendered in renders.values():
        for isvc in inference_services(rendered):
            try:
                kserve.admit(isvc)
            except kserve.AdmissionError as error:
                pytest.fail(f"{rendered.name}: KServe refuses {isvc['metadata']['name']}: {error}")


def test_the_admission_rules_refuse_a_canary_without_a_model(renders: dict[str, Render]) -> None:
    """validateCanarySpecs: a custom predictor's storage URI is read only from its STORAGE_URI env var."""
    isvc = stable(renders["defaults"])
    canary = {"trafficPercent": 10, "predictor": {"name": "v2", **isvc["spec"]["predictor"]}}
    with pytest.raises(kserve.AdmissionError, match="canary requires a stable predictor with a model"):
        kserve.admit({**isvc, "spec": {**isvc["spec"], "canary": [canary]}})


def test_canaries_are_routed_by_the_transformer_to_their_own_predictor(renders: dict[str, Render]) -> None:
    """Behind a transformer, KServe's canary split would bypass it (httproute_reconciler.go weights the
    top-level rule, whose backend is the transformer; the transformer always calls the stable predictor,
    transformer.go). So each canary is its own predictor-only InferenceService and the transformer splits."""
    for name in CANARY_SCENARIOS:
        rendered = renders[name]
        assert not any(isvc["spec"].get("canary") for isvc in inference_services(rendered)), name
        assert "canaryTrafficPercent" not in stable(rendered)["spec"]["predictor"], name
        canaries = [isvc for isvc in inference_services(rendered) if not isvc["spec"].get("transformer")]
        assert len(canaries) == 1, name
        (canary,) = canaries
        routes = flag_values(transformer_args(rendered), "--canary")
        service = kserve.component_service(canary)
        assert routes == [f"v2=10,{service.name}.{NAMESPACE}"], name
        assert (
            canary["metadata"]["annotations"][kserve.DEPLOYMENT_MODE]
            == (stable(rendered)["metadata"]["annotations"][kserve.DEPLOYMENT_MODE])
        )
        labels = kserve.pod_labels(canary, "predictor")
        assert labels["housing.kserve.dev/endpoint"] == "canary"
        assert labels["app.kubernetes.io/component"] == "predictor"  # same policies and monitors as stable
        assert "--storage_uri" in canary["spec"]["predictor"]["containers"][0]["args"]


def test_the_transformer_reaches_each_predictor_service_on_an_open_port(renders: dict[str, Render]) -> None:
    """service_reconciler.go createDefaultSvc: port 80 targets the container port, or the agent's 9081
    whenever the component has a logger; the NetworkPolicies must open exactly that target."""
    for name in ("defaults", "standard-canary", "logger-url"):
        rendered = renders[name]
        for isvc in inference_services(rendered):
            service = kserve.component_service(isvc)
            container_ports = [
                p["containerPort"] for p in isvc["spec"]["predictor"]["containers"][0]["ports"]
            ]
            assert service.agent or service.target_port in container_ports, (name, service)
            assert allowed(rendered, "transformer", "predictor", service.target_port), (name, service)


def test_events_are_logged_where_the_client_id_and_endpoint_are_known(renders: dict[str, Render]) -> None:
    """agent_injector.go: the agent's --endpoint is the pod label `endpoint` (empty when absent);
    logger/handler.go: its ce-id is the incoming Ce-Id or a fresh UUID, and KServe's Python transformer
    forwards only x-request-id, x-b3-traceid and authorization. A logger on the predictor behind a transformer
    therefore logs ids that no client knows. So the transformer logs (with the client's id and its arm) and
    no agent logs at all."""
    for name, rendered in renders.items():
        for isvc in inference_services(rendered):
            for component in ("predictor", "transformer"):
                if isvc["spec"].get(component):
                    labels = kserve.pod_labels(isvc, component)
                    assert kserve.agent_flags(isvc, component, labels) is None, (name, component)
        logger_urls = flag_values(transformer_args(rendered), "--logger_url")
        expected = SCENARIO_LOGGER_URL.get(
            name, f"http://housing-housing-kserve-detector.{NAMESPACE}.svc.cluster.local:8080"
        )
        assert logger_urls == ([expected] if expected else []), name


SCENARIO_LOGGER_URL = {
    "detector-off": "",
    "logger-url": "http://collector.observability.svc.cluster.local:9000/events",
}


def test_the_transformer_may_post_events_to_the_receiver(renders: dict[str, Render]) -> None:
    """The NetworkPolicies follow the logging point: the transformer reaches the detector or the receiver."""
    assert allowed(renders["defaults"], "transformer", "detector", 8080)
    assert not allowed(renders["defaults"], "predictor", "detector", 8080)
    collector = Peer("observability", {"app": "collector"})
    PEERS["collector"] = collector
    try:
        assert allowed(renders["logger-url"], "transformer", "collector", 9000)
        assert not allowed(renders["defaults"], "transformer", "collector", 9000)
    finally:
        del PEERS["collector"]


def test_knative_pod_monitors_select_a_port_the_revision_pod_has(renders: dict[str, Render]) -> None:
    """Knative renames the user container's port to `user-port` in the revision's pod (knative.dev/serving
    pkg/apis/serving/v1 UserPortName, resources/deploy.go); a PodMonitor naming `http1` scrapes nothing."""
    for name in KNATIVE_SCENARIOS:
        rendered = renders[name]
        monitors = {m["metadata"]["name"].rsplit("-", 1)[-1]: m for m in rendered.of_kind("PodMonitor")}
        for component in ("predictor", "transformer"):
            container = stable(rendered)["spec"][component]["containers"][0]
            names = {port["name"] for port in kserve.knative_container_ports(container)}
            endpoints = monitors[component]["spec"]["podMetricsEndpoints"]
            assert {endpoint["port"] for endpoint in endpoints} <= names, (name, component, names)


def test_knative_autoscaler_can_scrape_the_queue_proxy(renders: dict[str, Render]) -> None:
    """Knative's autoscaler (knative-serving namespace) scrapes every revision pod's queue-proxy on 9090
    (queue.go, AutoscalingQueueMetricsPort); the activator and gateway send requests to 8012."""
    for name in KNATIVE_SCENARIOS:
        rendered = renders[name]
        for component in ("predictor", "transformer"):
            assert allowed(rendered, "activator", component, kserve.KNATIVE_AUTOSCALER_METRICS_PORT), (
                name,
                component,
            )
            assert allowed(rendered, "activator", component, kserve.KNATIVE_QUEUE_PORT), (name, component)
            assert not allowed(rendered, "other-namespace", component, kserve.KNATIVE_AUTOSCALER_METRICS_PORT)


def test_names_kserve_derives_fit_a_dns_label(renders: dict[str, Render]) -> None:
    """constants.go PredictorServiceName and Knative's revision names: ISVC-predictor[-00001] must fit 63."""
    for rendered in renders.values():
        for isvc in inference_services(rendered):
            for what, derived in kserve.derived_names(isvc).items():
                assert len(derived) <= kserve.MAX_NAME, (rendered.name, what, derived)


def test_pod_templates_do_not_change_with_the_chart_version(renders: dict[str, Render]) -> None:
    """predictor.go/transformer.go copy the InferenceService's labels onto the pod template: a label that
    changes with the chart version would restart every pod (or cut a Knative revision) on each chart bump."""
    volatile = ("helm.sh/chart", "app.kubernetes.io/version")
    for rendered in renders.values():
        for isvc in inference_services(rendered):
            for component in ("predictor", "transformer"):
                if isvc["spec"].get(component):
                    labels = kserve.pod_labels(isvc, component)
                    assert not [key for key in volatile if key in labels], (rendered.name, component)
        for kind in ("Deployment",):
            for workload in rendered.of_kind(kind):
                labels = workload["spec"]["template"]["metadata"].get("labels", {})
                assert not [key for key in volatile if key in labels], (rendered.name, kind)


def test_istio_sidecars_reach_istiod(renders: dict[str, Render]) -> None:
    """With Istio's sidecar injected, each proxy needs istiod's xDS port 15012, or no pod becomes ready."""
    istiod = Peer("istio-system", {"app": "istiod"})
    PEERS["istiod"] = istiod
    try:
        for component in ("transformer", "predictor", "detector", "training"):
            assert allowed(renders["istio"], component, "istiod", 15012), component
            assert not allowed(renders["defaults"], component, "istiod", 15012), component
    finally:
        del PEERS["istiod"]


@pytest.mark.parametrize("metric", ["cpu", "memory"])
def test_hpa_targets_are_utilisation_percentages_for_every_metric(metric: str, tmp_path: Path) -> None:
    """hpa_reconciler.go getHPAMetrics: a memory scaleTarget becomes the HPA's AverageUtilization (a percent
    of the memory request), and validateScalingHPACompExtension refuses any target above 100 for every
    metric (`metric == MetricCPU && target < 1 || target > 100`). A memory target of 512 (MiB, as the values
    once said) rendered and was refused at admission; the render refuses it now, and 80 (%) is admitted."""
    values = {"predictor": {"scaleMetric": metric, "scaleTarget": 512}}
    result = render(values, tmp_path, f"{metric}-512")
    assert result.returncode != 0, result.stdout[:300]
    assert f"predictor.scaleTarget is 512, but with scaleMetric {metric}" in result.stderr, result.stderr
    assert "percentage of the container's request (1-100)" in result.stderr
    result = render({"predictor": {"scaleMetric": metric, "scaleTarget": 80}}, tmp_path, f"{metric}-80")
    assert result.returncode == 0, result.stderr
    (isvc,) = [doc for doc in parse(result.stdout) if doc["kind"] == "InferenceService"]
    kserve.admit(isvc)
    with pytest.raises(kserve.AdmissionError, match=r"\[1-100\]"):
        kserve.admit(
            {**isvc, "spec": {**isvc["spec"], "predictor": {**isvc["spec"]["predictor"], "scaleTarget": 512}}}
        )


def test_with_the_gateway_api_explain_goes_to_the_explainer_and_is_closed_there(
    renders: dict[str, Render],
) -> None:
    """httproute_reconciler.go createRawTopLevelHTTPRoute (Standard mode with enableGatewayApi): `:explain` on
    the InferenceService's host goes straight to the explainer's Service, past the transformer. The chart lets
    only the transformer reach the explainer in Standard mode, so that route fails closed (the gateway cannot
    connect); with the edge, the InferenceService is cluster-local and KServe writes no HTTPRoute at all."""
    isvc = stable(renders["defaults"])
    assert kserve.explain_route(isvc, gateway_api=True) == "explainer"
    assert kserve.explain_route(isvc) == "transformer"
    assert not allowed(renders["defaults"], "gateway", "explainer", 8080)
    assert allowed(renders["defaults"], "transformer", "explainer", 8080)
    assert kserve.public_routes(stable(renders["edge"]), gateway_api=True) == []
