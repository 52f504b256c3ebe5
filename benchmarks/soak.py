"""Soak benchmark: the local stack under steady load, end to end, watching errors, latency and memory.

``./dev bench soak`` starts predictor, transformer and detector (with ``housing up``'s process
machinery; the transformer logs every inference to the detector), then sends one-house V1 requests with
named features through the transformer for ``--duration`` seconds (3 minutes) at ``--concurrency`` (32),
from ``wrk`` (Debian's package), cycling through 10,000 houses drawn from the data set. Before that, the same
load goes to the predictor directly for ``--baseline`` seconds: the baseline measured in the same run, on the
same machine, which shows what the transformer hop costs. It prints req/s and p50/p95/p99 next to the
original system's published figures, and each service's resident memory at the start and end of the soak,
and saves everything to ``benchmarks/results/soak.json``.

Placement (two cores): the serving path (predictor and both transformers) on core 0; the detector, which on
AKS runs on a node of its own, on core 1 with the load generator (``--no-pin`` leaves everything unpinned).

The inference log is measured beside it: the same soak runs through a second transformer with its request
logger off (same predictor), in turns of ``--turn`` seconds with the logged one (off-on, on-off, ...), so a
drift in the shared machine's speed hits both alike; the logger's cost shows as the throughput ratio on / off
and as the transformer's CPU per request. The turns are short (2 s) because this machine's speed swings by
10-15% from one 2-second turn to the next (measured: one turn 1,150 req/s, the next 1,840): with 30 s turns
the ratio read anywhere from 86% to 96% for the same code; with 90 turns each it settles within 1-2 points.
After the soak the logger's counters (inferences offered, delivered, dropped, failed) and the detector's
(inferences joined, requests or responses unmatched, the unseen estimate) are read and printed next to the
requests served.

It fails (exit 1) on any error response, when a service's resident memory grows by 10% or more, when an
inference was dropped, failed or left unmatched, or when throughput with the logger on is below 95% of
throughput with it off.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import random
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.serving import LOAD_CORE, SERVER_CORE, run_wrk
from housing.processes import Service, Stack, free_port
from housing.stack import configure, services
from model.paths import VAR_DIR_ENV
from monitoring.traffic import PREDICT_PATH, houses, v1_body

RESULTS = Path(__file__).resolve().parent / "results" / "soak.json"
ORIGINAL = {"requests_per_second": 1200.0, "p50_ms": 25.0, "p95_ms": 45.0, "p99_ms": 78.0}
"""The original system's API benchmark table (FastAPI service, machine not stated)."""
MAX_MEMORY_GROWTH = 0.10
MIN_LOGGER_THROUGHPUT_RATIO = 0.95
BODIES = 10_000
"""Distinct one-house bodies the load cycles through."""
PLACEMENT = {"predictor": SERVER_CORE, "transformer": SERVER_CORE, "transformer-nolog": SERVER_CORE,
             "detector": LOAD_CORE}  # fmt: skip
"""Where each service runs on a 2-core machine: the serving path on one core; the detector, which on AKS has a
node of its own, on the other beside this process's load generator (:func:`pin_load_generator`)."""


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


def load(name: str, url: str, bodies: Path, concurrency: int, seconds: float) -> LoadResult:
    """Post to ``url`` from ``concurrency`` connections for ``seconds`` with ``wrk``, on the load core.

    Args:
        name: Label of the phase.
        url: The predict URL.
        bodies: JSON bodies, one per line, sent in turn (:func:`write_bodies`).
        concurrency: Connections in flight at once, each awaiting its answer before the next request.
        seconds: How long to send.

    Returns:
        Counts, throughput and latency percentiles; any non-2xx answer or socket error is an error.
    """
    result = run_wrk(url, concurrency, seconds, bodies.parent, bodies=bodies, progress=name)
    ok = result["requests"] - result["errors"]
    return LoadResult(
        name, url, concurrency, round(result["seconds"], 2), result["requests"], result["errors"],
        round(ok / result["seconds"], 1),
        *(round(result[f"p{q}_us"] / 1000, 1) for q in (50, 95, 99)),
    )  # fmt: skip


def write_bodies(path: Path, bodies: Sequence[dict[str, Any]]) -> Path:
    """``bodies`` as JSON, one per line (what :func:`load` sends in turn); returns ``path``."""
    path.write_text("".join(json.dumps(body, separators=(",", ":")) + "\n" for body in bodies))
    return path


def combined(name: str, parts: list[LoadResult]) -> LoadResult:
    """Several phases against one URL as one: summed counts, throughput over their whole time.

    Percentiles are the worst part's (the raw latencies are not kept), so they never flatter.
    """
    seconds = sum(part.seconds for part in parts)
    ok = sum(part.requests - part.errors for part in parts)
    return LoadResult(
        name, parts[0].url, parts[0].concurrency, round(seconds, 2), sum(p.requests for p in parts),
        sum(p.errors for p in parts), round(ok / seconds, 1) if seconds else 0.0,
        max(p.p50_ms for p in parts), max(p.p95_ms for p in parts), max(p.p99_ms for p in parts),
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


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """User + system CPU seconds of each process and its descendants (the detector's test worker)."""
    import psutil

    found = {}
    for name, pid in pids.items():
        processes = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
        found[name] = sum(sum(process.cpu_times()[:2]) for process in processes)
    return found


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
    parser = argparse.ArgumentParser(prog="./dev bench soak", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--duration", type=float, default=180.0, help="seconds of the logged soak (default: %(default)s)"
    )
    parser.add_argument(
        "--turn",
        type=float,
        default=2.0,
        help="seconds of each turn, the logged and unlogged soaks alternating (default: %(default)s)",
    )
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
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="leave every process unpinned (default: serving on core 0, the "
        "detector and the load generator on core 1)",
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help="JSON results (default: %(default)s)")
    return parser.parse_args(argv)


def start_stack(
    stack: Stack, artifact: Path, workdir: Path, cores: dict[str, str] | None = None
) -> dict[str, Service]:
    """The ``housing up`` stack (the transformer logging every inference to the detector), on free ports.

    Plus ``transformer-nolog``: a second transformer in front of the same predictor, its logger off.

    Args:
        stack: Where the processes are started.
        artifact: The artifact the predictor serves.
        workdir: The stack's var dir (the detector's state).
        cores: CPU list per service name (``taskset -c``), e.g. :data:`PLACEMENT`; unpinned when ``None``.
    """
    parser = argparse.ArgumentParser()
    configure(parser)
    flags = ("--predictor-port", "--predictor-grpc-port", "--transformer-port", "--transformer-grpc-port",
             "--detector-port")  # fmt: skip
    ports = [item for flag in flags for item in (flag, str(free_port()))]
    args = parser.parse_args([*ports, "--no-explainer"])
    os.environ[VAR_DIR_ENV] = str(workdir)  # the detector keeps its state under the stack's var dir
    wanted = services(args, str(artifact), {})
    quiet = parser.parse_args([*ports, "--no-explainer", "--no-detector", "--transformer-port",
                               str(free_port()), "--transformer-grpc-port", str(free_port())])  # fmt: skip
    nolog = next(service for service in services(quiet, str(artifact), {}) if service.name == "transformer")
    wanted.append(dataclasses.replace(nolog, name="transformer-nolog"))
    if cores:
        wanted = [dataclasses.replace(service, command=["taskset", "-c", cores[service.name],
                                                        *service.command]) for service in wanted]  # fmt: skip
    started = {service.name: stack.start(service) for service in wanted}
    for service in started.values():
        stack.wait_ready(service, timeout=120)
    return started


def metric_sums(url: str, name: str, label: str, **matchers: str) -> dict[str, float]:
    """Samples of ``name`` on ``url``/metrics matching ``matchers``, summed by the value of ``label``."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    found: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=10).text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in matchers.items()):
                key = sample.labels.get(label, "")
                found[key] = found.get(key, 0.0) + sample.value
    return found


def inference_log(transformer: str, detector: str) -> dict[str, float]:
    """The logger's inference counters and the detector's, once every offered inference is accounted for."""
    from housing.processes import wait_until

    def logger() -> dict[str, float]:
        return metric_sums(transformer, "housing_logger_inferences_total", "outcome")

    def settled() -> bool:
        counts = logger()
        done = sum(counts.get(key, 0.0) for key in ("delivered", "dropped", "failed"))
        return done >= counts.get("offered", 0.0)

    wait_until(settled, timeout=60, what="every offered inference delivered, dropped or failed")
    counts = logger()
    unmatched = metric_sums(detector, "housing_detector_events_total", "type", outcome="unmatched")
    return {
        "offered": counts.get("offered", 0.0),
        "delivered": counts.get("delivered", 0.0),
        "dropped": counts.get("dropped", 0.0),
        "failed": counts.get("failed", 0.0),
        "joined_at_detector": sum(
            metric_sums(detector, "housing_detector_inferences_total", "endpoint").values()
        ),
        "unmatched_events": unmatched.get("request", 0.0) + unmatched.get("response", 0.0),
        "unseen_estimate": sum(metric_sums(detector, "housing_events_unseen_total", "endpoint").values()),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the soak; returns 0 when there were no errors and memory grew less than 10% in every service."""
    args = parse_args(argv)
    from model.paths import latest_artifact
    from model.train import build_artifact

    chosen = random.Random(0).choices(houses(), k=BODIES)  # one house per request, in a fixed random order
    with tempfile.TemporaryDirectory(prefix="housing-soak-") as tmp:
        workdir = Path(tmp)
        named = write_bodies(workdir / "named.jsonl", [v1_body([house]) for house in chosen])
        tensors = write_bodies(workdir / "tensors.jsonl", [{"instances": [list(h.values())]} for h in chosen])
        artifact = args.artifact or latest_artifact()
        if artifact is None:
            print(
                "no trained artifact (housing train): training a fast one for the benchmark", file=sys.stderr
            )
            artifact = build_artifact(workdir / "artifact", fast=True)
        stack = Stack(workdir / "logs")
        pin = not args.no_pin and (os.cpu_count() or 1) >= 2
        try:
            specs = start_stack(stack, artifact, workdir, PLACEMENT if pin else None)
            if pin:
                os.sched_setaffinity(0, {int(LOAD_CORE)})  # this process is the load generator
            pids = {name: service.pid for name, service in specs.items()}
            predictor_url = f"{specs['predictor'].url}{PREDICT_PATH}"
            transformer_url = f"{specs['transformer'].url}{PREDICT_PATH}"
            nolog_url = f"{specs['transformer-nolog'].url}{PREDICT_PATH}"
            turns = max(1, math.ceil(args.duration / args.turn))
            print(f"stack ready ({artifact}; {'pinned: ' + str(PLACEMENT) if pin else 'unpinned'}); "
                  f"baseline {args.baseline:.0f} s, then {args.duration:.0f} s with the logger on and "
                  f"{args.duration:.0f} s with it off, {turns} turns each, concurrency {args.concurrency}",
                  file=sys.stderr)  # fmt: skip
            baseline = load("predictor alone (V1 tensor, baseline)", predictor_url, tensors, args.concurrency,
                            args.baseline)  # fmt: skip
            load("warm-up", nolog_url, named, args.concurrency, args.warmup)
            load("warm-up", transformer_url, named, args.concurrency, args.warmup)
            log_before = inference_log(specs["transformer"].url, specs["detector"].url)
            before = {name: resident_bytes(pid) for name, pid in pids.items()}
            # The two soaks take turns (off-on, on-off, ...), so a drift in the shared machine's speed
            # during the run hits both alike; CPU is counted per soak, over its turns.
            parts: dict[str, list[LoadResult]] = {"on": [], "off": []}
            cpu = {side: dict.fromkeys(pids, 0.0) for side in parts}
            for turn in range(turns):
                for side in ("off", "on") if turn % 2 == 0 else ("on", "off"):
                    url = transformer_url if side == "on" else nolog_url
                    seconds = min(args.turn, args.duration - turn * args.turn)
                    started = cpu_seconds(pids)
                    parts[side].append(
                        load(f"logger {side}, turn {turn + 1}/{turns}", url, named, args.concurrency, seconds)
                    )
                    for name, value in cpu_seconds(pids).items():
                        cpu[side][name] += value - started[name]
            after = {name: resident_bytes(pid) for name, pid in pids.items()}
            log_after = inference_log(specs["transformer"].url, specs["detector"].url)
            soak = combined("end to end: transformer -> predictor, + detector", parts["on"])
            quiet = combined("end to end, request logger off", parts["off"])
            cpu_soak, cpu_quiet = cpu["on"], cpu["off"]
        finally:
            stack.stop()
    delivery = {key: log_after[key] - log_before[key] for key in log_after}
    delivery["requests_served"] = soak.requests - soak.errors
    # CPU per request does not depend on how busy the shared machine is, unlike req/s: the logger's own cost
    # is the transformer's difference; the detector's is what it would take from the serving nodes' cores.
    delivery["transformer_cpu_us_per_request_logger_off"] = round(
        cpu_quiet["transformer-nolog"] / max(quiet.requests, 1) * 1e6, 1
    )
    delivery["transformer_cpu_us_per_request_logger_on"] = round(
        cpu_soak["transformer"] / max(soak.requests, 1) * 1e6, 1
    )
    delivery["detector_cpu_us_per_inference"] = round(cpu_soak["detector"] / max(soak.requests, 1) * 1e6, 1)
    delivery["throughput_ratio_logger_on_off"] = round(
        soak.requests_per_second / quiet.requests_per_second, 3
    ) if quiet.requests_per_second else 0.0  # fmt: skip
    memory = {
        name: {"start_mib": round(before[name] / 2**20, 1), "end_mib": round(after[name] / 2**20, 1),
               "growth": round(after[name] / before[name] - 1, 4)}
        for name in before
    }  # fmt: skip
    info = machine()
    report = {"machine": info, "original_system": ORIGINAL,
              "results": [asdict(baseline), asdict(quiet), asdict(soak)], "memory": memory,
              "max_memory_growth": MAX_MEMORY_GROWTH, "inference_log": delivery}  # fmt: skip
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"machine: {info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB, "
          f"load average at start {info['load_average_at_start']}")  # fmt: skip
    print(table([baseline, quiet, soak]))
    for name, figures in memory.items():
        start, end, growth = figures["start_mib"], figures["end_mib"], figures["growth"]
        print(f"{name:<18} resident memory {start:>7.1f} MiB -> {end:>7.1f} MiB ({growth:+.1%})")
    d = delivery
    print(
        f"inference log: {d['requests_served']:.0f} requests served; inferences offered {d['offered']:.0f}, "
        f"delivered {d['delivered']:.0f}, dropped {d['dropped']:.0f}, failed {d['failed']:.0f}; "
        f"joined at the detector {d['joined_at_detector']:.0f}, unmatched {d['unmatched_events']:.0f}, "
        f"unseen estimate {d['unseen_estimate']:.0f}"
    )
    print(
        f"throughput, logger on / off: {d['throughput_ratio_logger_on_off']:.1%}; transformer CPU / request "
        f"{d['transformer_cpu_us_per_request_logger_on']:.0f} µs with the logger, "
        f"{d['transformer_cpu_us_per_request_logger_off']:.0f} µs without; detector CPU per inference "
        f"{d['detector_cpu_us_per_inference']:.0f} µs (same cores here: on AKS it runs on its own)"
    )
    print(f"saved {args.output}")
    grew = [name for name, figures in memory.items() if figures["growth"] >= MAX_MEMORY_GROWTH]
    lost = delivery["dropped"] + delivery["failed"] + delivery["unmatched_events"]
    slow = delivery["throughput_ratio_logger_on_off"] < MIN_LOGGER_THROUGHPUT_RATIO
    if soak.errors or grew or lost or slow:
        print(
            f"FAILED: {soak.errors} errors; memory grew >= 10% in {grew}; "
            f"{lost:.0f} inferences dropped, failed or unmatched; logger on / off throughput "
            f"{delivery['throughput_ratio_logger_on_off']:.1%} (at least {MIN_LOGGER_THROUGHPUT_RATIO:.0%})",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
