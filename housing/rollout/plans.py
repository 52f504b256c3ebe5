"""Plans: pure functions from the InferenceService read to the one wanted; refusals come before any write."""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import asdict
from typing import Any

from housing.rollout.objects import (
    DEFAULT_CANARY_NAME,
    DNS_LABEL,
    MODE_ANNOTATION,
    RAW,
    SERVERLESS,
    SHA256_HEX,
    STABLE_MODEL_ANNOTATION,
    ModelRef,
    RolloutError,
    canary_entries,
    canary_name,
    deployment_mode,
    predictor_spec,
    read_model,
    serverless_canary_percent,
    set_annotation,
    stable_model_memory,
    with_model,
)

log = logging.getLogger(__name__)


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
        remembered = stable_model_memory(isvc) if running is not None else None
        stable_model = remembered or stable_model
        if (stable_model.storage_uri, stable_model.sha256) == (model.storage_uri, model.sha256):
            raise RolloutError("the canary's model is the stable model; nothing to compare")
        wanted["spec"]["predictor"] = with_model(stable, model, "canary") | {"canaryTrafficPercent": percent}
        set_annotation(wanted, STABLE_MODEL_ANNOTATION, json.dumps(asdict(stable_model), sort_keys=True))
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
        set_annotation(wanted, STABLE_MODEL_ANNOTATION, None)
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
        stable = stable_model_memory(isvc)
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
        set_annotation(wanted, STABLE_MODEL_ANNOTATION, None)
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
