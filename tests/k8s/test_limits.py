"""Issue 26 on the cluster: the servers' input limits in the chart's values are the policy table's
(serving/policy.py, docs/security.md "Every route"), may only tighten it, and reach the servers as written.

The defaults are compared with the table itself, so the two cannot drift; the rendered flags are read back by
each server's own parser (tests/k8s/servers.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from serving import policy
from tests.k8s import servers
from tests.k8s.conftest import CHART, Render, parse, render

COMPONENTS = ("transformer", "predictor", "explainer", "detector")
# The route whose rows the --max_batch_rows flag bounds (the payload code reads the same row from the table).
ROWS_ROUTE = {
    "transformer": "/v2/models/{name}/infer",
    "predictor": "/v2/models/{name}/infer",
    "explainer": "/v1/models/{name}:explain",
}


def values() -> dict[str, Any]:
    return yaml.safe_load((CHART / "values.yaml").read_text())  # type: ignore[no-any-return]


def schema_limits(component: str) -> dict[str, Any]:
    schema = json.loads((CHART / "values.schema.json").read_text())
    return schema["definitions"][f"{component}Limits"]["properties"]  # type: ignore[no-any-return]


def largest(component: str, attribute: str) -> float:
    routes = [route for route in policy.http_routes(component) if route.limits.body_bytes]
    return max(getattr(route.limits, attribute) for route in routes)


def test_the_defaults_are_the_policy_table() -> None:
    """One value per flag: the header limit is the table's; the row limits are each component's row route's;
    the body bytes and seconds are per route in the table, so the chart's default is none (each route keeps
    its own: a single number would loosen /predict's 16 KiB to a batch's 1 MiB)."""
    defaults = values()
    for component in COMPONENTS:
        limits = defaults[component]["limits"]
        assert limits["maxHeaderBytes"] == policy.HEADER_BYTES, component
        assert limits["maxBodyBytes"] is None and limits["maxBodySeconds"] is None, component
        if component in ROWS_ROUTE:
            assert limits["maxBatchRows"] == policy.rows_limit(component, ROWS_ROUTE[component]), component


def test_the_schema_lets_a_value_only_tighten_the_table() -> None:
    """values.schema.json's maxima are the table's largest per component: raising a limit past what the
    threat model reviewed means changing serving/policy.py (and docs/security.md), not a value."""
    for component in COMPONENTS:
        limits = schema_limits(component)
        assert limits["maxBodyBytes"]["maximum"] == largest(component, "body_bytes"), component
        assert limits["maxBodySeconds"]["maximum"] == largest(component, "body_seconds"), component
        assert limits["maxHeaderBytes"]["maximum"] == policy.HEADER_BYTES, component
        if component in ROWS_ROUTE:
            assert limits["maxBatchRows"]["maximum"] == policy.rows_limit(component, ROWS_ROUTE[component])


def test_every_route_keeps_its_limits_on_the_cluster(renders: dict[str, Render]) -> None:
    """The default render, read by each server's parser: every route of the table gets its own bytes and
    seconds, the headers and rows their limits; the detector takes events of the transformer's batch size."""
    rendered = renders["defaults"]
    for component in COMPONENTS:
        parsed = servers.parse(rendered, component)
        settings = parsed.edge
        assert settings.request_limits and settings.max_header_bytes == policy.HEADER_BYTES
        for route in policy.http_routes(component):
            assert settings.body_bytes(route) == route.limits.body_bytes, (component, route.path)
            assert settings.body_seconds(route) == route.limits.body_seconds, (component, route.path)
        if component in ROWS_ROUTE:
            assert parsed.max_batch_rows == policy.rows_limit(component, ROWS_ROUTE[component])
    detector = servers.parse(rendered, "detector")
    assert detector.max_rows == servers.parse(rendered, "transformer").max_batch_rows
    assert detector.max_rows == policy.rows_limit("detector", "/")


@pytest.fixture(scope="module")
def tightened(tmp_path_factory: pytest.TempPathFactory) -> Render:
    limits = {"maxBodyBytes": 65536, "maxBodySeconds": 2.5, "maxHeaderBytes": 4096}
    given = {
        "transformer": {"limits": {**limits, "maxBatchRows": 100}},
        "predictor": {"limits": {**limits, "maxBatchRows": 256}},
        "explainer": {"limits": {**limits, "maxBatchRows": 100}},
        "detector": {"limits": {**limits, "maxInFlightPerClient": 4}},
    }
    completed = render(given, tmp_path_factory.mktemp("tightened"), "tightened")
    assert completed.returncode == 0, completed.stderr
    return Render("tightened", completed.stdout, parse(completed.stdout))


def test_tightened_values_reach_every_server(tightened: Render) -> None:
    one_house = policy.route("transformer", "POST", "/predict")
    for component in COMPONENTS:
        parsed = servers.parse(tightened, component)
        settings = parsed.edge
        batch = policy.route(
            component, "POST", "/events" if component == "detector" else "/v2/models/{name}/infer"
        )
        assert settings.body_bytes(batch) == 65536 and settings.body_seconds(batch) == 2.5, component
        assert settings.max_header_bytes == 4096, component
        if component in ROWS_ROUTE:
            assert parsed.max_batch_rows == (256 if component == "predictor" else 100), component
    assert servers.edge(tightened, "transformer").body_bytes(one_house) == 65536  # the flag is one number
    assert servers.parse(tightened, "detector").max_rows == 100
    assert servers.edge(tightened, "detector").max_in_flight_per_client == 4


BAD_LIMITS: list[tuple[str, dict[str, Any], str]] = [
    (
        "a body above the table",
        {"transformer": {"limits": {"maxBodyBytes": 2 * policy.MIB}}},
        "transformer.limits.maxBodyBytes: Must be less than or equal to 1.048576e+06",
    ),
    (
        "more rows than the table",
        {"explainer": {"limits": {"maxBatchRows": 5000}}},
        "explainer.limits.maxBatchRows: Must be less than or equal to 1000",
    ),
    (
        "a predictor narrower than the transformer's batches",
        {"predictor": {"limits": {"maxBatchRows": 200}}, "transformer": {"limits": {"maxBatchRows": 100}}},
        "predictor.limits.maxBatchRows (200) is below what the transformer sends it",
    ),
    (
        "an explainer narrower than the transformer",
        {"explainer": {"limits": {"maxBatchRows": 10}}},
        "explainer.limits.maxBatchRows (10) is below transformer.limits.maxBatchRows (1000)",
    ),
    (
        "a header limit no JWT fits",
        {"detector": {"limits": {"maxHeaderBytes": 100}}},
        "detector.limits.maxHeaderBytes: Must be greater than or equal to 1024",
    ),
]


@pytest.mark.parametrize(
    ("given", "message"), [(v, m) for _, v, m in BAD_LIMITS], ids=[n for n, _, _ in BAD_LIMITS]
)
def test_limits_that_cannot_work_are_refused(given: dict[str, Any], message: str, tmp_path: Path) -> None:
    result = render(given, tmp_path, "bad-limits")
    assert result.returncode != 0, result.stdout[:300]
    assert message in result.stderr, result.stderr


def test_the_predictor_takes_the_transformers_merged_batches(tmp_path: Path) -> None:
    """The transformer merges waiting requests into predictor calls of up to COALESCE_ROWS rows
    (transformer/batching.py), whatever its own row limit: the predictor must take that many."""
    from transformer.batching import COALESCE_ROWS

    def given(rows: int) -> dict[str, Any]:
        return {"transformer": {"limits": {"maxBatchRows": 10}}, "explainer": {"limits": {"maxBatchRows":
        10}},
                "predictor": {"limits": {"maxBatchRows": rows}}}  # fmt: skip

    assert render(given(COALESCE_ROWS), tmp_path, "enough").returncode == 0
    refused = render(given(COALESCE_ROWS - 1), tmp_path, "short")
    assert refused.returncode != 0 and f"merged up to {COALESCE_ROWS} rows" in refused.stderr
