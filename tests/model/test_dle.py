"""The loss estimator (Direct Loss Estimation): carried and verified by the artifact, faithful, sane."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from model import dle
from model.artifact import DLE_FILE, DLE_SHA256, ArtifactError, load_artifact, read_dle, sha256_file
from model.dataset import load_dataset
from model.schema import TARGET


def test_the_artifact_carries_a_hashed_loss_estimator(artifact_dir: Path) -> None:
    artifact = load_artifact(artifact_dir)
    assert artifact.metadata[DLE_SHA256] == sha256_file(artifact_dir / DLE_FILE)
    estimator = dle.LossEstimator.from_bytes(read_dle(artifact_dir, artifact.metadata) or b"")
    assert estimator.inputs == [*artifact.feature_names, "prediction"]
    assert 0 < estimator.training_mae < estimator.training_rmse


@pytest.mark.parametrize("model_format", ["sklearn", "onnx"])
def test_a_tampered_loss_estimator_is_refused_before_anything_loads(
    artifact_dir: Path, tmp_path: Path, model_format: str
) -> None:
    copy = Path(shutil.copytree(artifact_dir, tmp_path / "artifact"))
    document = json.loads((copy / DLE_FILE).read_text())
    document["models"]["abs_error"]["baseline"] += 10.0  # every estimate 10 higher: hides a bad model
    (copy / DLE_FILE).write_text(json.dumps(document))
    with pytest.raises(ArtifactError, match=r"dle\.json sha256 \w+ does not match"):
        load_artifact(copy, model_format=model_format)
    with pytest.raises(ArtifactError, match="refusing to load a file that was modified"):
        read_dle(copy, json.loads((copy / "model.json").read_text()))
    (copy / DLE_FILE).unlink()
    with pytest.raises(ArtifactError, match=r"dle\.json not found"):
        load_artifact(copy, model_format=model_format)


def test_the_exported_trees_predict_as_scikit_learn_does() -> None:
    from sklearn.ensemble import HistGradientBoostingRegressor

    generator = np.random.default_rng(0)
    x = generator.normal(size=(400, 5))
    y = np.abs(x[:, 0]) + x[:, 1] ** 2 + generator.normal(scale=0.1, size=400)
    regressor = HistGradientBoostingRegressor(random_state=0, early_stopping=False, **dle.PARAMS).fit(x, y)
    trees = dle._Trees.of(json.loads(json.dumps(dle.export(regressor))))  # through JSON, as stored
    probe = generator.normal(scale=2, size=(300, 5))
    probe[::7, 2] = np.nan  # missing values follow the recorded side
    np.testing.assert_allclose(trees.predict(probe), regressor.predict(probe), atol=1e-9)


def test_malformed_exports_are_refused() -> None:
    document = dle.fit(np.eye(30, 3), np.arange(30.0), np.arange(30.0) + 1, ["a", "b", "c"])
    broken = json.loads(dle.to_bytes(document))
    broken["models"]["abs_error"]["left"][0] = 10**9
    with pytest.raises(ValueError, match="left points outside the nodes"):
        dle.LossEstimator(broken)
    with pytest.raises(ValueError, match="format"):
        dle.LossEstimator({**document, "format": 99})
    with pytest.raises(ValueError, match="rows must have 3 columns"):
        dle.LossEstimator(document).estimate(np.ones((2, 4)), np.ones(2))


def test_the_estimate_on_held_out_rows_is_near_the_realised_error() -> None:
    from sklearn.model_selection import train_test_split

    from model.train import train_model

    train, held = train_test_split(load_dataset(), test_size=0.4, random_state=0)
    result = train_model(train.reset_index(drop=True), fast=True, progress=False)
    estimator = dle.LossEstimator.from_bytes(result.dle or b"")
    x = held[list(result.features)].to_numpy(float)
    predicted = result.pipeline.predict(x)
    errors = held[TARGET].to_numpy(float) - predicted
    estimate = estimator.estimate(x, predicted)
    realised_mae, realised_rmse = np.mean(np.abs(errors)), np.sqrt(np.mean(errors**2))
    # 203 rows: sampling noise alone is about 10%; a factor of 1.5 either way is what a broken fit breaks.
    assert realised_mae / 1.5 < estimate["mae"] < realised_mae * 1.5
    assert realised_rmse / 1.5 < estimate["rmse"] < realised_rmse * 1.5
    assert estimate["rows"] == len(held)
