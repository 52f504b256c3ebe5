"""The interval model's arithmetic, its file, and the rule every served level follows."""

from __future__ import annotations

import math

import numpy as np
import pytest

from model.intervals import (
    CONSTANT,
    LEVELS,
    NORMALISED,
    RELATIVE,
    Intervals,
    LevelError,
    calibrate,
    check_level,
    conformal_quantile,
)


def test_the_conformal_quantile_is_the_ceil_n_plus_one_level_th_smallest_score():
    scores = np.arange(1.0, 20.0)  # 19 scores
    assert conformal_quantile(scores, 0.9) == 18.0  # ceil(20 * 0.9) = 18th
    assert conformal_quantile(scores[::-1], 0.8) == 16.0
    assert conformal_quantile(scores[:5], 0.9) == math.inf  # too few scores to promise 90%


def test_exchangeable_scores_are_covered_at_the_level_promised():
    generator = np.random.default_rng(0)
    hits = []
    for _ in range(400):
        scores = np.abs(generator.standard_t(3, size=101))
        hits.append(scores[-1] <= conformal_quantile(scores[:-1], 0.9))
    assert 0.87 <= np.mean(hits) <= 0.95  # at least 90% in expectation (binomial spread over 400 draws)


@pytest.mark.parametrize("value", [0.8, 0.9, 0.95, "0.9", 0.9000000001])
def test_a_served_level_is_accepted(value):
    assert check_level(value) in LEVELS


@pytest.mark.parametrize("value", [0.85, 0.5, 1, "ninety", None, True, [0.9]])
def test_any_other_level_is_refused_naming_the_rule(value):
    with pytest.raises(LevelError, match=r"interval_level: must be one of 0.8, 0.9, 0.95, got "):
        check_level(value)


@pytest.fixture(scope="module")
def rows() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    generator = np.random.default_rng(1)
    x = generator.uniform(0, 1, size=(300, 2))
    noise = generator.normal(0, 0.05 + 0.3 * x[:, 0])  # the error grows with the first feature
    truth = np.exp(3 + x[:, 1] + noise)
    return x, truth, np.exp(3 + x[:, 1])


def test_the_normalised_scale_follows_where_the_model_errs(rows):
    x, y, predictions = rows
    intervals = calibrate(x, y, predictions, ("a", "b"), method=NORMALISED)
    assert intervals.coef[0] > 1 and abs(intervals.coef[1]) < 0.5
    lower, upper = intervals.bounds(np.array([[0.05, 0.5], [0.95, 0.5]]), np.array([20.0, 20.0]))
    assert (upper - lower)[1, 1] > 3 * (upper - lower)[0, 1]
    assert (lower < 20).all() and (upper > 20).all()


def test_constant_and_relative_widths(rows):
    x, y, predictions = rows
    constant = calibrate(x, y, predictions, ("a", "b"), method=CONSTANT)
    lower, upper = constant.bounds(x[:3], np.array([1.0, 10.0, 40.0]))
    np.testing.assert_allclose(
        upper - (np.array([1.0, 10.0, 40.0])[:, None]), np.tile(constant.quantiles, (3, 1))
    )
    assert (lower >= 0).all() and lower[0, 2] == 0.0  # a price floors at 0
    relative = calibrate(x, y, predictions, ("a", "b"), method=RELATIVE)
    lower, upper = relative.bounds(x[:2], np.array([10.0, 40.0]))
    np.testing.assert_allclose(upper[1] / upper[0], 4.0)  # a width proportional to the price
    with pytest.raises(ValueError, match="unknown interval method 'cqr'"):
        calibrate(x, y, predictions, ("a", "b"), method="cqr")


def test_the_file_round_trips_and_refuses_what_it_cannot_read(rows):
    x, y, predictions = rows
    intervals = calibrate(x, y, predictions, ("a", "b"))
    assert Intervals.from_bytes(intervals.to_bytes()) == intervals
    assert intervals.level_index(0.95) == 2
    with pytest.raises(LevelError):
        intervals.level_index(0.5)
    for broken in (b"{", b'{"format": 2}', b'{"format": 1}'):
        with pytest.raises(ValueError, match=r"intervals\.json"):
            Intervals.from_bytes(broken)
