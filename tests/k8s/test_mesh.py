"""The chart on a real mesh: every request Istio, Knative and KServe make into the release's pods gets
through, and nothing reaches a pod past the transformer from outside.

No mesh, Knative or KServe runs here: tests/k8s/mesh_rules.py (Istio, Knative Serving, net-istio) and
tests/k8s/kserve_controller.py (KServe's ingress reconcilers) stand in for them, each rule citing its source.
A request gets through when the NetworkPolicies let its connection in (test_network_policies.allowed) and the
pod's sidecar lets it through (mesh_rules.authorize: PeerAuthentication, then the AuthorizationPolicies).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.k8s import kserve_controller as kserve
from tests.k8s import mesh_rules as mesh
from tests.k8s.conftest import AUTH, NAMESPACE, Render, render
from tests.k8s.test_kserve_controller import stable
from tests.k8s.test_network_policies import allowed

KNATIVE = ("knative-canary", "knative-edge", "knative-edge-auth")  # no edge, edge without and with auth
WITH_AUTH = ("edge", "knative-edge-auth")  # Standard (STRICT) and Knative (permissive)
SCRAPED = ("defaults", "knative-canary", "knative-edge", *WITH_AUTH)
ACTIVATOR = mesh.Caller("knative-serving", "activator")
AUTOSCALER = mesh.Caller("knative-serving", "controller")
PROMETHEUS = {
    "plain": mesh.Caller("monitoring", "prometheus"),
    "mesh": mesh.Caller("monitoring", "prometheus", mesh=True),
}
GATEWAY = mesh.Caller("istio-system", "istio-ingressgateway-service-account", mesh=True)
CLIENT_TOKEN = {"iss": AUTH["issuer"], "sub": "client", "roles": ["Housing.Predict"]}
OTHER_TOKEN = {"iss": AUTH["issuer"], "sub": "someone", "roles": ["Housing.Feedback"]}
SERVING_PORT = {kserve.STANDARD: 8080, kserve.KNATIVE: mesh.QUEUE_PORT}


def mode(rendered: Render) -> str:
    return kserve.deployment_mode(stable(rendered))


def workload_labels(rendered: Render, component: str) -> dict[str, str]:
    """The labels of the stable component's pods, as KServe (or the detector's Deployment) sets them."""
    if component == "detector":
        (deployment,) = [
            d for d in rendered.of_kind("Deployment") if d["metadata"]["name"].endswith("detector")
        ]
        return dict(deployment["spec"]["template"]["metadata"]["labels"])
    return kserve.pod_labels(stable(rendered), component)


def infer(port: int, **request: Any) -> mesh.Request:
    """A V2 prediction request on ``port``."""
    return mesh.Request(port, "POST", "/v2/models/housing/infer", **request)


def reaches(
    rendered: Render, peer: str, caller: mesh.Caller, component: str, request: mesh.Request
) -> mesh.Decision:
    """Whether ``caller`` (the NetworkPolicy peer ``peer``) gets ``request`` into a ``component`` pod."""
    if not allowed(rendered, peer, component, request.port):
        return mesh.Decision(False, f"the NetworkPolicies refuse {peer} -> {component}:{request.port}")
    labels = workload_labels(rendered, component)
    return mesh.authorize(rendered.documents, NAMESPACE, labels, caller, request)


def test_knative_lets_exactly_the_activator_probe_and_autoscaler_scrape_in(
    renders: dict[str, Render],
) -> None:
    """revision_backends.go probe() and stats_scraper.go: both plain text from knative-serving, without a
    token; with auth on, a 403 to the probe kept every transformer pod out of the activator's healthy set, and
    with the default target-burst-capacity the activator is always in the path: it never served."""
    for name in KNATIVE:
        rendered = renders[name]
        for component in ("transformer", "predictor", "explainer"):
            probe = reaches(rendered, "activator", ACTIVATOR, component, mesh.activator_probe())
            assert probe, (name, component, probe.reason)
            scrape = reaches(rendered, "activator", AUTOSCALER, component, mesh.autoscaler_scrape())
            assert scrape, (name, component, scrape.reason)
        assert not allowed(rendered, "prometheus", "transformer", mesh.AUTOSCALER_METRICS_PORT), name
        if name not in WITH_AUTH:
            continue
        # Exactly those: the probe path without Knative's probe header, or anything else on 9090, is refused.
        bare = mesh.Request(mesh.QUEUE_PORT, "GET", mesh.HEALTH_CHECK_PATH)
        assert not reaches(rendered, "activator", ACTIVATOR, "transformer", bare), name
        stats = mesh.Request(mesh.AUTOSCALER_METRICS_PORT, "GET", "/v2/models/housing")
        assert not reaches(rendered, "activator", AUTOSCALER, "transformer", stats), name
        # The kubelet's queue-proxy probe (when Istio does not rewrite probes) stays open as before.
        assert mesh.authorize(
            rendered.documents, NAMESPACE, workload_labels(rendered, "transformer"), ACTIVATOR,
            mesh.kubelet_queue_probe(),
        ), name  # fmt: skip


def test_predictions_still_need_the_token_on_every_port(renders: dict[str, Render]) -> None:
    """What the activator forwards (the client's request, with its token) on the queue-proxy's port, and what
    the gateway sends in Standard mode: a prediction needs a token with the predict role."""
    for name in WITH_AUTH:
        rendered = renders[name]
        port = SERVING_PORT[mode(rendered)]
        peer, caller = ("activator", ACTIVATOR) if mode(rendered) == kserve.KNATIVE else ("gateway", GATEWAY)
        anonymous = infer(port)
        assert not reaches(rendered, peer, caller, "transformer", anonymous), name
        wrong_role = infer(port, claims=OTHER_TOKEN)
        assert not reaches(rendered, peer, caller, "transformer", wrong_role), name
        good = reaches(rendered, peer, caller, "transformer", infer(port, claims=CLIENT_TOKEN))
        assert good, (name, good.reason)
        # The probe rule opens one path with one header, never a prediction.
        sneaky = infer(port, headers={mesh.PROBE_HEADER: mesh.QUEUE_PROBE_VALUE})
        assert not reaches(rendered, peer, caller, "transformer", sneaky), name


def test_prometheus_scrapes_metrics_with_or_without_a_sidecar(renders: dict[str, Render]) -> None:
    """authorization_policy.proto: ``source.namespaces`` "requires mTLS enabled", so a Prometheus without a
    sidecar matched no rule and got 403 from the transformer and the detector. The chart allows GET /metrics
    on the container port by port and path; NetworkPolicies still admit only Prometheus's namespace there
    (and, in Standard mode, the gateway, where the edge routes no /metrics). Under STRICT mTLS plain text is
    refused before any policy, which is why the render asks for edge.mtls.peersInMesh.prometheus (test
    below)."""
    metrics = mesh.Request(8080, "GET", "/metrics")
    for name in SCRAPED:
        rendered = renders[name]
        strict = bool(rendered.of_kind("PeerAuthentication"))
        for component in ("transformer", "predictor", "explainer", "detector"):
            for how, caller in PROMETHEUS.items():
                decision = reaches(rendered, "prometheus", caller, component, metrics)
                if strict and how == "plain":
                    assert not decision and "STRICT" in decision.reason, (name, component)
                else:
                    assert decision, (name, component, how, decision.reason)
        if name in WITH_AUTH:  # only /metrics, only GET: not a prediction without a token
            assert not reaches(rendered, "prometheus", PROMETHEUS["mesh"], "transformer", infer(8080)), name


def edge_destination(rendered: Render, path: str) -> str | None:
    """The edge VirtualService's destination host for a request path (first matching route), or None."""
    (service,) = [vs for vs in rendered.of_kind("VirtualService")]
    for route in service["spec"]["http"]:
        matches = route.get("match") or [{}]
        for match in matches:
            uri = match.get("uri") or {}
            if not uri or uri.get("exact") == path or ("prefix" in uri and path.startswith(uri["prefix"])):
                host = route["route"][0]["destination"]["host"]
                authority = (route.get("rewrite") or {}).get("authority")
                return str(authority or host)
    return None


def test_the_edge_routes_the_api_and_feedback_only(renders: dict[str, Render]) -> None:
    """The edge is the only way in (the InferenceServices are cluster-local, below): it must route the V1/V2
    API (``:explain`` included, to the transformer) and not /metrics or anything else."""
    transformer = f"housing-housing-kserve-transformer.{NAMESPACE}.svc.cluster.local"
    for name in ("edge", "knative-edge", "knative-edge-auth"):
        rendered = renders[name]
        for path in (
            "/v2/models/housing/infer",
            "/v2/models/housing",
            "/v2/health/ready",
            "/v1/models/housing:predict",
            "/v1/models/housing:explain",
        ):
            assert edge_destination(rendered, path) == transformer, (name, path)
        for path in ("/metrics", "/docs", "/v2/repository/index"):
            assert edge_destination(rendered, path) is None, (name, path)
        detector = edge_destination(rendered, "/feedback")
        assert (detector is not None) == (name != "knative-edge"), name  # /feedback only with auth
        assert kserve.EXPLAIN_PATH.match("/v1/models/housing:explain")


@pytest.mark.parametrize("gateway_api", [False, True], ids=["ingress", "gateway-api"])
def test_no_public_path_around_the_transformer(renders: dict[str, Render], gateway_api: bool) -> None:
    """ingress_reconciler.go (Knative), kube_ingress_reconciler.go and httproute_reconciler.go (Standard)
    publish every InferenceService not labelled cluster-local, and Knative every Knative Service not labelled
    so. Canaries and shadows are always cluster-local (only the transformer calls them); with the edge the
    stable InferenceService is too. Without the edge, what KServe still publishes past the transformer is
    either refused by the NetworkPolicies (Standard mode: only the transformer reaches predictor and
    explainer) or, in Knative mode, the one documented route: ``:explain`` on the public host to the explainer
    (the local gateway, which the transformer needs, runs in the same gateway pods)."""
    for name, rendered in renders.items():
        edge = any(doc["kind"] == "Gateway" for doc in rendered.documents)
        for isvc in rendered.of_kind("InferenceService"):
            routes = kserve.public_routes(isvc, gateway_api=gateway_api)
            is_stable = bool(isvc["spec"].get("transformer"))
            if not is_stable or edge:
                assert routes == [], (name, isvc["metadata"]["name"], routes)
                continue
            for route in routes:
                if route.component == "transformer":
                    continue
                port = SERVING_PORT[kserve.deployment_mode(isvc)]
                if kserve.deployment_mode(isvc) == kserve.KNATIVE:
                    assert route == kserve.PublicRoute(isvc["metadata"]["name"], ":explain", "explainer"), (
                        name,
                        route,
                    )
                else:
                    assert not allowed(rendered, "gateway", route.component, port), (name, route)


def test_mesh_callers_reach_the_knative_pods_they_call(renders: dict[str, Render]) -> None:
    """net-istio's mesh VirtualService (MakeMeshVirtualService): with a sidecar, the transformer's calls go
    straight to the predictor's and explainer's pods on 8012 (or to the activator); without one, through the
    local gateway. Both must be open, and nothing else of theirs."""
    for name in ("knative-canary", "knative-explainer", "knative-edge-auth"):
        rendered = renders[name]
        for target in ("predictor", "explainer"):
            for sidecar in (True, False):
                for source, destination, port in mesh.knative_hops("transformer", target, sidecar=sidecar):
                    assert allowed(rendered, source, destination, port), (name, source, destination, port)
        # The helm test pod calls the transformer the same way.
        for sidecar in (True, False):
            for source, destination, port in mesh.knative_hops("helm-test", "transformer", sidecar=sidecar):
                assert allowed(rendered, source, destination, port), (name, source, destination, port)
        for source in ("detector", "explainer", "stranger", "other-namespace"):
            assert not allowed(rendered, source, "predictor", mesh.QUEUE_PORT), (name, source)
        assert not allowed(rendered, "predictor", "explainer", mesh.QUEUE_PORT), name


def strict_values(mode_name: str, **peers: bool) -> dict[str, Any]:
    return {
        "deploymentMode": mode_name,
        "networkPolicy": {"istio": {"enabled": True}},
        "edge": {"enabled": True, "mtls": {"strict": True, "peersInMesh": peers}},
    }


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (strict_values("Standard"), "edge.mtls.strict refuses Prometheus's plain-text scrapes"),
        (
            strict_values("Knative", prometheus=True),
            "edge.mtls.strict refuses the plain text of Knative's activator and autoscaler",
        ),
    ],
    ids=["strict without a meshed Prometheus", "strict Knative without a meshed knative-serving"],
)
def test_strict_mtls_is_refused_where_a_plain_text_peer_needs_in(
    values: dict[str, Any], message: str, tmp_path: Path
) -> None:
    """peer_authentication.proto STRICT: "Connection is an mTLS tunnel (TLS with client cert must be
    presented)". The activator, the autoscaler and a Prometheus without a sidecar speak plain text."""
    result = render(values, tmp_path, "strict")
    assert result.returncode != 0, result.stdout[:300]
    assert message in result.stderr, result.stderr


def test_strict_knative_works_once_knative_serving_is_in_the_mesh(tmp_path: Path) -> None:
    from tests.k8s.conftest import parse

    values = strict_values("Knative", prometheus=True, knativeServing=True)
    values["edge"]["auth"] = AUTH
    result = render(values, tmp_path, "strict-knative")
    assert result.returncode == 0, result.stderr
    rendered = Render("strict-knative", result.stdout, parse(result.stdout))
    meshed = mesh.Caller("knative-serving", "activator", mesh=True)
    for component in ("transformer", "predictor"):
        assert reaches(rendered, "activator", meshed, component, mesh.activator_probe()), component
        refused = reaches(rendered, "activator", ACTIVATOR, component, mesh.activator_probe())
        assert not refused and "STRICT" in refused.reason, component
