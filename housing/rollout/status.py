"""``housing rollout status``: mode, endpoints (model, traffic), readiness and URLs."""

from __future__ import annotations

import logging
import sys
from dataclasses import asdict
from typing import Any

from housing.rollout.objects import (
    RAW,
    canary_entries,
    canary_name,
    deployment_mode,
    predictor_spec,
    read_model,
    serverless_canary_percent,
    stable_model_memory,
)

log = logging.getLogger(__name__)


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
        memory = stable_model_memory(isvc)
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
