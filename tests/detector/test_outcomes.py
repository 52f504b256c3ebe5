"""The detector keeps labelled outcomes per arm (``GET /outcomes``); ``housing experiment`` decides."""

from __future__ import annotations

import json

import numpy as np

from housing.cli import main
from tests.detector.conftest import DetectorProcess


def predict_and_label(detector: DetectorProcess, endpoint: str, version: str, errors: np.ndarray) -> None:
    rows = np.tile([0.1, 12.5, 7.0, 0.0, 0.5, 6.2, 60.0, 4.0, 4.0, 300.0, 18.0, 10.0], (len(errors), 1))
    labels = []
    for index, (row, error) in enumerate(zip(rows, errors, strict=True)):
        event_id = f"{endpoint}-{index}"
        instance = dict(zip(detector.features, map(float, row), strict=True))
        detector.send("request", event_id, {"instances": [instance]}, endpoint=endpoint, version=version)
        detector.send("response", event_id, {"predictions": [20.0]}, endpoint=endpoint, version=version)
        labels.append({"id": event_id, "value": 20.0 + float(error)})
    answer = detector.client.post(detector.url + "/feedback", json={"labels": labels})
    assert answer.json()["accepted"] == len(errors), answer.text


def test_outcomes_per_arm_beyond_the_live_window_decide_an_ab_test(start_detector, capsys) -> None:
    detector = start_detector("--label_window", "20")
    rng = np.random.default_rng(0)
    champion = rng.standard_t(3, 150) * 2
    challenger = rng.standard_t(3, 150) * 0.5  # a much better model
    predict_and_label(detector, "default", "3", champion)
    predict_and_label(detector, "canary", "4", challenger)

    outcomes = detector.client.get(detector.url + "/outcomes").json()["keys"]
    assert sorted(outcomes) == ["canary/4", "default/3"]
    # All 150 kept for the experiment, though live MAE looks at the last 20 only.
    truth = np.asarray(outcomes["default/3"]["true_values"])
    assert len(truth) == 150 and np.allclose(truth - 20.0, champion)
    assert detector.metric("housing_live_labels", endpoint="default", model_version="3") == 20

    argv = ["experiment", "analyze", "--detector", detector.url, "--planned", "100", "--json"]
    assert main(argv) == 0
    decision = json.loads(capsys.readouterr().out)
    assert decision["champion"] == "default/3" and decision["challenger"] == "canary/4"
    assert decision["verdict"] == "challenger" and decision["pairs"] == 150
    assert np.isclose(decision["mae_champion"], np.abs(champion).mean())

    assert main([*argv[:-1], "--challenger", "shadow"]) == 1
    assert "no labelled predictions for 'shadow' (known: canary/4, default/3)" in capsys.readouterr().err

    # housing rollout analyze --detector judges the canary on the same labels with the same test.
    from housing.rollout.analysis import PROMOTE, accuracy_check

    check = accuracy_check(detector.url)
    assert check.verdict == PROMOTE and check.canary is not None and check.stable is not None
    assert check.canary < check.stable
