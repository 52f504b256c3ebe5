"""The compiled (ONNX) form: conversion of every candidate, the parity gate, the rows it checks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from model.compiled import (
    PARITY_TOLERANCE,
    UNBOUNDED_EDGE,
    CompiledModel,
    CompileError,
    check_parity,
    compile_pipeline,
    parity_rows,
)
from model.dataset import load_dataset
from model.intervals import CONSTANT, NORMALISED, calibrate
from model.pipeline import FAST_GBR_PARAMS, make_candidate
from model.schema import DEFAULT_FEATURES
from model.train import features_and_target


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return features_and_target(load_dataset(), DEFAULT_FEATURES)


def fitted(name: str, data: tuple[np.ndarray, np.ndarray], seed: int = 42):
    return make_candidate(name, seed=seed, params=FAST_GBR_PARAMS).fit(*data)


@pytest.mark.parametrize("candidate", ["gbr_log", "gbr", "linear"])
def test_every_shipped_candidate_compiles_and_passes_the_parity_gate(data, candidate):
    pipeline = fitted(candidate, data)
    compiled = CompiledModel(compile_pipeline(pipeline, DEFAULT_FEATURES))
    rows = parity_rows(data[0], DEFAULT_FEATURES)
    worst, bounds = check_parity(pipeline, compiled, rows)
    assert worst <= PARITY_TOLERANCE and np.isnan(bounds)
    assert [output.name for output in compiled.session.get_outputs()] == ["medv"]
    meta = compiled.session.get_modelmeta().custom_metadata_map
    assert meta == {"features": ",".join(DEFAULT_FEATURES), "unit": "USD 1000s"}
    assert compiled.levels == ()
    with pytest.raises(ValueError, match="has no intervals"):
        compiled.predict_bounds(data[0][:1])


@pytest.mark.parametrize("candidate", ["gbr_log", "gbr", "linear"])
@pytest.mark.parametrize("method", [NORMALISED, CONSTANT])
def test_the_compiled_interval_bounds_agree_with_scikit_learn(data, candidate, method):
    x, y = data
    pipeline = fitted(candidate, data)
    # Calibrated on in-sample predictions: any numbers do for parity (coverage is tested on held-out folds).
    intervals = calibrate(x, y, pipeline.predict(x), DEFAULT_FEATURES, method=method)
    compiled = CompiledModel(compile_pipeline(pipeline, DEFAULT_FEATURES, intervals))
    rows = parity_rows(x, DEFAULT_FEATURES)
    worst, bounds = check_parity(pipeline, compiled, rows, intervals)
    assert worst <= PARITY_TOLERANCE and bounds <= PARITY_TOLERANCE
    assert compiled.levels == (0.8, 0.9, 0.95)
    price, lower, upper = compiled.predict_bounds(x[:5])
    np.testing.assert_array_equal(price, compiled.predict(x[:5]))  # the price alone is the same price
    assert lower.shape == upper.shape == (5, 3)
    assert (lower <= price[:, None]).all() and (price[:, None] <= upper).all()
    assert (np.diff(upper - lower, axis=1) > 0).all()  # a higher level, a wider interval


def test_compiled_bounds_that_disagree_fail_the_parity_gate(data):
    x, y = data
    pipeline = fitted("gbr_log", data)
    intervals = calibrate(x, y, pipeline.predict(x), DEFAULT_FEATURES)
    compiled = CompiledModel(compile_pipeline(pipeline, DEFAULT_FEATURES, intervals))
    wider = dataclasses.replace(intervals, quantiles=tuple(q * 1.5 for q in intervals.quantiles))
    with pytest.raises(
        CompileError, match="compiled model's interval bounds differ from scikit-learn by up to"
    ):
        check_parity(pipeline, compiled, x, wider)


def test_parity_gate_fails_and_says_by_how_much(data):
    compiled = CompiledModel(compile_pipeline(fitted("gbr_log", data), DEFAULT_FEATURES))
    other = fitted("gbr_log", data, seed=7)  # another model: its predictions differ by dollars, not cents
    worst = float(np.abs(compiled.predict(data[0]) - other.predict(data[0])).max())
    with pytest.raises(
        CompileError, match=rf"model differs from scikit-learn by up to {worst:.4f} USD 1000s"
    ):
        check_parity(other, compiled, data[0])


def test_a_model_without_an_onnx_converter_is_refused(data):
    with pytest.raises(CompileError, match="cannot convert DummyRegressor to ONNX"):
        compile_pipeline(fitted("dummy", data), DEFAULT_FEATURES)


def test_parity_rows_put_each_feature_at_each_edge_of_its_domain(data):
    x = data[0][:3]
    rows = parity_rows(x, DEFAULT_FEATURES)
    assert rows.shape == (3 * (1 + 2 * len(DEFAULT_FEATURES)), len(DEFAULT_FEATURES))
    np.testing.assert_array_equal(rows[:3], x)
    nox = DEFAULT_FEATURES.index("nox")  # (0, 1): open bounds, nudged inside
    assert set(rows[:, nox]) >= {np.nextafter(0.0, 1.0), np.nextafter(1.0, 0.0)}
    crim = DEFAULT_FEATURES.index("crim")  # [0, inf): no upper bound
    assert set(rows[:, crim]) >= {0.0, UNBOUNDED_EDGE * x[:, crim].max()}
    assert set(rows[:, DEFAULT_FEATURES.index("chas")]) == {0.0, 1.0}
