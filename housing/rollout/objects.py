"""The InferenceService's shape: every field path ``housing rollout`` reads or writes is named here."""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from typing import Any

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
AUTOSCALER_CLASS_ANNOTATION = "serving.kserve.io/autoscalerClass"
# KServe >= 0.16 names the modes Standard and Knative; its defaulting webhook rewrites the old names
# (pkg/apis/serving/v1beta1/inference_service_defaults.go), so both are understood.
STANDARD, KNATIVE = "Standard", "Knative"
STANDARD_MODE_NAMES = {"Standard", "RawDeployment"}
KNATIVE_MODE_NAMES = {"Knative", "Serverless"}

# The project's predictor takes its model from container args, or from env vars as a fallback.
STORAGE_URI_ARG, SHA256_ARG = "--storage_uri", "--expected_sha256"
STORAGE_URI_ENV, SHA256_ENV = "STORAGE_URI", "EXPECTED_SHA256"
# Pod annotations and label on a predictor spec (the Helm chart writes them; KServe copies them to the pods).
VERSION_ANNOTATION = "housing.kserve.dev/model-version"
SHA256_ANNOTATION = "housing.kserve.dev/model-sha256"
UNPINNED = "unpinned"
ENDPOINT_LABEL = "housing.kserve.dev/endpoint"
# InferenceService annotation: the stable model while a Knative split runs (the spec names the canary's).
STABLE_MODEL_ANNOTATION = "housing.kserve.dev/stable-model"

# A canary behind the transformer: its own InferenceService STABLE-NAME, labelled with the stable's name, and
# one `--canary NAME=PERCENT,HOST` in the transformer's args (transformer/routing.py reads it).
CANARY_OF_LABEL = "housing.kserve.dev/canary-of"
# One owner per canary (docs/rollout.md): a canary this command started carries this annotation, and the Helm
# chart keeps it through `helm upgrade` while it runs (templates/_rollout.tpl); the canaries a release's
# values declare are listed in the transformer's annotation below, and only `helm upgrade` changes or ends
# those.
STARTED_BY_ANNOTATION = "housing.kserve.dev/started-by"
STARTED_BY = "housing-rollout"
HELM_CANARIES_ANNOTATION = "housing.kserve.dev/helm-canaries"
# Helm's ownership metadata (helm pkg/action/validate.go checkOwnership): copied from the stable so that Helm
# may take the canary into the same release rather than refuse it.
HELM_RELEASE_ANNOTATIONS = ("meta.helm.sh/release-name", "meta.helm.sh/release-namespace")
# No public route to a canary: KServe's ingress reconcilers skip an InferenceService labelled cluster-local
# (ingress_reconciler.go reads Knative's label in Knative mode; kube_ingress_reconciler.go and
# httproute_reconciler.go read KServe's in Standard mode).
VISIBILITY_LABELS = {
    KNATIVE: "networking.knative.dev/visibility",
    STANDARD: "networking.kserve.io/visibility",
}
CLUSTER_LOCAL = "cluster-local"
CANARY_ARG = "--canary"
DEFAULT_CANARY_NAME = "canary"
STABLE_ARM = "stable"  # the transformer's name for the stable predictor: no canary may take it
# KServe names a predictor's Service ISVC-predictor (pkg/constants/constants.go PredictorServiceName); Knative
# names its first revision KSVC-00001, a label value, so the whole must fit a DNS label (63 characters).
PREDICTOR_SUFFIX = "-predictor"
KNATIVE_REVISION_SUFFIX = "-00001"
MAX_LABEL = 63

# pkg/apis/serving/v1beta1/predictor.go: the fields that name a model server (the rest is a custom container).
MODEL_SERVER_FIELDS = (
    "model",
    "sklearn",
    "xgboost",
    "tensorflow",
    "pytorch",
    "triton",
    "onnx",
    "huggingface",
    "pmml",
    "lightgbm",
    "paddle",
)

KSERVE_CONTAINER = "kserve-container"  # pkg/constants/constants.go InferenceServiceContainerName
DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


class RolloutError(RuntimeError):
    """The command cannot do what was asked; the message says why and what to do instead."""


@dataclass(frozen=True)
class ModelRef:
    """Which model a predictor serves.

    Attributes:
        storage_uri: Where the artifact lives (``https://ACCOUNT.blob.core.windows.net/...``, ``file://``).
        sha256: The expected sha256 of ``model.joblib``, when the spec pins one.
        version: The model version, when the spec records one.
    """

    storage_uri: str | None
    sha256: str | None = None
    version: str | None = None

    def same_artifact(self, other: ModelRef) -> bool:
        """Whether both name the same artifact (storage URI and sha256; the version is only a record)."""
        return (self.storage_uri, self.sha256) == (other.storage_uri, other.sha256)


@dataclass(frozen=True)
class Route:
    """One canary the transformer sends requests to: ``--canary NAME=PERCENT,HOST``.

    Attributes:
        name: The canary's name (a DNS label); its InferenceService is ``STABLE-NAME``.
        percent: Share of the requests, 0-100.
        host: The canary predictor's Service, ``STABLE-NAME-predictor.NAMESPACE``.
    """

    name: str
    percent: int
    host: str

    @classmethod
    def parse(cls, value: str) -> Route:
        """Read the value of one ``--canary`` arg (a ``,REST_HOST`` after the host is kept in ``host``).

        Raises:
            RolloutError: The value is not ``NAME=PERCENT,HOST``.
        """
        name, _, rest = value.partition("=")
        percent, _, host = rest.partition(",")
        if not name or not percent.isdigit() or not host:
            raise RolloutError(f"the transformer has {CANARY_ARG} {value!r}, not NAME=PERCENT,HOST")
        return cls(name, int(percent), host)

    def arg(self) -> str:
        """The value of its ``--canary`` arg."""
        return f"{self.name}={self.percent},{self.host}"


def declared_mode(isvc: dict[str, Any]) -> str | None:
    """The deployment mode as the object states it: the annotation, else ``status.deploymentMode``."""
    declared = (isvc.get("metadata", {}).get("annotations") or {}).get(MODE_ANNOTATION)
    return declared or (isvc.get("status") or {}).get("deploymentMode")


def deployment_mode(isvc: dict[str, Any]) -> str | None:
    """``Standard`` or ``Knative`` as declared by the object, or ``None`` when it does not say.

    Raises:
        RolloutError: The object names a mode this command does not know.
    """
    declared = declared_mode(isvc)
    if declared is None:
        return None
    if declared in STANDARD_MODE_NAMES:
        return STANDARD
    if declared in KNATIVE_MODE_NAMES:
        return KNATIVE
    raise RolloutError(f"unknown deployment mode {declared!r} (annotation {MODE_ANNOTATION})")


def name_of(isvc: dict[str, Any]) -> str:
    """``metadata.name``."""
    return str(isvc["metadata"]["name"])


def predictor_spec(isvc: dict[str, Any]) -> dict[str, Any]:
    """``spec.predictor`` (the stable predictor)."""
    return dict(isvc.get("spec", {}).get("predictor") or {})


def canary_entries(isvc: dict[str, Any]) -> list[dict[str, Any]]:
    """``spec.canary``: KServe's named canaries of Standard mode, each ``{trafficPercent, predictor}``."""
    return list(isvc.get("spec", {}).get("canary") or [])


def canary_name(entry: dict[str, Any]) -> str:
    """The name of a ``spec.canary`` entry (its ``predictor.name``)."""
    return str(entry.get("predictor", {}).get("name") or "")


def knative_canary_percent(isvc: dict[str, Any]) -> int | None:
    """The Knative revision split's canary share, or ``None`` when no canary runs (unset or 100)."""
    percent = predictor_spec(isvc).get("canaryTrafficPercent")
    return None if percent is None or int(percent) == 100 else int(percent)


def is_ready(isvc: dict[str, Any]) -> bool | None:
    """Whether condition ``Ready`` is ``True``; ``None`` before KServe reports it at all."""
    for condition in (isvc.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return condition.get("status") == "True"
    return None


def ready_detail(isvc: dict[str, Any]) -> str:
    """The reason and message of the ``Ready`` condition, for an error that says why it is not ready."""
    for condition in (isvc.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            detail = " ".join(filter(None, [condition.get("reason"), condition.get("message")]))
            return f"Ready={condition.get('status')} {detail}".strip()
    return "KServe has not reported a Ready condition yet"


def _arg_value(args: list[str], flag: str) -> str | None:
    for index, arg in enumerate(args):
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
        if arg == flag and index + 1 < len(args):
            return args[index + 1]
    return None


def _set_arg(args: list[str], flag: str, value: str) -> bool:
    for index, arg in enumerate(args):
        if arg.startswith(flag + "="):
            args[index] = f"{flag}={value}"
            return True
        if arg == flag and index + 1 < len(args):
            args[index + 1] = value
            return True
    return False


def _env_value(env: list[dict[str, Any]], name: str) -> str | None:
    return next((item.get("value") for item in env if item.get("name") == name), None)


def read_model(predictor: dict[str, Any]) -> ModelRef:
    """The model a predictor spec serves.

    Two forms are understood: the project's custom container (``containers[0]`` with ``--storage_uri`` /
    ``--expected_sha256`` args or ``STORAGE_URI`` / ``EXPECTED_SHA256`` env vars; args win, as in the
    predictor) and KServe's standard ``model.storageUri``. The sha256 and version annotations fill what the
    spec lacks.
    """
    annotations = predictor.get("annotations") or {}
    pinned = annotations.get(SHA256_ANNOTATION)
    pinned = None if pinned == UNPINNED else pinned
    version = annotations.get(VERSION_ANNOTATION)
    containers = predictor.get("containers") or []
    if containers:
        container = containers[0]
        args, env = list(container.get("args") or []), list(container.get("env") or [])
        uri = _arg_value(args, STORAGE_URI_ARG) or _env_value(env, STORAGE_URI_ENV)
        sha256 = _arg_value(args, SHA256_ARG) or _env_value(env, SHA256_ENV)
        return ModelRef(uri, sha256 or pinned, version)
    model = predictor.get("model") or {}
    return ModelRef(model.get("storageUri"), pinned, version)


def with_model(predictor: dict[str, Any], model: ModelRef, endpoint: str | None = None) -> dict[str, Any]:
    """A copy of a predictor spec that serves ``model``, written in the form the spec already uses.

    In the container form each value replaces the arg or env var that carries it now; a missing one becomes
    an arg (not an env var: ``STORAGE_URI`` in the env makes KServe add its storage initializer). The sha256
    and version annotations follow the model, and ``endpoint`` (``default``/``canary``) sets the pod label
    that the scrape configuration turns into the ``endpoint`` label of every metric (and that the pods'
    topology spread selects on).
    """
    result = copy.deepcopy(predictor)
    annotations = dict(result.get("annotations") or {})
    if model.version:
        annotations[VERSION_ANNOTATION] = model.version
    else:
        annotations.pop(VERSION_ANNOTATION, None)
    annotations[SHA256_ANNOTATION] = model.sha256 or UNPINNED
    result["annotations"] = annotations
    if endpoint is not None:
        result["labels"] = dict(result.get("labels") or {}) | {ENDPOINT_LABEL: endpoint}
        # Pods spread among those of their own role (the chart's topologySpreadConstraints select by it).
        for constraint in result.get("topologySpreadConstraints") or []:
            selected = (constraint.get("labelSelector") or {}).get("matchLabels") or {}
            if ENDPOINT_LABEL in selected:
                selected[ENDPOINT_LABEL] = endpoint
    if not result.get("containers"):
        result.setdefault("model", {})["storageUri"] = model.storage_uri
        return result
    container = result["containers"][0]
    args, env = list(container.get("args") or []), list(container.get("env") or [])
    for flag, name, value in (
        (STORAGE_URI_ARG, STORAGE_URI_ENV, model.storage_uri),
        (SHA256_ARG, SHA256_ENV, model.sha256),
    ):
        if value is None or _set_arg(args, flag, value):
            continue
        if _env_value(env, name) is not None:
            env = [item | {"value": value} if item.get("name") == name else item for item in env]
        else:
            args += [flag, value]
    container["args"] = args
    if env:
        container["env"] = env
    return result


def kserve_sees_a_model(predictor: dict[str, Any]) -> bool:
    """Whether KServe's webhook finds a model on this predictor, which it requires before any ``spec.canary``.

    pkg/apis/serving/v1beta1/inference_service_validation.go ``validateCanarySpecs`` refuses a canary when
    ``GetImplementation().GetStorageUri()`` is nil and ``spec.predictor.model`` is unset. The storage URI of a
    model server field is its ``storageUri``; a custom predictor's is only the ``STORAGE_URI`` env var of its
    container named ``kserve-container`` (predictor_custom.go ``GetStorageUri``): an ``--storage_uri`` arg, as
    this project's predictor takes, is invisible to it.
    """
    if predictor.get("model") is not None:
        return True
    for field in MODEL_SERVER_FIELDS:
        if isinstance(predictor.get(field), dict):
            return bool(predictor[field].get("storageUri"))
    containers: list[dict[str, Any]] = list(predictor.get("containers") or [])
    main = next((c for c in containers if c.get("name") == KSERVE_CONTAINER), {})
    return _env_value(list(main.get("env") or []), STORAGE_URI_ENV) is not None


def stable_model_memory(isvc: dict[str, Any]) -> ModelRef | None:
    """The stable model a Knative-mode canary recorded in its annotation, if any."""
    raw = isvc.get("metadata", {}).get("annotations", {}).get(STABLE_MODEL_ANNOTATION)
    return ModelRef(**json.loads(raw)) if raw else None


def set_annotation(isvc: dict[str, Any], key: str, value: str | None) -> None:
    """Set an InferenceService annotation, or remove it when ``value`` is None."""
    annotations = isvc.setdefault("metadata", {}).setdefault("annotations", {})
    if value is None:
        annotations.pop(key, None)
    else:
        annotations[key] = value


# ---- canaries behind the transformer ------------------------------------------------------------


def transformer_args(isvc: dict[str, Any]) -> list[str] | None:
    """The args of the transformer container (``spec.transformer.containers[0]``), or ``None`` without one."""
    containers = (isvc.get("spec", {}).get("transformer") or {}).get("containers") or []
    return list(containers[0].get("args") or []) if containers else None


def has_transformer(isvc: dict[str, Any]) -> bool:
    """Whether the InferenceService has a transformer container (the chart's shape): it splits canaries."""
    return transformer_args(isvc) is not None


def routes(isvc: dict[str, Any]) -> list[Route]:
    """The canaries the transformer sends requests to, in the order of their ``--canary`` args.

    Raises:
        RolloutError: A ``--canary`` value is malformed.
    """
    args = transformer_args(isvc) or []
    found = []
    for index, arg in enumerate(args):
        if arg.startswith(CANARY_ARG + "="):
            found.append(Route.parse(arg.split("=", 1)[1]))
        elif arg == CANARY_ARG and index + 1 < len(args):
            found.append(Route.parse(args[index + 1]))
    return found


def with_routes(isvc: dict[str, Any], wanted: list[Route]) -> dict[str, Any]:
    """A copy of the InferenceService whose transformer sends requests to exactly ``wanted``.

    The ``--canary`` args are rewritten where the first one was (at the end when there was none, which is
    where the chart puts them unless it has ``transformer.extraArgs``); the other args keep their order.
    """
    result = copy.deepcopy(isvc)
    container = result["spec"]["transformer"]["containers"][0]
    args = list(container.get("args") or [])
    kept: list[str] = []
    position: int | None = None
    skip_value = False
    for arg in args:
        if skip_value:
            skip_value = False
            continue
        if arg == CANARY_ARG or arg.startswith(CANARY_ARG + "="):
            position = len(kept) if position is None else position
            skip_value = arg == CANARY_ARG
            continue
        kept.append(arg)
    position = len(kept) if position is None else position
    new = [item for route in wanted for item in (CANARY_ARG, route.arg())]
    container["args"] = kept[:position] + new + kept[position:]
    return result


def canary_isvc_name(stable: dict[str, Any], name: str) -> str:
    """The name of canary ``name``'s InferenceService: ``STABLE-NAME``."""
    return f"{name_of(stable)}-{name}"


def canary_host(stable: dict[str, Any], name: str) -> str:
    """The host of the Service KServe derives for the canary's predictor: ``STABLE-NAME-predictor.NS``."""
    return f"{canary_isvc_name(stable, name)}{PREDICTOR_SUFFIX}.{stable['metadata']['namespace']}"


def check_canary_name(stable: dict[str, Any], name: str) -> None:
    """Refuse a canary name the transformer or Kubernetes cannot take.

    Raises:
        RolloutError: ``name`` is not a DNS label, is the transformer's ``stable``, or makes a derived name
            (the Knative revision ``STABLE-NAME-predictor-00001``) longer than 63 characters.
    """
    if not DNS_LABEL.match(name):
        raise RolloutError(f"--canary-name must be a DNS label ({DNS_LABEL.pattern}), got {name!r}")
    if name == STABLE_ARM:
        raise RolloutError(f"--canary-name {STABLE_ARM!r} is the transformer's name for the stable predictor")
    derived = canary_isvc_name(stable, name) + PREDICTOR_SUFFIX + KNATIVE_REVISION_SUFFIX
    if len(derived) > MAX_LABEL:
        raise RolloutError(
            f"KServe and Knative would name the canary's revision {derived} ({len(derived)} characters), "
            f"longer than the {MAX_LABEL} of a label value: choose a shorter --canary-name"
        )


def canary_isvc(stable: dict[str, Any], name: str, model: ModelRef) -> dict[str, Any]:
    """Canary ``name`` of the stable InferenceService: a predictor-only InferenceService serving ``model``.

    Its predictor is the stable's with the canary's model and the pod label ``endpoint: canary``; its labels
    are the stable's plus ``canary-of: STABLE`` and the mode's cluster-local label (only the transformer calls
    it); its annotations the deployment mode and the autoscaler class, so that it runs the way the stable
    does, ``started-by: housing-rollout`` and the stable's Helm release annotations, so that a ``helm
    upgrade`` of that release keeps it as it runs (the chart renders it, Helm adopts it). No transformer: the
    stable's transformer calls it.
    """
    metadata = stable["metadata"]
    annotations = metadata.get("annotations") or {}
    mode = declared_mode(stable)
    copied = (AUTOSCALER_CLASS_ANNOTATION, *HELM_RELEASE_ANNOTATIONS)
    labels = dict(metadata.get("labels") or {}) | {CANARY_OF_LABEL: name_of(stable)}
    canonical = deployment_mode(stable)
    if canonical is not None:
        labels[VISIBILITY_LABELS[canonical]] = CLUSTER_LOCAL
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceService",
        "metadata": {
            "name": canary_isvc_name(stable, name),
            "namespace": metadata["namespace"],
            "labels": labels,
            "annotations": ({MODE_ANNOTATION: mode} if mode else {})
            | {key: annotations[key] for key in copied if key in annotations}
            | {STARTED_BY_ANNOTATION: STARTED_BY},
        },
        "spec": {"predictor": with_model(predictor_spec(stable), model, "canary")},
    }


def helm_canaries(stable: dict[str, Any]) -> list[str]:
    """The canaries the stable's Helm release declares in its values (``rollout.canaries``), by name.

    The chart lists them in the transformer's annotation ``housing.kserve.dev/helm-canaries``; a ``helm
    upgrade`` keeps that list exact, as it changes only with the values.
    """
    transformer = stable.get("spec", {}).get("transformer") or {}
    listed = (transformer.get("annotations") or {}).get(HELM_CANARIES_ANNOTATION, "")
    return [name for name in listed.split(",") if name]
