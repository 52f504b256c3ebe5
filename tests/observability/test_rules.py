"""The alert rules: valid, documented, and each one unit-tested firing and quiet with promtool."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from housing.prometheus import RULES_FILE
from tests.conftest import ROOT, require_tool
from tests.observability.conftest import PROMTOOL_TESTS, rules

REQUIRED_ALERTS = {
    "HousingHighErrorRate",
    "HousingHighLatency",
    "HousingLowThroughput",
    "HousingMemoryHigh",
    "HousingModelDrift",
    "HousingLowLiveAccuracy",
    "HousingComponentDown",
    "HousingLoggerEventsDropped",
}
DOCS = ROOT / "docs" / "monitoring.md"


def test_promtool_check_rules_accepts_the_rules_file() -> None:
    promtool = require_tool("promtool")
    result = subprocess.run([promtool, "check", "rules", str(RULES_FILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    promtool = require_tool("promtool")
    assert PROMTOOL_TESTS, "no promtool tests under monitoring/tests/"
    result = subprocess.run(
        [promtool, "test", "rules", *map(str, PROMTOOL_TESTS)], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(PROMTOOL_TESTS)


def test_promtool_unit_tests_catch_a_wrong_threshold(tmp_path: Path) -> None:
    """The unit tests can fail: with the error-rate threshold at 50% the firing case no longer fires."""
    promtool = require_tool("promtool")
    broken = tmp_path / "rules.yaml"
    broken.write_text(RULES_FILE.read_text().replace("> 0.05", "> 0.5"))
    test = yaml.safe_load((ROOT / "monitoring" / "tests" / "serving.yaml").read_text())
    test["rule_files"] = [str(broken)]
    (tmp_path / "serving.yaml").write_text(yaml.safe_dump(test))
    result = subprocess.run(
        [promtool, "test", "rules", "serving.yaml"], capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode != 0
    assert "alertname: HousingHighErrorRate" in result.stdout + result.stderr


def test_the_issue_s_alerts_exist_with_severity_summary_description_and_runbook() -> None:
    alerts = {rule["alert"]: rule for rule in rules()}
    assert set(alerts) >= REQUIRED_ALERTS
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        assert rule["annotations"]["runbook_url"] == f"docs/monitoring.md#{name.lower()}", name


def test_every_alert_has_a_runbook_section_in_the_docs() -> None:
    headings = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in DOCS.read_text(encoding="utf-8").splitlines()
        if line.startswith("#")
    }
    missing = sorted(rule["alert"] for rule in rules() if rule["alert"].lower() not in headings)
    assert not missing, f"docs/monitoring.md lacks a runbook heading for {missing}"


@pytest.mark.parametrize("alert", sorted(rule["alert"] for rule in rules()))
def test_every_alert_is_unit_tested_firing_and_quiet(alert: str) -> None:
    fires = quiet = False
    for path in PROMTOOL_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                if check["alertname"] == alert:
                    fires |= bool(check.get("exp_alerts"))
                    quiet |= not check.get("exp_alerts")
    assert fires, f"no promtool test shows {alert} firing"
    assert quiet, f"no promtool test shows {alert} staying quiet"
