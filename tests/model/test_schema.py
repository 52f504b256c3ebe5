from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from model.schema import (
    ALL_FEATURES,
    DEFAULT_FEATURES,
    FEATURES,
    FEATURES_BY_NAME,
    Feature,
    first_violations,
    select,
)


@pytest.mark.parametrize("feature", FEATURES, ids=lambda feature: feature.name)
def test_to_dict_round_trips(feature):
    data = feature.to_dict()
    assert data["domain"] == feature.domain
    fields = {field.name for field in dataclasses.fields(Feature)}
    rebuilt = {key: value for key, value in data.items() if key in fields}
    rebuilt["upper"] = math.inf if rebuilt["upper"] is None else rebuilt["upper"]
    assert Feature(**rebuilt) == feature


def test_domain_strings():
    assert FEATURES_BY_NAME["nox"].domain == "(0, 1)"
    assert FEATURES_BY_NAME["zn"].domain == "[0, 100]"
    assert FEATURES_BY_NAME["chas"].domain == "{0, 1}"
    assert FEATURES_BY_NAME["crim"].domain == "[0, inf)"
    assert FEATURES_BY_NAME["rm"].domain == "(0, inf)"
    assert FEATURES_BY_NAME["rad"].domain == "[1, inf)"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("nox", 1.5, "must be in (0, 1), got 1.5"),
        ("nox", 0, "must be in (0, 1), got 0"),
        ("chas", 2, "must be 0 or 1, got 2"),
        ("rad", 4.5, "must be a whole number, got 4.5"),
        ("crim", "high", "must be a number, got str"),
        ("crim", True, "must be a number, got bool"),
        ("crim", float("nan"), "must be a finite number, got nan"),
        ("age", 100.5, "must be in [0, 100], got 100.5"),
    ],
)
def test_violation_messages(name, value, message):
    assert FEATURES_BY_NAME[name].violation(value) == message


@pytest.mark.parametrize(
    ("name", "value"), [("nox", 0.5), ("chas", 1), ("rad", 24), ("crim", np.float32(3.2))]
)
def test_valid_values_pass(name, value):
    assert FEATURES_BY_NAME[name].violation(value) is None


def test_default_features_exclude_b_only():
    assert "b" in ALL_FEATURES and "b" not in DEFAULT_FEATURES
    assert len(DEFAULT_FEATURES) == len(ALL_FEATURES) - 1


def test_select_refuses_unknown_and_duplicate_names():
    assert [feature.name for feature in select(["lstat", "rm"])] == ["lstat", "rm"]
    with pytest.raises(ValueError, match="unknown feature"):
        select(["rooms"])
    with pytest.raises(ValueError, match="duplicates"):
        select(["rm", "rm"])


def test_first_violations_names_rows_and_columns_and_stops_at_limit():
    rows = [[0.5, 1], [1.5, 2], [2.0, 0]]
    assert first_violations(rows, ["nox", "chas"]) == [
        "row 1, column 'nox': must be in (0, 1), got 1.5",
        "row 1, column 'chas': must be 0 or 1, got 2",
        "row 2, column 'nox': must be in (0, 1), got 2",
    ]
    assert len(first_violations(rows, ["nox", "chas"], limit=2)) == 2
