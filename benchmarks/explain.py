"""Explainer benchmark: ``:explain`` through the transformer, and what it costs the predictions beside it.

``./dev bench explain`` starts the predictor, the explainer and the transformer
(``--explainer_host``, gRPC to the predictor, as ``housing up`` runs them), all three pinned to core 0
(``taskset -c 0``), and loads them from core 1:

1. **additivity**, in this process: base value + sum of contributions against the model's own output, on
   1,000 houses drawn from the data set (log space; target 1e-6);
2. **single-row ``:explain``** through the transformer, one request after another for ``--seconds``: p50, p95
   and p99 end to end (target: p95 <= 25 ms);
3. **predictions beside explanations**: one-row V1 predictions at concurrency 32 (``wrk``), alternately
   alone and with ``:explain`` at 10 requests/s beside them (an open-loop client), ``--rounds`` of each in
   the same run; the predictions' p99 with explanations against without, as the median of the rounds'
   ratios (target: at most 5 % higher). ``--explainer-core 1`` moves the explainer to the load's core, as
   its own pods on the cluster take it off the predictions' CPU.

Each phase lasts ``--seconds`` (default 10, at most 30). It prints a table, each target met or missed, and
saves the figures to ``benchmarks/results/explain.json``. The machine is small and shared: compare figures
within one run, and run it more than once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks.serving import CONCURRENCY, V1_PATH, Measured, Target, pinned, v1_named_body, wrk
from housing.processes import free_port

RESULTS = Path(__file__).resolve().parent / "results" / "explain.json"
MODEL = "housing"
EXPLAIN_PATH = f"/v1/models/{MODEL}:explain"
EXPLAIN_RATE = 10.0
"""``:explain`` requests per second beside the predictions (the issue's figure)."""
TARGETS = {"additivity_max_error": 1e-6, "explain_p95_ms": 25.0, "predict_p99_change_percent": 5.0}
"""The issue's targets, each an upper bound."""
LOAD_CORE = 1


def additivity(artifact_dir: Path, rows: np.ndarray) -> float:
    """Largest |base + sum(contributions) - model output| over ``rows``, in the trees' output space."""
    from explainer.model import HousingExplainer

    explainer = HousingExplainer(MODEL, str(artifact_dir))
    explainer.load()
    answer = asyncio.run(explainer.explain({"instances": rows.tolist()}))
    pipeline = explainer.artifact.pipeline  # type: ignore[union-attr]
    outputs = np.log(pipeline.predict(rows))
    sums = [
        item["base_output"] + sum(c["contribution"] for c in item["contributions"].values())
        for item in answer["explanations"]
    ]
    return float(np.max(np.abs(np.asarray(sums) - outputs)))


def explain_latencies(url: str, body: bytes, seconds: float) -> dict[str, float]:
    """One ``:explain`` after another for ``seconds``: latency percentiles (ms) and the non-200 count."""
    latencies, errors = [], 0
    headers = {"content-type": "application/json"}
    with httpx.Client(timeout=10) as client:
        for _ in range(20):  # warm-up: first calls, connections, lazy imports
            client.post(url, content=body, headers=headers)
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            began = time.perf_counter()
            status = client.post(url, content=body, headers=headers).status_code
            latencies.append((time.perf_counter() - began) * 1000)
            errors += status != 200
    return {
        "requests": len(latencies),
        "errors": errors,
        **{f"p{q}_ms": round(float(np.percentile(latencies, q)), 2) for q in (50, 95, 99)},
    }


class ExplainLoad:
    """``:explain`` at a fixed rate (open loop: each request at its own time, whatever the last one did)."""

    def __init__(self, url: str, body: bytes, rate: float):
        self.url, self.body, self.interval = url, body, 1 / rate
        self.latencies: list[float] = []
        self.statuses: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ExplainLoad:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            began, sent = time.perf_counter(), 0
            while not self._stop.is_set():
                wait = began + sent * self.interval - time.perf_counter()
                if wait > 0:
                    self._stop.wait(wait)
                    continue
                sent += 1
                start = time.perf_counter()
                try:
                    status = client.post(
                        self.url, content=self.body, headers={"content-type": "application/json"}
                    ).status_code
                except httpx.HTTPError:
                    status = 0
                self.latencies.append((time.perf_counter() - start) * 1000)
                self.statuses[status] = self.statuses.get(status, 0) + 1


def start(artifact_dir: Path, log_dir: Path, explainer_core: str = "0") -> tuple[list[Any], str]:
    """Predictor and transformer on core 0, the explainer on ``explainer_core``; the transformer's URL."""
    from model.artifact import read_metadata

    http, grpc, explainer_port, front = free_port(), free_port(), free_port(), free_port()
    python = sys.executable
    pin = read_metadata(artifact_dir)["sha256"]
    services = [
        pinned("predictor", [python, "-m", "predictor", "--storage_uri", str(artifact_dir),
                             "--http_port", str(http), "--grpc_port", str(grpc)], http, log_dir),
        pinned("explainer", [python, "-m", "explainer", "--storage_uri", str(artifact_dir),
                             "--expected_sha256", pin, "--http_port", str(explainer_port),
                             "--enable_grpc", "false"], explainer_port, log_dir),
        pinned("transformer", [python, "-m", "transformer", "--protocol", "grpc-v2",
                               "--predictor_host", f"127.0.0.1:{grpc}",
                               "--predictor_rest_host", f"127.0.0.1:{http}",
                               "--explainer_host", f"127.0.0.1:{explainer_port}",
                               "--http_port", str(front), "--grpc_port", str(free_port())], front, log_dir),
    ]  # fmt: skip
    services[1].command = ["taskset", "-c", explainer_core, *services[1].command[3:]]
    for service in services:
        service.start()
    for service in services:
        path = f"/v1/models/{MODEL}" if service.name == "explainer" else "/v2/health/ready"
        service.wait_ready(service.url + path, timeout=120)
    return services, services[-1].url


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Start the three servers, run the three phases, return the figures."""
    from model.artifact import read_metadata
    from model.dataset import load_dataset
    from model.paths import latest_artifact

    artifact_dir = args.artifact or latest_artifact()
    if artifact_dir is None:
        from model.train import build_artifact

        print("no trained artifact: training a fast one for the benchmark ...", flush=True)
        artifact_dir = build_artifact(tempfile.mkdtemp(prefix="bench-artifact-"), fast=True)
    print(f"explaining {artifact_dir}", flush=True)
    names = [feature["name"] for feature in read_metadata(artifact_dir)["features"]]
    data = load_dataset()[names].to_numpy(dtype=np.float64)
    houses = data[np.random.default_rng(7).integers(0, len(data), 1000)]
    worst = additivity(artifact_dir, houses)
    print(f"additivity on 1,000 houses: max error {worst:.1e} (log space)", flush=True)

    os.sched_setaffinity(0, {LOAD_CORE})  # this process's clients share core 1 with wrk, not the servers'
    log_dir = Path(tempfile.mkdtemp(prefix="bench-explain-logs-"))
    scratch = Path(tempfile.mkdtemp(prefix="bench-explain-wrk-"))
    load_average = os.getloadavg()
    services, url = start(artifact_dir, log_dir, args.explainer_core)
    body = v1_named_body(data[:1], names)
    try:
        single = explain_latencies(url + EXPLAIN_PATH, body, args.seconds)
        print(f"single-row :explain, one at a time: {single}", flush=True)
        predict = Target("predict", services[-1], V1_PATH, body)
        wrk(predict, CONCURRENCY, 1, 1, scratch)  # warm-up
        alone: list[Measured] = []
        beside: list[Measured] = []
        explains: list[dict[str, Any]] = []
        for round_ in range(args.rounds):  # alternated, so a drift in the machine's speed hits both alike
            alone.append(wrk(predict, CONCURRENCY, args.seconds, 1, scratch))
            with ExplainLoad(url + EXPLAIN_PATH, body, EXPLAIN_RATE) as load:
                beside.append(wrk(predict, CONCURRENCY, args.seconds, 1, scratch))
            explains.append(
                {
                    "requests": len(load.latencies),
                    "statuses": load.statuses,
                    "p95_ms": round(float(np.percentile(load.latencies, 95)), 2) if load.latencies else None,
                }
            )
            print(
                f"round {round_ + 1}: predictions alone p99 {alone[-1].p99_ms:.2f} ms "
                f"({alone[-1].requests_per_second:.0f} req/s); with :explain at {EXPLAIN_RATE:g}/s "
                f"p99 {beside[-1].p99_ms:.2f} ms ({beside[-1].requests_per_second:.0f} req/s); "
                f":explain {explains[-1]}",
                flush=True,
            )
    finally:
        for service in services:
            service.stop(timeout=20)
    change = statistics.median((b.p99_ms / a.p99_ms - 1) * 100 for a, b in zip(alone, beside, strict=True))
    return {
        "artifact": str(artifact_dir),
        "additivity_max_error": worst,
        "explain_one_at_a_time": single,
        "predictions_alone": [vars(run) for run in alone],
        "predictions_with_explain": [vars(run) for run in beside],
        "explain_beside": explains,
        "predict_p99_change_percent": round(change, 1),
        "explainer_core": args.explainer_core,
        "logs": str(log_dir),
        "load_average": load_average,
    }


def table(figures: dict[str, Any]) -> list[str]:
    """The figures against the issue's targets."""
    alone, beside = figures["predictions_alone"], figures["predictions_with_explain"]
    single = figures["explain_one_at_a_time"]

    def p99s(runs: list[dict[str, Any]]) -> str:
        return ", ".join(f"{run['p99_ms']:.2f}" for run in runs)

    lines = [f"\n{'figure':<46} {'measured':>12} {'target':>10}  met"]
    for name, value in measured(figures).items():
        met = "yes" if value <= TARGETS[name] else "NO"
        lines.append(f"{name:<46} {value:>12.3g} {TARGETS[name]:>10.3g}  {met}")
    lines += [
        f"{':explain p50 / p99, one at a time (ms)':<46} {single['p50_ms']:.2f} / {single['p99_ms']:.2f}",
        f"{'predictions p99 alone, per round (ms)':<46} {p99s(alone)}",
        f"{'predictions p99 with :explain, per round (ms)':<46} {p99s(beside)}",
        f"{'predictions req/s alone / with :explain':<46} "
        f"{statistics.mean(r['requests_per_second'] for r in alone):.0f} / "
        f"{statistics.mean(r['requests_per_second'] for r in beside):.0f}",
    ]
    return lines


def measured(figures: dict[str, Any]) -> dict[str, float]:
    """The figures the issue sets targets for."""
    return {
        "additivity_max_error": figures["additivity_max_error"],
        "explain_p95_ms": figures["explain_one_at_a_time"]["p95_ms"],
        "predict_p99_change_percent": figures["predict_p99_change_percent"],
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """``--artifact``, ``--seconds`` (each phase) and ``--rounds``."""
    parser = argparse.ArgumentParser(prog="./dev bench explain", description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", type=Path, help="artifact directory (default: the latest trained)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase, at most 30")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of predictions alone and with :explain")
    parser.add_argument(
        "--explainer-core",
        default="0",
        choices=["0", "1"],
        help="core of the explainer: 0 (default) shares the predictions' core; 1, the load's, stands for "
        "its own pod on the cluster",
    )
    args = parser.parse_args(argv)
    if not 0 < args.seconds <= 30 or args.rounds < 1:
        parser.error("--seconds must be in (0, 30] and --rounds at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table, save the figures; exit 1 when a target is missed."""
    args = parse_args(argv)
    figures = measure(args)
    lines = table(figures)
    print("\n".join(lines))
    met = all(value <= TARGETS[name] for name, value in measured(figures).items())
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    figures |= {"machine": platform.platform(), "cpus": os.cpu_count(), "targets": TARGETS, "met": met}
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"saved {RESULTS}")
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
