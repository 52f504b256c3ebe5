"""What KServe's controller, webhooks and Knative do with an InferenceService, encoded for tests.

No Kubernetes API server or KServe controller can run on these machines, so the rules that decide whether the
chart works on a real cluster are written down here, each next to the KServe (or Knative) file it encodes,
read at kserve/kserve commit aaac4e294dae2c7b1aa1886447793f3aa1c30912 (the commit of
``../shared/kserve-crds/``).
The chart tests apply them to every rendered InferenceService, and the mock API server of the rollout tests
applies :func:`admit` to every write, so it refuses what KServe's validating webhook refuses.

Only the rules that can touch this project's objects are encoded (custom containers, Standard and Knative
modes, HPA and KPA autoscaling, named canaries, the request logger); each raises or returns what KServe does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from housing.rollout.objects import MODEL_SERVER_FIELDS
from tests.k8s.mesh_rules import VISIBILITY_LABEL as KNATIVE_VISIBILITY
from tests.k8s.mesh_rules import route_is_cluster_local

STANDARD = "Standard"
KNATIVE = "Knative"
DEPLOYMENT_MODE = "serving.kserve.io/deploymentMode"
AUTOSCALER_CLASS = "serving.kserve.io/autoscalerClass"
KNATIVE_AUTOSCALER_CLASS = "autoscaling.knative.dev/class"

# pkg/apis/serving/v1beta1/inference_service_validation.go: IsvcNameFmt.
ISVC_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
# pkg/constants/constants.go: AutoscalerAllowedClassList, ...HPAMetricsList, ...KPAMetricsList.
AUTOSCALER_CLASSES = ("hpa", "external", "keda", "none")
HPA_METRICS = ("cpu", "memory")
KPA_METRICS = ("concurrency", "rps")
# pkg/validation/env_policy.go: DefaultBlockedEnvVars.
BLOCKED_ENV = ("PYTHONPATH",)
# pkg/apis/serving/v1beta1/predictor.go: the fields that name a model server (any one makes it not custom);
# the rollout command reads the same list from the same file.
FRAMEWORKS = MODEL_SERVER_FIELDS
LOG_MODES = ("all", "request", "response")

# pkg/constants/constants.go.
AGENT_PORT = 9081  # InferenceServiceDefaultAgentPort: the agent (logger, batcher) in front of the container
SERVICE_PORT = 80  # CommonDefaultHttpPort: every component Service listens here
ENDPOINT_LABEL = "endpoint"  # KServiceEndpointLabel: the agent's --endpoint comes from this pod label
COMPONENT_LABEL = "component"  # KServiceComponentLabel
ISVC_LABEL = "serving.kserve.io/inferenceservice"  # InferenceServicePodLabelKey
# NetworkVisibility: read by Standard mode's Ingress and HTTPRoute reconcilers; VisibilityLabel (Knative's own
# label, networking.knative.dev/visibility) by Knative mode's; ClusterLocalVisibility is the value of both.
NETWORK_VISIBILITY = "networking.kserve.io/visibility"
CLUSTER_LOCAL = "cluster-local"
# RevisionTemplateLabelDisallowedList (the default ServiceLabelDisallowedList, configmap.go): isvc labels
# KServe keeps off a Knative revision template (Knative refuses the visibility label there).
REVISION_TEMPLATE_DISALLOWED = (KNATIVE_VISIBILITY,)
# ExplainPrefix: the path an explain route matches.
EXPLAIN_PATH = re.compile(r"^/v1/models/[\w-]+:explain$")

# Knative Serving (knative.dev/serving, pkg/reconciler/revision/resources/deploy.go and queue.go): the user
# container's port is renamed; the mesh, activator and autoscaler use the queue-proxy's ports.
KNATIVE_USER_PORT_NAME = "user-port"
KNATIVE_QUEUE_PORT = 8012  # requests from the activator and the gateway
KNATIVE_AUTOSCALER_METRICS_PORT = 9090  # scraped by the autoscaler in the knative-serving namespace
KNATIVE_REVISION_SUFFIX = "-00001"  # revision names: KSVC-NNNNN, also a label value
MAX_NAME = 63  # DNS-1035 label: Service names and label values


class AdmissionError(ValueError):
    """What KServe's validating webhook answers when it refuses an InferenceService."""


def deployment_mode(isvc: dict[str, Any]) -> str:
    """The mode the annotation asks for, as the validator compares it (the raw annotation value)."""
    return str(isvc.get("metadata", {}).get("annotations", {}).get(DEPLOYMENT_MODE, STANDARD))


def _containers(component: dict[str, Any] | None) -> list[dict[str, Any]]:
    return list((component or {}).get("containers") or [])


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: str(item.get("value", "")) for item in container.get("env") or []}


def storage_uri(predictor: dict[str, Any]) -> str | None:
    """``GetStorageUri`` of a predictor: a framework's storageUri, else a custom container's STORAGE_URI env.

    pkg/apis/serving/v1beta1/predictor_custom.go (``GetStorageUri`` reads only the env var) and
    predictor_model.go.
    """
    for framework in FRAMEWORKS:
        if isinstance(predictor.get(framework), dict):
            return predictor[framework].get("storageUri")
    # Only the container named kserve-container is read (predictor_custom.go GetStorageUri).
    for container in _containers(predictor):
        if container.get("name") == "kserve-container":
            return _env(container).get("STORAGE_URI")
    return None


def _implementations(component: dict[str, Any], *, predictor: bool) -> int:
    frameworks = sum(1 for name in FRAMEWORKS if predictor and component.get(name) is not None)
    return frameworks or (1 if _containers(component) else 0)


def _check_extension(name: str, spec: dict[str, Any], annotations: dict[str, str]) -> None:
    # component.go: ComponentExtensionSpec.Validate (replicas, logger) ...
    minimum, maximum = spec.get("minReplicas", 1), spec.get("maxReplicas", 0)
    if minimum < 0 or maximum < 0:
        raise AdmissionError(f"{name}: replicas must not be negative")
    if maximum != 0 and minimum > maximum:
        raise AdmissionError(f"{name}: MinReplicas cannot be greater than MaxReplicas")
    logger = spec.get("logger")
    if logger is not None and logger.get("mode", "all") not in LOG_MODES:
        raise AdmissionError(f"{name}: invalid logger type")
    # ... and inference_service_validation.go: validateAutoScalingCompExtension.
    metric, target = spec.get("scaleMetric"), spec.get("scaleTarget")
    if annotations.get(DEPLOYMENT_MODE, STANDARD) == STANDARD:
        if annotations.get(AUTOSCALER_CLASS) != "hpa":
            return  # only the hpa and keda classes are checked in Standard mode
        metric = metric or "cpu"
        if metric not in HPA_METRICS:
            raise AdmissionError(f"[{metric}] is not a supported metric")
        # validateScalingHPACompExtension: `metric == MetricCPU && target < 1 || target > 100`; Go's
        # precedence refuses > 100 for memory too, and the HPA reads a memory target as AverageUtilization, a
        # percentage of the request (reconcilers/hpa/hpa_reconciler.go getHPAMetrics).
        if target is not None and ((metric == "cpu" and target < 1) or target > 100):
            raise AdmissionError("the target utilization percentage should be a [1-100] integer")
        return
    if annotations.get(KNATIVE_AUTOSCALER_CLASS, "").endswith("hpa.autoscaling.knative.dev"):
        return
    # validateScalingKPACompExtension: Knative rolls its revisions itself.
    if spec.get("deploymentStrategy") is not None:
        raise AdmissionError("customizing deploymentStrategy is only supported for raw deployment mode")
    metric = metric or "concurrency"
    if metric not in KPA_METRICS:
        raise AdmissionError(f"[{metric}] is not a supported metric")
    if metric == "rps" and target is not None and target < 1:
        raise AdmissionError("the target for rps should be greater than 1")


def _check_canaries(isvc: dict[str, Any]) -> None:
    """inference_service_validation.go: validateCanarySpecs."""
    spec = isvc["spec"]
    canaries = spec.get("canary") or []
    if not canaries:
        return
    if deployment_mode(isvc) != STANDARD:
        raise AdmissionError("canary is only supported in Standard deployment mode")
    stable = spec["predictor"]
    if storage_uri(stable) is None and stable.get("model") is None:
        raise AdmissionError(
            "canary requires a stable predictor with a model "
            "(multi-model serving is not supported with canary)"
        )
    names: set[str] = set()
    total = 0
    for index, canary in enumerate(canaries):
        predictor = canary.get("predictor", {})
        name = predictor.get("name", "")
        if not name:
            raise AdmissionError(f"canary[{index}] predictor.name is required")
        if name in names:
            raise AdmissionError(f"canary predictor.name {name!r} is duplicated")
        names.add(name)
        if name == stable.get("name"):
            raise AdmissionError(f"canary predictor.name {name!r} conflicts with stable predictor name")
        percent = canary.get("trafficPercent", 0)
        if not 0 <= percent <= 100:
            raise AdmissionError(f"canary {name!r} trafficPercent must be between 0 and 100, got {percent}")
        total += percent
        for field in ("maxReplicas", "scaleTarget", "scaleMetric", "autoScaling"):
            if predictor.get(field):
                raise AdmissionError(f"canary {name!r} must not set {field} (canary uses fixed replicas)")
        if predictor.get("minReplicas", 0) > stable.get("minReplicas", 1):
            raise AdmissionError(f"canary {name!r} minReplicas must not exceed stable predictor minReplicas")
    if total > 100:
        raise AdmissionError(f"sum of canary trafficPercent values ({total}) must be <= 100")


def admit(isvc: dict[str, Any], old: dict[str, Any] | None = None) -> None:
    """Refuse what KServe's validating webhook refuses (ValidateCreate, or ValidateUpdate with ``old``).

    Raises:
        AdmissionError: With KServe's message.
    """
    name = isvc.get("metadata", {}).get("name", "")
    annotations = isvc.get("metadata", {}).get("annotations", {}) or {}
    spec = isvc.get("spec", {})
    if old is not None:  # validateDeploymentMode: only once the controller recorded a mode in the status
        recorded = old.get("status", {}).get("deploymentMode")
        wanted = annotations.get(DEPLOYMENT_MODE)
        if recorded and wanted is not None and wanted != recorded:
            raise AdmissionError(
                f"update rejected: deploymentMode cannot be changed from {recorded!r} to {wanted!r}"
            )
    if not ISVC_NAME.match(name):
        raise AdmissionError(
            f"the InferenceService {name!r} is invalid: a InferenceService name must consist of "
            f"lower case alphanumeric characters or '-', and must start with alphabetical character"
        )
    if AUTOSCALER_CLASS in annotations and annotations[AUTOSCALER_CLASS] not in AUTOSCALER_CLASSES:
        raise AdmissionError(f"[{annotations[AUTOSCALER_CLASS]}] is not a supported autoscaler class type")
    components = {key: spec.get(key) for key in ("predictor", "transformer", "explainer") if spec.get(key)}
    for component_name, component in components.items():
        for container in _containers(component):
            blocked = set(_env(container)) & set(BLOCKED_ENV)
            if blocked:
                raise AdmissionError(
                    f"setting {blocked.pop()} in container {container.get('name')!r} "
                    "is not allowed for security reasons"
                )
        if _implementations(component, predictor=component_name == "predictor") != 1:
            raise AdmissionError(f"exactly one {component_name} implementation must be set")
        _check_extension(component_name, component, annotations)
        if component_name == "predictor":
            protocol = _env(_containers(component)[0]).get("PROTOCOL") if _containers(component) else None
            if protocol is not None and protocol not in ("v1", "v2"):
                raise AdmissionError(f"invalid protocol {protocol}. Must be one of [v1, v2]")
    _check_canaries(isvc)


@dataclass(frozen=True)
class ComponentService:
    """The Service KServe creates for one component in Standard mode, and who answers behind it."""

    name: str
    port: int
    target_port: int
    agent: bool  # KServe's agent (logger or batcher) sits between the Service and the container


def component_service(isvc: dict[str, Any], component: str = "predictor") -> ComponentService:
    """The Standard-mode Service of a component.

    reconcilers/service/service_reconciler.go ``createDefaultSvc``: port 80 to the first container's first
    port; with a ``logger`` or ``batcher`` on the component, the target becomes the agent's port 9081 instead.
    components/predictor.go: the Service is ``ISVC-predictor`` (``constants.PredictorServiceName``).
    """
    spec = isvc["spec"][component]
    ports = (_containers(spec) or [{}])[0].get("ports") or [{"containerPort": 8080}]
    agent = spec.get("logger") is not None or spec.get("batcher") is not None
    return ComponentService(
        f"{isvc['metadata']['name']}-{component}",
        SERVICE_PORT,
        AGENT_PORT if agent else ports[0]["containerPort"],
        agent,
    )


def agent_flags(isvc: dict[str, Any], component: str, pod_labels: dict[str, str]) -> dict[str, str] | None:
    """The logger flags KServe's agent injector gives the agent, or ``None`` when no agent is injected.

    pkg/webhook/admission/pod/agent_injector.go: the agent is injected for a ``logger`` (or batcher); its
    ``--endpoint`` is the pod label ``endpoint`` and ``--component`` the pod label ``component``, empty when
    the label is absent. Its CloudEvents ids are the incoming ``Ce-Id`` header or a fresh UUID
    (pkg/logger/handler.go ``getOrCreateID``).
    """
    logger = isvc["spec"][component].get("logger")
    if logger is None:
        return None
    return {
        "log-url": logger.get("url", ""),
        "endpoint": pod_labels.get(ENDPOINT_LABEL, ""),
        "component": pod_labels.get(COMPONENT_LABEL, ""),
        "inference-service": pod_labels.get(ISVC_LABEL, ""),
    }


def component_labels(isvc: dict[str, Any], component: str) -> dict[str, str]:
    """Labels of a component's workload: the InferenceService's, then the component's, then KServe's.

    components/predictor.go and transformer.go: ``utils.Union(isvc.Labels, component.Labels, {...})``; in
    Knative mode they label the Knative Service itself (reconcilers/knative/ksvc_reconciler.go
    ``createKnativeService``: ``ObjectMeta.Labels: componentMeta.Labels``), and Knative copies them to its
    Route.
    """
    labels = dict(isvc.get("metadata", {}).get("labels") or {})
    labels.update(isvc["spec"][component].get("labels") or {})
    labels.update({ISVC_LABEL: isvc["metadata"]["name"], COMPONENT_LABEL: component})
    return labels


def pod_labels(isvc: dict[str, Any], component: str) -> dict[str, str]:
    """Labels on the component's pods: :func:`component_labels`, copied to the Deployment's pod template
    (reconcilers/deployment) or, less the disallowed ones, to the Knative revision template
    (ksvc_reconciler.go: ``utils.Filter(componentMeta.Labels, ... disallowedLabelList)``)."""
    labels = component_labels(isvc, component)
    if deployment_mode(isvc) == KNATIVE:
        labels = {key: value for key, value in labels.items() if key not in REVISION_TEMPLATE_DISALLOWED}
    return labels


@dataclass(frozen=True)
class PublicRoute:
    """A route KServe (or Knative, for a component's own Knative Service) puts on the public ingress gateway.

    Attributes:
        host: Whose host it is: the InferenceService's (``NAME``) or a component's (``NAME-COMPONENT``).
        paths: ``all`` or ``:explain`` (EXPLAIN_PATH).
        component: The component that answers.
    """

    host: str
    paths: str
    component: str


def public_routes(isvc: dict[str, Any], *, gateway_api: bool = False) -> list[PublicRoute]:
    """What the public gateway routes to this InferenceService's components, in rule order.

    Knative mode, reconcilers/ingress/ingress_reconciler.go ``createIngress``: unless the InferenceService is
    labelled ``networking.knative.dev/visibility: cluster-local`` (then only the local and ``mesh`` gateways
    get the VirtualService), the InferenceService's host sends ``:explain`` to the explainer (with one) and
    everything else to the transformer (or the predictor). Each component's own Knative Service also gets a
    public route of its own unless its labels make it cluster-local (:func:`component_labels`,
    mesh_rules.route_is_cluster_local); the transformer's must stay public, as ``getServiceHost`` derives the
    InferenceService's host from it.

    Standard mode, unless labelled ``networking.kserve.io/visibility: cluster-local``: with a Kubernetes
    Ingress (kube_ingress_reconciler.go ``Reconcile``, ``createRawIngress``) the InferenceService's host goes
    to the transformer, the explainer and predictor hosts to theirs, and the transformer's host to the
    predictor; with the Gateway API (``enableGatewayApi``; httproute_reconciler.go ``Reconcile``,
    ``createRawTopLevelHTTPRoute``) the InferenceService's host sends ``:explain`` to the explainer and the
    rest to the transformer, and each component's HTTPRoute serves its own host.
    """
    name, spec = isvc["metadata"]["name"], isvc["spec"]
    labels = isvc.get("metadata", {}).get("labels") or {}
    front = "transformer" if spec.get("transformer") else "predictor"
    components = [c for c in ("predictor", "transformer", "explainer") if spec.get(c)]
    routes: list[PublicRoute] = []
    if deployment_mode(isvc) == KNATIVE:
        public_front = not route_is_cluster_local(component_labels(isvc, front))
        if labels.get(KNATIVE_VISIBILITY) != CLUSTER_LOCAL and public_front:
            if spec.get("explainer"):
                routes.append(PublicRoute(name, ":explain", "explainer"))
            routes.append(PublicRoute(name, "all", front))
        for component in components:
            if not route_is_cluster_local(component_labels(isvc, component)):
                routes.append(PublicRoute(f"{name}-{component}", "all", component))
        return routes
    if labels.get(NETWORK_VISIBILITY) == CLUSTER_LOCAL:
        return []
    if gateway_api:
        if spec.get("explainer"):
            routes.append(PublicRoute(name, ":explain", "explainer"))
        routes.append(PublicRoute(name, "all", front))
        return [*routes, *(PublicRoute(f"{name}-{c}", "all", c) for c in components)]
    if spec.get("explainer"):
        routes.append(PublicRoute(f"{name}-explainer", "all", "explainer"))
    routes.append(PublicRoute(name, "all", front))
    if spec.get("transformer"):
        routes.append(PublicRoute(f"{name}-transformer", "all", "predictor"))
    return [*routes, PublicRoute(f"{name}-predictor", "all", "predictor")]


def derived_names(isvc: dict[str, Any]) -> dict[str, str]:
    """Names KServe and Knative derive from the InferenceService name that must fit a DNS-1035 label (63).

    Standard mode: the component Services and Deployments ``ISVC-COMPONENT`` (constants.go), whose names
    are also the ``app: isvc.ISVC-COMPONENT`` label values. Knative mode: the Knative Service
    ``ISVC-COMPONENT`` and its revisions ``ISVC-COMPONENT-00001``, a label value
    (``serving.knative.dev/revision``).
    """
    name = isvc["metadata"]["name"]
    knative = deployment_mode(isvc) == KNATIVE
    names: dict[str, str] = {}
    for component in ("predictor", "transformer", "explainer"):
        if isvc["spec"].get(component):
            service = f"{name}-{component}"
            names[f"{component} service"] = service
            names[f"{component} app label"] = f"isvc.{service}" if not knative else service
            if knative:
                names[f"{component} revision"] = service + KNATIVE_REVISION_SUFFIX
    return names


# reconcilers/deployment/deployment_reconciler.go setDefaultDeploymentSpec: the strategy of a Standard-mode
# Deployment without a component deploymentStrategy (and without the configmap's deploy rollout settings).
DEFAULT_ROLLOUT = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}
DEFAULT_GRACE_SECONDS = 30  # deployment_reconciler.go: corev1.DefaultTerminationGracePeriodSeconds when unset


def raw_deployment(isvc: dict[str, Any], component: str) -> dict[str, Any]:
    """The parts of a Standard-mode component's Deployment that decide how its pods are replaced and stopped.

    deployment_reconciler.go ``createRawDefaultDeployment``: "User-specified deployment strategy takes
    precedence" (the component's ``deploymentStrategy``), else :data:`DEFAULT_ROLLOUT`; the pod spec is the
    component's (its ``terminationGracePeriodSeconds``, else 30) with its containers as written (their
    ``lifecycle`` included).
    """
    spec = isvc["spec"][component]
    pod = {
        key: value
        for key, value in spec.items()
        if key not in ("minReplicas", "maxReplicas", "scaleMetric", "scaleTarget", "labels", "annotations",
                       "deploymentStrategy", "timeout", "logger", "batcher")
    }  # fmt: skip
    pod.setdefault("terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS)
    return {"strategy": spec.get("deploymentStrategy") or DEFAULT_ROLLOUT, "pod": pod}


def knative_container_ports(container: dict[str, Any]) -> list[dict[str, Any]]:
    """The user container's ports as Knative runs them: one port, renamed ``user-port`` (deploy.go)."""
    ports = container.get("ports") or [{"containerPort": 8080}]
    return [{**ports[0], "name": KNATIVE_USER_PORT_NAME}]


def custom_explainer_args(isvc: dict[str, Any]) -> list[str]:
    """The args a custom explainer's container runs with, after KServe's controller added its own.

    pkg/apis/serving/v1beta1/explainer_custom.go ``GetContainer``: ``--model_name ISVC`` unless given,
    ``--predictor_host ISVC-predictor.NAMESPACE`` unless given, then always ``--http_port 8080`` (and
    ``--workers`` for a containerConcurrency). components/explainer.go passes the predictor's Service name.
    """
    spec = isvc["spec"]["explainer"]
    args = [str(arg) for arg in _containers(spec)[0].get("args") or []]
    name, namespace = isvc["metadata"]["name"], isvc["metadata"].get("namespace", "default")
    if "--model_name" not in args:
        args += ["--model_name", name]
    if "--predictor_host" not in args:
        args += ["--predictor_host", f"{name}-predictor.{namespace}"]
    args += ["--http_port", "8080"]
    if spec.get("containerConcurrency") is not None and "--workers" not in args:
        args += ["--workers", str(spec["containerConcurrency"])]
    return args


def explain_route(isvc: dict[str, Any], *, gateway_api: bool = False) -> str:
    """The component that answers ``/v1/models/NAME:explain`` on the InferenceService's own host.

    Knative mode (reconcilers/ingress/ingress_reconciler.go ``createIngress``) and Standard mode with the
    Gateway API (httproute_reconciler.go ``createRawTopLevelHTTPRoute``): with a ``spec.explainer``, a rule
    matching ``:explain`` (constants.ExplainPrefix) goes to the explainer before the top-level rule. Standard
    mode with an Ingress (kube_ingress_reconciler.go ``createRawIngress``): the top-level host's only rule
    sends every path to the transformer, or without one to the predictor (the explainer gets a host of its
    own). Either way the transformer is never told where the explainer is (components/transformer.go passes
    only ``--predictor_host``).
    """
    spec = isvc["spec"]
    if spec.get("explainer") and (deployment_mode(isvc) == KNATIVE or gateway_api):
        return "explainer"
    return "transformer" if spec.get("transformer") else "predictor"
