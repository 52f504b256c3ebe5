"""``housing rollout status``: mode, endpoints (model, traffic, readiness), conditions and URLs."""

from __future__ import annotations

import sys
from dataclasses import asdict
from typing import Any

from housing.rollout.objects import (
    STANDARD,
    canary_entries,
    canary_isvc_name,
    canary_name,
    deployment_mode,
    has_transformer,
    is_ready,
    knative_canary_percent,
    name_of,
    predictor_spec,
    read_model,
    routes,
    stable_model_memory,
)
from housing.rollout.plans import Observed


def _transformer_endpoints(seen: Observed) -> list[dict[str, Any]]:
    """The stable InferenceService and each canary's, with the shares the transformer's args give them."""
    stable = seen.stable
    running = routes(stable)
    endpoints = [
        {
            "endpoint": "default",
            "inferenceservice": name_of(stable),
            "percent": 100 - sum(route.percent for route in running),
            "ready": is_ready(stable),
            **asdict(read_model(predictor_spec(stable))),
        }
    ]
    for route in running:
        canary = seen.canary(canary_isvc_name(stable, route.name))
        model = asdict(read_model(predictor_spec(canary))) if canary else {"storage_uri": "(missing)"}
        endpoints.append(
            {
                "endpoint": f"canary/{route.name}",
                "inferenceservice": canary_isvc_name(stable, route.name),
                "percent": route.percent,
                "ready": is_ready(canary) if canary else False,
                **model,
            }
        )
    routed = {canary_isvc_name(stable, route.name) for route in running}
    for canary in seen.canaries:
        if name_of(canary) not in routed:  # left without traffic by an interrupted `canary`
            endpoints.append(
                {
                    "endpoint": "canary/" + name_of(canary).removeprefix(name_of(stable) + "-"),
                    "inferenceservice": name_of(canary),
                    "percent": 0,
                    "ready": is_ready(canary),
                    **asdict(read_model(predictor_spec(canary))),
                }
            )
    return endpoints


def _predictor_endpoints(isvc: dict[str, Any]) -> list[dict[str, Any]]:
    """Without a transformer: KServe's own canaries (spec.canary, or the Knative revision split)."""
    status = isvc.get("status") or {}
    stable = predictor_spec(isvc)
    endpoints: list[dict[str, Any]] = []
    if deployment_mode(isvc) == STANDARD:
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
        return endpoints
    percent = knative_canary_percent(isvc)
    if percent is None:
        return [{"endpoint": "default", "percent": 100, **asdict(read_model(stable))}]
    memory = stable_model_memory(isvc)
    previous = status.get("components", {}).get("predictor", {}).get("previousRolledoutRevision")
    stable_model = asdict(memory) if memory else {"storage_uri": f"(revision {previous})"}
    return [
        {"endpoint": "default", "percent": 100 - percent, **stable_model},
        {"endpoint": "canary", "percent": percent, **asdict(read_model(stable))},
    ]


def describe(seen: Observed) -> dict[str, Any]:
    """What ``status`` shows, as plain data: mode, endpoints, the stable's conditions and URLs."""
    isvc = seen.stable
    status = isvc.get("status") or {}
    components = status.get("components") or {}
    transformer = has_transformer(isvc)
    return {
        "name": isvc.get("metadata", {}).get("name"),
        "namespace": isvc.get("metadata", {}).get("namespace"),
        "mode": deployment_mode(isvc) or "unknown",
        "split_by": "transformer" if transformer else "KServe",
        "endpoints": _transformer_endpoints(seen) if transformer else _predictor_endpoints(isvc),
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
    print(
        f"InferenceService {info['namespace']}/{info['name']}  mode: {info['mode']}  "
        f"canaries split by: {info['split_by']}",
        file=out,
    )
    print(
        f"\n{'ENDPOINT':<16} {'INFERENCESERVICE':<24} TRAFFIC  READY    "
        "VERSION       SHA256        STORAGE URI",
        file=out,
    )
    for item in info["endpoints"]:
        sha = (item.get("sha256") or "-")[:12]
        ready = {True: "True", False: "False", None: "-"}[item.get("ready")]
        print(
            f"{item['endpoint']:<16} {item.get('inferenceservice') or '-':<24} {item['percent']!s:>6}%  "
            f"{ready:<8} {item.get('version') or '-':<13} {sha:<13} {item.get('storage_uri') or '-'}",
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
