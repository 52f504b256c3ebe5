"""The local Prometheus: its configuration, the alert rules it loads, its process, and its HTTP API client.

``housing up --monitoring`` starts :func:`service` as one more process of its stack; the tests call
:func:`start_prometheus`, with a copy of the rules whose durations :func:`shorten_durations` cut, so that
alerts go pending and fire within seconds. The rules are THE rules file the Helm chart ships
(``helm/housing-kserve/files/prometheus-rules.yaml``); only the scrape configuration differs from AKS.
:class:`PrometheusClient` queries any Prometheus: this one, or the cluster's for ``housing rollout analyze``.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from housing.processes import HOST, ROOT, Service, wait_until

RULES_FILE = ROOT / "helm" / "housing-kserve" / "files" / "prometheus-rules.yaml"
COMPONENTS = ("predictor", "transformer", "explainer", "detector")
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
    targets: Sequence[Target],
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


class PrometheusError(Exception):
    """A Prometheus query went wrong: the server is unreachable, or it refused the query."""


class PrometheusUnreachableError(PrometheusError, ConnectionError):
    """Nothing (or no Prometheus) answered; a connection error, so that :func:`wait_until` retries."""


class QueryRefusedError(PrometheusError, ValueError):
    """Prometheus refused the query; the message is Prometheus's own (``bad_data: parse error ...``)."""


class PrometheusClient:
    """Instant queries, alerts and scrape targets over the Prometheus HTTP API.

    Args:
        url: Base URL, e.g. ``http://127.0.0.1:9090``.
        timeout: Seconds to wait for each answer.
    """

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _get(self, path: str, **params: str) -> dict[str, Any]:
        import httpx  # here, not at the top: `housing --help` imports this module and should stay fast

        try:
            body = httpx.get(f"{self.url}{path}", params=params, timeout=self.timeout).json()
        except (httpx.HTTPError, ValueError) as error:
            raise PrometheusUnreachableError(f"Prometheus at {self.url} unreachable: {error}") from error
        if not isinstance(body, dict):
            raise PrometheusUnreachableError(
                f"Prometheus at {self.url} answered {body!r}, not an API response"
            )
        return body

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The result vector of an instant PromQL query.

        Raises:
            PrometheusUnreachableError: Nothing answered (a ``ConnectionError``).
            QueryRefusedError: Prometheus refused the query (a ``ValueError``).
        """
        body = self._get("/api/v1/query", query=expr)
        if body.get("status") != "success":
            raise QueryRefusedError(
                f"Prometheus refused {expr!r}: {body.get('errorType')}: {body.get('error')}"
            )
        return list(body["data"]["result"])

    def by_endpoint(self, expr: str) -> dict[str, float]:
        """``{endpoint: value}`` of a query aggregated ``by (endpoint)``."""
        return {item["metric"].get("endpoint", ""): float(item["value"][1]) for item in self.query(expr)}

    def alerts(self) -> list[dict[str, Any]]:
        """The active (pending or firing) alerts, as ``/api/v1/alerts`` reports them."""
        return list(self._get("/api/v1/alerts")["data"]["alerts"])

    def targets_up(self) -> list[dict[str, str]]:
        """The labels of every target whose last scrape succeeded (``up == 1``)."""
        return [dict(series["metric"]) for series in self.query("up == 1")]

    def wait_for_targets(self, count: int, timeout: float = 30.0) -> None:
        """Wait until at least ``count`` targets have been scraped successfully; ``TimeoutError`` if not."""
        wait_until(lambda: len(self.targets_up()) >= count, timeout=timeout, what=f"{count} targets up")


class PrometheusServer(PrometheusClient):
    """A local Prometheus started by :func:`start_prometheus`, and a client of it."""

    def __init__(self, service: Service, config_file: Path) -> None:
        super().__init__(service.url)
        self.service = service
        self.config_file = config_file

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout`` seconds)."""
        self.service.stop(timeout)


def write_config(
    directory: Path,
    targets: Sequence[Target],
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


def service(config_file: Path, port: int) -> Service:
    """Prometheus with ``config_file`` (its TSDB in ``data/`` beside it) on 127.0.0.1, not started yet.

    Raises:
        RuntimeError: Prometheus is not installed.
    """
    binary = shutil.which("prometheus")
    if binary is None:
        raise RuntimeError("prometheus is not installed (./dev setup installs the Debian package)")
    command = [
        binary,
        f"--config.file={config_file}",
        f"--storage.tsdb.path={config_file.parent / 'data'}",
        "--storage.tsdb.retention.time=1d",
        f"--web.listen-address={HOST}:{port}",
        "--log.format=logfmt",
    ]
    return Service("prometheus", command, port, ready_path="/-/ready")


def start_prometheus(
    directory: Path,
    targets: Sequence[Target],
    port: int,
    rules: Path = RULES_FILE,
    scrape_interval: str = "5s",
    shorten_by: float | None = None,
    timeout: float = 30.0,
) -> PrometheusServer:
    """Write the configuration under ``directory`` and start Prometheus on ``127.0.0.1:port`` (for tests).

    Args:
        directory: Where the configuration, rules copy, TSDB and log (``prometheus.log``) go.
        targets: The services to scrape.
        port: The port of Prometheus's web UI and API.
        rules: The rule file to load.
        scrape_interval: Scrape and rule evaluation interval.
        shorten_by: When set, load a copy of the rules with durations divided by this.
        timeout: Seconds to wait for ``/-/ready``.

    Returns:
        The running server; call :meth:`PrometheusServer.stop` when done.

    Raises:
        RuntimeError: Prometheus is not installed, refused the configuration or exited.
        TimeoutError: It did not become ready in time.
    """
    config_file = write_config(directory, targets, rules, scrape_interval, shorten_by)
    server = service(config_file, port)
    server.log_path = directory / "prometheus.log"
    try:
        server.start().wait_ready(timeout=timeout)
    except (RuntimeError, TimeoutError):
        server.stop()
        raise
    log.info("prometheus ready url=%s config=%s targets=%d", server.url, config_file, len(targets))
    return PrometheusServer(server, config_file)


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
