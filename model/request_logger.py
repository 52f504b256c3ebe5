"""KServe's inference logger, as CloudEvents: the header names, and the emitter the transformer logs with.

The transformer is the one logging point, on Kubernetes exactly as in the local stack: given a logger URL
(``--logger_url`` / ``LOGGER_URL``; off by default) it posts every client request and its response to the
drift detector. KServe's agent logger is not used: it sits at the predictor, where its ``ce-id`` is an id the
client never sees (so ``POST /feedback`` could never find the prediction), and it cannot tell a canary
predictor that the transformer routes to from the stable one. Here ``ce-id`` is the id the client knows
(its V2 ``id``, else its ``x-request-id``), ``ce-endpoint`` is ``default`` for the stable predictor and
``canary`` for a canary, and ``ce-metadata`` carries the version of the model that answered.

The events are HTTP CloudEvents 1.0 in binary mode: the attributes travel as ``ce-*`` headers and the body
is the raw payload. A request and its response share ``ce-id``. The transformer sends:

- request: ``{"instances": [{"crim": ..., ..., "lstat": ...}, ...]}`` (V1, one object per house, the model's
  features, whatever protocol the client used);
- response: ``{"predictions": [...]}`` (median value in USD 1000s).

KServe's own logger would send the raw V1 or V2 body of whichever component it is attached to; the detector
still decodes both. The model version travels in ``ce-metadata`` (a JSON object; see :func:`encode_metadata`).

Sending never slows or fails an inference: events go through a bounded queue to a background thread; when the
queue is full the event is dropped and counted (``housing_logger_events_total{outcome="dropped"}``).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger(__name__)

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
ENDPOINTS = ("default", "canary")
LOGGER_URL_ENV = "LOGGER_URL"


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


class _LazyBody:
    """A body built in the sender thread, so the inference path does not pay for JSON-friendly copies."""

    def __init__(self, build: Callable[[], Any]):
        self._build = build

    def value(self) -> Any:
        return self._build()


@dataclass(frozen=True)
class Event:
    """One inference event before it is put on the wire."""

    event_id: str
    event_type: str
    endpoint: str
    metadata: str
    body: _LazyBody


class RequestLogger:
    """Posts inference request/response CloudEvents to a URL from a background thread.

    Args:
        url: Where to post the events (the detector's HTTP endpoint).
        component: ``transformer`` or ``predictor`` (``ce-component``).
        inference_service: ``ce-inferenceservicename``.
        namespace: ``ce-namespace`` (``local`` outside Kubernetes).
        max_queue: Events waiting at most; beyond it, events are dropped and counted.
        timeout: Seconds allowed for one POST.
    """

    def __init__(
        self,
        url: str,
        *,
        component: str,
        inference_service: str = "housing",
        namespace: str = "local",
        max_queue: int = 1000,
        timeout: float = 2.0,
    ):
        self.url = url
        self.component = component
        self.inference_service = inference_service
        self.namespace = namespace
        self.timeout = timeout
        self._queue: queue.Queue[Event | None] = queue.Queue(maxsize=max_queue)
        self._thread = threading.Thread(target=self._run, name="request-logger", daemon=True)
        self._thread.start()

    def log(
        self,
        feature_names: Sequence[str],
        rows: Any,
        predictions: Any,
        *,
        model_version: str,
        request_id: str | None = None,
        endpoint: str = "default",
    ) -> None:
        """Queue the request and response events of one inference; never blocks.

        Args:
            feature_names: Column names of ``rows`` (the model's features, in order).
            rows: The validated inputs, an array of shape [N, n_features].
            predictions: The predictions, shape [N] (USD 1000s).
            model_version: The served model's version (goes into ``ce-metadata``).
            request_id: The inference request id (``ce-id``); a new UUID when absent.
            endpoint: ``default`` (the stable predictor answered) or ``canary`` (``ce-endpoint``).
        """
        event_id = request_id or str(uuid.uuid4())
        request = _LazyBody(
            lambda: {"instances": [dict(zip(feature_names, map(float, row), strict=True)) for row in rows]}
        )
        response = _LazyBody(lambda: {"predictions": [float(value) for value in predictions]})
        metadata = encode_metadata(
            {METADATA_MODEL_NAME: self.inference_service, METADATA_MODEL_VERSION: model_version}
        )
        for event in (
            Event(event_id, REQUEST_TYPE, endpoint, metadata, request),
            Event(event_id, RESPONSE_TYPE, endpoint, metadata, response),
        ):
            try:
                self._queue.put_nowait(event)
            except queue.Full:
                _count(self.component, "dropped")

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued (within ``timeout``) and stop the thread."""
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)

    def headers(self, event: Event) -> dict[str, str]:
        """The CloudEvents binary-mode headers of one event."""
        now = datetime.now(UTC).isoformat()
        return {
            HEADER_SPEC_VERSION: SPEC_VERSION,
            HEADER_ID: event.event_id,
            HEADER_TYPE: event.event_type,
            HEADER_SOURCE: f"http://localhost/{self.component}/{self.inference_service}",
            HEADER_TIME: now,
            HEADER_RECORDED_TIME: now,
            HEADER_INFERENCE_SERVICE: self.inference_service,
            HEADER_NAMESPACE: self.namespace,
            HEADER_COMPONENT: self.component,
            HEADER_ENDPOINT: event.endpoint,
            HEADER_METADATA: event.metadata,
            "content-type": CONTENT_TYPE,
        }

    def _run(self) -> None:
        import httpx

        with httpx.Client(timeout=self.timeout) as client:
            while (event := self._queue.get()) is not None:
                try:
                    body = json.dumps(event.body.value(), separators=(",", ":"))
                    response = client.post(self.url, content=body, headers=self.headers(event))
                    response.raise_for_status()
                    _count(self.component, "sent")
                except (httpx.HTTPError, ValueError) as error:
                    _count(self.component, "failed")
                    log.warning(
                        "request logger: cannot post %s %s to %s: %s",
                        event.event_type,
                        event.event_id,
                        self.url,
                        error,
                    )


def _count(component: str, outcome: str) -> None:
    if _EVENTS is not None:
        _EVENTS.labels(component=component, outcome=outcome).inc()


def _events_counter() -> Any:
    try:
        from prometheus_client import Counter
    except ImportError:  # the detector image may not need the emitter at all
        return None
    return Counter(
        "housing_logger_events_total",
        "Inference CloudEvents of the local request logger by outcome: sent, dropped (queue full), failed.",
        ["component", "outcome"],
    )


_EVENTS = _events_counter()
