"""The Grafana dashboards: generated, committed up to date, with the variables users need."""

from __future__ import annotations

import json
import re

import pytest

from monitoring import dashboards
from monitoring.__main__ import main as monitoring_main
from tests.observability.conftest import dashboard_queries

ORIGINAL_DASHBOARDS = {"System Overview", "API Performance", "Model Monitoring", "Alerting"}


@pytest.mark.parametrize("stem", list(dashboards.DASHBOARDS))
def test_committed_dashboard_is_what_the_generator_makes(stem: str) -> None:
    path = dashboards.DASHBOARD_DIR / f"{stem}.json"
    assert path.exists(), f"{path} missing: run python -m monitoring"
    assert path.read_text(encoding="utf-8") == dashboards.render(stem), (
        f"{path} is stale: run python -m monitoring"
    )


def test_generator_writes_files_that_check_mode_then_accepts(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(dashboards, "DASHBOARD_DIR", tmp_path)
    written = dashboards.write(tmp_path)
    assert sorted(path.name for path in written) == sorted(f"{stem}.json" for stem in dashboards.DASHBOARDS)
    assert monitoring_main(["--check"]) == 0
    (tmp_path / "alerting.json").write_text("{}")
    assert monitoring_main(["--check"]) == 1
    (tmp_path / "alerting.json").unlink()
    assert monitoring_main(["--check"]) == 1


def test_the_four_dashboards_of_the_original_system() -> None:
    titles = {
        json.loads(dashboards.render(stem))["title"].removeprefix("Housing / ")
        for stem in dashboards.DASHBOARDS
    }
    assert titles == ORIGINAL_DASHBOARDS


@pytest.mark.parametrize("stem", list(dashboards.DASHBOARDS))
def test_dashboard_has_datasource_and_namespace_variables_used_by_every_panel(stem: str) -> None:
    board = dashboards.dashboard(stem)
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    assert (
        variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    )
    assert variables["namespace"]["datasource"]["uid"] == "${datasource}"
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert "$namespace" in target["expr"], f"{panel['title']}: query ignores the namespace variable"
        x, width = panel["gridPos"]["x"], panel["gridPos"]["w"]
        assert x >= 0 and x + width <= 24, panel["title"]


def test_api_performance_shows_percentiles_per_component_and_endpoint() -> None:
    exprs = [expr for uid, _, expr in dashboard_queries() if uid == "housing-api-performance"]
    for quantile in ("0.5", "0.95", "0.99"):
        assert any(re.search(rf"histogram_quantile\({quantile}, sum by \(endpoint, le\)", e) for e in exprs)
    assert any("sum by (component, code)" in expr for expr in exprs)
    assert any("sum by (component, endpoint)" in expr for expr in exprs)
