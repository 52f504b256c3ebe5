"""Houses unlike any seen in training, through a real detector: the outlier rate on /metrics and /status."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from model.artifact import read_metadata
from model.dataset import load_dataset
from model.outliers import recombined
from tests.detector.conftest import DetectorProcess


@pytest.fixture(scope="module")
def split_artifact(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray]:
    """An artifact trained on 400 bundled houses, its training features, and the 106 houses it never saw."""
    from model.train import build_artifact

    frame = load_dataset()
    order = np.random.default_rng(0).permutation(len(frame))
    folder = tmp_path_factory.mktemp("split-artifact")
    frame.iloc[order[:400]].to_csv(folder / "train.csv", index=False)
    directory = build_artifact(folder / "artifact", fast=True, data=folder / "train.csv")
    names = [feature["name"] for feature in read_metadata(directory)["features"]]
    rows = frame[names].to_numpy(float)
    return directory, rows[order[:400]], rows[order[400:]]


def test_a_window_of_synthetic_houses_has_a_high_outlier_rate_and_real_ones_a_low_one(
    start_detector: Callable[..., DetectorProcess], split_artifact: tuple[Path, np.ndarray, np.ndarray]
) -> None:
    directory, train, held = split_artifact
    version = str(read_metadata(directory)["version"])
    # Two endpoints of its own keep the two windows apart (any endpoint outside --endpoints is refused).
    detector = start_detector(
        "--window_size", "100", "--endpoints", "synthetic,real", storage_uri=str(directory)
    )
    detector.send_rows(recombined(train, 100, 0), [22.0] * 100, prefix="s", endpoint="synthetic")
    detector.send_rows(held[:100], [22.0] * 100, prefix="r", endpoint="real")

    keys = detector.status()["keys"]
    synthetic, real = keys[f"synthetic/{version}"]["outliers"], keys[f"real/{version}"]["outliers"]
    # The benchmark (./dev bench outliers) measures about 95% and 3%; bounds for one window of 100.
    assert synthetic["rows"] == real["rows"] == 100
    assert synthetic["rate"] >= 0.8
    assert real["rate"] <= 0.12
    for endpoint, figures in (("synthetic", synthetic), ("real", real)):
        labels = {"endpoint": endpoint, "model_version": version}
        assert detector.metric("housing_outlier_rate", **labels) == pytest.approx(figures["rate"])
        assert detector.metric("housing_outliers_total", **labels) == figures["outliers"]


def test_an_artifact_without_a_density_gives_no_outlier_scores(
    start_detector: Callable[..., DetectorProcess],
    split_artifact: tuple[Path, np.ndarray, np.ndarray],
    tmp_path: Path,
) -> None:
    import json
    import shutil

    directory, train, _ = split_artifact
    older = Path(shutil.copytree(directory, tmp_path / "older"))
    metadata = json.loads((older / "model.json").read_text())
    del metadata["outliers_sha256"]  # written before the density
    (older / "model.json").write_text(json.dumps(metadata))
    (older / "outliers.json").unlink()
    detector = start_detector("--window_size", "50", storage_uri=str(older))
    detector.send_rows(recombined(train, 50, 1), [22.0] * 50)
    (status,) = detector.status()["keys"].values()
    assert status["last_result"] is not None and status["outliers"] is None
    assert "housing_outlier_rate{" not in detector.client.get(detector.url + "/metrics").text
