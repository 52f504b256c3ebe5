"""Serving benchmark: our predictor and transformer against a naive KServe model, measured in one run.

``python -m benchmarks serving`` measures, each for ``--seconds`` (``--quick``: 1 s):

1. the floor: the predictor's own ``predict_validated`` in-process, 1 and 32 rows (no server at all);
2. naive: the minimal ``kserve.Model`` (``pipeline.predict(get_predict_input(payload))``, KServe defaults);
3. predictor: ``python -m predictor`` with the same V2 JSON payloads;
4. end to end: ``python -m transformer`` -> predictor over gRPC (as ``housing up`` runs it), with
   named-feature V1 JSON (the original payload); and the same with the transformer calling the predictor
   over REST V2 ("e2e, REST hop");

each with 1-row and 32-row payloads at concurrency 1 and 32 (the four targets of a cell take five short turns
in rotation, every server up, so a drift in the machine's speed hits them alike), plus 1,000-row batches end
to end. It serves the newest trained artifact. It prints
req/s, rows/s, p50, p99 and each server's peak resident memory, checks the targets below, and saves everything
to ``benchmarks/results/serving.json``. Load comes from an aiohttp client on loopback, bounded in time.

Targets: predictor >= 1.0x naive throughput; end to end >= 0.5x predictor; end-to-end p99 <= 50 ms at
concurrency 32; 1,000-row batches end to end >= 50,000 rows/s. The machine is shared and small (2 cores):
compare figures within one run, not across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from housing.processes import Service, free_port, python_service

RESULTS = Path(__file__).resolve().parent / "results" / "serving.json"
MODEL = "housing"
V1_PATH = f"/v1/models/{MODEL}:predict"
V2_PATH = f"/v2/models/{MODEL}/infer"
TURNS = 5
"""Each cell's targets take this many turns in rotation (see ``measure``)."""
HEADER = "target                rows  conc     req/s     rows/s   p50 ms   p99 ms errors"
TARGETS = {
    "predictor_vs_naive_throughput": 1.0,
    "e2e_vs_predictor_throughput": 0.5,
    "e2e_p99_ms_at_concurrency_32": 50.0,
    "e2e_1000_row_rows_per_second": 50_000.0,
}


@dataclass(frozen=True)
class Phase:
    """One bounded measurement."""

    target: str
    rows: int
    concurrency: int
    seconds: float
    requests: int
    errors: int
    requests_per_second: float
    rows_per_second: float
    p50_ms: float
    p99_ms: float


@dataclass
class Samples:
    """What the client saw of one target, gathered over one or more turns."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0


def floor(pipeline: Any, rows: np.ndarray, seconds: float) -> Phase:
    """The predictor's own predict call in a loop, in this process: what no server can beat."""
    from model.pipeline import predict_validated

    samples = Samples(seconds=seconds)
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        began = time.perf_counter()
        predict_validated(pipeline, rows)
        samples.latencies.append(time.perf_counter() - began)
    return summarize("in-process predict", len(rows), 1, samples)


async def load(url: str, body: bytes, concurrency: int, seconds: float, samples: Samples) -> None:
    """POST ``body`` from ``concurrency`` clients for ``seconds`` after a warm-up, adding to ``samples``.

    A non-200 answer counts as an error.
    """
    import aiohttp

    headers = {"content-type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def client(until: float, record: bool) -> None:
            while time.perf_counter() < until:
                began = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    ok = response.status == 200
                if record:
                    if ok:
                        samples.latencies.append(time.perf_counter() - began)
                    else:
                        samples.errors += 1

        warm_up = time.perf_counter() + min(0.5, seconds / 4)
        await asyncio.gather(*(client(warm_up, False) for _ in range(concurrency)))
        started = time.perf_counter()
        await asyncio.gather(*(client(started + seconds, True) for _ in range(concurrency)))
        samples.seconds += time.perf_counter() - started


def summarize(target: str, rows: int, concurrency: int, samples: Samples) -> Phase:
    """Throughput and latency percentiles of one target."""
    latencies, errors, elapsed = samples.latencies, samples.errors, samples.seconds
    p50, p99 = (np.percentile(latencies, (50, 99)) * 1000).tolist() if latencies else (0.0, 0.0)
    per_second = len(latencies) / elapsed
    return Phase(
        target, rows, concurrency, round(elapsed, 2), len(latencies) + errors, errors,
        round(per_second, 1), round(per_second * rows, 1), round(p50, 2), round(p99, 2),
    )  # fmt: skip


def peak_rss_mb(pid: int) -> float:
    """Peak resident memory (VmHWM) of a process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def v2_body(rows: np.ndarray) -> bytes:
    """A V2 JSON request with one [N, n_features] FP64 tensor."""
    tensor = {"name": "input-0", "datatype": "FP64", "shape": list(rows.shape), "data": rows.ravel().tolist()}
    return json.dumps({"inputs": [tensor]}).encode()


def v1_named_body(rows: np.ndarray, names: Sequence[str]) -> bytes:
    """A V1 JSON request with one object of named features per row (the original payload)."""
    return json.dumps({"instances": [dict(zip(names, row.tolist(), strict=True)) for row in rows]}).encode()


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Run every phase; return the figures."""
    from model.artifact import load_artifact
    from model.dataset import load_dataset
    from model.paths import latest_artifact

    artifact_dir = args.artifact or latest_artifact() or Path(tempfile.mkdtemp(prefix="bench-artifact-"))
    if not (artifact_dir / "model.joblib").exists():
        from model.train import build_artifact

        print("no trained artifact: training a fast one for the benchmark ...", flush=True)
        build_artifact(artifact_dir, fast=True)
    print(f"serving {artifact_dir}", flush=True)
    artifact = load_artifact(artifact_dir)
    names = artifact.feature_names
    data = load_dataset()[names].to_numpy(dtype=np.float64)
    batches = {rows: np.resize(data, (rows, len(names))) for rows in (1, 32, 1000)}
    log_dir = Path(tempfile.mkdtemp(prefix="bench-serving-logs-"))
    seconds, phases, peaks = args.seconds, [], {}
    load_average = os.getloadavg()  # other work on the machine skews every figure: recorded with them

    def cell(rows: int, concurrency: int, targets: list[tuple[str, str, bytes]]) -> None:
        """Measure (target, url, body) for ``seconds`` each, in short turns taken in rotation.

        Every server is up and idle while another is measured, and this machine's speed drifts within
        seconds: taking turns makes a drift hit every target of the cell alike, so their ratios hold.
        """
        samples = {target: Samples() for target, _, _ in targets}
        for _ in range(TURNS):
            for target, url, body in targets:
                asyncio.run(load(url, body, concurrency, seconds / TURNS, samples[target]))
        for target, _, _ in targets:
            phase = summarize(target, rows, concurrency, samples[target])
            phases.append(phase)
            print(format_phase(phase), flush=True)

    print(HEADER)
    for rows in (1, 32):
        phase = floor(artifact.pipeline, batches[rows], seconds)
        phases.append(phase)
        print(format_phase(phase), flush=True)

    naive_port, naive_grpc, http, grpc, front, rest_front = (free_port() for _ in range(6))
    predictor_args = ["-m", "predictor", "--storage_uri", str(artifact_dir)]
    predictor_args += ["--http_port", str(http), "--grpc_port", str(grpc)]

    def server(name: str, args: list[str], port: int) -> Service:
        return python_service(name, args, log_dir, port=port).start()

    servers = {
        "naive": server(
            "naive",
            ["-m", "benchmarks.serving", "naive-server", str(artifact_dir), str(naive_port), str(naive_grpc)],
            naive_port,
        ),
        "predictor": server("predictor", predictor_args, http),
    }
    # As ``housing up`` runs it: gRPC to the predictor; a second transformer calls the predictor over REST V2.
    grpc_hop = ["--protocol", "grpc-v2", "--predictor_host", f"127.0.0.1:{grpc}"]
    rest_hop = ["--protocol", "v2", "--predictor_host", f"127.0.0.1:{http}"]
    for name, hop, port in (("transformer", grpc_hop, front), ("transformer-rest", rest_hop, rest_front)):
        args_ = ["-m", "transformer", *hop, "--predictor_rest_host", f"127.0.0.1:{http}"]
        args_ += ["--http_port", str(port), "--grpc_port", str(free_port())]
        servers[name] = server(name, args_, port)
    targets = (
        ("naive kserve.Model", "naive", V2_PATH, v2_body),
        ("predictor", "predictor", V2_PATH, v2_body),
        ("end to end", "transformer", V1_PATH, lambda rows: v1_named_body(rows, names)),
        ("e2e, REST hop", "transformer-rest", V1_PATH, lambda rows: v1_named_body(rows, names)),
    )
    try:
        for started in servers.values():
            started.wait_ready(f"{started.url}/v2/models/{MODEL}/ready", timeout=90)
        for rows in (1, 32):
            for concurrency in (1, 32):
                cell(
                    rows,
                    concurrency,
                    [
                        (target, f"{servers[name].url}{path}", make_body(batches[rows]))
                        for target, name, path, make_body in targets
                    ],
                )
        big = v1_named_body(batches[1000], names)
        for concurrency in (1, 4):
            cell(1000, concurrency, [("end to end", f"{servers['transformer'].url}{V1_PATH}", big)])
    finally:
        for name, started in servers.items():
            peaks[name] = peak_rss_mb(started.pid)
            started.stop(timeout=20)
    return {
        "phases": [asdict(phase) for phase in phases],
        "peak_rss_mb": peaks,
        "logs": str(log_dir),
        "load_average": load_average,
    }


def format_phase(phase: Phase) -> str:
    """One line of the printed table."""
    return (
        f"{phase.target:<20} {phase.rows:>5} {phase.concurrency:>5} {phase.requests_per_second:>9.1f} "
        f"{phase.rows_per_second:>10.0f} {phase.p50_ms:>8.2f} {phase.p99_ms:>8.2f} {phase.errors:>6}"
    )


def check_targets(phases: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Compare the figures with the targets (ratios over the four 1/32-row x 1/32-concurrency cells)."""

    def throughput(target: str, rows: int, concurrency: int) -> float:
        return float(cell(target, rows, concurrency)["requests_per_second"])

    def cell(target: str, rows: int, concurrency: int) -> dict[str, Any]:
        return next(
            p for p in phases if (p["target"], p["rows"], p["concurrency"]) == (target, rows, concurrency)
        )

    cells = [(rows, concurrency) for rows in (1, 32) for concurrency in (1, 32)]
    vs_naive = min(throughput("predictor", *c) / throughput("naive kserve.Model", *c) for c in cells)
    vs_predictor = min(throughput("end to end", *c) / throughput("predictor", *c) for c in cells)
    p99 = max(cell("end to end", rows, 32)["p99_ms"] for rows in (1, 32))
    big = max(p["rows_per_second"] for p in phases if p["target"] == "end to end" and p["rows"] == 1000)
    measured = {
        "predictor_vs_naive_throughput": round(vs_naive, 2),
        "e2e_vs_predictor_throughput": round(vs_predictor, 2),
        "e2e_p99_ms_at_concurrency_32": p99,
        "e2e_1000_row_rows_per_second": big,
    }
    return {
        name: {
            "target": TARGETS[name],
            "measured": value,
            "met": value <= TARGETS[name] if name.startswith("e2e_p99") else value >= TARGETS[name],
        }
        for name, value in measured.items()
    }


def naive_server(artifact_dir: str, port: int, grpc_port: int) -> None:
    """The baseline: the smallest ``kserve.Model`` that serves the pipeline, on KServe's defaults."""
    from kserve import Model, ModelServer
    from kserve.utils.utils import get_predict_input, get_predict_response

    from model.artifact import load_artifact

    class NaiveModel(Model):
        def __init__(self, name: str):
            super().__init__(name)
            self.pipeline = load_artifact(artifact_dir).pipeline
            self.ready = True

        def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
            return get_predict_response(payload, self.pipeline.predict(get_predict_input(payload)), self.name)

    ModelServer(http_port=port, grpc_port=grpc_port).start([NaiveModel(MODEL)])


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the table and the targets, save JSON."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["naive-server"]:
        naive_server(argv[1], int(argv[2]), int(argv[3]))
        return 0
    parser = argparse.ArgumentParser(prog="python -m benchmarks serving", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--seconds", type=float, default=5.0, help="length of each phase (default: %(default)s)"
    )
    parser.add_argument("--quick", action="store_true", help="1 s phases: a smoke run")
    parser.add_argument(
        "--artifact",
        type=Path,
        help="artifact to serve (default: the newest `housing train` wrote, else a fast one trained now)",
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help="JSON results (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds = 1.0
    figures = measure(args)
    targets = check_targets(figures["phases"])
    print(f"\npeak RSS (MB): {figures['peak_rss_mb']}")
    for name, result in targets.items():
        verdict = "met " if result["met"] else "MISS"
        print(f"{verdict} {name}: {result['measured']} (target {result['target']})")
    report = {
        "benchmark": "serving",
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average_at_start": figures.pop("load_average"),
        },
        "seconds_per_phase": args.seconds,
        **figures,
        "targets": targets,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"saved {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
