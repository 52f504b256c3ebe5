"""The detector as a real process fed KServe-format CloudEvents (binary and structured mode)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from housing.processes import wait_until
from model.artifact import load_artifact, read_metadata
from tests.detector.conftest import DetectorProcess, cloud_event, held_out_rows

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def traffic(artifact_dir: Path) -> dict[str, np.ndarray]:
    """In-distribution rows (held out of the reference), the same with lstat shifted by 1 SD, predictions."""
    generator = np.random.default_rng(7)
    pipeline = load_artifact(artifact_dir).pipeline
    names = [feature["name"] for feature in read_metadata(artifact_dir)["features"]]
    rows = held_out_rows(artifact_dir)
    normal = rows[generator.integers(0, len(rows), 600)]
    shifted = normal.copy()
    lstat = names.index("lstat")
    shifted[:, lstat] += rows[:, lstat].std()
    return {
        "normal": normal,
        "normal_predictions": pipeline.predict(normal),
        "shifted": shifted,
        "shifted_predictions": pipeline.predict(shifted),
    }


def version(artifact_dir: Path) -> str:
    return str(read_metadata(artifact_dir)["version"])


def test_in_distribution_no_drift_then_shift_drifts_and_triggers_once(
    start_detector, traffic, artifact_dir: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "retrains.txt"
    command = f"{sys.executable} -c \"open({str(marker)!r}, 'a').write('retrain\\n')\""
    detector: DetectorProcess = start_detector(
        "--window_size", "200", "--retrain_action", "command", "--retrain_command", command
    )
    key = {"endpoint": "default", "model_version": version(artifact_dir)}

    detector.send_rows(traffic["normal"][:400], traffic["normal_predictions"][:400], prefix="n")
    assert detector.metric("housing_windows_tested_total", **key) == 2
    assert detector.metric("housing_drift_detected", **key) == 0
    assert detector.metric("housing_drift_score", **key) <= 0.3
    assert detector.metric("housing_retrains_triggered_total", reason="drift", action="command") == 0

    detector.send_rows(traffic["shifted"][:600], traffic["shifted_predictions"][:600], prefix="s")
    assert detector.metric("housing_windows_tested_total", **key) == 5
    assert detector.metric("housing_drift_detected", **key) == 1
    assert detector.metric("housing_drift_score", **key) > 0.3
    assert detector.metric("housing_feature_js_distance", **key, feature="lstat") > 0.3
    assert detector.metric("housing_feature_drift_p_value", **key, feature="lstat") < 1e-3
    assert detector.metric("housing_feature_drift_score", **key, feature="rm") == 0
    assert detector.metric("housing_prediction_drift_p_value", **key) < 0.05
    threshold = detector.metric("housing_reconstruction_error_threshold", **key)
    assert threshold > 0 and detector.metric("housing_reconstruction_error", **key) > 0
    assert detector.metric("housing_detector_events_total", type="request", outcome="accepted") == 1000
    # Three drifted windows, one episode: exactly one retrain.
    assert detector.metric("housing_retrains_triggered_total", reason="drift", action="command") == 1
    wait_until(marker.exists, timeout=30, what="the retrain command ran")
    assert marker.read_text() == "retrain\n"
    result = detector.status()["keys"][f"default/{key['model_version']}"]["last_result"]
    assert [feature["name"] for feature in result["features"] if feature["drifted"]] == ["lstat"]


def test_canary_and_default_windows_are_kept_apart(shared_detector: DetectorProcess, traffic) -> None:
    detector = shared_detector
    detector.send_rows(traffic["normal"][:100], traffic["normal_predictions"][:100], prefix="d", version="ab")
    detector.send_rows(
        traffic["shifted"][:100],
        traffic["shifted_predictions"][:100],
        prefix="c",
        version="ab",
        endpoint="canary",
    )
    detector.send_rows(
        traffic["normal"][:30],
        traffic["normal_predictions"][:30],
        prefix="c2",
        version="ab2",
        endpoint="canary",
    )
    default = {"endpoint": "default", "model_version": "ab"}
    canary = {"endpoint": "canary", "model_version": "ab"}
    assert detector.metric("housing_drift_detected", **default) == 0
    assert detector.metric("housing_drift_detected", **canary) == 1
    assert detector.metric("housing_windows_tested_total", **default) == 1
    assert detector.metric("housing_windows_tested_total", **canary) == 1
    # A canary serving another model version gets its own window.
    assert detector.metric("housing_window_rows", endpoint="canary", model_version="ab2") == 30
    assert detector.metric("housing_window_rows", **canary) == 0


def test_v2_payloads_structured_mode_and_out_of_order_join(shared_detector: DetectorProcess, traffic) -> None:
    detector = shared_detector
    rows, predictions = traffic["normal"][:4], traffic["normal_predictions"][:4]
    tensor = {
        "inputs": [
            {"name": "input-0", "shape": [2, 12], "datatype": "FP64", "data": rows[:2].ravel().tolist()}
        ]
    }
    named = {
        "inputs": [
            {"name": name, "shape": [2], "datatype": "FP64", "data": rows[2:, index].tolist()}
            for index, name in enumerate(detector.features)
        ]
    }
    output = {
        "model_name": "housing",
        "model_version": "v2model",
        "outputs": [{"name": "output-0", "shape": [2], "datatype": "FP64", "data": predictions[:2].tolist()}],
    }
    # The response arrives first; the join still happens, keyed by the V2 response's model_version.
    assert detector.send("response", "v2-a", output, structured=True).status_code == 202
    assert detector.send("request", "v2-a", tensor).status_code == 202
    assert detector.metric("housing_window_rows", endpoint="default", model_version="v2model") == 2
    assert detector.send("request", "v2-b", named, structured=True, version="v2named").status_code == 202
    assert detector.send("response", "v2-b", {"predictions": predictions[2:].tolist()}).status_code == 202
    assert detector.metric("housing_window_rows", endpoint="default", model_version="v2named") == 2


def test_feedback_gives_live_metrics_and_a_low_r2_triggers(shared_detector: DetectorProcess, traffic) -> None:
    detector = shared_detector
    rows, predictions = traffic["normal"][:40], traffic["normal_predictions"][:40]
    ids = [f"fb{index}" for index in range(40)]
    for event_id, row, prediction in zip(ids, rows, predictions, strict=True):
        detector.send("request", event_id, {"instances": [row.tolist()]}, version="fb")
        detector.send("response", event_id, {"predictions": [float(prediction)]}, version="fb")
    unmatched_before = detector.metric("housing_detector_events_total", type="feedback", outcome="unmatched")
    retrains_before = detector.metric("housing_retrains_triggered_total", reason="r2", action="none")
    truth = predictions + np.where(np.arange(40) % 2, 1.0, -1.0)  # every prediction off by exactly 1
    answer = detector.client.post(detector.url + "/feedback", json={"id": ids[0], "value": float(truth[0])})
    assert answer.status_code == 200 and answer.json() == {"accepted": 1, "unmatched": []}
    batch = [
        {"id": event_id, "value": float(value)} for event_id, value in zip(ids[1:], truth[1:], strict=True)
    ]
    batch.append({"id": "never-seen", "value": 1.0})
    answer = detector.client.post(detector.url + "/feedback", json={"labels": batch})
    assert answer.json() == {"accepted": 39, "unmatched": ["never-seen"]}
    key = {"endpoint": "default", "model_version": "fb"}
    assert detector.metric("housing_live_labels", **key) == 40
    assert detector.metric("housing_live_mae", **key) == pytest.approx(1.0)
    assert detector.metric("housing_live_rmse", **key) == pytest.approx(1.0)
    expected_r2 = 1 - 40 / np.sum((truth - truth.mean()) ** 2)
    assert detector.metric("housing_live_r2", **key) == pytest.approx(expected_r2)
    assert (
        detector.metric("housing_detector_events_total", type="feedback", outcome="unmatched")
        == unmatched_before + 1
    )
    assert detector.metric("housing_retrains_triggered_total", reason="r2", action="none") == retrains_before

    # Labels far from the predictions: R² falls below 0.8 and one retrain fires, once for the episode. They
    # stay within medv's domain, (0, 50]: the detector refuses labels outside it.
    bad = [
        {"id": event_id, "value": float(value)}
        for event_id, value in zip(ids, np.clip(predictions[::-1] * 1.5, 1.0, 50.0), strict=True)
    ]
    detector.client.post(detector.url + "/feedback", json={"labels": bad})
    detector.client.post(detector.url + "/feedback", json={"labels": bad})
    assert detector.metric("housing_live_r2", **key) < 0.8
    assert (
        detector.metric("housing_retrains_triggered_total", reason="r2", action="none") == retrains_before + 1
    )

    missing = detector.client.post(detector.url + "/feedback", json={"id": "nope", "value": 3})
    assert missing.status_code == 404 and "nope" in missing.json()["error"]


def test_restart_keeps_windows_results_labels_and_episodes(
    start_detector, traffic, artifact_dir: Path, tmp_path: Path
) -> None:
    state = tmp_path / "kept"
    first = start_detector("--window_size", "100", state_dir=state, name="first")
    first.send_rows(traffic["shifted"][:130], traffic["shifted_predictions"][:130], prefix="r")
    first.send("request", "pending-1", {"instances": [traffic["normal"][0].tolist()]})
    first.send("request", "labelled", {"instances": [traffic["normal"][1].tolist()]})
    first.send("response", "labelled", {"predictions": [20.0]})
    assert (
        first.client.post(first.url + "/feedback", json={"id": "labelled", "value": 22.0}).status_code == 200
    )
    before = first.status()
    first.service.stop()

    second = start_detector("--window_size", "100", state_dir=state, name="second")
    after = second.status()
    key = f"default/{version(artifact_dir)}"
    assert after["keys"][key]["window_rows"] == 31
    assert after["keys"][key]["live"] == {"labels": 1, "mae": 2.0, "rmse": 2.0, "r2": None}
    assert after["keys"][key]["last_result"] == before["keys"][key]["last_result"]
    assert after["pending"] == 1
    assert after["retrain"]["active"] == [key]
    labels = {"endpoint": "default", "model_version": version(artifact_dir)}
    assert second.metric("housing_drift_detected", **labels) == 1
    assert second.metric("housing_window_rows", **labels) == 31
    # The pending request still pairs with its response after the restart.
    assert second.send("response", "pending-1", {"predictions": [20.0]}).status_code == 202
    assert second.status()["keys"][key]["window_rows"] == 32
    # The episode was restored: more drifted windows do not fire again.
    second.send_rows(traffic["shifted"][:100], traffic["shifted_predictions"][:100], prefix="t")
    assert second.metric("housing_retrains_triggered_total", reason="drift", action="none") == 0


def test_malformed_events_get_4xx_and_are_counted(shared_detector: DetectorProcess, traffic) -> None:
    detector = shared_detector
    outcomes = [
        ("unknown", "invalid"),
        ("request", "invalid"),
        ("response", "invalid"),
        ("request", "unmatched"),
        ("feedback", "invalid"),
    ]
    before = {
        pair: detector.metric("housing_detector_events_total", type=pair[0], outcome=pair[1])
        for pair in outcomes
    }
    post = detector.client.post
    url = detector.url + "/"
    not_cloudevent = post(url, content=b"hello", headers={"content-type": "text/plain"})
    assert not_cloudevent.status_code == 400 and "CloudEvent" in not_cloudevent.json()["error"]
    headers, body = cloud_event("request", "x", {"instances": [[1.0, 2.0]]})
    wrong_count = post(url, headers=headers, content=body)
    assert wrong_count.status_code == 400 and "12 values per row" in wrong_count.json()["error"]
    headers["ce-type"] = "org.example.unknown"
    unknown_type = post(url, headers=headers, content=body)
    assert unknown_type.status_code == 400 and "ce-type" in unknown_type.json()["error"]
    headers, _ = cloud_event("response", "y", {"predictions": [1.0]})
    undecodable = post(url, headers=headers, content=b"\xff{not json")
    assert undecodable.status_code == 400 and "JSON" in undecodable.json()["error"]
    missing = detector.send("request", "z", {"instances": [{"crim": 0.1}]})
    assert missing.status_code == 400 and "missing feature" in missing.json()["error"]
    nan = detector.send("request", "w", {"instances": [[float("nan")] * 12]})
    assert nan.status_code == 400 and "finite" in nan.json()["error"]
    # A response whose length differs from its request's rows.
    assert detector.send("request", "m", {"instances": [traffic["normal"][0].tolist()]}).status_code == 202
    mismatch = detector.send("response", "m", {"predictions": [1.0, 2.0]})
    assert mismatch.status_code == 400 and "2 predictions for 1 request rows" in mismatch.json()["error"]
    bad_feedback = post(detector.url + "/feedback", content=b"{")
    assert bad_feedback.status_code == 400
    no_value = post(detector.url + "/feedback", json={"id": "m"})
    assert no_value.status_code == 400 and "value" in no_value.json()["error"]

    after = {
        pair: detector.metric("housing_detector_events_total", type=pair[0], outcome=pair[1])
        for pair in outcomes
    }
    assert {pair: after[pair] - before[pair] for pair in outcomes} == {
        ("unknown", "invalid"): 2,
        ("request", "invalid"): 3,
        ("response", "invalid"): 2,
        ("request", "unmatched"): 1,
        ("feedback", "invalid"): 2,
    }
    assert detector.client.get(detector.url + "/v2/health/live").status_code == 200
    assert detector.client.get(detector.url + "/v2/health/ready").json() == {"ready": True}


def test_unmatched_events_expire(shared_detector: DetectorProcess, traffic) -> None:
    detector = shared_detector
    before = detector.metric("housing_detector_events_total", type="request", outcome="unmatched")
    for index in range(3):
        detector.send("request", f"lonely-{index}", {"instances": [traffic["normal"][0].tolist()]})
    wait_until(
        lambda: (
            detector.metric("housing_detector_events_total", type="request", outcome="unmatched")
            == before + 3
        ),
        timeout=10,
        what="pending events expired",
    )
    assert detector.status()["pending"] == 0


def test_reference_is_read_from_azure_blob_storage(start_detector, azurite, artifact_dir: Path) -> None:
    from model.storage import publish

    url = azurite.url("models", "housing/detector-test")
    publish(artifact_dir, url, progress=False)
    detector = start_detector(
        storage_uri=url, env={"AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string}
    )
    assert detector.status()["reference_version"] == version(artifact_dir)


def test_not_ready_while_the_artifact_is_unreachable(start_detector, tmp_path: Path) -> None:
    detector = start_detector(storage_uri=str(tmp_path / "no-such-artifact"), ready_path="/healthz")
    wait_until(lambda: "no-such-artifact" in detector.client.get(detector.url + "/readyz").text, timeout=30)
    ready = detector.client.get(detector.url + "/v2/health/ready")
    assert ready.status_code == 503 and "cannot load the reference" in ready.json()["reason"]
    refused = detector.send("request", "early", {"instances": [[1.0] * 12]})
    assert refused.status_code == 503 and "not ready" in refused.json()["error"]
    assert detector.client.get(detector.url + "/healthz").status_code == 200


def test_input_limits_refuse_large_bodies_and_batches_and_count_them(start_detector) -> None:
    detector: DetectorProcess = start_detector("--max_body_bytes", "20000", "--max_rows", "10")
    row = dict.fromkeys(detector.features, 1.0)
    accepted = detector.send("request", "small", {"instances": [row] * 10})
    assert accepted.status_code == 202, accepted.text

    too_many = detector.send("request", "eleven", {"instances": [row] * 11})
    assert too_many.status_code == 400
    assert "11 rows, more than the limit of 10" in too_many.json()["error"]

    huge = detector.send("request", "huge", {"instances": [row] * 200})  # about 40 kB
    assert huge.status_code == 413 and "limit of 20000 bytes" in huge.json()["error"]
    chunked = detector.client.post(  # no Content-Length: the limit holds while the body streams in
        detector.url + "/feedback", content=iter([b'{"labels": [' + b" " * 15000, b" " * 15000 + b"]}"])
    )
    assert chunked.status_code == 413

    assert detector.metric("housing_detector_refused_total", reason="too_many_rows") == 1
    refused = {"component": "detector", "reason": "body_too_large"}
    assert detector.metric("housing_edge_refused_total", **refused) == 2  # refused before the body was read
    assert detector.status()["pending"] == 1  # only the accepted request waits for its response
