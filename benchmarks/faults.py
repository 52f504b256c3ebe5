"""Fault benchmark: the transformer's latency, statuses, recovery and memory while the predictor misbehaves.

``./dev bench faults`` runs three faults on loopback, each against a fresh local stack:

- ``hung``: the predictor is frozen (SIGSTOP) under ``--clients`` concurrent clients for ``--hung-seconds``,
  then resumed (SIGCONT) while the clients go on. Every answer must come within the deadline + 0.5 s; the
  breaker's 503s must be fast (p99 <= 50 ms); serving must resume within 2 s of SIGCONT.
- ``overload``: the serving path on core 0, the detector and the load on core 1 (as the soak). The capacity is
  measured first (``--clients`` closed-loop connections, ``wrk``), then 1,024 connections, each a Poisson
  source, offer twice that rate: 5 s to calibrate their pauses, then ``--overload-seconds``. Goodput (200s
  within the deadline) must be at least 80% of the capacity, every answer within the deadline, only
  200/503/504 (counted by the transformer's own metrics), transformer memory growth < 10%.
- ``killed``: ``housing up`` itself serves ``--clients`` clients; its predictor is killed (SIGKILL). The stack
  must restart it and serve again within 10 s, with no client error other than 503/504 meanwhile.

For each it prints the slowest answer, the status codes seen, the recovery time and the transformer's resident
memory before and after, with each target met or not, and saves them to ``benchmarks/results/faults.json``.
Exit 1 when a target is missed. The load generator shares the machine's cores: on a small machine the figures
are noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.serving import on_load_core, run_wrk
from benchmarks.soak import PLACEMENT, machine, metric_sums, resident_bytes, start_stack
from housing.processes import ROOT, Stack, free_port
from monitoring.traffic import PREDICT_PATH, houses, v1_body

RESULTS = Path(__file__).resolve().parent / "results" / "faults.json"
DEADLINE = 5.0
"""The transformer's default deadline (``--predictor_request_timeout_seconds``)."""


@dataclass(frozen=True)
class Answer:
    """One request: when it was sent (seconds since the phase began), its duration, its status, its kind."""

    sent: float
    seconds: float
    status: int
    kind: str = ""


@dataclass
class FaultResult:
    """What one fault measured, and which targets it met."""

    name: str
    requests: int
    statuses: dict[str, int]
    slowest_s: float
    recovery_s: float | None
    rss_before_mib: float
    rss_after_mib: float
    figures: dict[str, float] = field(default_factory=dict)
    targets: dict[str, bool] = field(default_factory=dict)


async def closed_loop(url: str, clients: int, seconds: float, on_start: float = 0.0) -> list[Answer]:
    """``clients`` clients sending one request after another for ``seconds``; every answer recorded."""
    import aiohttp  # as in benchmarks/soak.py: httpx's async client is the bottleneck at this concurrency

    rows, answers = houses(), list[Answer]()
    began = time.perf_counter() - on_start
    timeout = aiohttp.ClientTimeout(total=DEADLINE * 4)
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=clients), timeout=timeout
    ) as session:
        end = time.perf_counter() + seconds

        async def client(index: int) -> None:
            while time.perf_counter() < end:
                answers.append(await _send(session, url, rows[index % len(rows)], began))
                index += clients

        await asyncio.gather(*(client(index) for index in range(clients)))
    return answers


async def _send(session: Any, url: str, house: dict[str, float], began: float) -> Answer:
    import aiohttp

    sent = time.perf_counter()
    try:
        async with session.post(url, json=v1_body([house])) as response:
            text = await response.text()
            kind = "breaker" if "circuit breaker" in text else "shed" if "overloaded" in text else ""
            return Answer(sent - began, time.perf_counter() - sent, response.status, kind)
    except (aiohttp.ClientError, TimeoutError) as error:
        return Answer(sent - began, time.perf_counter() - sent, 0, type(error).__name__)


def statuses(answers: list[Answer]) -> dict[str, int]:
    """How many answers had each status (``0`` with the error's name for a connection error)."""
    counted = collections.Counter(str(a.status) if a.status else a.kind for a in answers)
    return dict(sorted(counted.items()))


def recovery(answers: list[Answer], since: float) -> float | None:
    """Seconds from ``since`` until the first 200 answered after the last failure that followed it."""
    after = sorted((a for a in answers if a.sent + a.seconds >= since), key=lambda a: a.sent + a.seconds)
    failed = [a.sent + a.seconds for a in after if a.status != 200]
    last_failure = failed[-1] if failed else since
    ok = [a.sent + a.seconds for a in after if a.status == 200 and a.sent + a.seconds > last_failure]
    return round(ok[0] - since, 2) if ok else None


def mib(pid: int) -> float:
    """Resident memory of ``pid`` and its children, MiB."""
    return round(resident_bytes(pid) / 2**20, 1)


@contextmanager
def stack_of(artifact: Path, workdir: Path, cores: dict[str, str] | None = None) -> Iterator[dict[str, Any]]:
    """A fresh local stack (as ``housing up`` starts it, detector included), stopped on leaving.

    ``cores``: where each service runs (:data:`benchmarks.soak.PLACEMENT`); unpinned when ``None``.
    """
    stack = Stack(workdir / "logs")
    try:
        yield start_stack(stack, artifact, workdir, cores)
    finally:
        stack.stop()


def hung(artifact: Path, workdir: Path, clients: int, seconds: float) -> FaultResult:
    """The predictor frozen for ``seconds`` under ``clients`` clients, then resumed (see the module docs)."""
    with stack_of(artifact, workdir) as services:
        url = services["transformer"].url + PREDICT_PATH
        predictor, transformer = services["predictor"].pid, services["transformer"].pid
        asyncio.run(closed_loop(url, clients, 3.0))  # warm-up
        before = mib(transformer)

        async def run() -> list[Answer]:
            loop = asyncio.get_running_loop()
            os.kill(predictor, signal.SIGSTOP)
            loop.call_later(seconds, os.kill, predictor, signal.SIGCONT)
            return await closed_loop(url, clients, seconds + 5.0)

        try:
            answers = asyncio.run(run())
        finally:
            os.kill(predictor, signal.SIGCONT)
        after = mib(transformer)
    during = [a for a in answers if a.sent < seconds]
    breaker = [a.seconds for a in during if a.kind == "breaker"]
    p99_503 = float(np.percentile(breaker, 99)) if breaker else float("nan")
    slowest = max(a.seconds for a in during)
    back = recovery(answers, seconds)
    return FaultResult(
        "predictor hung (SIGSTOP)", len(answers), statuses(answers), round(slowest, 3), back, before, after,
        figures={"breaker_503_p99_ms": round(p99_503 * 1000, 1), "breaker_503s": len(breaker)},
        targets={
            "every answer within deadline + 0.5 s": slowest <= DEADLINE + 0.5,
            "breaker 503s p99 <= 50 ms": bool(breaker) and p99_503 <= 0.050,
            "serving again within 2 s": back is not None and back <= 2.0,
        },
    )  # fmt: skip


OVERLOAD_CONNECTIONS = 1024
"""Connections of the overload, each a Poisson source (``wrk`` with exponential pauses between requests): so
many that the offered rate hardly depends on how fast answers come, so independent that they do not arrive
in waves. (Connections started together with fixed pauses, as ``h2load --rps`` runs them, send in bursts
that the admission limit refuses while the core idles between them: measured, 50% goodput with 28% of the
core idle.)"""


def poisson_pause(url: str, rate: float, body: Path, scratch: Path) -> float:
    """The mean pause (ms) that makes :data:`OVERLOAD_CONNECTIONS` Poisson sources offer about ``rate``/s.

    A connection offers one request per (pause + answer time): 5 s at the first guess measure the mean answer
    time under that load, and the pause is set from it.
    """
    connections = OVERLOAD_CONNECTIONS
    guess = connections / rate
    trial = run_wrk(url, connections, 5.0, scratch, body=body, delay_ms=guess * 1000)
    answer_time = max(0.0, connections / (trial["requests"] / trial["seconds"]) - guess)
    return max(0.001, connections / rate - answer_time) * 1000


def overload(artifact: Path, workdir: Path, clients: int, seconds: float) -> FaultResult:
    """Load at twice the measured capacity for ``seconds`` (see the module docs)."""
    body = workdir / "house.json"
    body.write_text(json.dumps(v1_body(houses()[:1])))
    with stack_of(artifact, workdir, PLACEMENT) as services, on_load_core():
        base = services["transformer"].url
        url, transformer = base + PREDICT_PATH, services["transformer"].pid
        run_wrk(url, clients, 3.0, workdir, body=body)  # warm-up
        measured = run_wrk(url, clients, 10.0, workdir, body=body)
        capacity = (measured["requests"] - measured["errors"]) / measured["seconds"]
        # Memory is first read after a few seconds of the same overload (the pauses' calibration), as the
        # soak benchmark does: what the allocator keeps once it has served the load is not growth.
        pause = poisson_pause(url, 2 * capacity, body, workdir)
        before, codes = mib(transformer), answered(base)
        sent = run_wrk(
            url, OVERLOAD_CONNECTIONS, seconds, workdir, body=body, delay_ms=pause, progress="overload"
        )
        after, codes = mib(transformer), {code: n - codes.get(code, 0) for code, n in answered(base).items()}
    slowest = sent["max_us"] / 1e6
    offered = sent["requests"] / sent["seconds"]
    good = codes.get("200", 0) / sent["seconds"] if slowest <= DEADLINE else 0.0
    growth = after / before - 1
    seen = {code: int(n) for code, n in sorted(codes.items()) if n}
    return FaultResult(
        "overload at 2x capacity", sent["requests"], seen, round(slowest, 3), None, before, after,
        figures={"capacity_rps": round(capacity, 1), "offered_rps": round(offered, 1),
                 "offered_vs_capacity": round(offered / capacity, 2), "goodput_rps": round(good, 1),
                 "p99_ms": sent["p99_us"] / 1000, "rss_growth": round(growth, 4)},
        targets={
            "offered at least 1.9x capacity": offered >= 1.9 * capacity,
            "goodput >= 80% of capacity": good >= 0.8 * capacity,
            "every answer within the deadline": slowest <= DEADLINE + 0.5,
            "only 200/503/504": set(seen) <= {"200", "503", "504"} and sent["socket_errors"] == 0,
            "transformer memory growth < 10%": growth < 0.10,
        },
    )  # fmt: skip


def answered(transformer: str) -> dict[str, float]:
    """The transformer's answers so far by HTTP status (``housing_requests_total``, refusals included)."""
    return metric_sums(transformer, "housing_requests_total", "code", component="transformer")


def killed(artifact: Path, workdir: Path, clients: int, seconds: float) -> FaultResult:
    """``housing up`` under load; its predictor killed with SIGKILL (see the module docs)."""
    flags = ("--predictor-port", "--predictor-grpc-port", "--transformer-port", "--transformer-grpc-port")
    ports = {flag: str(free_port()) for flag in flags}
    command = [sys.executable, "-m", "housing", "up", "--no-detector", "--artifact", str(artifact),
               *(item for pair in ports.items() for item in pair)]  # fmt: skip
    env = {**os.environ, "HOUSING_VAR_DIR": str(workdir), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=env
    )
    output: list[str] = []
    serving = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line)
            if "press Ctrl-C" in line:
                serving.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        if not serving.wait(180):
            raise RuntimeError("housing up did not start:\n" + "".join(output))
        pids = dict(re.findall(r"started (\w+) \(pid (\d+)\)", "".join(output)))
        transformer, predictor = int(pids["transformer"]), int(pids["predictor"])
        url = f"http://127.0.0.1:{ports['--transformer-port']}{PREDICT_PATH}"
        asyncio.run(closed_loop(url, clients, 3.0))  # warm-up
        before = mib(transformer)

        async def run() -> list[Answer]:
            asyncio.get_running_loop().call_later(2.0, os.kill, predictor, signal.SIGKILL)
            return await closed_loop(url, clients, seconds)

        answers = asyncio.run(run())
        after = mib(transformer)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
    back = recovery(answers, 2.0)
    seen = statuses(answers)
    restarted = "restarted predictor" in "".join(output)
    return FaultResult(
        "predictor killed (SIGKILL) under housing up", len(answers), seen,
        round(max(a.seconds for a in answers), 3), back, before, after,
        targets={
            "housing up restarted it": restarted,
            "serving again within 10 s": back is not None and back <= 10.0,
            "no client error but 503/504": set(seen) <= {"200", "503", "504"},
        },
    )  # fmt: skip


FAULTS: dict[str, Callable[[Path, Path, int, float], FaultResult]] = {
    "hung": hung,
    "overload": overload,
    "killed": killed,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The benchmark's options."""
    parser = argparse.ArgumentParser(prog="./dev bench faults", description=__doc__.splitlines()[0])
    parser.add_argument("--faults", nargs="+", choices=sorted(FAULTS), default=list(FAULTS), help="which")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients (default: %(default)s)")
    parser.add_argument("--hung-seconds", type=float, default=30.0, help="predictor frozen (default: 30)")
    parser.add_argument("--overload-seconds", type=float, default=60.0, help="at 2x capacity (default: 60)")
    parser.add_argument(
        "--killed-seconds", type=float, default=20.0, help="load around the kill (default: 20)"
    )
    parser.add_argument("--artifact", type=Path, help="artifact to serve (default: the latest trained)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="JSON results (default: %(default)s)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the faults; 0 when every target is met."""
    args = parse_args(argv)
    from model.paths import latest_artifact
    from model.train import build_artifact

    seconds = {"hung": args.hung_seconds, "overload": args.overload_seconds, "killed": args.killed_seconds}
    results = []
    with tempfile.TemporaryDirectory(prefix="housing-faults-") as tmp:
        artifact = args.artifact or latest_artifact() or build_artifact(Path(tmp) / "artifact", fast=True)
        for name in args.faults:
            print(f"fault {name}: {seconds[name]:.0f} s, {args.clients} clients", file=sys.stderr, flush=True)
            workdir = Path(tmp) / name
            workdir.mkdir()
            results.append(FAULTS[name](artifact, workdir, args.clients, seconds[name]))
    info = machine()
    load = info["load_average_at_start"]
    print(f"machine: {info['cpu']}, {info['cores']} cores, load average at start {load}")
    for result in results:
        recovered = "-" if result.recovery_s is None else f"{result.recovery_s:.2f} s"
        print(f"\n{result.name}: {result.requests} requests, statuses {result.statuses}")
        memory = f"{result.rss_before_mib:.1f} -> {result.rss_after_mib:.1f} MiB"
        print(f"  slowest answer {result.slowest_s:.3f} s, recovery {recovered}, transformer RSS {memory}")
        if result.figures:
            print(f"  {result.figures}")
        for target, met in result.targets.items():
            print(f"  [{'met' if met else 'MISSED'}] {target}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    report = {"machine": info, "deadline_s": DEADLINE, "results": [asdict(result) for result in results]}
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"saved {args.output}")
    return 0 if all(all(result.targets.values()) for result in results) else 1
