"""``./dev bench shadow``: what a shadow at 100% costs the clients, and what a frozen shadow does to them.

Two transformers in front of one champion predictor (all three on core 0, ``taskset``): one without a
shadow, one copying every request to a shadow predictor (``--shadow challenger=100,...``). The shadow runs on
the load generator's core (1), as it would run on pods of its own on the cluster: the figures are what copying
costs the serving path, not the shadow's own compute. ``wrk`` (core 1) sends one-row V1 requests at
concurrency 32 to each transformer in turn (``--rounds``), then to the shadowed one for ``--frozen-seconds``
while the shadow is stopped (SIGSTOP): client errors and the copies dropped or timed out are counted.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import tempfile
from pathlib import Path

from benchmarks.serving import (
    CONCURRENCY,
    SERVER_CORE,
    V1_PATH,
    Target,
    pinned,
    predictor_service,
    v1_named_body,
    wrk,
)
from housing.processes import Stack, free_port

LOAD_CORE = "1"


def metric_total(url: str, name: str, **labels: str) -> float:
    """The sum of a counter's samples that carry ``labels``."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def main(argv: list[str] | None = None) -> int:
    """Measure throughput and p99 with and without a shadow, then with the shadow frozen."""
    parser = argparse.ArgumentParser(prog="./dev bench shadow", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10, help="seconds per wrk run (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="turns of each transformer (default 3)")
    parser.add_argument("--frozen-seconds", type=float, default=30, help="load while frozen (default 30)")
    args = parser.parse_args(argv)

    from model.artifact import load_artifact
    from model.dataset import load_dataset
    from model.schema import DEFAULT_FEATURES
    from model.train import build_artifact

    work = Path(tempfile.mkdtemp(prefix="bench-shadow-"))
    champion = build_artifact(work / "champion", fast=True, seed=1)
    challenger = build_artifact(work / "challenger", fast=True, seed=2)
    names = load_artifact(champion).feature_names
    row = load_dataset()[list(DEFAULT_FEATURES)].to_numpy()[:1]
    body = v1_named_body(row, names)
    stack = Stack(work)
    main_predictor, main_grpc = predictor_service("champion", champion, work, SERVER_CORE)
    shadow_predictor, shadow_grpc = predictor_service("shadow", challenger, work, LOAD_CORE)

    def transformer(name: str, *extra: str) -> Target:
        port = free_port()
        command = [sys.executable, "-m", "transformer", "--protocol", "grpc-v2",
                   "--predictor_host", f"127.0.0.1:{main_grpc}",
                   "--predictor_rest_host", f"127.0.0.1:{main_predictor.port}",
                   "--http_port", str(port), "--grpc_port", str(free_port()), *extra]  # fmt: skip
        return Target(name, pinned(name, command, port, work), V1_PATH, body)

    plain = transformer("no shadow")
    shadowed = transformer(
        "shadow 100%",
        "--shadow",
        f"challenger=100,127.0.0.1:{shadow_grpc},127.0.0.1:{shadow_predictor.port}",
    )
    try:
        for service in (main_predictor, shadow_predictor, plain.service, shadowed.service):
            stack.start(service)
        for service in (main_predictor, shadow_predictor, plain.service, shadowed.service):
            stack.wait_ready(service, timeout=120)
        for target in (plain, shadowed):  # warm-up: connections, metadata, the shadow's first copies
            wrk(target, CONCURRENCY, 2, 1, work)
        runs: dict[str, list] = {plain.name: [], shadowed.name: []}
        for _ in range(args.rounds):
            for target in (plain, shadowed):
                runs[target.name].append(wrk(target, CONCURRENCY, args.seconds, 1, work))
        answered, dropped = (
            metric_total(shadowed.service.url, "housing_shadow_requests_total", outcome=outcome)
            for outcome in ("answered", "dropped")
        )
        print(
            f"| transformer ({args.rounds} rounds of {args.seconds:g} s) | req/s | p50 ms | p99 ms | errors |"
        )
        print("|---|---|---|---|---|")
        for name, measured in runs.items():
            print(
                f"| {name} | {statistics.mean(m.requests_per_second for m in measured):.0f} "
                f"| {statistics.median(m.p50_ms for m in measured):.2f} "
                f"| {max(m.p99_ms for m in measured):.2f} | {sum(m.errors for m in measured)} |"
            )
        ratios = [
            s.requests_per_second / p.requests_per_second
            for p, s in zip(runs[plain.name], runs[shadowed.name], strict=True)
        ]
        p99 = [s.p99_ms / p.p99_ms for p, s in zip(runs[plain.name], runs[shadowed.name], strict=True)]
        print(
            f"shadow 100%: throughput {statistics.median(ratios):.1%} of no shadow (target >= 85%), "
            f"p99 {statistics.median(p99):.2f}x (target <= 1.10x); copies answered {answered:.0f}, "
            f"dropped {dropped:.0f}"
        )

        assert shadow_predictor.process is not None
        shadow_predictor.process.send_signal(signal.SIGSTOP)
        before = {
            outcome: metric_total(shadowed.service.url, "housing_shadow_requests_total", outcome=outcome)
            for outcome in ("dropped", "timeout", "unavailable", "error")
        }
        frozen = wrk(shadowed, CONCURRENCY, args.frozen_seconds, 1, work)
        lost = {
            outcome: metric_total(shadowed.service.url, "housing_shadow_requests_total", outcome=outcome)
            - before[outcome]
            for outcome in before
        }
        print(
            f"shadow frozen {args.frozen_seconds:g} s: {frozen.requests} requests, "
            f"{frozen.errors} client errors, "
            f"{frozen.requests_per_second:.0f} req/s, p99 {frozen.p99_ms:.2f} ms; copies "
            + ", ".join(f"{outcome} {count:.0f}" for outcome, count in lost.items())
        )
        shadow_predictor.process.send_signal(signal.SIGCONT)
    finally:
        stack.stop()
    return 0
