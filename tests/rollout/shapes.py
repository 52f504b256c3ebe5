"""InferenceServices the rollout tests start from, and helpers to run ``housing rollout`` on the mock API.

``chart_like`` is the Helm chart's shape (a transformer in front of the project's custom predictor), written
out by hand so that these tests do not depend on helm; ``test_helm_objects.py`` compares with the chart's.
``predictor_only`` is someone else's InferenceService without a transformer, in each form the command reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from housing.cli import main
from housing.rollout import objects

STABLE_URI = "https://acct.blob.core.windows.net/models/housing/1.0.0"
STABLE_SHA = "a" * 64
CANARY_URI = "https://acct.blob.core.windows.net/models/housing/1.1.0"
CANARY_SHA = "b" * 64
STABLE = objects.ModelRef(STABLE_URI, STABLE_SHA, "1.0.0")
CANARY = objects.ModelRef(CANARY_URI, CANARY_SHA, "1.1.0")
SELECTOR = {"app.kubernetes.io/name": "housing-kserve", "app.kubernetes.io/instance": "housing"}


def _status() -> dict[str, Any]:
    return {
        "url": "http://housing.ml.example.com",
        "address": {"url": "http://housing-transformer.ml.svc.cluster.local"},
        "conditions": [
            {"type": "Ready", "status": "True"},
            {"type": "PredictorReady", "status": "False", "reason": "RevisionMissing", "message": "waiting"},
        ],
        "components": {
            "predictor": {
                "url": "http://housing-predictor.ml.example.com",
                "restUrl": "http://housing-predictor.ml.svc/v2",
                "traffic": [
                    {"revisionName": "housing-predictor-00001", "percent": 100, "latestRevision": True}
                ],
            }
        },
    }


def _predictor_container(args: list[str], env: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": "kserve-container",
        "image": "housingacr.azurecr.io/housing-predictor:1.0.0",
        "command": ["python", "-m", "predictor"],
        "args": args,
        "env": env,
        "ports": [{"name": "http1", "containerPort": 8080, "protocol": "TCP"}],
        "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
    }


def chart_like(mode: str, name: str = "housing") -> dict[str, Any]:
    """The chart's InferenceService: a transformer in front of a custom predictor that downloads its model."""
    standard = mode in objects.STANDARD_MODE_NAMES
    annotations = {objects.MODE_ANNOTATION: mode}
    if standard:
        annotations[objects.AUTOSCALER_CLASS_ANNOTATION] = "hpa"
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": name,
            "namespace": "ml",
            "labels": SELECTOR | {"app.kubernetes.io/part-of": "housing-kserve"},
            "annotations": annotations,
        },
        "spec": {
            "predictor": {
                "labels": SELECTOR
                | {"app.kubernetes.io/component": "predictor", objects.ENDPOINT_LABEL: "default"},
                "annotations": {objects.SHA256_ANNOTATION: STABLE_SHA, objects.VERSION_ANNOTATION: "1.0.0"},
                "serviceAccountName": name,
                "minReplicas": 1,
                "maxReplicas": 3,
                "scaleMetric": "cpu" if standard else "concurrency",
                "scaleTarget": 70,
                "containers": [
                    _predictor_container(
                        [
                            "--model_name",
                            "housing",
                            "--storage_uri",
                            STABLE_URI,
                            "--expected_sha256",
                            STABLE_SHA,
                            "--http_port",
                            "8080",
                            "--grpc_port",
                            "8081",
                        ],
                        [{"name": "PROTOCOL", "value": "v2"}, {"name": "OMP_NUM_THREADS", "value": "1"}],
                    )
                ],
            },
            "transformer": {
                "labels": SELECTOR
                | {"app.kubernetes.io/component": "transformer", objects.ENDPOINT_LABEL: "default"},
                "minReplicas": 1,
                "maxReplicas": 3,
                "containers": [
                    {
                        "name": "kserve-container",
                        "image": "housingacr.azurecr.io/housing-transformer:1.0.0",
                        "command": ["python", "-m", "transformer"],
                        "args": ["--model_name", "housing", "--protocol", "v2", "--grpc_port", "8081"],
                    }
                ],
            },
        },
        "status": _status(),
    }


def predictor_only(mode: str | None, form: str = "equals") -> dict[str, Any]:
    """An InferenceService without a transformer: the project's predictor image in a custom container.

    ``form`` says how the container gets its model: ``equals`` (``--storage_uri=URI`` args), ``separate``
    (``--storage_uri URI``), ``env`` (``STORAGE_URI`` / ``EXPECTED_SHA256`` env vars, which KServe sees) or
    ``model`` (KServe's ``spec.predictor.model`` instead of a container).
    """
    if form == "equals":
        args = [f"--storage_uri={STABLE_URI}", f"--expected_sha256={STABLE_SHA}", "--http_port=8080"]
        env: list[dict[str, Any]] = [{"name": "OMP_NUM_THREADS", "value": "1"}]
    elif form == "separate":
        args = ["--model_name", "housing", "--storage_uri", STABLE_URI, "--expected_sha256", STABLE_SHA]
        env = []
    else:
        args = ["--model_name=housing"]
        env = [{"name": "STORAGE_URI", "value": STABLE_URI}, {"name": "EXPECTED_SHA256", "value": STABLE_SHA}]
    predictor: dict[str, Any] = {
        "minReplicas": 1,
        "labels": {objects.ENDPOINT_LABEL: "default"},
        "annotations": {objects.VERSION_ANNOTATION: "1.0.0", objects.SHA256_ANNOTATION: STABLE_SHA},
    }
    if form == "model":
        predictor["model"] = {"modelFormat": {"name": "sklearn"}, "storageUri": STABLE_URI}
    else:
        predictor["containers"] = [_predictor_container(args, env)]
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": "housing",
            "namespace": "ml",
            "annotations": {objects.MODE_ANNOTATION: mode} if mode else {},
        },
        "spec": {"predictor": predictor},
        "status": _status(),
    }


def housing(kubeconfig: Path, *args: str) -> int:
    """``housing rollout ARGS --kubeconfig KUBECONFIG``: the exit code."""
    return main(["rollout", *args, "--kubeconfig", str(kubeconfig)])


def canary(kubeconfig: Path, *extra: str, model: objects.ModelRef = CANARY, percent: int = 10) -> int:
    """``housing rollout canary housing`` with ``model`` at ``percent``."""
    flags = ["--model-uri", str(model.storage_uri), "--sha256", str(model.sha256), "--percent", str(percent)]
    if model.version:
        flags += ["--model-version", model.version]
    return housing(kubeconfig, "canary", "housing", *flags, *extra)


def mark_ready(server: Any, namespace: str, name: str) -> None:
    """An ``after_create`` hook: KServe's controller reports the new InferenceService Ready at once."""
    server.set_ready(namespace, name)


def methods(server: Any) -> list[tuple[str, str]]:
    """The writes seen, as ``(method, object name or collection)``."""
    return [
        (request["method"], request["path"].split("?")[0].rsplit("/", 1)[1]) for request in server.writes()
    ]
