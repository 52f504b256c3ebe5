"""``housing up``: the serving stack on loopback, started the way the containers start it.

Each service is a ``python -m <component>`` process with the container's own arguments (see
:func:`services`); ``housing up`` waits until every one is ready, prints the URLs and
a curl example, sends one real prediction, then keeps running until Ctrl-C (SIGINT) or SIGTERM, and stops
every process it started. A component that exits meanwhile is restarted with exponential back-off (1 s,
doubling to 30 s), its exit code and last log lines printed; the stack stops only when one crash-loops (five
restarts within a minute), saying so (:class:`~housing.processes.Supervisor`).
``--once`` exits after the prediction (tests and CI).

Default ports (all on 127.0.0.1): predictor HTTP 8080 / gRPC 8081, transformer HTTP 8090 / gRPC 8091,
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
import logging
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
HELP = "Start predictor, transformer and detector on loopback, show a real prediction; Ctrl-C stops them."
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
        help="require API keys: role 'predict' on the transformer's predict and explain routes, 'feedback' "
        f"on the detector's /feedback; keys from {API_KEYS_ENV}, else generated once into var/api-keys "
        "and printed (default: off, the stack listens on loopback only)",
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
    edge = edge_flags(args)
    return [
        Service(
            "predictor",
            [python, "-m", "predictor", "--model_name", "housing", "--storage_uri", storage_uri,
             "--http_port", str(args.predictor_port), "--grpc_port", str(args.predictor_grpc_port)],
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
        ),
        *([Service(
            "explainer",
            [python, "-m", "explainer", "--model_name", "housing", "--storage_uri", storage_uri,
             *(["--expected_sha256", model_sha256] if model_sha256 else []),
             "--http_port", str(args.explainer_port), "--enable_grpc", "false"],  # :explain is REST only
            args.explainer_port,
            env=env,
        )] if explainer else []),
        *([Service(
            "detector",
            [python, "-m", "detector", "--storage_uri", storage_uri, "--host", HOST,
             "--http_port", str(args.detector_port), "--state_dir", str(var_dir() / "detector"),
             "--archive_uri", archive_uri(args), *edge],
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
    """The transformer's and the detector's edge flags for ``--auth`` and ``--rate-limit`` (serving/edge.py).

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
    """The stack's API keys: ``HOUSING_API_KEYS``, else var/api-keys, written with a new key per role once."""
    from serving.auth import parse_api_keys

    if os.environ.get(API_KEYS_ENV):
        return parse_api_keys(os.environ[API_KEYS_ENV], API_KEYS_ENV)
    path = api_keys_file()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [f"{secrets.token_urlsafe(24)}={role}" for role in ("predict", "feedback")]
        path.touch(mode=0o600)
        path.write_text("# housing up --auth: KEY=ROLE[,ROLE] (serving/auth.py)\n" + "\n".join(lines) + "\n")
    return parse_api_keys(path.read_text(), str(path))


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
    logging.getLogger("httpx").setLevel(logging.WARNING)
    stack = Stack(args.log_dir or var_dir() / "stack")
    with _stop_on_signals():
        try:
            artifact = args.artifact or latest_or_train(fast=args.fast)
            storage_uri, env = str(artifact), dict[str, str]()
            if args.azurite:
                storage_uri, env = _serve_from_azurite(stack, artifact, args.azurite_port)
            sha256 = json.loads((artifact / "model.json").read_text()).get("sha256")
            headers = _auth_headers() if args.auth else {}
            started = [
                stack.start(service) for service in services(args, storage_uri, env, model_sha256=sha256)
            ]
            for service in started:
                stack.wait_ready(service, args.ready_timeout)
                print(f"ready: {service.name} at {service.url}", flush=True)
            if args.monitoring:
                _start_prometheus(stack, started, args)
            transformer = next(service for service in started if service.name == "transformer")
            _show_prediction(transformer.url, explain=args.explainer, headers=headers)
            if args.once:
                return 0
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


def _start_prometheus(stack: Stack, started: list[Service], args: argparse.Namespace) -> None:
    """``--monitoring``: Prometheus with the chart's alert rules, scraping each component every 5 s."""
    targets = [
        prometheus.Target(service.name, f"{HOST}:{service.port}")
        for service in started
        if service.name in prometheus.COMPONENTS
    ]
    config_file = prometheus.write_config(stack.log_dir / "prometheus", targets)
    server = stack.start(prometheus.service(config_file, args.prometheus_port))
    stack.wait_ready(server, args.ready_timeout)
    print(
        f"prometheus: {server.url} (alerts: {server.url}/alerts; scraping "
        f"{', '.join(target.component for target in targets)} every 5 s; config {config_file})",
        flush=True,
    )


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
