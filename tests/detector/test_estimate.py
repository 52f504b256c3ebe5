"""Accuracy before labels in the detector: the estimate per window, on /metrics and /status, as a trigger."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from detector.events import InferenceEvent
from detector.keys import WindowKey
from detector.monitor import Monitor, Settings
from detector.retrain import RetrainTrigger
from detector.stats import DriftTester, Reference
from model.artifact import load_artifact, read_dle
from model.dataset import load_dataset
from model.dle import LossEstimator
from tests.detector.conftest import DetectorProcess, held_out_rows


def windows(artifact_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """An in-distribution window (random held-out rows) and a shifted one (the 100 dearest-area houses).

    The shifted window holds the rows of lowest ``lstat``: dear houses, where the model's cross-validated
    errors in USD were largest, so Direct Loss Estimation must rate it worse.
    """
    artifact = load_artifact(artifact_dir)
    held = held_out_rows(artifact_dir)
    usual = held[np.random.default_rng(0).choice(len(held), size=100, replace=False)]
    rows = load_dataset()[artifact.feature_names].to_numpy()
    shifted = rows[np.argsort(rows[:, artifact.feature_names.index("lstat")])[:100]]
    return usual, artifact.pipeline.predict(usual), shifted, artifact.pipeline.predict(shifted)


def test_a_shifted_window_gets_a_higher_estimated_error(
    start_detector: Callable[..., DetectorProcess], artifact_dir: Path
) -> None:
    usual, usual_predictions, shifted, shifted_predictions = windows(artifact_dir)
    detector = start_detector("--window_size", "100")
    detector.send_rows(usual, usual_predictions, prefix="usual-", version="usual")
    detector.send_rows(shifted, shifted_predictions, prefix="shifted-", version="shifted")
    estimated = {
        version: detector.metric("housing_estimated_mae", endpoint="default", model_version=version)
        for version in ("usual", "shifted")
    }
    assert 0 < estimated["usual"] < estimated["shifted"]
    rmse = detector.metric("housing_estimated_rmse", endpoint="default", model_version="shifted")
    assert rmse > estimated["shifted"]  # RMSE >= MAE for any errors
    keys = detector.status()["keys"]
    assert keys["default/shifted"]["estimate"]["mae"] == pytest.approx(estimated["shifted"])
    assert keys["default/shifted"]["estimate"]["rows"] == 100
    assert keys["default/shifted"]["live"]["labels"] == 0  # side by side: estimated now, realised later


def test_the_estimate_triggers_a_retrain_only_while_labels_are_scarce(artifact_dir: Path) -> None:
    usual, usual_predictions, shifted, shifted_predictions = windows(artifact_dir)
    artifact = load_artifact(artifact_dir)
    estimator = LossEstimator.from_bytes(read_dle(artifact_dir, artifact.metadata) or b"")
    low = estimator.estimate(usual, usual_predictions)["mae"]
    high = estimator.estimate(shifted, shifted_predictions)["mae"]
    between = (low + high) / 2
    tester = DriftTester(Reference.from_metadata(artifact.metadata), threshold=1.0)  # no drift verdicts
    fired: list[dict] = []
    settings = Settings(window_size=100, estimated_mae_threshold=between, min_labels=5)
    monitor = Monitor(tester, settings, RetrainTrigger("webhook", fired.append, cooldown=0), None, estimator)

    def window(name: str, rows: np.ndarray, predictions: np.ndarray) -> None:
        for index, (row, prediction) in enumerate(zip(rows, predictions, strict=True)):
            event_id = f"{name}-{index}"
            answer = np.array([prediction])
            monitor.ingest(InferenceEvent("request", event_id, "default", "p", name, rows=row[None]), now=0)
            monitor.ingest(
                InferenceEvent("response", event_id, "default", "p", name, predictions=answer), now=0
            )
        monitor.test_due()

    window("usual", usual, usual_predictions)
    window("shifted", shifted, shifted_predictions)
    for thread in monitor.trigger.threads:
        thread.join(5)
    assert [(episode["reason"], episode["key"]) for episode in fired] == [
        ("estimated_mae", "default/shifted")
    ]
    assert fired[0]["estimated_mae"] > between
    # Labels enough to judge: the realised figures take over, and the estimate alone no longer triggers.
    for index, prediction in enumerate(shifted_predictions[:5]):
        monitor.feedback(f"shifted-{index}", float(prediction))
    assert WindowKey("default", "shifted") not in monitor.trigger.active
