"""Detector benchmark: how well drift is caught, how often it is cried wrongly, and how fast events go in.

``./dev bench detector``:

1. **Quality.** Windows bootstrapped from held-out rows (the data set's rows that are not in the artifact's
   reference sample) give the false-alarm rate; the same windows with ``lstat`` or ``rm`` shifted by k
   reference standard deviations give the detection rate. The statistics are
   :class:`detector.stats.DriftTester`, the ones the service runs. Targets: false alarms <= 5 %, detection of
   a 1 SD shift at window 200 >= 95 %. The detection-rate curve is printed against shift and window size.
2. **Throughput.** A real ``python -m detector`` process receives request/response CloudEvents (one row
   each, 1 % of them malformed on purpose) from a minimal keep-alive client, in two modes side by side:
   single binary-mode events over 32 connections (as KServe's agent posts them), then the same events in
   CloudEvents' batched content mode, ``--batch-events`` per POST over 4 connections (as the transformer's
   request logger sends them). Events/s is printed next to a baseline measured in the same run: the same
   client against the detector's trivial ``/healthz`` route (the ceiling of HTTP on this machine), with the
   detector's CPU time per event (process and test worker), which does not depend on how busy the machine
   is; events/s per core is 1 / that, shown for the HTTP process alone (ingest) and with the worker's drift
   tests of the full windows. Zero loss means sent = accepted + invalid on the detector's counters.
   Targets: single >= 2,000 events/s; batched ingest >= 20,000 events/s per core.

3. **Replicas and sampling.** Three replicas (ids hashed by :func:`serving.events.replica_for`, the mean
   score per endpoint as the alert rules take it) against one detector on the same traffic; and windows of a
   random half of the traffic (what an overloaded logger leaves): false alarms and power.

4. **Statistics backends side by side** (``--backends``, default both): alibi-detect (Business Source License
   1.1) and scipy (:mod:`detector.univariate`, the same decisions). Window tests: the same 200-row windows
   through :class:`detector.stats.DriftTester` with each backend, alternating blocks so that both see the same
   machine, as CPU ms per window (and the KS and chi-squared part of it); start-up: a fresh process importing
   the backend and building its tests (alibi-detect imports transformers). Ingest (part 2) runs once per
   backend, the detector started with ``--stats_backend``.

Figures are printed and saved to ``benchmarks/results/detector.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from housing.processes import free_port, python_service, wait_until

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "detector.json"
SHIFTS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5)
WINDOWS = (50, 100, 200, 400)
TARGET_FALSE_ALARMS = 0.05
TARGET_DETECTION = 0.95
TARGET_EVENTS_PER_SECOND = 2000.0
TARGET_BATCHED_EVENTS_PER_CORE = 20000.0


def held_out(metadata: dict[str, Any]) -> np.ndarray:
    """Data set rows, in model feature order, that are not in the reference sample."""
    from model.dataset import load_dataset

    names = [feature["name"] for feature in metadata["features"]]
    rows = load_dataset()[names].to_numpy()
    reference = {tuple(np.round(row, 6)) for row in metadata["reference"]["features"]}
    return np.array([row for row in rows if tuple(np.round(row, 6)) not in reference])


def detection_rate(
    tester: Any, rows: np.ndarray, feature: str | None, shift: float, window: int, repeats: int, seed: int
) -> float:
    """Share of bootstrapped windows declared drifted, with ``feature`` moved by ``shift`` reference SDs."""
    generator = np.random.default_rng(seed)
    column = tester.reference.features.index(feature) if feature else None
    step = shift * tester.reference.rows[:, column].std() if column is not None else 0.0
    hits = 0
    for _ in range(repeats):
        sample = rows[generator.integers(0, len(rows), window)].copy()
        if column is not None:
            sample[:, column] += step
        hits += tester.test(sample).drifted
    return hits / repeats


def quality(metadata: dict[str, Any], repeats: int, curve_repeats: int) -> dict[str, Any]:
    """False alarms, headline detection rates and the detection curve."""
    from detector.stats import DriftTester, Reference

    tester = DriftTester(Reference.from_metadata(metadata))
    rows = held_out(metadata)
    print(
        f"reference: {len(tester.reference.rows)} rows; held-out rows: {len(rows)}; "
        f"{repeats} windows per figure"
    )
    figures: dict[str, Any] = {
        "held_out_rows": len(rows),
        "reference_rows": len(tester.reference.rows),
        "false_alarm_rate_window_200": detection_rate(tester, rows, None, 0.0, 200, repeats, seed=1),
        "detection_rate_lstat_1sd_window_200": detection_rate(
            tester, rows, "lstat", 1.0, 200, repeats, seed=2
        ),
        "detection_rate_rm_1sd_window_200": detection_rate(tester, rows, "rm", 1.0, 200, repeats, seed=3),
    }
    for name, value in figures.items():
        if "rate" in name:
            print(f"  {name:<40} {value:6.1%}")
    curve: dict[str, dict[str, dict[str, float]]] = {}
    for feature in ("lstat", "rm"):
        curve[feature] = {}
        print(
            f"\ndetection rate, {feature} shifted by k SD "
            f"({curve_repeats} windows per cell; k=0 is the false-alarm rate)"
        )
        print("window " + "".join(f"{f'k={shift:g}':>8}" for shift in SHIFTS))
        for window in WINDOWS:
            rates = {
                f"{shift:g}": detection_rate(tester, rows, feature, shift, window, curve_repeats, seed=window)
                for shift in SHIFTS
            }
            curve[feature][str(window)] = rates
            print(f"{window:>6} " + "".join(f"{rate:>8.0%}" for rate in rates.values()))
    figures["curve"] = curve
    figures["passed"] = bool(
        figures["false_alarm_rate_window_200"] <= TARGET_FALSE_ALARMS
        and figures["detection_rate_lstat_1sd_window_200"] >= TARGET_DETECTION
        and figures["detection_rate_rm_1sd_window_200"] >= TARGET_DETECTION
    )
    return figures


def replicas_and_sampling(metadata: dict[str, Any], periods: int, replicas: int = 3) -> dict[str, Any]:
    """Three replicas against one detector, and sampled windows, on the same bootstrapped traffic.

    Each period is ``replicas`` windows of 200 inferences: one detector tests them in turn (its decision:
    the last window drifted), ``replicas`` detectors each test the window of the ids hashed to them
    (:func:`serving.events.replica_for`), and the alert's decision is their mean score above the threshold.
    Half the periods are in distribution, half have ``lstat`` shifted by 1 SD. Sampling: windows made of a
    random half of the inferences (what a logger dropping half of them leaves) keep the false-alarm rate and
    the power, since a uniform sample of the traffic is the traffic's distribution.
    """
    from detector.stats import DriftTester, Reference
    from serving.events import replica_for

    tester = DriftTester(Reference.from_metadata(metadata))
    rows = held_out(metadata)
    column = tester.reference.features.index("lstat")
    step = tester.reference.rows[:, column].std()
    generator = np.random.default_rng(5)
    agree, sampled = 0, {"false_alarms": 0, "detections": 0}
    for period in range(periods):
        shifted = period % 2 == 1
        traffic = rows[generator.integers(0, len(rows), 200 * replicas)].copy()
        if shifted:
            traffic[:, column] += step
        single = tester.test(traffic[-200:]).drifted
        owners = np.array([replica_for(f"p{period}-{index}", replicas) for index in range(len(traffic))])
        scores = [tester.test(traffic[owners == replica][:200]).score for replica in range(replicas)]
        agree += single == (float(np.mean(scores)) > tester.threshold)
        half = traffic[generator.random(len(traffic)) < 0.5][:200]  # a 50 % sample, a full window
        sampled["detections" if shifted else "false_alarms"] += tester.test(half).drifted
    figures = {
        "periods": periods,
        "replicas": replicas,
        "aggregated_equals_single_share": agree / periods,
        "sampled_false_alarm_rate": sampled["false_alarms"] / (periods - periods // 2),
        "sampled_detection_rate_lstat_1sd": sampled["detections"] / (periods // 2),
    }
    print(
        f"\n{replicas} replicas (mean score per endpoint) against one detector, {periods} periods "
        f"(half shifted): "
        f"same decision in {figures['aggregated_equals_single_share']:.0%}; windows of a 50 % sample: "
        f"false alarms {figures['sampled_false_alarm_rate']:.0%}, detection of lstat +1 SD "
        f"{figures['sampled_detection_rate_lstat_1sd']:.0%}"
    )
    figures["passed"] = bool(
        figures["aggregated_equals_single_share"] >= 0.95
        and figures["sampled_false_alarm_rate"] <= TARGET_FALSE_ALARMS
        and figures["sampled_detection_rate_lstat_1sd"] >= TARGET_DETECTION
    )
    return figures


def build_events(
    metadata: dict[str, Any], pairs: int, invalid_every: int
) -> list[tuple[dict[str, str], bytes]]:
    """Binary-mode CloudEvents, a request and a response per row; every ``invalid_every``-th is malformed."""
    from serving.events import REQUEST_TYPE, RESPONSE_TYPE

    names = [feature["name"] for feature in metadata["features"]]
    rows = np.asarray(metadata["reference"]["features"])
    predictions = metadata["reference"]["predictions"]
    order = np.random.default_rng(0).integers(0, len(rows), pairs)  # in-distribution traffic
    events = []
    for index in range(pairs):
        row = int(order[index])
        for kind, body in (
            (REQUEST_TYPE, {"instances": [dict(zip(names, rows[row].tolist(), strict=True))]}),
            (RESPONSE_TYPE, {"predictions": [predictions[row]]}),
        ):
            headers = {
                "ce-specversion": "1.0",
                "ce-id": f"bench-{index}",
                "ce-type": kind,
                "ce-source": "benchmark",
                "ce-time": "2026-01-01T00:00:00Z",
                "ce-inferenceservicename": "housing",
                "ce-namespace": "bench",
                "ce-component": "predictor",
                "ce-endpoint": "default",
                "ce-metadata": "{}",
                "ce-recordedtime": "2026-01-01T00:00:00Z",
                "content-type": "application/json",
            }
            events.append((headers, json.dumps(body).encode()))
    for position in range(invalid_every - 1, len(events), invalid_every):
        events[position] = (events[position][0], b"{not json")
    return events


def http_request(method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b"") -> bytes:
    """One HTTP/1.1 keep-alive request, as bytes (built before the clock starts)."""
    lines = [f"{method} {path} HTTP/1.1", "host: 127.0.0.1", f"content-length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def send_all(port: int, requests: Sequence[bytes], concurrency: int) -> tuple[float, dict[int, int]]:
    """Send ``requests`` over ``concurrency`` keep-alive connections; seconds taken and count of each status.

    One request at a time on each connection, as KServe's agent sends them. A minimal HTTP/1.1 client on
    asyncio streams: a load generator should cost the machine as little as possible (a general client such as
    aiohttp spends more CPU per request than the detector does).
    """
    codes: dict[int, int] = {}
    position = 0

    async def connection() -> None:
        nonlocal position
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while position < len(requests):
            index = position
            position += 1
            writer.write(requests[index])
            head = await reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"(?i)content-length: *(\d+)", head)
            if length and int(length.group(1)):
                await reader.readexactly(int(length.group(1)))
            status = int(head[9:12])
            codes[status] = codes.get(status, 0) + 1
        writer.close()
        await writer.wait_closed()

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(concurrency)))
    return time.perf_counter() - started, codes


def counters(url: str) -> dict[str, float]:
    """``housing_detector_events_total`` samples, as ``type/outcome`` -> value."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    found = {}
    for family in text_string_to_metric_families(httpx.get(url + "/metrics", timeout=10).text):
        for sample in family.samples:
            if sample.name == "housing_detector_events_total":
                found[f"{sample.labels['type']}/{sample.labels['outcome']}"] = sample.value
    return found


def cpu_seconds(pid: int, children: bool = True) -> float:
    """User + system CPU seconds of a process and (``children``) its children: the detector's test worker."""
    import psutil

    processes = [psutil.Process(pid), *(psutil.Process(pid).children(recursive=True) if children else [])]
    return sum(sum(process.cpu_times()[:2]) for process in processes)


def wait_until_tested(url: str, timeout: float = 60.0) -> None:
    """Wait until the detector's worker has tested every full window."""
    import httpx

    wait_until(
        lambda: not httpx.get(url + "/status", timeout=10).json()["windows_queued"],
        timeout=timeout,
        what="every full window tested",
    )


def batch_requests(events: list[tuple[dict[str, str], bytes]], size: int) -> list[bytes]:
    """The same events as structured-mode elements, ``size`` per batched-mode POST (built beforehand)."""
    from serving.events import BATCH_CONTENT_TYPE

    elements = []
    for headers, body in events:
        element: dict[str, Any] = {
            name.removeprefix("ce-"): value for name, value in headers.items() if name.startswith("ce-")
        }
        element["id"] = f"batched-{element['id']}"  # apart from the single mode's (their partners pending)
        try:
            element["data"] = json.loads(body)
        except json.JSONDecodeError:
            element["data"] = body.decode()  # the malformed ones stay malformed
        elements.append(element)
    return [
        http_request(
            "POST",
            "/",
            {"content-type": BATCH_CONTENT_TYPE},
            json.dumps(elements[start : start + size]).encode(),
        )
        for start in range(0, len(elements), size)
    ]


def ingest(
    port: int, pid: int, url: str, requests: list[bytes], events: int, concurrency: int
) -> dict[str, Any]:
    """Send ``requests`` (carrying ``events`` events); events/s, CPU per event, and what the counters say."""
    before = counters(url)
    cpu_before, ingest_before = cpu_seconds(pid), cpu_seconds(pid, children=False)
    seconds, codes = asyncio.run(send_all(port, requests, concurrency))
    wait_until_tested(url)
    cpu, ingest_cpu = cpu_seconds(pid) - cpu_before, cpu_seconds(pid, children=False) - ingest_before
    seen = {key: value - before.get(key, 0.0) for key, value in counters(url).items()}
    received = seen.get("request/accepted", 0) + seen.get("response/accepted", 0)
    invalid = (
        seen.get("request/invalid", 0) + seen.get("response/invalid", 0) + seen.get("unknown/invalid", 0)
    )
    return {
        "events_sent": events,
        "posts": len(requests),
        "concurrency": concurrency,
        "seconds": round(seconds, 3),
        "events_per_second": round(events / seconds, 1),
        "http_codes": {str(code): count for code, count in sorted(codes.items())},
        "accepted": received,
        "invalid": invalid,
        "unmatched": seen.get("request/unmatched", 0) + seen.get("response/unmatched", 0),
        "lost": events - received - invalid,
        "detector_cpu_microseconds_per_event": round(cpu / events * 1e6, 1),
        "events_per_second_per_core": round(events / cpu, 1) if cpu else 0.0,
        # The HTTP process alone (decode, join, windows), without the worker's drift tests of full windows.
        "ingest_cpu_microseconds_per_event": round(ingest_cpu / events * 1e6, 1),
        "ingest_events_per_second_per_core": round(events / ingest_cpu, 1) if ingest_cpu else 0.0,
    }


def throughput(
    artifact: Path, pairs: int, concurrency: int, baseline_requests: int, batch_events: int, backend: str
) -> dict[str, Any]:
    """Events/s into a real detector process, single and batched, next to the /healthz baseline."""
    from model.artifact import read_metadata

    metadata = read_metadata(artifact)
    events = build_events(metadata, pairs, invalid_every=100)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as state:
        detector = python_service(
            "detector",
            ["-m", "detector", "--storage_uri", str(artifact), "--http_port", str(port),
             "--host", "127.0.0.1", "--state_dir", state, "--log_level", "WARNING",
             "--stats_backend", backend],
            Path(state),
            port=port,
        )  # fmt: skip
        try:
            detector.start().wait_ready(f"{url}/readyz", timeout=120)
            health = [http_request("GET", "/healthz")] * baseline_requests
            asyncio.run(send_all(port, health[:500], concurrency))  # warm-up
            baseline_seconds, _ = asyncio.run(send_all(port, health, concurrency))
            posts = [http_request("POST", "/", headers, body) for headers, body in events]
            single = ingest(port, detector.pid, url, posts, len(events), concurrency)
            batches = batch_requests(events, batch_events)
            batched = ingest(port, detector.pid, url, batches, len(events), min(concurrency, 4))
        finally:
            detector.stop(timeout=30)
    figures: dict[str, Any] = {
        "baseline_healthz_requests_per_second": round(baseline_requests / baseline_seconds, 1),
        "single": single,
        "batched": {**batched, "events_per_post": batch_events},
        "load_average_1m": round(os.getloadavg()[0], 2),
        # Kept at the top level for the figures' history: the single-event mode, as before.
        "events_per_second": single["events_per_second"],
        "lost": single["lost"] + batched["lost"],
    }
    figures["passed"] = bool(
        figures["lost"] == 0
        and single["events_per_second"] >= TARGET_EVENTS_PER_SECOND
        and batched["ingest_events_per_second_per_core"] >= TARGET_BATCHED_EVENTS_PER_CORE
    )
    print(f"\n[{backend}] baseline GET /healthz {figures['baseline_healthz_requests_per_second']:,.0f} req/s")
    for name, mode in (
        ("single (binary, 1 event/POST)", single),
        (f"batched ({batch_events} events/POST)", batched),
    ):
        print(
            f"ingest {name}: {mode['events_per_second']:,.0f} events/s ({mode['events_sent']} events, "
            f"{mode['posts']} POSTs, concurrency {mode['concurrency']}); detector CPU (process + worker) "
            f"{mode['detector_cpu_microseconds_per_event']:.1f} µs/event = "
            f"{mode['events_per_second_per_core']:,.0f} events/s per core; ingest alone (HTTP process, "
            f"no drift tests) {mode['ingest_cpu_microseconds_per_event']:.1f} µs/event = "
            f"{mode['ingest_events_per_second_per_core']:,.0f} events/s per core"
        )
        print(
            f"  sent {mode['events_sent']} = accepted {mode['accepted']:.0f} + invalid "
            f"{mode['invalid']:.0f}; lost {mode['lost']:.0f}; unmatched {mode['unmatched']:.0f}; "
            f"codes {mode['http_codes']}"
        )
    print(f"machine load average {figures['load_average_1m']} on {os.cpu_count()} CPUs")
    return figures


STARTUP = """
import resource, sys, time
started = time.perf_counter()
from model.artifact import read_metadata
from detector.stats import DriftTester, Reference
DriftTester(Reference.from_metadata(read_metadata(sys.argv[1])), backend=sys.argv[2])
usage = resource.getrusage(resource.RUSAGE_SELF)
print(time.perf_counter() - started, usage.ru_utime + usage.ru_stime)
"""
"""A fresh process that builds one backend's tests: seconds of wall and CPU time (imports included)."""


def window_tests(
    artifact: Path, metadata: dict[str, Any], backends: Sequence[str], windows: int, rounds: int = 4
) -> dict[str, Any]:
    """CPU time per 200-row window test with each backend (the same windows), and each backend's start-up.

    The backends run in alternating blocks (A B, then B A, ...), so a busy minute of the shared machine falls
    on both; CPU time (``time.process_time``) is less sensitive to that load than wall time.
    """
    import subprocess

    from detector.stats import DriftTester, Reference

    reference = Reference.from_metadata(metadata)
    rows = held_out(metadata)
    generator = np.random.default_rng(11)
    samples = [rows[generator.integers(0, len(rows), 200)] for _ in range(windows)]
    predictions = generator.normal(22.0, 8.0, 200)
    testers = {backend: DriftTester(reference, backend=backend) for backend in backends}
    full = {backend: 0.0 for backend in backends}
    univariate = {backend: 0.0 for backend in backends}
    blocks = np.array_split(np.arange(windows), rounds)
    for number, block in enumerate(blocks):
        for backend in backends if number % 2 == 0 else list(reversed(backends)):
            tester = testers[backend]
            assert tester.ks is not None and tester.chi2 is not None
            started = time.process_time()
            for index in block:
                tester.test(samples[index], predictions)
            full[backend] += time.process_time() - started
            started = time.process_time()
            for index in block:
                tester.ks.test(samples[index][:, tester.continuous])
                tester.chi2.test(samples[index][:, tester.binary].astype(int))
            univariate[backend] += time.process_time() - started
    startup: dict[str, list[float]] = {backend: [] for backend in backends}
    for number in range(2):  # twice each, alternating: the first run of each may read from a cold disk
        for backend in backends if number % 2 == 0 else list(reversed(backends)):
            done = subprocess.run(
                [sys.executable, "-c", STARTUP, str(artifact), backend],
                capture_output=True, text=True, check=True, timeout=600, cwd=ROOT,
            )  # fmt: skip
            startup[backend].append(float(done.stdout.split()[1]))
    figures: dict[str, Any] = {"windows": windows, "window_rows": 200}
    print(
        f"\nwindow tests, {windows} windows of 200 rows (CPU time; the KS and chi-squared part in brackets)"
    )
    for backend in backends:
        figures[backend] = {
            "cpu_ms_per_window": round(full[backend] / windows * 1e3, 2),
            "windows_per_second_per_core": round(windows / full[backend], 1),
            "univariate_cpu_ms_per_window": round(univariate[backend] / windows * 1e3, 2),
            "startup_cpu_seconds": round(min(startup[backend]), 2),
        }
        item = figures[backend]
        print(
            f"  {backend:<13} {item['cpu_ms_per_window']:6.2f} ms/window = "
            f"{item['windows_per_second_per_core']:6.1f} windows/s per core "
            f"[{item['univariate_cpu_ms_per_window']:.2f} ms]; start-up (import + build) "
            f"{item['startup_cpu_seconds']:.2f} s CPU"
        )
    return figures


def side_by_side(throughputs: dict[str, dict[str, Any]]) -> None:
    """The ingest figures of each backend in one table."""
    print("\ningest by statistics backend (CPU per event: the HTTP process; with the worker's window tests)")
    print(f"  {'backend':<13} {'mode':<8} {'events/s':>9} {'ingest µs':>10} {'with tests µs':>14}")
    for backend, figures in throughputs.items():
        for mode in ("single", "batched"):
            item = figures[mode]
            print(
                f"  {backend:<13} {mode:<8} {item['events_per_second']:>9,.0f} "
                f"{item['ingest_cpu_microseconds_per_event']:>10.1f} "
                f"{item['detector_cpu_microseconds_per_event']:>14.1f}"
            )


def main(argv: Sequence[str] | None = None) -> int:
    """Run both parts; exit 1 when a target is missed."""
    parser = argparse.ArgumentParser(prog="./dev bench detector", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--storage_uri", type=Path, help="artifact directory (default: a fast one trained now)"
    )
    parser.add_argument(
        "--repeats", type=int, default=200, help="windows per headline figure (default: %(default)s)"
    )
    parser.add_argument(
        "--curve-repeats", type=int, default=50, help="windows per curve cell (default: %(default)s)"
    )
    parser.add_argument(
        "--pairs", type=int, default=10000, help="request/response pairs sent (default: %(default)s)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=32, help="concurrent clients (default: %(default)s)"
    )
    parser.add_argument(
        "--periods", type=int, default=100, help="periods of the replicas comparison (default: %(default)s)"
    )
    parser.add_argument(
        "--batch-events", type=int, default=100, help="events per batched POST (default: %(default)s)"
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help="JSON results (default: %(default)s)")
    parser.add_argument("--skip-throughput", action="store_true", help="only the quality part")
    parser.add_argument(
        "--backends",
        default="alibi-detect,scipy",
        help="statistics backends compared, comma-separated (default: %(default)s)",
    )
    parser.add_argument(
        "--backend-windows", type=int, default=200, help="windows per backend (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    backends = [name.strip() for name in args.backends.split(",") if name.strip()]

    from model.artifact import read_metadata
    from model.train import build_artifact

    with tempfile.TemporaryDirectory() as scratch:
        artifact = args.storage_uri or build_artifact(Path(scratch) / "artifact", fast=True)
        metadata = read_metadata(artifact)
        report: dict[str, Any] = {
            "machine": {
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "platform": platform.platform(),
            },
            "model_version": metadata["version"],
            "targets": {
                "false_alarm_rate": TARGET_FALSE_ALARMS,
                "detection_rate": TARGET_DETECTION,
                "events_per_second": TARGET_EVENTS_PER_SECOND,
                "batched_events_per_second_per_core": TARGET_BATCHED_EVENTS_PER_CORE,
            },
            "quality": quality(metadata, args.repeats, args.curve_repeats),
            "replicas_and_sampling": replicas_and_sampling(metadata, args.periods),
            "window_tests": window_tests(Path(artifact), metadata, backends, args.backend_windows),
        }
        if not args.skip_throughput:
            report["throughput"] = {
                backend: throughput(
                    Path(artifact),
                    args.pairs,
                    args.concurrency,
                    baseline_requests=5000,
                    batch_events=args.batch_events,
                    backend=backend,
                )
                for backend in backends
            }
            side_by_side(report["throughput"])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nsaved {args.output}")
    passed = (
        report["quality"]["passed"]
        and report["replicas_and_sampling"]["passed"]
        and all(figures["passed"] for figures in report.get("throughput", {}).values())
    )
    print("all targets met" if passed else "TARGET MISSED")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
