"""Decoding KServe logger CloudEvents: both modes, V1 and V2 bodies, and the errors that name the field."""

from __future__ import annotations

import numpy as np
import pytest

from detector.events import InvalidEventError, decode_request, decode_response, parse_event
from model.schema import DEFAULT_FEATURES
from tests.detector.conftest import cloud_event

FEATURES = list(DEFAULT_FEATURES)
ROW = [0.1, 18.0, 2.3, 0.0, 0.5, 6.5, 65.0, 4.0, 1.0, 296.0, 15.3, 4.9]


def test_v1_named_and_positional_instances_give_rows_in_model_order() -> None:
    named = {
        "instances": [
            dict(zip(reversed(FEATURES), reversed(ROW), strict=True)),
            dict(zip(FEATURES, ROW, strict=True)),
        ]
    }
    assert decode_request(named, FEATURES).tolist() == [ROW, ROW]
    assert decode_request({"instances": [ROW, ROW, ROW]}, FEATURES).shape == (3, 12)


def test_v2_named_inputs_and_one_tensor() -> None:
    named = {
        "inputs": [
            {"name": name, "shape": [2], "datatype": "FP64", "data": [value, value]}
            for name, value in zip(FEATURES, ROW, strict=True)
        ]
    }
    assert decode_request(named, FEATURES).tolist() == [ROW, ROW]
    flat = {"inputs": [{"name": "input-0", "shape": [2, 12], "datatype": "FP32", "data": ROW + ROW}]}
    nested = {"inputs": [{"name": "input-0", "shape": [2, 12], "datatype": "FP32", "data": [ROW, ROW]}]}
    assert decode_request(flat, FEATURES).tolist() == decode_request(nested, FEATURES).tolist() == [ROW, ROW]


def test_responses_v1_and_v2() -> None:
    predictions, version = decode_response({"predictions": [21.5, 30.0]})
    assert predictions.tolist() == [21.5, 30.0] and version is None
    v2 = {
        "model_name": "housing",
        "model_version": "3",
        "outputs": [{"name": "output-0", "shape": [2, 1], "datatype": "FP64", "data": [[1.0], [2.0]]}],
    }
    predictions, version = decode_response(v2)
    assert predictions.tolist() == [1.0, 2.0] and version == "3"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"instances": []}, "instances: must be a non-empty list"),
        ({"instances": [{"crim": 1.0}]}, "missing feature"),
        ({"instances": [ROW[:5]]}, "12 values per row"),
        ({"instances": [["a"] * 12]}, "must be numbers"),
        ({"instances": [[float("inf")] * 12]}, "finite"),
        ({"inputs": [{"name": "a", "data": [1]}, {"name": "b", "data": [2]}]}, "one input per feature"),
        ({"inputs": [{"name": "a"}]}, "needs 'name'"),
        ({"rows": []}, "not a V1"),
    ],
)
def test_bad_requests_name_the_field(payload: object, message: str) -> None:
    with pytest.raises(InvalidEventError, match=message):
        decode_request(payload, FEATURES)


def test_bad_responses() -> None:
    with pytest.raises(InvalidEventError, match="not a V1"):
        decode_response({"result": 1})
    with pytest.raises(InvalidEventError, match="outputs\\[0\\]"):
        decode_response({"outputs": [{"name": "x"}]})


@pytest.mark.parametrize("structured", [False, True])
def test_parse_binary_and_structured_events(structured: bool) -> None:
    headers, body = cloud_event(
        "request", "abc", {"instances": [ROW]}, endpoint="canary", version="5", structured=structured
    )
    event = parse_event(headers, body, FEATURES)
    assert (event.kind, event.id, event.endpoint, event.component, event.model_version) == (
        "request",
        "abc",
        "canary",
        "transformer",
        "5",
    )
    assert event.rows is not None and np.array_equal(event.rows, [ROW])
    headers, body = cloud_event("response", "abc", {"predictions": [3.0]}, structured=structured)
    event = parse_event(headers, body, FEATURES)
    assert event.kind == "response" and event.predictions is not None and event.predictions.tolist() == [3.0]
    assert event.endpoint == "default" and event.model_version is None


def test_raw_kserve_headers() -> None:
    """The headers exactly as KServe's agent sends them (no SDK on the sending side)."""
    headers = {
        "ce-specversion": "1.0",
        "ce-id": "req-1",
        "ce-type": "org.kubeflow.serving.inference.response",
        "ce-source": "http://localhost:9081/",
        "ce-time": "2026-01-01T00:00:00Z",
        "ce-inferenceservicename": "housing",
        "ce-namespace": "ml",
        "ce-component": "predictor",
        "ce-endpoint": "default",
        "ce-metadata": '{"model_version":["4"]}',
        "ce-recordedtime": "2026-01-01T00:00:00Z",
        "content-type": "application/json",
    }
    event = parse_event(headers, b'{"predictions": [12.5]}', FEATURES)
    assert (event.kind, event.id, event.component, event.model_version) == (
        "response",
        "req-1",
        "predictor",
        "4",
    )


def test_invalid_events() -> None:
    with pytest.raises(InvalidEventError, match="not a CloudEvent") as caught:
        parse_event({"content-type": "application/json"}, b"[1, 2]", FEATURES)
    assert caught.value.kind is None
    headers, body = cloud_event("request", "a", {"instances": [ROW]})
    with pytest.raises(InvalidEventError, match="ce-type"):
        parse_event({**headers, "ce-type": "other"}, body, FEATURES)
    with pytest.raises(InvalidEventError, match="body: must be a JSON") as caught:
        parse_event(headers, b"not json", FEATURES)
    assert caught.value.kind == "request"
    with pytest.raises(InvalidEventError, match="body: empty"):
        parse_event(headers, b"", FEATURES)


def test_responses_carry_the_bounds_of_their_predictions() -> None:
    from detector.events import decode_bounds

    v1 = {
        "predictions": [20.0, 30.0],
        "intervals": {"level": 0.9, "lower": [17.0, 26.0], "upper": [23.0, 35.0]},
    }
    bounds = decode_bounds(v1, 2)
    assert bounds is not None and bounds.level == 0.9
    assert bounds.lower.tolist() == [17.0, 26.0] and bounds.upper.tolist() == [23.0, 35.0]
    assert decode_bounds({"predictions": [20.0]}, 1) is None
    v2 = {  # a V2 answer as its client asked for it: the price need not come first
        "outputs": [
            {"name": "price_upper", "data": [23.0], "parameters": {"interval_level": "0.8"}},
            {"name": "medv", "data": [20.0]},
            {"name": "price_lower", "data": [18.0], "parameters": {"interval_level": "0.8"}},
        ]
    }
    assert decode_response(v2)[0].tolist() == [20.0]
    bounds = decode_bounds(v2, 1)
    assert bounds is not None and (bounds.level, bounds.lower[0], bounds.upper[0]) == (0.8, 18.0, 23.0)


@pytest.mark.parametrize(
    ("intervals", "message"),
    [
        ({"level": 1.5, "lower": [1.0], "upper": [2.0]}, r"intervals\.level: must be one of 0.8, 0.9, 0.95"),
        # Only the levels served: the monitor keeps a coverage series per level, so a forged one is refused.
        ({"level": 0.42, "lower": [1.0], "upper": [2.0]}, r"intervals\.level: must be one of"),
        ({"level": 10**400, "lower": [1.0], "upper": [2.0]}, r"intervals\.level: .*got 1000"),
        ({"level": 0.9, "lower": [1.0, 2.0], "upper": [2.0, 3.0]}, "one lower and one upper bound per"),
        ({"level": 0.9, "lower": [3.0], "upper": [2.0]}, "a lower bound is above its upper bound"),
        ({"level": 0.9, "lower": ["x"], "upper": [2.0]}, r"intervals\.lower: must be numbers"),
    ],
)
def test_bad_bounds_name_the_field(intervals: dict, message: str) -> None:
    from detector.events import decode_bounds

    with pytest.raises(InvalidEventError, match=message):
        decode_bounds({"predictions": [1.5], "intervals": intervals}, 1)
