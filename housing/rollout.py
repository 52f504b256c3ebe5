"""``housing rollout``: canary rollouts of the housing InferenceService, decided by its own metrics.

Sub-commands:

- ``status NAME``: model per endpoint (storage URI, sha256, version), traffic split, readiness, URLs.
- ``canary NAME --model-uri URI --sha256 HEX --percent P``: start a canary.
- ``analyze NAME --prometheus URL``: compare canary and stable against SLOs; exit 0 promote, 1 roll back,
  2 inconclusive (``--auto`` applies the verdict).
- ``promote NAME`` / ``rollback NAME``: end the canary one way or the other.

KServe has two ways to run a canary, and each ignores the other's fields without a word:

- **Serverless** (Knative): the predictor spec names the *new* model and
  ``spec.predictor.canaryTrafficPercent`` sends that share of traffic to the latest revision; the rest stays
  on the previous rolled-out revision. The spec then no longer names the stable model, so ``canary`` records
  it in an annotation that ``rollback`` restores.
- **RawDeployment / Standard** (KServe >= 0.20): ``spec.canary`` is a list of named canaries, each a full
  predictor spec with its own ``trafficPercent``; the stable predictor is left alone.

The mode is read from the object (annotation ``serving.kserve.io/deploymentMode``, else
``status.deploymentMode``); when neither says, the command refuses rather than guess. Changes are JSON merge
patches carrying the ``metadata.resourceVersion`` that was read, so the API server refuses them (409) if
someone changed the object in between; the command then reads it again, re-checks and retries.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import re
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

HELP = "Canary rollouts of the InferenceService: status, canary, analyze, promote, rollback."

# --------------------------------------------------------------------------------------------------
# The InferenceService's shape: every field path this command reads or writes is named in this section.
# --------------------------------------------------------------------------------------------------

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


def _stable_model_memory(isvc: dict[str, Any]) -> ModelRef | None:
    raw = isvc.get("metadata", {}).get("annotations", {}).get(STABLE_MODEL_ANNOTATION)
    return ModelRef(**json.loads(raw)) if raw else None


def _set_annotation(isvc: dict[str, Any], key: str, value: str | None) -> None:
    annotations = isvc.setdefault("metadata", {}).setdefault("annotations", {})
    if value is None:
        annotations.pop(key, None)
    else:
        annotations[key] = value


# --------------------------------------------------------------------------------------------------
# Plans: pure functions from the object read to the object wanted. Refusals are raised here, before any write.
# --------------------------------------------------------------------------------------------------


def _require_mode(isvc: dict[str, Any]) -> str:
    mode = deployment_mode(isvc)
    if mode is None:
        raise RolloutError(
            f"cannot tell the deployment mode: the object has no {MODE_ANNOTATION} annotation and no "
            "status.deploymentMode; a canary written for the wrong mode is silently ignored by KServe, so "
            f"set the annotation (RawDeployment, Standard or Serverless) first"
        )
    spec = isvc.get("spec", {})
    if mode == RAW and predictor_spec(isvc).get("canaryTrafficPercent") is not None:
        raise RolloutError(
            "spec.predictor.canaryTrafficPercent is set, but KServe ignores it in RawDeployment mode "
            "(canaries go in spec.canary there); remove it first"
        )
    if mode == SERVERLESS and spec.get("canary"):
        raise RolloutError("spec.canary is set, but KServe ignores it in Serverless mode; remove it first")
    return mode


def plan_canary(
    isvc: dict[str, Any],
    model: ModelRef,
    percent: int,
    name: str = DEFAULT_CANARY_NAME,
    replace: bool = False,
) -> dict[str, Any]:
    """The InferenceService with a canary serving ``model`` to ``percent`` % of requests.

    Raises:
        RolloutError: The request would be ignored or rejected by KServe, or a canary already runs and
            ``replace`` is false.
    """
    if not 0 <= percent <= 100:
        raise RolloutError(f"--percent must be in [0, 100], got {percent}")
    if model.sha256 is not None and not SHA256_HEX.match(model.sha256):
        raise RolloutError(f"--sha256 must be 64 lower-case hex digits, got {model.sha256!r}")
    if not DNS_LABEL.match(name):
        raise RolloutError(f"--canary-name must be a DNS label ({DNS_LABEL.pattern}), got {name!r}")
    mode = _require_mode(isvc)
    wanted = copy.deepcopy(isvc)
    stable = predictor_spec(isvc)
    stable_model = read_model(stable)
    if stable_model.storage_uri is None:
        raise RolloutError("the predictor names no model (no --storage_uri, STORAGE_URI or model.storageUri)")
    if mode == SERVERLESS:
        running = serverless_canary_percent(isvc)
        if running is not None and not replace:
            raise RolloutError(
                f"a canary already gets {running}% of traffic; promote or roll back, or --replace"
            )
        # While a canary runs the spec names the canary's model; the stable one is the remembered one.
        remembered = _stable_model_memory(isvc) if running is not None else None
        stable_model = remembered or stable_model
        if (stable_model.storage_uri, stable_model.sha256) == (model.storage_uri, model.sha256):
            raise RolloutError("the canary's model is the stable model; nothing to compare")
        wanted["spec"]["predictor"] = with_model(stable, model, "canary") | {"canaryTrafficPercent": percent}
        _set_annotation(wanted, STABLE_MODEL_ANNOTATION, json.dumps(asdict(stable_model), sort_keys=True))
        return wanted
    running_names = [canary_name(entry) for entry in canary_entries(isvc)]
    if running_names and not replace:
        raise RolloutError(
            f"canary {', '.join(running_names)} already runs; promote or roll back, or --replace"
        )
    if name == stable.get("name"):
        raise RolloutError(f"--canary-name {name!r} is the stable predictor's name")
    if (stable_model.storage_uri, stable_model.sha256) == (model.storage_uri, model.sha256):
        raise RolloutError("the canary's model is the stable model; nothing to compare")
    canary_predictor = with_model({k: v for k, v in stable.items() if k != "name"}, model, "canary") | {
        "name": name
    }
    wanted["spec"]["canary"] = [{"trafficPercent": percent, "predictor": canary_predictor}]
    return wanted


def _pick_canary(isvc: dict[str, Any], name: str | None) -> dict[str, Any]:
    entries = canary_entries(isvc)
    if not entries:
        raise RolloutError("no canary runs (spec.canary is empty)")
    if name is None:
        if len(entries) > 1:
            names = ", ".join(canary_name(entry) for entry in entries)
            raise RolloutError(f"several canaries run ({names}); say which with --canary-name")
        return entries[0]
    for entry in entries:
        if canary_name(entry) == name:
            return entry
    raise RolloutError(f"no canary named {name!r} (running: {', '.join(map(canary_name, entries))})")


def plan_promote(isvc: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    """The InferenceService with the canary's model serving all traffic and no canary left.

    Raises:
        RolloutError: No canary runs, or the object is inconsistent with its mode.
    """
    mode = _require_mode(isvc)
    wanted = copy.deepcopy(isvc)
    if mode == SERVERLESS:
        if serverless_canary_percent(isvc) is None:
            raise RolloutError("no canary runs (spec.predictor.canaryTrafficPercent is unset or 100)")
        # The spec already names the canary's model: without the split all traffic goes to it.
        promoted = with_model(predictor_spec(isvc), read_model(predictor_spec(isvc)), "default")
        promoted.pop("canaryTrafficPercent", None)
        wanted["spec"]["predictor"] = promoted
        _set_annotation(wanted, STABLE_MODEL_ANNOTATION, None)
        return wanted
    entry = _pick_canary(isvc, name)
    wanted["spec"]["predictor"] = with_model(predictor_spec(isvc), read_model(entry["predictor"]), "default")
    wanted["spec"].pop("canary", None)
    return wanted


def plan_rollback(isvc: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    """The InferenceService without the canary (or without the named one); the stable model is untouched.

    In Serverless mode the stable model is restored from the annotation ``canary`` wrote. Without it (a canary
    started by hand) the split is pinned at 0 %, KServe's documented rollback, and a warning says that the
    spec still names the canary's model.

    Raises:
        RolloutError: No canary runs, or the object is inconsistent with its mode.
    """
    mode = _require_mode(isvc)
    wanted = copy.deepcopy(isvc)
    if mode == SERVERLESS:
        if serverless_canary_percent(isvc) is None:
            raise RolloutError("no canary runs (spec.predictor.canaryTrafficPercent is unset or 100)")
        stable = _stable_model_memory(isvc)
        if stable is None:
            log.warning(
                "no %s annotation: pinning canaryTrafficPercent at 0; the spec still names the "
                "canary's model until you set the stable one again",
                STABLE_MODEL_ANNOTATION,
            )
            wanted["spec"]["predictor"]["canaryTrafficPercent"] = 0
            return wanted
        restored = with_model(predictor_spec(isvc), stable, "default")
        restored.pop("canaryTrafficPercent", None)
        wanted["spec"]["predictor"] = restored
        _set_annotation(wanted, STABLE_MODEL_ANNOTATION, None)
        return wanted
    entry = _pick_canary(isvc, name)
    remaining = [other for other in canary_entries(isvc) if other is not entry]
    if remaining:
        wanted["spec"]["canary"] = remaining
    else:
        wanted["spec"].pop("canary", None)
    return wanted


def merge_patch(current: Any, wanted: Any) -> Any:
    """The RFC 7386 JSON merge patch that turns ``current`` into ``wanted`` (lists are replaced whole)."""
    if not isinstance(current, dict) or not isinstance(wanted, dict):
        return wanted
    patch: dict[str, Any] = {key: None for key in current if key not in wanted}
    for key, value in wanted.items():
        if key not in current:
            patch[key] = value
        elif current[key] != value:
            patch[key] = merge_patch(current[key], value)
    return patch


def patch_for(current: dict[str, Any], wanted: dict[str, Any]) -> dict[str, Any]:
    """The merge patch from ``current`` to ``wanted``, pinned to ``current``'s resourceVersion.

    The API server answers 409 Conflict when the object's resourceVersion differs: optimistic concurrency.
    """
    patch = merge_patch(current, wanted)
    patch.setdefault("metadata", {})["resourceVersion"] = current["metadata"]["resourceVersion"]
    return patch


# --------------------------------------------------------------------------------------------------
# The Kubernetes API.
# --------------------------------------------------------------------------------------------------

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
CONFLICT_ATTEMPTS = 3


class Cluster:
    """InferenceServices through the kubernetes client's ``CustomObjectsApi``.

    Configuration as kubectl finds it: ``--kubeconfig``/``--context`` when given, the in-cluster service
    account when running in a pod, otherwise ``$KUBECONFIG`` or ``~/.kube/config``.
    """

    def __init__(
        self, kubeconfig: str | None = None, context: str | None = None, namespace: str | None = None
    ) -> None:
        from kubernetes import client, config

        if kubeconfig is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config()
            api_client = client.ApiClient()
            default_namespace = SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
        else:
            try:
                api_client = config.new_client_from_config(config_file=kubeconfig, context=context)
                contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
                if context is not None:
                    active = next(item for item in contexts if item["name"] == context)
            except (config.ConfigException, OSError, StopIteration) as error:
                raise RolloutError(f"no usable kubeconfig: {error}") from error
            default_namespace = active.get("context", {}).get("namespace", "default")
        self.namespace = namespace or default_namespace
        self.api = client.CustomObjectsApi(api_client)

    def _call(self, name: str, action: Callable[[], Any]) -> Any:
        from kubernetes.client.exceptions import ApiException

        try:
            return action()
        except ApiException as error:
            where = f"inferenceservice {self.namespace}/{name}"
            if error.status == 404:
                raise RolloutError(
                    f"{where} not found (namespace or name wrong, or KServe not installed)"
                ) from None
            if error.status == 403:
                raise RolloutError(
                    f"forbidden: needs get and patch on inferenceservices.{GROUP} in "
                    f"{self.namespace}: {_api_message(error)}"
                ) from None
            if error.status == 409:
                raise
            raise RolloutError(
                f"{where}: API server answered {error.status}: {_api_message(error)}"
            ) from None

    def get(self, name: str) -> dict[str, Any]:
        """Read one InferenceService."""
        return dict(
            self._call(
                name,
                lambda: self.api.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name),
            )
        )

    def patch(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """Apply a JSON merge patch; 409 propagates as ``ApiException`` for the caller to retry."""
        return dict(
            self._call(
                name,
                lambda: self.api.patch_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    self.namespace,
                    PLURAL,
                    name,
                    patch,
                    _content_type="application/merge-patch+json",
                ),
            )
        )

    def change(
        self,
        name: str,
        plan: Callable[[dict[str, Any]], dict[str, Any]],
        dry_run: bool = False,
        out: Any = None,
    ) -> dict[str, Any]:
        """Read, plan, patch; on a 409 conflict read again and re-plan (the plan re-checks its refusals).

        Args:
            name: The InferenceService.
            plan: From the object read to the object wanted (raises :class:`RolloutError` to refuse).
            dry_run: Print the patch instead of sending it.
            out: Where the dry-run patch goes.

        Returns:
            The object as the API server returned it (the object read, in a dry run).
        """
        from kubernetes.client.exceptions import ApiException

        out = out or sys.stdout
        for attempt in range(1, CONFLICT_ATTEMPTS + 1):
            current = self.get(name)
            patch = patch_for(current, plan(current))
            if dry_run:
                print(json.dumps(patch, indent=2, sort_keys=True), file=out)
                return current
            try:
                return self.patch(name, patch)
            except ApiException as error:
                log.warning(
                    "conflict on %s/%s (attempt %d of %d): %s",
                    self.namespace,
                    name,
                    attempt,
                    CONFLICT_ATTEMPTS,
                    _api_message(error),
                )
        raise RolloutError(
            f"inferenceservice {self.namespace}/{name} kept changing under us "
            f"({CONFLICT_ATTEMPTS} conflicts in a row); try again"
        )


def _api_message(error: Any) -> str:
    try:
        return str(json.loads(error.body).get("message"))
    except (TypeError, ValueError, AttributeError):
        return str(error.reason)


# --------------------------------------------------------------------------------------------------
# status
# --------------------------------------------------------------------------------------------------


def describe(isvc: dict[str, Any]) -> dict[str, Any]:
    """What ``status`` shows: mode, endpoints (model, traffic), readiness and URLs, as plain data."""
    mode = deployment_mode(isvc)
    status = isvc.get("status") or {}
    stable = predictor_spec(isvc)
    endpoints: list[dict[str, Any]] = []
    if mode == RAW:
        canaries = canary_entries(isvc)
        ready = {item.get("name"): item.get("ready") for item in status.get("canaryStatuses") or []}
        stable_share = 100 - sum(int(entry.get("trafficPercent", 0)) for entry in canaries)
        endpoints.append({"endpoint": "default", "percent": stable_share, **asdict(read_model(stable))})
        for entry in canaries:
            endpoints.append(
                {
                    "endpoint": f"canary/{canary_name(entry)}",
                    "percent": entry.get("trafficPercent"),
                    "ready": ready.get(canary_name(entry)),
                    **asdict(read_model(entry["predictor"])),
                }
            )
    else:
        percent = serverless_canary_percent(isvc)
        memory = _stable_model_memory(isvc)
        if percent is None:
            endpoints.append({"endpoint": "default", "percent": 100, **asdict(read_model(stable))})
        else:
            previous = status.get("components", {}).get("predictor", {}).get("previousRolledoutRevision")
            stable_model = asdict(memory) if memory else {"storage_uri": f"(revision {previous})"}
            endpoints.append({"endpoint": "default", "percent": 100 - percent, **stable_model})
            endpoints.append({"endpoint": "canary", "percent": percent, **asdict(read_model(stable))})
    components = status.get("components") or {}
    return {
        "name": isvc.get("metadata", {}).get("name"),
        "namespace": isvc.get("metadata", {}).get("namespace"),
        "mode": mode or "unknown",
        "endpoints": endpoints,
        "conditions": [
            {key: item.get(key) for key in ("type", "status", "reason", "message") if item.get(key)}
            for item in status.get("conditions") or []
        ],
        "urls": {
            "url": status.get("url"),
            "address": (status.get("address") or {}).get("url"),
            **{
                f"{component}.{key}": value
                for component, fields in components.items()
                for key, value in fields.items()
                if key in ("url", "restUrl", "grpcUrl") and value
            },
        },
        "revision_traffic": {
            component: fields["traffic"] for component, fields in components.items() if fields.get("traffic")
        },
    }


def print_description(info: dict[str, Any], out: Any = None) -> None:
    """Human-readable ``status`` output."""
    out = out or sys.stdout
    print(f"InferenceService {info['namespace']}/{info['name']}  mode: {info['mode']}", file=out)
    print("\nENDPOINT         TRAFFIC  VERSION       SHA256        STORAGE URI", file=out)
    for item in info["endpoints"]:
        sha = (item.get("sha256") or "-")[:12]
        print(
            f"{item['endpoint']:<16} {item['percent']!s:>6}%  {item.get('version') or '-':<13} {sha:<13} "
            f"{item.get('storage_uri') or '-'}",
            file=out,
        )
    print("\nCONDITION            STATUS  REASON / MESSAGE", file=out)
    for condition in info["conditions"] or [{"type": "(none reported yet)", "status": ""}]:
        detail = " ".join(filter(None, [condition.get("reason"), condition.get("message")]))
        print(f"{condition['type']:<20} {condition.get('status', ''):<7} {detail}", file=out)
    for component, traffic in info["revision_traffic"].items():
        for target in traffic:
            print(
                f"revision {component}: {target.get('revisionName')} {target.get('percent')}%"
                f"{' (latest)' if target.get('latestRevision') else ''}"
                f"{' tag ' + target['tag'] if target.get('tag') else ''}",
                file=out,
            )
    print("\nURLS", file=out)
    for key, value in info["urls"].items():
        if value:
            print(f"{key:<24} {value}", file=out)


# --------------------------------------------------------------------------------------------------
# analyze
# --------------------------------------------------------------------------------------------------

PROMOTE, ROLLBACK, INCONCLUSIVE = 0, 1, 2
VERDICTS = {PROMOTE: "promote", ROLLBACK: "roll back", INCONCLUSIVE: "inconclusive"}
ENDPOINTS = ("default", "canary")


@dataclass(frozen=True)
class Slo:
    """The canary's service-level objectives (defaults from the original system's promises).

    Attributes:
        max_error_rate: Largest share of requests answered with an error code (``error_codes``).
        max_p95_seconds: Largest 95th percentile of the request duration.
        max_ks_pvalue: Significance level: a prediction shift counts when the KS p-value is at most this...
        max_ks_statistic: ...and the KS distance between the binned prediction CDFs exceeds this.
        min_requests: Fewer canary requests in the window than this is "inconclusive".
        error_codes: Regex over the ``code`` label that counts as an error.
    """

    max_error_rate: float = 0.01
    max_p95_seconds: float = 0.5
    max_ks_pvalue: float = 0.01
    max_ks_statistic: float = 0.2
    min_requests: int = 20
    error_codes: str = "[45].."

    @classmethod
    def from_file(cls, path: str | Path) -> Slo:
        """Read an SLO file (YAML or JSON, keys as the attributes; flags override it).

        Raises:
            RolloutError: The file is unreadable, not a mapping, or has an unknown key or a wrong value.
        """
        import yaml

        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as error:
            raise RolloutError(f"cannot read the SLO file {path}: {error}") from error
        if not isinstance(data, dict):
            raise RolloutError(f"{path}: an SLO file is a mapping of objective to value")
        defaults = asdict(cls())
        unknown = set(data) - set(defaults)
        if unknown:
            raise RolloutError(f"{path}: unknown SLO keys {sorted(unknown)}; known: {sorted(defaults)}")
        values = {}
        for key, value in data.items():
            kind = type(defaults[key])
            try:
                values[key] = kind(value)
            except (TypeError, ValueError):
                raise RolloutError(f"{path}: {key} must be a {kind.__name__}, got {value!r}") from None
        return cls(**values)


SLO_HELP = {
    "max_error_rate": "largest share of canary requests answered with an error code",
    "max_p95_seconds": "largest 95th percentile of the canary's request duration",
    "max_ks_pvalue": "a prediction shift counts when the KS p-value is at most this...",
    "max_ks_statistic": "...and the KS distance of the prediction distributions exceeds this",
    "min_requests": "fewer canary requests in the window is 'inconclusive'",
    "error_codes": "regex over the code label that counts as an error",
}


@dataclass(frozen=True)
class Check:
    """One row of the verdict table."""

    name: str
    stable: float | None
    canary: float | None
    objective: str
    verdict: int


class Prometheus:
    """Instant queries against the Prometheus HTTP API."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The result vector of an instant query.

        Raises:
            RolloutError: Prometheus is unreachable or refuses the query.
        """
        import httpx

        try:
            response = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=self.timeout)
            body = response.json()
        except (httpx.HTTPError, ValueError) as error:
            raise RolloutError(f"Prometheus at {self.url} unreachable: {error}") from error
        if body.get("status") != "success":
            raise RolloutError(f"Prometheus refused {promql!r}: {body.get('error')}")
        return list(body["data"]["result"])

    def by_endpoint(self, promql: str) -> dict[str, float]:
        """``{endpoint: value}`` of a query aggregated ``by (endpoint)``."""
        return {item["metric"].get("endpoint", ""): float(item["value"][1]) for item in self.query(promql)}


def binned_ks(buckets: dict[str, dict[float, float]]) -> tuple[float, float] | None:
    """Two-sample Kolmogorov-Smirnov on histogram buckets: ``(D, p-value)``, or ``None`` without data.

    Prometheus keeps the predictions as cumulative bucket counts, so both empirical CDFs are known only at the
    bucket bounds. D is the largest difference between them there, a lower bound of the KS distance of the raw
    values (the test is conservative: a shift inside one bucket is invisible). The p-value is the asymptotic
    Kolmogorov distribution at ``D * sqrt(n m / (n + m))``.

    Args:
        buckets: ``{endpoint: {upper bound: cumulative count}}`` for ``default`` and ``canary``
            (counts may be fractional: ``increase()`` extrapolates).
    """
    from scipy.special import kolmogorov

    if not all(buckets.get(endpoint) for endpoint in ENDPOINTS):
        return None
    stable, canary = buckets["default"], buckets["canary"]
    n, m = stable.get(math.inf, 0.0), canary.get(math.inf, 0.0)
    if n < 1 or m < 1:
        return None
    bounds = sorted(set(stable) | set(canary))
    distance = max(abs(stable.get(bound, 0.0) / n - canary.get(bound, 0.0) / m) for bound in bounds)
    return distance, float(kolmogorov(distance * math.sqrt(n * m / (n + m))))


def _requests(
    prometheus: Prometheus, sel: str, window: str, error_codes: str
) -> tuple[dict[str, float], dict[str, float]]:
    """Requests and errors per endpoint, from one query by code.

    One query keeps errors <= requests even though ``increase()`` extrapolates each series on its own.
    """
    total: dict[str, float] = {}
    errors: dict[str, float] = {}
    promql = f"sum by (endpoint, code) (increase(housing_requests_total{{{sel}}}[{window}]))"
    for item in prometheus.query(promql):
        endpoint, count = item["metric"].get("endpoint", ""), float(item["value"][1])
        total[endpoint] = total.get(endpoint, 0.0) + count
        if re.fullmatch(error_codes, item["metric"].get("code", "")):
            errors[endpoint] = errors.get(endpoint, 0.0) + count
    return total, errors


def _p95(prometheus: Prometheus, sel: str, window: str) -> dict[str, float]:
    """95th percentile of the whole request's duration per endpoint (KServe's predict step as a fallback)."""
    for histogram in ("housing_request_duration_seconds", "request_predict_seconds"):
        promql = (
            f"histogram_quantile(0.95, sum by (endpoint, le) (rate({histogram}_bucket{{{sel}}}[{window}])))"
        )
        found = {key: value for key, value in prometheus.by_endpoint(promql).items() if not math.isnan(value)}
        if found:
            return found
    return {}


def _prediction_buckets(prometheus: Prometheus, sel: str, window: str) -> dict[str, dict[float, float]]:
    """``{endpoint: {upper bound: predictions counted}}`` over the window."""
    buckets: dict[str, dict[float, float]] = {}
    promql = f"sum by (endpoint, le) (increase(housing_predicted_value_bucket{{{sel}}}[{window}]))"
    for item in prometheus.query(promql):
        endpoint = item["metric"].get("endpoint", "")
        buckets.setdefault(endpoint, {})[float(item["metric"]["le"])] = float(item["value"][1])
    return buckets


def _at_most(value: float | None, limit: float, enough: bool) -> int:
    if not enough or value is None:
        return INCONCLUSIVE
    return PROMOTE if value <= limit else ROLLBACK


def analyze(
    prometheus: Prometheus, slo: Slo, window: str = "10m", selector: str = 'component="predictor"'
) -> list[Check]:
    """Compare the canary with the stable endpoint over ``window`` and judge each SLO.

    Metrics (scrape targets carry ``endpoint="default"|"canary"``): ``up``, ``housing_requests_total`` by
    ``code``, ``housing_request_duration_seconds`` (else KServe's ``request_predict_seconds``) and the
    ``housing_predicted_value`` buckets (compared with :func:`binned_ks`).

    Args:
        prometheus: Where the metrics are.
        slo: The objectives.
        window: PromQL range, e.g. ``10m``.
        selector: Label matchers every query gets, e.g. ``component="predictor",namespace="prod"``.

    Returns:
        One :class:`Check` per row of the verdict table.
    """
    up = prometheus.by_endpoint(f"min by (endpoint) (min_over_time(up{{{selector}}}[{window}]))")
    total, errors = _requests(prometheus, selector, window, slo.error_codes)
    error_rate = {endpoint: errors.get(endpoint, 0.0) / count for endpoint, count in total.items() if count}
    p95 = _p95(prometheus, selector, window)
    ks = binned_ks(_prediction_buckets(prometheus, selector, window))
    enough = total.get("canary", 0.0) >= slo.min_requests
    canary_up = up.get("canary")
    if not enough or ks is None:
        ks_verdict = INCONCLUSIVE
    else:
        ks_verdict = ROLLBACK if ks[1] <= slo.max_ks_pvalue and ks[0] > slo.max_ks_statistic else PROMOTE
    return [
        Check("canary up", up.get("default"), canary_up, "scraped every time",
              INCONCLUSIVE if canary_up is None else PROMOTE if canary_up == 1 else ROLLBACK),
        Check("requests", total.get("default"), total.get("canary"), f">= {slo.min_requests}",
              PROMOTE if enough else INCONCLUSIVE),
        Check("error rate", error_rate.get("default"), error_rate.get("canary"), f"<= {slo.max_error_rate:g}",
              _at_most(error_rate.get("canary"), slo.max_error_rate, enough)),
        Check("p95 latency (s)", p95.get("default"), p95.get("canary"), f"<= {slo.max_p95_seconds:g}",
              _at_most(p95.get("canary"), slo.max_p95_seconds, enough)),
        Check("prediction KS D", None, ks[0] if ks else None,
              f"<= {slo.max_ks_statistic:g} or p > {slo.max_ks_pvalue:g}", ks_verdict),
        Check("prediction KS p", None, ks[1] if ks else None, "(with the row above)", ks_verdict),
    ]  # fmt: skip


def verdict(checks: list[Check]) -> int:
    """Roll back if any check fails, else inconclusive if any lacks data, else promote."""
    verdicts = {check.verdict for check in checks}
    return ROLLBACK if ROLLBACK in verdicts else INCONCLUSIVE if INCONCLUSIVE in verdicts else PROMOTE


def print_checks(checks: list[Check], out: Any = None) -> None:
    """The verdict table and the recommendation."""
    out = out or sys.stdout

    def show(value: float | None) -> str:
        return "-" if value is None else f"{value:.4g}"

    print(f"{'CHECK':<17} {'STABLE':>10} {'CANARY':>10}  {'OBJECTIVE':<26} RESULT", file=out)
    for check in checks:
        result = {PROMOTE: "ok", ROLLBACK: "FAIL", INCONCLUSIVE: "no data"}[check.verdict]
        values = f"{show(check.stable):>10} {show(check.canary):>10}"
        print(f"{check.name:<17} {values}  {check.objective:<26} {result}", file=out)
    print(f"\nrecommendation: {VERDICTS[verdict(checks)]}", file=out)


# --------------------------------------------------------------------------------------------------
# The command line.
# --------------------------------------------------------------------------------------------------


def configure(parser: argparse.ArgumentParser) -> None:
    """Declare the sub-commands and their arguments."""
    cluster = argparse.ArgumentParser(add_help=False)
    cluster.add_argument("name", help="InferenceService name")
    cluster.add_argument("-n", "--namespace", help="namespace (default: the context's, else 'default')")
    cluster.add_argument(
        "--kubeconfig", help="kubeconfig file (default: in-cluster, $KUBECONFIG, ~/.kube/config)"
    )
    cluster.add_argument("--context", help="kubeconfig context (default: the current one)")
    dry = argparse.ArgumentParser(add_help=False)
    dry.add_argument(
        "--dry-run", action="store_true", help="print the JSON merge patch instead of applying it"
    )
    named = argparse.ArgumentParser(add_help=False)
    named.add_argument("--canary-name", help="which canary (RawDeployment mode; default: the only one)")

    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    status = actions.add_parser("status", parents=[cluster], help="models, traffic split, readiness and URLs")
    status.add_argument("-o", "--output", choices=["table", "json"], default="table")

    canary = actions.add_parser("canary", parents=[cluster, dry], help="start a canary with a new model")
    canary.add_argument("--model-uri", required=True, help="storage URI of the canary's model artifact")
    canary.add_argument("--sha256", required=True, help="sha256 of its model.joblib (model.json 'sha256')")
    canary.add_argument("--model-version", help="version to record (model.json 'version')")
    canary.add_argument("--percent", type=int, required=True, help="share of traffic for the canary, 0-100")
    canary.add_argument(
        "--canary-name",
        default=DEFAULT_CANARY_NAME,
        help="name of the spec.canary entry (RawDeployment mode; default: %(default)s)",
    )
    canary.add_argument("--replace", action="store_true", help="replace a canary that already runs")

    analyze_parser = actions.add_parser(
        "analyze",
        parents=[cluster],
        help="compare canary and stable in Prometheus; exit 0 promote, 1 roll back, 2 inconclusive",
    )
    analyze_parser.add_argument("--prometheus", required=True, help="Prometheus base URL")
    analyze_parser.add_argument("--window", default="10m", help="PromQL range (default: %(default)s)")
    analyze_parser.add_argument(
        "--selector",
        default='component="predictor"',
        help="extra PromQL label matchers (default: %(default)s)",
    )
    analyze_parser.add_argument("--slo", help="SLO file (YAML/JSON; keys as the flags, with underscores)")
    defaults = Slo()
    for field_name, value in asdict(defaults).items():
        analyze_parser.add_argument(
            "--" + field_name.replace("_", "-"),
            type=type(value),
            default=None,
            help=f"{SLO_HELP[field_name]} (default: {value})",
        )
    analyze_parser.add_argument("--auto", action="store_true", help="promote or roll back as recommended")
    analyze_parser.add_argument("--canary-name", help="which canary --auto acts on (RawDeployment mode)")

    actions.add_parser("promote", parents=[cluster, dry, named], help="the canary becomes stable")
    actions.add_parser("rollback", parents=[cluster, dry, named], help="remove the canary; stable untouched")


def run(args: argparse.Namespace) -> int:
    """Run one ``housing rollout`` action; errors are one line on stderr and exit code 1 (analyze: 3)."""
    logging.getLogger("httpx").setLevel(logging.WARNING)  # else one log line per Prometheus query
    try:
        return _run(args)
    except RolloutError as error:
        print(f"housing rollout {args.action}: {error}", file=sys.stderr)
        return 3 if args.action == "analyze" else 1


def _run(args: argparse.Namespace) -> int:
    if args.action == "analyze":
        slo = Slo.from_file(args.slo) if args.slo else Slo()
        overrides = {name: getattr(args, name) for name in asdict(slo) if getattr(args, name) is not None}
        slo = Slo(**(asdict(slo) | overrides))
        checks = analyze(Prometheus(args.prometheus), slo, args.window, args.selector)
        print_checks(checks)
        outcome = verdict(checks)
        if args.auto and outcome != INCONCLUSIVE:
            plan = plan_promote if outcome == PROMOTE else plan_rollback
            cluster = Cluster(args.kubeconfig, args.context, args.namespace)
            cluster.change(args.name, lambda isvc: plan(isvc, args.canary_name))
            print(f"applied: {VERDICTS[outcome]} of {cluster.namespace}/{args.name}")
        return outcome

    cluster = Cluster(args.kubeconfig, args.context, args.namespace)
    if args.action == "status":
        info = describe(cluster.get(args.name))
        if args.output == "json":
            print(json.dumps(info, indent=2, sort_keys=True))
        else:
            print_description(info)
        return 0
    if args.action == "canary":
        model = ModelRef(args.model_uri, args.sha256, args.model_version)
        cluster.change(
            args.name,
            lambda isvc: plan_canary(isvc, model, args.percent, args.canary_name, args.replace),
            dry_run=args.dry_run,
        )
    elif args.action == "promote":
        cluster.change(args.name, lambda isvc: plan_promote(isvc, args.canary_name), dry_run=args.dry_run)
    else:
        cluster.change(args.name, lambda isvc: plan_rollback(isvc, args.canary_name), dry_run=args.dry_run)
    if not args.dry_run:
        print(f"{args.action}: {cluster.namespace}/{args.name} patched")
    return 0
