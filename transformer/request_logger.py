"""The transformer's inference log: request and response CloudEvents posted to the detector.

The transformer is the one logging point, on Kubernetes exactly as in the local stack: given a logger URL
(``--logger_url`` / ``LOGGER_URL``; off by default) it posts every client request and its response to the
drift detector. KServe's agent logger is not used: it sits at the predictor, where its ``ce-id`` is an id the
client never sees (so ``POST /feedback`` could never find the prediction), and it cannot tell a canary
predictor that the transformer routes to from the stable one. Here ``ce-id`` is the id the client knows
(its V2 ``id``, else its ``x-request-id``), ``ce-endpoint`` is ``default`` for the stable predictor and
``canary`` for a canary, and ``ce-metadata`` carries the version of the model that answered (the headers and
their meaning: :mod:`serving.events`, the contract the detector reads).

The events are HTTP CloudEvents 1.0 in binary mode. The transformer sends:

- request: ``{"instances": [{"crim": ..., ..., "lstat": ...}, ...]}`` (V1, one object per house, the model's
  features, whatever protocol the client used);
- response: ``{"predictions": [...]}`` (median value in USD 1000s).

Sending never slows or fails an inference: events go through a bounded queue to a background thread; when the
queue is full the event is dropped and counted (``housing_logger_events_total{outcome="dropped"}``).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from serving.events import (
    CONTENT_TYPE,
    DEFAULT_ENDPOINT,
    HEADER_COMPONENT,
    HEADER_ENDPOINT,
    HEADER_ID,
    HEADER_INFERENCE_SERVICE,
    HEADER_METADATA,
    HEADER_NAMESPACE,
    HEADER_RECORDED_TIME,
    HEADER_SOURCE,
    HEADER_SPEC_VERSION,
    HEADER_TIME,
    HEADER_TYPE,
    METADATA_MODEL_NAME,
    METADATA_MODEL_VERSION,
    REQUEST_TYPE,
    RESPONSE_TYPE,
    SPEC_VERSION,
    encode_metadata,
)
from transformer.metrics import LOGGER_EVENTS

log = logging.getLogger(__name__)

LOGGER_URL_ENV = "LOGGER_URL"


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
        endpoint: str = DEFAULT_ENDPOINT,
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
                LOGGER_EVENTS.labels(component=self.component, outcome="dropped").inc()

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
        with httpx.Client(timeout=self.timeout) as client:
            while (event := self._queue.get()) is not None:
                try:
                    body = json.dumps(event.body.value(), separators=(",", ":"))
                    response = client.post(self.url, content=body, headers=self.headers(event))
                    response.raise_for_status()
                    LOGGER_EVENTS.labels(component=self.component, outcome="sent").inc()
                except (httpx.HTTPError, ValueError) as error:
                    LOGGER_EVENTS.labels(component=self.component, outcome="failed").inc()
                    log.warning(
                        "request logger: cannot post %s %s to %s: %s",
                        event.event_type,
                        event.event_id,
                        self.url,
                        error,
                    )
