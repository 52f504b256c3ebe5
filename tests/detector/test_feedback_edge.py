"""The detector's ``/feedback`` at the edge (real processes): the feedback role, labels within the domain."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.detector.conftest import DetectorProcess, cloud_event

PREDICT_KEY = "k-predict-0123456789"
FEEDBACK_KEY = "k-feedback-0123456789"
INGEST_KEY = "k-ingest-0123456789"


def labelled(detector: DetectorProcess, event_id: str, prediction: float = 22.0, key: str = "") -> None:
    """One logged one-row prediction with id ``event_id``, for labels to find (``key``: the ingest key)."""
    row = dict.fromkeys(detector.features, 1.0)
    for kind, body in (("request", {"instances": [row]}), ("response", {"predictions": [prediction]})):
        headers, data = cloud_event(kind, event_id, body)
        credential = {"x-api-key": key} if key else {}
        answer = detector.client.post(detector.url + "/", headers={**headers, **credential}, content=data)
        assert answer.status_code == 202, answer.text


@pytest.mark.slow
def test_feedback_needs_the_feedback_role_and_events_the_ingest_role(start_detector, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text(f"{PREDICT_KEY}=predict\n{FEEDBACK_KEY}=feedback\n{INGEST_KEY}=ingest\n")
    detector = start_detector("--auth", "--api_keys_file", str(keys), "--rate_limit", "50")
    labelled(detector, "a-1", key=INGEST_KEY)  # the transformer's logger holds the ingest role
    url = detector.url + "/feedback"
    truth = {"id": "a-1", "value": 21.5}

    missing = detector.client.post(url, json=truth)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    wrong_role = detector.client.post(url, json=truth, headers={"authorization": f"Bearer {PREDICT_KEY}"})
    assert wrong_role.status_code == 403
    assert "needs role 'feedback'" in wrong_role.json()["error"]
    accepted = detector.client.post(url, json=truth, headers={"x-api-key": FEEDBACK_KEY})
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["accepted"] == 1
    for open_path in ("/metrics", "/readyz", "/healthz"):
        assert detector.client.get(detector.url + open_path).status_code == 200, open_path
    assert detector.client.get(detector.url + "/status").status_code == 401  # the monitor role
    assert detector.metric("housing_auth_refused_total", component="detector", reason="forbidden") == 1


@pytest.mark.slow
@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"id": "b-1", "value": 75.0}, "value: must be in (0, 50], got 75 (medv, USD 1000s"),
        ({"id": "b-1", "value": -3}, "value: must be in (0, 50], got -3"),
        ({"id": "b-1", "value": 0}, "value: must be in (0, 50], got 0"),
        ({"labels": [{"id": "b-1", "value": 20.0}, {"id": "b-2", "value": [10.0, 51.0]}]},
         "labels[1].value: must be in (0, 50], got 51"),
    ],
)  # fmt: skip
def test_labels_outside_the_target_domain_are_refused_and_counted(
    shared_detector: DetectorProcess, body: dict, message: str
) -> None:
    labelled(shared_detector, "b-1")
    before_rejected = shared_detector.metric("housing_feedback_rejected_total", reason="out_of_range")
    before_accepted = shared_detector.metric(
        "housing_detector_events_total", type="feedback", outcome="accepted"
    )
    response = shared_detector.client.post(shared_detector.url + "/feedback", json=body)
    assert response.status_code == 400
    assert response.json()["error"].startswith(message), response.text
    assert (
        shared_detector.metric("housing_feedback_rejected_total", reason="out_of_range")
        == before_rejected + 1
    )
    # Nothing of a refused body is recorded, not even its good labels.
    assert (
        shared_detector.metric("housing_detector_events_total", type="feedback", outcome="accepted")
        == before_accepted
    )


@pytest.mark.slow
def test_the_domain_edge_itself_is_accepted(shared_detector: DetectorProcess) -> None:
    labelled(shared_detector, "c-1")
    response = shared_detector.client.post(shared_detector.url + "/feedback", json={"id": "c-1", "value": 50})
    assert response.status_code == 200, response.text
