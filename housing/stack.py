"""``housing up``: the serving stack on loopback, started the way the containers start it.

Each service is a ``python -m <component>`` process with the container's own arguments (see :func:`services`);
``housing up`` starts the servers at once, waits until every one is ready, warms the transformer
(:func:`warm_up`), prints the URLs and a curl example, sends one real prediction, starts MLflow (after it:
:data:`AFTER_THE_PREDICTION`), prints a time line (:class:`TimeLine`), then keeps running until Ctrl-C
(SIGINT) or SIGTERM, and stops every process it started. A component that exits meanwhile is restarted with
exponential back-off (1 s, doubling to 30 s), its exit code and last log lines printed; the stack stops only
when one crash-loops (five restarts within a minute), saying so (:class:`~housing.processes.Supervisor`).
``--once`` exits after the prediction (tests and CI).

Every server binds 127.0.0.1 only (their ``--bind_address`` default; serving/edge.py). Default ports:
predictor HTTP 8080 / gRPC 8081, transformer HTTP 8090 / gRPC 8091,
drift detector HTTP 8070 (the transformer logs every inference to it; ``--no-detector`` leaves it out),
explainer HTTP 8060 (the transformer sends ``:explain`` to it; same artifact, pinned by model.json's
``sha256`` of model.joblib; ``--no-explainer`` leaves it out),
MLflow 5000 (with ``--mlflow``: the tracking server and model registry over the local store), Prometheus 9090
(with ``--monitoring``), Azurite 10000 (with ``--azurite``). Logs go to ``var/stack/<service>.log``.

Adding a service is adding a :class:`~housing.processes.Service` to the list :func:`services` returns; how
processes are started, waited for and stopped is housing/processes.py, the local Prometheus
housing/prometheus.py.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from housing import prometheus
from housing.processes import HOST, Service, Stack, Supervisor
from model.paths import latest_artifact, var_dir

API_KEYS_ENV = "HOUSING_API_KEYS"  # pragma: allowlist secret (a variable name)
"""``serving.auth.API_KEYS_ENV``, repeated: ``housing --help`` need not import Starlette (a test checks)."""
LOGGER_KEY_ENV = "HOUSING_LOGGER_API_KEY"  # pragma: allowlist secret (a variable name)
"""``transformer.request_logger.LOGGER_KEY_ENV``, repeated for the same reason: the ingest key it sends."""
ROLES = ("predict", "feedback", "ingest", "monitor", "analyst", "admin")
"""The roles of serving/policy.py a credential can hold; ``--auth`` generates a key for each."""
HELP = (
    "Start the stack on loopback (predictor, transformer, explainer, detector; MLflow, Prometheus and "
    "Azurite when asked), show a real prediction; Ctrl-C stops it."
)
AZURITE_ACCOUNT = "devstoreaccount1"
# Azurite's well-known development key, published by Microsoft for the emulator: not a secret.
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


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
        "--explainer",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="start the explainer (TreeSHAP, :explain through the transformer) (default: on)",
    )
    parser.add_argument(
        "--explainer-port", type=int, default=8060, help="explainer HTTP port (default: %(default)s)"
    )
    parser.add_argument(
        "--mlflow", action="store_true", help="also start the MLflow tracking server and registry UI"
    )
    parser.add_argument("--mlflow-port", type=int, default=5000, help="MLflow port (default: %(default)s)")
    parser.add_argument("--ready-timeout", type=float, default=90.0, help="seconds to wait for readiness")
    parser.add_argument("--log-dir", type=Path, help="where service logs go (default: var/stack)")
    parser.add_argument(
        "--monitoring",
        action="store_true",
        help="also start Prometheus, scraping every service and evaluating the Helm chart's alert rules",
    )
    parser.add_argument(
        "--prometheus-port", type=int, default=9090, help="Prometheus web/API port (default: %(default)s)"
    )
    parser.add_argument(
        "--auth",
        action="store_true",
        help="require API keys with each route's role (docs/security.md): 'predict' on the transformer's "
        "predict and explain routes; on the detector 'feedback' for /feedback, 'ingest' for the events "
        "(the transformer's logger gets its own key), 'monitor' for /status and /report, 'analyst' for "
        f"/outcomes; 'admin' for the repository API. Keys from {API_KEYS_ENV}, else generated once into "
        "var/api-keys and printed (default: off; the stack listens on 127.0.0.1 only either way)",
    )
    parser.add_argument(
        "--rate-limit",
        type=float,
        help="requests a second each client may send to those routes; more get 429 (default: no limit)",
    )


def services(
    args: argparse.Namespace, storage_uri: str, env: dict[str, str], *, model_sha256: str | None = None
) -> list[Service]:
    """The processes of the stack, with the same entrypoints and flags as their containers.

    ``model_sha256`` (model.json's ``sha256``, of model.joblib) pins the explainer's artifact, as the chart
    pins it; ``None`` leaves the pin to model.json alone.
    """
    python = sys.executable
    explainer = getattr(args, "explainer", False)
    # Every KServe server shares its ports with its replacement in a rolling restart (Stack.replace) and
    # listens only once ready: SO_REUSEPORT, with no process in the path (docs/rollout.md says why).
    edge = [*edge_flags(args), "--reuse_port"]
    logger_env = {LOGGER_KEY_ENV: ingest_key()} if getattr(args, "auth", False) and args.detector else {}
    return [
        Service(
            "predictor",
            [python, "-m", "predictor", "--model_name", "housing", "--storage_uri", storage_uri,
             "--http_port", str(args.predictor_port), "--grpc_port", str(args.predictor_grpc_port), *edge],
            args.predictor_port,
            env=env,
        ),
        Service(
            "transformer",
            # gRPC to the predictor: KServe's REST client (httpx) is the bottleneck under concurrency (see
            # docs/serving.md); the predictor's V2 metadata (feature order) is read over REST.
            [python, "-m", "transformer", "--model_name", "housing", "--protocol", "grpc-v2",
             "--predictor_host", f"{HOST}:{args.predictor_grpc_port}",
             "--predictor_rest_host", f"{HOST}:{args.predictor_port}",
             "--http_port", str(args.transformer_port), "--grpc_port", str(args.transformer_grpc_port),
             *(["--logger_url", f"http://{HOST}:{args.detector_port}/"] if args.detector else []),
             *(["--explainer_host", f"{HOST}:{args.explainer_port}"] if explainer else []), *edge],
            args.transformer_port,
            env=logger_env,  # the logger's key: in its environment, never on a command line (ps shows those)
        ),
        *([Service(
            "explainer",
            [python, "-m", "explainer", "--model_name", "housing", "--storage_uri", storage_uri,
             *(["--expected_sha256", model_sha256] if model_sha256 else []),
             "--http_port", str(args.explainer_port), "--enable_grpc", "false", *edge],  # REST only
            args.explainer_port,
            env=env,
        )] if explainer else []),
        *([Service(
            "detector",
            [python, "-m", "detector", "--storage_uri", storage_uri,
             "--http_port", str(args.detector_port), "--state_dir", str(var_dir() / "detector"),
             "--archive_uri", archive_uri(args), *edge_flags(args)],
            args.detector_port,
            env=env,
        )] if args.detector else []),
        *([mlflow_service(args.mlflow_port)] if args.mlflow else []),
    ]  # fmt: skip


def archive_uri(args: argparse.Namespace) -> str:
    """Where the detector archives traffic: with ``--azurite`` its ``archive`` container, else var/archive.

    ``housing train --data bundled ARCHIVE`` trains on it (docs/detector.md, "The traffic archive").
    """
    if getattr(args, "azurite", False):
        return f"http://{HOST}:{args.azurite_port}/{AZURITE_ACCOUNT}/archive/housing"
    return str(var_dir() / "archive")


def edge_flags(args: argparse.Namespace) -> list[str]:
    """Every server's edge flags for ``--auth`` and ``--rate-limit`` (serving/edge.py).

    The keys reach the servers in ``HOUSING_API_KEYS`` (inherited) or the file :func:`api_keys` writes.
    """
    flags = []
    if getattr(args, "auth", False):
        flags += (
            ["--auth"]
            if os.environ.get(API_KEYS_ENV)
            else ["--auth", "--api_keys_file", str(api_keys_file())]
        )
    if getattr(args, "rate_limit", None) is not None:
        flags += ["--rate_limit", f"{args.rate_limit:g}"]
    return flags


def api_keys_file() -> Path:
    """Where ``housing up --auth`` keeps the keys it generates (var/api-keys, readable by the owner only)."""
    return var_dir() / "api-keys"


def api_keys() -> dict[str, frozenset[str]]:
    """The stack's API keys: ``HOUSING_API_KEYS``, else var/api-keys, with a new key for each role it lacks.

    A key file of an earlier version (predict and feedback only) gets the new roles' keys appended.
    """
    from serving.auth import parse_api_keys

    if os.environ.get(API_KEYS_ENV):
        return parse_api_keys(os.environ[API_KEYS_ENV], API_KEYS_ENV)
    path = api_keys_file()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text("# housing up --auth: KEY=ROLE[,ROLE] (serving/auth.py, roles: serving/policy.py)\n")
    held = {role for roles in parse_api_keys(path.read_text(), str(path)).values() for role in roles}
    missing = [role for role in ROLES if role not in held]
    if missing:
        with path.open("a") as keys:
            keys.writelines(f"{secrets.token_urlsafe(24)}={role}\n" for role in missing)
    return parse_api_keys(path.read_text(), str(path))


def ingest_key() -> str:
    """The key with the ``ingest`` role that the transformer's request logger sends to the detector."""
    key = next((key for key, roles in api_keys().items() if "ingest" in roles), None)
    if key is None:
        raise RuntimeError(f"--auth: no API key has the role 'ingest' ({API_KEYS_ENV} or {api_keys_file()})")
    return key


def mlflow_service(port: int) -> Service:
    """The MLflow tracking server over the store training writes to (``MLFLOW_TRACKING_URI``, else var/)."""
    from model.tracking import artifact_location, tracking_uri  # imports mlflow: only with --mlflow

    uri = tracking_uri()
    artifacts = artifact_location(uri)
    return Service(
        "mlflow",
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", HOST,
         "--port", str(port), "--workers", "1",
         *(["--artifacts-destination", artifacts] if artifacts else [])],
        port,
        ready_path="/health",
    )  # fmt: skip


def azurite_service(location: Path, port: int, host: str = HOST) -> Service:
    """Azurite's Blob service on ``host:port``, keeping its data in ``location`` (telemetry off).

    ``host`` is 127.0.0.1 but for the image tests, whose containers reach it on their network's gateway.
    """
    binary = shutil.which("azurite-blob")
    if binary is None:
        raise RuntimeError("azurite-blob not found on PATH (./dev setup installs it under .tools/azurite)")
    return Service(
        "azurite",
        [binary, "--blobHost", host, "--blobPort", str(port), "--location", str(location),
         "--silent", "--skipApiVersionCheck", "--disableTelemetry", "--loose"],
        port,
        ready_path=None,  # listening is ready
    )  # fmt: skip


def azurite_connection_string(port: int, host: str = HOST) -> str:
    """The connection string of the Azurite Blob service on ``host:port``."""
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
        f"BlobEndpoint=http://{host}:{port}/{AZURITE_ACCOUNT};"
    )


def run(args: argparse.Namespace) -> int:
    """Start the stack, show a prediction, wait for Ctrl-C (or exit with ``--once``)."""
    stack = Stack(args.log_dir or var_dir() / "stack")
    clock = TimeLine()
    with _stop_on_signals():
        try:
            must_train = args.artifact is None and latest_artifact() is None
            artifact = args.artifact or latest_or_train(fast=args.fast)
            clock.lap("training" if must_train else "training (none: the model exists)")
            storage_uri, env = str(artifact), dict[str, str]()
            if args.azurite:
                storage_uri, env = _serve_from_azurite(stack, artifact, args.azurite_port)
            sha256 = json.loads((artifact / "model.json").read_text()).get("sha256")
            headers = _auth_headers() if args.auth else {}
            # The servers start at once (their imports overlap on the cores); Prometheus once they are ready
            # (else HousingComponentDown counts their start-up); MLflow, which the prediction does not need,
            # after the prediction (AFTER_THE_PREDICTION).
            planned = services(args, storage_uri, env, model_sha256=sha256)
            check_ports_free(args)
            first = [service for service in planned if service.name not in AFTER_THE_PREDICTION]
            started = [stack.start(service) for service in first]
            for service in started:
                stack.wait_ready(service, args.ready_timeout)
                print(f"ready: {service.name} at {service.url}", flush=True)
            later = [_start_prometheus(stack, started, args)] if args.monitoring else []
            transformer = next(service for service in started if service.name == "transformer")
            warm_up(transformer, args.ready_timeout)
            clock.lap("start-up")
            _show_prediction(transformer.url, explain=args.explainer, headers=headers)
            clock.lap("first prediction")
            later += [stack.start(service) for service in planned if service.name in AFTER_THE_PREDICTION]
            for service in later:  # not needed for the prediction: longer on a busy machine (MLflow: 100 s)
                stack.wait_ready(service, max(args.ready_timeout, LATER_READY_TIMEOUT))
                _say_ready(service)
            if later:
                clock.lap(" and ".join(service.name for service in later) + " ready")
            clock.show()
            if args.once:
                return 0
            _say_how_to_reach_housing()
            print("serving; press Ctrl-C to stop", flush=True)
            supervisor = Supervisor(stack)  # a component that exits is restarted, until one crash-loops
            while (reason := supervisor.check()) is None:
                time.sleep(0.5)
            print(f"error: {reason}; stopping the stack", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 0
        except (RuntimeError, TimeoutError, OSError, subprocess.CalledProcessError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        finally:
            stack.stop()


def check_ports_free(args: argparse.Namespace) -> None:
    """Refuse to start on a port something listens on already (another ``housing up``, say).

    The servers share their ports on purpose (``--reuse_port``, for rolling restarts): without this check a
    second stack would silently take half of the first one's connections.

    Raises:
        RuntimeError: A port is in use; the message names it and its flag.
    """
    from housing.processes import listening

    flags = ["predictor_port", "predictor_grpc_port", "transformer_port", "transformer_grpc_port"]
    flags += ["detector_port"] if args.detector else []
    flags += ["explainer_port"] if getattr(args, "explainer", False) else []
    for flag in flags:
        port = getattr(args, flag)
        if listening(port):
            option = "--" + flag.replace("_", "-")
            raise RuntimeError(
                f"port {port} ({option}) is in use: another housing up? Choose another with {option}"
            )


AFTER_THE_PREDICTION = ("mlflow",)
"""Services started once the example prediction is printed: it does not need them, and MLflow's start-up
(11 CPU seconds until ready, measured, against 1.6 for the predictor and 6.7 for the detector) would take
the cores from the servers it needs."""
LATER_READY_TIMEOUT = 300.0
"""Seconds at least that the services started after the prediction may take to be ready."""
SETUP_SECONDS_ENV = "HOUSING_SETUP_SECONDS"
"""Set by ``./dev up``: the seconds its set-up took, the first entry of the time line."""


class TimeLine:
    """Where the seconds to the first prediction went: set-up (``./dev``), training, start-up, prediction."""

    def __init__(self) -> None:
        self.laps: list[tuple[str, float]] = []
        setup = os.environ.get(SETUP_SECONDS_ENV)
        if setup:
            self.laps.append(("set-up", float(setup)))
        self._last = time.monotonic()

    def lap(self, name: str) -> None:
        """End the current step, naming it."""
        now = time.monotonic()
        self.laps.append((name, now - self._last))
        self._last = now

    def show(self) -> None:
        """Print the time line, and the total to the first prediction."""
        names = [name for name, _ in self.laps]
        first = names.index("first prediction") + 1 if "first prediction" in names else len(names)
        total = sum(seconds for _, seconds in self.laps[:first])
        steps = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in self.laps)
        print(f"time line: {steps}; {total:.1f} s to the first prediction", flush=True)


def warm_up(transformer: Service, timeout: float) -> None:
    """Have the transformer read its predictor's metadata (``GET /health``) before the first prediction.

    The transformer reads it, and opens its clients, on the first request: cold, that request took 0.2-0.4 s
    here and 1.9 s on a busy machine, which alone set HousingHighLatency pending on an idle stack. After this,
    the example prediction takes milliseconds. ``/health`` (the original API's) answers 200 once the
    predictor has answered; nothing is counted in the request metrics.
    """
    transformer.wait_ready(transformer.url + "/health", timeout=timeout)


def _say_how_to_reach_housing() -> None:
    """Outside an activated venv (``./dev up``), say how another shell gets ``housing`` and its tools."""
    if os.environ.get("VIRTUAL_ENV") != sys.prefix:
        activate = Path(sys.prefix) / "bin" / "activate"
        print(f"in another shell: source {activate} (housing, its tools and the tests' on PATH), then "
              "housing --help", flush=True)  # fmt: skip


def _say_ready(service: Service) -> None:
    if service.name == "prometheus":
        print(f"prometheus: {service.url} (alerts: {service.url}/alerts; scraping every 5 s)", flush=True)
    else:
        print(f"ready: {service.name} at {service.url}", flush=True)


def _start_prometheus(stack: Stack, started: list[Service], args: argparse.Namespace) -> Service:
    """``--monitoring``: Prometheus with the chart's alert rules, scraping each component every 5 s."""
    targets = [
        prometheus.Target(service.name, f"{HOST}:{service.port}")
        for service in started
        if service.name in prometheus.COMPONENTS
    ]
    config_file = prometheus.write_config(stack.log_dir / "prometheus", targets)
    print(f"prometheus config {config_file}: scraping {', '.join(t.component for t in targets)}", flush=True)
    return stack.start(prometheus.service(config_file, args.prometheus_port))


def latest_or_train(fast: bool) -> Path:
    """The latest trained artifact; without one, ``housing train`` (``--fast``: seconds) runs first."""
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
    from model.storage import CONNECTION_STRING_ENV, publish  # the Azure SDK: only with --azurite

    stack.wait_ready(stack.start(azurite_service(var_dir() / "azurite", port)), timeout=30.0)
    connection_string = azurite_connection_string(port)
    os.environ[CONNECTION_STRING_ENV] = connection_string
    version = json.loads((artifact / "model.json").read_text())["version"]
    url = f"http://{HOST}:{port}/{AZURITE_ACCOUNT}/models/housing/{version}"
    print(f"publishing {artifact} to {url}", flush=True)
    publish(artifact, url)
    return url, {CONNECTION_STRING_ENV: connection_string}


def _auth_headers() -> dict[str, str]:
    """Print the keys of ``--auth``; the header that the example prediction sends (with a predict key)."""
    keys = api_keys()
    for key, roles in keys.items():
        print(f"auth: API key with roles {', '.join(sorted(roles))}: {key}", flush=True)
    predict = next((key for key, roles in keys.items() if "predict" in roles), None)
    if predict is None:
        raise RuntimeError(f"--auth: no API key has the role 'predict' ({API_KEYS_ENV} or {api_keys_file()})")
    return {"authorization": f"Bearer {predict}"}


def _show_prediction(
    transformer_url: str, *, explain: bool = False, headers: dict[str, str] | None = None
) -> None:
    # Imported here, not at the top: pandas and httpx would make `housing --help` slow.
    import httpx

    from model.dataset import load_dataset
    from model.schema import ALL_FEATURES, TARGET

    first = load_dataset().iloc[0]
    house: dict[str, Any] = {name: float(first[name]) for name in ALL_FEATURES if name != "b"}
    body = json.dumps({"instances": [house]})
    url = f"{transformer_url}/v1/models/housing:predict"
    auth = "".join(f" -H '{name.title()}: {value}'" for name, value in (headers or {}).items())
    print(f"\ntry it:\n  curl -s -H 'Content-Type: application/json'{auth} {url} \\\n    -d '{body}'\n")
    headers = {"content-type": "application/json", **(headers or {})}
    try:
        response = httpx.post(url, content=body, headers=headers, timeout=10.0)
        response.raise_for_status()
    except httpx.HTTPError as error:
        raise RuntimeError(f"the example prediction failed: {error}") from error
    predicted = response.json()["predictions"][0]
    print(
        f"prediction for the first house of the data set: {predicted:.2f} (USD 1000s; recorded value "
        f"{first[TARGET]:.1f})",
        flush=True,
    )
    if explain:
        _show_explanation(transformer_url, body, headers)


def _show_explanation(transformer_url: str, body: str, headers: dict[str, str]) -> None:
    """Ask the transformer why (``:explain``) and print the largest factors (docs/explainer.md)."""
    import httpx

    url = f"{transformer_url}/v1/models/housing:explain"
    auth = "".join(
        f" -H '{name.title()}: {value}'" for name, value in headers.items() if name != "content-type"
    )
    curl = f"curl -s -H 'Content-Type: application/json'{auth} {url}"
    print(f"\nwhy (explainer):\n  {curl} \\\n    -d '{body}'")
    try:
        response = httpx.post(url, content=body, headers=headers, timeout=10.0)
        response.raise_for_status()
    except httpx.HTTPError as error:
        raise RuntimeError(f"the example explanation failed: {error}") from error
    (item,) = response.json()["explanations"]
    factors = item["contributions"]
    top = ", ".join(
        f"{name} x{factors[name]['factor']:.2f}"
        if "factor" in factors[name]
        else f"{name} {factors[name]['contribution']:+.2f}"
        for name in item["ranked"][:3]
    )
    print(f"explanation: base value {item['base_value']:.2f}, largest effects {top}", flush=True)


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
