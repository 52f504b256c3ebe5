"""``housing train --data ARCHIVE``: training on the traffic archive's labelled rows, alone or with the CSV.

The archive is written with model/archive.py's own writers (the files the detector uploads; tests/detector/
test_archive.py has real detectors write it), as Parquet in a directory.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from model import outliers
from model.archive import (
    LabelRecord,
    LocalStore,
    RowRecord,
    label_files,
    load_training_data,
    read_archive,
    row_files,
)
from model.artifact import read_metadata, read_outliers
from model.dataset import load_dataset
from model.outliers import OutlierDetector
from model.schema import DEFAULT_FEATURES

pytestmark = pytest.mark.slow


def write_archive(directory: Path, frame: pd.DataFrame, *, labelled: int) -> None:
    """One archived single-row request per house (model inputs without b), the first ``labelled`` labelled.

    House 0 is archived twice (a request logged twice) and labelled twice (the later label wins).
    """
    features = list(DEFAULT_FEATURES)
    now = time.time()
    rows = [
        RowRecord(f"r{index}", "default", "1", now, now + 0.01, features, [house[features].tolist()], [20.0])
        for index, house in frame.iterrows()
    ]
    rows.append(rows[0])
    labels = [
        LabelRecord(f"r{index}", [float(frame.at[index, "medv"])], now + 1) for index in range(labelled)
    ]
    if labelled:
        labels.insert(0, LabelRecord("r0", [1.0], now + 0.5))  # an earlier, wrong label of house 0
    store = LocalStore(directory)
    for name, data in {**row_files("segment-a", rows), **label_files("segment-a", labels)}.items():
        store.put(name, data)


def test_labelled_archived_rows_become_training_rows_deduplicated_with_the_latest_label(tmp_path) -> None:
    bundled = load_dataset()
    write_archive(tmp_path / "archive", bundled.iloc[:50], labelled=40)
    frame, provenance = load_training_data([str(tmp_path / "archive")], DEFAULT_FEATURES)
    assert len(frame) == 40  # 51 archived rows, 50 houses, 40 labelled
    pd.testing.assert_frame_equal(
        frame[[*list(DEFAULT_FEATURES), "medv"]], bundled.iloc[:40][[*list(DEFAULT_FEATURES), "medv"]]
    )
    assert frame["b"].isna().all()  # not a model input: never archived
    assert provenance["data_archive_rows"] == 40 and provenance["data_rows"] == 40
    with pytest.raises(ValueError, match=r"40 rows lack feature\(s\) \['b'\]"):
        load_training_data([str(tmp_path / "archive")], (*DEFAULT_FEATURES, "b"))


def test_train_on_the_archive_alone_and_with_the_bundled_data_records_rows_and_sha256(
    tmp_path, isolated, capsys
) -> None:
    from housing.cli import main
    from model.tracking import EXPERIMENT, use_tracking

    archive = tmp_path / "archive"
    bundled = load_dataset()
    write_archive(archive, bundled, labelled=len(bundled))

    alone = tmp_path / "alone"
    command = [
        "train",
        "--fast",
        "--no-mlflow",
        "--no-progress",
        "--data",
        str(archive),
        "--output",
        str(alone),
    ]
    assert main(command) == 0
    params = json.loads((alone / "model.json").read_text())["params"]
    assert (params["data_rows"], params["data_archive_rows"], params["n_rows"]) == (506, 506, 506)
    expected = load_training_data([str(archive)], DEFAULT_FEATURES)[1]["data_sha256"]
    assert params["data_sha256"] == expected and len(expected) == 64
    assert f"sha256 {expected}" in capsys.readouterr().out

    assert main(["train", "--fast", "--no-progress", "--data", "bundled", str(archive)]) == 0
    out = capsys.readouterr().out
    assert "training data: 1012 rows from bundled + " in out and "(506 archived)" in out
    client = use_tracking()
    (run,) = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
    assert math.isfinite(run.data.metrics["b_cost_rmse"])  # measured on the rows that have b (the CSV's)
    assert run.data.params["data_rows"] == "1012" and run.data.params["data_archive_rows"] == "506"
    assert run.data.params["data_sources"] == f"bundled + {archive}"
    assert len(run.data.params["data_sha256"]) == 64 and run.data.params["data_sha256"] != expected


def test_train_refuses_an_archive_without_labels_or_without_a_chosen_feature(tmp_path, capsys) -> None:
    from housing.cli import main

    archive = tmp_path / "archive"
    write_archive(archive, load_dataset().iloc[:30], labelled=0)
    assert main(["train", "--fast", "--no-mlflow", "--data", str(archive)]) == 1
    assert "none of its 30 archived rows has a label yet" in capsys.readouterr().err
    assert main(["train", "--fast", "--no-mlflow", "--data", str(tmp_path / "nothing")]) == 1
    assert "holds no archived rows" in capsys.readouterr().err
    # Beside other data (the chart's scheduled retraining on a new archive), an empty archive adds nothing.
    frame, provenance = load_training_data(["bundled", str(archive)], DEFAULT_FEATURES)
    assert len(frame) == 506 and provenance["data_archive_rows"] == 0


def test_archived_rows_carry_the_artifacts_outlier_flag(tmp_path: Path, artifact_dir: Path) -> None:
    """Real houses and houses recombined from real values: each archived row says which the density flags;
    rows archived without a density (an older detector) read back as null, beside the flagged ones."""
    density = read_outliers(artifact_dir, read_metadata(artifact_dir))
    assert density is not None
    detector = OutlierDetector.from_bytes(density)
    features = list(detector.features)
    real = load_dataset()[features].to_numpy(float)
    houses = np.vstack([real[:50], outliers.recombined(real, 50, seed=3)])
    now = time.time()
    rows = [
        RowRecord(f"r{index}", "default", "1", now, now, features, [house.tolist()], [20.0])
        for index, house in enumerate(houses)
    ]
    store = LocalStore(tmp_path)
    unscored = [RowRecord("old", "default", "1", now, now, features, [real[0].tolist()], [20.0])]
    for name, data in {**row_files("scored", rows, detector), **row_files("unscored", unscored)}.items():
        store.put(name, data)
    archived = read_archive(str(tmp_path)).set_index("request_id")
    flags = archived.loc[[f"r{index}" for index in range(len(houses))], "outlier"].astype(bool).to_numpy()
    np.testing.assert_array_equal(flags, detector.flags(houses))
    assert flags[:50].mean() <= 0.1 and flags[50:].mean() >= 0.9
    assert pd.isna(archived.loc["old", "outlier"])
