"""``housing rollout analyze``: canary against stable in Prometheus (errors, p95 latency, predictions).

With ``--detector``, also on ground truth: the live MAE of both, by the same always-valid test as
``housing experiment analyze`` (:mod:`housing.sequential`).
"""

from __future__ import annotations

import logging
import math
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from housing.prometheus import PrometheusClient
from housing.rollout.objects import RolloutError
from serving.events import ENDPOINTS

log = logging.getLogger(__name__)


PROMOTE, ROLLBACK, INCONCLUSIVE = 0, 1, 2
VERDICTS = {PROMOTE: "promote", ROLLBACK: "roll back", INCONCLUSIVE: "inconclusive"}


@dataclass(frozen=True)
class Slo:
    """The canary's service-level objectives (defaults from the original system's promises).

    Attributes:
        max_error_rate: Largest share of requests answered with an error code (``error_codes``).
        max_p95_seconds: Largest 95th percentile of the request duration.
        max_ks_pvalue: Significance level: a prediction shift counts when the KS p-value is at most this...
        max_ks_statistic: ...and the KS distance between the binned prediction CDFs exceeds this.
        min_requests: Fewer canary requests in the window than this is "inconclusive".
        error_codes: Regex over the ``code`` label that counts as an error.
    """

    max_error_rate: float = 0.01
    max_p95_seconds: float = 0.5
    max_ks_pvalue: float = 0.01
    max_ks_statistic: float = 0.2
    min_requests: int = 20
    error_codes: str = "[45].."

    @classmethod
    def from_file(cls, path: str | Path) -> Slo:
        """Read an SLO file (YAML or JSON, keys as the attributes; flags override it).

        Raises:
            RolloutError: The file is unreadable, not a mapping, or has an unknown key or a wrong value.
        """
        import yaml  # here, not at the top: `housing --help` imports this module and should stay fast

        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as error:
            raise RolloutError(f"cannot read the SLO file {path}: {error}") from error
        if not isinstance(data, dict):
            raise RolloutError(f"{path}: an SLO file is a mapping of objective to value")
        defaults = asdict(cls())
        unknown = set(data) - set(defaults)
        if unknown:
            raise RolloutError(f"{path}: unknown SLO keys {sorted(unknown)}; known: {sorted(defaults)}")
        values = {}
        for key, value in data.items():
            kind = type(defaults[key])
            try:
                values[key] = kind(value)
            except (TypeError, ValueError):
                raise RolloutError(f"{path}: {key} must be a {kind.__name__}, got {value!r}") from None
        return cls(**values)


SLO_HELP = {
    "max_error_rate": "largest share of canary requests answered with an error code",
    "max_p95_seconds": "largest 95th percentile of the canary's request duration",
    "max_ks_pvalue": "a prediction shift counts when the KS p-value is at most this...",
    "max_ks_statistic": "...and the KS distance of the prediction distributions exceeds this",
    "min_requests": "fewer canary requests in the window is 'inconclusive'",
    "error_codes": "regex over the code label that counts as an error",
}


@dataclass(frozen=True)
class Check:
    """One row of the verdict table."""

    name: str
    stable: float | None
    canary: float | None
    objective: str
    verdict: int


def binned_ks(buckets: dict[str, dict[float, float]]) -> tuple[float, float] | None:
    """Two-sample Kolmogorov-Smirnov on histogram buckets: ``(D, p-value)``, or ``None`` without data.

    Prometheus keeps the predictions as cumulative bucket counts, so both empirical CDFs are known only at the
    bucket bounds. D is the largest difference between them there, a lower bound of the KS distance of the raw
    values (the test is conservative: a shift inside one bucket is invisible). The p-value is the asymptotic
    Kolmogorov distribution at ``D * sqrt(n m / (n + m))``.

    Args:
        buckets: ``{endpoint: {upper bound: cumulative count}}`` for ``default`` and ``canary``
            (counts may be fractional: ``increase()`` extrapolates).
    """
    from scipy.special import kolmogorov  # here, not at the top: scipy would make `housing --help` slow

    if not all(buckets.get(endpoint) for endpoint in ENDPOINTS):
        return None
    stable, canary = buckets["default"], buckets["canary"]
    n, m = stable.get(math.inf, 0.0), canary.get(math.inf, 0.0)
    if n < 1 or m < 1:
        return None
    bounds = sorted(set(stable) | set(canary))
    distance = max(abs(stable.get(bound, 0.0) / n - canary.get(bound, 0.0) / m) for bound in bounds)
    return distance, float(kolmogorov(distance * math.sqrt(n * m / (n + m))))


def _requests(
    prometheus: PrometheusClient, sel: str, window: str, error_codes: str
) -> tuple[dict[str, float], dict[str, float]]:
    """Requests and errors per endpoint, from one query by code.

    One query keeps errors <= requests even though ``increase()`` extrapolates each series on its own.
    """
    total: dict[str, float] = {}
    errors: dict[str, float] = {}
    promql = f"sum by (endpoint, code) (increase(housing_requests_total{{{sel}}}[{window}]))"
    for item in prometheus.query(promql):
        endpoint, count = item["metric"].get("endpoint", ""), float(item["value"][1])
        total[endpoint] = total.get(endpoint, 0.0) + count
        if re.fullmatch(error_codes, item["metric"].get("code", "")):
            errors[endpoint] = errors.get(endpoint, 0.0) + count
    return total, errors


def _p95(prometheus: PrometheusClient, sel: str, window: str) -> dict[str, float]:
    """95th percentile of the whole request's duration per endpoint (KServe's predict step as a fallback)."""
    for histogram in ("housing_request_duration_seconds", "request_predict_seconds"):
        promql = (
            f"histogram_quantile(0.95, sum by (endpoint, le) (rate({histogram}_bucket{{{sel}}}[{window}])))"
        )
        found = {key: value for key, value in prometheus.by_endpoint(promql).items() if not math.isnan(value)}
        if found:
            return found
    return {}


def _prediction_buckets(prometheus: PrometheusClient, sel: str, window: str) -> dict[str, dict[float, float]]:
    """``{endpoint: {upper bound: predictions counted}}`` over the window."""
    buckets: dict[str, dict[float, float]] = {}
    promql = f"sum by (endpoint, le) (increase(housing_predicted_value_bucket{{{sel}}}[{window}]))"
    for item in prometheus.query(promql):
        endpoint = item["metric"].get("endpoint", "")
        buckets.setdefault(endpoint, {})[float(item["metric"]["le"])] = float(item["value"][1])
    return buckets


def _at_most(value: float | None, limit: float, enough: bool) -> int:
    if not enough or value is None:
        return INCONCLUSIVE
    return PROMOTE if value <= limit else ROLLBACK


def analyze(
    prometheus: PrometheusClient, slo: Slo, window: str = "10m", selector: str = 'component="predictor"'
) -> list[Check]:
    """Compare the canary with the stable endpoint over ``window`` and judge each SLO.

    Metrics (scrape targets carry ``endpoint="default"|"canary"``): ``up``, ``housing_requests_total`` by
    ``code``, ``housing_request_duration_seconds`` (else KServe's ``request_predict_seconds``) and the
    ``housing_predicted_value`` buckets (compared with :func:`binned_ks`).

    Args:
        prometheus: Where the metrics are.
        slo: The objectives.
        window: PromQL range, e.g. ``10m``.
        selector: Label matchers every query gets, e.g. ``component="predictor",namespace="prod"``.

    Returns:
        One :class:`Check` per row of the verdict table.
    """
    up = prometheus.by_endpoint(f"min by (endpoint) (min_over_time(up{{{selector}}}[{window}]))")
    total, errors = _requests(prometheus, selector, window, slo.error_codes)
    error_rate = {endpoint: errors.get(endpoint, 0.0) / count for endpoint, count in total.items() if count}
    p95 = _p95(prometheus, selector, window)
    ks = binned_ks(_prediction_buckets(prometheus, selector, window))
    enough = total.get("canary", 0.0) >= slo.min_requests
    canary_up = up.get("canary")
    if not enough or ks is None:
        ks_verdict = INCONCLUSIVE
    else:
        ks_verdict = ROLLBACK if ks[1] <= slo.max_ks_pvalue and ks[0] > slo.max_ks_statistic else PROMOTE
    return [
        Check("canary up", up.get("default"), canary_up, "scraped every time",
              INCONCLUSIVE if canary_up is None else PROMOTE if canary_up == 1 else ROLLBACK),
        Check("requests", total.get("default"), total.get("canary"), f">= {slo.min_requests}",
              PROMOTE if enough else INCONCLUSIVE),
        Check("error rate", error_rate.get("default"), error_rate.get("canary"), f"<= {slo.max_error_rate:g}",
              _at_most(error_rate.get("canary"), slo.max_error_rate, enough)),
        Check("p95 latency (s)", p95.get("default"), p95.get("canary"), f"<= {slo.max_p95_seconds:g}",
              _at_most(p95.get("canary"), slo.max_p95_seconds, enough)),
        Check("prediction KS D", None, ks[0] if ks else None,
              f"<= {slo.max_ks_statistic:g} or p > {slo.max_ks_pvalue:g}", ks_verdict),
        Check("prediction KS p", None, ks[1] if ks else None, "(with the row above)", ks_verdict),
    ]  # fmt: skip


def accuracy_check(detector: str, alpha: float = 0.05) -> Check:
    """Live MAE of the canary against the stable predictor, by the test of ``housing experiment``.

    The labelled predictions come from the detector (``GET /outcomes``); a winner settles it (the canary
    winning, or no difference, promotes; the stable winning rolls back), too few labels are "no data".
    """
    from housing.outcomes import OutcomesError, arm_errors, fetch_outcomes
    from housing.sequential import CHAMPION, KEEP_GOING, decide

    try:
        outcomes = fetch_outcomes(detector)
        stable, _ = arm_errors(outcomes, "default")
        canary, _ = arm_errors(outcomes, "canary")
    except OutcomesError as error:
        log.warning("live accuracy: %s", error)
        return Check("live MAE", None, None, "not worse (sequential)", INCONCLUSIVE)
    # Symmetric: here a canary worse than the stable predictor is the verdict acted on (a rollback).
    decision = decide(stable, canary, paired=False, alpha=alpha, challenger_share=0.5)
    result = {KEEP_GOING: INCONCLUSIVE, CHAMPION: ROLLBACK}.get(decision.verdict, PROMOTE)
    return Check("live MAE", decision.mae_champion, decision.mae_challenger, "not worse (sequential)", result)


def verdict(checks: list[Check]) -> int:
    """Roll back if any check fails, else inconclusive if any lacks data, else promote."""
    verdicts = {check.verdict for check in checks}
    return ROLLBACK if ROLLBACK in verdicts else INCONCLUSIVE if INCONCLUSIVE in verdicts else PROMOTE


def print_checks(checks: list[Check], out: Any = None) -> None:
    """The verdict table and the recommendation."""
    out = out or sys.stdout

    def show(value: float | None) -> str:
        return "-" if value is None else f"{value:.4g}"

    print(f"{'CHECK':<17} {'STABLE':>10} {'CANARY':>10}  {'OBJECTIVE':<26} RESULT", file=out)
    for check in checks:
        result = {PROMOTE: "ok", ROLLBACK: "FAIL", INCONCLUSIVE: "no data"}[check.verdict]
        values = f"{show(check.stable):>10} {show(check.canary):>10}"
        print(f"{check.name:<17} {values}  {check.objective:<26} {result}", file=out)
    print(f"\nrecommendation: {VERDICTS[verdict(checks)]}", file=out)
