"""``housing up``: the serving stack on loopback, started the way the containers start it.

Each service is a ``python -m <component>`` process with the container's own arguments (see
:class:`ServiceSpec` and :func:`services`); ``housing up`` waits until every one is ready, prints the URLs and
a curl example, sends one real prediction, then keeps running until Ctrl-C (SIGINT) or SIGTERM, and stops
every process it started.
``--once`` exits after the prediction (tests and CI).

Default ports (all on 127.0.0.1): predictor HTTP 8080 / gRPC 8081, transformer HTTP 8090 / gRPC 8091,
drift detector HTTP 8070 (the transformer logs every inference to it; ``--no-detector`` leaves it out),
MLflow 5000 (with ``--mlflow``: the tracking server and model registry over the local store), Prometheus 9090
(with ``--monitoring``), Azurite 10000 (with ``--azurite``). Logs go to ``var/stack/<service>.log``.

Adding a service is adding a :class:`ServiceSpec` to the list :func:`services` returns.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

from housing import monitoring

HELP = "Start predictor, transformer and detector on loopback, show a real prediction; Ctrl-C stops them."
HOST = "127.0.0.1"
AZURITE_ACCOUNT = "devstoreaccount1"
# Azurite's well-known development key, published by Microsoft for the emulator: not a secret.
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@dataclass
class ServiceSpec:
    """One process of the stack.

    Attributes:
        name: Short name (``predictor``, ``transformer``, ...), also the log file's name.
        command: The command line, e.g. ``[python, "-m", "predictor", ...]``.
        http_port: Its HTTP port on 127.0.0.1.
        ready_path: A path answering 200 once it can serve.
        env: Extra environment variables.
    """

    name: str
    command: list[str]
    http_port: int
    ready_path: str = "/v2/health/ready"
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """Base URL of its HTTP server."""
        return f"http://{HOST}:{self.http_port}"


def configure(parser: argparse.ArgumentParser) -> None:
    """Declare the arguments of ``housing up``."""
    parser.add_argument(
        "--artifact", type=Path, help="artifact directory to serve (default: the latest trained)"
    )
    parser.add_argument(
        "--azurite", action="store_true", help="start Azurite, publish the artifact there, serve it"
    )
    parser.add_argument(
        "--once", action="store_true", help="start, predict once, print, stop everything and exit"
    )
    parser.add_argument(
        "--fast", action="store_true", help="if no model is trained yet, train a quick one (seconds)"
    )
    parser.add_argument(
        "--predictor-port", type=int, default=8080, help="predictor HTTP port (default: %(default)s)"
    )
    parser.add_argument(
        "--predictor-grpc-port", type=int, default=8081, help="predictor gRPC port (default: %(default)s)"
    )
    parser.add_argument(
        "--transformer-port", type=int, default=8090, help="transformer HTTP port (default: %(default)s)"
    )
    parser.add_argument(
        "--transformer-grpc-port", type=int, default=8091, help="transformer gRPC port (default: %(default)s)"
    )
    parser.add_argument(
        "--azurite-port", type=int, default=10000, help="Azurite Blob port (default: %(default)s)"
    )
    parser.add_argument(
        "--detector",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="start the drift detector, fed by the transformer's request logger (default: on)",
    )
    parser.add_argument(
        "--detector-port", type=int, default=8070, help="detector HTTP port (default: %(default)s)"
    )
    parser.add_argument(
        "--mlflow", action="store_true", help="also start the MLflow tracking server and registry UI"
    )
    parser.add_argument("--mlflow-port", type=int, default=5000, help="MLflow port (default: %(default)s)")
    parser.add_argument("--ready-timeout", type=float, default=90.0, help="seconds to wait for readiness")
    parser.add_argument("--log-dir", type=Path, help="where service logs go (default: var/stack)")
    monitoring.configure(parser)  # --monitoring, --prometheus-port (housing/monitoring.py)


def services(args: argparse.Namespace, storage_uri: str, env: dict[str, str]) -> list[ServiceSpec]:
    """The processes of the stack, with the same entrypoints and flags as their containers."""
    from model.paths import var_dir

    python = sys.executable
    return [
        ServiceSpec(
            "predictor",
            [python, "-m", "predictor", "--model_name", "housing", "--storage_uri", storage_uri,
             "--http_port", str(args.predictor_port), "--grpc_port", str(args.predictor_grpc_port)],
            args.predictor_port,
            env=env,
        ),
        ServiceSpec(
            "transformer",
            # gRPC to the predictor: KServe's REST client (httpx) is the bottleneck under concurrency (see
            # docs/serving.md); the predictor's V2 metadata (feature order) is read over REST.
            [python, "-m", "transformer", "--model_name", "housing", "--protocol", "grpc-v2",
             "--predictor_host", f"{HOST}:{args.predictor_grpc_port}",
             "--predictor_rest_host", f"{HOST}:{args.predictor_port}",
             "--http_port", str(args.transformer_port), "--grpc_port", str(args.transformer_grpc_port),
             *(["--logger_url", f"http://{HOST}:{args.detector_port}/"] if args.detector else [])],
            args.transformer_port,
        ),
        *([ServiceSpec(
            "detector",
            [python, "-m", "detector", "--storage_uri", storage_uri, "--host", HOST,
             "--http_port", str(args.detector_port), "--state_dir", str(var_dir() / "detector")],
            args.detector_port,
            env=env,
        )] if args.detector else []),
        *([mlflow_service(args.mlflow_port)] if args.mlflow else []),
    ]  # fmt: skip


def mlflow_service(port: int) -> ServiceSpec:
    """The MLflow tracking server over the store training writes to (``MLFLOW_TRACKING_URI``, else var/)."""
    from model.tracking import artifact_location, tracking_uri

    uri = tracking_uri()
    artifacts = artifact_location(uri)
    return ServiceSpec(
        "mlflow",
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", HOST,
         "--port", str(port), "--workers", "1",
         *(["--artifacts-destination", artifacts] if artifacts else [])],
        port,
        ready_path="/health",
    )  # fmt: skip


_PORTS_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now and that this process has not handed out before.

    The kernel may offer a port it has just released again, so consecutive calls could otherwise give two
    services of one stack the same port (seen in CI: Prometheus and the detector).
    """
    while True:
        with socket.socket() as sock:
            sock.bind((HOST, 0))
            port = int(sock.getsockname()[1])
        if port not in _PORTS_HANDED_OUT:
            _PORTS_HANDED_OUT.add(port)
            return port


def stop_process(process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """End a process with SIGTERM (so it saves its state and coverage), then SIGKILL after ``timeout`` s."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class Stack:
    """The processes started so far; :meth:`stop` ends every one of them (and only them)."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.running: list[tuple[ServiceSpec, subprocess.Popen[bytes], IO[bytes]]] = []

    def start(self, spec: ServiceSpec) -> None:
        """Start one service, its output going to ``<log_dir>/<name>.log``."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"{spec.name}.log", "wb")  # noqa: SIM115 (closed in stop())
        environment = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), **spec.env}
        process = subprocess.Popen(spec.command, stdout=log, stderr=subprocess.STDOUT, env=environment)
        self.running.append((spec, process, log))
        print(f"started {spec.name} (pid {process.pid}), log {self.log_dir / f'{spec.name}.log'}", flush=True)

    def wait_ready(self, spec: ServiceSpec, timeout: float) -> None:
        """Wait until ``spec`` answers 200 on its ready path; fail early if its process exits."""
        import httpx

        process = next(process for started, process, _ in self.running if started is spec)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{spec.name} exited with {process.returncode}:\n{self.log_tail(spec)}")
            try:
                if httpx.get(spec.url + spec.ready_path, timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{spec.name} not ready within {timeout:.0f} s:\n{self.log_tail(spec)}")

    def exited(self) -> list[str]:
        """Names of services whose process has ended."""
        return [spec.name for spec, process, _ in self.running if process.poll() is not None]

    def log_tail(self, spec: ServiceSpec, lines: int = 20) -> str:
        """The last lines of a service's log."""
        path = self.log_dir / f"{spec.name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def stop(self, timeout: float = 15.0) -> None:
        """Stop every started process: SIGTERM, then SIGKILL after ``timeout`` seconds."""
        for spec, process, _ in reversed(self.running):
            if process.poll() is None:
                print(f"stopping {spec.name} (pid {process.pid})", flush=True)
                process.terminate()
        for _, process, log in self.running:
            stop_process(process, timeout)
            log.close()
        self.running.clear()


def run(args: argparse.Namespace) -> int:
    """Start the stack, show a prediction, wait for Ctrl-C (or exit with ``--once``)."""
    import logging

    from model.paths import var_dir

    logging.getLogger("httpx").setLevel(logging.WARNING)
    stack = Stack(args.log_dir or var_dir() / "stack")
    with _stop_on_signals():
        try:
            artifact = args.artifact or _latest_or_train(fast=args.fast)
            storage_uri, env = str(artifact), dict[str, str]()
            if args.azurite:
                storage_uri, env = _serve_from_azurite(stack, artifact, args.azurite_port)
            specs = services(args, storage_uri, env)
            for spec in specs:
                stack.start(spec)
            for spec in specs:
                stack.wait_ready(spec, args.ready_timeout)
                print(f"ready: {spec.name} at {spec.url}", flush=True)
            if args.monitoring:  # Prometheus with the chart's alert rules (housing/monitoring.py)
                monitoring.start_in_stack(stack, specs, args)
            transformer = next(spec for spec in specs if spec.name == "transformer")
            _show_prediction(transformer.url)
            if args.once:
                return 0
            print("serving; press Ctrl-C to stop", flush=True)
            while not (ended := stack.exited()):
                time.sleep(0.5)
            print(f"error: {', '.join(ended)} exited; stopping the stack", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 0
        except (RuntimeError, TimeoutError, OSError, subprocess.CalledProcessError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        finally:
            stack.stop()


def _latest_or_train(fast: bool) -> Path:
    from model.paths import latest_artifact

    artifact = latest_artifact()
    if artifact is None:
        command = ["housing", "train", *(["--fast"] if fast else [])]
        print(f"no trained artifact yet: training one first ({' '.join(command)})", flush=True)
        subprocess.run([sys.executable, "-m", *command], check=True)
        artifact = latest_artifact()
        if artifact is None:
            raise RuntimeError("training finished but wrote no artifact")
    print(f"serving artifact {artifact}", flush=True)
    return artifact


def _serve_from_azurite(stack: Stack, artifact: Path, port: int) -> tuple[str, dict[str, str]]:
    from model.paths import var_dir
    from model.storage import CONNECTION_STRING_ENV, publish

    binary = shutil.which("azurite-blob")
    if binary is None:
        raise RuntimeError("azurite-blob not found on PATH (./dev setup installs it under .tools/azurite)")
    spec = ServiceSpec(
        "azurite",
        [binary, "--blobHost", HOST, "--blobPort", str(port), "--location", str(var_dir() / "azurite"),
         "--silent", "--skipApiVersionCheck", "--disableTelemetry", "--loose"],
        port,
        ready_path=f"/{AZURITE_ACCOUNT}?comp=list",
    )  # fmt: skip
    stack.start(spec)
    _wait_listening(stack, spec)
    connection_string = (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
        f"BlobEndpoint=http://{HOST}:{port}/{AZURITE_ACCOUNT};"
    )
    os.environ[CONNECTION_STRING_ENV] = connection_string
    version = json.loads((artifact / "model.json").read_text())["version"]
    url = f"http://{HOST}:{port}/{AZURITE_ACCOUNT}/models/housing/{version}"
    print(f"publishing {artifact} to {url}", flush=True)
    publish(artifact, url)
    return url, {CONNECTION_STRING_ENV: connection_string}


def _wait_listening(stack: Stack, spec: ServiceSpec, timeout: float = 30.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if spec.name in stack.exited():
            raise RuntimeError(f"{spec.name} exited:\n{stack.log_tail(spec)}")
        try:
            socket.create_connection((HOST, spec.http_port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"{spec.name} not listening on {spec.http_port} within {timeout:.0f} s")


def _show_prediction(transformer_url: str) -> None:
    import httpx

    from model.dataset import load_dataset
    from model.schema import ALL_FEATURES, TARGET

    first = load_dataset().iloc[0]
    house: dict[str, Any] = {name: float(first[name]) for name in ALL_FEATURES if name != "b"}
    body = json.dumps({"instances": [house]})
    url = f"{transformer_url}/v1/models/housing:predict"
    print(f"\ntry it:\n  curl -s -H 'Content-Type: application/json' {url} \\\n    -d '{body}'\n")
    try:
        response = httpx.post(url, content=body, headers={"content-type": "application/json"}, timeout=10.0)
        response.raise_for_status()
    except httpx.HTTPError as error:
        raise RuntimeError(f"the example prediction failed: {error}") from error
    predicted = response.json()["predictions"][0]
    print(
        f"prediction for the first house of the data set: {predicted:.2f} (USD 1000s; recorded value "
        f"{first[TARGET]:.1f})",
        flush=True,
    )


@contextmanager
def _stop_on_signals() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt, as SIGINT already is, so that the ``finally`` stops the stack."""

    def interrupt(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
