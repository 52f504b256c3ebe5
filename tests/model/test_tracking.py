"""MLflow tracking and the Model Registry against a real SQLite store in tmp (no tracking server needed)."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest

from housing.cli import main
from model.artifact import read_metadata


def test_train_registers_challenger_and_promote_moves_champion(isolated, capsys):
    from model.promote_cli import version_for
    from model.tracking import EXPERIMENT, REGISTERED_MODEL, use_tracking

    assert main(["train", "--fast", "--no-progress"]) == 0
    assert main(["train", "--fast", "--no-progress", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "mlflow run id: " in out and "registered model: housing-price version 2 (alias challenger)" in out

    client = use_tracking()
    assert version_for("challenger") == "2"
    version = client.get_model_version(REGISTERED_MODEL, "2")
    artifact = isolated / "artifacts" / "housing-price" / "2"
    metadata = read_metadata(artifact)
    assert metadata["version"] == "2"
    assert version.tags["sha256"] == metadata["sha256"]
    assert version.tags["onnx_sha256"] == metadata["onnx_sha256"]
    assert (isolated / "artifacts" / "housing-price" / "latest").resolve() == artifact.resolve()

    run = client.get_run(version.run_id)
    assert run.info.experiment_id == client.get_experiment_by_name(EXPERIMENT).experiment_id
    assert run.data.params["candidate"] == "gbr_log" and run.data.params["seed"] == "3"
    assert run.data.metrics["rmse"] == pytest.approx(metadata["metrics"]["rmse"])
    assert {"b_cost_rmse", "fit_seconds", "predict_latency_p50_us", "importance_lstat"} <= set(
        run.data.metrics
    )
    # mean |TreeSHAP contribution| (model/importance.py), the same figures as model.json's
    shap_lstat = metadata["global_importance"]["lstat"]
    assert run.data.metrics["global_importance_lstat"] == pytest.approx(shap_lstat)
    assert run.data.tags["quality_gate"] == "passed"
    logged = {
        item.path
        for folder in ("plots", "artifact")
        for item in client.list_artifacts(run.info.run_id, folder)
    }
    assert {"plots/predicted_vs_actual.png", "plots/residuals.png", "plots/feature_importance.png"} <= logged
    assert "plots/global_importance.png" in logged
    assert {"artifact/model.joblib", "artifact/model.onnx", "artifact/model.json"} <= logged
    assert {"compiled_parity_max_abs_diff", "compiled_predict_latency_p50_us"} <= set(run.data.metrics)
    compiled = mlflow.pyfunc.load_model(f"runs:/{version.run_id}/onnx")  # the onnx flavour, as logged
    predicted = compiled.predict(np.array(metadata["reference"]["features"][:3], dtype=np.float32))
    np.testing.assert_allclose(
        np.ravel(next(iter(predicted.values()))), metadata["reference"]["predictions"][:3], atol=0.01
    )

    model = mlflow.pyfunc.load_model(f"models:/{REGISTERED_MODEL}@challenger")
    assert model.metadata.signature is not None
    example = metadata["reference"]["features"][:3]
    np.testing.assert_allclose(model.predict(np.array(example)), metadata["reference"]["predictions"][:3])

    assert main(["promote", "1"]) == 0
    assert "housing-price@champion -> version 1 (new alias)" in capsys.readouterr().out
    assert main(["promote", "2"]) == 0
    assert "(was version 1)" in capsys.readouterr().out
    assert version_for("champion") == "2"
    assert main(["promote", "2", "--alias", "stable"]) == 0
    assert version_for("stable") == "2"


def test_promote_of_a_missing_version_fails_clearly(isolated, capsys):
    from model.tracking import use_tracking

    use_tracking()
    assert main(["promote", "7"]) == 1
    assert "cannot promote housing-price version 7" in capsys.readouterr().err


def test_default_store_lives_under_var(tmp_path, monkeypatch):
    from model.tracking import artifact_location, tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("HOUSING_VAR_DIR", str(tmp_path))
    assert tracking_uri() == f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    assert artifact_location(tracking_uri()) == (tmp_path / "mlflow" / "artifacts").as_uri()
    assert artifact_location("http://127.0.0.1:5000") is None
