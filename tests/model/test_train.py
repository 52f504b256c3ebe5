from __future__ import annotations

import subprocess

import numpy as np
import pytest
from sklearn.base import clone

from model import paths
from model.dataset import load_dataset
from model.evaluation import QualityGate, predict_latency, repeated_kfold
from model.pipeline import FAST_GBR_PARAMS, make_candidate, param_grid, strip_prefix
from model.schema import ALL_FEATURES, DEFAULT_FEATURES
from model.train import train_model

from .conftest import housing

TIMINGS = ("fit_seconds", "fit_cpu_seconds", "predict_latency", "predict_cpu")


def figures(metrics: dict[str, float]) -> dict[str, float]:
    """The metrics that must not depend on the machine (no timings)."""
    return {key: value for key, value in metrics.items() if not any(part in key for part in TIMINGS)}


@pytest.fixture(scope="module")
def frame():
    return load_dataset()


@pytest.fixture(scope="module")
def fast_result(frame):
    return train_model(frame, fast=True, progress=False)


def test_same_seed_and_data_give_the_same_model_and_figures(frame, fast_result):
    again = train_model(frame, fast=True, seed=42, progress=False)
    np.testing.assert_array_equal(
        fast_result.pipeline.predict(frame_x(frame)), again.pipeline.predict(again.x)
    )
    assert figures(fast_result.metrics) == figures(again.metrics)
    assert fast_result.params == again.params
    assert {"fit_cpu_seconds", "predict_cpu_p50_us"} <= set(again.metrics)


def frame_x(frame):
    return frame[list(DEFAULT_FEATURES)].to_numpy()


def test_fast_run_compares_candidates_and_measures_the_cost_of_b(fast_result):
    result = fast_result
    metrics = result.metrics
    assert set(result.comparison) == {"linear", "gbr", "gbr_log"}
    assert metrics["cv_gbr_log_rmse_mean"] < metrics["cv_linear_rmse_mean"]
    assert metrics["b_cost_rmse"] == pytest.approx(
        metrics["cv_without_b_rmse_mean"] - metrics["cv_with_b_rmse_mean"]
    )
    assert metrics["rmse"] == metrics["cv_gbr_log_rmse_mean"]
    assert not QualityGate().failures(result.headline)
    assert max(result.importances, key=result.importances.get) in {"lstat", "rm"}
    assert np.isfinite(result.evaluation.oof_predictions).all()


def test_model_with_b_uses_thirteen_features(frame):
    result = train_model(frame, ALL_FEATURES, candidate="linear", fast=True, progress=False)
    assert result.x.shape == (506, 13)
    assert result.metrics["cv_with_b_rmse_mean"] == result.metrics["cv_linear_rmse_mean"]


def test_nested_cv_tunes_inside_each_outer_fold(frame):
    from model.evaluation import cross_validate, score_fold

    x, y = frame[["rm", "lstat"]].to_numpy(), frame["medv"].to_numpy()
    grid = param_grid("gbr", {"max_depth": [1, 3]})
    estimator = make_candidate("gbr", params={"n_estimators": 20})
    folds = [
        score_fold(estimator, x, y, train, test, grid=grid, inner_splits=2, seed=0)
        for train, test in repeated_kfold(2, 1, 0).split(x)
    ]
    assert all(strip_prefix("gbr", fold.chosen_params)["max_depth"] in (1, 3) for fold in folds)
    plain = cross_validate(estimator, x, y, repeated_kfold(2, 1, 0), progress=False)
    assert plain.chosen_params == [] and len(plain.folds) == 2
    assert param_grid("linear") == {}


def test_the_inner_search_chooses_and_refits_as_grid_search_cv_does(frame):
    """The search keeps its out-of-fold predictions and is otherwise GridSearchCV: same choice, same model."""
    from sklearn.model_selection import GridSearchCV, KFold

    from model.evaluation import search

    x, y = frame[list(DEFAULT_FEATURES)].to_numpy()[:300], frame["medv"].to_numpy()[:300]
    estimator = make_candidate("gbr_log", params={**FAST_GBR_PARAMS, "n_estimators": 30})
    grid = param_grid("gbr_log", {"max_features": [0.4, 0.6], "min_samples_leaf": [2, 3]})
    ours = search(estimator, grid, x, y, inner_splits=3, seed=5)
    theirs = GridSearchCV(
        estimator, grid, cv=KFold(3, shuffle=True, random_state=5), scoring="neg_root_mean_squared_error"
    ).fit(x, y)
    assert ours.best_params == theirs.best_params_
    np.testing.assert_array_equal(ours.model.predict(x), theirs.best_estimator_.predict(x))
    for train, held_out in KFold(3, shuffle=True, random_state=5).split(x):  # each row by a model without it
        model = clone(estimator).set_params(**ours.best_params).fit(x[train], y[train])
        np.testing.assert_array_equal(ours.oof_predictions[held_out], model.predict(x[held_out]))


def tiny_plan(**changes):
    """A full plan's shape (nested CV) at a tiny size: 2 outer folds, 2 inner, 2 settings, 30 trees."""
    from model.evaluation import Plan

    settings = {
        "splits": 2,
        "repeats": 1,
        "importance_repeats": 0,
        "nested_repeats": 1,
        "inner_splits": 2,
        "grid": {"min_samples_leaf": [2, 30]},
        "gbr_params": {**FAST_GBR_PARAMS, "n_estimators": 30},
    }
    return Plan(**{**settings, **changes})


def test_the_figures_are_the_same_in_one_process_or_two(frame):
    plan = tiny_plan(importance_repeats=1)
    one, two = (train_model(frame, plan=plan, progress=False, jobs=jobs) for jobs in (1, 2))
    assert figures(two.metrics) == figures(one.metrics)
    assert two.intervals == one.intervals and two.evaluation.chosen_params == one.evaluation.chosen_params


def test_quality_gate_names_every_broken_threshold():
    gate = QualityGate()
    assert gate.failures({"rmse": 3.9, "mae": 2.9, "r2": 0.81}) == []
    assert gate.failures({"rmse": 4.5, "mae": 3.5, "r2": 0.5}) == [
        "R² 0.500 < 0.8",
        "MAE 3.500 > 3.0",
        "RMSE 4.500 > 4.0",
    ]
    good = {"rmse": 3.0, "mae": 2.0, "r2": 0.9}
    assert gate.failures({**good, "interval_coverage_90": 0.85}) == []
    assert gate.failures({**good, "interval_coverage_90": 0.95}) == []
    assert gate.failures({**good, "interval_coverage_90": 0.8}) == [
        "90% interval coverage 80.0% outside [85%, 95%]"
    ]
    assert gate.failures({**good, "interval_coverage_90": 0.97}) == [
        "90% interval coverage 97.0% outside [85%, 95%]"
    ]


def test_predict_latency_reports_percentiles(frame):
    model = make_candidate("linear").fit(frame[["rm"]].to_numpy(), frame["medv"].to_numpy())
    latency = predict_latency(model.predict, frame[["rm"]].to_numpy()[:1], repeats=20)
    assert 0 < latency["predict_latency_p50_us"] <= latency["predict_latency_p99_us"]


def test_unknown_candidate_is_refused():
    with pytest.raises(ValueError, match="unknown candidate 'forest'"):
        make_candidate("forest")


def test_gate_fails_a_bad_model_with_non_zero_exit_logs_the_run_and_registers_nothing(isolated, tmp_path):
    """A real ``housing train`` process with a real SQLite MLflow store (see the ``isolated`` fixture)."""
    output = tmp_path / "artifact"
    completed = subprocess.run(
        housing("train", "--candidate", "dummy", "--fast", "--no-progress", "--output", str(output)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 1
    assert "quality gate failed for dummy: R²" in completed.stderr
    assert "needs R² >= 0.8, MAE <= 3.0, RMSE <= 4.0" in completed.stderr
    assert not output.exists() and not (isolated / "artifacts").exists()

    from model.tracking import EXPERIMENT, use_tracking

    client = use_tracking()
    runs = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
    assert len(runs) == 1 and runs[0].data.tags["quality_gate"].startswith("failed: R²")
    assert runs[0].data.params["candidate"] == "dummy"
    assert client.search_registered_models() == []


def test_train_refuses_invalid_data_naming_row_and_column(bundled, write_csv, capsys):
    from housing.cli import main

    bundled.at[5, "nox"] = 1.5
    assert main(["train", "--fast", "--no-mlflow", "--data", str(write_csv(bundled))]) == 1
    assert "row 5, column 'nox': must be in (0, 1), got 1.5" in capsys.readouterr().err


def test_train_writes_default_location_and_latest_pointer(isolated, capsys):
    from housing.cli import main
    from model.paths import default_artifact_dir, latest_artifact

    assert latest_artifact() is None
    assert main(["train", "--fast", "--no-mlflow", "--no-progress", "--with-b"]) == 0
    captured = capsys.readouterr()
    assert "cost of excluding b" in captured.out and "predict 1 row" in captured.out
    assert "training with b, a variable built on an assumption about race" in captured.err
    latest = latest_artifact()
    assert latest is not None and latest.parent == paths.artifacts_root().resolve()
    assert latest == default_artifact_dir(latest.name).resolve()
    assert paths.artifacts_root() == isolated / "artifacts" / "housing-price"
    assert (latest / "model.json").is_file()


def test_full_plan_reports_nested_cv_and_ships_the_tuned_settings(frame):
    from model.evaluation import Plan

    plan = tiny_plan()
    assert plan.describe() == (
        "1x2-fold CV; nested CV 1x2-fold outer, 2-fold inner grid search over 2 settings (min_samples_leaf)"
    )
    result = train_model(frame, plan=plan, progress=False)
    assert result.metrics["rmse"] == result.metrics["nested_cv_rmse_mean"]
    assert len(result.evaluation.chosen_params) == 2
    assert result.params["min_samples_leaf"] in (2, 30)
    assert result.params["n_estimators"] == 30
    assert result.pipeline.steps[-1][1].regressor_.min_samples_leaf == result.params["min_samples_leaf"]
    assert Plan().describe().startswith("3x5-fold CV; nested CV 2x5-fold outer, 3-fold inner grid search")


def test_cli_candidate_choices_match_the_pipelines():
    from model.pipeline import CANDIDATES, DEFAULT_CANDIDATE
    from model.train_cli import CANDIDATE_CHOICES

    assert CANDIDATE_CHOICES[0] == DEFAULT_CANDIDATE
    assert set(CANDIDATE_CHOICES) == {*CANDIDATES, "dummy"}
    for name in CANDIDATE_CHOICES:
        assert make_candidate(name).steps[-1][0] == "regressor"


# --- prediction intervals: measured on held-out folds -------------------------------------------------------


def test_interval_coverage_is_measured_on_held_out_rows_and_meets_its_targets(frame, fast_result):
    from mapie.metrics.regression import regression_coverage_score

    from model.coverage import QUINTILE_FLOOR

    metrics, held_out = fast_result.metrics, fast_result.held_out_intervals
    # Each row held out once in the fast run's 1x3 folds: no row is scored by bounds calibrated on it.
    assert sorted(held_out.rows.tolist()) == list(range(len(frame)))
    truth = fast_result.y[held_out.rows]
    # Recomputed independently with MAPIE's metric, from the held-out bounds alone.
    stacked = np.stack([held_out.lower, held_out.upper], axis=1)  # [n, 2, n_levels]
    for level, expected in zip((80, 90, 95), regression_coverage_score(truth, stacked), strict=True):
        assert metrics[f"interval_coverage_{level}"] == pytest.approx(expected)
    assert 0.88 <= metrics["interval_coverage_90"] <= 0.93
    assert metrics["interval_coverage_80"] < metrics["interval_coverage_90"] < metrics["interval_coverage_95"]
    quintiles = [metrics[f"interval_coverage_90_{s}_q{q}"] for s in ("price", "lstat") for q in range(1, 6)]
    assert min(quintiles) == metrics["interval_coverage_90_worst_quintile"] >= QUINTILE_FLOOR
    assert not QualityGate().failures(fast_result.headline)


def test_the_shipped_intervals_beat_the_constant_width_baseline_where_it_fails(fast_result):
    """The evidence for the choice: the baseline's coverage falls below the floor in some quintile."""
    from model.coverage import QUINTILE_FLOOR

    metrics = fast_result.metrics
    assert metrics["interval_constant_coverage_90_worst_quintile"] < QUINTILE_FLOOR
    assert metrics["interval_normalised_coverage_90_worst_quintile"] >= QUINTILE_FLOOR
    assert metrics["interval_normalised_width_90_median"] < metrics["interval_constant_width_90_median"]
    assert (
        fast_result.intervals.method == "normalised" and fast_result.params["interval_method"] == "normalised"
    )
    assert fast_result.intervals.n_calibration == len(fast_result.y)


def test_an_outer_fold_calibrates_without_the_rows_it_scores(frame):
    """New prices for the held-out rows change their scores, not their bounds: calibration never saw them."""
    from model.evaluation import score_fold
    from model.intervals import METHODS

    x, y = frame[list(DEFAULT_FEATURES)].to_numpy(), frame["medv"].to_numpy()
    train, test = next(repeated_kfold(3, 1, 0).split(x))
    estimator = make_candidate("gbr_log", params={**FAST_GBR_PARAMS, "n_estimators": 30})
    options = {"inner_splits": 3, "seed": 0, "features": DEFAULT_FEATURES, "interval_methods": METHODS}
    fold = score_fold(estimator, x, y, train, test, **options)
    changed = y.copy()
    changed[test] = 50.0
    other = score_fold(estimator, x, changed, train, test, **options)
    assert fold.metrics != other.metrics
    for method in METHODS:
        np.testing.assert_array_equal(fold.bounds[method][0], other.bounds[method][0])
        np.testing.assert_array_equal(fold.bounds[method][1], other.bounds[method][1])
        assert fold.bounds[method][0].shape == (len(test), 3)


def test_mapie_methods_bound_held_out_rows_too(frame):
    from model.coverage import MAPIE_METHODS, fold_bounds

    x, y = frame[list(DEFAULT_FEATURES)].to_numpy(), frame["medv"].to_numpy()
    train, test = next(repeated_kfold(3, 1, 0).split(x))
    model = make_candidate("gbr_log", params={**FAST_GBR_PARAMS, "n_estimators": 30}).fit(x[train], y[train])
    bounds = fold_bounds(
        model, x[train], y[train], model.predict(x[train]), x[test], model.predict(x[test]), DEFAULT_FEATURES,
        methods=MAPIE_METHODS, seed=0,
    )  # fmt: skip
    for lower, upper in bounds.values():
        assert lower.shape == upper.shape == (len(test), 3)
        assert (lower < upper).all() and (np.diff(upper - lower, axis=1) > 0).mean() > 0.95
        inside = (y[test] >= lower[:, 1]) & (y[test] <= upper[:, 1])
        assert 0.75 < inside.mean() <= 1.0
    linear = make_candidate("linear").fit(x[train], y[train])
    assert fold_bounds(linear, x[train], y[train], y[train], x[test], y[test], DEFAULT_FEATURES,
                       methods=MAPIE_METHODS, seed=0) == {}  # fmt: skip
