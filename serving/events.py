"""The inference log's contract between the transformer (which sends it) and the detector (which reads it).

Events are HTTP CloudEvents 1.0 in KServe's inference-logger shape. In binary mode the attributes travel as
``ce-*`` headers and the body is the raw payload; a request and its response share ``ce-id``, the id the
client knows. ``ce-endpoint`` says which predictor answered (:data:`ENDPOINTS`: ``default`` for the stable
one, ``canary`` for a canary) and ``ce-metadata`` carries the model name and the version that answered, as
a JSON object (:func:`encode_metadata`; KServe's agent maps each key to a list instead, which
:func:`decode_metadata` reads too).

The sender is ``transformer/request_logger.py``; the reader ``detector/events.py``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

SPEC_VERSION = "1.0"
REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"

HEADER_SPEC_VERSION = "ce-specversion"
HEADER_ID = "ce-id"
HEADER_TYPE = "ce-type"
HEADER_SOURCE = "ce-source"
HEADER_TIME = "ce-time"
HEADER_INFERENCE_SERVICE = "ce-inferenceservicename"
HEADER_NAMESPACE = "ce-namespace"
HEADER_COMPONENT = "ce-component"
HEADER_ENDPOINT = "ce-endpoint"
HEADER_METADATA = "ce-metadata"
HEADER_RECORDED_TIME = "ce-recordedtime"
CONTENT_TYPE = "application/json"

METADATA_MODEL_NAME = "model_name"
METADATA_MODEL_VERSION = "model_version"
DEFAULT_ENDPOINT = "default"
CANARY_ENDPOINT = "canary"
ENDPOINTS = (DEFAULT_ENDPOINT, CANARY_ENDPOINT)
"""The values of ``ce-endpoint``, and of the ``endpoint`` label of every metric and scrape target."""


def encode_metadata(values: Mapping[str, str]) -> str:
    """The ``ce-metadata`` header value: a JSON object of strings (e.g. ``model_version``)."""
    return json.dumps(dict(values), separators=(",", ":"), sort_keys=True)


def decode_metadata(header: str | None) -> dict[str, str]:
    """Read ``ce-metadata`` as sent here or by KServe's agent (which maps each key to a list of strings).

    Returns:
        Key -> value; empty when the header is absent or not a JSON object.
    """
    if not header:
        return {}
    try:
        document = json.loads(header)
    except json.JSONDecodeError:
        return {}
    if not isinstance(document, dict):
        return {}
    return {
        str(key): str(value[0] if isinstance(value, list) and value else value)
        for key, value in document.items()
        if value not in (None, [])
    }
