"""Issue 26 on the cluster: with the edge on, every route of serving/policy.py gets exactly its role from the
pods' sidecars, and nothing else gets in.

Each route of the table, on each component, is sent through the rendered PeerAuthentication,
RequestAuthentications and AuthorizationPolicies (mesh_rules.authorize, Istio's evaluation) by every kind of
caller: anonymous, a token holding each app role, the transformer's mTLS identity, another workload's. A route
the table gives role R is let through for R's callers and refused for all others. The NetworkPolicies, the
other half of who gets in, are test_network_policies' and test_mesh's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest

from serving import policy
from tests.k8s import kserve_controller as kserve
from tests.k8s import mesh_rules as mesh
from tests.k8s.conftest import AUTH, NAMESPACE, Render
from tests.k8s.test_chart import FULLNAME
from tests.k8s.test_kserve_controller import stable
from tests.k8s.test_mesh import workload_labels

# (scenario, mode, auth on, repository API on)
SCENARIOS = {
    "edge": (kserve.STANDARD, True, False),
    "knative-edge-auth": (kserve.KNATIVE, True, False),
    "knative-edge": (kserve.KNATIVE, False, False),
    "repository-api": (kserve.STANDARD, True, True),
}
# The app roles of the chart's defaults (edge.auth.*Claims) and of the tests' AUTH (predictClaims).
APP_ROLES = {
    policy.PREDICT: "Housing.Predict",
    policy.FEEDBACK: "Housing.Feedback",
    policy.MONITOR: "Housing.Monitor",
    policy.ANALYST: "Housing.Analyst",
    policy.ADMIN: "Housing.Admin",
}
TRANSFORMER = mesh.Caller(NAMESPACE, f"{FULLNAME}-transformer", mesh=True)
OTHER_WORKLOAD = mesh.Caller(
    NAMESPACE, FULLNAME, mesh=True
)  # the predictor's, explainer's, training's identity
GATEWAY = mesh.Caller("istio-system", "istio-ingressgateway-service-account", mesh=True)


@dataclass(frozen=True)
class Call:
    """Who calls: an mTLS identity and, maybe, a token with one app role."""

    name: str
    caller: mesh.Caller
    role: str | None = None

    def claims(self) -> dict[str, object] | None:
        if self.role is None:
            return None
        return {"iss": AUTH["issuer"], "sub": self.name, "roles": [APP_ROLES[self.role]]}


CALLS = [
    Call("anonymous", GATEWAY),
    *(Call(f"token:{role}", GATEWAY, role) for role in APP_ROLES),
    Call("transformer", TRANSFORMER),
    Call("other workload", OTHER_WORKLOAD),
]


def concrete(path: str) -> str:
    """A request path for a table row (``{name}`` and ``{version}`` filled in)."""
    return re.sub(r"\{version\}", "1", re.sub(r"\{name\}", "housing", path))


def port(mode: str, component: str, route: policy.Route) -> int:
    """Where the request reaches the pod's sidecar: the queue-proxy in Knative mode, else the container; the
    chart opens /metrics on the container port only (Prometheus scrapes it there)."""
    if component == "detector" or route.path == "/metrics" or mode == kserve.STANDARD:
        return 8080
    return mesh.QUEUE_PORT


def expected(
    call: Call, route: policy.Route, component: str, mode: str, auth: bool, repository: bool
) -> bool:
    """What the table says the sidecar must do with ``call`` on ``route`` (the chart's reading of each
    role)."""
    role = route.role
    if role == policy.OPEN:
        return True
    if role == policy.PREDICT:
        return call.role == policy.PREDICT if auth else True
    if role == policy.INTERNAL:
        # Knative without knative-serving in the mesh: the activator forwards in plain text, so the
        # queue-proxy's port admits any caller the NetworkPolicies let in (docs/security.md, "On AKS").
        return (call.caller == TRANSFORMER and call.role is None) or mode == kserve.KNATIVE
    if role == policy.INGEST:
        return call.caller == TRANSFORMER and call.role is None
    if role == policy.ADMIN:
        return auth and repository and component == "predictor" and call.role == policy.ADMIN
    return auth and call.role == role  # feedback, monitor, analyst


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_every_route_gets_exactly_its_role(renders: dict[str, Render], scenario: str) -> None:
    rendered = renders[scenario]
    mode, auth, repository = SCENARIOS[scenario]
    assert kserve.deployment_mode(stable(rendered)) == mode
    checked = 0
    for component in policy.COMPONENTS:
        labels = workload_labels(rendered, component)
        for route in policy.http_routes(component):
            for method in route.methods:
                for call in CALLS:
                    request = mesh.Request(
                        port(mode, component, route), method, concrete(route.path), claims=call.claims()
                    )
                    decision = mesh.authorize(rendered.documents, NAMESPACE, labels, call.caller, request)
                    want = expected(call, route, component, mode, auth, repository)
                    assert bool(decision) == want, (
                        scenario,
                        component,
                        method,
                        route.path,
                        call.name,
                        decision,
                    )
                    checked += 1
    assert checked > 500


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_nothing_outside_the_table_gets_in(renders: dict[str, Render], scenario: str) -> None:
    """Paths no row lists, and the table's paths with another method, are refused for every caller: the
    sidecar's ALLOW policies list the routes, not the servers' whole surface."""
    rendered = renders[scenario]
    mode, _, _ = SCENARIOS[scenario]
    for component in policy.COMPONENTS:
        labels = workload_labels(rendered, component)
        serving_port = 8080 if component == "detector" or mode == kserve.STANDARD else mesh.QUEUE_PORT
        requests = [
            mesh.Request(serving_port, "GET", "/docs"),
            mesh.Request(serving_port, "POST", "/debug"),
            mesh.Request(serving_port, "DELETE", "/v2/models/housing"),
            mesh.Request(8080, "POST", "/metrics"),
            mesh.Request(mesh.AUTOSCALER_METRICS_PORT, "GET", "/v2/models/housing"),
        ]
        if component == "detector":
            requests.append(mesh.Request(8080, "GET", "/feedback"))
        for request in requests:
            for call in CALLS:
                request_with = mesh.Request(request.port, request.method, request.path, claims=call.claims())
                decision = mesh.authorize(rendered.documents, NAMESPACE, labels, call.caller, request_with)
                assert not decision, (scenario, component, request, call.name)


def test_the_transformers_identity_is_its_own(renders: dict[str, Render]) -> None:
    """Principals are service accounts: the transformer runs as its own (no Workload Identity: it reads no
    Blob Storage), so the predictor, the explainer and the training pods (one identity among them) cannot pass
    for it."""
    rendered = renders["aks-workload-identity"]
    isvc = stable(rendered)
    transformer = isvc["spec"]["transformer"]["serviceAccountName"]
    assert transformer == TRANSFORMER.service_account
    assert transformer not in {isvc["spec"][c]["serviceAccountName"] for c in ("predictor", "explainer")}
    account = rendered.one("ServiceAccount", transformer)
    assert "annotations" not in account["metadata"] and account["automountServiceAccountToken"] is False
