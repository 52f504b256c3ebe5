"""Detector scale-out in the chart: a StatefulSet, each id hashed to one replica by Istio, strictly valid."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from serving.events import ROUTING_HEADER
from tests.k8s.conftest import NAMESPACE, Render, parse, render
from tests.k8s.test_chart import FULLNAME
from tests.k8s.test_edge import istio_validators  # noqa: F401  (the strict Istio CRD validators, reused)

DETECTOR = f"{FULLNAME}-detector"


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Render:
    completed = render({"detector": {"replicas": 3}}, tmp_path_factory.mktemp("replicas"), "replicas")
    assert completed.returncode == 0, completed.stderr
    return Render("replicas", completed.stdout, parse(completed.stdout))


def transformer_args(rendered: Render) -> list[str]:
    isvc = rendered.one("InferenceService", FULLNAME)
    return isvc["spec"]["transformer"]["containers"][0]["args"]


def test_three_replicas_are_a_statefulset_with_a_state_volume_each(replicas: Render) -> None:
    statefulset = replicas.one("StatefulSet", DETECTOR)
    assert statefulset["spec"]["replicas"] == 3
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "state" and claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    volumes = {volume["name"] for volume in statefulset["spec"]["template"]["spec"]["volumes"]}
    assert "state" not in volumes  # each replica's own claim, not one shared ReadWriteOnce volume
    names = {(doc["kind"], doc["metadata"]["name"]) for doc in replicas.documents}
    assert ("Deployment", DETECTOR) not in names and (
        "PersistentVolumeClaim",
        f"{DETECTOR}-state",
    ) not in names
    mounts = statefulset["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    assert {"name": "state", "mountPath": "/var/lib/detector"} in mounts


def test_each_inference_id_is_hashed_to_one_replica_by_istio(replicas: Render, istio_validators: Any) -> None:  # noqa: F811
    rule = replicas.one("DestinationRule", DETECTOR)
    errors = list(istio_validators[(rule["apiVersion"], "DestinationRule")].iter_errors(rule))
    assert not errors, [error.message for error in errors]
    assert rule["spec"]["host"] == f"{DETECTOR}.{NAMESPACE}.svc.cluster.local"
    assert rule["spec"]["trafficPolicy"]["loadBalancer"] == {
        "consistentHash": {"httpHeaderName": ROUTING_HEADER}
    }
    # The transformer sends each inference alone, with that header (serving/events.py ROUTING_HEADER).
    args = transformer_args(replicas)
    assert args[args.index("--logger_batch_events") + 1] == "2"


def test_one_replica_stays_a_deployment_with_batches_and_no_destination_rule(
    renders: dict[str, Render],
) -> None:
    defaults = renders["defaults"]
    deployment = defaults.one("Deployment", DETECTOR)
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
    defaults.one("PersistentVolumeClaim", f"{DETECTOR}-state")
    assert not defaults.of_kind("DestinationRule") and not defaults.of_kind("StatefulSet")
    assert "--logger_batch_events" not in transformer_args(defaults)


def test_the_strict_check_refuses_a_misspelled_hash_field(replicas: Render, istio_validators: Any) -> None:  # noqa: F811
    rule = replicas.one("DestinationRule", DETECTOR)
    broken = {
        **rule,
        "spec": {**rule["spec"], "trafficPolicy": {"loadBalancer": {"consistentHash": {"httpHeader": "x"}}}},
    }
    assert list(istio_validators[(rule["apiVersion"], "DestinationRule")].iter_errors(broken))


def test_zero_replicas_is_refused_by_the_schema(tmp_path: Path) -> None:
    completed = render({"detector": {"replicas": 0}}, tmp_path, "zero")
    assert completed.returncode != 0 and "replicas" in completed.stderr
