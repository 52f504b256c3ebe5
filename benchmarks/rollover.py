"""Rollover benchmark: every change a user makes to a running stack, under a steady load, nothing lost.

``./dev bench rollover`` starts the ``housing up`` stack on free ports (the predictor, multi-model with the
V2 repository API, and the transformer on core 0; the detector, archiving to a local directory, beside the
load generator on core 1), measures the transformer's capacity (``wrk``, closed loop, 5 s), then keeps about
60% of it flowing (``--clients`` Poisson sources, every request with its own ``x-request-id``) while it
performs, one after another with ``--settle`` seconds between:

1. **transformer**: a rolling restart (a replacement started on the same ports, ``--reuse_port``; once it
   listens, the old one gets SIGTERM and drains: :meth:`housing.processes.Stack.replace`);
2. **predictor**: the same for the predictor, which the transformer calls over gRPC;
3. **canary, promote**: a second predictor with version 2 started, the transformer rolled to send it 10%,
   then rolled again to send it everything, and the first predictor stopped (what the chart does on AKS);
4. **rollback**: the first predictor started again, the transformer rolled back to it, the canary stopped;
5. **detector**: SIGTERM, then started again on the same state directory (the transformer's request logger
   keeps the inferences meanwhile);
6. **champion**: in the multi-model predictor, ``POST /v2/repository/models/housing-2/load`` with
   ``{"parameters": {"champion": true}}``, then ``.../housing-1/unload``;

and the same as 1 and 5 with SIGKILL instead of SIGTERM (``1-kill``, ``5-kill``): what a crash costs.
A labeller (core 1) sends a prediction and then its true value to the detector's ``/feedback`` every
``--label-interval`` seconds throughout, retrying while the detector is away, as a client would.

For each step it prints the requests answered 200 and otherwise (by status), the client's socket errors,
p99 during the step against the p99 of a steady run just before it, the versions that answered after it,
the inferences offered (answered 200) and joined (archived by the detector: a row per joined request and
response, found by request id in the archive and its write-ahead log once the stack has stopped), and the
labels posted and archived. Targets per SIGTERM step: 0 failed requests, 0 inferences or labels lost,
p99 <= 2x the steady p99. Results go to ``benchmarks/results/rollover.json``; exit 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.multimodel import copies
from benchmarks.serving import LOAD_CORE, SERVER_CORE, on_load_core
from benchmarks.soak import machine
from housing.processes import HOST, ROOT, Service, Stack, free_port
from monitoring.traffic import PREDICT_PATH, houses, v1_body

RESULTS = Path(__file__).resolve().parent / "results" / "rollover.json"
MAX_P99_RATIO = 2.0
LOAD_SHARE = 0.6
"""The share of the measured capacity the steady load offers."""
WRK_SCRIPT = """
local prefix = os.getenv("BENCH_PREFIX")
local file = io.open(os.getenv("BENCH_BODY"), "rb")
local body = file:read("*a")
file:close()
counter, statuses, versions = 0, {}, {}  -- globals: done() reads them from each thread
local pause = tonumber(os.getenv("BENCH_DELAY_MS") or "")
if pause ~= nil and pause > 0 then
  math.randomseed(os.time())
  function delay() return -math.log(1 - math.random()) * pause end
end
function request()
  counter = counter + 1
  local headers = {["Content-Type"] = "application/json", ["x-request-id"] = prefix .. "-" .. counter}
  return wrk.format("POST", nil, headers, body)
end
function response(status, headers, body)
  statuses[tostring(status)] = (statuses[tostring(status)] or 0) + 1
  local version = headers["x-model-version"] or "none"
  versions[version] = (versions[version] or 0) + 1
end
local threads = {}
function setup(thread) table.insert(threads, thread) end
local function merge(into, from)
  for key, value in pairs(from) do into[key] = (into[key] or 0) + value end
end
local function object(counts)
  local parts = {}
  for key, value in pairs(counts) do parts[#parts + 1] = string.format('"%s": %d', key, value) end
  return "{" .. table.concat(parts, ", ") .. "}"
end
function done(summary, latency, requests)
  local all_statuses, all_versions, sent = {}, {}, 0
  for _, thread in ipairs(threads) do
    merge(all_statuses, thread:get("statuses"))
    merge(all_versions, thread:get("versions"))
    sent = sent + thread:get("counter")
  end
  local e = summary.errors
  io.write(string.format(
    '{"sent": %d, "answered": %d, "statuses": %s, "versions": %s, "connect": %d, "read": %d, "write": %d, '
    .. '"timeout": %d, "seconds": %f, "p50_us": %d, "p99_us": %d, "max_us": %d}\\n',
    sent, summary.requests, object(all_statuses), object(all_versions), e.connect, e.read, e.write,
    e.timeout, summary.duration / 1e6, latency:percentile(50), latency:percentile(99), latency.max))
end
"""
"""wrk's script: one body, an ``x-request-id`` of ``BENCH_PREFIX-N`` per request, the statuses and the
``x-model-version`` of the answers counted; prints the run's figures as one JSON line (also on SIGINT)."""


@dataclass
class Load:
    """A wrk run in the background, stopped with SIGINT (it then prints its figures)."""

    url: str
    prefix: str
    clients: int
    delay_ms: float
    scratch: Path
    process: subprocess.Popen[str] | None = None

    def start(self) -> Load:
        """Start it on the load core."""
        script = self.scratch / "rollover.lua"
        script.write_text(WRK_SCRIPT)
        body = self.scratch / "body.json"
        body.write_text(json.dumps(v1_body(houses()[:1])))
        env = {**os.environ, "BENCH_PREFIX": self.prefix, "BENCH_BODY": str(body),
               "BENCH_DELAY_MS": f"{self.delay_ms:g}"}  # fmt: skip
        command = ["taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{self.clients}", "-d3600s", "--timeout",
                   "10s", "-s", str(script), self.url + PREDICT_PATH]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                        env=env)  # fmt: skip
        return self

    def stop(self) -> dict[str, Any]:
        """Stop it; its figures."""
        assert self.process is not None
        self.process.send_signal(signal.SIGINT)
        out, err = self.process.communicate(timeout=60)
        lines = [line for line in out.splitlines() if line.startswith("{")]
        if not lines:
            raise RuntimeError(f"wrk printed no figures: {err.strip()[-500:]}")
        return dict(json.loads(lines[-1]))


@dataclass
class Labeller:
    """A client that predicts, then posts the true value to ``/feedback``, retrying while it is refused."""

    transformer: str
    detector: str
    interval: float
    step: str = "start"
    predicted: Counter[str] = field(default_factory=Counter)
    posted: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _due: deque[tuple[float, float, str, str]] = field(default_factory=deque)
    """Labels to post: (when, until when, step, request id)."""

    def start(self) -> Labeller:
        """Start predicting and labelling in two threads (on the load core: this process is pinned there)."""
        self._threads = [
            threading.Thread(target=self._predict, name="labeller-predict", daemon=True),
            threading.Thread(target=self._label, name="labeller-label", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        """Stop predicting, post the labels still due, and stop."""
        self._stop.set()
        for thread in self._threads:
            thread.join(120)

    def _predict(self) -> None:
        import httpx

        house = houses()[1]
        with httpx.Client(timeout=10) as client:
            number = 0
            while not self._stop.wait(self.interval):
                number += 1
                step, request_id = self.step, f"label-{self.step}-{number}"
                headers = {"x-request-id": request_id}
                url, body = self.transformer + PREDICT_PATH, v1_body([house])
                predict = functools.partial(client.post, url, json=body, headers=headers)
                if _retrying(predict):
                    self.predicted[step] += 1
                    due = time.monotonic() + LABEL_DELAY
                    self._due.append((due, due + RETRY_SECONDS, step, request_id))

    def _label(self) -> None:
        import httpx

        with httpx.Client(timeout=10) as client:
            while not (self._stop.is_set() and not self._due):
                if not self._due or self._due[0][0] > time.monotonic():
                    time.sleep(0.05)
                    continue
                _, until, step, request_id = self._due.popleft()
                label = {"id": request_id, "value": 24.0}
                posted = _attempt(functools.partial(client.post, self.detector + "/feedback", json=label))
                if posted is None and time.monotonic() < until:
                    # Again later, behind the others: a label whose inference was lost (404 until `until`)
                    # must not hold back the labels due after it.
                    self._due.append((time.monotonic() + 0.2, until, step, request_id))
                    continue
                (self.posted if posted else self.failed)[step] += 1


LABEL_DELAY = 1.0
"""Seconds between a prediction and its label (ground truth comes later; the inference must have reached the
detector: until it has, ``/feedback`` answers 404 and the label is sent again)."""


RETRY_SECONDS = 60.0
"""How long a prediction or a label is sent again while the server is away or does not know the id yet."""


def _attempt(send: Callable[[], Any]) -> bool | None:
    """``send()`` once: ``True`` answered 200; ``None`` to try again (refused, 503, 404); ``False`` refused.

    A 404 from ``/feedback``: the inference has not reached the detector yet (the logger keeps it meanwhile).
    """
    import httpx

    try:
        response = send()
    except httpx.TransportError:
        return None
    if response.status_code == 200:
        return True
    return None if response.status_code in (404, 503) else False


def _retrying(send: Callable[[], Any], seconds: float = RETRY_SECONDS) -> bool:
    """``send()`` until it answers 200, while :func:`_attempt` says to try again, for ``seconds`` at most."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        outcome = _attempt(send)
        if outcome is not None:
            return outcome
        time.sleep(0.2)
    return False


@dataclass
class Ports:
    """One server's HTTP and gRPC ports."""

    http: int
    grpc: int


@dataclass
class RolloverStack:
    """The stack the steps change: its services, their ports, the two model versions.

    Args:
        stack: Where the processes run.
        workdir: Logs, the detector's state and the archive.
        artifact: The artifact whose copies are versions 1 and 2.
        cores: Pin the servers (core 0) and the detector (core 1), as the other benchmarks do.
    """

    stack: Stack
    workdir: Path
    artifact: Path
    cores: bool = True
    services: dict[str, Service] = field(default_factory=dict)
    ports: dict[str, Ports] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)

    def start(self) -> RolloverStack:
        """Start the detector, the multi-model predictor (version 1 champion) and the transformer."""
        (self.workdir / "models").mkdir(parents=True, exist_ok=True)
        pins = copies(self.artifact, self.workdir / "models", 2)
        self.versions = {name: pin["storage_uri"] for name, pin in pins.items()}
        config = self.workdir / "models.json"
        config.write_text(json.dumps({"champion": "housing-1", "models": pins}))
        for name in ("predictor", "canary", "transformer"):
            self.ports[name] = Ports(free_port(), free_port())
        self.ports["detector"] = Ports(free_port(), 0)
        for service in (self.detector(), self.predictor(), self.transformer("predictor")):
            self.stack.start(service)
        for service in self.stack.services:
            service.wait_ready(timeout=180)
            self.services[service.name] = service
        return self

    def url(self, name: str) -> str:
        """The base URL of ``name`` (``transformer``, ``detector``, ...)."""
        return f"http://{HOST}:{self.ports[name].http}"

    def _service(self, name: str, core: str, args: list[str], ready: str = "/v2/health/ready") -> Service:
        pin = ["taskset", "-c", core] if self.cores else []
        return Service(name, [*pin, sys.executable, *args], self.ports[name].http, ready_path=ready,
                       log_path=self.workdir / f"{name}.log", cwd=ROOT)  # fmt: skip

    def detector(self) -> Service:
        """The detector, archiving to ``workdir/archive``, its state in ``workdir/detector``."""
        return self._service("detector", LOAD_CORE, [
            "-m", "detector", "--storage_uri", self.versions["housing-1"], "--http_port",
            str(self.ports["detector"].http), "--state_dir", str(self.workdir / "detector"),
            "--archive_uri", str(self.workdir / "archive"), "--archive_flush_seconds", "2",
        ], ready="/readyz")  # fmt: skip

    def predictor(self) -> Service:
        """The multi-model predictor: versions 1 and 2 pinned, 1 the champion, the repository API on."""
        ports = self.ports["predictor"]
        return self._service("predictor", SERVER_CORE, [
            "-m", "predictor", "--model_name", "housing",
            "--models_config", str(self.workdir / "models.json"), "--enable_repository_api",
            "--http_port", str(ports.http), "--grpc_port", str(ports.grpc), "--reuse_port",
        ])  # fmt: skip

    def canary(self) -> Service:
        """A predictor of version 2 alone (the canary)."""
        ports = self.ports["canary"]
        return self._service("canary", SERVER_CORE, [
            "-m", "predictor", "--model_name", "housing", "--storage_uri", self.versions["housing-2"],
            "--http_port", str(ports.http), "--grpc_port", str(ports.grpc), "--reuse_port",
        ])  # fmt: skip

    def transformer(self, stable: str, canary_percent: int = 0) -> Service:
        """The transformer in front of the predictor ``stable``, sending ``canary_percent`` to the canary."""
        ports, target = self.ports["transformer"], self.ports[stable]
        canary = self.ports["canary"]
        route = ["--canary", f"v2={canary_percent},{HOST}:{canary.grpc},{HOST}:{canary.http}"]
        return self._service("transformer", SERVER_CORE, [
            "-m", "transformer", "--model_name", "housing", "--protocol", "grpc-v2",
            "--predictor_host", f"{HOST}:{target.grpc}", "--predictor_rest_host", f"{HOST}:{target.http}",
            "--http_port", str(ports.http), "--grpc_port", str(ports.grpc),
            "--logger_url", self.url("detector") + "/", "--reuse_port", *(route if canary_percent else []),
        ])  # fmt: skip

    def replace(self, name: str, command: Service | None = None, *, kill: bool = False) -> None:
        """A rolling restart of ``name`` (with the command of ``command`` when given), started aside."""
        old = self.services[name]
        new = self.stack.replace(old, [self.ports[name].grpc], kill=kill,
                                 command=self._aside((command or old).command))  # fmt: skip
        self.services[name] = self._back(new)

    def add(self, service: Service) -> None:
        """Start ``service`` aside (:meth:`_aside`) and wait until it is ready.

        The detector restarts where it ran, at normal priority: nothing of it serves meanwhile, and at
        ``nice 19`` on the loaded machine it took 30 s to be ready.
        """
        if service.name != "detector":
            service.command = self._aside(service.command)
        self.stack.services.append(service.start())
        service.wait_ready(timeout=180)
        self.services[service.name] = self._back(service)

    def _aside(self, command: Sequence[str]) -> list[str]:
        """``command`` starting on the load core at the lowest priority (``nice -n 19``).

        On Kubernetes a new pod starts on CPUs its requests reserve, not on the serving pod's. Started on the
        serving core here, its imports (1-3 CPU seconds) would take that core from the process it replaces;
        on the load core at normal priority they starved the detector (its POSTs from the request logger
        timed out) and the load generator. Niced, it starts from what CPU is left.
        """
        if not self.cores or command[:2] != ["taskset", "-c"]:
            return list(command)
        return ["taskset", "-c", LOAD_CORE, "nice", "-n", "19", *command[3:]]

    def _back(self, service: Service) -> Service:
        """Move a server started aside to the serving core, every thread, at normal priority, once ready."""
        if not self.cores or service.name == "detector":
            return service
        subprocess.run(["taskset", "-a", "-p", "-c", SERVER_CORE, str(service.pid)], check=True,
                       capture_output=True)  # fmt: skip
        for task in Path(f"/proc/{service.pid}/task").iterdir():
            try:
                os.setpriority(os.PRIO_PROCESS, int(task.name), 0)
            except PermissionError:  # not root: it serves niced (against the other servers on its core)
                print(f"  note: cannot renice {service.name} (not root): it serves at nice 19", flush=True)
                break
            except ProcessLookupError:
                continue
        return service

    def stop(self) -> None:
        """Stop the transformer first (its logger's last batch reaches the detector), then the rest."""
        if "transformer" in self.services:
            self.remove("transformer")
        self.stack.stop(timeout=30)

    def remove(self, name: str) -> None:
        """Stop ``name`` (SIGTERM: it drains)."""
        service = self.services.pop(name)
        service.stop(timeout=30)
        self.stack.services.remove(service)


def restart_transformer(stack: RolloverStack, kill: bool = False) -> None:
    """Step 1: a rolling restart of the transformer."""
    stack.replace("transformer", kill=kill)


def restart_predictor(stack: RolloverStack) -> None:
    """Step 2: a rolling restart of the predictor (the transformer's gRPC channel reconnects)."""
    stack.replace("predictor")


def canary_then_promote(stack: RolloverStack, settle: float = 3.0) -> None:
    """Step 3: version 2 as a 10% canary, then promoted to 100%; the first predictor stopped."""
    stack.add(stack.canary())
    stack.replace("transformer", stack.transformer("predictor", canary_percent=10))
    time.sleep(settle)
    stack.replace("transformer", stack.transformer("canary"))
    stack.remove("predictor")


def rollback(stack: RolloverStack) -> None:
    """Step 4: the first predictor again, the transformer back to it, the canary stopped."""
    stack.add(stack.predictor())
    stack.replace("transformer", stack.transformer("predictor"))
    stack.remove("canary")


def restart_detector(stack: RolloverStack, kill: bool = False) -> None:
    """Step 5: the detector stopped (SIGTERM, or SIGKILL) and started again on the same state directory."""
    old = stack.services.pop("detector")
    if kill:
        old.kill()
    old.stop(timeout=30)
    stack.stack.services.remove(old)
    stack.add(stack.detector())


def switch_champion(stack: RolloverStack) -> None:
    """Step 6: version 2 loaded as the champion, version 1 unloaded (the V2 repository API)."""
    import httpx

    base = stack.url("predictor") + "/v2/repository/models"
    loaded = httpx.post(f"{base}/housing-2/load", json={"parameters": {"champion": True}}, timeout=60)
    loaded.raise_for_status()
    httpx.post(f"{base}/housing-1/unload", timeout=60).raise_for_status()


STEPS: dict[str, tuple[str, Callable[[RolloverStack], None]]] = {
    "1": ("transformer rolling restart", restart_transformer),
    "1-kill": ("transformer replaced, old SIGKILLed", lambda stack: restart_transformer(stack, kill=True)),
    "2": ("predictor rolling restart", restart_predictor),
    "3": ("canary 10%, then promoted", canary_then_promote),
    "4": ("rollback", rollback),
    "5": ("detector restart", restart_detector),
    "5-kill": ("detector SIGKILLed, restarted", lambda stack: restart_detector(stack, kill=True)),
    "6": ("champion switch (repository API)", switch_champion),
}
ORDER = ("1", "2", "3", "4", "5", "6", "1-kill", "5-kill")


@dataclass
class StepResult:
    """What one step measured."""

    step: str
    what: str
    seconds: float
    sent: int
    statuses: dict[str, int]
    socket_errors: dict[str, int]
    p99_ms: float
    steady_p99_ms: float
    versions_after: dict[str, int]
    offered: int = 0
    joined: int = 0
    labels_posted: int = 0
    labels_failed: int = 0
    labels_archived: int = 0

    @property
    def failed(self) -> int:
        """Requests not answered 200 (other statuses and socket errors)."""
        return sum(v for k, v in self.statuses.items() if k != "200") + sum(self.socket_errors.values())

    def targets(self) -> dict[str, bool]:
        """The step's targets (a SIGKILL step has none: its loss is what a crash costs)."""
        if self.step.endswith("kill"):
            return {}
        return {
            "no failed request": self.failed == 0,
            "no inference lost": self.joined >= self.offered,
            "no label lost": self.labels_failed == 0 and self.labels_archived >= self.labels_posted,
            f"p99 <= {MAX_P99_RATIO:g}x steady": self.p99_ms <= MAX_P99_RATIO * self.steady_p99_ms,
        }


def capacity(url: str, scratch: Path, seconds: float = 5.0) -> tuple[float, float]:
    """Requests/s of the transformer in a closed loop of 16 connections, and their p50 (ms)."""
    load = Load(url, "capacity", 16, 0.0, scratch).start()
    time.sleep(seconds)
    figures = load.stop()
    return figures["statuses"].get("200", 0) / figures["seconds"], figures["p50_us"] / 1000


def versions_answering(url: str, requests: int = 40) -> dict[str, int]:
    """Which ``x-model-version`` answers ``requests`` predictions now."""
    import httpx

    seen: Counter[str] = Counter()
    with httpx.Client(timeout=10) as client:
        for _ in range(requests):
            response = client.post(url + PREDICT_PATH, json=v1_body(houses()[:1]))
            seen[response.headers.get("x-model-version", str(response.status_code))] += 1
    return dict(seen)


def run_steps(
    stack: RolloverStack, steps: Sequence[str], clients: int, delay_ms: float, steady: float, settle: float,
    labeller: Labeller | None = None,
) -> list[StepResult]:  # fmt: skip
    """For each step: a steady run (its p99), then the step under the same load, ``settle`` s after it."""
    results = []
    scratch = stack.workdir
    for step in steps:
        what, action = STEPS[step]
        before = Load(stack.url("transformer"), f"steady-{step}", clients, delay_ms, scratch).start()
        time.sleep(steady)
        steady_figures = before.stop()
        if labeller is not None:
            labeller.step = step
        during = Load(stack.url("transformer"), f"step-{step}", clients, delay_ms, scratch).start()
        time.sleep(settle / 2)
        began = time.monotonic()
        print(f"step {step}: {what} ...", flush=True)
        action(stack)
        took = time.monotonic() - began
        time.sleep(settle)
        figures = during.stop()
        results.append(StepResult(
            step, what, round(took, 1), figures["sent"], figures["statuses"],
            {kind: figures[kind] for kind in ("connect", "read", "write", "timeout") if figures[kind]},
            figures["p99_us"] / 1000, steady_figures["p99_us"] / 1000,
            versions_answering(stack.url("transformer")),
            offered=figures["statuses"].get("200", 0),
        ))  # fmt: skip
        print(f"  done in {took:.1f} s: {figures['statuses']}, p99 {figures['p99_us'] / 1000:.1f} ms "
              f"(steady {steady_figures['p99_us'] / 1000:.1f} ms)", flush=True)  # fmt: skip
    if labeller is not None:
        labeller.step = "end"
    return results


def archived(workdir: Path) -> tuple[Counter[str], Counter[str]]:
    """Request ids archived (rows) and labelled (labels) by step, from the archive and its write-ahead log.

    Ids are ``step-STEP-N`` (wrk) and ``label-STEP-N`` (the labeller); the labeller's predictions count as
    rows of their step too.
    """
    from detector.archive import WAL_DIR, read_segment, segments_of
    from model.archive import LABELS, ROWS, _read, open_store

    rows: set[str] = set()
    labels: set[str] = set()
    store = open_store(str(workdir / "archive"))
    for under, found in ((ROWS, rows), (LABELS, labels)):
        frame = _read(store, under)
        if frame is not None:
            found.update(frame["request_id"].astype(str))
    for segment in segments_of(workdir / "detector" / WAL_DIR):
        segment_rows, segment_labels = read_segment(segment)
        rows.update(record.request_id for record in segment_rows)
        labels.update(record.request_id for record in segment_labels)
    return _by_step(rows), _by_step(labels)


def _by_step(ids: set[str]) -> Counter[str]:
    counted: Counter[str] = Counter()
    for request_id in ids:
        kind, _, rest = request_id.partition("-")
        if kind in ("step", "label"):
            counted[f"{kind}:{rest.rsplit('-', 1)[0]}"] += 1
    return counted


def account(results: list[StepResult], labeller: Labeller, workdir: Path) -> None:
    """Fill in each step's inferences joined and labels archived (the stack has stopped: all is sealed)."""
    rows, labels = archived(workdir)
    for result in results:
        result.labels_posted = labeller.posted[result.step]
        result.labels_failed = labeller.failed[result.step]
        result.offered += labeller.predicted[result.step]
        result.joined = rows[f"step:{result.step}"] + rows[f"label:{result.step}"]
        result.labels_archived = labels[f"label:{result.step}"]


def table(results: list[StepResult]) -> str:
    """One line per step."""
    head = (f"{'step':<7} {'what':<36} {'secs':>5} {'200':>6} {'other':>12} {'sock err':>9} {'p99 ms':>7} "
            f"{'steady':>7} {'offered':>7} {'joined':>6} {'labels':>9}  versions after")  # fmt: skip
    lines = [head, "-" * len(head)]
    for r in results:
        other = ",".join(f"{k}:{v}" for k, v in r.statuses.items() if k != "200") or "0"
        socket_errors = ",".join(f"{k}:{v}" for k, v in r.socket_errors.items()) or "0"
        lines.append(
            f"{r.step:<7} {r.what:<36} {r.seconds:>5.1f} {r.statuses.get('200', 0):>6} {other:>12} "
            f"{socket_errors:>9} {r.p99_ms:>7.1f} {r.steady_p99_ms:>7.1f} {r.offered:>7} {r.joined:>6} "
            f"{r.labels_posted:>4}/{r.labels_archived:<4}  {r.versions_after}"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The benchmark's options."""
    parser = argparse.ArgumentParser(prog="./dev bench rollover", description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", type=Path, help="artifact to serve (default: latest, else a quick one)")
    parser.add_argument("--clients", type=int, default=32, help="wrk connections (default %(default)s)")
    parser.add_argument("--steady", type=float, default=8.0, help="seconds of steady load before each step")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds of load around each step")
    parser.add_argument("--label-interval", type=float, default=0.2, help="seconds between labels")
    parser.add_argument("--steps", default=",".join(ORDER), help="steps to run, in order (default: all)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="where the JSON goes")
    parser.add_argument("--workdir", type=Path, help="keep logs, state and archive here (default: removed)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the steps, print the table and the targets, save JSON."""
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    steps = [step.strip() for step in args.steps.split(",") if step.strip()]
    unknown = [step for step in steps if step not in STEPS]
    if unknown or shutil.which("wrk") is None:
        print(f"unknown steps {unknown} (known: {', '.join(ORDER)})" if unknown else "no wrk: ./dev setup")
        return 2
    from model.paths import latest_artifact
    from model.train import build_artifact

    print(f"machine: load average {os.getloadavg()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="rollover-") as tmp, on_load_core():
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        artifact = args.artifact or latest_artifact() or build_artifact(workdir / "artifact", fast=True)
        rollover = RolloverStack(Stack(workdir), workdir, artifact)
        labeller = None
        try:
            rollover.start()
            rate, p50_ms = capacity(rollover.url("transformer"), workdir)
            delay_ms = max(0.0, 1000 * args.clients / (LOAD_SHARE * rate) - p50_ms)
            print(f"capacity {rate:.0f} requests/s (closed loop, 16 connections, p50 {p50_ms:.1f} ms); "
                  f"steady load: {args.clients} connections, {delay_ms:.1f} ms mean pause",
                  flush=True)  # fmt: skip
            labeller = Labeller(rollover.url("transformer"), rollover.url("detector"), args.label_interval)
            labeller.start()
            results = run_steps(rollover, steps, args.clients, delay_ms, args.steady, args.settle, labeller)
            labeller.stop()
        finally:
            if labeller is not None:
                labeller.stop()
            rollover.stop()
        account(results, labeller, workdir)
    print(table(results))
    missed = [f"{r.step}: {name}" for r in results for name, met in r.targets().items() if not met]
    print("targets: " + ("all met" if not missed else "missed: " + "; ".join(missed)))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    steps_json = [{**asdict(r), "failed": r.failed, "targets": r.targets()} for r in results]
    document = {"machine": machine(), "capacity_rps": rate, "load_share": LOAD_SHARE, "clients": args.clients,
                "steps": steps_json}  # fmt: skip
    args.output.write_text(json.dumps(document, indent=2))
    print(f"saved {args.output}")
    return 1 if missed else 0
