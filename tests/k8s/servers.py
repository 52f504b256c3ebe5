"""The rendered servers read back as they would start: each container's arguments, after KServe appended its
own and the kubelet expanded ``$(VAR)`` (kube_rules), parsed by the component's own argument parser.

Shared by the chart tests of listeners, limits and shutdown, so that what the chart passes is always judged by
the server that gets it, never by a copy of its flags.
"""

from __future__ import annotations

import argparse
from typing import Any

from serving.edge import EdgeSettings
from tests.k8s import kserve_controller as kserve
from tests.k8s import kube_rules as kube
from tests.k8s.conftest import NAMESPACE, Render
from tests.k8s.test_kserve_controller import stable

SERVING = ("predictor", "transformer", "explainer")


def detector_pod(rendered: Render) -> dict[str, Any]:
    """The detector's pod template (a Deployment, or a StatefulSet with replicas)."""
    (workload,) = [
        doc
        for doc in rendered.documents
        if doc["kind"] in ("Deployment", "StatefulSet") and doc["metadata"]["name"].endswith("-detector")
    ]
    return workload["spec"]["template"]  # type: ignore[no-any-return]


def container(rendered: Render, component: str, isvc: dict[str, Any] | None = None) -> dict[str, Any]:
    """The component's serving container (of ``isvc``, default: the stable InferenceService)."""
    if component == "detector":
        return detector_pod(rendered)["spec"]["containers"][0]  # type: ignore[no-any-return]
    isvc = isvc or stable(rendered)
    return isvc["spec"][component]["containers"][0]  # type: ignore[no-any-return]


def process_args(rendered: Render, component: str, isvc: dict[str, Any] | None = None) -> list[str]:
    """The command line the component's process runs with on the cluster."""
    isvc = isvc or (stable(rendered) if component != "detector" else None)
    spec = container(rendered, component, isvc)
    extra: list[str] = []
    if component == "transformer":
        # transformer_custom.go GetContainer: --predictor_host ISVC-predictor.NAMESPACE and --http_port 8080.
        extra = [
            "--predictor_host",
            f"{isvc['metadata']['name']}-predictor.{NAMESPACE}",
            "--http_port",
            "8080",
        ]
    elif component == "explainer":
        return kube.container_args({**spec, "args": kserve.custom_explainer_args(isvc)})
    return kube.container_args(spec, extra)


def parse(rendered: Render, component: str, isvc: dict[str, Any] | None = None) -> argparse.Namespace:
    """The component's parsed flags (its own parser: a flag it does not know fails the test)."""
    args = process_args(rendered, component, isvc)
    if component == "predictor":
        from predictor.__main__ import parse_args as predictor_args

        return predictor_args(args)
    if component == "transformer":
        from transformer.__main__ import parse_args as transformer_args

        return transformer_args(args)
    if component == "explainer":
        from explainer.__main__ import parse_args as explainer_args

        return explainer_args(args)
    from detector.__main__ import build_parser
    from serving.edge import edge_settings

    parser = build_parser()
    parsed = parser.parse_args(args)
    parsed.edge = edge_settings(parsed, parser)
    return parsed


def edge(rendered: Render, component: str, isvc: dict[str, Any] | None = None) -> EdgeSettings:
    """The component's edge (listener, trusted proxies, limits) as its process reads it."""
    return parse(rendered, component, isvc).edge  # type: ignore[no-any-return]
