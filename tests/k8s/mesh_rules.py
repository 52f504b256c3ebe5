"""What Istio, Knative Serving and net-istio do with a request to one of the chart's pods, encoded for tests.

The counterpart of ``kserve_controller.py``: no mesh, Knative or API server can run on these machines, so the
rules that decide whether a request reaches a pod are written down here, each next to the source it encodes,
read at:

- istio/api b8f8791d (``security/v1beta1/authorization_policy.proto``, ``peer_authentication.proto``);
- knative/serving 98e5ef90 (activator, autoscaler, queue-proxy, the revision and route reconcilers);
- knative/net-istio b4a4e5e7 (the VirtualServices it writes for a Knative ingress).

The chart tests send the requests Knative's own components make (:func:`activator_probe`,
:func:`autoscaler_scrape`, ...) and the clients' requests through the rendered AuthorizationPolicies,
RequestAuthentications and PeerAuthentications (:func:`authorize`), next to the NetworkPolicies
(``test_network_policies.allowed``). A field of a policy this module does not understand raises, so a new kind
of rule in the chart cannot pass unread.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

# ---- Knative Serving ---------------------------------------------------------------------------------

# pkg/networking/constants.go: BackendHTTPPort (the queue-proxy: requests from the activator, the gateways and
# mesh callers), AutoscalingQueueMetricsPort (scraped by the autoscaler), UserQueueMetricsPort.
QUEUE_PORT = 8012
AUTOSCALER_METRICS_PORT = 9090
USER_METRICS_PORT = 9091
# knative.dev/networking pkg/http/header: the probe header, its value for the queue-proxy (queue.Name), and
# the activator's User-Agent; pkg/http: HealthCheckPath.
PROBE_HEADER = "K-Network-Probe"
QUEUE_PROBE_VALUE = "queue"
ACTIVATOR_USER_AGENT = "Knative-Activator-Probe"
HEALTH_CHECK_PATH = "/healthz"
PROTOBUF = "application/protobuf"
# knative.dev/networking pkg/apis/networking: VisibilityLabelKey; serving.VisibilityClusterLocal.
VISIBILITY_LABEL = "networking.knative.dev/visibility"
CLUSTER_LOCAL = "cluster-local"
# pkg/queue/sharedmain/main.go (`target := net.JoinHostPort("127.0.0.1", env.UserPort)`): the queue-proxy
# forwards every request to the user container on loopback; pkg/queue/health/probe.go dials 127.0.0.1 for the
# user container's readiness probe, which pkg/reconciler/revision/resources/deploy.go (makeContainer) takes
# away from the kubelet. The liveness probe stays with the kubelet, on the pod IP and the user port (deploy.go
# rewriteUserLivenessProbe).
QUEUE_PROXY_UPSTREAM = "127.0.0.1"


@dataclass(frozen=True)
class Request:
    """One HTTP request as a pod's sidecar sees it.

    Attributes:
        port: The destination port of the connection (Istio's ``Operation.ports``).
        method: HTTP method.
        path: Request path (no query).
        headers: Request headers (names are case-insensitive).
        claims: The claims of a JWT the workload's RequestAuthentication accepted; ``None`` without a token.
    """

    port: int
    method: str = "GET"
    path: str = "/"
    headers: Mapping[str, str] = field(default_factory=dict)
    claims: Mapping[str, Any] | None = None

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers.items() if k.lower() == name.lower()), None)


@dataclass(frozen=True)
class Caller:
    """Who sends a request: where it runs and whether it speaks Istio mutual TLS.

    Attributes:
        namespace: The caller's namespace.
        service_account: Its service account (its mTLS identity when ``mesh``).
        mesh: The caller has an Istio sidecar (or is a gateway of the mesh): the connection is mutual TLS and
            carries the identity ``cluster.local/ns/NAMESPACE/sa/SERVICE_ACCOUNT``. Otherwise plain text.
    """

    namespace: str
    service_account: str = "default"
    mesh: bool = False

    @property
    def principal(self) -> str | None:
        return f"cluster.local/ns/{self.namespace}/sa/{self.service_account}" if self.mesh else None


def activator_probe() -> Request:
    """The activator's health probe of each revision pod.

    pkg/activator/net/revision_backends.go ``probe()``: ``GET http://POD_IP:8012/healthz`` with
    ``K-Network-Probe: queue`` and ``User-Agent: Knative-Activator-Probe``; the pod counts as healthy only on
    a 200 whose body is ``queue`` (``ExpectsStatusCodes([]int{http.StatusOK})``, ``ExpectsBody(queue.Name)``),
    so a 403 from an AuthorizationPolicy keeps it out of the activator's healthy set for good. The probe is
    plain text unless the activator itself has a sidecar.
    """
    return Request(
        QUEUE_PORT,
        "GET",
        HEALTH_CHECK_PATH,
        {PROBE_HEADER: QUEUE_PROBE_VALUE, "User-Agent": ACTIVATOR_USER_AGENT},
    )


def autoscaler_scrape() -> Request:
    """The autoscaler's scrape of each revision pod's queue-proxy statistics.

    pkg/autoscaler/metrics/stats_scraper.go: ``portAndPath`` is ``9090/metrics`` and ``scrapePods`` sends
    ``GET http://POD_IP:9090/metrics`` (http_scrape_client.go ``Do`` adds ``Accept: application/protobuf``);
    with meshMode ``auto`` it falls back to the Service only when direct scraping fails in a way a mesh could
    cause. Plain text unless the autoscaler has a sidecar.
    """
    return Request(AUTOSCALER_METRICS_PORT, "GET", "/metrics", {"Accept": PROTOBUF})


def kubelet_queue_probe() -> Request:
    """The kubelet's readiness probe of the queue-proxy (only when Istio does not rewrite probes).

    pkg/reconciler/revision/resources/queue.go: ``HTTPGet`` on the serving port with ``K-Network-Probe:
    queue``, path unset (``/``). With Istio's probe rewriting (the default) the kubelet asks the sidecar agent
    on 15020 instead, which no policy sees.
    """
    return Request(QUEUE_PORT, "GET", "/", {PROBE_HEADER: QUEUE_PROBE_VALUE})


def route_is_cluster_local(labels: Mapping[str, str]) -> bool:
    """Whether a Knative Service (and the Route made from it) has no public domain.

    pkg/reconciler/route/config/domain.go ``LookupDomainForLabels``: the label
    ``networking.knative.dev/visibility: cluster-local`` gives the route the cluster's domain only
    (``svc.cluster.local``), so the ingress gateway serves none of its hosts;
    pkg/reconciler/service/resources/route.go ``MakeRoute`` copies the Knative Service's labels to its Route.
    """
    return labels.get(VISIBILITY_LABEL) == CLUSTER_LOCAL


# ---- net-istio ---------------------------------------------------------------------------------------


# config/203-local-gateway.yaml: the knative-local-gateway Service's port 80 targets the gateway pods' 8081.
LOCAL_GATEWAY_PORT = 8081


def knative_hops(caller: str, target: str, *, sidecar: bool) -> list[tuple[str, str, int]]:
    """The connections (source, destination, port) a call from ``caller`` to a Knative component makes.

    knative/net-istio pkg/reconciler/ingress/resources/virtual_service.go ``MakeMeshVirtualService``: every
    Knative ingress also gets a VirtualService bound to the ``mesh`` gateway for its cluster-local hosts,
    whose destinations are the revision's Services (``makeVirtualServiceRoute``: ``split.ServiceName``, port
    ``split.ServicePort``). A caller with a sidecar resolves those endpoints itself: straight to the
    revision's pods on 8012, or to the activator while it is in the path (scale from zero, or the default
    target-burst-capacity), which forwards to the pods. Without a sidecar the call follows the Knative
    Service's ExternalName to the local gateway (``gateway`` here), which sends it to the pods or the
    activator.
    """
    through_activator = [("activator", target, QUEUE_PORT)]
    if sidecar:
        return [(caller, target, QUEUE_PORT), (caller, "activator", QUEUE_PORT), *through_activator]
    return [
        (caller, "gateway", LOCAL_GATEWAY_PORT),
        ("gateway", target, QUEUE_PORT),
        ("gateway", "activator", QUEUE_PORT),
        *through_activator,
    ]


# ---- Istio: PeerAuthentication, RequestAuthentication, AuthorizationPolicy ----------------------------


def _selects(policy: dict[str, Any], namespace: str, labels: Mapping[str, str]) -> bool:
    """A policy applies to the workloads of its namespace that its selector matches (none: all of them)."""
    if policy["metadata"]["namespace"] != namespace:
        return False
    selector = ((policy.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return dict(selector).items() <= dict(labels).items()


def _match(pattern: str, value: str | None) -> bool:
    """authorization_policy.proto, ``Rule``: exact, prefix (``abc*``), suffix (``*abc``), presence (``*``)."""
    if value is None or value == "":
        return False
    if pattern == "*":
        return True
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    if pattern.startswith("*"):
        return value.endswith(pattern[1:])
    return value == pattern


def _any(patterns: list[str], value: str | None) -> bool:
    return any(_match(str(pattern), value) for pattern in patterns)


def _request_principal(request: Request) -> str | None:
    """``request.auth.principal``: ``ISS/SUB`` of an accepted JWT (authorization_policy.proto ``Source``)."""
    if request.claims is None:
        return None
    return f"{request.claims.get('iss', '')}/{request.claims.get('sub', '')}"


def _source_matches(source: dict[str, Any], caller: Caller, request: Request) -> bool:
    """authorization_policy.proto ``Source``: every field set must match; ``principals`` and ``namespaces``
    are read from the peer certificate ("This field requires mTLS enabled"), so a plain-text caller matches
    none of them."""
    for key, patterns in source.items():
        if key == "principals":
            if not _any(patterns, caller.principal):
                return False
        elif key == "namespaces":
            if not (caller.mesh and _any(patterns, caller.namespace)):
                return False
        elif key == "requestPrincipals":
            if not _any(patterns, _request_principal(request)):
                return False
        else:
            raise NotImplementedError(f"mesh_rules does not evaluate Source.{key}")
    return True


def _operation_matches(operation: dict[str, Any], request: Request) -> bool:
    """authorization_policy.proto ``Operation``: ``ports`` of the connection, ``methods``, ``paths``."""
    for key, patterns in operation.items():
        if key == "ports":
            if str(request.port) not in [str(p) for p in patterns]:
                return False
        elif key == "methods":
            if request.method not in patterns:
                return False
        elif key == "paths":
            if not _any(patterns, request.path):
                return False
        else:
            raise NotImplementedError(f"mesh_rules does not evaluate Operation.{key}")
    return True


def _condition_holds(condition: dict[str, Any], request: Request) -> bool:
    """authorization_policy.proto ``Condition`` with the attributes the chart uses."""
    key = condition["key"]
    if set(condition) - {"key", "values"}:
        raise NotImplementedError(f"mesh_rules does not evaluate {sorted(condition)}")
    if key.startswith("request.auth.claims[") and key.endswith("]"):
        if request.claims is None:
            return False
        value = request.claims.get(key[len("request.auth.claims[") : -1])
        values = value if isinstance(value, list) else [value]
        return any(_any(condition["values"], str(item)) for item in values if item is not None)
    if key.startswith("request.headers[") and key.endswith("]"):
        return _any(condition["values"], request.header(key[len("request.headers[") : -1]))
    raise NotImplementedError(f"mesh_rules does not evaluate the condition {key}")


def rule_matches(rule: dict[str, Any], caller: Caller, request: Request) -> bool:
    """authorization_policy.proto ``Rule``: "A match occurs when at least one source, one operation and all
    conditions matches the request. An empty rule is always matched." """
    sources = [entry["source"] for entry in rule.get("from") or []]
    operations = [entry["operation"] for entry in rule.get("to") or []]
    if sources and not any(_source_matches(source, caller, request) for source in sources):
        return False
    if operations and not any(_operation_matches(operation, request) for operation in operations):
        return False
    return all(_condition_holds(condition, request) for condition in rule.get("when") or [])


@dataclass(frozen=True)
class Decision:
    """What the workload's sidecar does with a request: ``allowed``, else the reason it refuses."""

    allowed: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.allowed


def authorize(
    documents: list[dict[str, Any]],
    namespace: str,
    labels: Mapping[str, str],
    caller: Caller,
    request: Request,
) -> Decision:
    """Whether the sidecar of a pod (``namespace``, ``labels``) lets ``caller``'s ``request`` through.

    In order: a ``STRICT`` PeerAuthentication selecting the pod refuses a plain-text connection before any
    policy (peer_authentication.proto: "Connection is an mTLS tunnel (TLS with client cert must be
    presented)"); then authorization_policy.proto's evaluation: a matching DENY policy denies; with no ALLOW
    policy for the workload the request is allowed; otherwise it is allowed only if some ALLOW rule matches.
    The request's ``claims`` stand for a token the client sent; they count only when a RequestAuthentication
    selecting the workload names their issuer (request_authentication.proto: a token no rule of the workload
    accepts is refused, 401, and without any rule the request carries no ``request.auth``).
    """
    if request.claims is not None:
        issuers = {
            rule.get("issuer")
            for policy in documents
            if policy.get("kind") == "RequestAuthentication" and _selects(policy, namespace, labels)
            for rule in policy["spec"].get("jwtRules") or []
        }
        if not issuers:
            request = replace(request, claims=None)
        elif request.claims.get("iss") not in issuers:
            return Decision(False, "RequestAuthentication: a token of another issuer is refused (401)")
    for policy in documents:
        if policy.get("kind") != "PeerAuthentication" or not _selects(policy, namespace, labels):
            continue
        mode = (policy["spec"].get("mtls") or {}).get("mode")
        port_mode = ((policy["spec"].get("portLevelMtls") or {}).get(str(request.port)) or {}).get("mode")
        if (port_mode or mode) == "STRICT" and not caller.mesh:
            return Decision(
                False, f"PeerAuthentication {policy['metadata']['name']} is STRICT: plain text refused"
            )
    policies = [
        p for p in documents if p.get("kind") == "AuthorizationPolicy" and _selects(p, namespace, labels)
    ]
    for policy in policies:
        action = policy["spec"].get("action", "ALLOW")
        if action not in ("ALLOW", "DENY"):
            raise NotImplementedError(f"mesh_rules does not evaluate action {action}")
        if action == "DENY" and any(
            rule_matches(r, caller, request) for r in policy["spec"].get("rules") or []
        ):
            return Decision(False, f"DENY policy {policy['metadata']['name']}")
    allows = [p for p in policies if p["spec"].get("action", "ALLOW") == "ALLOW"]
    if not allows:
        return Decision(True)
    for policy in allows:
        if any(rule_matches(rule, caller, request) for rule in policy["spec"].get("rules") or []):
            return Decision(True)
    names = ", ".join(p["metadata"]["name"] for p in allows)
    return Decision(False, f"no rule of the ALLOW policies {names} matches: 403")


# ---- Istio: where the sidecar hands inbound traffic to the application --------------------------------

# Istio >= 1.10 ("Upcoming networking changes in Istio 1.10", istio.io blog 2021-04-15; analyzer IST0143
# LocalhostListener): the sidecar forwards inbound traffic to the application on the pod's interface (eth0),
# as Kubernetes would, no longer to loopback; an application bound to 127.0.0.1 gets no traffic from other
# pods.
SIDECAR_INBOUND_TARGET = "pod IP"
# istio/istio 86c9f01f pilot/pkg/networking/core/listener_address.go (InboundPassthroughBindIpv4, "6 is the
# magical number for inbound: 15006, 127.0.0.6, ::6") and cluster_builder.go (the inbound cluster's
# UpstreamBindConfig when the application does not listen on localhost): the sidecar's connections to the
# application come from this address. The rewritten probes too (pilot-agent/status/server.go dials the pod IP,
# appProbersDestination, from upstreamLocalAddress), so they bypass the inbound listener and its policies.
INBOUND_PASSTHROUGH_SOURCE = "127.0.0.6"
# pkg/config/mesh/mesh.go DefaultProxyConfig: TerminationDrainDuration 5 s; pkg/envoy/agent.go terminate(): on
# SIGTERM pilot-agent drains, waits terminationDrainDuration, then stops Envoy. A classic (not native) sidecar
# has no preStop, so it gets SIGTERM when the pod is deleted, beside the application's preStop.
TERMINATION_DRAIN_SECONDS = 5.0
PROXY_CONFIG_ANNOTATION = "proxy.istio.io/config"


def sidecar_drain_seconds(pod_annotations: Mapping[str, str]) -> float:
    """How long a classic sidecar serves after the pod's deletion: ``terminationDrainDuration`` of the pod's
    ``proxy.istio.io/config`` annotation (a ProxyConfig in YAML or JSON), else the mesh default."""
    import yaml

    config = yaml.safe_load(pod_annotations.get(PROXY_CONFIG_ANNOTATION) or "{}") or {}
    duration = str(config.get("terminationDrainDuration", f"{TERMINATION_DRAIN_SECONDS:g}s"))
    if not duration.endswith("s") or duration.endswith("ms"):
        raise NotImplementedError(f"mesh_rules reads durations in seconds, not {duration}")
    return float(duration[:-1])


# ---- Where requests reach a container, and who they seem to come from -----------------------------------


def arrival_addresses(knative: bool) -> set[str]:
    """The addresses inside the pod that the container's callers connect to (what its listener must cover).

    Standard mode (a Deployment), and any pod outside Knative: the Service's endpoints, the kubelet's probes
    ("Host name to connect to, defaults to the pod IP", core/v1 HTTPGetAction), Prometheus (the pod's address
    as target) and the Istio sidecar (:data:`SIDECAR_INBOUND_TARGET`) all come to the pod IP. Knative mode
    adds loopback: the queue-proxy forwards every request to ``127.0.0.1:PORT`` and probes readiness there
    (:data:`QUEUE_PROXY_UPSTREAM`), while liveness and Prometheus still come to the pod IP.
    """
    return {"pod IP", QUEUE_PROXY_UPSTREAM} if knative else {"pod IP"}


def listener_covers(bind_address: str, arrival: str, pod_ip: str) -> bool:
    """Whether a socket bound to ``bind_address`` accepts a connection to ``arrival`` ("pod IP" or an
    address)."""
    target = pod_ip if arrival == "pod IP" else arrival
    return bind_address in ("0.0.0.0", target)


@dataclass(frozen=True)
class Hop:
    """A proxy on a request's way to the container.

    Attributes:
        name: What it is.
        address: The address the next hop sees the connection come from.
        appends: Whether it appends the address it got the request from to ``X-Forwarded-For``.
    """

    name: str
    address: str
    appends: bool


def gateway(address: str) -> Hop:
    """An Istio gateway: pilot/pkg/networking/core/gateway.go builds its HTTP connection manager with
    ``useRemoteAddress: true`` (and ``xffNumTrustedHops`` 0), so Envoy appends the downstream address."""
    return Hop("gateway", address, appends=True)


def sidecar() -> Hop:
    """The pod's own sidecar, inbound: listener_inbound.go ``useRemoteAddress: false`` (Envoy leaves
    ``X-Forwarded-For`` as it came), connecting from :data:`INBOUND_PASSTHROUGH_SOURCE`."""
    return Hop("sidecar", INBOUND_PASSTHROUGH_SOURCE, appends=False)


def activator(address: str) -> Hop:
    """Knative's activator: pkg/http/proxy.go ``NewHeaderPruningReverseProxy`` is a Go
    ``httputil.ReverseProxy`` with a ``Director``, which appends the client's address (the connection's) to
    ``X-Forwarded-For``."""
    return Hop("activator", address, appends=True)


def queue_proxy() -> Hop:
    """Knative's queue-proxy: the same reverse proxy (pkg/queue/sharedmain/main.go ``buildProxyHandler``), to
    :data:`QUEUE_PROXY_UPSTREAM`."""
    return Hop("queue-proxy", QUEUE_PROXY_UPSTREAM, appends=True)


def arrive(client: str, hops: list[Hop], forged: str | None = None) -> tuple[str, str | None]:
    """The peer address and ``X-Forwarded-For`` a request from ``client`` arrives with after ``hops``.

    Args:
        client: The client's own address.
        hops: The proxies in order, first the one the client connects to.
        forged: An ``X-Forwarded-For`` the client sends itself.
    """
    forwarded = [forged] if forged else []
    previous = client
    for hop in hops:
        if hop.appends:
            forwarded.append(previous)
        previous = hop.address
    return previous, ", ".join(forwarded) or None


# ---- Knative: what a revision may carry, and how its pods stop ---------------------------------------

# pkg/queue/sharedmain/main.go drainSleepDuration: on SIGTERM the queue-proxy answers probes 503 and keeps
# serving until no request came for this long (knative.dev/pkg network/handlers/drain.go Drain: "blocks until
# QuietPeriod has elapsed since the last request").
DRAIN_SLEEP_SECONDS = 30.0
# pkg/apis/config/defaults.go DefaultRevisionTimeoutSeconds: a revision's timeoutSeconds, unless the
# InferenceService component sets `timeout`; revision/resources/deploy.go BuildPodSpec makes it the pod's
# terminationGracePeriodSeconds.
DEFAULT_REVISION_TIMEOUT_SECONDS = 300
# pkg/networking/constants.go QueueAdminPort, pkg/queue/constants.go RequestQueueDrainPath: deploy.go
# (userLifecycle, makeContainer) gives every user container this preStop, whatever the spec said, so the
# container gets SIGTERM only once the queue-proxy has drained.
QUEUE_DRAIN_PRE_STOP = {"httpGet": {"port": 8022, "path": "/wait-for-drain"}}


def knative_refusals(component: Mapping[str, Any]) -> list[str]:
    """The fields of an InferenceService component that Knative's webhook refuses in the revision it becomes.

    pkg/apis/serving/fieldmask.go: ``ContainerMask`` drops ``lifecycle``, ``PodSpecMask`` drops
    ``terminationGracePeriodSeconds``; ``EnvVarSourceMask`` keeps ``fieldRef`` only with the
    ``kubernetes.podspec-fieldref`` feature (off by default); k8s_validation.go ``CheckDisallowedFields``
    turns each dropped field into an error.
    """
    refused = []
    if "terminationGracePeriodSeconds" in component:
        refused.append("terminationGracePeriodSeconds")
    for container in component.get("containers") or []:
        if "lifecycle" in container:
            refused.append(f"{container['name']}.lifecycle")
        for item in container.get("env") or []:
            if "fieldRef" in (item.get("valueFrom") or {}):
                refused.append(f"{container['name']}.env[{item['name']}].valueFrom.fieldRef")
    return refused


def knative_stop(component: Mapping[str, Any]) -> tuple[float, float]:
    """(seconds until the user container gets SIGTERM at the earliest, the pod's grace period) in Knative
    mode: the queue-proxy's drain comes first, and the grace period is the revision's timeout."""
    return DRAIN_SLEEP_SECONDS, float(component.get("timeout", DEFAULT_REVISION_TIMEOUT_SECONDS))
