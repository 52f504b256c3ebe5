"""Load and validate the Boston Housing data set that ships inside this package."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from model.schema import ALL_FEATURES, TARGET, first_violations

BUNDLED_DATA = Path(__file__).parent / "data" / "boston.csv"
"""The project's copy of the data set: 506 rows, 13 features and the target ``medv``."""


class DataValidationError(ValueError):
    """The data file does not match the feature schema; the message names the rows and columns at fault."""


def load_dataset(path: str | Path | None = None) -> pd.DataFrame:
    """Read a Boston Housing CSV and check it against the feature schema.

    Args:
        path: A CSV with a header row of the 13 feature names and ``medv``; defaults to the bundled copy.

    Returns:
        A frame with the 13 features (float64) in schema order, then the target ``medv``.

    Raises:
        DataValidationError: Missing or unknown columns, non-numeric or missing values, values out of their
            domain, or a non-positive target. The message names the row (0-based, data rows only) and column
            of the first problems.
    """
    path = Path(path) if path is not None else BUNDLED_DATA
    frame = pd.read_csv(path)
    expected = [*ALL_FEATURES, TARGET]
    missing = [column for column in expected if column not in frame.columns]
    unknown = [column for column in frame.columns if column not in expected]
    if missing or unknown:
        raise DataValidationError(f"{path}: missing columns {missing}, unknown columns {unknown}")
    if frame.empty:
        raise DataValidationError(f"{path}: no data rows")

    problems: list[str] = []
    for column in expected:
        numeric = pd.to_numeric(frame[column], errors="coerce")
        for index in numeric.index[numeric.isna()][:5]:
            raw = frame.at[index, column]
            rule = "is missing" if pd.isna(raw) else f"must be a number, got {raw!r}"
            problems.append(f"row {index}, column {column!r}: {rule}")
        frame[column] = numeric.astype("float64")
    if problems:
        raise DataValidationError(f"{path}: " + "; ".join(problems[:5]))

    problems = first_violations(frame[list(ALL_FEATURES)].to_numpy(), ALL_FEATURES)
    for index in frame.index[frame[TARGET] <= 0][:5]:
        problems.append(f"row {index}, column {TARGET!r}: must be > 0, got {frame.at[index, TARGET]:g}")
    if problems:
        raise DataValidationError(f"{path}: " + "; ".join(problems[:5]))
    return frame[expected].reset_index(drop=True)
