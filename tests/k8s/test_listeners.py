"""Issue 26 on the cluster: every server listens on the narrowest address its callers reach, and believes
forwarding headers only from the proxies that stand in front of it.

Each rendered container is read back by its own server's argument parser (tests/k8s/servers.py), after KServe
appended its flags and the kubelet expanded ``$(POD_IP)`` (kube_rules). Where callers arrive and what each
proxy adds to ``X-Forwarded-For`` are mesh_rules' (Istio, Knative, each citing its source); who the server
then takes for the client is uvicorn's own ``ProxyHeadersMiddleware``, built from the server's listener
options.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from serving.edge import EdgeSettings, uvicorn_options
from tests.k8s import kserve_controller as kserve
from tests.k8s import kube_rules as kube
from tests.k8s import mesh_rules as mesh
from tests.k8s import servers
from tests.k8s.conftest import Render, parse, render
from tests.k8s.test_kserve_controller import stable

CLIENT = "203.0.113.9"  # a client on the internet
GATEWAY_POD = "10.244.2.15"  # the ingress gateway's pod
LOCAL_GATEWAY_POD = "10.244.2.16"  # knative-local-gateway's pod
ACTIVATOR_POD = "10.244.3.20"
POD_CIDR = "10.244.0.0/16"


def components(rendered: Render) -> list[tuple[str, dict[str, Any] | None]]:
    """Every server of the render: (component, its InferenceService or None for the detector)."""
    found: list[tuple[str, dict[str, Any] | None]] = []
    for isvc in rendered.of_kind("InferenceService"):
        found += [(name, isvc) for name in servers.SERVING if isvc["spec"].get(name)]
    if any(doc["metadata"]["name"].endswith("-detector") for doc in rendered.of_kind("Deployment")):
        found.append(("detector", None))
    return found


def test_every_server_listens_on_exactly_the_addresses_its_callers_reach(renders: dict[str, Render]) -> None:
    """mesh_rules.arrival_addresses: the pod IP for a Deployment (the Service, kubelet, Prometheus, the
    sidecar), the pod IP and 127.0.0.1 in Knative mode (the queue-proxy). The server's bind must cover each,
    and cover nothing else: a server on 0.0.0.0 in Standard mode also took connections on loopback (a
    port-forward, which dials localhost in the pod, past the sidecar's policies); on 127.0.0.1 (the servers'
    default) nothing reached it at all."""
    seen = 0
    for name, rendered in renders.items():
        for component, isvc in components(rendered):
            knative = component != "detector" and kserve.deployment_mode(isvc) == kserve.KNATIVE
            bind = servers.edge(rendered, component, isvc).bind_address
            covered = {
                arrival
                for arrival in ("pod IP", mesh.QUEUE_PROXY_UPSTREAM)
                if mesh.listener_covers(bind, arrival, kube.POD_IP)
            }
            assert covered == mesh.arrival_addresses(knative), (name, component, bind)
            seen += 1
    assert seen > 3 * len(renders)


def test_knative_revisions_take_the_listener_as_written(renders: dict[str, Render]) -> None:
    """fieldmask.go: Knative refuses a revision whose env reads the downward API (kubernetes.podspec-fieldref
    is off by default), which is why Knative-mode servers bind 0.0.0.0 rather than $(POD_IP)."""
    for name in ("knative-canary", "knative-edge-auth", "knative-explainer"):
        for isvc in renders[name].of_kind("InferenceService"):
            for component in servers.SERVING:
                if isvc["spec"].get(component):
                    assert mesh.knative_refusals(isvc["spec"][component]) == [], (name, component)


def client_seen(settings: EdgeSettings, peer: str, forwarded: str | None) -> str:
    """The client address the server's request handlers see, by uvicorn's own listener configuration."""
    import uvicorn

    seen: dict[str, Any] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen["client"] = scope["client"][0]

    config = uvicorn.Config(app, log_config=None, **uvicorn_options(settings))
    config.load()
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
    scope = {"type": "http", "client": (peer, 41000), "headers": headers, "scheme": "http"}
    asyncio.run(config.loaded_app(scope, None, None))
    return str(seen["client"])


def through(hops: list[mesh.Hop], settings: EdgeSettings, forged: str | None = None) -> str:
    peer, forwarded = mesh.arrive(CLIENT, hops, forged)
    return client_seen(settings, peer, forwarded)


@pytest.fixture(scope="module")
def trusting_the_pod_cidr(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Render]:
    """Both modes with servers.trustedProxies set to the cluster's pod CIDR (and the mesh on)."""
    directory = tmp_path_factory.mktemp("trusted")
    found = {}
    for mode in ("Standard", "Knative"):
        values = {
            "deploymentMode": mode,
            "servers": {"trustedProxies": [POD_CIDR]},
            "networkPolicy": {"istio": {"enabled": True}},
            "edge": {"enabled": True},
        }
        completed = render(values, directory, mode)
        assert completed.returncode == 0, completed.stderr
        found[mode] = Render(mode, completed.stdout, parse(completed.stdout))
    return found


def test_with_a_sidecar_the_limits_see_the_client_the_gateway_saw(renders: dict[str, Render]) -> None:
    """Standard mode with the mesh: the gateway appends the client's address, the sidecar forwards from
    127.0.0.6 and appends nothing; the servers trust 127.0.0.6, so the transformer's and the detector's
    per-client limits key on the client, and an X-Forwarded-For the client forged stays to the left,
    unread."""
    rendered = renders["edge"]
    for component in ("transformer", "detector"):
        settings = servers.edge(rendered, component)
        assert through([mesh.gateway(GATEWAY_POD), mesh.sidecar()], settings) == CLIENT, component
        assert through([mesh.gateway(GATEWAY_POD), mesh.sidecar()], settings, forged="198.51.100.1") == CLIENT
        # Any other peer (another pod) is believed about nothing.
        assert client_seen(settings, "10.244.9.9", "198.51.100.1") == "10.244.9.9", component


def test_without_the_mesh_no_forwarding_header_is_believed(renders: dict[str, Render]) -> None:
    """No sidecar, no Knative: the server's peer is the proxy in front (KServe's ingress gateway) and nothing
    is trusted, so a forged X-Forwarded-For changes nothing (all clients behind that gateway share its limits:
    servers.trustedProxies says who to believe)."""
    settings = servers.edge(renders["defaults"], "transformer")
    assert settings.trusted_proxies == ()
    assert through([mesh.gateway(GATEWAY_POD)], settings, forged="198.51.100.1") == GATEWAY_POD


def test_knative_trusts_its_queue_proxy_and_the_pod_cidr_when_told(
    renders: dict[str, Render], trusting_the_pod_cidr: dict[str, Render]
) -> None:
    """Knative mode: the queue-proxy (127.0.0.1) appends the address it got the request from, so it is always
    believed; the hops before it (the gateways, the activator) are pods of the cluster, believed only with
    servers.trustedProxies: without it every client counts as the local gateway (whose address the activator
    appended), with the pod CIDR the client is the one the edge gateway saw."""
    hops = [
        mesh.gateway(GATEWAY_POD),
        mesh.gateway(LOCAL_GATEWAY_POD),
        mesh.activator(ACTIVATOR_POD),
        mesh.sidecar(),
        mesh.queue_proxy(),
    ]
    plain = servers.edge(renders["knative-edge"], "transformer")
    assert through(hops, plain) == LOCAL_GATEWAY_POD
    told = servers.edge(trusting_the_pod_cidr["Knative"], "transformer")
    assert through(hops, told) == CLIENT
    assert through(hops, told, forged="198.51.100.1") == CLIENT
    # Standard mode with the pod CIDR: KServe's own ingress gateway without a sidecar in between is believed.
    standard = servers.edge(trusting_the_pod_cidr["Standard"], "transformer")
    assert through([mesh.gateway(GATEWAY_POD)], standard, forged="198.51.100.1") == CLIENT


def test_one_client_holds_at_most_half_the_transformers_places(
    renders: dict[str, Render], tmp_path: Path
) -> None:
    """--max_in_flight_per_client: the transformer's own default (half of --max_in_flight), stated in the
    chart; a value sets it, and one above resilience.maxInFlight is refused."""
    parsed = servers.parse(renders["defaults"], "transformer")
    assert parsed.edge.max_in_flight_per_client == parsed.max_in_flight // 2 == 64
    result = render({"transformer": {"limits": {"maxInFlightPerClient": 16}}}, tmp_path, "per-client")
    assert result.returncode == 0, result.stderr
    rendered = Render("per-client", result.stdout, parse(result.stdout))
    assert servers.edge(rendered, "transformer").max_in_flight_per_client == 16
    refused = render({"transformer": {"limits": {"maxInFlightPerClient": 500}}}, tmp_path, "too-many")
    assert refused.returncode != 0
    assert (
        "transformer.limits.maxInFlightPerClient (500) is above resilience.maxInFlight (128)"
        in refused.stderr
    )
    assert stable(rendered)["spec"]["transformer"]["serviceAccountName"].endswith("-transformer")
