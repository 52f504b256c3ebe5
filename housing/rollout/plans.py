"""Plans: pure functions from the objects read to the steps that change them; refusals come before any write.

A plan is a list of steps (:class:`Create`, :class:`WaitReady`, :class:`Change`, :class:`Delete`) that
``cluster.py`` carries out in order. A :class:`Change` holds a function from the object to the object wanted,
not a fixed patch: after a 409 Conflict it runs again on a fresh read, so it re-checks what it relies on.

With a transformer (the chart's shape), in either deployment mode, a canary is its own predictor-only
InferenceService and the transformer splits the traffic (``--canary NAME=PERCENT,HOST``). Without one,
KServe's own mechanisms are used where its webhook admits them: ``canaryTrafficPercent`` in Knative mode,
``spec.canary`` in Standard mode when KServe can see the stable predictor's model.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from housing.rollout.objects import (
    DEFAULT_CANARY_NAME,
    DNS_LABEL,
    KNATIVE,
    MODE_ANNOTATION,
    SHA256_ARG,
    SHA256_HEX,
    STABLE_MODEL_ANNOTATION,
    STANDARD,
    ModelRef,
    RolloutError,
    Route,
    canary_entries,
    canary_host,
    canary_isvc,
    canary_isvc_name,
    canary_name,
    check_canary_name,
    deployment_mode,
    has_transformer,
    helm_canaries,
    knative_canary_percent,
    kserve_sees_a_model,
    name_of,
    predictor_spec,
    read_model,
    routes,
    set_annotation,
    stable_model_memory,
    with_model,
    with_routes,
)

log = logging.getLogger(__name__)

# KServe refuses these on a spec.canary predictor: "canary uses fixed replicas" (validateCanarySpecs).
CANARY_FORBIDDEN_FIELDS = ("maxReplicas", "scaleTarget", "scaleMetric", "autoScaling")
KSERVE_CANARY_REFUSAL = (
    "canary requires a stable predictor with a model (multi-model serving is not supported with canary)"
)


@dataclass(frozen=True)
class Observed:
    """What a plan starts from.

    Attributes:
        stable: The stable InferenceService.
        canaries: The InferenceServices labelled as its canaries (only read when it has a transformer).
    """

    stable: dict[str, Any]
    canaries: list[dict[str, Any]] = field(default_factory=list)

    def canary(self, isvc_name: str) -> dict[str, Any] | None:
        """The canary InferenceService of that name, if it exists."""
        return next((isvc for isvc in self.canaries if name_of(isvc) == isvc_name), None)


@dataclass(frozen=True)
class Create:
    """Create an InferenceService."""

    obj: dict[str, Any]


@dataclass(frozen=True)
class WaitReady:
    """Wait until an InferenceService reports ``Ready``, at most ``timeout`` seconds."""

    name: str
    timeout: float


@dataclass(frozen=True)
class Change:
    """Patch an InferenceService to what ``plan`` makes of it (re-run on a fresh read after a conflict).

    Attributes:
        name: The InferenceService.
        plan: From the object read to the object wanted; raises :class:`RolloutError` to refuse.
        what: What the change does, for the log line.
    """

    name: str
    plan: Callable[[dict[str, Any]], dict[str, Any]]
    what: str


@dataclass(frozen=True)
class Delete:
    """Delete an InferenceService (already gone counts as done)."""

    name: str


Step = Create | WaitReady | Change | Delete


def _check_request(model: ModelRef, percent: int) -> None:
    if not 0 <= percent <= 100:
        raise RolloutError(f"--percent must be in [0, 100], got {percent}")
    if model.sha256 is not None and not SHA256_HEX.match(model.sha256):
        raise RolloutError(f"--sha256 must be 64 lower-case hex digits, got {model.sha256!r}")


def _require_mode(isvc: dict[str, Any]) -> str:
    mode = deployment_mode(isvc)
    if mode is None:
        raise RolloutError(
            f"cannot tell the deployment mode: the object has no {MODE_ANNOTATION} annotation and no "
            "status.deploymentMode; set the annotation (Standard or Knative) first"
        )
    return mode


def _stable_model(isvc: dict[str, Any]) -> ModelRef:
    model = read_model(predictor_spec(isvc))
    if model.storage_uri is None:
        raise RolloutError("the predictor names no model (no --storage_uri, STORAGE_URI or model.storageUri)")
    return model


def plan_canary(
    seen: Observed,
    model: ModelRef,
    percent: int,
    name: str = DEFAULT_CANARY_NAME,
    replace: bool = False,
    wait_seconds: float = 0,
) -> list[Step]:
    """The steps that start a canary serving ``model`` to ``percent`` % of requests.

    Args:
        seen: The stable InferenceService and its canaries.
        model: The canary's model.
        percent: Its share of the requests, 0-100.
        name: The canary's name.
        replace: Replace the canaries that run (or were left half-started) instead of refusing.
        wait_seconds: With a transformer, wait this long for the canary to be Ready before it gets traffic;
            0 sends traffic at once.

    Raises:
        RolloutError: KServe or the transformer would refuse the result, or a canary runs and ``replace`` is
            false; nothing has been written.
    """
    _check_request(model, percent)
    mode = _require_mode(seen.stable)
    if has_transformer(seen.stable):
        return _transformer_canary(seen, model, percent, name, replace, wait_seconds)
    if mode == KNATIVE:
        return [
            Change(
                name_of(seen.stable),
                lambda isvc: knative_canary(isvc, model, percent, replace),
                f"the latest revision serves the new model to {percent}% of requests",
            )
        ]
    return [
        Change(
            name_of(seen.stable),
            lambda isvc: standard_canary(isvc, model, percent, name, replace),
            f"spec.canary {name} gets {percent}% of requests",
        )
    ]


# ---- with a transformer: the canary is its own InferenceService ---------------------------------


def _refuse_kserve_canary_fields(isvc: dict[str, Any]) -> None:
    if canary_entries(isvc) or predictor_spec(isvc).get("canaryTrafficPercent") is not None:
        raise RolloutError(
            "the InferenceService has KServe's own canary fields (spec.canary or "
            "spec.predictor.canaryTrafficPercent); behind a transformer they bypass it (docs/rollout.md): "
            "remove them first"
        )


def _refuse_helm_canaries(stable: dict[str, Any], names: list[str]) -> None:
    """Refuse to touch the canaries the Helm release's values declare: one owner per canary.

    ``helm upgrade`` changes and ends those; it would bring back what this command removed.

    Raises:
        RolloutError: Naming the canary.
    """
    declared = [name for name in names if name in helm_canaries(stable)]
    if declared:
        raise RolloutError(
            f"canary {', '.join(declared)} is declared in the Helm release's values (rollout.canaries), "
            "which would bring it back on the next upgrade: change or end it there (helm upgrade without it "
            "in rollout.canaries; to promote, with its model in model.*)"
        )


def _running(seen: Observed) -> str:
    """The canaries that run, for a refusal: those with traffic and those without (left half-started)."""
    routed = {canary_isvc_name(seen.stable, route.name): route for route in routes(seen.stable)}
    described = [f"{isvc_name} ({route.percent}% of requests)" for isvc_name, route in routed.items()]
    described += [f"{name_of(isvc)} (no traffic)" for isvc in seen.canaries if name_of(isvc) not in routed]
    return ", ".join(described)


def _transformer_canary(
    seen: Observed, model: ModelRef, percent: int, name: str, replace: bool, wait_seconds: float
) -> list[Step]:
    stable = seen.stable
    _refuse_kserve_canary_fields(stable)
    check_canary_name(stable, name)
    if _stable_model(stable).same_artifact(model):
        raise RolloutError("the canary's model is the stable model; nothing to compare")
    _refuse_helm_canaries(stable, [*(route.name for route in routes(stable)), name])
    running = _running(seen)
    if running and not replace:
        raise RolloutError(f"canary {running} already runs; promote or roll back, or --replace")
    wanted = canary_isvc(stable, name, model)
    steps: list[Step] = []
    existing = seen.canary(name_of(wanted))
    if existing is None:
        steps.append(Create(wanted))
    elif not read_model(predictor_spec(existing)).same_artifact(model):
        # Changing its model in place would leave a Ready condition that still describes the old pods.
        raise RolloutError(
            f"canary {name_of(wanted)} runs another model; give the replacement another --canary-name, so "
            "that it is Ready before traffic moves to it, or roll back first"
        )
    if wait_seconds > 0:
        steps.append(WaitReady(name_of(wanted), wait_seconds))
    before = routes(stable)
    route = Route(name, percent, canary_host(stable, name))
    steps.append(
        Change(
            name_of(stable),
            lambda isvc: _route_only(isvc, before, route),
            f"the transformer sends {percent}% of requests to canary {name}",
        )
    )
    steps += [Delete(name_of(isvc)) for isvc in seen.canaries if name_of(isvc) != name_of(wanted)]
    return steps


def _route_only(isvc: dict[str, Any], before: list[Route], route: Route) -> dict[str, Any]:
    if routes(isvc) != before:
        raise RolloutError(
            "the transformer's canaries changed while this ran (now: "
            f"{', '.join(other.arg() for other in routes(isvc)) or 'none'}); run it again"
        )
    return with_routes(isvc, [route])


def _pick_route(isvc: dict[str, Any], name: str | None) -> Route:
    running = routes(isvc)
    if not running:
        raise RolloutError("no canary gets traffic (the transformer has no --canary arg)")
    if name is None:
        if len(running) > 1:
            names = ", ".join(route.name for route in running)
            raise RolloutError(f"several canaries run ({names}); say which with --canary-name")
        return running[0]
    for route in running:
        if route.name == name:
            return route
    raise RolloutError(
        f"no canary named {name!r} gets traffic (running: {', '.join(r.name for r in running)})"
    )


def _transformer_promote(seen: Observed, name: str | None) -> list[Step]:
    stable = seen.stable
    route = _pick_route(stable, name)
    _refuse_helm_canaries(stable, [route.name])
    canary = seen.canary(canary_isvc_name(stable, route.name))
    if canary is None:
        raise RolloutError(
            f"the transformer sends {route.percent}% of requests to canary {route.name}, but its "
            f"InferenceService {canary_isvc_name(stable, route.name)} does not exist: roll back"
        )
    model = read_model(predictor_spec(canary))

    def promoted(isvc: dict[str, Any]) -> dict[str, Any]:
        if route.name not in [other.name for other in routes(isvc)]:
            raise RolloutError(
                f"canary {route.name} stopped getting traffic while this ran; nothing promoted"
            )
        wanted = with_routes(isvc, [other for other in routes(isvc) if other.name != route.name])
        wanted["spec"]["predictor"] = with_model(predictor_spec(isvc), model, "default")
        if wanted["spec"].get("explainer"):
            wanted["spec"]["explainer"] = _explainer_with_model(wanted["spec"]["explainer"], model)
        return wanted

    return [
        Change(name_of(stable), promoted, f"the stable predictor serves canary {route.name}'s model"),
        Delete(name_of(canary)),
    ]


def _explainer_with_model(explainer: dict[str, Any], model: ModelRef) -> dict[str, Any]:
    """The chart's explainer (spec.explainer) loading the promoted model, as the chart renders it.

    Its pin names model.joblib (the chart's explainer.sha256), which the canary's pin (model.onnx) cannot
    replace: it is dropped until the next ``helm upgrade`` sets explainer.sha256; meanwhile the transformer
    still refuses an explanation of another version than the predictor's (docs/explainer.md).
    """
    result = with_model(explainer, ModelRef(model.storage_uri, None, model.version))
    for container in result.get("containers") or []:
        args = list(container.get("args") or [])
        if SHA256_ARG in args[:-1]:
            index = args.index(SHA256_ARG)
            container["args"] = args[:index] + args[index + 2 :]
    return result


def _transformer_rollback(seen: Observed, name: str | None) -> list[Step]:
    stable = seen.stable
    names = {route.name for route in routes(stable)}
    names |= {name_of(isvc).removeprefix(name_of(stable) + "-") for isvc in seen.canaries}
    if name is not None:
        if name not in names:
            raise RolloutError(f"no canary named {name!r} (running: {', '.join(sorted(names)) or 'none'})")
        names = {name}
    if not names:
        raise RolloutError("no canary runs (no --canary arg on the transformer, no canary InferenceService)")
    _refuse_helm_canaries(stable, sorted(names))
    steps: list[Step] = []
    routed = sorted(route.name for route in routes(stable) if route.name in names)
    if routed:
        steps.append(
            Change(
                name_of(stable),
                lambda isvc: with_routes(isvc, [route for route in routes(isvc) if route.name not in names]),
                f"the transformer stops sending requests to canary {', '.join(routed)}",
            )
        )
    wanted = {canary_isvc_name(stable, item) for item in names}
    steps += [Delete(name_of(isvc)) for isvc in seen.canaries if name_of(isvc) in wanted]
    return steps


# ---- without a transformer: KServe's own canaries -----------------------------------------------


def _refuse_ignored_split(isvc: dict[str, Any], mode: str) -> None:
    """KServe ignores Knative's split in Standard mode (and refuses spec.canary in Knative mode outright)."""
    if mode == STANDARD and predictor_spec(isvc).get("canaryTrafficPercent") is not None:
        raise RolloutError(
            "spec.predictor.canaryTrafficPercent is set, but KServe ignores it in Standard mode "
            "(canaries go in spec.canary there); remove it first"
        )


def knative_canary(isvc: dict[str, Any], model: ModelRef, percent: int, replace: bool) -> dict[str, Any]:
    """Knative mode, no transformer: the predictor names the new model, ``canaryTrafficPercent`` its share.

    The spec then no longer names the stable model, so it is recorded in an annotation that rollback restores.

    Raises:
        RolloutError: A canary runs and ``replace`` is false, or the model is the stable one.
    """
    stable = predictor_spec(isvc)
    stable_model = _stable_model(isvc)
    running = knative_canary_percent(isvc)
    if running is not None and not replace:
        raise RolloutError(f"a canary already gets {running}% of traffic; promote or roll back, or --replace")
    # While a canary runs the spec names the canary's model; the stable one is the remembered one.
    remembered = stable_model_memory(isvc) if running is not None else None
    stable_model = remembered or stable_model
    if stable_model.same_artifact(model):
        raise RolloutError("the canary's model is the stable model; nothing to compare")
    wanted = copy.deepcopy(isvc)
    wanted["spec"]["predictor"] = with_model(stable, model, "canary") | {"canaryTrafficPercent": percent}
    set_annotation(wanted, STABLE_MODEL_ANNOTATION, json.dumps(asdict(stable_model), sort_keys=True))
    return wanted


def standard_canary(
    isvc: dict[str, Any], model: ModelRef, percent: int, name: str, replace: bool
) -> dict[str, Any]:
    """Standard mode without a transformer: a named ``spec.canary`` entry, when KServe's webhook admits one.

    Raises:
        RolloutError: KServe cannot see the stable predictor's model (its webhook would refuse), a canary runs
            and ``replace`` is false, or the model is the stable one.
    """
    _refuse_ignored_split(isvc, STANDARD)
    if not DNS_LABEL.match(name):
        raise RolloutError(f"--canary-name must be a DNS label ({DNS_LABEL.pattern}), got {name!r}")
    stable = predictor_spec(isvc)
    if not kserve_sees_a_model(stable):
        raise RolloutError(
            f'KServe\'s webhook would refuse spec.canary here: "{KSERVE_CANARY_REFUSAL}" '
            "(validateCanarySpecs in pkg/apis/serving/v1beta1/inference_service_validation.go). It sees a "
            "stable predictor's model only in spec.predictor.model, a model server field's storageUri, or a "
            "custom container's STORAGE_URI env var, and this custom container takes its model another way"
        )
    stable_model = _stable_model(isvc)
    running_names = [canary_name(entry) for entry in canary_entries(isvc)]
    if running_names and not replace:
        raise RolloutError(
            f"canary {', '.join(running_names)} already runs; promote or roll back, or --replace"
        )
    if name == stable.get("name"):
        raise RolloutError(f"--canary-name {name!r} is the stable predictor's name")
    if stable_model.same_artifact(model):
        raise RolloutError("the canary's model is the stable model; nothing to compare")
    # A spec.canary predictor runs on fixed replicas: KServe refuses autoscaling fields on it.
    copied = {key: value for key, value in stable.items() if key not in ("name", *CANARY_FORBIDDEN_FIELDS)}
    wanted = copy.deepcopy(isvc)
    wanted["spec"]["canary"] = [
        {"trafficPercent": percent, "predictor": with_model(copied, model, "canary") | {"name": name}}
    ]
    return wanted


def _pick_entry(isvc: dict[str, Any], name: str | None) -> dict[str, Any]:
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


def _ending_a_canary(isvc: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The mode and a copy to change, for promote and rollback without a transformer; refusals first."""
    mode = _require_mode(isvc)
    _refuse_ignored_split(isvc, mode)
    if mode == KNATIVE and knative_canary_percent(isvc) is None:
        raise RolloutError("no canary runs (spec.predictor.canaryTrafficPercent is unset or 100)")
    return mode, copy.deepcopy(isvc)


def predictor_promote(isvc: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    """No transformer: the InferenceService with the canary's model serving all traffic, no canary left.

    Raises:
        RolloutError: No canary runs, or the object is inconsistent with its mode.
    """
    mode, wanted = _ending_a_canary(isvc)
    if mode == KNATIVE:
        # The spec already names the canary's model: without the split all traffic goes to it.
        promoted = with_model(predictor_spec(isvc), read_model(predictor_spec(isvc)), "default")
        promoted.pop("canaryTrafficPercent", None)
        wanted["spec"]["predictor"] = promoted
        set_annotation(wanted, STABLE_MODEL_ANNOTATION, None)
        return wanted
    entry = _pick_entry(isvc, name)
    wanted["spec"]["predictor"] = with_model(predictor_spec(isvc), read_model(entry["predictor"]), "default")
    wanted["spec"].pop("canary", None)
    return wanted


def predictor_rollback(isvc: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    """Without a transformer: the InferenceService without the canary (or the named one); stable untouched.

    In Knative mode the stable model is restored from the annotation ``canary`` wrote. Without it (a canary
    started by hand) the split is pinned at 0 %, KServe's documented rollback, and a warning says that the
    spec still names the canary's model.

    Raises:
        RolloutError: No canary runs, or the object is inconsistent with its mode.
    """
    mode, wanted = _ending_a_canary(isvc)
    if mode == KNATIVE:
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
    entry = _pick_entry(isvc, name)
    remaining = [other for other in canary_entries(isvc) if other is not entry]
    if remaining:
        wanted["spec"]["canary"] = remaining
    else:
        wanted["spec"].pop("canary", None)
    return wanted


# ---- promote and roll back, either way ----------------------------------------------------------


def plan_promote(seen: Observed, name: str | None = None) -> list[Step]:
    """The steps that make the canary's model the stable one and remove the canary.

    With a transformer: one patch of the stable InferenceService (its predictor gets the canary's model, its
    transformer loses the ``--canary`` arg), then the canary InferenceService is deleted.

    Raises:
        RolloutError: No canary gets traffic, or several do and ``name`` does not say which.
    """
    _require_mode(seen.stable)
    if has_transformer(seen.stable):
        _refuse_kserve_canary_fields(seen.stable)
        return _transformer_promote(seen, name)
    return [
        Change(name_of(seen.stable), lambda isvc: predictor_promote(isvc, name), "the canary is promoted")
    ]


def plan_rollback(seen: Observed, name: str | None = None) -> list[Step]:
    """The steps that remove the canary (every one, or the named one); the stable model is untouched.

    With a transformer: its ``--canary`` arg is removed first, then the canary InferenceService is deleted
    (also one left without traffic by an interrupted ``canary``).

    Raises:
        RolloutError: No canary runs, or none has that name.
    """
    _require_mode(seen.stable)
    if has_transformer(seen.stable):
        _refuse_kserve_canary_fields(seen.stable)
        return _transformer_rollback(seen, name)
    return [
        Change(name_of(seen.stable), lambda isvc: predictor_rollback(isvc, name), "the canary is removed")
    ]


# ---- patches ------------------------------------------------------------------------------------


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
