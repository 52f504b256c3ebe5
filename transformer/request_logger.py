"""The transformer's inference log: each inference's request and response CloudEvents, batched.

The transformer is the one logging point, on Kubernetes exactly as in the local stack: given a logger URL
(``--logger_url`` / ``LOGGER_URL``; off by default) it sends every client request and its response to the
drift detector. KServe's agent logger is not used: it sits at the predictor, where its ``ce-id`` is an id the
client never sees (so ``POST /feedback`` could never find the prediction), and it cannot tell a canary
predictor that the transformer routes to from the stable one. Here ``ce-id`` is the id the client knows
(its V2 ``id``, else its ``x-request-id``), ``ce-endpoint`` is ``default`` for the stable predictor and
``canary`` for a canary, and ``ce-metadata`` carries the version of the model that answered (the attributes
and their meaning: :mod:`serving.events`, the contract the detector reads). The events' data:

- request: ``{"instances": [{"crim": ..., ..., "lstat": ...}, ...]}`` (V1, one object per house, the
  features of the model that answered, whatever protocol the client used). Named, not positional: arms of
  an experiment may serve models with different inputs (notebook 04's challenger adds ``rm``), and the
  detector picks its own by name;
- response: ``{"predictions": [...]}`` (median value in USD 1000s) and, when the predictor computed them, the
  bounds of each prediction's interval: ``"intervals": {"level": 0.9, "lower": [...], "upper": [...]}``
  (:data:`serving.events.INTERVALS`).

**Delivery.** Logging must not cost the inferences it logs: the issue-19 soak asks for 95% of the
throughput with the logger off, on the core that serves. :meth:`RequestLogger.log` puts the whole inference
(request and response together) in a bounded buffer and returns (about 2 µs); a background thread per
detector URL sends what waits in CloudEvents' batched content mode (``application/cloudevents-batch+json``)
over one keep-alive connection, at once when ``batch_events`` events wait and otherwise every
``flush_seconds`` (1,000 events, 50 ms by default). What the measurements on the soak's machine said:

- one POST per event could not keep up (the issue-19 soak lost 82% of its events that way);
- a POST costs the transformer 200-300 µs of CPU whatever its size, so batches are as large as the flush
  period makes them: at 1,700 inferences/s each carries about 85;
- a condition variable around the buffer (a lock per inference, a wake-up at each batch's first) made
  :meth:`RequestLogger.log` cost 5 µs; the buffer is now a ``deque`` (atomic appends, no lock) and the
  sender wakes when a batch is full or once per flush period: 2 µs;
- the events are plain dicts encoded by orjson, about 4 µs an inference, not ``cloudevents`` SDK objects,
  whose per-event conversion would cost more; joining the JSON from pieces encoded once per batch was
  tried and was no faster with named rows. The tests read every element with the SDK.

In all, the logger cost the transformer about 21 µs of CPU per request in the 3-minute soak (96.8% of the
throughput without it), down from 40-65 µs (86-93%) with 100 events per POST and a locked buffer.

**Sampling under overload.** Above a watermark (half the buffer) a new inference is taken with a
probability that falls linearly from 1 to 0 as the buffer fills (random early drop), else dropped whole,
request and response together. The draw never looks at what the inference carries, so what the detector
sees stays a uniform random sample of the traffic. Every event carries ``housingsamplerate``, its
endpoint's delivered share (taken / offered) over the last ``rate_seconds``, and the detector counts each
inference as 1 / rate offered ones: that is how it knows what it did not see. (Stamping each event's own
admission probability instead would be exactly unbiased, but events taken at small probabilities make that
estimate swing by several points over thousands of events; the share is steady.) The counters:
``housing_logger_inferences_total{endpoint, outcome}`` (``offered``, ``delivered``, ``dropped``, ``failed``)
and the gauge ``housing_logger_sampling_ratio{endpoint}`` (the share last stamped).

**Several detectors.** Given several URLs, every inference goes to ``urls[replica_for(id, len(urls))]``
(:func:`serving.events.replica_for`): all events of one id, and its feedback, meet on one replica. With
``batch_events=2`` each inference travels alone, with ``x-inference-id: ID``, for a hashing proxy in front of
the replicas (Istio's ``consistentHash``; docs/kubernetes.md).

A batch the detector cannot have taken is kept and sent again: the connection refused (the detector is
restarting: nothing listens) or a 503 (it is not ready, or shutting down) leave the batch at the head of
the buffer, retried with back-off (50 ms doubling to 1 s) while new inferences queue behind it, under the
same bound (so a detector that stays away long enough costs sampled-out inferences, counted ``dropped``,
never memory). Any other failure (a timeout, a reset mid-answer, another non-2xx, a header ``http.client``
refuses) may have come after the detector took part of the batch: it counts the batch's inferences
``failed`` and is not retried (at most once delivery). An inference whose events cannot be encoded is
counted ``failed`` alone; the rest of its batch still goes. At shutdown, :meth:`RequestLogger.close` sends
what waits (and retries a refused batch) until its timeout, then counts what is left ``failed``. So every
inference offered ends up ``delivered``, ``failed`` or ``dropped``, and a sender thread never stops on a
failure; if one ever ends all the same, :attr:`RequestLogger.alive` turns false and the transformer's
liveness with it (a restart is the only way back).
"""

from __future__ import annotations

import functools
import http.client
import logging
import random
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import numpy as np
import orjson

from serving.events import (
    BATCH_CONTENT_TYPE,
    DEFAULT_ENDPOINT,
    INTERVALS,
    METADATA_MODEL_NAME,
    METADATA_MODEL_VERSION,
    REQUEST_TYPE,
    RESPONSE_TYPE,
    ROUTING_HEADER,
    SAMPLE_RATE,
    SPEC_VERSION,
    encode_metadata,
    replica_for,
)
from transformer.metrics import LOGGER_EVENTS, LOGGER_INFERENCES, LOGGER_SAMPLING

log = logging.getLogger(__name__)

LOGGER_URL_ENV = "LOGGER_URL"
LOGGER_KEY_ENV = "HOUSING_LOGGER_API_KEY"  # pragma: allowlist secret (a variable name)
"""The API key (role ``ingest``) the logger sends to a detector run with ``--auth``: in the environment, never
on the command line (``ps`` shows that)."""
MAX_QUEUE = 10_000
"""Inferences waiting per detector URL: about 14 s of the 690 requests/s the issue-19 soak served."""
BATCH_EVENTS = 1000
"""Events per POST at most. A POST costs the transformer 200-300 µs of CPU whatever its size (measured on
the soak's machine), so batches are sized by the flush period: 1,700 inferences/s send about 85 per POST."""
FLUSH_SECONDS = 0.05
RATE_SECONDS = 1.0
RETRY_SECONDS = (0.05, 1.0)
"""First and longest wait before a batch the detector did not take is sent again."""


class NotTakenError(Exception):
    """The detector certainly did not take the batch (nothing listened, or it answered 503): send it again."""


class Inference(NamedTuple):
    """One inference waiting to be sent: its request and response events are built from it in the sender.

    A tuple, not a dataclass: it is made on every inference, beside the inference's own work.
    """

    event_id: str
    endpoint: str
    metadata: str
    feature_names: Sequence[str]
    rows: Any
    predictions: Any
    time: float
    """Seconds since the epoch (formatted by the sender, off the inference's path)."""
    intervals: tuple[float, Any, Any] | None = None
    """The level and the lower and upper bounds of the predictions, if the predictor computed them."""


class SamplingRates:
    """Offered and dropped inferences per endpoint, and the delivered share over the last ``window`` seconds.

    Thread-safe: the inference threads count, the senders read. The share is measured between snapshots
    taken every quarter ``window``, so it follows a change of load within about ``window``.
    """

    def __init__(self, window: float = RATE_SECONDS):
        self.window = window
        self._lock = threading.Lock()
        self.offered: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self._marks: dict[str, deque[tuple[float, int, int]]] = {}
        self._rates: dict[str, float] = {}

    def count(self, endpoint: str, dropped: bool) -> None:
        """One inference offered on ``endpoint``, and whether it was dropped."""
        with self._lock:
            if endpoint not in self._marks:  # the first one: measure from here
                self._marks[endpoint] = deque([(time.monotonic(), 0, 0)])
            self.offered[endpoint] += 1
            self.dropped[endpoint] += dropped

    def rate(self, endpoint: str, now: float | None = None) -> float:
        """The delivered share of ``endpoint``'s inferences over the last ``window`` seconds, in (0, 1]."""
        now = time.monotonic() if now is None else now
        with self._lock:
            offered, dropped = self.offered[endpoint], self.dropped[endpoint]
            marks = self._marks.setdefault(endpoint, deque())
            if not marks or now - marks[-1][0] >= self.window / 4:
                marks.append((now, offered, dropped))
            while len(marks) > 1 and now - marks[1][0] >= self.window:
                marks.popleft()
            _, offered_then, dropped_then = marks[0]
            if offered > offered_then:
                share = 1.0 - (dropped - dropped_then) / (offered - offered_then)
                # At least one in a million: a rate of 0 would make the detector's 1 / rate infinite.
                self._rates[endpoint] = min(1.0, max(share, 1e-6))
            return self._rates.get(endpoint, 1.0)


class Connection:
    """One keep-alive HTTP/1.1 connection to a detector URL, opened when needed, for one sender thread.

    The standard library's client, not httpx: a 66 kB batch costs ``http.client`` about 130 µs of CPU against
    about 500 µs for ``httpx.Client``, CPU taken from the transformer's inferences.

    Args:
        url: ``http://`` or ``https://`` URL the batches are posted to.
        timeout: Seconds allowed for connecting, and for each read or write.
    """

    def __init__(self, url: str, timeout: float):
        self.url = url
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"the request logger needs an http(s) URL, not {url!r}")
        secure = parts.scheme == "https"
        self._make = functools.partial(
            http.client.HTTPSConnection if secure else http.client.HTTPConnection,
            parts.hostname,
            parts.port,
            timeout=timeout,
        )
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._connection: http.client.HTTPConnection | None = None
        self._used = False

    def post(self, body: bytes, headers: dict[str, str]) -> int:
        """POST ``body``; its status.

        Raises ``OSError``, ``http.client.HTTPException`` or ``ValueError`` (a header it cannot send) when it
        fails, and the connection is then closed. A keep-alive connection the detector has closed since the
        last batch fails at once; the batch is then sent once more on a new connection (it had not been
        taken). A failure on a new connection is final.
        """
        while True:
            reused = self._connection is not None and self._used
            if self._connection is None:
                self._connection, self._used = self._make(), False
            try:
                self._connection.request("POST", self.path, body=body, headers=headers)
                response = self._connection.getresponse()
                response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()
                if reused:
                    continue
                raise
            except Exception:  # also a header it refuses (ValueError): the connection is left mid-request
                self.close()
                raise
            self._used = True
            if response.will_close:
                self.close()
            return response.status

    def close(self) -> None:
        """Close the connection (a new one is opened by the next :meth:`post`)."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None


class _Lane:
    """One detector URL: its bounded buffer of inferences and the thread that sends them in batches.

    The buffer is a ``deque`` (appends and pops are atomic), so queueing an inference takes no lock and wakes
    no thread: the sender wakes when a batch is full (one ``Event.set`` per batch) or every ``flush_seconds``,
    and sends all that waits, in batches.
    """

    def __init__(self, owner: RequestLogger, url: str, max_queue: int):
        self.owner = owner
        self.url = url
        self.max_queue = max_queue
        self.connection = Connection(url, owner.timeout)  # checked here; used by the thread alone
        self.buffer: deque[Inference] = deque()
        self.full = threading.Event()
        self.closing = False
        self.give_up_at = float("inf")
        self.thread = threading.Thread(target=self.run, name=f"request-logger-{url}", daemon=True)
        self.thread.start()

    def admission(self, waiting: int) -> float:
        """The probability of taking a new inference with ``waiting`` in the buffer (random early drop).

        1 up to the watermark (half the buffer), then falling linearly to 0 when it is full: under a steady
        overload the buffer settles where admitted = sent, and every inference is taken with the same
        probability, whatever it carries.
        """
        watermark = self.max_queue // 2
        if waiting < watermark or self.max_queue == watermark:
            return 1.0
        return max(0.0, (self.max_queue - waiting) / (self.max_queue - watermark))

    def offer(self, inference: Inference) -> float:
        """Queue ``inference`` with the admission probability; returns it (0: dropped, both its events)."""
        waiting = len(self.buffer)
        rate = self.admission(waiting)
        if rate < 1.0 and not self.owner.random.random() < rate:
            return 0.0
        self.buffer.append(inference)
        if waiting + 1 == self.owner.batch_inferences:
            self.full.set()
        return rate

    def take(self) -> list[Inference]:
        """Up to one batch of the waiting inferences, oldest first (empty when none wait)."""
        buffer, size = self.buffer, self.owner.batch_inferences
        return [buffer.popleft() for _ in range(min(size, len(buffer)))]

    def run(self) -> None:
        retry = 0.0  # seconds before a batch the detector did not take is sent again (0: none waits)
        try:
            while True:
                wait = retry or self.owner.flush_seconds
                self.full.wait(min(wait, max(0.0, self.give_up_at - time.monotonic())))
                self.full.clear()
                closing = self.closing
                while batch := self.take():
                    try:
                        self.owner.send(self.connection, batch)
                    except NotTakenError as refusal:
                        if closing and time.monotonic() >= self.give_up_at:
                            log.warning("request logger: %d inferences not delivered at shutdown: %s",
                                        len(batch) + len(self.buffer), refusal)  # fmt: skip
                            self.owner.count(batch + self.take_all(), "failed")
                            return
                        self.buffer.extendleft(reversed(batch))  # first again; new ones queue behind
                        if not retry:
                            log.warning("request logger: %s did not take %d inferences (%s): keeping them, "
                                        "sending again", self.url, len(self.buffer), refusal)  # fmt: skip
                        retry = min(max(2 * retry, RETRY_SECONDS[0]), RETRY_SECONDS[1])
                        break
                    except Exception:  # a fault of its own (send counts what it can foresee): never stop
                        log.exception("request logger: %d inferences to %s failed", len(batch), self.url)
                        self.owner.count(batch, "failed")
                    if retry:
                        log.info("request logger: %s takes inferences again", self.url)
                        retry = 0.0
                else:
                    if closing:
                        return
        finally:
            self.connection.close()

    def take_all(self) -> list[Inference]:
        """Every waiting inference."""
        taken = []
        while batch := self.take():
            taken += batch
        return taken

    def close(self, timeout: float) -> None:
        self.give_up_at = time.monotonic() + max(0.0, timeout - self.owner.timeout)
        self.closing = True
        self.full.set()
        self.thread.join(timeout)


class RequestLogger:
    """Sends each inference's request and response CloudEvents to the detector(s), batched, in the background.

    Args:
        urls: Where to post the events (the detector's HTTP endpoint); several: one per detector replica,
            chosen by :func:`serving.events.replica_for` of the inference id.
        component: ``transformer`` or ``predictor`` (``ce-component``).
        inference_service: ``ce-inferenceservicename``.
        namespace: ``ce-namespace`` (``local`` outside Kubernetes).
        max_queue: Inferences waiting at most, per URL; beyond it, inferences are dropped at random (counted).
        batch_events: Events per POST at most (2 per inference; 2 sends each inference on its own, with
            ``x-inference-id``, for a hashing proxy).
        flush_seconds: The longest an inference waits for its batch to fill.
        timeout: Seconds allowed for one POST.
        rate_seconds: The span over which the delivered share stamped on the events is measured.
        seed: Seed of the random drops (tests).
        api_key: Sent as ``X-API-Key`` with every batch: the detector's ``ingest`` role under ``--auth``.
    """

    def __init__(
        self,
        urls: str | Sequence[str],
        *,
        component: str,
        inference_service: str = "housing",
        namespace: str = "local",
        max_queue: int = MAX_QUEUE,
        batch_events: int = BATCH_EVENTS,
        flush_seconds: float = FLUSH_SECONDS,
        timeout: float = 2.0,
        rate_seconds: float = RATE_SECONDS,
        seed: int | None = None,
        api_key: str | None = None,
    ):
        self.urls = [urls] if isinstance(urls, str) else list(urls)
        if not self.urls or max_queue < 1 or batch_events < 2 or not flush_seconds > 0:
            raise ValueError(
                "RequestLogger needs a URL, max_queue >= 1, batch_events >= 2 and flush_seconds > 0"
            )
        self.component = component
        self.inference_service = inference_service
        self.namespace = namespace
        self.timeout = timeout
        self.batch_inferences = batch_events // 2
        self.flush_seconds = flush_seconds
        self.source = f"http://localhost/{component}/{inference_service}"
        self.credential = {"x-api-key": api_key} if api_key else {}
        self.random = random.Random(seed)
        self.rates = SamplingRates(rate_seconds)
        self.totals: Counter[str] = Counter()
        """Inferences ``delivered`` and ``failed`` by this logger (the metrics count them too)."""
        self._totals_lock = threading.Lock()
        self._lanes = [_Lane(self, url, max_queue) for url in self.urls]

    @property
    def url(self) -> str:
        """The first (usually the only) detector URL."""
        return self.urls[0]

    @property
    def alive(self) -> bool:
        """Every sender thread runs, or was stopped by :meth:`close`: one that ended would log no more."""
        return all(lane.closing or lane.thread.is_alive() for lane in self._lanes)

    def log(
        self,
        feature_names: Sequence[str],
        rows: Any,
        predictions: Any,
        *,
        model_version: str,
        request_id: str | None = None,
        endpoint: str = DEFAULT_ENDPOINT,
        intervals: tuple[float, Any, Any] | None = None,
    ) -> None:
        """Queue the request and response events of one inference, together; never blocks.

        Args:
            feature_names: Column names of ``rows`` (the answering model's inputs, in order).
            rows: The validated inputs, an array of shape [N, n_features].
            predictions: The predictions, shape [N] (USD 1000s).
            model_version: The served model's version (goes into ``ce-metadata``).
            request_id: The inference request id (``ce-id``); a new UUID when absent.
            endpoint: ``default`` (the stable predictor answered) or ``canary`` (``ce-endpoint``).
            intervals: The level and the lower and upper bounds of the predictions (each of shape [N]), if the
                predictor computed them.
        """
        event_id = request_id or str(uuid.uuid4())
        metadata = self._metadata(model_version)
        inference = Inference(
            event_id, endpoint, metadata, feature_names, rows, predictions, time.time(), intervals
        )
        lane = self._lanes[replica_for(event_id, len(self._lanes)) if len(self._lanes) > 1 else 0]
        taken = lane.offer(inference) > 0
        self.rates.count(endpoint, dropped=not taken)
        self._counter(endpoint, "offered").inc()
        if not taken:
            self._counter(endpoint, "dropped").inc()
            LOGGER_EVENTS.labels(component=self.component, outcome="dropped").inc(2)

    @functools.lru_cache(maxsize=64)  # noqa: B019 (one logger per process, kept for its life)
    def _metadata(self, model_version: str) -> str:
        """``ce-metadata`` of ``model_version``, encoded once (this runs on every inference)."""
        return encode_metadata(
            {METADATA_MODEL_NAME: self.inference_service, METADATA_MODEL_VERSION: model_version}
        )

    @functools.lru_cache(maxsize=64)  # noqa: B019 (as above)
    def _counter(self, endpoint: str, outcome: str) -> Any:
        """The ``housing_logger_inferences_total`` child, looked up once (``labels()`` costs a few µs)."""
        return LOGGER_INFERENCES.labels(component=self.component, endpoint=endpoint, outcome=outcome)

    def close(self, timeout: float = 5.0) -> str:
        """Send what is queued (within ``timeout``) and stop the threads; what was sent, with counts."""
        waiting = sum(len(lane.buffer) for lane in self._lanes)
        before = dict(self.totals)
        deadline = time.monotonic() + timeout
        for lane in self._lanes:
            lane.close(max(0.0, deadline - time.monotonic()))
        after = {
            outcome: self.totals[outcome] - before.get(outcome, 0) for outcome in ("delivered", "failed")
        }
        left = sum(len(lane.buffer) for lane in self._lanes)
        return (
            f"{waiting} inferences waiting: {after['delivered']} delivered, {after['failed']} failed, "
            f"{left} left; in all {self.totals['delivered']} delivered, {self.totals['failed']} failed"
        )

    def events(self, inference: Inference, rate: float) -> list[dict[str, Any]]:
        """The request and response events of ``inference``, as structured-mode CloudEvents (JSON objects)."""
        stamp = datetime.fromtimestamp(inference.time, UTC).isoformat()
        common = {
            "specversion": SPEC_VERSION,
            "id": inference.event_id,
            "source": self.source,
            "time": stamp,
            "datacontenttype": "application/json",
            "recordedtime": stamp,
            "inferenceservicename": self.inference_service,
            "namespace": self.namespace,
            "component": self.component,
            "endpoint": inference.endpoint,
            "metadata": inference.metadata,
            SAMPLE_RATE: f"{rate:.6g}",  # a string: CloudEvents' JSON format has no non-integer numbers
        }
        names = inference.feature_names
        rows = np.asarray(inference.rows, dtype=float).tolist()  # Python floats at once, not one by one
        instances = [dict(zip(names, row, strict=True)) for row in rows]
        response: dict[str, Any] = {
            "predictions": np.asarray(inference.predictions, dtype=float).reshape(-1).tolist()
        }
        if inference.intervals is not None:
            level, lower, upper = inference.intervals
            response[INTERVALS] = {
                "level": level,
                "lower": np.asarray(lower, dtype=float).reshape(-1).tolist(),
                "upper": np.asarray(upper, dtype=float).reshape(-1).tolist(),
            }
        return [
            {**common, "type": REQUEST_TYPE, "data": {"instances": instances}},
            {**common, "type": RESPONSE_TYPE, "data": response},
        ]

    def body(self, batch: list[Inference], rates: dict[str, float]) -> bytes:
        """The batch as CloudEvents' batched content mode: a JSON array of structured-mode events.

        orjson: a 50-inference batch encodes in about a tenth of the json module's time (1 against 12 µs an
        inference), CPU the transformer's inferences would otherwise share.
        """
        return orjson.dumps([event for item in batch for event in self.events(item, rates[item.endpoint])])

    def _body_without_failures(
        self, batch: list[Inference], rates: dict[str, float]
    ) -> tuple[bytes, list[Inference]]:
        """The batch's body with each inference encoded alone; those that cannot be are counted ``failed``.

        Only after encoding the whole batch failed: one bad event must not cost the others.
        """
        parts: list[bytes] = []
        encoded: list[Inference] = []
        for item in batch:
            try:
                parts.extend(orjson.dumps(event) for event in self.events(item, rates[item.endpoint]))
            except Exception as error:  # whatever the inference holds, it is counted and left out
                log.warning("request logger: cannot encode inference %r: %s", item.event_id[:64], error)
                self.count([item], "failed")
            else:
                encoded.append(item)
        return b"[" + b",".join(parts) + b"]", encoded

    def send(self, connection: Connection, batch: list[Inference]) -> None:
        """POST one batch (from a sender thread) and count each of its inferences delivered or failed.

        Raises:
            NotTakenError: The detector did not take the batch (nothing counted: the caller sends it again).
        """
        now = time.monotonic()
        rates = {endpoint: self.rates.rate(endpoint, now) for endpoint in {item.endpoint for item in batch}}
        for endpoint, rate in rates.items():
            LOGGER_SAMPLING.labels(component=self.component, endpoint=endpoint).set(rate)
        try:
            body = self.body(batch, rates)
        except Exception:  # orjson's TypeError, or anything an inference holds: sort them out one by one
            body, batch = self._body_without_failures(batch, rates)
            if not batch:
                return
        headers = {"content-type": BATCH_CONTENT_TYPE, **self.credential}
        if len(batch) == 1:
            headers[ROUTING_HEADER] = batch[0].event_id
        outcome = "delivered"
        try:
            status = connection.post(body, headers)
            if status == 503:
                raise NotTakenError(f"the detector answered {status}")
            if not 200 <= status < 300:
                raise http.client.HTTPException(f"the detector answered {status}")
        except ConnectionRefusedError as error:
            raise NotTakenError(f"connection refused: {error}") from None
        except NotTakenError:
            raise
        except Exception as error:  # unreachable, refused, or a header http.client cannot send (ValueError)
            outcome = "failed"
            log.warning(
                "request logger: cannot post %d inferences to %s: %s: %s",
                len(batch),
                connection.url,
                type(error).__name__,
                error,
            )
        self.count(batch, outcome)

    def count(self, batch: list[Inference], outcome: str) -> None:
        """Count ``batch``'s inferences (and their events) ``delivered`` or ``failed``."""
        with self._totals_lock:
            self.totals[outcome] += len(batch)
        for endpoint, count in Counter(item.endpoint for item in batch).items():
            self._counter(endpoint, outcome).inc(count)
        sent = "sent" if outcome == "delivered" else outcome
        LOGGER_EVENTS.labels(component=self.component, outcome=sent).inc(2 * len(batch))
