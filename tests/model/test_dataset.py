from __future__ import annotations

import pytest

from model.dataset import DataValidationError, load_dataset
from model.schema import ALL_FEATURES, TARGET


def test_bundled_data_loads_in_schema_order():
    frame = load_dataset()
    assert list(frame.columns) == [*ALL_FEATURES, TARGET]
    assert len(frame) == 506
    assert frame.at[0, "crim"] == pytest.approx(0.00632)
    assert frame[TARGET].mean() == pytest.approx(22.5328, abs=1e-4)
    assert (frame.dtypes == "float64").all()


def test_missing_column_is_named(bundled, write_csv):
    with pytest.raises(DataValidationError, match=r"missing columns \['nox'\]"):
        load_dataset(write_csv(bundled.drop(columns="nox")))


def test_unknown_column_is_named(bundled, write_csv):
    with pytest.raises(DataValidationError, match=r"unknown columns \['price'\]"):
        load_dataset(write_csv(bundled.assign(price=1.0)))


def test_non_numeric_value_names_row_and_column(bundled, write_csv):
    bundled["rm"] = bundled["rm"].astype(object)
    bundled.at[7, "rm"] = "six"
    with pytest.raises(DataValidationError, match=r"row 7, column 'rm': must be a number, got 'six'"):
        load_dataset(write_csv(bundled))


def test_missing_value_names_row_and_column(bundled, write_csv):
    bundled.at[3, "tax"] = None
    with pytest.raises(DataValidationError, match=r"row 3, column 'tax': is missing"):
        load_dataset(write_csv(bundled))


@pytest.mark.parametrize(
    ("column", "value", "rule"),
    [
        ("nox", 1.5, r"must be in \(0, 1\), got 1.5"),
        ("chas", 2, r"must be 0 or 1, got 2"),
        ("rad", 2.5, r"must be a whole number, got 2.5"),
        ("zn", -1, r"must be in \[0, 100\], got -1"),
    ],
)
def test_out_of_domain_value_names_row_column_and_rule(bundled, write_csv, column, value, rule):
    bundled[column] = bundled[column].astype(float)
    bundled.at[12, column] = value
    with pytest.raises(DataValidationError, match=rf"row 12, column '{column}': {rule}"):
        load_dataset(write_csv(bundled))


def test_non_positive_target_is_refused(bundled, write_csv):
    bundled.at[0, TARGET] = 0
    with pytest.raises(DataValidationError, match=r"row 0, column 'medv': must be > 0"):
        load_dataset(write_csv(bundled))


def test_header_only_file_is_refused(bundled, write_csv):
    with pytest.raises(DataValidationError, match="no data rows"):
        load_dataset(write_csv(bundled.iloc[:0]))
