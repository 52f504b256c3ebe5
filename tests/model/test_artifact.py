from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from model.artifact import (
    INTERVALS_FILE,
    INTERVALS_SHA256,
    ONNX,
    ONNX_FILE,
    ONNX_SHA256,
    SKLEARN,
    ArtifactError,
    load_artifact,
    read_metadata,
    serving_format,
    sha256_file,
    verify_artifact,
)
from model.compiled import PARITY_TOLERANCE
from model.schema import DEFAULT_FEATURES, FEATURES_BY_NAME


@pytest.fixture
def copy(artifact_dir, tmp_path):
    target = tmp_path / "artifact"
    shutil.copytree(artifact_dir, target)
    return target


def test_metadata_describes_the_model(artifact_dir):
    metadata = read_metadata(artifact_dir)
    assert metadata["name"] == "housing-price"
    assert metadata["version"].startswith("dev-")
    assert metadata["created_at"].endswith("+00:00")
    assert metadata["features"] == [FEATURES_BY_NAME[name].to_dict() for name in DEFAULT_FEATURES]
    assert metadata["target"] == {
        "name": "medv",
        "description": "Median value of owner-occupied homes",
        "unit": "USD 1000s",
    }
    assert metadata["estimator"] == "TransformedTargetRegressor(GradientBoostingRegressor)"
    assert {"scikit-learn", "numpy", "python"} <= set(metadata["libraries"])
    assert metadata["params"]["candidate"] == "gbr_log"
    for key in (
        "rmse",
        "mae",
        "r2",
        "b_cost_rmse",
        "fit_seconds",
        "predict_latency_p50_us",
        "importance_lstat",
    ):
        assert isinstance(metadata["metrics"][key], float), key


def test_reference_sample_matches_the_model(artifact_dir):
    artifact = load_artifact(artifact_dir)
    reference = artifact.metadata["reference"]
    rows = np.array(reference["features"])
    assert rows.shape == (300, len(DEFAULT_FEATURES))
    assert reference["n_rows"] == 506
    np.testing.assert_allclose(artifact.pipeline.predict(rows), reference["predictions"])
    rm = reference["quantiles"]["rm"]
    assert rm["0"] <= rm["0.25"] <= rm["0.5"] <= rm["0.75"] <= rm["1"]
    assert set(reference["quantiles"]) == set(DEFAULT_FEATURES)


def test_round_trip_predicts_house_prices(artifact_dir):
    artifact = load_artifact(artifact_dir, expected_sha256=read_metadata(artifact_dir)["sha256"].upper())
    assert artifact.feature_names == list(DEFAULT_FEATURES)
    assert artifact.version == artifact.metadata["version"]
    predictions = artifact.pipeline.predict(np.array(artifact.metadata["reference"]["features"][:20]))
    assert ((predictions > 5) & (predictions < 55)).all()


def test_tampered_model_is_refused_before_unpickling(copy):
    with open(copy / "model.joblib", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ArtifactError, match="refusing to unpickle a file that was modified"):
        load_artifact(copy)


def test_wrong_pinned_sha256_is_refused(copy):
    with pytest.raises(ArtifactError, match="does not match the pinned sha256"):
        verify_artifact(copy, expected_sha256="0" * 64)


def test_the_intervals_file_is_pinned_and_carries_the_calibration(artifact_dir, copy):
    metadata = read_metadata(artifact_dir)
    assert metadata[INTERVALS_SHA256] == sha256_file(artifact_dir / INTERVALS_FILE)
    assert metadata["intervals"] == {
        "method": "normalised",
        "levels": [0.8, 0.9, 0.95],
        "outputs": ["price_lower", "price_upper"],
        "parameter": "interval_level",
    }
    for model_format in (ONNX, SKLEARN):
        artifact = load_artifact(artifact_dir, model_format=model_format)
        assert artifact.intervals is not None and artifact.intervals.levels == (0.8, 0.9, 0.95)
        assert artifact.intervals.n_calibration == 506
    calibration = copy / INTERVALS_FILE
    calibration.write_text(calibration.read_text().replace('"quantiles": [', '"quantiles": [9, '))
    for model_format in (ONNX, SKLEARN):
        with pytest.raises(ArtifactError, match=r"intervals\.json sha256 .* refusing to load a file"):
            load_artifact(copy, model_format=model_format)


def test_broken_metadata_is_refused(copy, tmp_path):
    (copy / "model.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        read_metadata(copy)
    (copy / "model.json").write_text(json.dumps({"name": "housing-price"}))
    with pytest.raises(ArtifactError, match="lacks required keys"):
        read_metadata(copy)
    with pytest.raises(ArtifactError, match="not a model artifact directory"):
        read_metadata(tmp_path / "nowhere")


# --- the compiled form (model.onnx) -------------------------------------------------------------------------


def test_artifact_carries_a_compiled_form_that_predicts_as_scikit_learn(artifact_dir):
    metadata = read_metadata(artifact_dir)
    assert metadata[ONNX_SHA256] == sha256_file(artifact_dir / ONNX_FILE)
    metrics = metadata["metrics"]
    assert 0 <= metrics["compiled_parity_max_abs_diff"] <= PARITY_TOLERANCE
    assert 0 < metrics["compiled_predict_latency_p50_us"] < metrics["predict_latency_p50_us"]
    compiled = load_artifact(artifact_dir, model_format=ONNX)
    assert compiled.format == ONNX and compiled.sha256 == metadata[ONNX_SHA256]
    rows = np.array(metadata["reference"]["features"])
    np.testing.assert_allclose(
        compiled.pipeline.predict(rows), metadata["reference"]["predictions"], atol=PARITY_TOLERANCE
    )
    assert compiled.pipeline.predict(rows).shape == (len(rows),)


def test_modified_compiled_form_is_refused_before_loading(copy):
    with open(copy / ONNX_FILE, "ab") as handle:
        handle.write(b"\0")
    for model_format in (ONNX, SKLEARN):  # whichever form is loaded, a modified artifact is refused whole
        with pytest.raises(ArtifactError, match="refusing to load a file that was modified"):
            load_artifact(copy, model_format=model_format)


def test_serving_the_compiled_form_still_refuses_a_modified_pickle(copy):
    with open(copy / "model.joblib", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ArtifactError, match="refusing to unpickle a file that was modified"):
        load_artifact(copy, model_format=ONNX)


def test_the_pin_names_the_file_that_is_loaded(copy):
    metadata = read_metadata(copy)
    load_artifact(copy, metadata[ONNX_SHA256], model_format=ONNX)
    with pytest.raises(ArtifactError, match="does not match the pinned sha256"):
        load_artifact(copy, metadata["sha256"], model_format=ONNX)
    with pytest.raises(ArtifactError, match="does not match the pinned sha256"):
        load_artifact(copy, metadata[ONNX_SHA256], model_format=SKLEARN)


def test_serving_format_follows_the_request_the_artifact_and_the_pin(artifact_dir):
    metadata = read_metadata(artifact_dir)
    assert serving_format(metadata, ONNX) == (ONNX, None)
    assert serving_format(metadata, ONNX, metadata[ONNX_SHA256]) == (ONNX, None)
    assert serving_format(metadata, SKLEARN, metadata[ONNX_SHA256]) == (SKLEARN, None)
    pinned_pickle, reason = serving_format(metadata, ONNX, metadata["sha256"].upper())
    assert pinned_pickle == SKLEARN and f"pin model.onnx's sha256 {metadata[ONNX_SHA256]}" in str(reason)
    old = {key: value for key, value in metadata.items() if key != ONNX_SHA256}
    fallback, reason = serving_format(old, ONNX)
    assert fallback == SKLEARN and "has no model.onnx" in str(reason)
