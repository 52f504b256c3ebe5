"""Proven live: the real stack, a real Prometheus with THE rules, normal then shifted traffic, then an outage.

Predictor, transformer (sending inference events to the detector, as it does on AKS) and detector
run as real processes; Prometheus scrapes them every second and evaluates the shipped rules with every
duration divided by 60 (``for: 5m`` becomes 5 s; the expressions and thresholds are unchanged).

The tests run in file order and share the stack: normal traffic first, then shifted traffic, then the
predictor is stopped.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from benchmarks import soak
from housing.processes import Service, free_port, python_service, wait_until
from housing.prometheus import PrometheusServer, Target, start_prometheus
from monitoring.traffic import PREDICT_PATH, houses, targets, v1_body
from tests.conftest import ROOT, require_tool
from tests.observability.conftest import dashboard_queries, rules

pytestmark = pytest.mark.slow

WINDOW = 50  # the detector tests a window every 50 rows
# Metrics that exist only on Kubernetes, or only after something goes wrong / an alert is active.
NO_LOCAL_DATA = re.compile(r"container_|kube_|ALERTS|housing_predictor_errors_total")


@dataclass
class Live:
    """The running stack and its Prometheus."""

    services: dict[str, Service]
    urls: dict[str, str]
    prometheus: PrometheusServer

    def predict(self, rows: list[dict[str, float]], request_id: str | None = None) -> httpx.Response:
        headers = {"x-request-id": request_id} if request_id else {}
        return httpx.post(f"{self.urls['transformer']}{PREDICT_PATH}", json=v1_body(rows), headers=headers,
                          timeout=10.0)  # fmt: skip

    def alert_states(self, name: str) -> set[str]:
        return {alert["state"] for alert in self.prometheus.alerts() if alert["labels"]["alertname"] == name}


def send(live: Live, rows: list[dict[str, float]], seconds: float) -> list[httpx.Response]:
    """Send ``rows`` one request each (plus a batch of 5 every 10th), spread over at least ``seconds``."""
    began, responses = time.monotonic(), []
    for index, row in enumerate(rows):
        responses.append(live.predict([row] if index % 10 else [row, *random.sample(rows, 4)]))
        time.sleep(max(0.0, began + seconds * (index + 1) / len(rows) - time.monotonic()))
    return responses


@pytest.fixture(scope="module")
def live(artifact_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    require_tool("prometheus")
    logs = tmp_path_factory.mktemp("live")
    ports = {name: free_port() for name in ("predictor", "transformer", "detector")}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    services = {
        "detector": python_service("detector", [
            "-m", "detector", "--storage_uri", str(artifact_dir), "--http_port", str(ports["detector"]),
            "--host", "127.0.0.1", "--state_dir", str(logs / "state"), "--window_size", str(WINDOW),
        ], logs),
        "predictor": python_service("predictor", [
            "-m", "predictor", "--model_name", "housing", "--storage_uri", str(artifact_dir),
            "--http_port", str(ports["predictor"]), "--grpc_port", str(free_port()),
        ], logs),
        "transformer": python_service("transformer", [
            "-m", "transformer", "--model_name", "housing", "--protocol", "v2",
            "--predictor_host", f"127.0.0.1:{ports['predictor']}", "--http_port", str(ports["transformer"]),
            "--grpc_port", str(free_port()), "--logger_url", urls["detector"],
        ], logs),
    }  # fmt: skip
    prometheus = None
    try:
        for service in services.values():
            service.start()
        for name, service in services.items():
            service.wait_ready(f"{urls[name]}/v2/health/ready", timeout=120)
        targets_ = [Target(name, url.removeprefix("http://")) for name, url in urls.items()]
        prometheus = start_prometheus(
            logs / "prometheus", targets_, free_port(), scrape_interval="1s", shorten_by=60
        )
        yield Live(services, urls, prometheus)
    finally:
        if prometheus is not None:
            prometheus.stop()
        for service in services.values():
            service.stop()


def test_normal_traffic_fills_every_service_panel_and_raises_no_drift(live: Live) -> None:
    random.seed(7)
    normal = houses()
    order = random.sample(range(len(normal)), 3 * WINDOW)
    for index in order[:40]:  # predictions with ground truth sent back, for live accuracy
        assert live.predict([normal[index]], request_id=f"house-{index}").status_code == 200
    truth = targets()

    def joined() -> float:  # the request logger sends in batches, up to 50 ms after the answer
        text = httpx.get(f"{live.urls['detector']}/metrics", timeout=10.0).text
        return sum(float(line.split()[-1]) for line in text.splitlines()
                   if line.startswith("housing_detector_inferences_total{"))  # fmt: skip

    wait_until(lambda: joined() >= 40, timeout=20, what="the 40 labelled predictions joined at the detector")
    labels = [{"id": f"house-{index}", "value": truth[index]} for index in order[:40]]
    feedback = httpx.post(f"{live.urls['detector']}/feedback", json={"labels": labels}, timeout=10.0)
    assert feedback.status_code == 200 and feedback.json()["accepted"] == 40, feedback.text
    invalid = live.predict([{**normal[0], "lstat": 150.0}])
    assert invalid.status_code == 400 and "lstat" in invalid.text
    responses = send(live, [normal[index] for index in order[40:]], seconds=8)
    assert {response.status_code for response in responses} == {200}
    for component in ("predictor", "transformer", "detector"):
        wait_until(lambda c=component: live.prometheus.query(f'up{{component="{c}"}} == 1'), timeout=20,
                   what=f"{component} scraped")  # fmt: skip
    wait_until(lambda: live.prometheus.query("housing_windows_tested_total > 1"), timeout=20,
               what="the detector testing windows of normal traffic")  # fmt: skip

    refused, empty = [], []
    for uid, title, expr in dashboard_queries():
        try:
            result = live.prometheus.query(expr)
        except ValueError as error:
            refused.append(f"{uid} / {title}: {error}")
            continue
        if not result and not NO_LOCAL_DATA.search(expr):
            empty.append(f"{uid} / {title}: {expr}")
    for rule in rules():
        try:
            live.prometheus.query(rule["expr"])
        except ValueError as error:
            refused.append(f"alert {rule['alert']}: {error}")
    assert not refused, "Prometheus refused:\n" + "\n".join(refused)
    assert not empty, "no data for:\n" + "\n".join(empty)

    (r2,) = live.prometheus.query("housing_live_r2")
    assert float(r2["value"][1]) > 0.8
    (score,) = live.prometheus.query("housing_drift_score")
    assert float(score["value"][1]) <= 0.3, "normal traffic must not look like drift"
    assert "HousingModelDrift" not in {a["labels"]["alertname"] for a in live.prometheus.alerts()}


def test_locustfile_runs_headless_against_the_stack(live: Live, tmp_path: Path) -> None:
    """The load-test file works (a few seconds, 4 users; no timing asserted)."""
    locust = require_tool("locust")
    result = subprocess.run(
        [locust, "-f", str(ROOT / "monitoring" / "locustfile.py"), "--headless",
         "--host", live.urls["transformer"], "--users", "4", "--spawn-rate", "4", "--run-time", "4s",
         "--json", "--only-summary", "--loglevel", "WARNING"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    stats = {entry["name"]: entry for entry in json.loads(result.stdout)}
    assert set(stats) == {"predict 1", "predict 10", "invalid (expect 400)"}
    assert all(entry["num_requests"] > 0 and entry["num_failures"] == 0 for entry in stats.values()), stats


def test_soak_load_generator_and_memory_probe_work_against_the_stack(live: Live, tmp_path: Path) -> None:
    """The soak benchmark's parts, for two seconds (figures come from ``./dev bench soak``): wrk
    cycling through a file of bodies (a malformed body would be a 400, an error here), the merged figures,
    the memory probe."""
    require_tool("wrk")
    require_tool("taskset")
    rows = random.Random(3).sample(houses(), 50)
    bodies = soak.write_bodies(tmp_path / "bodies.jsonl", [v1_body([row]) for row in rows])
    assert len(bodies.read_text().splitlines()) == 50
    result = soak.load("smoke", f"{live.urls['transformer']}{PREDICT_PATH}", bodies, 4, 2)
    assert result.requests > 50 and result.errors == 0, result
    assert 0 < result.p50_ms <= result.p95_ms <= result.p99_ms
    both = soak.combined("both", [result, result])
    assert both.requests == 2 * result.requests
    assert both.requests_per_second == pytest.approx(result.requests_per_second, rel=0.01)
    assert "original system" in soak.table([result]) and "smoke" in soak.table([result])
    for service in live.services.values():
        assert service.process is not None and soak.resident_bytes(service.process.pid) > 10 * 2**20


def test_shifted_traffic_makes_the_drift_alert_pend_then_fire(live: Live) -> None:
    shifted = random.Random(11).sample(houses(shifted=True), WINDOW + 10)
    responses = send(live, shifted, seconds=4)
    assert {response.status_code for response in responses} == {200}  # valid inputs: only drift can tell
    seen: list[str] = []

    def firing() -> bool:
        states = live.alert_states("HousingModelDrift")
        if states and (not seen or seen[-1] != sorted(states)[0]):
            seen.append(sorted(states)[0])
        return "firing" in states

    wait_until(firing, timeout=60, interval=0.2, what="HousingModelDrift firing")
    assert seen[0] == "pending" and seen[-1] == "firing", seen
    (alert,) = [a for a in live.prometheus.alerts() if a["labels"]["alertname"] == "HousingModelDrift"]
    assert alert["labels"]["endpoint"] == "default" and alert["labels"]["namespace"] == "local"
    assert float(alert["value"]) > 0.3
    # The Alerting dashboard now has something to show.
    alerting = [expr for uid, _, expr in dashboard_queries() if uid == "housing-alerting"]
    assert all(live.prometheus.query(expr) for expr in alerting if "critical" not in expr)


def test_stopping_the_predictor_fires_the_error_rate_and_component_down_alerts(live: Live) -> None:
    live.services["predictor"].stop()
    houses_ = houses()
    statuses: set[int] = set()

    def error_rate_firing() -> bool:
        statuses.update(
            response.status_code for response in send(live, random.sample(houses_, 10), seconds=1)
        )
        return "firing" in live.alert_states("HousingHighErrorRate")

    wait_until(error_rate_firing, timeout=90, interval=0, what="HousingHighErrorRate firing")
    assert statuses and all(status >= 500 for status in statuses), statuses
    (alert,) = [a for a in live.prometheus.alerts()
                if a["labels"]["alertname"] == "HousingHighErrorRate" and a["state"] == "firing"]  # fmt: skip
    assert alert["labels"]["component"] == "transformer" and alert["labels"]["severity"] == "critical"
    wait_until(lambda: "firing" in live.alert_states("HousingComponentDown"), timeout=30,
               what="HousingComponentDown firing")  # fmt: skip
    down = {a["labels"]["component"] for a in live.prometheus.alerts()
            if a["labels"]["alertname"] == "HousingComponentDown"}  # fmt: skip
    assert down == {"predictor"}
    assert live.prometheus.query('sum(rate(housing_predictor_errors_total{reason="unavailable"}[30s])) > 0')
