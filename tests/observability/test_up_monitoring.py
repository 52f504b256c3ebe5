"""``housing up --monitoring``: the local stack plus a real Prometheus scraping it, with the shipped rules."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from housing.processes import free_port, http_ok, python_service, wait_until
from housing.prometheus import RULES_FILE, PrometheusClient
from tests.conftest import require_tool

pytestmark = pytest.mark.slow


def test_housing_up_monitoring_starts_prometheus_scraping_the_stack(
    artifact_dir: Path, tmp_path: Path
) -> None:
    require_tool("prometheus")
    port = free_port()
    ports = [str(free_port()) for _ in range(5)]
    up = python_service("housing-up", [
        "-m", "housing", "up", "--monitoring", "--prometheus-port", str(port),
        "--artifact", str(artifact_dir), "--log-dir", str(tmp_path / "stack"),
        "--predictor-port", ports[0], "--predictor-grpc-port", ports[1],
        "--transformer-port", ports[2], "--transformer-grpc-port", ports[3], "--detector-port", ports[4],
    ], tmp_path, env={"HOUSING_VAR_DIR": str(tmp_path / "var")}).start()  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: f"prometheus: {url}" in up.log(), timeout=120, what="housing up printing Prometheus's URL"
        )

        def scraped() -> set[str]:
            return {labels.get("component", "") for labels in PrometheusClient(url).targets_up()}

        wait_until(
            lambda: {"predictor", "transformer", "detector"} <= scraped(),
            timeout=30,
            what="every service scraped",
        )
        rules = httpx.get(f"{url}/api/v1/rules", timeout=5).json()["data"]["groups"]
        assert {rule["name"] for group in rules for rule in group["rules"]} >= {"HousingHighErrorRate"}
        config = json.loads((tmp_path / "stack" / "prometheus" / "prometheus.yml").read_text())
        assert config["global"]["scrape_interval"] == "5s"
        assert (
            tmp_path / "stack" / "prometheus" / "prometheus-rules.yaml"
        ).read_text() == RULES_FILE.read_text()
    finally:
        up.stop()
    assert up.process is not None and up.process.returncode == 0, up.log()
    with pytest.raises(httpx.HTTPError):
        http_ok(f"{url}/-/ready")  # stopped with the stack
