"""The four Grafana dashboards of the housing service, written with Grafana's typed builders.

``python -m monitoring`` writes them to ``helm/housing-kserve/dashboards/*.json``, where the Helm chart ships
them as ConfigMaps for Grafana's dashboard sidecar. The JSON is committed; a test checks that it is what this
module generates, so edit the dashboards here and regenerate.

The builders are ``grafana-foundation-sdk``'s, which Grafana generates from its own schemas (here Grafana
11.6): a panel option, threshold step or variable setting that Grafana does not know fails mypy, and a size
off the 24-column grid fails the builder, instead of being ignored when Grafana loads the JSON. The SDK also
lays the panels out, left to right in rows.

Every dashboard has a ``datasource`` variable (any Prometheus) and a ``namespace`` variable (where the
InferenceService runs; ``local`` for ``housing up --monitoring``), and every query filters on it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from grafana_foundation_sdk.builders import (
    common,
    heatmap,
    prometheus,
    stat,
    statetimeline,
    table,
    timeseries,
)
from grafana_foundation_sdk.builders import dashboard as grafana
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import GraphThresholdsStyleMode
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DashboardLinkType,
    DataSourceRef,
    Threshold,
    ThresholdsMode,
    VariableModel,
    VariableOption,
    VariableRefresh,
    VariableSort,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

DASHBOARD_DIR = Path(__file__).resolve().parents[1] / "helm" / "housing-kserve" / "dashboards"
TAG = "housing-kserve"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
COMPONENTS = 'component=~"predictor|transformer|detector"'
NS = 'namespace=~"$namespace"'
SERVING = f'{NS}, endpoint=~"$endpoint"'
CONTAINERS = f'{NS}, container=~"kserve-container|detector"'

AnyPanel = timeseries.Panel | stat.Panel | table.Panel | heatmap.Panel | statetimeline.Panel
P = TypeVar("P", timeseries.Panel, stat.Panel, table.Panel, heatmap.Panel, statetimeline.Panel)
Query = prometheus.Dataquery
Thresholds = tuple[tuple[float, str], ...]
"""(from value, color) steps; the first is the base step, its value ignored."""


def query(expr: str, legend: str = "") -> Query:
    """A range query of the dashboard's Prometheus."""
    return prometheus.Dataquery().expr(expr).legend_format(legend).datasource(DATASOURCE).range()


def instant(expr: str, legend: str = "", as_table: bool = False) -> Query:
    """An instant query (the latest value); ``as_table`` returns the series' labels as table columns."""
    result = query(expr, legend).instant()
    return result.format(PromQueryFormat.TABLE) if as_table else result


def panel(
    builder: P,
    title: str,
    description: str,
    *queries: Query,
    unit: str = "short",
    size: tuple[int, int] = (12, 8),
    thresholds: Thresholds = (),
) -> P:
    """What every panel sets: title, description, queries (refId A, B...), unit, size (width, height)."""
    width, height = size
    builder.title(title).description(description).datasource(DATASOURCE).unit(unit).span(width).height(height)
    for ref_id, item in zip("ABCDEFGH", queries, strict=False):
        builder.with_target(item.ref_id(ref_id))
    if thresholds:
        steps = [Threshold(None if i == 0 else value, color) for i, (value, color) in enumerate(thresholds)]
        builder.thresholds(grafana.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps(steps))
    return builder


def graph(
    title: str, description: str, *queries: Query, unit: str = "short", thresholds: Thresholds = ()
) -> timeseries.Panel:
    """A time series panel (half the width); its thresholds are drawn as lines."""
    result = panel(timeseries.Panel(), title, description, *queries, unit=unit, thresholds=thresholds)
    if thresholds:
        result.thresholds_style(common.GraphThresholdsStyleConfig().mode(GraphThresholdsStyleMode.LINE))
    return result


def alerts(series: str = "ALERTS", **matchers: str) -> str:
    """A selector of the housing alerts in ``$namespace``, e.g. ``alerts(alertstate="firing")``.

    Alerts raised by ``absent(...)`` carry no namespace label, so the empty namespace matches too.
    """
    extra = "".join(f', {name}="{value}"' for name, value in matchers.items())
    return f'{series}{{alertname=~"Housing.*", namespace=~"$namespace|"{extra}}}'


def quantiles(metric: str, selector: str, by: str) -> list[Query]:
    """p50, p95 and p99 of a histogram, one series per value of the label ``by``."""
    return [
        query(
            f"histogram_quantile({q}, sum by ({by}, le) "
            f"(rate({metric}_bucket{{{selector}}}[$__rate_interval])))",
            f"p{round(q * 100)} {{{{{by}}}}}",
        )
        for q in (0.5, 0.95, 0.99)
    ]


def error_ratio(selector: str, by: str = "") -> str:
    """The 5xx share of requests: 0, not "no data", while requests arrive and none fails."""
    group = f"sum by ({by})" if by else "sum"
    total = f"{group} (rate(housing_requests_total{{{selector}}}[$__rate_interval]))"
    errors = f'{group} (rate(housing_requests_total{{{selector}, code=~"5.."}}[$__rate_interval]))'
    return f"({errors} or {total} * 0) / {total}"


def system_overview() -> list[AnyPanel]:
    """Is everything up, how busy is it, what does it cost in CPU, memory and network."""
    pods = f'{NS}, pod=~".*(predictor|transformer|detector).*"'
    return [
        panel(
            stat.Panel(),
            "Components up",
            "Scrape targets answering, per component (0 = down).",
            instant(f"sum by (component) (up{{{NS}, {COMPONENTS}}})", "{{component}}"),
            size=(8, 5),
            thresholds=((0, "red"), (1, "green")),
        ),
        panel(
            stat.Panel(),
            "Requests per second",
            "All requests reaching the transformers (the service's front door).",
            query(
                f'sum(rate(housing_requests_total{{{NS}, component="transformer"}}[$__rate_interval]))',
                "req/s",
            ),
            unit="reqps",
            size=(4, 5),
        ),
        panel(
            stat.Panel(),
            "Server error ratio",
            "Share of requests answered with a 5xx status, all components (alert: > 5%).",
            query(error_ratio(NS), "5xx"),
            unit="percentunit",
            size=(4, 5),
            thresholds=((0, "green"), (0.01, "orange"), (0.05, "red")),
        ),
        panel(
            stat.Panel(),
            "Alerts firing",
            "Housing alerts firing now; details on the Alerting dashboard.",
            instant(f"count({alerts(alertstate='firing')}) or vector(0)", "firing"),
            size=(4, 5),
            thresholds=((0, "green"), (1, "red")),
        ),
        panel(
            table.Panel(),
            "Model versions served",
            "Model version and artifact digest per predictor endpoint.",
            instant(
                f"max by (endpoint, model_version, sha256) (housing_model_info{{{NS}}})",
                "{{endpoint}} v{{model_version}}",
                as_table=True,
            ),
            size=(4, 5),
        ),
        graph(
            "Request rate by component",
            "Requests per second each component serves.",
            query(
                f"sum by (component, endpoint) (rate(housing_requests_total{{{NS}}}[$__rate_interval]))",
                "{{component}} {{endpoint}}",
            ),
            unit="reqps",
        ),
        graph(
            "p95 latency by component",
            "95th percentile of the whole-request duration (alert: > 500 ms).",
            query(
                "histogram_quantile(0.95, sum by (component, le) "
                f"(rate(housing_request_duration_seconds_bucket{{{NS}}}[$__rate_interval])))",
                "{{component}}",
            ),
            unit="s",
            thresholds=((0, "green"), (0.5, "red")),
        ),
        graph(
            "Resident memory per process",
            "Memory each server process holds (prometheus-client process metrics; also available without "
            "Kubernetes).",
            query(f"process_resident_memory_bytes{{{NS}, {COMPONENTS}}}", "{{component}} {{instance}}"),
            unit="bytes",
        ),
        graph(
            "CPU per process",
            "CPU cores each server process uses.",
            query(
                f"rate(process_cpu_seconds_total{{{NS}, {COMPONENTS}}}[$__rate_interval])",
                "{{component}} {{instance}}",
            ),
            unit="percentunit",
        ),
        graph(
            "Container memory / limit (AKS)",
            "Working set over the container's memory limit, from cAdvisor and kube-state-metrics "
            "(alert: > 80%). Empty outside Kubernetes.",
            query(
                f"max by (pod, container) (container_memory_working_set_bytes{{{CONTAINERS}}}) / "
                "max by (pod, container) "
                f'(kube_pod_container_resource_limits{{{CONTAINERS}, resource="memory"}})',
                "{{pod}}/{{container}}",
            ),
            unit="percentunit",
            thresholds=((0, "green"), (0.8, "red")),
        ),
        graph(
            "Container CPU (AKS)",
            "CPU cores each container uses, from cAdvisor. Empty outside Kubernetes.",
            query(
                f"sum by (pod, container) (rate(container_cpu_usage_seconds_total{{{CONTAINERS}}}"
                "[$__rate_interval]))",
                "{{pod}}/{{container}}",
            ),
        ),
        graph(
            "Network I/O (AKS)",
            "Bytes per second received (+) and sent (-) by the service's pods, from cAdvisor. "
            "Empty outside Kubernetes.",
            query(
                f"sum by (pod) (rate(container_network_receive_bytes_total{{{pods}}}[$__rate_interval]))",
                "{{pod}} in",
            ),
            query(
                f"-sum by (pod) (rate(container_network_transmit_bytes_total{{{pods}}}[$__rate_interval]))",
                "{{pod}} out",
            ),
            unit="Bps",
        ),
        graph(
            "Disk I/O (AKS)",
            "Bytes per second written by the service's containers (the detector's state directory), from "
            "cAdvisor. Empty outside Kubernetes.",
            query(
                f"sum by (pod, container) (rate(container_fs_writes_bytes_total{{{CONTAINERS}}}"
                "[$__rate_interval]))",
                "{{pod}}/{{container}}",
            ),
            unit="Bps",
        ),
    ]


def api_performance() -> list[AnyPanel]:
    """Request rate, latency percentiles and errors, per component and per endpoint (default/canary)."""
    return [
        graph(
            "Request rate by component and endpoint",
            "Requests per second, per component and endpoint.",
            query(
                f"sum by (component, endpoint) (rate(housing_requests_total{{{SERVING}}}[$__rate_interval]))",
                "{{component}} {{endpoint}}",
            ),
            unit="reqps",
        ),
        graph(
            "Responses by status code",
            "Responses per second by HTTP status (gRPC mapped to HTTP).",
            query(
                f"sum by (component, code) (rate(housing_requests_total{{{SERVING}}}[$__rate_interval]))",
                "{{component}} {{code}}",
            ),
            unit="reqps",
        ),
        *(
            graph(
                f"{name.capitalize()} latency",
                f"Whole-request duration at the {name}: p50, p95, p99 per endpoint.",
                *quantiles("housing_request_duration_seconds", f'{SERVING}, component="{name}"', "endpoint"),
                unit="s",
                thresholds=((0, "green"), (0.5, "red")),
            )
            for name in ("transformer", "predictor")
        ),
        graph(
            "Server error ratio by component and endpoint",
            "5xx share of requests (alert: > 5% for 5 min).",
            query(error_ratio(SERVING, by="component, endpoint"), "{{component}} {{endpoint}}"),
            unit="percentunit",
            thresholds=((0, "green"), (0.05, "red")),
        ),
        graph(
            "Client errors (4xx) by code",
            "Rejected requests per second: bad payloads, unknown models.",
            query(
                f'sum by (component, endpoint, code) (rate(housing_requests_total{{{SERVING}, code=~"4.."}}'
                "[$__rate_interval]))",
                "{{component}} {{endpoint}} {{code}}",
            ),
            unit="reqps",
        ),
        graph(
            "KServe stage latency (p95)",
            "KServe's own histograms: time in preprocess, predict and postprocess per component.",
            *(
                query(
                    "histogram_quantile(0.95, sum by (component, le) "
                    f"(rate(request_{stage}_seconds_bucket{{{SERVING}}}[$__rate_interval])))",
                    f"{stage} {{{{component}}}}",
                )
                for stage in ("preprocess", "predict", "postprocess")
            ),
            unit="s",
        ),
        graph(
            "Rows per request",
            "Average batch size (instances per request).",
            query(
                f"sum by (component) (rate(housing_batch_rows_sum{{{SERVING}}}[$__rate_interval])) / "
                f"sum by (component) (rate(housing_batch_rows_count{{{SERVING}}}[$__rate_interval]))",
                "{{component}}",
            ),
        ),
        graph(
            "Validation errors by field and rule",
            "Inputs the transformer rejected, by feature and rule.",
            query(
                f"sum by (field, rule) (rate(housing_validation_errors_total{{{NS}}}[$__rate_interval]))",
                "{{field}}: {{rule}}",
            ),
            unit="reqps",
        ),
        graph(
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


def rate_by_endpoint(metric: str, matcher: str = "") -> str:
    """``sum by (endpoint) (rate(METRIC{...}))``: summed over every pod (transformer or detector replica)."""
    selector = f"{SERVING}, {matcher}" if matcher else SERVING
    return f"sum by (endpoint) (rate({metric}{{{selector}}}[$__rate_interval]))"


def model_monitoring() -> list[AnyPanel]:
    """What the model predicts, whether its inputs drift, how accurate it is against ground truth."""
    per_version = "{{endpoint}} v{{model_version}}"
    return [
        panel(
            table.Panel(),
            "Model version",
            "Model version and artifact digest served per endpoint.",
            instant(
                f"max by (endpoint, model_version, sha256) (housing_model_info{{{SERVING}}})",
                per_version,
                as_table=True,
            ),
            size=(8, 5),
        ),
        panel(
            stat.Panel(),
            "Drift detected",
            "1 when the last window tested drifted, per endpoint and model version.",
            instant(f"max by (endpoint, model_version) (housing_drift_detected{{{SERVING}}})", per_version),
            size=(8, 5),
            thresholds=((0, "green"), (1, "red")),
        ),
        panel(
            stat.Panel(),
            "Live R²",
            "Coefficient of determination against ground truth (alert: < 0.8).",
            instant(f"min by (endpoint, model_version) (housing_live_r2{{{SERVING}}})", per_version),
            unit="none",
            size=(8, 5),
            thresholds=((0, "red"), (0.8, "green")),
        ),
        panel(
            heatmap.Panel(),
            "Prediction distribution",
            "Predicted median home values (USD 1000s), per histogram bucket.",
            query(
                f"sum by (le) (increase(housing_predicted_value_bucket{{{SERVING}}}[$__rate_interval]))",
                "{{le}}",
            ).format(PromQueryFormat.HEATMAP),
        )
        .calculate(False)
        .y_axis(heatmap.YAxisConfig().unit("short")),
        graph(
            "Mean prediction",
            "Average predicted value per endpoint (USD 1000s).",
            query(
                f"sum by (endpoint) (rate(housing_predicted_value_sum{{{SERVING}}}[$__rate_interval])) / "
                f"sum by (endpoint) (rate(housing_predicted_value_count{{{SERVING}}}[$__rate_interval]))",
                "{{endpoint}}",
            ),
        ),
        graph(
            "Drift score",
            "The detector's drift score per endpoint (alert: > 0.3).",
            query(f"max by (endpoint, model_version) (housing_drift_score{{{SERVING}}})", per_version),
            thresholds=((0, "green"), (0.3, "red")),
        ),
        graph(
            "Drift score per feature",
            "Per-feature drift score of the last window tested (Jensen-Shannon distance).",
            query(f"max by (feature) (housing_feature_drift_score{{{SERVING}}})", "{{feature}}"),
        ),
        graph(
            "Feature p-values",
            "Per-feature KS (chi-squared for chas) p-value: low means the distribution changed.",
            query(f"min by (feature) (housing_feature_drift_p_value{{{SERVING}}})", "{{feature}}"),
        ),
        graph(
            "Population stability index",
            "PSI per feature (> 0.2 is usually read as a major shift).",
            query(f"max by (feature) (housing_feature_psi{{{SERVING}}})", "{{feature}}"),
            thresholds=((0, "green"), (0.1, "orange"), (0.2, "red")),
        ),
        graph(
            "Jensen-Shannon distance",
            "JS distance per feature between reference and live window.",
            query(f"max by (feature) (housing_feature_js_distance{{{SERVING}}})", "{{feature}}"),
        ),
        graph(
            "Prediction drift",
            "Drift of the predicted values: statistic and p-value per endpoint.",
            query(f"max by (endpoint) (housing_prediction_drift_score{{{SERVING}}})", "score {{endpoint}}"),
            query(
                f"min by (endpoint) (housing_prediction_drift_p_value{{{SERVING}}})", "p-value {{endpoint}}"
            ),
        ),
        graph(
            "Live accuracy",
            "R², MAE and RMSE against ground truth (USD 1000s for the errors).",
            query(f"min by (endpoint) (housing_live_r2{{{SERVING}}})", "R² {{endpoint}}"),
            query(f"max by (endpoint) (housing_live_mae{{{SERVING}}})", "MAE {{endpoint}}"),
            query(f"max by (endpoint) (housing_live_rmse{{{SERVING}}})", "RMSE {{endpoint}}"),
        ),
        graph(
            "Detector window",
            "Rows in the current window, labelled rows, and windows tested per minute.",
            query(f"max by (endpoint) (housing_window_rows{{{SERVING}}})", "rows {{endpoint}}"),
            query(f"max by (endpoint) (housing_live_labels{{{SERVING}}})", "labels {{endpoint}}"),
            query(
                f"sum by (endpoint) (rate(housing_windows_tested_total{{{SERVING}}}[$__rate_interval])) * 60",
                "windows/min {{endpoint}}",
            ),
        ),
        graph(
            "Detector events",
            "CloudEvents the detector received, by type and outcome.",
            query(
                f"sum by (type, outcome) (rate(housing_detector_events_total{{{NS}}}[$__rate_interval]))",
                "{{type}} {{outcome}}",
            ),
            unit="reqps",
        ),
        graph(
            "Request-logger events",
            "Events the request loggers sent, dropped or failed to send.",
            query(
                f"sum by (component, outcome) (rate(housing_logger_events_total{{{NS}}}[$__rate_interval]))",
                "{{component}} {{outcome}}",
            ),
            unit="reqps",
        ),
        graph(
            "Inference-log delivery",
            "Share of each endpoint's inferences delivered to the drift detector: as the request loggers "
            "count it (delivered / offered, all transformer pods) and as the detectors estimate it from the "
            "events' sampling rate (seen / (seen + unseen), all replicas). Alert below 99%: "
            "HousingInferenceLogDeliveryLow.",
            query(
                rate_by_endpoint("housing_logger_inferences_total", 'outcome="delivered"')
                + " / "
                + rate_by_endpoint("housing_logger_inferences_total", 'outcome="offered"'),
                "logger {{endpoint}}",
            ),
            query(
                f"{rate_by_endpoint('housing_detector_inferences_total')} / "
                f"({rate_by_endpoint('housing_detector_inferences_total')} + "
                f"{rate_by_endpoint('housing_events_unseen_total')})",
                "detector estimate {{endpoint}}",
            ),
            unit="percentunit",
            thresholds=((0, "red"), (0.99, "green")),
        ),
        panel(
            stat.Panel(),
            "Retrains triggered",
            "Retraining triggered by drift or low accuracy in the dashboard's time range.",
            instant(
                f"sum(increase(housing_retrains_triggered_total{{{NS}}}[$__range])) or vector(0)", "retrains"
            ),
        ),
    ]


def alerting() -> list[AnyPanel]:
    """Which alerts fire or wait, since when, and their history (the ALERTS series)."""
    return [
        panel(
            stat.Panel(),
            "Firing",
            "Housing alerts firing now.",
            instant(f"count({alerts(alertstate='firing')}) or vector(0)"),
            size=(6, 5),
            thresholds=((0, "green"), (1, "red")),
        ),
        panel(
            stat.Panel(),
            "Pending",
            "Housing alerts whose condition holds but not yet for their `for:` duration.",
            instant(f"count({alerts(alertstate='pending')}) or vector(0)"),
            size=(6, 5),
            thresholds=((0, "green"), (1, "orange")),
        ),
        panel(
            stat.Panel(),
            "Critical firing",
            "Critical alerts firing now (component down, high error rate).",
            instant(f"count({alerts(alertstate='firing', severity='critical')}) or vector(0)"),
            size=(6, 5),
            thresholds=((0, "green"), (1, "red")),
        ),
        panel(
            stat.Panel(),
            "Active for",
            "How long each active alert's condition has held.",
            instant(f"time() - {alerts('ALERTS_FOR_STATE')}", "{{alertname}} {{component}} {{endpoint}}"),
            unit="s",
            size=(6, 5),
        ),
        panel(
            table.Panel(),
            "Active alerts",
            "Every pending or firing housing alert with its labels "
            "(see docs/monitoring.md for the runbook of each).",
            instant(alerts(), as_table=True),
            size=(24, 8),
        ),
        panel(
            statetimeline.Panel(),
            "Alert history",
            "State of each alert over time: pending, then firing.",
            query(f"max by (alertname, alertstate) ({alerts()})", "{{alertname}} {{alertstate}}"),
            size=(24, 8),
        ),
    ]


DASHBOARDS: dict[str, tuple[str, Callable[[], list[AnyPanel]]]] = {
    "system-overview": ("Housing / System Overview", system_overview),
    "api-performance": ("Housing / API Performance", api_performance),
    "model-monitoring": ("Housing / Model Monitoring", model_monitoring),
    "alerting": ("Housing / Alerting", alerting),
}
"""File stem (and dashboard uid suffix) -> (title, panel builder)."""


def variables(with_endpoint: bool) -> list[Builder[VariableModel]]:
    """The template variables: datasource, namespace and (for serving dashboards) endpoint."""
    namespaces = f"label_values(up{{{COMPONENTS}}}, namespace)"
    result: list[Builder[VariableModel]] = [
        grafana.DatasourceVariable("datasource").label("Data source").type("prometheus"),
        grafana.QueryVariable("namespace")
        .label("Namespace")
        .datasource(DATASOURCE)
        .query({"query": namespaces, "refId": "namespace"})
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC),
    ]
    if with_endpoint:
        result.append(
            grafana.CustomVariable("endpoint")
            .label("Endpoint")
            .values("default,canary")
            .multi(True)
            .include_all(True)
            .all_value(".*")
            .current(VariableOption(selected=True, text=["All"], value=["$__all"]))
            .options(
                [
                    VariableOption(selected=True, text="All", value="$__all"),
                    VariableOption(selected=False, text="default", value="default"),
                    VariableOption(selected=False, text="canary", value="canary"),
                ]
            )
        )
    return result


def dashboard(stem: str) -> dict[str, Any]:
    """The Grafana dashboard JSON for ``stem`` (a key of :data:`DASHBOARDS`)."""
    title, build = DASHBOARDS[stem]
    board = (
        grafana.Dashboard(title)
        .uid(f"housing-{stem}")
        .tags([TAG])
        .description((build.__doc__ or "").strip())
        .editable()
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .version(1)
        .refresh("30s")
        .time("now-1h", "now")
        .timezone("browser")
        .link(
            grafana.DashboardLink("Housing dashboards")
            .type(DashboardLinkType.DASHBOARDS)
            .tags([TAG])
            .as_dropdown(True)
            .include_vars(True)
            .keep_time(True)
        )
        .variables(variables(with_endpoint=stem not in ("system-overview", "alerting")))
    )
    for panel_id, item in enumerate(build(), start=1):
        board.with_panel(item.id(panel_id))  # the SDK places each panel right of the last, wrapping at 24
    result: dict[str, Any] = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    return result


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
