"""The NetworkPolicies open exactly the paths the system needs.

The rendered policies are evaluated with the Kubernetes rules: a pod selected by a policy accepts only
what some rule allows, and a connection needs the sender's egress and the receiver's ingress. No API
server or CNI can run here, so this small evaluator stands in for one (the one mock of this folder, and
the reason for it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tests.k8s.conftest import NAMESPACE, RELEASE, Render

BASE = {"app.kubernetes.io/name": "housing-kserve", "app.kubernetes.io/instance": RELEASE}


@dataclass(frozen=True)
class Peer:
    namespace: str
    labels: dict[str, str]


def ours(component: str) -> Peer:
    return Peer(NAMESPACE, {**BASE, "app.kubernetes.io/component": component})


PEERS = {
    "gateway": Peer("istio-system", {"app": "istio-ingressgateway"}),
    "activator": Peer("knative-serving", {"app": "activator"}),
    "prometheus": Peer("monitoring", {"app.kubernetes.io/name": "prometheus"}),
    "stranger": Peer(NAMESPACE, {"app": "something-else"}),
    "other-namespace": Peer("default", {"app": "curl"}),
    **{
        name: ours(name)
        for name in ("transformer", "predictor", "explainer", "detector", "training", "helm-test")
    },
}
INTERNET = "20.60.0.1"  # an Azure Storage address


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return selector.get("matchLabels", {}).items() <= labels.items()


def _peer_allowed(rule_peers: list[dict[str, Any]] | None, peer: Peer | str, policy_namespace: str) -> bool:
    if rule_peers is None:
        return True
    for entry in rule_peers:
        if isinstance(peer, str):
            if "ipBlock" in entry and entry["ipBlock"]["cidr"] == "0.0.0.0/0":
                return True
            continue
        namespace_ok = (
            _matches(entry["namespaceSelector"], {"kubernetes.io/metadata.name": peer.namespace})
            if "namespaceSelector" in entry
            else peer.namespace == policy_namespace
        )
        pod_ok = _matches(entry["podSelector"], peer.labels) if "podSelector" in entry else True
        if "ipBlock" not in entry and namespace_ok and pod_ok:
            return True
    return False


def _port_allowed(ports: list[dict[str, Any]] | None, port: int) -> bool:
    return ports is None or any(p["port"] == port and p.get("protocol", "TCP") == "TCP" for p in ports)


def _direction_allows(
    policies: list[dict[str, Any]], pod: Peer, other: Peer | str, port: int, kind: str
) -> bool:
    key, peers_key = ("ingress", "from") if kind == "Ingress" else ("egress", "to")
    selecting = [
        p
        for p in policies
        if p["metadata"]["namespace"] == pod.namespace
        and _matches(p["spec"]["podSelector"], pod.labels)
        and kind in p["spec"]["policyTypes"]
    ]
    if not selecting:
        return True
    return any(
        _peer_allowed(rule.get(peers_key), other, policy["metadata"]["namespace"])
        and _port_allowed(rule.get("ports"), port)
        for policy in selecting
        for rule in policy["spec"].get(key, [])
    )


def allowed(rendered: Render, source: str | Peer, target: str | Peer, port: int) -> bool:
    """Whether the NetworkPolicies let ``source`` open a TCP connection to ``target`` on ``port`` (peers by
    name from PEERS, or given; the target ``internet`` is an outside address)."""
    policies = rendered.of_kind("NetworkPolicy")
    src = PEERS[source] if isinstance(source, str) else source
    if target == "internet":
        return _direction_allows(policies, src, INTERNET, port, "Egress")
    dst = PEERS[target] if isinstance(target, str) else target
    return _direction_allows(policies, src, dst, port, "Egress") and _direction_allows(
        policies, dst, src, port, "Ingress"
    )


def reachable(rendered: Render) -> set[tuple[str, str, int]]:
    ports = (8080, 8012, 9081, 9090, 443)
    targets = [*PEERS, "internet"]
    return {
        (source, target, port)
        for source in PEERS
        for target in targets
        for port in ports
        if source != target
        and allowed(rendered, source, target, port)
        and not (PEERS[source].namespace != NAMESPACE and target == "internet")
        and not (
            source in ("gateway", "activator", "prometheus", "stranger", "other-namespace")
            and target in ("gateway", "activator", "prometheus", "stranger", "other-namespace")
        )
    }


def test_standard_mode_opens_exactly_the_needed_paths(renders: dict[str, Render]) -> None:
    assert reachable(renders["defaults"]) == {
        ("gateway", "transformer", 8080),
        ("helm-test", "transformer", 8080),
        ("transformer", "predictor", 8080),  # no KServe agent (9081): the transformer logs
        ("transformer", "detector", 8080),  # the inference log (CloudEvents)
        ("transformer", "explainer", 8080),  # :explain, validated
        ("prometheus", "transformer", 8080),
        ("prometheus", "predictor", 8080),
        ("prometheus", "explainer", 8080),
        ("prometheus", "detector", 8080),
        ("predictor", "internet", 443),  # model download from Blob Storage
        ("explainer", "internet", 443),  # the same model, from Blob Storage
        ("detector", "internet", 443),  # reference model, Kubernetes API (Jobs)
        ("training", "internet", 443),  # Blob Storage, Entra ID
        # Pods outside this release have no policy here; they can send, but our pods refuse them (not listed).
        ("stranger", "internet", 443),
        ("stranger", "internet", 8080),
        ("stranger", "internet", 8012),
        ("stranger", "internet", 9081),
        ("stranger", "internet", 9090),
    }


def test_knative_mode_goes_through_gateway_and_activator(renders: dict[str, Render]) -> None:
    paths = reachable(renders["knative-canary"])
    for path in [
        ("gateway", "transformer", 8012),
        ("activator", "transformer", 8012),
        ("gateway", "predictor", 8012),
        ("activator", "predictor", 8012),
        ("activator", "predictor", 9090),  # Knative's autoscaler scrapes the queue-proxy
        ("transformer", "detector", 8080),
        ("prometheus", "predictor", 8080),
    ]:
        assert path in paths, path
    for path in [
        ("transformer", "predictor", 8080),
        ("gateway", "predictor", 8080),
        ("gateway", "detector", 8080),
        ("other-namespace", "transformer", 8012),
        ("predictor", "detector", 8080),
    ]:
        assert path not in paths, path


def test_without_logger_nothing_reaches_the_detector_but_prometheus(renders: dict[str, Render]) -> None:
    paths = reachable(renders["detector-off"])
    assert not [p for p in paths if p[1] == "detector" or p[0] == "detector"]
    assert ("transformer", "predictor", 9081) not in paths  # never a KServe agent
