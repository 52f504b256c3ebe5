"""The traffic archive end to end: real detectors write it (Azurite or a directory), read_archive reads it.

Rows and labels land as Parquet partitioned by date and model version, read back joined and de-duplicated; a
detector killed with SIGKILL and restarted uploads its write-ahead log; with Blob Storage down, ingest still
answers 202 and the rows are archived once it is back.
"""

from __future__ import annotations

import json
import os
import signal
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from housing.processes import wait_until
from model.archive import open_store, read_archive
from model.artifact import read_metadata, read_outliers
from model.outliers import OutlierDetector
from model.storage import StorageError
from tests.conftest import Azurite, start_azurite
from tests.detector.conftest import DetectorProcess, held_out_rows

pytestmark = pytest.mark.slow

CONNECTION = "AZURE_STORAGE_CONNECTION_STRING"


@pytest.fixture(scope="module")
def rows(artifact_dir: Path) -> np.ndarray:
    return held_out_rows(artifact_dir)[:40]


def version(artifact_dir: Path) -> str:
    return str(json.loads((artifact_dir / "model.json").read_text())["version"])


def archived(uri: str) -> pd.DataFrame | None:
    """The archive as training reads it, or ``None`` while it holds nothing."""
    try:
        return read_archive(uri)
    except StorageError:
        return None


def wait_for_rows(uri: str, count: int, *, labels: int = 0, timeout: float = 60) -> pd.DataFrame:
    """Wait until the archive holds ``count`` rows, ``labels`` of them labelled; return it."""
    found: dict[str, pd.DataFrame] = {}

    def complete() -> bool:
        frame = archived(uri)
        if frame is None or len(frame) < count or int(frame["medv"].notna().sum()) < labels:
            return False
        found["frame"] = frame
        return True

    wait_until(complete, timeout=timeout, what=f"{count} rows and {labels} labels archived at {uri}")
    return found["frame"]


def send(detector: DetectorProcess, event_id: str, rows: np.ndarray, predictions: list[float]) -> None:
    instances = [dict(zip(detector.features, map(float, row), strict=True)) for row in rows]
    assert detector.send("request", event_id, {"instances": instances}).status_code == 202
    assert detector.send("response", event_id, {"predictions": predictions}).status_code == 202


def label(detector: DetectorProcess, body: object) -> int:
    """POST ``body`` to /feedback; the status code."""
    return int(detector.client.post(detector.url + "/feedback", json=body).status_code)


def test_rows_and_labels_land_in_azurite_partitioned_and_read_back_joined_and_deduplicated(
    start_detector, azurite: Azurite, artifact_dir: Path, rows: np.ndarray
) -> None:
    uri = azurite.url(f"archive-{uuid.uuid4().hex[:8]}", "housing")
    detector = start_detector(
        "--archive_uri", uri, "--archive_flush_seconds", "0.3", env={CONNECTION: azurite.connection_string}
    )
    ids = [f"house-{index}" for index in range(30)]
    for index, event_id in enumerate(ids):
        send(detector, event_id, rows[index : index + 1], [20.0 + index])
    send(detector, "three-houses", rows[30:33], [31.0, 32.0, 33.0])
    send(detector, ids[0], rows[0:1], [20.0])  # the same request logged twice: archived once
    labels = [{"id": event_id, "value": 10.0 + index} for index, event_id in enumerate(ids[:10])]
    assert label(detector, {"labels": labels}) == 200
    assert label(detector, {"id": ids[1], "value": 42.0}) == 200
    three = {"id": "three-houses", "value": [1.0, 2.0, 3.0]}
    assert label(detector, three) == 200

    frame = wait_for_rows(uri, 33, labels=13)
    assert len(frame) == 33 and not frame.duplicated(["request_id", "row"]).any()
    by_id = frame.set_index(["request_id", "row"])
    assert by_id.loc[(ids[1], 0), "medv"] == 42.0  # the latest label wins
    assert by_id.loc[(ids[2], 0), "medv"] == 12.0
    assert np.isnan(by_id.loc[(ids[20], 0), "medv"])
    assert by_id.loc[("three-houses", 2), ["prediction", "medv"]].tolist() == [33.0, 3.0]
    np.testing.assert_allclose(by_id.loc[("three-houses", 1), detector.features].to_numpy(float), rows[31])
    assert set(frame["model_version"]) == {version(artifact_dir)} and set(frame["endpoint"]) == {"default"}
    assert (frame["response_time"] >= frame["request_time"]).all()
    density = OutlierDetector.from_bytes(read_outliers(artifact_dir, read_metadata(artifact_dir)) or b"")
    assert frame["outlier"].notna().all()  # each row scored by the artifact's outlier density
    np.testing.assert_array_equal(
        frame["outlier"].astype(bool), density.flags(frame[density.features].to_numpy(float))
    )

    names = open_store(uri).names("rows")
    date = frame["response_time"].iloc[0].date().isoformat()
    assert names and all(
        name.startswith(f"rows/date={date}/model_version={version(artifact_dir)}/") for name in names
    )
    written = detector.metric("housing_archive_rows_total", kind="rows", outcome="written")
    assert written == 34  # the duplicate was written: the reader drops it
    wait_until(
        lambda: detector.metric("housing_archive_rows_total", kind="rows", outcome="archived") == written,
        timeout=30,
        what="every written row counted archived",
    )
    assert detector.status()["archive"]["segments_waiting"] == 0


def test_a_detector_killed_with_sigkill_uploads_its_write_ahead_log_when_restarted(
    start_detector, tmp_path: Path, rows: np.ndarray
) -> None:
    archive, state = tmp_path / "archive", tmp_path / "state"
    # Batches never due: everything acknowledged sits in the write-ahead log when the process is killed.
    flags = (
        "--archive_uri",
        str(archive),
        "--archive_flush_seconds",
        "3600",
        "--archive_flush_rows",
        "100000",
    )
    detector = start_detector(*flags, state_dir=state)
    for index in range(25):
        send(detector, f"killed-{index}", rows[index : index + 1], [float(index)])
    assert label(detector, {"id": "killed-3", "value": 7.5}) == 200
    assert archived(str(archive)) is None
    assert detector.service.process is not None
    import psutil

    children = psutil.Process(detector.service.process.pid).children()  # the uploader among them
    assert len(children) >= 2
    os.kill(detector.service.process.pid, signal.SIGKILL)
    detector.service.process.wait(timeout=10)
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"left behind by kill -9: {[child.cmdline() for child in alive]}"

    restarted = start_detector(*flags, state_dir=state, name="restarted")
    frame = wait_for_rows(str(archive), 25, labels=1)
    assert sorted(frame["request_id"]) == sorted(f"killed-{index}" for index in range(25))
    assert frame.set_index("request_id").loc["killed-3", "medv"] == 7.5
    # The uploader's counts reach the detector's metrics within its poll (0.2 s) of the upload.
    wait_until(
        lambda: restarted.metric("housing_archive_rows_total", kind="rows", outcome="archived") == 25,
        timeout=10,
        what="the upload counted",
    )
    assert not [path for path in (state / "archive-wal").iterdir() if path.stat().st_size > 0]


def test_with_blob_storage_down_ingest_answers_202_and_rows_are_archived_once_it_is_back(
    start_detector, tmp_path: Path, rows: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = start_azurite(tmp_path / "azurite")
    monkeypatch.setenv(CONNECTION, storage.connection_string)  # for read_archive here
    uri = storage.url("archive", "housing")
    detector = start_detector(
        "--archive_uri", uri, "--archive_flush_seconds", "0.2", env={CONNECTION: storage.connection_string}
    )
    send(detector, "before", rows[:1], [1.0])
    wait_for_rows(uri, 1)

    storage.service.stop()
    for index in range(20):
        send(detector, f"down-{index}", rows[index : index + 1], [float(index)])  # asserts 202
    wait_until(
        lambda: detector.metric("housing_archive_rows_total", kind="rows", outcome="retried") > 0,
        timeout=30,
        what="a failed upload counted retried",
    )
    status = detector.status()["archive"]
    assert status["segments_waiting"] >= 1 and status["last_error"]
    assert detector.metric("housing_archive_wal_bytes") > 0

    back = start_azurite(tmp_path / "azurite", port=storage.port)  # same data, same address
    try:
        frame = wait_for_rows(uri, 21, timeout=90)
    finally:
        back.service.stop()
    assert sorted(frame["request_id"]) == sorted(["before", *(f"down-{index}" for index in range(20))])
    assert detector.metric("housing_archive_rows_total", kind="rows", outcome="dropped") == 0


def test_the_chart_passes_detector_archive_uri_to_the_detector_and_to_every_training_job(tmp_path) -> None:
    import yaml

    from tests.k8s.conftest import parse, render

    uri = "https://housingmodels.blob.core.windows.net/archive/housing"
    completed = render({"detector": {"archive": {"uri": uri}, "retrainMinLabels": 200}}, tmp_path, "archive")
    assert completed.returncode == 0, completed.stderr
    documents = parse(completed.stdout)
    detector = next(
        doc for doc in documents if doc["kind"] == "Deployment" and "detector" in doc["metadata"]["name"]
    )
    args = detector["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--archive_uri") + 1] == uri
    assert args[args.index("--retrain_min_labels") + 1] == "200"  # the Job waits for the shift's labels
    cronjob = next(doc for doc in documents if doc["kind"] == "CronJob")
    template = next(
        doc for doc in documents if doc["kind"] == "ConfigMap" and "job-template" in doc["metadata"]["name"]
    )
    job = yaml.safe_load(template["data"]["job-template.yaml"])
    for pod in (cronjob["spec"]["jobTemplate"]["spec"]["template"], job["spec"]["template"]):
        train = pod["spec"]["containers"][0]["args"]
        assert train[train.index("--data") : train.index("--data") + 3] == ["--data", "bundled", uri]
    refused = render({"detector": {"archive": {"uri": "s3://elsewhere"}}}, tmp_path, "refused")
    assert refused.returncode != 0 and "uri" in refused.stderr


def test_flush_uploads_what_was_committed_at_once_for_a_retrain(tmp_path: Path) -> None:
    from detector.archive import Archiver
    from model.archive import LabelRecord, RowRecord

    target = tmp_path / "archive"
    # Flush thresholds an hour away: only flush() can upload this soon.
    archiver = Archiver(str(target), tmp_path / "wal", 10_000, 3600.0, 10**9)
    archiver.start()
    try:
        features = ["lstat", "rm"]
        archiver.add(RowRecord("r1", "default", "1", 1.0, 1.1, features, [[5.0, 6.0]], [24.0]))
        archiver.add(LabelRecord("r1", [25.0], 2.0))
        archiver.commit()
        assert archived(str(target)) is None
        assert archiver.flush(timeout=30)
        frame = read_archive(str(target))[["request_id", "lstat", "prediction", "medv"]]
        assert frame.values.tolist() == [["r1", 5.0, 24.0, 25.0]]
    finally:
        archiver.stop()
    stopped = Archiver(str(target), tmp_path / "wal2", 10_000, 3600.0, 10**9)  # never started
    stopped.add(RowRecord("r2", "default", "1", 1.0, 1.1, ["lstat"], [[5.0]], [24.0]))
    stopped.commit()
    assert not stopped.flush(timeout=1)  # no upload thread: it says so instead of waiting forever


def test_the_cpu_budget_paces_spending_beyond_its_burst_and_refills_with_time() -> None:
    from detector.archive import CpuBudget

    clock, cpu = [0.0], [0.0]
    budget = CpuBudget(0.1, 1.0, clock=lambda: clock[0], cpu=lambda: cpu[0])
    cpu[0] = 0.8  # within the burst
    assert budget.delay() == 0.0
    cpu[0] = 1.5  # 0.5 CPU seconds beyond it: 5 s at a tenth of a core
    assert budget.delay() == pytest.approx(5.0)
    clock[0] = 5.0
    assert budget.delay() == pytest.approx(0.0)
    clock[0] = 1000.0  # idle for long: the bucket holds no more than its burst
    cpu[0] = 2.6
    assert budget.delay() == pytest.approx(1.0)


@pytest.mark.parametrize("sealed_ago", [0.0, 3600.0])
def test_a_segment_waits_for_the_budget_no_longer_than_its_lag_bound(
    tmp_path: Path, sealed_ago: float
) -> None:
    """The uploader's guarantee under CPU saturation: no segment waits on the budget past ``max_lag``."""
    import time

    import pyarrow.parquet  # noqa: F401  (imported before the clock starts, as the uploader's warm_up does)

    from detector.archive import CpuBudget, Uploader, encode
    from model.archive import RowRecord

    wal = tmp_path / "wal"
    wal.mkdir()
    sealed = int((time.time() - sealed_ago) * 1e9)
    record = RowRecord("r1", "default", "1", 1.0, 1.1, ["lstat"], [[5.0]], [24.0])
    (wal / f"{sealed:020d}-0000abcd.jsonl").write_bytes(encode([record], []))
    used = [0.0]
    spent = CpuBudget(0.1, 1.0, cpu=lambda: used[0])
    used[0] = 101.0  # 100 CPU seconds over budget: 1,000 s to pay back
    uploader = Uploader(str(tmp_path / "archive"), wal, 10**9, budget=spent, max_lag=1.0)
    started = time.monotonic()
    assert uploader.upload()
    elapsed = time.monotonic() - started
    assert read_archive(str(tmp_path / "archive"))["request_id"].tolist() == ["r1"]
    # Fresh: waits until it is 1 s old (the bound), not the budget's 1,000 s; overdue: no wait at all.
    assert (0.9 <= elapsed < 30) if sealed_ago == 0.0 else elapsed < 0.9
