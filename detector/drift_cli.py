"""``housing drift``: compare two CSV files offline with the detector's own statistics.

Prints a per-feature table (test p-value, PSI, JS distance, drifted?) and the verdict; exits 0 for no drift,
1 for drift and 2 for unusable input. ``--report out.html`` writes the drift report (:mod:`detector.report`,
the page the detector serves at ``/report``): the verdict, the table, each feature's histograms, the drift
score of the current file's consecutive windows (``--window-size``, in file order) and, when the current file
has both ``prediction`` and ``medv`` columns, their MAE; ``--report out.png`` draws only the histograms. The
columns compared are the schema's features present in both files (``b`` included only when both have it); a
``prediction`` column in both files is compared too (prediction drift).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from detector.report import HistoryPoint, Section, distributions_png, render
from detector.stats import (
    BACKEND_HELP,
    BACKENDS,
    CORRECTIONS,
    DEFAULT_BACKEND,
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
    parser.add_argument(
        "--stats-backend",
        choices=BACKENDS,
        default=os.environ.get("STATS_BACKEND", DEFAULT_BACKEND),
        help=BACKEND_HELP + " (default: %(default)s)",
    )
    parser.add_argument(
        "--report", type=Path, help="write the drift report to a .html file (or the histograms to a .png)"
    )
    parser.add_argument(
        "--window-size",
        type=int,
        help="rows per window of the report's history: the current file tested in consecutive windows, in "
        "file order (default: one window, the whole file)",
    )
    parser.add_argument(
        "--model-version",
        help="the model version named in the report (default: the current file's model_version column if it "
        "holds one value, else unknown)",
    )


def run(args: argparse.Namespace) -> int:
    """Compare the files; 0 no drift, 1 drift, 2 unusable input."""
    from detector.stats import DriftTester, Reference, backend_problem, summarize

    problem = backend_problem(args.stats_backend)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if args.report and args.report.suffix.lower() not in (".png", ".html"):
        print(f"error: --report must end in .png or .html, got {args.report}", file=sys.stderr)
        return 2
    if args.window_size is not None and args.window_size < 2:
        print(f"error: --window-size must be at least 2, got {args.window_size}", file=sys.stderr)
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
            backend=args.stats_backend,
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
        size = args.window_size or len(current)
        history = window_history(tester, current_frame, features, size)
        section = Section(
            name=f"{args.current_data.name} against {args.reference_data.name}",
            model_version=args.model_version or model_version(current_frame),
            window_size=len(current),
            features=features,
            reference=reference.rows,
            current=current,
            result=result,
            history=history,
            **realised_accuracy(current_frame),
            note=f"History: the current file tested in consecutive windows of {size} rows, in file order.",
        )
        args.report.parent.mkdir(parents=True, exist_ok=True)
        if args.report.suffix.lower() == ".png":
            args.report.write_bytes(distributions_png(section))
        else:
            made = f"Made by housing drift from {args.current_data} and {args.reference_data}."
            args.report.write_text(render([section], generated=made))
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


def realised_accuracy(frame: Any) -> dict[str, Any]:
    """MAE and label count of the whole frame, when it has both ``prediction`` and the target column."""
    from model.schema import TARGET

    if PREDICTION not in frame or TARGET not in frame:
        return {}
    import pandas as pd

    errors = (frame[PREDICTION] - pd.to_numeric(frame[TARGET], errors="coerce")).abs().dropna()
    return {"realised_mae": float(errors.mean()), "labels": len(errors)} if len(errors) else {}


def window_history(tester: Any, frame: Any, features: list[str], size: int) -> list[HistoryPoint]:
    """The current rows tested in consecutive windows of ``size`` (a shorter last window is left out).

    Each window's MAE is the realised accuracy when the frame has both ``prediction`` and the target column.
    """
    import pandas as pd

    from model.schema import TARGET

    labelled = PREDICTION in frame and TARGET in frame
    errors = (frame[PREDICTION] - pd.to_numeric(frame[TARGET], errors="coerce")).abs() if labelled else None
    history = []
    for start in range(0, len(frame) - size + 1, size):
        window = frame.iloc[start : start + size]
        predictions = window[PREDICTION].to_numpy(dtype=float) if PREDICTION in window else None
        result = tester.test(window[features].to_numpy(dtype=float), predictions)
        mae = errors.iloc[start : start + size].dropna() if errors is not None else None
        history.append(
            HistoryPoint(
                score=result.score,
                threshold=result.threshold,
                drifted=result.drifted,
                realised_mae=float(mae.mean()) if mae is not None and len(mae) else None,
                labels=len(mae) if mae is not None else 0,
            )
        )
    return history


def model_version(frame: Any) -> str:
    """The one value of the frame's ``model_version`` column (the inference archive has one), else unknown."""
    values = frame["model_version"].dropna().unique() if "model_version" in frame else []
    return str(values[0]) if len(values) == 1 else "unknown"
