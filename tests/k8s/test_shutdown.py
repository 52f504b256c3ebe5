"""Issue 29 on the cluster: a pod that stops, and a rollout that replaces it, drop no request.

What each server needs once it gets SIGTERM is read from its own source (the request deadline from the values
the transformer gets, the logger's flush from transformer/request_logger.py, the detector's state and archive
from detector/archive.py and serving/policy.py); what the cluster gives it is what Kubernetes (kube_rules),
KServe (kserve_controller), Knative and Istio (mesh_rules) make of the rendered objects, each rule citing its
source. Standard mode: a preStop pause while the endpoint leaves the load balancers, then a grace period
covering the requests in flight and the flush, rolling updates that never take a serving pod away first.
Knative mode: none of those fields (Knative refuses them) because the queue-proxy drains on its own for 30 s
and the grace period is the revision's timeout.
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from serving import policy
from tests.k8s import kserve_controller as kserve
from tests.k8s import kube_rules as kube
from tests.k8s import mesh_rules as mesh
from tests.k8s import servers
from tests.k8s.conftest import CHART, Render, parse, render
from tests.k8s.test_chart import FULLNAME

STANDARD = ("defaults", "standard-canary", "highly-available", "edge", "repository-api")
KNATIVE = ("knative-canary", "knative-edge", "knative-edge-auth", "knative-explainer")
MESHED = ("edge", "knative-edge", "knative-edge-auth", "repository-api", "istio")
PRE_STOP = yaml.safe_load((CHART / "values.yaml").read_text())["shutdown"]["preStopSeconds"]


def flush_seconds(component: str) -> float:
    """What a server does after its last request, at most, read from its source."""
    if component == "transformer":
        from transformer.request_logger import RequestLogger

        return float(inspect.signature(RequestLogger.close).parameters["timeout"].default)
    if component == "detector":
        from detector.archive import Archiver

        # Archiver.stop: the seal thread and the uploader are each joined for `timeout`, then the uploader is
        # terminated and joined for 5 s more; the state file is written before it (a local file).
        return 2 * float(inspect.signature(Archiver.stop).parameters["timeout"].default) + 5
    return 0.0


def requests_seconds(rendered: Render, component: str) -> float:
    """The longest a request in flight may still take: the transformer's deadline, which bounds its calls to
    the predictor and the explainer too; the detector's longest body (the transformer's logger has no deadline
    of its own beyond its POST timeout)."""
    if component == "detector":
        return max(route.limits.body_seconds for route in policy.http_routes("detector"))
    return float(servers.parse(rendered, "transformer").predictor_request_timeout_seconds)


def needed(rendered: Render, component: str) -> float:
    return requests_seconds(rendered, component) + flush_seconds(component)


def isvc_components(rendered: Render) -> list[tuple[dict[str, Any], str]]:
    return [
        (isvc, component)
        for isvc in rendered.of_kind("InferenceService")
        for component in servers.SERVING
        if isvc["spec"].get(component)
    ]


def test_standard_mode_pods_stop_after_their_last_request(renders: dict[str, Render]) -> None:
    """kuberuntime_container.go killContainer: the preStop runs first (the server still serving while its
    endpoint leaves kube-proxy's rules and the sidecars' load balancers), then SIGTERM with what is left of
    the grace period, which must cover the requests in flight and the flush."""
    for name in STANDARD:
        rendered = renders[name]
        for isvc, component in isvc_components(rendered):
            deployment = kserve.raw_deployment(isvc, component)
            stop = kube.stop(deployment["pod"], deployment["pod"]["containers"][0])
            assert stop.pre_stop == PRE_STOP, (name, component)
            assert stop.after_sigterm >= needed(rendered, component) + 5, (name, component, stop)


def test_standard_mode_rollouts_never_take_a_serving_pod_away_first(renders: dict[str, Render]) -> None:
    """KServe's Deployment takes the component's deploymentStrategy (deployment_reconciler.go), else 25%
    unavailable: from four replicas on, an update took a pod out before its successor was ready. With
    maxUnavailable 0 (rolling.go) the old pods go only as new ones become available."""
    for name in STANDARD:
        for isvc, component in isvc_components(renders[name]):
            kserve.admit(isvc)
            strategy = kserve.raw_deployment(isvc, component)["strategy"]
            for replicas in (1, 4, 10):
                assert kube.rolling_update_keeps_serving(strategy, replicas), (name, component, replicas)
            assert strategy["rollingUpdate"]["maxSurge"] != 0  # or the rollout could never start
    assert not kube.rolling_update_keeps_serving(kserve.DEFAULT_ROLLOUT, 4)  # what KServe would do alone


def test_knative_mode_leaves_the_drain_to_the_queue_proxy(renders: dict[str, Render]) -> None:
    """deploy.go replaces the container's preStop with the queue-proxy's /wait-for-drain and makes the
    revision's timeout (300 s unless the component sets `timeout`) the grace period; fieldmask.go refuses a
    lifecycle or a grace period in the spec, and KServe refuses a deploymentStrategy
    (validateScalingKPACompExtension). What is left after the 30 s drain covers the requests and the flush."""
    for name in KNATIVE:
        rendered = renders[name]
        for isvc, component in isvc_components(rendered):
            spec = isvc["spec"][component]
            assert mesh.knative_refusals(spec) == [], (name, component)
            assert "deploymentStrategy" not in spec and "timeout" not in spec, (name, component)
            kserve.admit(isvc)
            drain, grace = mesh.knative_stop(spec)
            assert grace - drain >= needed(rendered, component) + 5, (name, component)
        with pytest.raises(kserve.AdmissionError, match="deploymentStrategy is only supported for raw"):
            isvc = stable_with(rendered, deploymentStrategy={"type": "RollingUpdate"})
            kserve.admit(isvc)


def stable_with(rendered: Render, **fields: Any) -> dict[str, Any]:
    isvc = rendered.one("InferenceService", FULLNAME)
    return {**isvc, "spec": {**isvc["spec"], "predictor": {**isvc["spec"]["predictor"], **fields}}}


def sidecar_needed(rendered: Render, isvc: dict[str, Any] | None, component: str) -> float:
    """How long the pod's sidecar must serve after the pod's deletion: the server's preStop (Standard) or the
    queue-proxy's drain (Knative), then its requests and flush."""
    if component == "detector":
        pod = servers.detector_pod(rendered)["spec"]
        before = kube.stop(pod, pod["containers"][0]).pre_stop
    elif kserve.deployment_mode(isvc) == kserve.KNATIVE:
        before = mesh.DRAIN_SLEEP_SECONDS
    else:
        pod = kserve.raw_deployment(isvc, component)["pod"]
        before = kube.stop(pod, pod["containers"][0]).pre_stop
    return before + needed(rendered, component)


def test_the_sidecar_outlives_the_server(renders: dict[str, Render]) -> None:
    """mesh_rules.TERMINATION_DRAIN_SECONDS: a classic sidecar gets SIGTERM at the pod's deletion and stops 5
    s later; the transformer's last predictions and logger batch, the detector's last upload, and every
    request still arriving during the preStop pause or the queue-proxy's drain, go through it. The chart sets
    its terminationDrainDuration on every pod of a meshed release."""
    for name in MESHED:
        rendered = renders[name]
        pods: list[tuple[dict[str, Any] | None, str, dict[str, str]]] = [
            (isvc, component, isvc["spec"][component].get("annotations") or {})
            for isvc, component in isvc_components(rendered)
        ]
        pods.append((None, "detector", servers.detector_pod(rendered)["metadata"]["annotations"]))
        for isvc, component, pod_annotations in pods:
            drain = mesh.sidecar_drain_seconds(pod_annotations)
            assert drain >= sidecar_needed(rendered, isvc, component), (name, component, drain)
    assert mesh.PROXY_CONFIG_ANNOTATION not in str(renders["defaults"].text)  # no mesh: no annotation


def test_the_detector_stops_before_its_successor_starts(renders: dict[str, Render]) -> None:
    """One writer of a ReadWriteOnce volume (kube_rules.read_write_once_writers): a rolling update would
    start the new detector beside the old one, which on another node cannot attach the volume and on the same
    node writes the same state file. Recreate stops it first, with the grace to save its state and seal its
    archive segment; no preStop (no other replica takes over, a pause would only lengthen the gap)."""
    rendered = renders["defaults"]
    deployment = rendered.one("Deployment", f"{FULLNAME}-detector")
    claim = rendered.one("PersistentVolumeClaim", f"{FULLNAME}-detector-state")
    strategy = deployment["spec"]["strategy"]
    assert kube.read_write_once_writers(claim["spec"]["accessModes"], strategy) == 1
    assert kube.read_write_once_writers(claim["spec"]["accessModes"], {"type": "RollingUpdate"}) == 2
    pod = deployment["spec"]["template"]["spec"]
    stop = kube.stop(pod, pod["containers"][0])
    assert stop.pre_stop == 0 and stop.after_sigterm >= needed(rendered, "detector") + 5


@pytest.fixture(scope="module")
def detector_replicas(tmp_path_factory: pytest.TempPathFactory) -> Render:
    values = {"detector": {"replicas": 3}, "networkPolicy": {"istio": {"enabled": True}}}
    completed = render(values, tmp_path_factory.mktemp("replicas"), "replicas")
    assert completed.returncode == 0, completed.stderr
    return Render("replicas", completed.stdout, parse(completed.stdout))


def test_detector_replicas_keep_their_share_while_the_hash_moves_it(detector_replicas: Render) -> None:
    """A StatefulSet replaces one replica at a time and never runs two of one identity; the others take its
    share once its endpoint leaves the consistent hash, so it pauses first like the serving pods."""
    statefulset = detector_replicas.one("StatefulSet", f"{FULLNAME}-detector")
    pod = statefulset["spec"]["template"]["spec"]
    stop = kube.stop(pod, pod["containers"][0])
    assert stop.pre_stop == PRE_STOP and stop.after_sigterm >= needed(detector_replicas, "detector") + 5
    annotations = statefulset["spec"]["template"]["metadata"]["annotations"]
    assert mesh.sidecar_drain_seconds(annotations) >= stop.pre_stop + needed(detector_replicas, "detector")


def test_the_pause_is_a_value(tmp_path: Path) -> None:
    """shutdown.preStopSeconds: longer for clusters whose load balancers take longer; the grace period
    follows."""
    completed = render({"shutdown": {"preStopSeconds": 40}}, tmp_path, "long-pause")
    assert completed.returncode == 0, completed.stderr
    rendered = Render("long-pause", completed.stdout, parse(completed.stdout))
    for isvc, component in isvc_components(rendered):
        pod = kserve.raw_deployment(isvc, component)["pod"]
        stop = kube.stop(pod, pod["containers"][0])
        assert stop.pre_stop == 40 and stop.after_sigterm >= math.ceil(needed(rendered, component)), component
