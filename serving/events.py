"""The inference log's contract between the transformer (which sends it) and the detector (which reads it).

Events are HTTP CloudEvents 1.0 in KServe's inference-logger shape. In binary mode the attributes travel as
``ce-*`` headers and the body is the raw payload; a request and its response share ``ce-id``, the id the
client knows. ``ce-endpoint`` says which predictor answered (:data:`ENDPOINTS`: ``default`` for the stable
one, ``canary`` for a canary) and ``ce-metadata`` carries the model name and the version that answered, as
a JSON object (:func:`encode_metadata`; KServe's agent maps each key to a list instead, which
:func:`decode_metadata` reads too).

The sender is ``transformer/request_logger.py``; the reader ``detector/events.py``.

**Data.** A request event's data is ``{"instances": [{feature: value, ...}, ...]}``; a response event's is
``{"predictions": [...]}`` and, when the predictor computed them, the interval bounds of each prediction:
``"intervals": {"level": 0.9, "lower": [...], "upper": [...]}`` (:data:`INTERVALS`; USD 1000s, one per
prediction; the level the client asked for, else the monitored one, 0.9). The detector scores each label
against them (``housing_interval_coverage``).

**Batches.** The transformer sends CloudEvents' batched content mode (:data:`BATCH_CONTENT_TYPE`: a JSON array
of structured-mode events, each with its attributes as keys and the payload under ``data``); the detector also
reads single binary and structured events, as KServe's agent posts them. A request and its response travel in
the same batch.

**Sampling.** Under overload the sender drops whole inferences (request and response together) at random and
stamps every event it does send with the extension attribute :data:`SAMPLE_RATE` (``housingsamplerate``): the
share of its endpoint's inferences taken over the last second. Each received inference stands for
``1 / rate`` offered ones, which is how the detector estimates what it did not see; an event without the
attribute counts as rate 1.

**Replicas.** All events of one inference id, and its feedback, must reach the same detector replica
(its join buffer and its ``/feedback`` lookup are per replica). :func:`replica_for` is the one hash: the
sender uses it over several URLs, and a client posting ``/feedback`` straight to replicas uses it too.
Behind a hashing proxy (Istio's ``consistentHash`` on :data:`ROUTING_HEADER`) the sender posts each
inference on its own, with that header set to its id, and clients send ``/feedback`` with the same header.
"""

from __future__ import annotations

import functools
import json
import zlib
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
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"
SAMPLE_RATE = "housingsamplerate"
"""Extension attribute (header ``ce-housingsamplerate``): the sender's delivered share, in (0, 1]."""
ROUTING_HEADER = "x-inference-id"
"""The header a hashing proxy routes on: the inference id, on one-inference batches and on ``/feedback``."""

INTERVALS = "intervals"
"""A response event's key for the bounds of its predictions: ``{"level", "lower", "upper"}``."""

METADATA_MODEL_NAME = "model_name"
METADATA_MODEL_VERSION = "model_version"
DEFAULT_ENDPOINT = "default"
CANARY_ENDPOINT = "canary"
ENDPOINTS = (DEFAULT_ENDPOINT, CANARY_ENDPOINT)
"""The values of ``ce-endpoint``, and of the ``endpoint`` label of every metric and scrape target."""
SHADOW_ENDPOINT = "shadow"
"""``ce-endpoint`` of a shadow's predictions: logged with the client's request id, answered to no client."""
LOGGED_ENDPOINTS = (*ENDPOINTS, SHADOW_ENDPOINT)
"""Every ``ce-endpoint`` a sender of this project logs: the detector takes these and refuses others."""


def encode_metadata(values: Mapping[str, str]) -> str:
    """The ``ce-metadata`` header value: a JSON object of strings (e.g. ``model_version``)."""
    return json.dumps(dict(values), separators=(",", ":"), sort_keys=True)


def decode_metadata(header: str | None) -> dict[str, str]:
    """Read ``ce-metadata`` as sent here or by KServe's agent (which maps each key to a list of strings).

    Returns:
        Key -> value; empty when the header is absent or not a JSON object.
    """
    return dict(_metadata_items(header)) if header else {}


@functools.lru_cache(maxsize=256)
def _metadata_items(header: str) -> tuple[tuple[str, str], ...]:
    """Parsed once per distinct header: a sender repeats the same few (one per model version)."""
    try:
        document = json.loads(header)
    except json.JSONDecodeError:
        return ()
    if not isinstance(document, dict):
        return ()
    return tuple(
        (str(key), str(value[0] if isinstance(value, list) and value else value))
        for key, value in document.items()
        if value not in (None, [])
    )


def replica_for(event_id: str, replicas: int) -> int:
    """The replica (0 .. ``replicas`` - 1) that receives every event and the feedback of ``event_id``.

    CRC-32 of the UTF-8 id, modulo the count: stable across processes and Python versions (unlike
    ``hash()``), about 0.1 µs, and uniform enough that replicas get equal shares (checked over 100,000 ids).
    """
    if replicas < 1:
        raise ValueError(f"replicas: must be at least 1, got {replicas}")
    return zlib.crc32(event_id.encode()) % replicas
