"""The drift report: one self-contained HTML page people read (``housing drift --report``, ``GET /report``).

Data in, HTML out: :func:`render` draws what it is given and does no I/O. The page opens with one summary line
per compared window (``drift: yes/no``, the drifted features, the window size, the model version), then for
each: the per-feature table, one histogram per feature (reference against current, titled with its test's
p-value and the verdict), the drift score of the recent windows against the threshold, and the realised MAE
(from labels) beside the label-free estimate when the detector has one ("no estimate" otherwise), with the
live coverage of the 90% prediction intervals beside it (the share of labelled prices inside their interval).

The plots are matplotlib figures inlined as SVG with their text kept as text (``svg.fonttype: none``), so the
page fetches nothing (it renders offline and in a locked-down browser) and a feature's name in a plot can be
searched for. :func:`sections` gathers a running monitor's windows into the same data, so the service and the
command line draw one page.
"""

from __future__ import annotations

import html
import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from detector.keys import WindowKey
from detector.stats import DriftResult, FeatureResult

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from detector.monitor import Monitor

REFERENCE_COLOUR, CURRENT_COLOUR, DRIFT_COLOUR, COVERAGE_COLOUR = "#4c72b0", "#dd8452", "#c44e52", "#55a868"
STYLE = """
body{font-family:sans-serif;margin:1.5em;color:#222;max-width:80em}
h1{font-size:1.6em}h2{font-size:1.25em;border-bottom:1px solid #ccc;margin-top:2em}
ul.summary{font-size:1.1em;padding-left:1.2em}li.drift{color:#c44e52;font-weight:bold}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}tr.drifted td{color:#c44e52;font-weight:bold}
.grid{display:flex;flex-wrap:wrap;gap:8px}
figure{margin:0;border:1px solid #ddd;padding:4px;display:inline-block}
figure.drifted{border:2px solid #c44e52}figcaption{font-size:.85em}figure.feature figcaption{max-width:22em}
p.note{color:#555}
"""


@dataclass(frozen=True)
class HistoryPoint:
    """One tested window, for the drift score and accuracy plots.

    Attributes:
        score: The window's drift score.
        threshold: The threshold it was compared with.
        drifted: The window's verdict.
        time: When it was tested (Unix seconds), if known.
        realised_mae: MAE of the labelled predictions at that time (``None`` without labels).
        estimated_mae: The label-free MAE estimate at that time (``None`` without one).
        labels: Labels behind ``realised_mae``.
        coverage: Share of the labelled prices inside their 90% interval at that time (``None`` without).
    """

    score: float
    threshold: float
    drifted: bool
    time: float | None = None
    realised_mae: float | None = None
    estimated_mae: float | None = None
    labels: int = 0
    coverage: float | None = None


@dataclass(frozen=True)
class Section:
    """One compared window (a key of the detector, or the current file of ``housing drift``).

    Attributes:
        name: What was compared, as a heading (``default/v3``, ``current.csv``).
        model_version: The model version whose traffic it is.
        window_size: Rows per tested window.
        features: Feature names, in the column order of ``reference`` and ``current``.
        reference: Reference rows, shape [n, n_features].
        current: The last tested window's rows (shape [m, n_features]), or ``None`` when not kept.
        result: The last window's result, or ``None`` before the first full window.
        history: Recent windows, oldest first.
        waiting: Rows collected towards the next window.
        realised_mae: MAE of the labelled predictions now (``None`` without labels).
        labels: Labels behind ``realised_mae``.
        estimated_mae: The label-free MAE estimate now (``None`` without one).
        coverage: Share of the labelled prices inside their 90% interval now (``None`` without intervals).
        coverage_labels: Labels behind ``coverage``.
        note: A sentence shown under the heading (why something is missing).
    """

    name: str
    model_version: str
    window_size: int
    features: Sequence[str]
    reference: np.ndarray
    current: np.ndarray | None = None
    result: DriftResult | None = None
    history: Sequence[HistoryPoint] = field(default_factory=tuple)
    waiting: int = 0
    realised_mae: float | None = None
    labels: int = 0
    estimated_mae: float | None = None
    coverage: float | None = None
    coverage_labels: int = 0
    note: str = ""


def summary(section: Section) -> str:
    """The section's one-line verdict: drift yes/no, which features, window size, model version."""
    where = f"window size: {section.window_size} rows · model version: {section.model_version}"
    result = section.result
    if result is None:
        return f"drift: not tested yet ({section.waiting} of {section.window_size} rows) · {where}"
    drifted = [feature.name for feature in result.features if feature.drifted]
    which = ", ".join(drifted) if drifted else "none"
    if result.multivariate is not None and result.multivariate.drifted:
        which += " (and the features' joint structure)"
    return f"drift: {'yes' if result.drifted else 'no'} · drifted features: {which} · {where}"


def render(sections: Sequence[Section], *, title: str = "Drift report", generated: str = "") -> str:
    """The whole page.

    Args:
        sections: The compared windows, one section each.
        title: The page's heading; `` : DRIFT`` or ``: no drift`` is appended.
        generated: A line saying when and from what the page was made (shown under the summary).

    Returns:
        A complete HTML document that loads nothing from elsewhere.
    """
    import matplotlib

    drifted = any(section.result is not None and section.result.drifted for section in sections)
    heading = f"{title}: {'DRIFT' if drifted else 'no drift'}"
    lines = "".join(
        f"<li class='{'drift' if section.result is not None and section.result.drifted else 'ok'}'>"
        f"{html.escape(section.name)}: {html.escape(summary(section))}</li>"
        for section in sections
    )
    # Text stays text in the SVG (searchable, no font files); the fixed salt keeps the page's ids stable.
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "housing-drift-report"}):
        body = "".join(_section(section) for section in sections)
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        # The page may load nothing: a browser that honours this refuses any fetch a future edit might add.
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; style-src 'unsafe-inline'; "
        'img-src data:">'
        f"<title>{html.escape(heading)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{html.escape(heading)}</h1><ul class='summary' id='summary'>"
        f"{lines or '<li>nothing compared yet</li>'}</ul>"
        f"{f'<p class=note>{html.escape(generated)}</p>' if generated else ''}{body}</body></html>\n"
    )


def _section(section: Section) -> str:
    parts = [f"<section><h2>{html.escape(section.name)}</h2><p>{html.escape(summary(section))}</p>"]
    if section.note:
        parts.append(f"<p class='note'>{html.escape(section.note)}</p>")
    result = section.result
    if result is not None:
        parts.append(_table(result))
    parts.append("<h3>Distributions: reference against current</h3>")
    if result is None or section.current is None:
        parts.append(
            "<p class='note'>No tested window's rows to draw yet"
            f"{'' if result is None else ' (they are not kept across restarts)'}.</p>"
        )
    else:
        by_name = {item.name: item for item in result.features}
        parts.append("<div class='grid'>")
        for index, name in enumerate(section.features):
            item = by_name.get(name)
            if item is not None:
                parts.append(
                    _feature_figure(name, section.reference[:, index], section.current[:, index], item)
                )
        parts.append("</div>")
    parts.append("<h3>Drift score of the recent windows</h3>")
    parts.append(_history_figure(section.history))
    parts.append("<h3>Accuracy: estimated against realised</h3>")
    parts.append(_accuracy_figure(section))
    parts.append("</section>")
    return "".join(parts)


def _table(result: DriftResult) -> str:
    rows = []
    for item in [*result.features, *([result.prediction] if result.prediction else [])]:
        verdict = "yes" if item.drifted else ("significant" if item.significant else "no")
        rows.append(
            f"<tr class='{'drifted' if item.drifted else ''}'>"
            f"<td>{html.escape(item.name)}</td><td>{item.test}</td>"
            f"<td>{item.p_value:.2e}</td><td>{item.psi:.3f}</td><td>{item.js_distance:.3f}</td>"
            f"<td>{verdict}</td></tr>"
        )
    joint = ""
    if result.multivariate is not None:
        mv = result.multivariate
        joint = (
            f"<p>Joint structure (PCA reconstruction error): {mv.error:.3f} against {mv.expected:.3f} "
            f"expected, threshold {mv.threshold:.3f}: {'drifted' if mv.drifted else 'no drift'}.</p>"
        )
    return (
        f"<p>Drift score {result.score:.3f}, threshold {result.threshold:g}, {result.rows} rows.</p>"
        "<table><tr><th>feature</th><th>test</th><th>p-value</th><th>PSI</th><th>JS distance</th>"
        f"<th>drifted</th></tr>{''.join(rows)}</table>{joint}"
    )


def _feature_figure(name: str, reference: np.ndarray, current: np.ndarray, item: FeatureResult) -> str:
    figure, axes = _figure(3.6, 2.5)
    _histograms(axes, name, reference, current, item)
    caption = (
        f"{name}: {item.test.upper()} p-value {item.p_value:.2e}, JS distance {item.js_distance:.3f}, "
        f"PSI {item.psi:.3f}: {'drifted' if item.drifted else 'not drifted'}"
    )
    return (
        f"<figure class='feature{' drifted' if item.drifted else ''}' data-feature='{html.escape(name)}' "
        f"data-drifted='{'yes' if item.drifted else 'no'}'>{_svg(figure)}"
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _histograms(
    axes: Axes, name: str, reference: np.ndarray, current: np.ndarray, item: FeatureResult
) -> None:
    """Reference and current densities of one feature on shared bins, titled with the test's verdict."""
    edges = np.histogram_bin_edges(np.concatenate([reference, current]), bins=20).tolist()
    axes.hist(reference, bins=edges, density=True, alpha=0.55, color=REFERENCE_COLOUR, label="reference")
    axes.hist(current, bins=edges, density=True, alpha=0.55, color=CURRENT_COLOUR, label="current")
    verdict = "DRIFTED" if item.drifted else "no drift"
    axes.set_title(
        f"{name}: {item.test} p={item.p_value:.1e}, {verdict}",
        fontsize=9,
        color=DRIFT_COLOUR if item.drifted else "black",
    )
    axes.set_xlabel(_axis_label(name), fontsize=8)
    axes.set_ylabel("density", fontsize=8)
    axes.legend(fontsize=7)


def distributions_png(section: Section) -> bytes:
    """The section's histograms in one PNG grid (``housing drift --report out.png``), verdict as the title."""
    from matplotlib.figure import Figure

    if section.result is None or section.current is None:
        raise ValueError("a PNG report needs a tested window and its rows")
    columns = 4
    lines = -(-len(section.features) // columns)
    figure = Figure(figsize=(4 * columns, 2.8 * lines), layout="constrained")
    grid = figure.subplots(lines, columns, squeeze=False)
    for index, axes in enumerate(grid.flat):
        if index >= len(section.features):
            axes.axis("off")
            continue
        item = section.result.features[index]
        _histograms(axes, item.name, section.reference[:, index], section.current[:, index], item)
    figure.suptitle(summary(section))
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    return buffer.getvalue()


def _history_figure(history: Sequence[HistoryPoint]) -> str:
    if not history:
        return "<p class='note'>No window tested yet.</p>"
    from matplotlib.ticker import MaxNLocator

    figure, axes = _figure(7.0, 2.6)
    numbers = np.arange(1, len(history) + 1)
    scores = [point.score for point in history]
    axes.plot(numbers, scores, marker="o", color=REFERENCE_COLOUR, label="drift score")
    flagged = [(number, point.score) for number, point in zip(numbers, history, strict=True) if point.drifted]
    if flagged:
        axes.scatter(*zip(*flagged, strict=True), color=DRIFT_COLOUR, zorder=3, label="drift declared")
    axes.axhline(history[-1].threshold, color=DRIFT_COLOUR, linestyle="--", label="threshold")
    axes.set_ylim(0, 1.05)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_title(f"Drift score per window (last {len(history)})", fontsize=10)
    axes.set_xlabel("window (oldest to newest)", fontsize=8)
    axes.set_ylabel("drift score", fontsize=8)
    axes.legend(fontsize=7, loc="best")
    drifted = sum(point.drifted for point in history)
    text = f"{drifted} of the last {len(history)} windows drifted."
    return f"<figure class='history'>{_svg(figure)}<figcaption>{text}</figcaption></figure>"


def _accuracy_figure(section: Section) -> str:
    """Realised against estimated MAE per tested window, and now (labels often arrive after their window)."""
    words = [
        f"realised MAE {section.realised_mae:.2f} ({section.labels} labels)"
        if section.realised_mae is not None
        else "no labels yet",
        f"estimated MAE {section.estimated_mae:.2f}" if section.estimated_mae is not None else "no estimate",
    ]
    if section.coverage is not None:
        covered = f"{section.coverage:.1%} of labelled prices ({section.coverage_labels} labels)"
        words.insert(1, f"90% intervals cover {covered}")
    text = html.escape("now: " + "; ".join(words) + ".")
    history = section.history
    now = len(history) + 1
    series = [
        (
            [point.realised_mae for point in history] + [section.realised_mae],
            "realised MAE (labels)",
            CURRENT_COLOUR,
            "o",
        ),
        (
            [point.estimated_mae for point in history] + [section.estimated_mae],
            "estimated MAE (no labels)",
            REFERENCE_COLOUR,
            "s",
        ),
    ]
    values = [value for line, *_ in series for value in line if value is not None]
    if not values:
        return f"<p class='accuracy'>{text}</p>"
    from matplotlib.ticker import MaxNLocator

    figure, axes = _figure(7.0, 2.6)
    for line, label, colour, marker in series:
        shown = [(number, value) for number, value in enumerate(line, start=1) if value is not None]
        if shown:
            axes.plot(*zip(*shown, strict=True), marker=marker, color=colour, label=label)
    axes.axvline(now, color="#999", linestyle=":", label="now")
    axes.set_title("Mean absolute error per window, and now", fontsize=10)
    axes.set_xlabel("window (oldest to newest; the dotted line is now)", fontsize=8)
    axes.set_ylabel("MAE (USD 1000s)", fontsize=8)
    axes.set_ylim(0, max(values) * 1.4 or 1.0)  # room above the lines for the legend
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.legend(fontsize=7, loc="upper left")
    shares = [point.coverage for point in history] + [section.coverage]
    drawn = [(number, share) for number, share in enumerate(shares, start=1) if share is not None]
    if drawn:  # beside the MAE, on its own axis: a share of labels, nominal 90%
        twin = axes.twinx()
        twin.plot(*zip(*drawn, strict=True), marker="^", color=COVERAGE_COLOUR, label="90% interval coverage")
        twin.axhline(0.9, color=COVERAGE_COLOUR, linestyle="--", linewidth=0.8, label="nominal 90%")
        twin.set_ylim(0.5, 1.05)
        twin.set_ylabel("interval coverage", fontsize=8)
        twin.legend(fontsize=7, loc="upper right")
    return f"<figure class='accuracy'>{_svg(figure)}<figcaption>{text}</figcaption></figure>"


def _axis_label(name: str) -> str:
    from model.schema import FEATURES_BY_NAME

    feature = FEATURES_BY_NAME.get(name)
    return f"{name} ({feature.unit})" if feature is not None else name


def _figure(width: float, height: float) -> tuple[Figure, Axes]:
    # A bare Figure, not pyplot: no global figure registry, so the service can draw in a worker thread.
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    # Fixed margins rather than a layout engine, which measures every label first: half the drawing time.
    figure.subplots_adjust(
        left=0.6 / width, right=1 - 0.15 / width, bottom=0.5 / height, top=1 - 0.3 / height
    )
    return figure, figure.add_subplot()


def _svg(figure: Figure) -> str:
    """The figure as an inline ``<svg>`` element (no XML prologue, DOCTYPE or metadata: nothing to fetch)."""
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata=dict.fromkeys(("Date", "Creator", "Format", "Type")))
    text = buffer.getvalue()
    text = re.sub(r"<metadata>.*?</metadata>", "", text[text.index("<svg") :], flags=re.DOTALL)
    return text


def estimated_mae(status: Mapping[str, Any]) -> float | None:
    """The label-free MAE estimate in a key's ``/status`` entry (``estimate.mae``), or ``None`` without one.

    The detector estimates it per window when the artifact has a loss estimator (``dle.json``; see
    docs/detector.md, "Accuracy before labels"); older artifacts have none, and the report says "no estimate".
    """
    estimate = status.get("estimate")
    value = estimate.get("mae") if isinstance(estimate, Mapping) else None
    return float(value) if isinstance(value, int | float) else None


def interval_coverage(status: Mapping[str, Any], level: str = "0.9") -> tuple[float | None, int]:
    """The live coverage of the intervals at ``level`` in a key's ``/status`` entry, and its label count."""
    found = (status.get("coverage") or {}).get(level)
    if not isinstance(found, Mapping):
        return None, 0
    return float(found["coverage"]), int(found["labels"])


def history_point(entry: Mapping[str, Any]) -> HistoryPoint:
    """A :class:`HistoryPoint` from one entry of the monitor's window history (``Monitor.history``)."""
    live = entry.get("live") or {}
    return HistoryPoint(
        score=float(entry["score"]),
        threshold=float(entry["threshold"]),
        drifted=bool(entry["drifted"]),
        time=entry.get("time"),
        realised_mae=live.get("mae"),
        estimated_mae=estimated_mae(entry),
        labels=int(live.get("labels") or 0),
        coverage=interval_coverage(entry)[0],
    )


def sections(monitor: Monitor) -> list[Section]:
    """The report's data for every key a running monitor tracks (cheap: copies, draws nothing).

    Called on the service's event loop; :func:`render` then runs in a thread.
    """
    status = monitor.status()
    reference = monitor.tester.reference
    found = []
    for name, entry in status["keys"].items():
        key = WindowKey.parse(name)
        result = monitor.results.get(key)
        coverage, covered_labels = interval_coverage(entry)
        history = [history_point(item) for item in monitor.history.get(key, ())]
        if not history and result is not None:  # a result restored from an older state file: one point
            history = [history_point({**entry, "score": result.score, "threshold": result.threshold,
                                      "drifted": result.drifted})]  # fmt: skip
        found.append(
            Section(
                name=f"endpoint {key.endpoint}, model version {key.model_version}",
                model_version=key.model_version,
                window_size=int(status["window_size"]),
                features=reference.features,
                reference=reference.rows,
                current=monitor.tested_rows.get(key),
                result=result,
                history=history,
                waiting=int(entry["window_rows"]),
                realised_mae=entry["live"]["mae"],
                labels=int(entry["live"]["labels"] or 0),
                estimated_mae=estimated_mae(entry),
                coverage=coverage,
                coverage_labels=covered_labels,
            )
        )
    return found
