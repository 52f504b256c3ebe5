"""The compiled (ONNX) form: conversion of every candidate, the parity gate, the rows it checks."""

from __future__ import annotations

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
    assert check_parity(pipeline, compiled, rows) <= PARITY_TOLERANCE
    assert compiled.session.get_outputs()[0].name == "medv"
    meta = compiled.session.get_modelmeta().custom_metadata_map
    assert meta == {"features": ",".join(DEFAULT_FEATURES), "unit": "USD 1000s"}


def test_parity_gate_fails_and_says_by_how_much(data):
    compiled = CompiledModel(compile_pipeline(fitted("gbr_log", data), DEFAULT_FEATURES))
    other = fitted("gbr_log", data, seed=7)  # another model: its predictions differ by dollars, not cents
    worst = float(np.abs(compiled.predict(data[0]) - other.predict(data[0])).max())
    with pytest.raises(CompileError, match=rf"differs from scikit-learn by up to {worst:.4f} USD 1000s"):
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
