"""``housing drift``: compare two CSV files offline with the detector's own statistics.

Prints a per-feature table (test p-value, PSI, JS distance, drifted?) and the verdict; exits 0 for no drift,
1 for drift and 2 for unusable input. ``--report out.png`` draws the distributions; ``--report out.html`` adds
the table. The columns compared are the schema's features present in both files (``b`` included only when both
have it); a ``prediction`` column in both files is compared too (prediction drift).
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import sys
from pathlib import Path
from typing import Any

from detector.stats import (
    CORRECTIONS,
    DEFAULT_BINS,
    DEFAULT_CORRECTION,
    DEFAULT_P_VALUE,
    DEFAULT_THRESHOLD,
)

HELP = "Compare current data with reference data: per-feature drift table, verdict (exit 1 on drift), report."
PREDICTION = "prediction"


def configure(parser: argparse.ArgumentParser) -> None:
    """Declare the arguments of ``housing drift``."""
    parser.add_argument(
        "--reference-data", type=Path, required=True, help="CSV the model was trained on (a sample)"
    )
    parser.add_argument("--current-data", type=Path, required=True, help="CSV of recent inputs")
    parser.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        help="drift score threshold in [0, 1] (default: %(default)s)",
    )
    parser.add_argument(
        "--p-value",
        type=float,
        default=DEFAULT_P_VALUE,
        help="significance level of the tests (default: %(default)s)",
    )
    parser.add_argument(
        "--correction",
        choices=CORRECTIONS,
        default=DEFAULT_CORRECTION,
        help="multiple-testing correction (default: %(default)s)",
    )
    parser.add_argument(
        "--bins",
        type=int,
        default=DEFAULT_BINS,
        help="reference-quantile bins for PSI and JS distance (default: %(default)s)",
    )
    parser.add_argument("--report", type=Path, help="write the distributions to a .png or .html file")


def run(args: argparse.Namespace) -> int:
    """Compare the files; 0 no drift, 1 drift, 2 unusable input."""
    from detector.stats import DriftTester, Reference, summarize

    if args.report and args.report.suffix.lower() not in (".png", ".html"):
        print(f"error: --report must end in .png or .html, got {args.report}", file=sys.stderr)
        return 2
    try:
        reference_frame, current_frame, features = read_inputs(args.reference_data, args.current_data)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    with_predictions = PREDICTION in reference_frame and PREDICTION in current_frame
    reference = Reference(
        features=tuple(features),
        rows=reference_frame[features].to_numpy(dtype=float),
        predictions=reference_frame[PREDICTION].to_numpy(dtype=float) if with_predictions else None,
        version=args.reference_data.name,
    )
    try:
        tester = DriftTester(
            reference,
            threshold=args.threshold,
            p_value=args.p_value,
            correction=args.correction,
            bins=args.bins,
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    current = current_frame[features].to_numpy(dtype=float)
    predictions = current_frame[PREDICTION].to_numpy(dtype=float) if with_predictions else None
    result = tester.test(current, predictions)
    print(f"reference {args.reference_data} ({len(reference.rows)} rows), current {args.current_data}")
    print(summarize(result))
    if args.report:
        write_report(args.report, reference.rows, current, features, result)
        print(f"report written to {args.report}")
    return 1 if result.drifted else 0


def read_inputs(reference_path: Path, current_path: Path) -> tuple[Any, Any, list[str]]:
    """Read both CSVs and check the shared feature columns against the schema.

    Returns:
        The two frames and the feature names compared (schema order).

    Raises:
        ValueError: A file is missing or unreadable, shares no feature with the other, or has invalid values.
    """
    import pandas as pd

    from model.schema import ALL_FEATURES, first_violations

    frames = []
    for path in (reference_path, current_path):
        try:
            frames.append(pd.read_csv(path))
        except (OSError, ValueError) as error:
            raise ValueError(f"{path}: cannot read CSV: {error}") from None
    reference_frame, current_frame = frames
    features = [name for name in ALL_FEATURES if name in reference_frame and name in current_frame]
    if not features:
        raise ValueError(
            f"{reference_path} and {current_path} share no feature column of {list(ALL_FEATURES)}"
        )
    for path, frame in ((reference_path, reference_frame), (current_path, current_frame)):
        if len(frame) < 2:
            raise ValueError(f"{path}: needs at least 2 data rows, got {len(frame)}")
        columns = [*features, PREDICTION] if PREDICTION in frame else features
        numeric = frame[columns].apply(pd.to_numeric, errors="coerce")
        if numeric.isna().any().any():
            column = numeric.columns[numeric.isna().any()][0]
            row = int(numeric.index[numeric[column].isna()][0])
            raise ValueError(
                f"{path}: row {row}, column {column!r}: must be a number, got {frame.at[row, column]!r}"
            )
        problems = first_violations(numeric[features].to_numpy(), features)
        if problems:
            raise ValueError(f"{path}: " + "; ".join(problems))
        frame[columns] = numeric
    return reference_frame, current_frame, features


def write_report(path: Path, reference: Any, current: Any, features: list[str], result: Any) -> None:
    """Draw reference and current histograms per feature to a PNG, or to an HTML page with the table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    columns = 4
    lines = -(-len(features) // columns)
    figure, axes = plt.subplots(lines, columns, figsize=(4 * columns, 2.8 * lines), squeeze=False)
    for index, axis in enumerate(axes.flat):
        if index >= len(features):
            axis.axis("off")
            continue
        item = result.features[index]
        edges = np.histogram_bin_edges(np.concatenate([reference[:, index], current[:, index]]), bins=20)
        axis.hist(reference[:, index], bins=edges, density=True, alpha=0.5, label="reference")
        axis.hist(current[:, index], bins=edges, density=True, alpha=0.5, label="current")
        axis.set_title(
            f"{item.name}: p={item.p_value:.1e} JS={item.js_distance:.2f}",
            color="red" if item.drifted else "black",
        )
    axes.flat[0].legend()
    verdict = "DRIFT" if result.drifted else "no drift"
    figure.suptitle(f"drift score {result.score:.3f} (threshold {result.threshold:g}): {verdict}")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".png":
        figure.savefig(path, dpi=80)
        plt.close(figure)
        return
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    plt.close(figure)
    rows = "".join(
        f"<tr><td>{html.escape(item.name)}</td><td>{item.test}</td><td>{item.p_value:.2e}</td><td>{item.psi:.3f}</td>"
        f"<td>{item.js_distance:.3f}</td><td>{'yes' if item.drifted else 'no'}</td></tr>"
        for item in [*result.features, *([result.prediction] if result.prediction else [])]
    )
    image = base64.b64encode(buffer.getvalue()).decode()
    path.write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>Drift report</title></head><body>"
        f"<h1>Drift report: {verdict}</h1><p>Drift score {result.score:.3f}, threshold {result.threshold:g}, "
        f"{result.rows} current rows.</p><table border='1'><tr><th>feature</th><th>test</th><th>p-value</th>"
        f"<th>PSI</th><th>JS distance</th><th>drifted</th></tr>{rows}</table>"
        f"<img alt='distributions' src='data:image/png;base64,{image}'></body></html>\n"
    )
