"""The four Grafana dashboards of the housing service, written as code.

``python -m monitoring`` writes them to ``helm/housing-kserve/dashboards/*.json``, where the Helm chart ships
them as ConfigMaps for Grafana's dashboard sidecar. The JSON is committed; a test checks that it is what this
module generates, so edit the dashboards here and regenerate.

Every dashboard has a ``datasource`` variable (any Prometheus) and a ``namespace`` variable (where the
InferenceService runs; ``local`` for ``housing up --monitoring``), and every query filters on it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DASHBOARD_DIR = Path(__file__).resolve().parents[1] / "helm" / "housing-kserve" / "dashboards"
TAG = "housing-kserve"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
COMPONENTS = 'component=~"predictor|transformer|detector"'
NS = 'namespace=~"$namespace"'
SERVING = f'{NS}, endpoint=~"$endpoint"'
CONTAINERS = f'{NS}, container=~"kserve-container|detector"'


@dataclass(frozen=True)
class Query:
    """One PromQL query of a panel."""

    expr: str
    legend: str = ""
    instant: bool = False
    table: bool = False


@dataclass(frozen=True)
class Panel:
    """One panel: a title, what it shows (description), its queries and how to draw them."""

    title: str
    description: str
    queries: tuple[Query, ...]
    kind: str = "timeseries"
    unit: str = "short"
    width: int = 12
    height: int = 8
    thresholds: tuple[tuple[float, str], ...] = ()
    options: dict[str, Any] = field(default_factory=dict)


def alerts(series: str = "ALERTS", **matchers: str) -> str:
    """A selector of the housing alerts in ``$namespace``, e.g. ``alerts(alertstate="firing")``.

    Alerts raised by ``absent(...)`` carry no namespace label, so the empty namespace matches too.
    """
    extra = "".join(f', {name}="{value}"' for name, value in matchers.items())
    return f'{series}{{alertname=~"Housing.*", namespace=~"$namespace|"{extra}}}'


def query(expr: str, legend: str = "", **kwargs: Any) -> tuple[Query, ...]:
    """A one-query tuple, the common case."""
    return (Query(expr, legend, **kwargs),)


def quantiles(metric: str, selector: str, by: str) -> tuple[Query, ...]:
    """p50, p95 and p99 of a histogram, one series per value of the label ``by``."""
    return tuple(
        Query(
            f"histogram_quantile({q}, sum by ({by}, le) "
            f"(rate({metric}_bucket{{{selector}}}[$__rate_interval])))",
            f"p{round(q * 100)} {{{{{by}}}}}",
        )
        for q in (0.5, 0.95, 0.99)
    )


def error_ratio(selector: str, by: str = "") -> str:
    """The 5xx share of requests: 0, not "no data", while requests arrive and none fails."""
    group = f"sum by ({by})" if by else "sum"
    total = f"{group} (rate(housing_requests_total{{{selector}}}[$__rate_interval]))"
    errors = f'{group} (rate(housing_requests_total{{{selector}, code=~"5.."}}[$__rate_interval]))'
    return f"({errors} or {total} * 0) / {total}"


def system_overview() -> list[Panel]:
    """Is everything up, how busy is it, what does it cost in CPU, memory and network."""
    return [
        Panel(
            "Components up",
            "Scrape targets answering, per component (0 = down).",
            query(f"sum by (component) (up{{{NS}, {COMPONENTS}}})", "{{component}}", instant=True),
            kind="stat",
            width=8,
            height=5,
            thresholds=((0, "red"), (1, "green")),
        ),
        Panel(
            "Requests per second",
            "All requests reaching the transformers (the service's front door).",
            query(
                f'sum(rate(housing_requests_total{{{NS}, component="transformer"}}[$__rate_interval]))',
                "req/s",
            ),
            kind="stat",
            unit="reqps",
            width=4,
            height=5,
        ),
        Panel(
            "Server error ratio",
            "Share of requests answered with a 5xx status, all components (alert: > 5%).",
            query(error_ratio(NS), "5xx"),
            kind="stat",
            unit="percentunit",
            width=4,
            height=5,
            thresholds=((0, "green"), (0.01, "orange"), (0.05, "red")),
        ),
        Panel(
            "Alerts firing",
            "Housing alerts firing now; details on the Alerting dashboard.",
            query(f"count({alerts(alertstate='firing')}) or vector(0)", "firing", instant=True),
            kind="stat",
            width=4,
            height=5,
            thresholds=((0, "green"), (1, "red")),
        ),
        Panel(
            "Model versions served",
            "Model version and artifact digest per predictor endpoint.",
            query(
                f"max by (endpoint, model_version, sha256) (housing_model_info{{{NS}}})",
                "{{endpoint}} v{{model_version}}",
                instant=True,
                table=True,
            ),
            kind="table",
            width=4,
            height=5,
        ),
        Panel(
            "Request rate by component",
            "Requests per second each component serves.",
            query(
                f"sum by (component, endpoint) (rate(housing_requests_total{{{NS}}}[$__rate_interval]))",
                "{{component}} {{endpoint}}",
            ),
            unit="reqps",
        ),
        Panel(
            "p95 latency by component",
            "95th percentile of the whole-request duration (alert: > 500 ms).",
            query(
                f"histogram_quantile(0.95, sum by (component, le) "
                f"(rate(housing_request_duration_seconds_bucket{{{NS}}}[$__rate_interval])))",
                "{{component}}",
            ),
            unit="s",
            thresholds=((0, "green"), (0.5, "red")),
        ),
        Panel(
            "Resident memory per process",
            "Memory each server process holds (prometheus-client process "
            "metrics; also available without Kubernetes).",
            query(f"process_resident_memory_bytes{{{NS}, {COMPONENTS}}}", "{{component}} {{instance}}"),
            unit="bytes",
        ),
        Panel(
            "CPU per process",
            "CPU cores each server process uses.",
            query(
                f"rate(process_cpu_seconds_total{{{NS}, {COMPONENTS}}}[$__rate_interval])",
                "{{component}} {{instance}}",
            ),
            unit="percentunit",
        ),
        Panel(
            "Container memory / limit (AKS)",
            "Working set over the container's memory limit, from cAdvisor "
            "and kube-state-metrics (alert: > 80%). Empty outside Kubernetes.",
            query(
                f"max by (pod, container) (container_memory_working_set_bytes{{{CONTAINERS}}}) / "
                "max by (pod, container) "
                f'(kube_pod_container_resource_limits{{{CONTAINERS}, resource="memory"}})',
                "{{pod}}/{{container}}",
            ),
            unit="percentunit",
            thresholds=((0, "green"), (0.8, "red")),
        ),
        Panel(
            "Container CPU (AKS)",
            "CPU cores each container uses, from cAdvisor. Empty outside Kubernetes.",
            query(
                f"sum by (pod, container) (rate(container_cpu_usage_seconds_total{{{CONTAINERS}}}"
                f"[$__rate_interval]))",
                "{{pod}}/{{container}}",
            ),
            unit="short",
        ),
        Panel(
            "Network I/O (AKS)",
            "Bytes per second received (+) and sent (-) by the service's pods, from "
            "cAdvisor. Empty outside Kubernetes.",
            (
                Query(
                    f"sum by (pod) (rate(container_network_receive_bytes_total{{{NS}, "
                    f'pod=~".*(predictor|transformer|detector).*"}}[$__rate_interval]))',
                    "{{pod}} in",
                ),
                Query(
                    f"-sum by (pod) (rate(container_network_transmit_bytes_total{{{NS}, "
                    f'pod=~".*(predictor|transformer|detector).*"}}[$__rate_interval]))',
                    "{{pod}} out",
                ),
            ),
            unit="Bps",
        ),
        Panel(
            "Disk I/O (AKS)",
            "Bytes per second written by the service's containers (the detector's state "
            "directory), from cAdvisor. Empty outside Kubernetes.",
            query(
                f"sum by (pod, container) (rate(container_fs_writes_bytes_total{{{CONTAINERS}}}"
                f"[$__rate_interval]))",
                "{{pod}}/{{container}}",
            ),
            unit="Bps",
        ),
    ]


def api_performance() -> list[Panel]:
    """Request rate, latency percentiles and errors, per component and per endpoint (default/canary)."""
    return [
        Panel(
            "Request rate by component and endpoint",
            "Requests per second, per component and endpoint.",
            query(
                f"sum by (component, endpoint) (rate(housing_requests_total{{{SERVING}}}[$__rate_interval]))",
                "{{component}} {{endpoint}}",
            ),
            unit="reqps",
        ),
        Panel(
            "Responses by status code",
            "Responses per second by HTTP status (gRPC mapped to HTTP).",
            query(
                f"sum by (component, code) (rate(housing_requests_total{{{SERVING}}}[$__rate_interval]))",
                "{{component}} {{code}}",
            ),
            unit="reqps",
        ),
        Panel(
            "Transformer latency",
            "Whole-request duration at the transformer: p50, p95, p99 per endpoint.",
            quantiles("housing_request_duration_seconds", f'{SERVING}, component="transformer"', "endpoint"),
            unit="s",
            thresholds=((0, "green"), (0.5, "red")),
        ),
        Panel(
            "Predictor latency",
            "Whole-request duration at the predictor: p50, p95, p99 per endpoint.",
            quantiles("housing_request_duration_seconds", f'{SERVING}, component="predictor"', "endpoint"),
            unit="s",
            thresholds=((0, "green"), (0.5, "red")),
        ),
        Panel(
            "Server error ratio by component and endpoint",
            "5xx share of requests (alert: > 5% for 5 min).",
            query(error_ratio(SERVING, by="component, endpoint"), "{{component}} {{endpoint}}"),
            unit="percentunit",
            thresholds=((0, "green"), (0.05, "red")),
        ),
        Panel(
            "Client errors (4xx) by code",
            "Rejected requests per second: bad payloads, unknown models.",
            query(
                f'sum by (component, endpoint, code) (rate(housing_requests_total{{{SERVING}, code=~"4.."}}'
                f"[$__rate_interval]))",
                "{{component}} {{endpoint}} {{code}}",
            ),
            unit="reqps",
        ),
        Panel(
            "KServe stage latency (p95)",
            "KServe's own histograms: time in preprocess, predict and postprocess per component.",
            tuple(
                Query(
                    f"histogram_quantile(0.95, sum by (component, le) "
                    f"(rate(request_{stage}_seconds_bucket{{{SERVING}}}[$__rate_interval])))",
                    f"{stage} {{{{component}}}}",
                )
                for stage in ("preprocess", "predict", "postprocess")
            ),
            unit="s",
        ),
        Panel(
            "Rows per request",
            "Average batch size (instances per request).",
            query(
                f"sum by (component) (rate(housing_batch_rows_sum{{{SERVING}}}[$__rate_interval])) / "
                f"sum by (component) (rate(housing_batch_rows_count{{{SERVING}}}[$__rate_interval]))",
                "{{component}}",
            ),
        ),
        Panel(
            "Validation errors by field and rule",
            "Inputs the transformer rejected, by feature and rule.",
            query(
                f"sum by (field, rule) (rate(housing_validation_errors_total{{{NS}}}[$__rate_interval]))",
                "{{field}}: {{rule}}",
            ),
            unit="reqps",
        ),
        Panel(
            "Transformer -> predictor failures",
            "Calls from the transformer to the predictor that failed, "
            "by reason (unavailable, timeout, error).",
            query(
                f"sum by (reason) (rate(housing_predictor_errors_total{{{NS}}}[$__rate_interval]))",
                "{{reason}}",
            ),
            unit="reqps",
        ),
    ]


def model_monitoring() -> list[Panel]:
    """What the model predicts, whether its inputs drift, how accurate it is against ground truth."""
    return [
        Panel(
            "Model version",
            "Model version and artifact digest served per endpoint.",
            query(
                f"max by (endpoint, model_version, sha256) (housing_model_info{{{SERVING}}})",
                "{{endpoint}} v{{model_version}}",
                instant=True,
                table=True,
            ),
            kind="table",
            width=8,
            height=5,
        ),
        Panel(
            "Drift detected",
            "1 when the last window tested drifted, per endpoint and model version.",
            query(
                f"max by (endpoint, model_version) (housing_drift_detected{{{SERVING}}})",
                "{{endpoint}} v{{model_version}}",
                instant=True,
            ),
            kind="stat",
            width=8,
            height=5,
            thresholds=((0, "green"), (1, "red")),
        ),
        Panel(
            "Live R²",
            "Coefficient of determination against ground truth (alert: < 0.8).",
            query(
                f"min by (endpoint, model_version) (housing_live_r2{{{SERVING}}})",
                "{{endpoint}} v{{model_version}}",
                instant=True,
            ),
            kind="stat",
            unit="none",
            width=8,
            height=5,
            thresholds=((0, "red"), (0.8, "green")),
        ),
        Panel(
            "Prediction distribution",
            "Predicted median home values (USD 1000s), per histogram bucket.",
            query(
                f"sum by (le) (increase(housing_predicted_value_bucket{{{SERVING}}}[$__rate_interval]))",
                "{{le}}",
            ),
            kind="heatmap",
            options={"calculate": False, "yAxis": {"unit": "short"}},
        ),
        Panel(
            "Mean prediction",
            "Average predicted value per endpoint (USD 1000s).",
            query(
                f"sum by (endpoint) (rate(housing_predicted_value_sum{{{SERVING}}}[$__rate_interval])) / "
                f"sum by (endpoint) (rate(housing_predicted_value_count{{{SERVING}}}[$__rate_interval]))",
                "{{endpoint}}",
            ),
        ),
        Panel(
            "Drift score",
            "The detector's drift score per endpoint (alert: > 0.3).",
            query(
                f"max by (endpoint, model_version) (housing_drift_score{{{SERVING}}})",
                "{{endpoint}} v{{model_version}}",
            ),
            thresholds=((0, "green"), (0.3, "red")),
        ),
        Panel(
            "Drift score per feature",
            "Per-feature drift score of the last window tested (Jensen-Shannon distance).",
            query(f"max by (feature) (housing_feature_drift_score{{{SERVING}}})", "{{feature}}"),
        ),
        Panel(
            "Feature p-values",
            "Per-feature KS (chi-squared for chas) p-value: low means the distribution changed.",
            query(f"min by (feature) (housing_feature_drift_p_value{{{SERVING}}})", "{{feature}}"),
        ),
        Panel(
            "Population stability index",
            "PSI per feature (> 0.2 is usually read as a major shift).",
            query(f"max by (feature) (housing_feature_psi{{{SERVING}}})", "{{feature}}"),
            thresholds=((0, "green"), (0.1, "orange"), (0.2, "red")),
        ),
        Panel(
            "Jensen-Shannon distance",
            "JS distance per feature between reference and live window.",
            query(f"max by (feature) (housing_feature_js_distance{{{SERVING}}})", "{{feature}}"),
        ),
        Panel(
            "Prediction drift",
            "Drift of the predicted values: statistic and p-value per endpoint.",
            (
                Query(
                    f"max by (endpoint) (housing_prediction_drift_score{{{SERVING}}})", "score {{endpoint}}"
                ),
                Query(
                    f"min by (endpoint) (housing_prediction_drift_p_value{{{SERVING}}})",
                    "p-value {{endpoint}}",
                ),
            ),
        ),
        Panel(
            "Live accuracy",
            "R², MAE and RMSE against ground truth (USD 1000s for the errors).",
            (
                Query(f"min by (endpoint) (housing_live_r2{{{SERVING}}})", "R² {{endpoint}}"),
                Query(f"max by (endpoint) (housing_live_mae{{{SERVING}}})", "MAE {{endpoint}}"),
                Query(f"max by (endpoint) (housing_live_rmse{{{SERVING}}})", "RMSE {{endpoint}}"),
            ),
        ),
        Panel(
            "Detector window",
            "Rows in the current window, labelled rows, and windows tested per minute.",
            (
                Query(f"max by (endpoint) (housing_window_rows{{{SERVING}}})", "rows {{endpoint}}"),
                Query(f"max by (endpoint) (housing_live_labels{{{SERVING}}})", "labels {{endpoint}}"),
                Query(
                    "sum by (endpoint) "
                    f"(rate(housing_windows_tested_total{{{SERVING}}}[$__rate_interval])) * 60",
                    "windows/min {{endpoint}}",
                ),
            ),
        ),
        Panel(
            "Detector events",
            "CloudEvents the detector received, by type and outcome.",
            query(
                f"sum by (type, outcome) (rate(housing_detector_events_total{{{NS}}}[$__rate_interval]))",
                "{{type}} {{outcome}}",
            ),
            unit="reqps",
        ),
        Panel(
            "Request-logger events",
            "Events the request loggers sent, dropped or failed to send.",
            query(
                f"sum by (component, outcome) (rate(housing_logger_events_total{{{NS}}}[$__rate_interval]))",
                "{{component}} {{outcome}}",
            ),
            unit="reqps",
        ),
        Panel(
            "Retrains triggered",
            "Retraining triggered by drift or low accuracy in the dashboard's time range.",
            query(
                f"sum(increase(housing_retrains_triggered_total{{{NS}}}[$__range])) or vector(0)",
                "retrains",
                instant=True,
            ),
            kind="stat",
        ),
    ]


def alerting() -> list[Panel]:
    """Which alerts fire or wait, since when, and their history (the ALERTS series)."""
    return [
        Panel(
            "Firing",
            "Housing alerts firing now.",
            query(f"count({alerts(alertstate='firing')}) or vector(0)", instant=True),
            kind="stat",
            width=6,
            height=5,
            thresholds=((0, "green"), (1, "red")),
        ),
        Panel(
            "Pending",
            "Housing alerts whose condition holds but not yet for their `for:` duration.",
            query(f"count({alerts(alertstate='pending')}) or vector(0)", instant=True),
            kind="stat",
            width=6,
            height=5,
            thresholds=((0, "green"), (1, "orange")),
        ),
        Panel(
            "Critical firing",
            "Critical alerts firing now (component down, high error rate).",
            query(f"count({alerts(alertstate='firing', severity='critical')}) or vector(0)", instant=True),
            kind="stat",
            width=6,
            height=5,
            thresholds=((0, "green"), (1, "red")),
        ),
        Panel(
            "Active for",
            "How long each active alert's condition has held.",
            query(
                f"time() - {alerts('ALERTS_FOR_STATE')}",
                "{{alertname}} {{component}} {{endpoint}}",
                instant=True,
            ),
            kind="stat",
            unit="s",
            width=6,
            height=5,
        ),
        Panel(
            "Active alerts",
            "Every pending or firing housing alert with its labels (see docs/monitoring.md "
            "for the runbook of each).",
            query(alerts(), instant=True, table=True),
            kind="table",
            width=24,
        ),
        Panel(
            "Alert history",
            "State of each alert over time: pending, then firing.",
            query(f"max by (alertname, alertstate) ({alerts()})", "{{alertname}} {{alertstate}}"),
            kind="state-timeline",
            width=24,
        ),
    ]


DASHBOARDS = {
    "system-overview": ("Housing / System Overview", system_overview),
    "api-performance": ("Housing / API Performance", api_performance),
    "model-monitoring": ("Housing / Model Monitoring", model_monitoring),
    "alerting": ("Housing / Alerting", alerting),
}
"""File stem (and dashboard uid suffix) -> (title, panel builder)."""


def variables(with_endpoint: bool) -> list[dict[str, Any]]:
    """The template variables: datasource, namespace and (for serving dashboards) endpoint."""
    result: list[dict[str, Any]] = [
        {
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "current": {},
            "hide": 0,
            "refresh": 1,
            "regex": "",
            "options": [],
        },
        {
            "name": "namespace",
            "label": "Namespace",
            "type": "query",
            "datasource": DATASOURCE,
            "query": {"query": f"label_values(up{{{COMPONENTS}}}, namespace)", "refId": "namespace"},
            "definition": f"label_values(up{{{COMPONENTS}}}, namespace)",
            "current": {},
            "hide": 0,
            "refresh": 2,
            "sort": 1,
            "multi": False,
            "includeAll": False,
            "options": [],
        },
    ]
    if with_endpoint:
        result.append(
            {
                "name": "endpoint",
                "label": "Endpoint",
                "type": "custom",
                "query": "default,canary",
                "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
                "hide": 0,
                "multi": True,
                "includeAll": True,
                "allValue": ".*",
                "options": [
                    {"selected": True, "text": "All", "value": "$__all"},
                    {"selected": False, "text": "default", "value": "default"},
                    {"selected": False, "text": "canary", "value": "canary"},
                ],
            }
        )
    return result


def panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    """The Grafana JSON of one panel at grid position (x, y)."""
    targets = []
    for index, item in enumerate(panel.queries):
        target: dict[str, Any] = {
            "refId": chr(ord("A") + index),
            "datasource": DATASOURCE,
            "expr": item.expr,
            "legendFormat": item.legend,
            "range": not item.instant,
            "instant": item.instant,
        }
        if item.table:
            target["format"] = "table"
        elif panel.kind == "heatmap":
            target["format"] = "heatmap"
        targets.append(target)
    defaults: dict[str, Any] = {"unit": panel.unit}
    if panel.thresholds:
        defaults["thresholds"] = {
            "mode": "absolute",
            "steps": [
                {"color": color, "value": None if index == 0 else value}
                for index, (value, color) in enumerate(panel.thresholds)
            ],
        }
        if panel.kind == "timeseries":
            defaults["custom"] = {"thresholdsStyle": {"mode": "line"}}
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": panel.options,
    }


def dashboard(stem: str) -> dict[str, Any]:
    """The Grafana dashboard JSON for ``stem`` (a key of :data:`DASHBOARDS`)."""
    title, build = DASHBOARDS[stem]
    panels, x, y, row_height = [], 0, 0, 0
    for panel_id, panel in enumerate(build(), start=1):
        if x + panel.width > 24:  # wrap to the next row of the 24-column grid
            x, y, row_height = 0, y + row_height, 0
        panels.append(panel_json(panel, panel_id, x, y))
        x, row_height = x + panel.width, max(row_height, panel.height)
    return {
        "uid": f"housing-{stem}",
        "title": title,
        "tags": [TAG],
        "description": (build.__doc__ or "").strip(),
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "timezone": "browser",
        "links": [
            {
                "type": "dashboards",
                "tags": [TAG],
                "asDropdown": True,
                "title": "Housing dashboards",
                "includeVars": True,
                "keepTime": True,
            }
        ],
        "annotations": {"list": []},
        "templating": {"list": variables(with_endpoint=stem not in ("system-overview", "alerting"))},
        "panels": panels,
    }


def render(stem: str) -> str:
    """The committed file content of one dashboard (stable key order, trailing newline)."""
    return json.dumps(dashboard(stem), indent=2, ensure_ascii=False) + "\n"


def write(directory: Path = DASHBOARD_DIR) -> list[Path]:
    """Write every dashboard to ``directory``; returns the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for stem in DASHBOARDS:
        path = directory / f"{stem}.json"
        path.write_text(render(stem), encoding="utf-8")
        paths.append(path)
    return paths
