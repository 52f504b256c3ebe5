from __future__ import annotations

import subprocess

import numpy as np
import pytest

from model import paths
from model.dataset import load_dataset
from model.evaluation import QualityGate, predict_latency, repeated_kfold
from model.pipeline import make_candidate, param_grid, strip_prefix
from model.schema import ALL_FEATURES
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
    from model.schema import DEFAULT_FEATURES

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
    from model.evaluation import cross_validate, tuned

    x, y = frame[["rm", "lstat"]].to_numpy(), frame["medv"].to_numpy()
    grid = param_grid("gbr", {"max_depth": [1, 3]})
    search = tuned(make_candidate("gbr", params={"n_estimators": 20}), grid, seed=0, inner_splits=2)
    result = cross_validate(search, x, y, repeated_kfold(2, 1, 0), progress=False)
    assert len(result.chosen_params) == 2
    assert all(strip_prefix("gbr", chosen)["max_depth"] in (1, 3) for chosen in result.chosen_params)
    assert param_grid("linear") == {}


def test_quality_gate_names_every_broken_threshold():
    gate = QualityGate()
    assert gate.failures({"rmse": 3.9, "mae": 2.9, "r2": 0.81}) == []
    assert gate.failures({"rmse": 4.5, "mae": 3.5, "r2": 0.5}) == [
        "R² 0.500 < 0.8",
        "MAE 3.500 > 3.0",
        "RMSE 4.500 > 4.0",
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
    from model.pipeline import FAST_GBR_PARAMS

    plan = Plan(
        splits=2,
        repeats=1,
        importance_repeats=0,
        nested_repeats=1,
        inner_splits=2,
        grid={"min_samples_leaf": [2, 30]},
        gbr_params={**FAST_GBR_PARAMS, "n_estimators": 30},
    )
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
