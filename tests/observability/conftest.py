"""Fixtures for the observability tests: the rules, the dashboards' queries and a real Prometheus."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from housing.processes import free_port
from housing.prometheus import RULES_FILE, PrometheusServer, Target, start_prometheus
from monitoring import dashboards
from tests.conftest import ROOT, require_tool

PROMTOOL_TESTS = sorted((ROOT / "monitoring" / "tests").glob("*.yaml"))
# What Grafana puts in place of the template variables, for a Prometheus that has run a minute or so.
VARIABLES = {"$__rate_interval": "30s", "$__range": "5m", "$namespace": "local", "$endpoint": ".*"}


def substitute(expr: str) -> str:
    """A dashboard query with its template variables replaced as Grafana would."""
    for name in sorted(VARIABLES, key=len, reverse=True):  # $__range before a shorter prefix could match
        expr = expr.replace(name, VARIABLES[name])
    return expr


def rules() -> list[dict[str, Any]]:
    """Every alerting rule of THE rules file."""
    groups = yaml.safe_load(RULES_FILE.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def dashboard_queries() -> list[tuple[str, str, str]]:
    """(dashboard uid, panel title, query with variables substituted) for every panel target."""
    return [
        (board["uid"], panel["title"], substitute(target["expr"]))
        for board in map(dashboards.dashboard, dashboards.DASHBOARDS)
        for panel in board["panels"]
        for target in panel["targets"]
    ]


@pytest.fixture
def prometheus_server(tmp_path: Path) -> Iterator[Callable[..., PrometheusServer]]:
    """Start real Prometheus servers (1 s scrape and evaluation); all are stopped after the test."""
    require_tool("prometheus")
    started: list[PrometheusServer] = []

    def start(targets: list[Target], **kwargs: Any) -> PrometheusServer:
        server = start_prometheus(
            tmp_path / f"prometheus-{len(started)}", targets, free_port(), scrape_interval="1s", **kwargs
        )
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
