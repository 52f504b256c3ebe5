"""The InferenceService's shape: every field path ``housing rollout`` reads or writes is named here."""

from __future__ import annotations

import copy
import json
import logging
import re
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
SERVERLESS = "Serverless"
RAW = "RawDeployment"
RAW_MODE_NAMES = {"RawDeployment", "Standard"}
SERVERLESS_MODE_NAMES = {"Serverless", "Knative"}

# The project's predictor takes its model from container args, or from env vars as a fallback.
STORAGE_URI_ARG, SHA256_ARG = "--storage_uri", "--expected_sha256"
STORAGE_URI_ENV, SHA256_ENV = "STORAGE_URI", "EXPECTED_SHA256"
# Pod annotations and label on a predictor spec (the Helm chart writes them; KServe copies them to the pods).
VERSION_ANNOTATION = "housing.kserve.dev/model-version"
SHA256_ANNOTATION = "housing.kserve.dev/model-sha256"
UNPINNED = "unpinned"
ENDPOINT_LABEL = "housing.kserve.dev/endpoint"
# InferenceService annotation: the stable model while a Serverless canary runs (the spec names the canary's).
STABLE_MODEL_ANNOTATION = "housing.kserve.dev/stable-model"
DEFAULT_CANARY_NAME = "canary"
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


def deployment_mode(isvc: dict[str, Any]) -> str | None:
    """``Serverless`` or ``RawDeployment`` as declared by the object, or ``None`` when it does not say.

    Raises:
        RolloutError: The annotation names a mode this command does not know.
    """
    declared = isvc.get("metadata", {}).get("annotations", {}).get(MODE_ANNOTATION)
    declared = declared or isvc.get("status", {}).get("deploymentMode")
    if declared is None:
        return None
    if declared in RAW_MODE_NAMES:
        return RAW
    if declared in SERVERLESS_MODE_NAMES:
        return SERVERLESS
    raise RolloutError(f"unknown deployment mode {declared!r} (annotation {MODE_ANNOTATION})")


def predictor_spec(isvc: dict[str, Any]) -> dict[str, Any]:
    """``spec.predictor`` (the stable predictor)."""
    return dict(isvc.get("spec", {}).get("predictor") or {})


def canary_entries(isvc: dict[str, Any]) -> list[dict[str, Any]]:
    """``spec.canary``: the named canaries of RawDeployment mode, each ``{trafficPercent, predictor}``."""
    return list(isvc.get("spec", {}).get("canary") or [])


def canary_name(entry: dict[str, Any]) -> str:
    """The name of a ``spec.canary`` entry (its ``predictor.name``)."""
    return str(entry.get("predictor", {}).get("name") or "")


def serverless_canary_percent(isvc: dict[str, Any]) -> int | None:
    """The Serverless canary's traffic share, or ``None`` when no canary runs (unset or 100)."""
    percent = predictor_spec(isvc).get("canaryTrafficPercent")
    return None if percent is None or int(percent) == 100 else int(percent)


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
    that the scrape configuration turns into the ``endpoint`` label of every metric.
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


def stable_model_memory(isvc: dict[str, Any]) -> ModelRef | None:
    """The stable model a Serverless canary recorded in its annotation, if any."""
    raw = isvc.get("metadata", {}).get("annotations", {}).get(STABLE_MODEL_ANNOTATION)
    return ModelRef(**json.loads(raw)) if raw else None


def set_annotation(isvc: dict[str, Any], key: str, value: str | None) -> None:
    """Set an InferenceService annotation, or remove it when ``value`` is None."""
    annotations = isvc.setdefault("metadata", {}).setdefault("annotations", {})
    if value is None:
        annotations.pop(key, None)
    else:
        annotations[key] = value
