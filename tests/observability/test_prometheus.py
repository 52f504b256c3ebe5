"""The local Prometheus: its configuration, the shortened rules, and a real server accepting every query."""

from __future__ import annotations

import re

import httpx
import pytest
import yaml

from housing.processes import wait_until
from housing.prometheus import RULES_FILE, Target, prometheus_config, seconds, shorten_durations
from tests.observability.conftest import dashboard_queries, rules


def test_config_labels_each_target_with_component_endpoint_and_namespace(tmp_path) -> None:
    targets = [
        Target("predictor", "127.0.0.1:8080"),
        Target("predictor", "127.0.0.1:9080", "canary"),
        Target("detector", "127.0.0.1:7080"),
    ]
    config = prometheus_config(
        targets, [tmp_path / "rules.yaml"], scrape_interval="1s", evaluation_interval="1s"
    )
    assert config["global"]["scrape_interval"] == "1s" and config["global"]["evaluation_interval"] == "1s"
    assert config["rule_files"] == [str(tmp_path / "rules.yaml")]
    (job,) = config["scrape_configs"]
    assert job["honor_labels"] is True
    assert [(group["targets"], group["labels"]) for group in job["static_configs"]] == [
        (["127.0.0.1:8080"], {"component": "predictor", "endpoint": "default", "namespace": "local"}),
        (["127.0.0.1:9080"], {"component": "predictor", "endpoint": "canary", "namespace": "local"}),
        (["127.0.0.1:7080"], {"component": "detector", "endpoint": "default", "namespace": "local"}),
    ]


@pytest.mark.parametrize(
    ("duration", "expected"), [("90s", 90), ("5m", 300), ("1h30m", 5400), ("250ms", 0.25)]
)
def test_seconds_parses_prometheus_durations(duration: str, expected: float) -> None:
    assert seconds(duration) == expected


@pytest.mark.parametrize("bad", ["", "5", "m5", "5 m", "5mm"])
def test_seconds_refuses_what_is_not_a_duration(bad: str) -> None:
    with pytest.raises(ValueError, match="not a Prometheus duration"):
        seconds(bad)


def test_shortened_rules_keep_expressions_and_thresholds_but_cut_durations() -> None:
    original = yaml.safe_load(RULES_FILE.read_text())
    short = yaml.safe_load(shorten_durations(RULES_FILE.read_text(), factor=60, floor=5))
    for group, short_group in zip(original["groups"], short["groups"], strict=True):
        for rule, short_rule in zip(group["rules"], short_group["rules"], strict=True):
            assert short_rule["alert"] == rule["alert"] and short_rule["labels"] == rule["labels"]
            assert seconds(short_rule["for"]) == max(seconds(rule["for"]) / 60, 5)
            ranges = re.findall(r"\[(\w+)\]", rule["expr"])
            assert re.findall(r"\[(\w+)\]", short_rule["expr"]) == [
                f"{max(seconds(r) // 60, 5):.0f}s" for r in ranges
            ]
            assert re.sub(r"\[\w+\]", "[]", short_rule["expr"]) == re.sub(r"\[\w+\]", "[]", rule["expr"])


def test_real_prometheus_accepts_every_dashboard_query_and_alert_expression(prometheus_server) -> None:
    """No services needed: a query Prometheus refuses fails here, whatever data exists."""
    server = prometheus_server([Target("predictor", "127.0.0.1:9")], shorten_by=60)
    refused = []
    for uid, title, expr in dashboard_queries():
        try:
            server.query(expr)
        except ValueError as error:
            refused.append(f"{uid} / {title}: {error}")
    for rule in rules():
        try:
            server.query(rule["expr"])
        except ValueError as error:
            refused.append(f"alert {rule['alert']}: {error}")
    assert not refused, "\n".join(refused)
    with pytest.raises(ValueError, match="parse error"):
        server.query("sum(rate(housing_requests_total[5m])")  # the check itself can fail


def test_real_prometheus_loads_the_rules_and_sees_a_dead_target(prometheus_server) -> None:
    server = prometheus_server([Target("predictor", "127.0.0.1:9")], shorten_by=60)
    wait_until(
        lambda: any(s["value"][1] == "0" for s in server.query('up{component="predictor"}')),
        timeout=20,
        what="first scrape of the dead target",
    )
    groups = httpx.get(f"{server.url}/api/v1/rules").json()["data"]["groups"]
    loaded = {rule["name"] for group in groups for rule in group["rules"]}
    assert loaded == {rule["alert"] for rule in rules()}

    def down_firing() -> bool:
        return any(
            a["labels"]["alertname"] == "HousingComponentDown"
            and a["labels"].get("instance") == "127.0.0.1:9"
            and a["state"] == "firing"
            for a in server.alerts()
        )

    wait_until(down_firing, timeout=30, what="HousingComponentDown firing for the dead predictor")
