"""The public edge on Istio: strictly valid resources, what each lets through, and the values it refuses.

No Istio control plane runs here: every rendered Istio resource is validated against the Istio CRDs in
``../shared/istio-crds/`` with unknown fields refused (as ``kubectl --validate=strict`` would), and the
policies are read for what they allow.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import require_shared
from tests.k8s.conftest import NAMESPACE, Render, render
from tests.k8s.kserve_controller import pod_labels
from tests.k8s.test_chart import FULLNAME, ISTIO_KINDS, _closed
from tests.k8s.test_network_policies import allowed


@pytest.fixture(scope="module")
def istio_validators() -> dict[tuple[str, str], Any]:
    """(apiVersion, kind) -> a validator of the CRD's schema for that version, unknown fields refused."""
    import jsonschema

    path = require_shared("istio-crds/crd-all.gen.yaml")
    with path.open() as handle:
        crds = [doc for doc in yaml.load_all(handle, Loader=yaml.CSafeLoader) if doc]
    validators = {}
    for crd in crds:
        for version in crd["spec"]["versions"]:
            schema = _closed(version["schema"]["openAPIV3Schema"])
            # The CRDs describe spec and status only; the API server adds these.
            schema["properties"].update(
                apiVersion={"type": "string"}, kind={"type": "string"}, metadata={"type": "object"}
            )
            key = (f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])
            validators[key] = jsonschema.Draft7Validator(schema)
    return validators


def istio_objects(rendered: Render) -> list[dict[str, Any]]:
    return [doc for doc in rendered.documents if doc["kind"] in ISTIO_KINDS]


def test_every_istio_resource_is_strictly_valid(renders: dict[str, Render], istio_validators: Any) -> None:
    seen = set()
    for name in ("edge", "knative-edge", "knative-edge-auth"):
        for obj in istio_objects(renders[name]):
            validator = istio_validators[(obj["apiVersion"], obj["kind"])]
            errors = sorted(validator.iter_errors(obj), key=lambda error: list(error.path))
            assert not errors, f"{name} {obj['kind']}: " + "; ".join(
                f"{'/'.join(map(str, error.path))}: {error.message}" for error in errors[:5]
            )
            seen.add(obj["kind"])
    assert seen == ISTIO_KINDS
    assert not istio_objects(renders["defaults"])  # off by default: KServe's own ingress serves


def test_the_strict_istio_check_refuses_an_unknown_field(
    renders: dict[str, Render], istio_validators: Any
) -> None:
    gateway = copy.deepcopy(next(obj for obj in istio_objects(renders["edge"]) if obj["kind"] == "Gateway"))
    gateway["spec"]["servers"][0]["tls"]["credentialNames"] = "typo"
    assert list(istio_validators[(gateway["apiVersion"], "Gateway")].iter_errors(gateway))


def by_kind(rendered: Render, kind: str) -> list[dict[str, Any]]:
    return [obj for obj in istio_objects(rendered) if obj["kind"] == kind]


def test_tls_at_the_gateway_and_plain_http_redirected(renders: dict[str, Render]) -> None:
    (gateway,) = by_kind(renders["edge"], "Gateway")
    https, http = gateway["spec"]["servers"]
    assert https["port"]["protocol"] == "HTTPS" and https["tls"] == {
        "mode": "SIMPLE",
        "credentialName": "housing-tls",
    }
    assert http["tls"] == {"httpsRedirect": True}
    assert https["hosts"] == http["hosts"] == ["housing.contoso.com"]


def test_routes_reach_the_transformer_and_feedback_the_detector(renders: dict[str, Render]) -> None:
    (service,) = by_kind(renders["edge"], "VirtualService")
    detector, inference = service["spec"]["http"]
    # The detector's routes that need an app role (test_authorization.py sends each through its policy).
    assert detector["match"] == [
        {"uri": {"exact": path}} for path in ("/feedback", "/status", "/report", "/outcomes")
    ]
    assert detector["route"][0]["destination"]["host"] == f"{FULLNAME}-detector.{NAMESPACE}.svc.cluster.local"
    # The Service KServe derives for the transformer (ISVC-transformer, port 80).
    assert inference["route"][0]["destination"] == {
        "host": f"{FULLNAME}-transformer.{NAMESPACE}.svc.cluster.local",
        "port": {"number": 80},
    }
    assert inference["corsPolicy"]["allowOrigins"] == [{"exact": "https://app.contoso.com"}]
    assert inference["corsPolicy"]["allowCredentials"] is False
    # Without auth, ground truth has no public route at all; with no origin listed, no CORS policy (browsers
    # refuse every cross-origin call).
    (plain,) = by_kind(renders["knative-edge"], "VirtualService")
    assert [route["name"] for route in plain["spec"]["http"]] == ["inference"]
    assert "corsPolicy" not in plain["spec"]["http"][0]
    assert plain["spec"]["http"][0]["rewrite"] == {
        "authority": f"{FULLNAME}-transformer.{NAMESPACE}.svc.cluster.local"
    }


def rules_for(rendered: Render, component: str) -> list[dict[str, Any]]:
    (policy,) = [
        p for p in by_kind(rendered, "AuthorizationPolicy") if p["metadata"]["name"].endswith(component)
    ]
    assert policy["spec"]["action"] == "ALLOW"
    return policy["spec"]["rules"]


def test_predictions_need_a_token_with_the_predict_role(renders: dict[str, Render]) -> None:
    rendered = renders["edge"]
    stable = rendered.one("InferenceService", FULLNAME)
    authentication = {obj["metadata"]["name"]: obj for obj in by_kind(rendered, "RequestAuthentication")}[
        f"{FULLNAME}-transformer"
    ]
    assert (
        authentication["spec"]["selector"]["matchLabels"].items() <= pod_labels(stable, "transformer").items()
    )
    (rule,) = authentication["spec"]["jwtRules"]
    assert rule["issuer"].startswith("https://login.microsoftonline.com/") and rule["audiences"] == [
        "api://housing"
    ]
    predict, health, metrics = rules_for(rendered, "transformer")
    assert predict["from"] == [{"source": {"requestPrincipals": ["*"]}}]  # a valid token, no anonymous call
    assert predict["when"] == [{"key": "request.auth.claims[roles]", "values": ["Housing.Predict"]}]
    assert "from" not in health and health["to"][0]["operation"]["methods"] == ["GET"]
    # By port and path, not source.namespaces (mTLS only): tests/k8s/test_mesh.py sends the scrapes.
    assert metrics == {"to": [{"operation": {"ports": ["8080"], "methods": ["GET"], "paths": ["/metrics"]}}]}
    # Knative mode adds exactly Knative's own probe and scrape of the queue-proxy (test_mesh.py sends them).
    probe, scrape = rules_for(renders["knative-edge-auth"], "transformer")[3:]
    assert probe["when"] == [{"key": "request.headers[K-Network-Probe]", "values": ["queue"]}]
    assert scrape["to"][0]["operation"]["ports"] == ["9090"]


def test_feedback_needs_the_feedback_role_and_events_the_transformer(renders: dict[str, Render]) -> None:
    events, feedback, *_ = rules_for(renders["edge"], "detector")
    # The transformer's own service account: the other workloads of the release run as another.
    assert events["from"][0]["source"]["principals"] == [
        f"cluster.local/ns/{NAMESPACE}/sa/{FULLNAME}-transformer"
    ]
    assert events["to"][0]["operation"]["paths"] == ["/", "/events"]
    assert feedback["to"][0]["operation"] == {"ports": ["8080"], "methods": ["POST"], "paths": ["/feedback"]}
    assert feedback["when"] == [{"key": "request.auth.claims[roles]", "values": ["Housing.Feedback"]}]
    # The gateway may reach the detector only when /feedback is routed (auth on).
    assert allowed(renders["edge"], "gateway", "detector", 8080)
    assert not allowed(renders["knative-edge"], "gateway", "detector", 8080)
    assert not allowed(renders["defaults"], "gateway", "detector", 8080)


def test_rate_limits_in_the_sidecars(renders: dict[str, Render]) -> None:
    filters = {obj["metadata"]["name"]: obj for obj in by_kind(renders["edge"], "EnvoyFilter")}
    assert set(filters) == {f"{FULLNAME}-transformer-ratelimit", f"{FULLNAME}-detector-ratelimit"}
    patch = filters[f"{FULLNAME}-transformer-ratelimit"]["spec"]["configPatches"][0]
    assert patch["match"]["context"] == "SIDECAR_INBOUND"
    value = patch["patch"]["value"]
    assert value["name"] == "envoy.filters.http.local_ratelimit"
    bucket = value["typed_config"]["value"]["token_bucket"]
    assert bucket == {"max_tokens": 200, "tokens_per_fill": 100, "fill_interval": "1s"}
    (strict,) = by_kind(renders["edge"], "PeerAuthentication")
    assert strict["spec"]["mtls"] == {"mode": "STRICT"}
    assert not by_kind(renders["knative-edge"], "PeerAuthentication")  # STRICT only when asked for


EDGE = {"enabled": True}
AUTH = {"enabled": True, "issuer": "https://login.microsoftonline.com/t/v2.0"}


@pytest.mark.parametrize(
    ("edge", "message"),
    [
        (
            {**EDGE, "auth": AUTH},
            "edge.auth.enabled needs edge.auth.issuer, edge.auth.jwksUri and edge.auth.audiences",
        ),
        (
            {**EDGE, "cors": {"allowOrigins": ["*"], "allowCredentials": True}},
            'allowOrigins "*" together with allowCredentials',
        ),
        (
            {**EDGE, "rateLimit": {"enabled": True, "maxTokens": 0}},
            "a rate limit of zero refuses every request",
        ),
        ({**EDGE, "rateLimit": {"tokensPerFill": 500}}, "tokensPerFill (500) is larger than maxTokens (200)"),
    ],
    ids=["auth without issuer", "CORS * with credentials", "rate limit of zero", "fill above bucket"],
)
def test_contradictory_edge_values_are_refused(edge: dict[str, Any], message: str, tmp_path: Path) -> None:
    result = render({"edge": edge}, tmp_path, "edge")
    assert result.returncode != 0, result.stdout[:300]
    assert message in result.stderr, result.stderr
