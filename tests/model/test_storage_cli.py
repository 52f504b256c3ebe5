"""publish, download and evaluate against a real Azurite, through the ``housing`` command."""

from __future__ import annotations

from housing.cli import main
from model.artifact import load_artifact, read_metadata
from model.storage import download, publish


def test_publish_download_round_trip_is_idempotent(azurite, artifact_dir, tmp_path):
    url = azurite.url("models", "housing/round-trip")
    first = publish(artifact_dir, url, progress=False)
    files = ["model.joblib", "model.onnx", "dle.json", "outliers.json", "intervals.json", "model.json"]
    assert first.uploaded == files and first.skipped == []
    second = publish(artifact_dir, url, progress=False)
    assert second.uploaded == []
    assert second.skipped == files
    fetched = load_artifact(
        download(url, tmp_path / "fetched"), expected_sha256=read_metadata(artifact_dir)["sha256"]
    )
    assert fetched.metadata == read_metadata(artifact_dir)
    compiled = load_artifact(fetched.path, read_metadata(artifact_dir)["onnx_sha256"], model_format="onnx")
    assert compiled.format == "onnx"
    assert fetched.intervals is not None  # the calibration came too, verified
    assert fetched.intervals.to_bytes() == (artifact_dir / "intervals.json").read_bytes()


def test_publish_command_reports_uploaded_and_skipped(azurite, artifact_dir, capsys):
    url = azurite.url("models", "housing/cli")
    assert main(["publish", str(artifact_dir), "--to", url, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "uploaded: model.joblib, model.onnx, dle.json, outliers.json, intervals.json, model.json" in out
    onnx_sha256 = read_metadata(artifact_dir)["onnx_sha256"]
    assert f"onnx_sha256: {onnx_sha256} (pin it to serve the compiled form)" in out
    assert main(["publish", str(artifact_dir), "--to", url, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "uploaded: nothing" in out
    files = "model.joblib, model.onnx, dle.json, outliers.json, intervals.json, model.json"
    assert f"skipped (unchanged): {files}" in out


def test_the_azure_sdks_header_dumps_show_only_with_verbose(azurite, artifact_dir, capsys):
    url = azurite.url("models", "housing/verbose")
    assert main(["publish", str(artifact_dir), "--to", url, "--no-progress"]) == 0
    quiet = capsys.readouterr().err
    assert "Request URL" not in quiet and "http_logging_policy" not in quiet
    assert main(["publish", str(artifact_dir), "--to", url, "--no-progress", "--verbose"]) == 0
    verbose = capsys.readouterr().err
    assert "logger=azure.core.pipeline.policies.http_logging_policy" in verbose and "Request URL" in verbose
    assert main(["--log-level", "DEBUG", "publish", str(artifact_dir), "--to", url, "--no-progress"]) == 0
    assert "Request URL" in capsys.readouterr().err


def test_publish_refuses_a_tampered_artifact(azurite, artifact_dir, tmp_path, capsys):
    import shutil

    copy = shutil.copytree(artifact_dir, tmp_path / "copy")
    (copy / "model.joblib").write_bytes(b"not the model")
    assert (
        main(["publish", str(copy), "--to", azurite.url("models", "housing/tampered"), "--no-progress"]) == 1
    )
    assert "refusing to unpickle" in capsys.readouterr().err


def test_evaluate_scores_an_artifact_from_blob_storage(azurite, artifact_dir, capsys):
    url = azurite.url("models", "housing/evaluate")
    publish(artifact_dir, url, progress=False)
    assert main(["evaluate", url]) == 0
    out = capsys.readouterr().out
    assert "in-sample" in out and "quality gate: passed" in out


def test_evaluate_fails_the_gate_on_data_the_model_cannot_explain(artifact_dir, bundled, write_csv, capsys):
    shuffled = bundled.assign(medv=bundled["medv"].sample(frac=1, random_state=0).to_numpy())
    assert main(["evaluate", str(artifact_dir), "--data", str(write_csv(shuffled))]) == 1
    assert "quality gate failed: R²" in capsys.readouterr().err


def test_evaluate_refuses_a_wrong_pinned_sha256(artifact_dir, capsys):
    assert main(["evaluate", str(artifact_dir), "--expected-sha256", "0" * 64]) == 1
    assert "does not match the pinned sha256" in capsys.readouterr().err


def test_train_can_publish_what_it_trained(azurite, tmp_path, capsys):
    url = azurite.url("models", "housing/from-train")
    output = str(tmp_path / "a")
    assert (
        main(["train", "--fast", "--no-mlflow", "--no-progress", "--output", output, "--publish", url]) == 0
    )
    uploaded = "uploaded: model.joblib, model.onnx, dle.json, outliers.json, intervals.json, model.json"
    assert uploaded in capsys.readouterr().out
    assert load_artifact(download(url, tmp_path / "b")).version.startswith("dev-")
