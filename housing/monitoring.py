"""A real Prometheus beside the local stack: its configuration, the alert rules it loads, and the process.

``housing up --monitoring`` uses :func:`start_prometheus` with the services the stack started; the live
observability test does the same with a copy of the rules whose durations :func:`shorten_durations` cut, so
that alerts go pending and fire within seconds. The rules are THE rules file the Helm chart ships
(``helm/housing-kserve/files/prometheus-rules.yaml``); only the scrape configuration differs from AKS.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from housing.stack import ServiceSpec, Stack

ROOT = Path(__file__).resolve().parents[1]
RULES_FILE = ROOT / "helm" / "housing-kserve" / "files" / "prometheus-rules.yaml"
COMPONENTS = ("predictor", "transformer", "detector")
LOCAL_NAMESPACE = "local"
"""The ``namespace`` label of every local target: the dashboards' namespace variable works off Kubernetes."""

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Target:
    """One service for Prometheus to scrape.

    Attributes:
        component: ``predictor``, ``transformer`` or ``detector``.
        address: ``host:port`` of its HTTP server (``/metrics`` is scraped).
        endpoint: ``default`` or ``canary``.
    """

    component: str
    address: str
    endpoint: str = "default"


def prometheus_config(
    targets: list[Target],
    rule_files: list[Path],
    scrape_interval: str = "5s",
    evaluation_interval: str = "5s",
    namespace: str = LOCAL_NAMESPACE,
) -> dict[str, Any]:
    """The Prometheus configuration that scrapes ``targets`` and evaluates ``rule_files``.

    Args:
        targets: The services to scrape; each gets the labels ``component``, ``endpoint`` and ``namespace``.
        rule_files: Rule files to load (absolute paths).
        scrape_interval: How often each target is scraped (a Prometheus duration such as ``1s``).
        evaluation_interval: How often the rules are evaluated.
        namespace: The value of the ``namespace`` label (on AKS Prometheus sets it from the pod).

    Returns:
        The configuration as a mapping; JSON is valid YAML, so ``json.dumps`` of it is a valid config file.
    """
    return {
        "global": {
            "scrape_interval": scrape_interval,
            "evaluation_interval": evaluation_interval,
            "scrape_timeout": scrape_interval,
        },
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": [
            {
                "job_name": "housing",
                # A service's own labels win over the target's: the detector reports drift per endpoint of the
                # traffic it analyses (label endpoint), which must not become `exported_endpoint`.
                "honor_labels": True,
                "static_configs": [
                    {
                        "targets": [target.address],
                        "labels": {
                            "component": target.component,
                            "endpoint": target.endpoint,
                            "namespace": namespace,
                        },
                    }
                    for target in targets
                ],
            }
        ],
    }


def seconds(duration: str) -> float:
    """A Prometheus duration (``90s``, ``5m``, ``1h30m``) in seconds."""
    parts = _DURATION.findall(duration)
    if not parts or "".join(number + unit for number, unit in parts) != duration:
        raise ValueError(f"not a Prometheus duration: {duration!r}")
    return sum(int(number) * _UNITS[unit] for number, unit in parts)


def shorten_durations(rules_text: str, factor: float = 60.0, floor: float = 5.0) -> str:
    """A copy of a rule file with every ``for:`` and range-selector duration divided by ``factor``.

    Used to watch alerts go pending and fire in seconds instead of minutes; the expressions and thresholds
    stay exactly as shipped.

    Args:
        rules_text: The rule file's text.
        factor: What to divide each duration by (60: minutes become seconds).
        floor: The shortest result in seconds: a range must span at least two scrapes for ``rate`` to work.

    Returns:
        The rewritten text.
    """

    def short(duration: str) -> str:
        return f"{max(round(seconds(duration) / factor), round(floor))}s"

    text = re.sub(
        r"^(\s*for:\s*)(\S+)\s*$", lambda m: m.group(1) + short(m.group(2)), rules_text, flags=re.MULTILINE
    )
    return re.sub(r"\[(\d+[smhdwy](?:\d+[smhdwy])*)\]", lambda m: f"[{short(m.group(1))}]", text)


@dataclass
class Prometheus:
    """A running Prometheus server started by :func:`start_prometheus`."""

    url: str
    config_file: Path
    process: subprocess.Popen[bytes]
    log_file: IO[bytes]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Evaluate an instant PromQL query; ``ValueError`` with Prometheus's message if it is refused."""
        import httpx

        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10.0)
        body = response.json()
        if body.get("status") != "success":
            raise ValueError(f"{body.get('errorType')}: {body.get('error')} in {expr!r}")
        return list(body["data"]["result"])

    def alerts(self) -> list[dict[str, Any]]:
        """The active (pending or firing) alerts, as ``/api/v1/alerts`` reports them."""
        import httpx

        return list(httpx.get(f"{self.url}/api/v1/alerts", timeout=10.0).json()["data"]["alerts"])

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout`` seconds)."""
        from housing.stack import stop_process

        stop_process(self.process, timeout)
        self.log_file.close()


def configure(parser: argparse.ArgumentParser) -> None:
    """Declare ``housing up``'s monitoring options (``--monitoring``, ``--prometheus-port``)."""
    parser.add_argument(
        "--monitoring",
        action="store_true",
        help="also start Prometheus, scraping every service and evaluating the Helm chart's alert rules",
    )
    parser.add_argument(
        "--prometheus-port", type=int, default=9090, help="Prometheus web/API port (default: %(default)s)"
    )


def write_config(
    directory: Path,
    targets: list[Target],
    rules: Path = RULES_FILE,
    scrape_interval: str = "5s",
    shorten_by: float | None = None,
) -> Path:
    """Write ``prometheus.yml`` and the rules copy it loads into ``directory``; returns the config path.

    Args:
        directory: Where the files go (created if needed).
        targets: The services to scrape.
        rules: The rule file (checked with ``promtool check rules`` when promtool exists).
        scrape_interval: Scrape and rule evaluation interval.
        shorten_by: When set, the copy's durations are divided by this (see :func:`shorten_durations`); for
            demonstrations and tests only.
    """
    directory.mkdir(parents=True, exist_ok=True)
    rules_copy = directory / "prometheus-rules.yaml"
    text = rules.read_text(encoding="utf-8")
    rules_copy.write_text(shorten_durations(text, shorten_by) if shorten_by else text, encoding="utf-8")
    check_rules(rules_copy)
    config_file = directory / "prometheus.yml"
    config = prometheus_config(targets, [rules_copy], scrape_interval, scrape_interval)
    config_file.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return config_file


def prometheus_command(config_file: Path, port: int) -> list[str]:
    """The Prometheus command line for ``config_file`` (its TSDB in ``data/`` beside it) on 127.0.0.1."""
    binary = shutil.which("prometheus")
    if binary is None:
        raise RuntimeError("prometheus is not installed (./dev setup installs the Debian package)")
    return [
        binary,
        f"--config.file={config_file}",
        f"--storage.tsdb.path={config_file.parent / 'data'}",
        "--storage.tsdb.retention.time=1d",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.format=logfmt",
    ]


def start_in_stack(stack: Stack, specs: list[ServiceSpec], args: argparse.Namespace) -> str:
    """``housing up --monitoring``: start Prometheus as one more process of the local stack; returns its URL.

    Every service of ``specs`` named like a component (predictor, transformer, detector) is scraped every 5 s;
    the stack stops Prometheus with the rest.
    """
    from housing.stack import HOST, ServiceSpec

    targets = [Target(spec.name, f"{HOST}:{spec.http_port}") for spec in specs if spec.name in COMPONENTS]
    config_file = write_config(stack.log_dir / "prometheus", targets)
    command = prometheus_command(config_file, args.prometheus_port)
    spec = ServiceSpec("prometheus", command, args.prometheus_port, ready_path="/-/ready")
    stack.start(spec)
    stack.wait_ready(spec, args.ready_timeout)
    print(
        f"prometheus: {spec.url} (alerts: {spec.url}/alerts; scraping "
        f"{', '.join(target.component for target in targets)} every 5 s; config {config_file})",
        flush=True,
    )
    return spec.url


def start_prometheus(
    directory: Path,
    targets: list[Target],
    port: int,
    rules: Path = RULES_FILE,
    scrape_interval: str = "5s",
    shorten_by: float | None = None,
    timeout: float = 30.0,
) -> Prometheus:
    """Write the configuration under ``directory`` and start Prometheus on ``127.0.0.1:port`` (for tests).

    Args:
        directory: Where the configuration, rules copy, TSDB and log go (created if needed).
        targets: The services to scrape.
        port: The port of Prometheus's web UI and API.
        rules: The rule file to load.
        scrape_interval: Scrape and rule evaluation interval.
        shorten_by: When set, load a copy of the rules with durations divided by this.
        timeout: Seconds to wait for ``/-/ready``.

    Returns:
        The running server; call :meth:`Prometheus.stop` when done.

    Raises:
        RuntimeError: Prometheus is not installed, refused the configuration or did not become ready.
    """
    import httpx

    config_file = write_config(directory, targets, rules, scrape_interval, shorten_by)
    command = prometheus_command(config_file, port)
    log_path = directory / "prometheus.log"
    log_file = open(log_path, "ab")  # noqa: SIM115 - stays open for the server's lifetime, closed by stop()
    process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=dict(os.environ))
    server = Prometheus(f"http://127.0.0.1:{port}", config_file, process, log_file)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            server.stop()
            raise RuntimeError(
                f"prometheus exited with {process.returncode}:\n{log_path.read_text()[-4000:]}"
            )
        try:
            if httpx.get(f"{server.url}/-/ready", timeout=1.0).status_code == 200:
                log.info(
                    "prometheus ready url=%s config=%s targets=%d", server.url, config_file, len(targets)
                )
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"prometheus not ready within {timeout:.0f} s:\n{log_path.read_text()[-4000:]}")


def check_rules(path: Path) -> None:
    """Run ``promtool check rules`` on ``path`` if promtool is installed; ``RuntimeError`` if it fails."""
    promtool = shutil.which("promtool")
    if promtool is None:
        return
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"promtool check rules {path} failed:\n{result.stdout}{result.stderr}")
