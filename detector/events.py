"""Decode KServe inference-logger CloudEvents into feature rows and predictions.

An event is an HTTP CloudEvent 1.0, in binary mode (``ce-*`` headers, the raw inference payload as body)
as KServe's agent sends it, or in structured mode (one JSON envelope); the ``cloudevents`` SDK reads both. The
body is whatever the logged component received or returned:

- requests: V1 ``{"instances": [{"crim": ..}, ..]}`` (named) or ``{"instances": [[..], ..]}`` (positional,
  model order); V2 ``{"inputs": [{"name": "crim", "shape": [N], "data": [..]}, ..]}`` (one input per
  feature) or one ``[N, n_features]`` tensor;
- responses: V1 ``{"predictions": [..]}``, V2 ``{"outputs": [{"data": [..], ..}], "model_version": ..}``;
  with the interval bounds of each prediction when the predictor computed them: V1 ``"intervals": {"level",
  "lower", "upper"}`` (the transformer's, :data:`serving.events.INTERVALS`), V2 outputs named ``price_lower``
  and ``price_upper`` with ``parameters.interval_level`` (a V2 answer logged as the client got it).

A batch (CloudEvents' batched content mode, ``application/cloudevents-batch+json``: a JSON array of
structured-mode events, as the transformer sends them) is read by :func:`parse_batch`, element by element:
a bad element is reported by its index and does not spoil the others. The extension attribute
``housingsamplerate`` (the sender's delivered share) becomes :attr:`InferenceEvent.sample_rate`.

Features are found by name as the transformer and the predictor find them (:mod:`serving.payload`); the
headers are the contract of :mod:`serving.events`. Anything else raises :class:`InvalidEventError` with a
message naming the field and the rule broken.

**Bounds.** Everything an event carries that the detector keeps is bounded here, before it is kept: the id
(``ce-id``) by the servers' rule for request ids (:func:`check_id`, :mod:`serving.inputs`: 1 to 256
printable ASCII characters), the endpoint, component and model version by :data:`MAX_NAME_CHARS`, the
``ce-metadata`` header by :data:`MAX_METADATA_CHARS`; JSON nested too deep is a 400 naming the rule
(``serving.inputs.NESTING_RULE``), not a ``RecursionError``. Which endpoints and how many model versions are
taken is the monitor's rule (:mod:`detector.monitor`).
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from cloudevents.exceptions import GenericException
from cloudevents.http import from_http

from model.intervals import BOUND_OUTPUTS, LEVEL_PARAMETER, LevelError, check_level, level_rule
from model.schema import TARGET
from serving.events import (
    BATCH_CONTENT_TYPE,
    DEFAULT_ENDPOINT,
    INTERVALS,
    METADATA_MODEL_VERSION,
    REQUEST_TYPE,
    RESPONSE_TYPE,
    SAMPLE_RATE,
    SPEC_VERSION,
    decode_metadata,
)
from serving.inputs import ID_RULE, MAX_JSON_DEPTH, NESTING_RULE, check_request_id, nesting_depth, parse_json
from serving.payload import instance_rows, stack_columns

KINDS = {REQUEST_TYPE: "request", RESPONSE_TYPE: "response"}
MAX_NAME_CHARS = 128
"""The longest endpoint, component or model version taken: names, which label metrics and keys, not data."""
MAX_METADATA_CHARS = 1024
"""The longest ``ce-metadata`` taken (a model name and version need under 100): parsed values are cached."""
PRICE_OUTPUTS = (TARGET, "output-0")
"""The names of the price among a V2 answer's outputs (the transformer's, the predictor's); else the first."""


@dataclass(frozen=True)
class Bounds:
    """The interval of each prediction of a response: its level and the lower and upper bounds (USD 1000s)."""

    level: float
    lower: np.ndarray
    upper: np.ndarray


class InvalidEventError(ValueError):
    """The event cannot be used; the message says which field breaks which rule.

    Attributes:
        kind: ``request`` or ``response`` when the event type was readable, else ``None``.
    """

    def __init__(self, message: str, kind: str | None = None):
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class InferenceEvent:
    """One decoded inference event.

    Attributes:
        kind: ``request`` or ``response``.
        id: The inference request id (shared by a request and its response).
        endpoint: ``default`` or ``canary`` (``ce-endpoint``).
        component: ``predictor`` or ``transformer`` (``ce-component``).
        model_version: From ``ce-metadata`` or the V2 response, when known.
        rows: Request inputs, shape [N, n_features] in model order (requests only).
        predictions: Response values, shape [N] (responses only).
        sample_rate: The sender's delivered share when it sent the event (``housingsamplerate``; 1 if absent).
        intervals: The predictions' interval bounds, when the response carries them.
    """

    kind: str
    id: str
    endpoint: str
    component: str
    model_version: str | None
    rows: np.ndarray | None = None
    predictions: np.ndarray | None = None
    sample_rate: float = 1.0
    intervals: Bounds | None = None


def is_batch(headers: Mapping[str, str]) -> bool:
    """Whether the HTTP request is in CloudEvents' batched content mode (by its ``Content-Type``)."""
    return headers.get("content-type", "").split(";")[0].strip().lower() == BATCH_CONTENT_TYPE


def parse_batch(body: bytes, features: Sequence[str]) -> list[InferenceEvent | InvalidEventError]:
    """Read a batch of structured-mode CloudEvents (a JSON array), element by element.

    Returns:
        One entry per element, in order: the decoded event, or the error naming its index and problem.

    Raises:
        InvalidEventError: The body is not a JSON array (nothing in it can be read).
    """
    elements = read_json(body, "body", "must be a JSON array of CloudEvents (batched content mode)")
    if not isinstance(elements, list):
        raise InvalidEventError(
            f"body: must be a JSON array of CloudEvents (batched content mode), got {type(elements).__name__}"
        )
    decoded: list[InferenceEvent | InvalidEventError] = []
    for index, element in enumerate(elements):
        try:
            decoded.append(_structured(element, features))
        except InvalidEventError as error:
            decoded.append(InvalidEventError(f"[{index}].{error}", error.kind))
    return decoded


def _structured(element: Any, features: Sequence[str]) -> InferenceEvent:
    """One element of a batch: a structured-mode CloudEvent as a JSON object.

    Checked here, not by the SDK: its per-event conversion would cost more than the rest of the ingest.
    """
    if not isinstance(element, dict):
        raise InvalidEventError("event: must be a JSON object (a structured-mode CloudEvent)")
    for name in ("id", "source", "type"):
        if not isinstance(element.get(name), str) or not element[name]:
            raise InvalidEventError(f"{name}: required, a non-empty string")
    if element.get("specversion") != SPEC_VERSION:
        raise InvalidEventError(
            f"specversion: must be {SPEC_VERSION!r}, got {_shown(element.get('specversion'))}"
        )
    if element.get("data") is not None:
        data = element["data"]
    elif element.get("data_base64") is not None:
        try:
            data = base64.b64decode(element["data_base64"], validate=True)
        except (ValueError, TypeError):
            raise InvalidEventError("data_base64: must be base64") from None
    else:
        data = None
    return _decode(element, data, features)


def parse_event(headers: Mapping[str, str], body: bytes, features: Sequence[str]) -> InferenceEvent:
    """Read one HTTP CloudEvent (binary or structured mode) from the inference logger.

    Args:
        headers: The HTTP request headers.
        body: The HTTP request body.
        features: The model's input names, in model order.

    Returns:
        The decoded event.

    Raises:
        InvalidEventError: Not a CloudEvent, an unknown type, or a body that is not a usable V1/V2 payload.
    """
    if nesting_depth(body) > MAX_JSON_DEPTH:  # before the SDK's json.loads, which recurses
        raise InvalidEventError(NESTING_RULE)
    try:
        event = from_http(headers, body)  # a Mapping: the SDK reads it with .items(), no copy needed
    except RecursionError:  # not reached past the depth check; never a 500 if it were
        raise InvalidEventError(NESTING_RULE) from None
    except (GenericException, ValueError, TypeError) as error:
        raise InvalidEventError(f"not a CloudEvent 1.0: {_shown(str(error), 200)}") from None
    return _decode(event, event.get_data(), features, prefix="ce-")


def _decode(event: Any, data: Any, features: Sequence[str], prefix: str = "") -> InferenceEvent:
    """An inference event from its attributes (``event[name]``, ``event.get(name)``) and data."""
    kind = KINDS.get(event["type"])
    if kind is None:
        raise InvalidEventError(
            f"{prefix}type: must be {REQUEST_TYPE} or {RESPONSE_TYPE}, got {_shown(event['type'])}"
        )
    try:
        check_id(event["id"], f"{prefix}id")
    except InvalidEventError as error:
        raise InvalidEventError(str(error), kind) from None
    endpoint = _name(event, "endpoint", prefix, kind) or DEFAULT_ENDPOINT
    component = _name(event, "component", prefix, kind) or "unknown"
    metadata = decode_metadata(_metadata_header(event.get("metadata"), prefix, kind))
    payload = _json_payload(event.get("data") if data is None else data, kind)
    rate = _sample_rate(event.get(SAMPLE_RATE), prefix, kind)
    try:
        rows, predictions, version, bounds = None, None, None, None
        if kind == "request":
            rows = decode_request(payload, features)
        else:
            predictions, version = decode_response(payload)
            bounds = decode_bounds(payload, len(predictions))
    except InvalidEventError as error:
        raise InvalidEventError(str(error), kind) from None
    model_version = metadata.get(METADATA_MODEL_VERSION) or version
    if model_version is not None and len(model_version) > MAX_NAME_CHARS:
        field = (
            f"{prefix}metadata.{METADATA_MODEL_VERSION}"
            if metadata.get(METADATA_MODEL_VERSION)
            else ("model_version")
        )
        raise InvalidEventError(
            f"{field}: must be at most {MAX_NAME_CHARS} characters, got {len(model_version):,}", kind
        )
    return InferenceEvent(
        kind=kind,
        id=event["id"],
        endpoint=endpoint,
        component=component,
        model_version=model_version,
        rows=rows,
        predictions=predictions,
        sample_rate=rate,
        intervals=bounds,
    )


def _name(event: Any, attribute: str, prefix: str, kind: str) -> str | None:
    """The event's ``attribute`` (a name: endpoint, component), at most :data:`MAX_NAME_CHARS` characters."""
    value = event.get(attribute)
    if value is None:
        return None
    text = value if type(value) is str else str(value)
    if len(text) > MAX_NAME_CHARS:
        message = f"{prefix}{attribute}: must be at most {MAX_NAME_CHARS} characters, got {len(text):,}"
        raise InvalidEventError(message, kind)
    return text


def _metadata_header(value: Any, prefix: str, kind: str) -> str | None:
    """``ce-metadata`` as text (a JSON object), at most :data:`MAX_METADATA_CHARS` characters."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        message = f"{prefix}metadata: must be a JSON object as a string, got {type(value).__name__}"
        raise InvalidEventError(message, kind)
    if len(value) > MAX_METADATA_CHARS:
        message = f"{prefix}metadata: must be at most {MAX_METADATA_CHARS} characters, got {len(value):,}"
        raise InvalidEventError(message, kind)
    return value


def _sample_rate(value: Any, prefix: str, kind: str) -> float:
    if value is None:
        return 1.0
    try:
        rate = float(value)
    except (TypeError, ValueError):
        rate = math.nan
    if not 0.0 < rate <= 1.0:
        raise InvalidEventError(
            f"{prefix}{SAMPLE_RATE}: must be a number in (0, 1], got {_shown(value)}", kind
        )
    return rate


def decode_request(payload: Any, features: Sequence[str]) -> np.ndarray:
    """The feature rows of a V1 or V2 inference request, shape [N, len(features)] in ``features`` order.

    Raises:
        InvalidEventError: The payload is neither protocol's request, or does not carry the model's features.
    """
    if isinstance(payload, dict) and "instances" in payload:
        instances = payload["instances"]
        if not isinstance(instances, list) or not instances:
            raise InvalidEventError("instances: must be a non-empty list")
        if all(isinstance(item, dict) for item in instances):
            missing = [name for name in features if name not in instances[0]]
            if missing:
                raise InvalidEventError(f"instances[0]: missing feature(s) {missing}")
            try:
                return _finite("instances", instance_rows(instances, features))
            except KeyError as error:
                raise InvalidEventError(f"instances: every instance needs feature {error}") from None
        return _finite("instances", instances, width=len(features))
    if isinstance(payload, dict) and isinstance(payload.get("inputs"), list) and payload["inputs"]:
        inputs = payload["inputs"]
        if not all(isinstance(item, dict) and "data" in item for item in inputs):
            raise InvalidEventError("inputs: each V2 input needs 'name', 'shape', 'datatype' and 'data'")
        by_name = {item.get("name"): item for item in inputs}
        if all(name in by_name for name in features):
            columns = {
                name: _finite(f"inputs[{name}].data", by_name[name]["data"]).reshape(-1) for name in features
            }
            try:
                return stack_columns(columns, features)
            except ValueError as error:
                raise InvalidEventError(f"inputs: {error}") from None
        if len(inputs) == 1:
            return _finite(f"inputs[{inputs[0].get('name')}].data", inputs[0]["data"], width=len(features))
        raise InvalidEventError(
            f"inputs: expected one [N, {len(features)}] tensor or one input per feature {list(features)}"
        )
    raise InvalidEventError("body: not a V1 ('instances') or V2 ('inputs') inference request")


def decode_response(payload: Any) -> tuple[np.ndarray, str | None]:
    """The predictions of a V1 or V2 inference response, shape [N], and the V2 ``model_version``.

    Raises:
        InvalidEventError: The payload is neither protocol's response.
    """
    if isinstance(payload, dict) and "predictions" in payload:
        return _finite("predictions", payload["predictions"]).reshape(-1), None
    if isinstance(payload, dict) and isinstance(payload.get("outputs"), list) and payload["outputs"]:
        outputs = payload["outputs"]
        index = next(
            (
                i
                for i, item in enumerate(outputs)
                if isinstance(item, dict) and item.get("name") in PRICE_OUTPUTS
            ),
            0,
        )
        output = outputs[index]
        if not isinstance(output, dict) or "data" not in output:
            raise InvalidEventError(f"outputs[{index}]: a V2 output needs 'data'")
        version = payload.get("model_version")
        return _finite(f"outputs[{index}].data", output["data"]).reshape(-1), str(
            version
        ) if version else None
    raise InvalidEventError("body: not a V1 ('predictions') or V2 ('outputs') inference response")


def decode_bounds(payload: Any, rows: int) -> Bounds | None:
    """The interval bounds a response carries (``None`` when it carries none), one per prediction.

    Raises:
        InvalidEventError: They are malformed: not numbers, not one per prediction, a level that is not one
            of the levels served (:data:`model.intervals.LEVELS`), or a lower bound above its upper bound.
    """
    if isinstance(payload.get(INTERVALS), dict):
        found = payload[INTERVALS]
        level, lower, upper, field = found.get("level"), found.get("lower"), found.get("upper"), INTERVALS
    elif isinstance(payload.get("outputs"), list):
        named = {
            item["name"]: item
            for item in payload["outputs"]
            if isinstance(item, dict) and isinstance(item.get("name"), str)
        }
        if not all(name in named for name in BOUND_OUTPUTS):
            return None
        parameters = named[BOUND_OUTPUTS[0]].get("parameters")
        level = parameters.get(LEVEL_PARAMETER) if isinstance(parameters, dict) else None
        field = "outputs"
        lower, upper = (named[name].get("data") for name in BOUND_OUTPUTS)
    else:
        return None
    try:  # one of the levels served: the monitor keeps a coverage series per level
        level = check_level(level)
    except LevelError:
        raise InvalidEventError(f"{field}.level: {level_rule()}, got {_shown(level)}") from None
    low = _finite(f"{field}.lower", lower).reshape(-1)
    high = _finite(f"{field}.upper", upper).reshape(-1)
    if len(low) != rows or len(high) != rows:
        raise InvalidEventError(f"{field}: must hold one lower and one upper bound per prediction ({rows})")
    if (low > high).any():
        raise InvalidEventError(f"{field}: a lower bound is above its upper bound")
    return Bounds(level, low, high)


def check_id(value: Any, field: str) -> str:
    """``value``, checked as an inference id by the servers' rule (:data:`serving.inputs.ID_RULE`).

    Raises:
        InvalidEventError: It breaks the rule; the message names ``field`` and never echoes the id (it may
            be a megabyte).
    """
    if not isinstance(value, str):
        raise InvalidEventError(f"{field}: must be a string, got {type(value).__name__}")
    if not value:
        raise InvalidEventError(f"{field}: must be {ID_RULE}; got 0 characters")
    try:
        check_request_id(value, field)
    except ValueError as error:
        raise InvalidEventError(str(error)) from None
    return value


def read_json(data: bytes | bytearray | str, field: str, expected: str) -> Any:
    """``data`` parsed as JSON by the servers' parser (:func:`serving.inputs.parse_json`).

    Raises:
        InvalidEventError: Naming the rule: ``expected`` for what is not JSON,
            ``serving.inputs.NESTING_RULE`` past the depth limit, Python's limit for an integer of more than
            4,300 digits (a ``ValueError`` that was a 500).
    """
    try:
        return parse_json(bytes(data) if isinstance(data, bytearray) else data)
    except ValueError as error:
        message = str(error)
        if message == NESTING_RULE:
            raise InvalidEventError(message) from None
        if message.startswith("body: not valid JSON") or isinstance(error, UnicodeDecodeError):
            raise InvalidEventError(f"{field}: {expected}") from None
        raise InvalidEventError(f"{field}: {expected} ({_shown(message, 120)})") from None


def _shown(value: Any, limit: int = 40) -> str:
    """``repr(value)``, cut to ``limit`` characters: a message never echoes a megabyte back."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def _json_payload(data: Any, kind: str) -> Any:
    if isinstance(data, bytes | bytearray | str):
        try:
            return read_json(data, "body", "must be a JSON inference payload")
        except InvalidEventError as error:
            raise InvalidEventError(str(error), kind) from None
    if data is None:
        raise InvalidEventError("body: empty", kind)
    return data


def _finite(field: str, values: Any, width: int | None = None) -> np.ndarray:
    """Values as a float array; with ``width``, reshaped to rows of ``width`` columns."""
    try:
        array = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise InvalidEventError(f"{field}: must be numbers (rows of equal length)") from None
    if array.size == 0:
        raise InvalidEventError(f"{field}: must not be empty")
    if not np.isfinite(array).all():
        raise InvalidEventError(f"{field}: must be finite numbers, got {_first_bad(array)}")
    if width is None:
        return array
    if array.ndim > 2 or array.size % width or (array.ndim == 2 and array.shape[1] != width):
        raise InvalidEventError(
            f"{field}: must have {width} values per row (the model's features), got shape {array.shape}"
        )
    return array.reshape(-1, width)


def _first_bad(array: np.ndarray) -> str:
    value = float(array.reshape(-1)[~np.isfinite(array.reshape(-1))][0])
    return "nan" if math.isnan(value) else repr(value)
