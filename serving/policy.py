"""Who may call what, and with which limits: every route of every component, in one table.

Each server's edge (:mod:`serving.edge`) reads its component's rows from :data:`ROUTES`: the role a
route needs with ``--auth``, whether the rate limit applies, the largest body it takes (413 before the body
is parsed), the longest a client may take to send that body (408), and whether a flag must turn it on (404
while off). A path no row matches is answered 404 by the edge: the table is the whole surface. The payload
code reads the row limits from here too (:func:`rows_limit`); docs/security.md renders the table
(:func:`markdown`, a test keeps the two equal).

Roles are what a credential holds (an API key's ``KEY=ROLE[,ROLE]``, a JWT's ``roles`` claim, Entra ID's
app roles on AKS):

- ``open``: anyone who can reach the port (probes, Prometheus, metadata);
- ``internal``: the stack's own components only (the transformer calling the predictor and the explainer):
  locally the port binds loopback, on AKS the mesh admits only the caller's service account;
- ``predict``, ``feedback``, ``ingest``, ``monitor``, ``analyst``, ``admin``: see :data:`ROLES`.

Why one table rather than a check in each handler: who may do what, with which limits, is then one page a
reviewer reads, the servers cannot drift from it, and the threat model in docs/security.md is that page.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property

KIB = 1024
MIB = 1024 * KIB

OPEN = "open"
INTERNAL = "internal"
PREDICT = "predict"
FEEDBACK = "feedback"
INGEST = "ingest"
MONITOR = "monitor"
ANALYST = "analyst"
ADMIN = "admin"

ROLES: dict[str, str] = {
    OPEN: "anyone who can reach the port: liveness, readiness, metrics, metadata",
    INTERNAL: "the stack's own components (transformer -> predictor, explainer): loopback locally, the "
    "caller's service account on AKS; no credential is checked in process",
    PREDICT: "clients asking for prices and explanations",
    FEEDBACK: "the system that learns true sale prices and posts them as labels",
    INGEST: "the transformer's request logger posting the inference log (its own API key locally, its "
    "service account on AKS)",
    MONITOR: "operators reading drift and accuracy aggregates (no per-request data)",
    ANALYST: "people running experiments: reads every labelled prediction with its true value",
    ADMIN: "operators loading and unloading models at run time",
}
"""Every role and who holds it."""

COMPONENTS = ("transformer", "predictor", "explainer", "detector")

HEADER_BYTES = 8 * KIB
"""The largest value of one request header (431 naming it beyond); a JWT with many claims fits."""
HEADERS_BYTES = 32 * KIB
"""All of a request's header names and values together, at most (431 beyond)."""
HEAD_SECONDS = 10.0
"""The longest a client may take to send a request's line and headers (408 and closed beyond)."""


@dataclass(frozen=True)
class Limits:
    """What one request to a route may carry.

    Attributes:
        body_bytes: The largest body, in bytes (0: the route takes none); larger is 413 before parsing.
        rows: The most rows (houses, predictions or labels) one request carries; ``None``: not a row route.
            Enforced by the payload code (400 naming the rule), read with :func:`rows_limit`.
        body_seconds: The longest a client may take, from the request's start, to send the whole body (408).
    """

    body_bytes: int
    rows: int | None
    body_seconds: float


NO_BODY = Limits(0, None, 5.0)
"""GET routes: no body at all."""
SMALL = Limits(4 * KIB, None, 5.0)
"""Control calls (repository load, unload, index): a small JSON object at most."""
BATCH = Limits(1 * MIB, 1000, 10.0)
"""A batch of houses: 1,000 rows, about 180 kB of compact JSON (270 kB indented); four times that in bytes."""
ONE_HOUSE = Limits(16 * KIB, 1, 5.0)
"""The original API's ``POST /predict`` and ``/explain``: one house, about 210 bytes."""
EXPLAIN = Limits(1 * MIB, 1000, 10.0)
"""Explanations: exact TreeSHAP costs about 0.25 ms a house here (1,000 houses 0.26 s, measured), so the
transformer's batch of 1,000 fits well inside the deadline; its answer is about 5 kB a house."""
TENSOR = Limits(1 * MIB, 1000, 10.0)
"""The predictor's input: a [N, 12] tensor from the transformer (1,000 rows: about 90 kB of V2 JSON)."""
GRPC = Limits(2 * MIB, 1000, 10.0)
"""gRPC inference messages (the server's ``grpc.max_receive_message_length``); a call's time: its deadline."""
GRPC_CALL = Limits(GRPC.body_bytes, None, GRPC.body_seconds)
"""The other gRPC calls: the same message limit, no rows."""
EVENTS = Limits(10 * MIB, 1000, 10.0)
"""Inference-log CloudEvents: a batch of up to 1,000 events, each of at most 1,000 rows."""
LABELS = Limits(1 * MIB, 1000, 5.0)
"""Ground truth: up to 1,000 labels (about 60 bytes each) in one request."""


@dataclass(frozen=True)
class Route:
    """One route of one component and its policy.

    Attributes:
        component: ``transformer``, ``predictor``, ``explainer`` or ``detector``.
        methods: The HTTP methods (``GRPC`` for a gRPC method).
        path: The path as documented, ``{name}`` standing for one path segment.
        role: The role the caller needs with ``--auth`` (:data:`ROLES`).
        limits: Body bytes, rows and seconds.
        records: What a call leaves behind: metrics, logs, state, archive.
        summary: What it does.
        rate_limited: Whether ``--rate_limit`` counts it (the ingest of the stack's own logger is not).
        flag: The flag that turns the route on; ``None``: always served.
    """

    component: str
    methods: tuple[str, ...]
    path: str
    role: str
    limits: Limits
    records: str
    summary: str
    rate_limited: bool = True
    flag: str | None = None
    grpc: bool = field(default=False)

    @cached_property
    def pattern(self) -> re.Pattern[str]:
        """The path as a regular expression (a ``{name}`` is one segment without ``/`` or ``:``)."""
        parts = re.split(r"\{[a-z_]+\}", self.path)
        return re.compile("^" + "[^/:]+".join(re.escape(part) for part in parts) + "$")

    @property
    def checked(self) -> bool:
        """Whether a credential is checked in process with ``--auth`` (not for ``open`` and ``internal``)."""
        return self.role not in (OPEN, INTERNAL)


_REPOSITORY = "--enable_repository_api"
_KSERVE_METRICS = "request metrics"
_NOTHING = "nothing"


def _common(component: str, infer_role: str, infer_limits: Limits, infer_records: str) -> list[Route]:
    """The routes KServe's ModelServer serves on every component (V1, V2, health, metrics)."""
    return [
        Route(component, ("GET",), "/", OPEN, NO_BODY, _NOTHING, "KServe liveness"),
        Route(component, ("GET",), "/metrics", OPEN, NO_BODY, _NOTHING, "Prometheus metrics"),
        Route(component, ("GET",), "/openapi.json", OPEN, NO_BODY, _NOTHING, "the OpenAPI document"),
        Route(component, ("GET",), "/v2/health/live", OPEN, NO_BODY, _NOTHING, "liveness"),
        Route(component, ("GET",), "/v2/health/ready", OPEN, NO_BODY, _NOTHING, "readiness"),
        Route(component, ("GET",), "/v2", OPEN, NO_BODY, _NOTHING, "V2 server metadata"),
        Route(component, ("GET",), "/v1/models", OPEN, NO_BODY, _NOTHING, "V1 model list"),
        Route(component, ("GET",), "/v1/models/{name}", OPEN, NO_BODY, _NOTHING, "V1 model readiness"),
        Route(component, ("GET",), "/v2/models", OPEN, NO_BODY, _NOTHING, "V2 model list"),
        Route(component, ("GET",), "/v2/models/{name}", OPEN, NO_BODY, _NOTHING, "V2 model metadata"),
        Route(component, ("GET",), "/v2/models/{name}/versions/{version}", OPEN, NO_BODY, _NOTHING,
              "V2 model metadata of a version"),
        Route(component, ("GET",), "/v2/models/{name}/ready", OPEN, NO_BODY, _NOTHING, "V2 model readiness"),
        Route(component, ("GET",), "/v2/models/{name}/versions/{version}/ready", OPEN, NO_BODY, _NOTHING,
              "V2 model readiness of a version"),
        Route(component, ("POST",), "/v1/models/{name}:predict", infer_role, infer_limits, infer_records,
              "V1 prediction"),
        Route(component, ("POST",), "/v2/models/{name}/infer", infer_role, infer_limits, infer_records,
              "V2 inference"),
        Route(component, ("POST",), "/v2/models/{name}/versions/{version}/infer", infer_role, infer_limits,
              infer_records, "V2 inference of a version"),
        Route(component, ("POST",), "/v2/repository/models/{name}/load", ADMIN, SMALL,
              "a log line; the model's metrics", "V2 repository: load a pinned model", flag=_REPOSITORY),
        Route(component, ("POST",), "/v2/repository/models/{name}/unload", ADMIN, SMALL,
              "a log line", "V2 repository: unload a model (409 for the served champion)",
              flag=_REPOSITORY),
        Route(component, ("GET", "POST"), "/v2/repository/index", ADMIN, SMALL, _NOTHING,
              "V2 repository: the pinned models and their state", flag=_REPOSITORY),
    ]  # fmt: skip


def _grpc(component: str, infer_role: str, records: str, infer: str = "V2 inference") -> list[Route]:
    """What KServe's gRPC server exposes (``inference.GRPCInferenceService``)."""
    service = "/inference.GRPCInferenceService/"
    return [
        *(
            Route(component, ("GRPC",), service + method, OPEN, GRPC_CALL, _NOTHING, summary, grpc=True)
            for method, summary in (
                ("ServerLive", "liveness"),
                ("ServerReady", "readiness"),
                ("ServerMetadata", "server metadata"),
                ("ModelReady", "model readiness"),
                ("ModelMetadata", "model metadata"),
            )
        ),
        Route(component, ("GRPC",), service + "ModelInfer", infer_role, GRPC, records, infer, grpc=True),
        *(
            Route(component, ("GRPC",), service + method, ADMIN, GRPC_CALL, _NOTHING,
                  f"{summary}: refused (UNIMPLEMENTED); the repository API is REST only, where the admin "
                  "role is checked", grpc=True)
            for method, summary in (
                ("RepositoryIndex", "repository index"),
                ("RepositoryModelLoad", "load a model"),
                ("RepositoryModelUnload", "unload a model"),
            )
        ),
    ]  # fmt: skip


_PREDICTED = f"{_KSERVE_METRICS}; the inference log to the detector"
_EXPLAINED = _KSERVE_METRICS

TRANSFORMER: tuple[Route, ...] = (
    *_common("transformer", PREDICT, BATCH, _PREDICTED),
    Route("transformer", ("POST",), "/v1/models/{name}:explain", PREDICT, EXPLAIN, _EXPLAINED,
          "V1 explanation, validated and sent to the explainer"),
    Route("transformer", ("GET",), "/health", OPEN, NO_BODY, _NOTHING,
          "the original API's health: 503 with the reason when the predictor's model is not served"),
    Route("transformer", ("POST",), "/predict", PREDICT, ONE_HOUSE, _PREDICTED,
          "the original API: one house"),
    Route("transformer", ("POST",), "/predict/batch", PREDICT, BATCH, _PREDICTED,
          "the original API: a batch"),
    Route("transformer", ("POST",), "/explain", PREDICT, ONE_HOUSE, _EXPLAINED,
          "the original API: why one house costs what it does"),
    *_grpc("transformer", PREDICT, _PREDICTED, "V2 inference (the port is closed under --auth)"),
)  # fmt: skip
"""The transformer: the only component clients reach (the InferenceService's entry)."""

PREDICTOR: tuple[Route, ...] = (
    *_common("predictor", INTERNAL, TENSOR, _KSERVE_METRICS + ", predicted values"),
    *_grpc("predictor", INTERNAL, _KSERVE_METRICS + ", predicted values", "V2 inference (the transformer's)"),
)
"""The predictor: called by the transformer only."""

EXPLAINER: tuple[Route, ...] = (
    *_common("explainer", INTERNAL, EXPLAIN, _EXPLAINED),
    Route("explainer", ("POST",), "/v1/models/{name}:explain", INTERNAL, EXPLAIN, _EXPLAINED,
          "V1 explanation (TreeSHAP), called by the transformer"),
)  # fmt: skip
"""The explainer: called by the transformer only; REST only (its gRPC port is off)."""

_INGESTED = "pending events, windows, drift metrics, the state file, the archive (rows for retraining)"
DETECTOR: tuple[Route, ...] = (
    Route("detector", ("POST",), "/", INGEST, EVENTS, _INGESTED,
          "inference-log CloudEvents (binary, structured or batched)", rate_limited=False),
    Route("detector", ("POST",), "/events", INGEST, EVENTS, _INGESTED, "the same as POST /",
          rate_limited=False),
    Route("detector", ("POST",), "/feedback", FEEDBACK, LABELS,
          "live accuracy, outcomes, the state file, the archive (labels for retraining)",
          "ground truth: true prices by request id"),
    Route("detector", ("GET",), "/status", MONITOR, NO_BODY, _NOTHING,
          "windows, drift results, live accuracy, retrain episodes (aggregates)"),
    Route("detector", ("GET",), "/report", MONITOR, NO_BODY, _NOTHING,
          "the drift report (HTML: histograms, score history)"),
    Route("detector", ("GET",), "/outcomes", ANALYST, NO_BODY, _NOTHING,
          "every labelled prediction with its true value, per endpoint and version"),
    Route("detector", ("GET",), "/metrics", OPEN, NO_BODY, _NOTHING, "Prometheus metrics"),
    Route("detector", ("GET",), "/healthz", OPEN, NO_BODY, _NOTHING, "liveness"),
    Route("detector", ("GET",), "/v2/health/live", OPEN, NO_BODY, _NOTHING, "liveness"),
    Route("detector", ("GET",), "/readyz", OPEN, NO_BODY, _NOTHING, "readiness (the reference loaded)"),
    Route("detector", ("GET",), "/v2/health/ready", OPEN, NO_BODY, _NOTHING, "readiness"),
)  # fmt: skip
"""The drift detector: the transformer's logger, label sources, operators and analysts call it."""

ROUTES: dict[str, tuple[Route, ...]] = {
    "transformer": TRANSFORMER,
    "predictor": PREDICTOR,
    "explainer": EXPLAINER,
    "detector": DETECTOR,
}
"""Every component's routes, HTTP and gRPC."""


def http_routes(component: str) -> tuple[Route, ...]:
    """The HTTP routes of ``component``, in the table's order (the first whose pattern matches decides)."""
    return tuple(route for route in ROUTES[component] if not route.grpc)


def lookup(component: str, path: str) -> Route | None:
    """The HTTP route of ``component`` that serves ``path``, or ``None`` (the edge answers 404)."""
    return next((route for route in http_routes(component) if route.pattern.match(path)), None)


def route(component: str, method: str, path: str) -> Route:
    """The row of ``METHOD path`` as the table writes it (``path`` with its ``{name}`` placeholders).

    Raises:
        KeyError: The table has no such row (a server serving it would be answered 404 by its edge).
    """
    for candidate in ROUTES[component]:
        if candidate.path == path and method in candidate.methods:
            return candidate
    raise KeyError(f"serving/policy.py has no row for {component} {method} {path}")


def rows_limit(component: str, path: str) -> int:
    """The most rows one request to ``path`` of ``component`` may carry (the payload code's 400).

    Raises:
        KeyError: ``path`` is not a route of ``component``, or not one that carries rows.
    """
    found = lookup(component, path)
    if found is None or found.limits.rows is None:
        raise KeyError(f"{component} {path}: not a route that carries rows (serving/policy.py)")
    return found.limits.rows


def markdown() -> str:
    """The table as docs/security.md shows it: one Markdown table per component."""
    lines: list[str] = []
    for component, routes in ROUTES.items():
        lines += [
            f"#### {component}",
            "",
            "| method | path | role | body | rows | body time | records | what it is |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in routes:
            limits = row.limits
            role = f"`{row.role}`" + (f", off unless `{row.flag}`" if row.flag else "")
            role += "" if row.rate_limited or not row.checked else ", not rate-limited"
            body = "none" if limits.body_bytes == 0 else _size(limits.body_bytes)
            rows = "" if limits.rows is None else f"{limits.rows:,}"
            seconds = f"{limits.body_seconds:g} s" if limits.body_bytes else ""
            seconds = "the call's deadline" if row.grpc else seconds
            lines.append(
                f"| {'/'.join(row.methods)} | `{row.path}` | {role} | {body} | {rows} | {seconds} | "
                f"{row.records} | {row.summary} |"
            )
        lines.append("")
    return "\n".join(lines)


def _size(size: int) -> str:
    return f"{size // MIB} MiB" if size % MIB == 0 else f"{size // KIB} KiB"


BEGIN = "<!-- the policy table, rendered by `python -m serving.policy --write docs/security.md` -->"
END = "<!-- end of the policy table -->"


def render_into(text: str) -> str:
    """``text`` (docs/security.md) with the part between :data:`BEGIN` and :data:`END` rendered anew.

    Raises:
        ValueError: The markers are missing.
    """
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the markers {BEGIN!r} and {END!r} are missing")
    return text[: start + len(BEGIN)] + "\n\n" + markdown() + "\n" + text[end:]


def main(argv: list[str] | None = None) -> int:
    """Print the table as docs/security.md shows it, or write it into that file (``--write``)."""
    import argparse
    from pathlib import Path

    parser = argparse.ArgumentParser(
        prog="python -m serving.policy",
        description="Every route of every component, its role and limits, as docs/security.md renders them.",
    )
    parser.add_argument("--write", type=Path, help="render the table into this file, between its markers")
    args = parser.parse_args(argv)
    if args.write is None:
        print(markdown())
        return 0
    try:
        args.write.write_text(render_into(args.write.read_text()))
    except (OSError, ValueError) as error:
        parser.error(str(error))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
