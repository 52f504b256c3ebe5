"""Multi-model benchmark: the resident memory each extra loaded model costs one predictor (compiled form).

``./dev bench multimodel`` copies the artifact ``--models`` times (versions 1..N, ``model.json``
edited: the same ``model.onnx``, so every copy weighs what a new version of this model would), pins them all
in a ``--models_config``, and starts ``python -m predictor`` with the first as champion. It measures the
process's resident memory (``VmRSS``, after a few requests) with the champion alone, then after each model
it loads through ``POST /v2/repository/models/NAME/load`` (and one request to it, so that onnxruntime has
allocated what a request needs), then through cycles of unloading all but the champion and loading them
again. It prints the increase per extra model (mean and median of the steps), each load's time, the memory
after unloading (little goes back to the system: the allocator keeps freed pages) and after each cycle (it
levels off once freed memory is reused: no leak), and saves them to ``benchmarks/results/multimodel.json``.
About 15-30 s.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks.soak import machine, resident_bytes
from housing.processes import free_port, python_service
from model.artifact import METADATA_FILE, ONNX_SHA256, read_metadata

RESULTS = Path(__file__).resolve().parent / "results" / "multimodel.json"
MIB = 2**20
CYCLES = 4


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The benchmark's options."""
    parser = argparse.ArgumentParser(prog="./dev bench multimodel", description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", type=Path, help="artifact directory (default: the latest trained one)")
    parser.add_argument("--models", type=int, default=8, help="models loaded side by side (default 8)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="where the figures are saved")
    args = parser.parse_args(argv)
    if args.models < 2:
        parser.error("--models must be at least 2")
    return args


def copies(artifact: Path, directory: Path, count: int) -> dict[str, dict[str, str]]:
    """``count`` copies of the artifact as versions 1..count: their pins, by name."""
    pin = read_metadata(artifact)[ONNX_SHA256]
    pins = {}
    for version in range(1, count + 1):
        target = directory / f"housing-{version}"
        target.mkdir()
        for source in artifact.iterdir():
            (target / source.name).write_bytes(source.read_bytes())
        metadata = json.loads((target / METADATA_FILE).read_text())
        metadata["version"] = str(version)
        (target / METADATA_FILE).write_text(json.dumps(metadata))
        pins[f"housing-{version}"] = {"storage_uri": str(target), "sha256": pin}
    return pins


def settled_rss(client: httpx.Client, pid: int, name: str, body: dict[str, Any]) -> int:
    """Resident bytes once ``name`` has answered a few requests (the allocations of a request are made)."""
    for _ in range(5):
        response = client.post(f"/v2/models/{name}/infer", json=body)
        response.raise_for_status()
    time.sleep(0.3)
    return resident_bytes(pid)


def measure(artifact: Path, count: int, workdir: Path) -> dict[str, Any]:
    """Start the predictor, load and unload the models, and return the figures."""
    pins = copies(artifact, workdir, count)
    names = list(pins)
    config = workdir / "models.json"
    config.write_text(json.dumps({"champion": names[0], "models": pins}))
    port = free_port()
    args = ["-m", "predictor", "--models_config", str(config), "--http_port", str(port),
            "--grpc_port", str(free_port())]  # fmt: skip
    service = python_service("predictor", args, workdir).start()
    n_features = len(read_metadata(artifact)["features"])
    row = np.linspace(0.5, 5.0, n_features).tolist()
    body = {"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [1, n_features], "data": row}]}
    try:
        service.wait_ready(f"http://127.0.0.1:{port}/v2/health/ready", timeout=60)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            rss = [settled_rss(client, service.pid, names[0], body)]
            load_seconds = []
            for name in names[1:]:
                start = time.perf_counter()
                client.post(f"/v2/repository/models/{name}/load", json={}).raise_for_status()
                load_seconds.append(time.perf_counter() - start)
                rss.append(settled_rss(client, service.pid, name, body))
            cycles = []  # unload all but the champion, load them again: flat once the allocator reuses
            for _ in range(CYCLES):
                for name in names[1:]:
                    client.post(f"/v2/repository/models/{name}/unload").raise_for_status()
                after_unload = settled_rss(client, service.pid, names[0], body)
                for name in names[1:]:
                    client.post(f"/v2/repository/models/{name}/load", json={}).raise_for_status()
                cycles.append(settled_rss(client, service.pid, names[-1], body))
    finally:
        service.stop()
    steps = [(later - earlier) / MIB for earlier, later in itertools.pairwise(rss)]
    return {
        "models": count,
        "model_onnx_bytes": (artifact / "model.onnx").stat().st_size,
        "rss_mib_by_loaded_models": [round(value / MIB, 1) for value in rss],
        "per_extra_model_mib_mean": round((rss[-1] - rss[0]) / MIB / (count - 1), 2),
        "per_extra_model_mib_median": round(statistics.median(steps), 2),
        "load_seconds_median": round(statistics.median(load_seconds), 3),
        "load_seconds_max": round(max(load_seconds), 3),
        "rss_mib_after_unloading_all_but_one": round(after_unload / MIB, 1),
        "rss_mib_after_each_unload_reload_cycle": [round(value / MIB, 1) for value in cycles],
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print and save its figures."""
    args = parse_args(argv)
    from model.paths import latest_artifact
    from model.train import build_artifact

    with tempfile.TemporaryDirectory(prefix="housing-multimodel-") as tmp:
        artifact = args.artifact or latest_artifact()
        if artifact is None:
            print(
                "no trained artifact: training a fast one for the benchmark ...", file=sys.stderr, flush=True
            )
            artifact = build_artifact(Path(tmp) / "artifact", fast=True)
        figures = measure(Path(artifact), args.models, Path(tmp))
    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores, load average {info['load_average_at_start']}")
    onnx_mib = figures["model_onnx_bytes"] / MIB
    print(f"model.onnx: {onnx_mib:.2f} MiB; {figures['models']} models loaded side by side")
    print(f"predictor RSS by models loaded (MiB): {figures['rss_mib_by_loaded_models']}")
    print(
        f"per extra model: {figures['per_extra_model_mib_mean']} MiB (mean), "
        f"{figures['per_extra_model_mib_median']} MiB (median step)"
    )
    print(
        f"load through the repository API: {figures['load_seconds_median']} s median, "
        f"{figures['load_seconds_max']} s max"
    )
    print(
        f"after unloading all but the champion: {figures['rss_mib_after_unloading_all_but_one']} MiB "
        f"(the allocator keeps freed pages); after each of {CYCLES} cycles of unloading and loading them all "
        f"again: {figures['rss_mib_after_each_unload_reload_cycle']} MiB (flat: no leak)"
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"machine": info, **figures}, indent=2) + "\n")
    print(f"saved {args.output}")
    return 0
