"""Batched CloudEvents into a real detector: whole batches, bad elements by index, sampled senders counted."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from detector.events import InvalidEventError, is_batch, parse_batch
from tests.detector.conftest import DetectorProcess, batch_element, cloud_event, held_out_rows

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rows(artifact_dir: Path) -> np.ndarray:
    return held_out_rows(artifact_dir)


def pair(detector: DetectorProcess, event_id: str, row: np.ndarray, **options: object) -> list[dict]:
    """The request and response elements of one one-row inference."""
    instance = dict(zip(detector.features, map(float, row), strict=True))
    return [
        batch_element("request", event_id, {"instances": [instance]}, **options),  # type: ignore[arg-type]
        batch_element("response", event_id, {"predictions": [21.5]}, **options),  # type: ignore[arg-type]
    ]


def rows_waiting(detector: DetectorProcess) -> int:
    return sum(key["window_rows"] for key in detector.status()["keys"].values())


def counted(detector: DetectorProcess, outcome: str, kind: str = "request") -> float:
    return detector.metric("housing_detector_events_total", type=kind, outcome=outcome)


def test_a_batch_is_taken_whole_and_joined(shared_detector: DetectorProcess, rows: np.ndarray) -> None:
    detector = shared_detector
    before, joined = (
        rows_waiting(detector),
        detector.metric("housing_detector_inferences_total", endpoint="default"),
    )
    elements = [element for index in range(30) for element in pair(detector, f"whole-{index}", rows[index])]
    response = detector.send_batch(elements)
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 60}
    assert rows_waiting(detector) == (before + 30) % 100  # window 100: a full one is handed to the test
    assert detector.metric("housing_detector_inferences_total", endpoint="default") == joined + 30
    assert detector.status()["pending"] == 0


def test_a_bad_element_is_named_by_index_and_spoils_nothing_else(
    shared_detector: DetectorProcess, rows: np.ndarray
) -> None:
    """Bad input loses nothing: the valid events of the batch are taken, the 400 names each bad one."""
    detector = shared_detector
    joined = detector.metric("housing_detector_inferences_total", endpoint="default")
    invalid = counted(detector, "invalid")
    elements = (
        pair(detector, "mixed-0", rows[0])
        + pair(detector, "mixed-1", rows[1])
        + pair(detector, "mixed-2", rows[2])
    )
    elements[2]["data"] = {"instances": [{"crim": 1.0}]}  # mixed-1's request lacks features
    elements[5]["specversion"] = "0.3"  # mixed-2's response is not CloudEvents 1.0
    response = detector.send_batch(elements)
    assert response.status_code == 400
    document = response.json()
    assert document["accepted"] == 4
    assert [item["index"] for item in document["invalid"]] == [2, 5]
    assert document["invalid"][0]["error"].startswith("[2].instances[0]: missing feature")
    assert document["invalid"][1]["error"] == "[5].specversion: must be '1.0', got '0.3'"
    assert document["error"] == document["invalid"][0]["error"]
    assert detector.metric("housing_detector_inferences_total", endpoint="default") == joined + 1  # mixed-0
    assert counted(detector, "invalid") == invalid + 1
    # mixed-1's response and mixed-2's request were taken and wait for partners that will not come.
    assert detector.status()["pending"] == 2


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "body: must be a JSON array of CloudEvents"),
        (
            b'{"specversion": "1.0"}',
            "body: must be a JSON array of CloudEvents (batched content mode), got dict",
        ),
    ],
)
def test_a_batch_that_is_not_an_array_is_a_400(
    shared_detector: DetectorProcess, body: bytes, message: str
) -> None:
    response = shared_detector.client.post(
        shared_detector.url + "/",
        content=body,
        headers={"content-type": "application/cloudevents-batch+json"},
    )
    assert response.status_code == 400
    assert response.json()["error"].startswith(message)


def test_kserve_single_binary_and_structured_events_still_go_to_the_same_route(
    shared_detector: DetectorProcess, rows: np.ndarray
) -> None:
    """KServe's agent posts every event on its own, in binary mode: that keeps working beside batches."""
    detector = shared_detector
    joined = detector.metric("housing_detector_inferences_total", endpoint="default")
    instance = dict(zip(detector.features, map(float, rows[5]), strict=True))
    assert detector.send("request", "single-1", {"instances": [instance]}).status_code == 202
    assert detector.send("response", "single-1", {"predictions": [20.0]}, structured=True).status_code == 202
    # One half alone, the other in a batch: they join across modes.
    assert detector.send("request", "single-2", {"instances": [instance]}).status_code == 202
    assert (
        detector.send_batch([batch_element("response", "single-2", {"predictions": [20.0]})]).status_code
        == 202
    )
    assert detector.metric("housing_detector_inferences_total", endpoint="default") == joined + 2


def test_sampled_inferences_count_what_the_detector_did_not_see(
    shared_detector: DetectorProcess, rows: np.ndarray
) -> None:
    detector = shared_detector
    unseen = detector.metric("housing_events_unseen_total", endpoint="canary")
    elements = [
        element
        for index in range(10)
        for element in pair(detector, f"sampled-{index}", rows[index], endpoint="canary", rate=0.25)
    ]
    assert detector.send_batch(elements).status_code == 202
    # Each inference sent at rate 1/4 stands for 4 offered: 3 unseen each.
    assert detector.metric("housing_events_unseen_total", endpoint="canary") == pytest.approx(unseen + 30)
    bad = pair(detector, "bad-rate", rows[0], rate=1.5)
    response = detector.send_batch(bad)
    assert response.status_code == 400
    assert response.json()["error"] == "[0].housingsamplerate: must be a number in (0, 1], got '1.5'"
    headers, body = cloud_event("request", "bad-rate-binary", {"instances": [[1.0] * 12]})
    headers["ce-housingsamplerate"] = "zero"
    response = detector.client.post(detector.url + "/", headers=headers, content=body)
    assert response.status_code == 400
    assert response.json()["error"] == "ce-housingsamplerate: must be a number in (0, 1], got 'zero'"


def test_parse_batch_reads_each_element_on_its_own() -> None:
    features = ["crim", "lstat"]
    good = batch_element("request", "a", {"instances": [{"crim": 0.1, "lstat": 5.0}]}, rate=0.5)
    elements = [good, "text", {**good, "id": ""}, {**good, "data": None, "data_base64": "e30="}]
    decoded = parse_batch(json.dumps(elements).encode(), features)
    assert decoded[0].rows.tolist() == [[0.1, 5.0]] and decoded[0].sample_rate == 0.5  # type: ignore[union-attr]
    assert [str(item) for item in decoded[1:]] == [
        "[1].event: must be a JSON object (a structured-mode CloudEvent)",
        "[2].id: required, a non-empty string",
        "[3].body: not a V1 ('instances') or V2 ('inputs') inference request",
    ]
    assert all(isinstance(item, InvalidEventError) for item in decoded[1:])
    assert is_batch({"content-type": "application/cloudevents-batch+json; charset=utf-8"})
    assert not is_batch({"content-type": "application/cloudevents+json"})
