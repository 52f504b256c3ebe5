"""Soak benchmark: the local stack under steady load, end to end, watching errors, latency and memory.

``python -m benchmarks soak`` starts predictor, transformer and detector (with ``housing up``'s process
machinery; the transformer logs every inference to the detector), then sends named-feature V1 requests
through the transformer from ``--concurrency`` clients for ``--duration`` seconds. Before that, the same
clients call the predictor directly for ``--baseline`` seconds: the baseline measured in the same run, on the
same machine, which shows what the transformer hop costs. It prints req/s and p50/p95/p99 next to the
original system's published figures, and each service's resident memory at the start and end of the soak,
and saves everything to ``benchmarks/results/soak.json``.

It fails (exit 1) on any error response or when a service's resident memory grows by 10% or more.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from housing.processes import Service, Stack, free_port
from housing.stack import configure, services
from model.paths import VAR_DIR_ENV
from monitoring.traffic import PREDICT_PATH, houses, v1_body

RESULTS = Path(__file__).resolve().parent / "results" / "soak.json"
ORIGINAL = {"requests_per_second": 1200.0, "p50_ms": 25.0, "p95_ms": 45.0, "p99_ms": 78.0}
"""The original system's API benchmark table (FastAPI service, machine not stated)."""
MAX_MEMORY_GROWTH = 0.10


@dataclass(frozen=True)
class LoadResult:
    """What one load phase measured."""

    name: str
    url: str
    concurrency: int
    seconds: float
    requests: int
    errors: int
    requests_per_second: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    first_errors: list[str]


async def load(
    name: str, url: str, make_body: Callable[[], dict[str, Any]], concurrency: int, seconds: float
) -> LoadResult:
    """Send requests from ``concurrency`` clients for ``seconds``, each awaiting its answer before the next.

    Args:
        name: Label of the phase.
        url: The predict URL.
        make_body: A new JSON body per request.
        concurrency: Clients in flight at once.
        seconds: How long to send.

    Returns:
        Counts, throughput and latency percentiles (successful requests only); any non-200 is an error.
    """
    import aiohttp  # httpx's async client is itself the bottleneck at this concurrency (docs/serving.md)

    latencies: list[float] = []
    errors: list[str] = []
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        deadline = time.perf_counter() + seconds

        async def client_loop() -> None:
            while time.perf_counter() < deadline:
                began = time.perf_counter()
                try:
                    async with session.post(url, json=make_body()) as response:
                        text = await response.text()
                except (aiohttp.ClientError, TimeoutError) as error:
                    errors.append(f"{type(error).__name__}: {error}")
                    continue
                if response.status == 200:
                    latencies.append(time.perf_counter() - began)
                else:
                    errors.append(f"{response.status}: {text[:200]}")

        async def progress() -> None:
            while True:
                await asyncio.sleep(10)
                print(
                    f"  {name}: {len(latencies)} ok, {len(errors)} errors so far", file=sys.stderr, flush=True
                )

        started = time.perf_counter()
        reporter = asyncio.create_task(progress())
        await asyncio.gather(*(client_loop() for _ in range(concurrency)))
        reporter.cancel()
        elapsed = time.perf_counter() - started
    p50, p95, p99 = (np.percentile(latencies, (50, 95, 99)) * 1000).tolist() if latencies else (0.0, 0.0, 0.0)
    return LoadResult(
        name, url, concurrency, round(elapsed, 2), len(latencies) + len(errors), len(errors),
        round(len(latencies) / elapsed, 1), round(p50, 1), round(p95, 1), round(p99, 1), errors[:5],
    )  # fmt: skip


def resident_bytes(pid: int) -> int:
    """Resident memory of a process and all its descendants (KServe may fork workers), from /proc."""
    total = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            total += int(line.split()[1]) * 1024
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split()
        total += sum(resident_bytes(int(child)) for child in children)
    return total


def machine() -> dict[str, Any]:
    """The machine the figures were measured on."""
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor() or "unknown",
    )  # fmt: skip
    memory_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(memory_kb / 2**20, 1),
        "load_average_at_start": [round(value, 2) for value in os.getloadavg()],
        "os": platform.platform(),
        "python": platform.python_version(),
    }


def table(results: list[LoadResult]) -> str:
    """The figures next to the original system's."""
    rows = [("original system (published)", ORIGINAL["requests_per_second"], *[ORIGINAL[k] for k in
             ("p50_ms", "p95_ms", "p99_ms")], "")]  # fmt: skip
    rows += [
        (r.name, r.requests_per_second, r.p50_ms, r.p95_ms, r.p99_ms, f"{r.errors}/{r.requests}")
        for r in results
    ]
    lines = [f"{'':<50} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'errors':>12}"]
    lines += [
        f"{n:<50} {rps:>8.1f} {p50:>8.1f} {p95:>8.1f} {p99:>8.1f} {err:>12}"
        for n, rps, p50, p95, p99, err in rows
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The benchmark's options."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks soak", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0, help="soak seconds (default: %(default)s)")
    parser.add_argument(
        "--concurrency", type=int, default=32, help="clients in flight (default: %(default)s)"
    )
    parser.add_argument(
        "--baseline",
        type=float,
        default=15.0,
        help="seconds against the predictor alone (default: %(default)s)",
    )
    parser.add_argument(
        "--warmup", type=float, default=5.0, help="seconds of load before memory is first read"
    )
    parser.add_argument("--artifact", type=Path, help="artifact to serve (default: the latest trained)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="JSON results (default: %(default)s)")
    return parser.parse_args(argv)


def start_stack(stack: Stack, artifact: Path, workdir: Path) -> dict[str, Service]:
    """The ``housing up`` stack (the transformer logging every inference to the detector), on free ports."""
    parser = argparse.ArgumentParser()
    configure(parser)
    flags = ("--predictor-port", "--predictor-grpc-port", "--transformer-port", "--transformer-grpc-port",
             "--detector-port")  # fmt: skip
    args = parser.parse_args([item for flag in flags for item in (flag, str(free_port()))])
    os.environ[VAR_DIR_ENV] = str(workdir)  # the detector keeps its state under the stack's var dir
    started = {service.name: stack.start(service) for service in services(args, str(artifact), {})}
    for service in started.values():
        stack.wait_ready(service, timeout=120)
    return started


def main(argv: list[str] | None = None) -> int:
    """Run the soak; returns 0 when there were no errors and memory grew less than 10% in every service."""
    args = parse_args(argv)
    from model.paths import latest_artifact
    from model.train import build_artifact

    rows = houses()
    tensor_rows = [list(row.values()) for row in rows]
    with tempfile.TemporaryDirectory(prefix="housing-soak-") as tmp:
        workdir = Path(tmp)
        artifact = args.artifact or latest_artifact()
        if artifact is None:
            print(
                "no trained artifact (housing train): training a fast one for the benchmark", file=sys.stderr
            )
            artifact = build_artifact(workdir / "artifact", fast=True)
        stack = Stack(workdir / "logs")
        try:
            specs = start_stack(stack, artifact, workdir)
            pids = {name: service.pid for name, service in specs.items()}
            predictor_url = f"{specs['predictor'].url}{PREDICT_PATH}"
            transformer_url = f"{specs['transformer'].url}{PREDICT_PATH}"
            print(f"stack ready ({artifact}); baseline {args.baseline:.0f} s, then {args.duration:.0f} s at "
                  f"concurrency {args.concurrency}", file=sys.stderr)  # fmt: skip
            baseline = asyncio.run(load(
                "predictor alone (V1 tensor, baseline)", predictor_url,
                lambda: {"instances": [random.choice(tensor_rows)]}, args.concurrency, args.baseline,
            ))  # fmt: skip
            asyncio.run(load("warm-up", transformer_url, lambda: v1_body([random.choice(rows)]),
                             args.concurrency, args.warmup))  # fmt: skip
            before = {name: resident_bytes(pid) for name, pid in pids.items()}
            soak = asyncio.run(load(
                "end to end: transformer -> predictor, + detector", transformer_url,
                lambda: v1_body([random.choice(rows)]), args.concurrency, args.duration,
            ))  # fmt: skip
            after = {name: resident_bytes(pid) for name, pid in pids.items()}
        finally:
            stack.stop()
    memory = {
        name: {"start_mib": round(before[name] / 2**20, 1), "end_mib": round(after[name] / 2**20, 1),
               "growth": round(after[name] / before[name] - 1, 4)}
        for name in before
    }  # fmt: skip
    info = machine()
    report = {"machine": info, "original_system": ORIGINAL, "results": [asdict(baseline), asdict(soak)],
              "memory": memory, "max_memory_growth": MAX_MEMORY_GROWTH}  # fmt: skip
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"machine: {info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB, "
          f"load average at start {info['load_average_at_start']}")  # fmt: skip
    print(table([baseline, soak]))
    for name, figures in memory.items():
        start, end, growth = figures["start_mib"], figures["end_mib"], figures["growth"]
        print(f"{name:<12} resident memory {start:>7.1f} MiB -> {end:>7.1f} MiB ({growth:+.1%})")
    print(f"saved {args.output}")
    grew = [name for name, figures in memory.items() if figures["growth"] >= MAX_MEMORY_GROWTH]
    if soak.errors or grew:
        print(
            f"FAILED: {soak.errors} errors {soak.first_errors}; memory grew >= 10% in {grew}", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
