"""The detector's state machine: join requests to responses, fill windows, test them, track live accuracy.

Nothing here does I/O: the HTTP app (:mod:`detector.app`) feeds decoded events and labels in, and saves
:meth:`Monitor.snapshot` to the state directory. Everything runs on the event loop's thread, so no locks.

- A request and its response (same ``ce-id`` and component, in either order) wait in a pending buffer
  bounded in bytes (``max_pending_bytes``: the values, the ids and what Python spends on each entry); an event
  whose partner has not come within ``pending_ttl`` seconds, or that is pushed out when the buffer is full, is
  counted ``unmatched`` (pushed out: ``housing_detector_evicted_total`` too). Each endpoint may hold at most
  ``max_pending_bytes_per_endpoint``, so a flood on one endpoint pushes out its own oldest events, never
  another endpoint's.
- **What is kept is bounded whatever arrives**: events of an endpoint outside ``endpoints`` are refused, and
  at most ``max_model_versions`` model versions are tracked at once (one idle for ``model_version_idle``
  seconds is forgotten to make room, with its windows, labels and metric series; the reference's never);
  an inference of a new version with no room is refused. So the metrics' label sets and the state's keys
  stay bounded, also when the events are forged.
- Joined rows go to the window of their :class:`~detector.keys.WindowKey` (endpoint, model version): canary
  traffic is judged on its own, and each model version against the reference. A full window (``window_size``
  rows) is queued for its test (:meth:`Monitor.take_due`; the service runs it in a worker process,
  :meth:`Monitor.test_due` runs it here) and :meth:`Monitor.record` publishes the result; a window still
  queued is saved with the state.
- Each joined inference is counted (``housing_detector_inferences_total``), and so is the estimate of what
  the sender dropped under overload: an inference sent at ``housingsamplerate`` r stands for 1/r offered
  ones (``housing_events_unseen_total`` adds 1/r - 1). The sender drops whole inferences at random, so the
  windows stay an unbiased sample of the traffic; only their pace slows.
- Labels posted to ``/feedback`` (checked by :mod:`detector.labels`) are matched to every prediction of the
  same request id (the answering model's and any shadow's; a shadow's copy joined after its label is scored
  when it comes). Predictions wait for their label, and labels for a shadow's copy, in buffers bounded by
  ``max_recent_bytes`` each. MAE, RMSE and R² are computed over the last ``label_window`` labels of each key.
  Up to ``max_outcomes`` labelled predictions per key are kept (and saved) for experiments
  (:meth:`Monitor.outcomes`, ``housing experiment analyze``).
- Each label is also scored against its prediction's interval, when the response carried one (the transformer
  logs the 90% bounds of every prediction, or the level its client asked for): a hit when the true price lies
  inside. Over the last ``coverage_window`` labels of each key and level, the share of hits is
  ``housing_interval_coverage`` (nominal: the level) and the mean width ``housing_interval_width``; a
  well-calibrated model's 90% coverage stays near 0.9, and falls when the market moves away from it.
- Before labels arrive, each tested window's MAE and RMSE are estimated from its inputs and predictions by
  the artifact's loss estimator (:mod:`model.dle`, Direct Loss Estimation), when it has one.
- Each tested window's rows are scored by the artifact's outlier density (:mod:`model.outliers`), when it has
  one: the share of houses unlike any seen in training is the window's outlier rate.
- With an archive (:mod:`detector.archive`), every joined inference and every label is handed to it as a
  record (it only encodes them; the app commits them to its log before answering). Only a label that matches
  a prediction the monitor holds is archived: a label for an unknown id could otherwise be archived before
  a forged or future inference of that id and joined to it at training.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from detector import metrics
from detector.events import Bounds, InferenceEvent, InvalidEventError
from detector.keys import WindowKey
from detector.labels import InvalidLabelError, Label, check_values
from detector.retrain import RetrainTrigger
from detector.settings import Settings
from detector.state import STATE_FORMAT, json_safe
from detector.stats import DriftResult, DriftTester
from model.archive import LabelRecord, RowRecord
from model.dle import LossEstimator
from model.outliers import OutlierDetector

if TYPE_CHECKING:
    from detector.archive import Archiver

log = logging.getLogger(__name__)

# Tested windows kept per key for the drift report's score and accuracy history (GET /report), and saved.
HISTORY = 50
ENTRY_BYTES = 500
"""What Python spends on one buffered entry beside its values and id: the dataclass or dict, the array's and
the string's headers, the key tuple, the ordered dict's slot (tracemalloc over 20,000 entries: 450 bytes a
pending event, 460 a prediction waiting for its label)."""


@dataclass
class Pending:
    """One half of a request/response pair, waiting for the other."""

    kind: str
    time: float
    endpoint: str
    model_version: str | None
    values: np.ndarray
    size: int = 0
    """Bytes counted against ``max_pending_bytes``."""
    bounds: Bounds | None = None


@dataclass(frozen=True)
class Priced:
    """One model's predictions for one request, and their intervals if logged (what a label is scored on)."""

    predictions: np.ndarray
    bounds: Bounds | None = None

    @property
    def nbytes(self) -> int:
        """Bytes counted against ``max_recent_bytes``."""
        return self.predictions.nbytes + (0 if self.bounds is None else 2 * self.bounds.lower.nbytes)


@dataclass
class Window:
    """Rows (and their predictions) collected for one key, not yet tested."""

    rows: list[np.ndarray] = field(default_factory=list)
    predictions: list[np.ndarray] = field(default_factory=list)
    count: int = 0


@dataclass
class Due:
    """A full window waiting for its test."""

    key: WindowKey
    rows: np.ndarray
    predictions: np.ndarray


class Monitor:
    """Joins, windows, tests and scores live traffic against one reference.

    Args:
        tester: The drift tests, built once for the reference.
        settings: Window, join and label settings.
        trigger: The retraining policy.
        state: A :meth:`snapshot` to resume from.
        estimator: The artifact's loss estimator (``dle.json``), or ``None`` for an artifact without one.
        outliers: The artifact's outlier density (``outliers.json``), or ``None`` for an artifact without one.
        archive: Where joined rows and labels are archived, or ``None`` (no archive).
    """

    def __init__(
        self,
        tester: DriftTester,
        settings: Settings,
        trigger: RetrainTrigger,
        state: dict[str, Any] | None = None,
        estimator: LossEstimator | None = None,
        outliers: OutlierDetector | None = None,
        archive: Archiver | None = None,
    ):
        self.tester = tester
        self.archive = archive
        self.estimator = estimator
        self.estimates: dict[WindowKey, dict[str, float]] = {}
        self.outliers = outliers
        self.outlier_rates: dict[WindowKey, dict[str, float]] = {}
        self.settings = settings
        self.trigger = trigger
        self.pending: OrderedDict[tuple[str, str], Pending] = OrderedDict()
        self._pending_by_endpoint: Counter[str] = Counter()  # bytes
        self._buffer_bytes: Counter[str] = Counter()  # pending, recent, labelled
        for buffer in ("pending", "recent", "labelled"):
            metrics.BUFFER_BYTES.labels(buffer=buffer).set_function(
                functools.partial(self._buffer_bytes.__getitem__, buffer)
            )
        # Model version -> when an inference of it was last joined (at most max_model_versions of them).
        self.versions: dict[str, float] = {}
        self.windows: dict[WindowKey, Window] = {}
        self.results: dict[WindowKey, DriftResult] = {}
        self.labels: dict[WindowKey, deque[tuple[float, float, str]]] = {}  # truth, prediction, request id
        self.labels_received: Counter[WindowKey] = Counter()  # ever, per key: the retrain's label count
        # Request id -> the predictions made for it, per key: a shadow's are logged under the same id.
        self.recent: OrderedDict[str, dict[WindowKey, Priced]] = OrderedDict()
        # (key, level) -> (hit, width) of the last labelled predictions with an interval at that level (one of
        # model.intervals.LEVELS: detector.events refuses others), at most coverage_window of them.
        self.coverage: dict[tuple[WindowKey, float], deque[tuple[bool, float]]] = {}
        # Request id -> its true values, once labelled: a shadow's copy joined after the label is scored then.
        self.labelled: OrderedDict[str, np.ndarray] = OrderedDict()
        self.queued: dict[int, Due] = {}
        self._handed_out: set[int] = set()
        self._sequence = 0
        # The report's data (detector/report.py): recent window results, and the last tested window's rows.
        self.history: dict[WindowKey, deque[dict[str, Any]]] = {}
        self.tested_rows: dict[WindowKey, np.ndarray] = {}
        if state:
            self._restore(state)

    @property
    def _kept_labels(self) -> int:
        return max(self.settings.label_window, self.settings.max_outcomes)

    @property
    def width(self) -> int:
        """Number of features per row."""
        return len(self.tester.reference.features)

    def ingest(self, event: InferenceEvent, now: float | None = None) -> None:
        """Take one decoded request or response event.

        Raises:
            InvalidEventError: The response's prediction count does not match its request's rows.
        """
        now = time.time() if now is None else now
        self.expire(now)
        values = event.rows if event.kind == "request" else event.predictions
        if values is None:
            raise InvalidEventError("body: carries no values", event.kind)
        if event.endpoint not in self.settings.endpoints:
            metrics.REFUSED.labels(reason="endpoint").inc()
            raise InvalidEventError(
                f"endpoint: must be one of {list(self.settings.endpoints)} (--endpoints), got "
                f"{event.endpoint[:40]!r}",
                event.kind,
            )
        if event.model_version is not None and event.model_version not in self.versions:
            self._admit(event.model_version, now, event.kind, evict=False)  # refused now if never joinable
        key = (event.component, event.id)
        partner = self._release(key)
        if partner is not None and partner.kind == event.kind:  # a duplicate: the older one will never pair
            metrics.EVENTS.labels(type=partner.kind, outcome="unmatched").inc()
            partner = None
        bounds = event.intervals
        size = values.nbytes + len(event.id) + len(event.component) + ENTRY_BYTES
        size += 0 if bounds is None else 2 * bounds.lower.nbytes
        this = Pending(event.kind, now, event.endpoint, event.model_version, values, size, bounds)
        if partner is None:
            self._hold(key, this)
            metrics.events(event.kind, "accepted").inc()
            return
        request, response = (this, partner) if event.kind == "request" else (partner, this)
        if len(request.values) != len(response.values):
            metrics.EVENTS.labels(type=partner.kind, outcome="unmatched").inc()
            raise InvalidEventError(
                f"response {event.id}: {len(response.values)} predictions "
                f"for {len(request.values)} request rows",
                event.kind,
            )
        version = response.model_version or request.model_version or self.tester.reference.version
        if version in self.versions:
            self.versions[version] = now
        else:
            try:
                self._admit(version, now, event.kind)
            except InvalidEventError:
                metrics.EVENTS.labels(type=partner.kind, outcome="unmatched").inc()  # taken from the buffer
                raise
        metrics.events(event.kind, "accepted").inc()
        # Counted per inference: a sampled sender drops requests and responses together (serving/events.py).
        metrics.inferences(request.endpoint).inc()
        if event.sample_rate < 1.0:
            metrics.UNSEEN.labels(endpoint=request.endpoint).inc(1.0 / event.sample_rate - 1.0)
        if self.archive is not None:
            features, times = self.tester.reference.features, (request.time, response.time)
            pair = (request.values, response.values)
            self.archive.add(RowRecord(event.id, request.endpoint, version, *times, features, *pair))
        priced = Priced(response.values, response.bounds)
        self._add(WindowKey(request.endpoint, version), event.id, request.values, priced)

    def expire(self, now: float | None = None) -> None:
        """Drop pending events older than ``pending_ttl`` and count them ``unmatched``."""
        deadline = (time.time() if now is None else now) - self.settings.pending_ttl
        while self.pending:
            oldest = next(iter(self.pending.values()))
            if oldest.time >= deadline:
                return
            self._release(next(iter(self.pending)))
            metrics.EVENTS.labels(type=oldest.kind, outcome="unmatched").inc()

    def _release(self, key: tuple[str, str]) -> Pending | None:
        """Take ``key``'s pending event out of the buffer (``None`` when there is none)."""
        item = self.pending.pop(key, None)
        if item is not None:
            self._pending_by_endpoint[item.endpoint] -= item.size
            self._buffer_bytes["pending"] -= item.size
        return item

    def _hold(self, key: tuple[str, str], item: Pending) -> None:
        """Keep ``item`` until its partner comes, pushing out the oldest pending events over the limits."""
        self.pending[key] = item
        self._pending_by_endpoint[item.endpoint] += item.size
        self._buffer_bytes["pending"] += item.size
        while self._pending_by_endpoint[item.endpoint] > self.settings.max_pending_bytes_per_endpoint:
            # The endpoint's own oldest: an endpoint's flood must not evict another's pending requests.
            oldest = next(held for held, pending in self.pending.items() if pending.endpoint == item.endpoint)
            self._evict(oldest)
        while self._buffer_bytes["pending"] > self.settings.max_pending_bytes:
            self._evict(next(iter(self.pending)))

    def _evict(self, key: tuple[str, str]) -> None:
        evicted = self._release(key)
        assert evicted is not None
        metrics.EVENTS.labels(type=evicted.kind, outcome="unmatched").inc()
        metrics.EVICTED.labels(buffer="pending").inc()

    def _admit(self, version: str, now: float, kind: str, *, evict: bool = True) -> None:
        """Track ``version`` (its inference is joined now), forgetting an idle one to make room if needed.

        With ``evict=False``, only check that there is or could be room (a request naming its version).

        Raises:
            InvalidEventError: ``max_model_versions`` versions are tracked and none may be forgotten yet.
        """
        if version not in self.versions and len(self.versions) >= self.settings.max_model_versions:
            reference = self.tester.reference.version
            idle = [(seen, tracked) for tracked, seen in self.versions.items() if tracked != reference]
            oldest = min(idle)[1] if idle else None
            if oldest is None or self.versions[oldest] > now - self.settings.model_version_idle:
                metrics.REFUSED.labels(reason="model_versions").inc()
                settings = self.settings
                raise InvalidEventError(
                    f"model_version: {version[:40]!r} would be model version {len(self.versions) + 1} "
                    f"tracked; at most {settings.max_model_versions} (--max_model_versions), and none has "
                    f"been idle for {settings.model_version_idle:g} s (--model_version_idle) to make room",
                    kind,
                )
            if not evict:
                return
            self._forget(oldest)
        if evict:
            self.versions[version] = now

    def _forget(self, version: str) -> None:
        """Drop everything kept for ``version``: windows, results, labels, history, metric series."""
        keys = {
            key
            for key in (*self.windows, *self.results, *self.labels, *self.history)
            if key.model_version == version
        }
        for table in (
            self.windows,
            self.results,
            self.labels,
            self.labels_received,
            self.estimates,
            self.outlier_rates,
            self.history,
            self.tested_rows,
        ):
            for key in keys:
                table.pop(key, None)
        for key, level in [(key, level) for key, level in self.coverage if key.model_version == version]:
            del self.coverage[(key, level)]
        for number in [number for number, item in self.queued.items() if item.key.model_version == version]:
            del self.queued[number]
        for by_key in self.recent.values():
            for key in [key for key in by_key if key.model_version == version]:
                self._buffer_bytes["recent"] -= by_key.pop(key).nbytes
        for key in keys:
            self.trigger.active.discard(key)
            self.trigger.waiting.pop(key, None)
            metrics.forget(key.endpoint, key.model_version)
        self.versions.pop(version, None)
        metrics.EVICTED.labels(buffer="model_version").inc()
        log.warning(
            "model version %r forgotten to make room for another (--max_model_versions)", version[:40]
        )

    def feedback(self, request_id: str, values: float | list[float]) -> bool:
        """Record the true value(s) of one earlier request's prediction(s): :meth:`label` for one label.

        Args:
            request_id: The inference request id (``ce-id``).
            values: One true value per predicted row (a number for a one-row request).

        Returns:
            ``False`` when no recent prediction has that id (the label is counted ``unmatched``).

        Raises:
            InvalidLabelError: A value breaks the label rule, or their number is not the predictions'.
        """
        return not self.label([Label(request_id, check_values(values))])

    def label(self, labels: Sequence[Label]) -> list[str]:
        """Record checked labels (:mod:`detector.labels`): all of them, or none.

        A label whose id no recent prediction has is counted ``unmatched`` and not archived (its prediction
        was never seen, or was pushed out of ``max_recent_bytes``).

        Returns:
            The ids of the unmatched labels.

        Raises:
            InvalidLabelError: A label's values are not one per predicted row (nothing is recorded).
        """
        matched, unmatched = [], []
        for label in labels:
            found = self.recent.get(label.id)
            if not found:
                unmatched.append(label.id)
                continue
            rows = len(next(iter(found.values())).predictions)
            if len(label.values) != rows:
                got = len(label.values)
                message = f"{label.field}value: must be {rows} number(s), one per predicted row, got {got}"
                raise InvalidLabelError(message, "rows")
            matched.append((label, found))
        if unmatched:
            metrics.EVENTS.labels(type="feedback", outcome="unmatched").inc(len(unmatched))
        for label, found in matched:
            truth = np.asarray(label.values, dtype=float)
            if self.archive is not None:
                self.archive.add(LabelRecord(label.id, truth, time.time()))
            # Every model that priced this request is scored on the label: the answering one and any shadow,
            # whose copy may be joined after the label (then :meth:`_add` scores it).
            for key, priced in found.items():
                self._score(key, label.id, truth, priced)
            self._keep_labelled(label.id, truth)
        metrics.EVENTS.labels(type="feedback", outcome="accepted").inc(len(matched))
        return unmatched

    def _keep_labelled(self, request_id: str, truth: np.ndarray) -> None:
        """Remember ``truth`` for a shadow's copy joined later, within ``max_recent_bytes``."""
        previous = self.labelled.pop(request_id, None)
        if previous is not None:
            self._buffer_bytes["labelled"] -= previous.nbytes + len(request_id) + ENTRY_BYTES
        self.labelled[request_id] = truth
        self._buffer_bytes["labelled"] += truth.nbytes + len(request_id) + ENTRY_BYTES
        while self._buffer_bytes["labelled"] > self.settings.max_recent_bytes:
            oldest, values = self.labelled.popitem(last=False)
            self._buffer_bytes["labelled"] -= values.nbytes + len(oldest) + ENTRY_BYTES
            metrics.EVICTED.labels(buffer="labelled").inc()

    def _score(self, key: WindowKey, request_id: str, truth: np.ndarray, priced: Priced) -> None:
        """Keep ``key``'s predictions of one request with their true values; update its live figures.

        Its live accuracy, and its interval coverage when the predictions came with intervals.
        """
        labels = self.labels.setdefault(key, deque(maxlen=self._kept_labels))
        scored = zip(truth.tolist(), priced.predictions.tolist(), strict=True)
        labels.extend((value, prediction, request_id) for value, prediction in scored)
        self.labels_received[key] += len(truth)
        if priced.bounds is not None:
            bounds = priced.bounds
            hits = (truth >= bounds.lower) & (truth <= bounds.upper)
            kept = self.coverage.setdefault((key, bounds.level), deque(maxlen=self.settings.coverage_window))
            kept.extend(zip(hits.tolist(), (bounds.upper - bounds.lower).tolist(), strict=True))
            self._publish_coverage(key, bounds.level)
        self._publish_live(key)
        self._check(key)

    def interval_coverage(self, key: WindowKey) -> dict[str, dict[str, float | int]]:
        """Per interval level (``"0.9"``): labels in the coverage window, share of hits, mean width."""
        found = {}
        for (other, level), kept in sorted(self.coverage.items(), key=lambda item: item[0][1]):
            if other == key and kept:
                hits, widths = zip(*kept, strict=True)
                found[f"{level:g}"] = {
                    "labels": len(kept),
                    "coverage": float(np.mean(hits)),
                    "width": float(np.mean(widths)),
                }
        return found

    def _publish_coverage(self, key: WindowKey, level: float) -> None:
        figures = self.interval_coverage(key)[f"{level:g}"]
        labels = {**key.labels(), "level": f"{level:g}"}
        metrics.INTERVAL_COVERAGE.labels(**labels).set(figures["coverage"])
        metrics.INTERVAL_WIDTH.labels(**labels).set(figures["width"])
        metrics.INTERVAL_LABELS.labels(**labels).set(figures["labels"])

    def live(self, key: WindowKey) -> dict[str, float | int | None]:
        """MAE, RMSE and R² of the labelled predictions of ``key`` (R² needs two labels that differ)."""
        kept = self.labels.get(key, deque())
        latest = itertools.islice(kept, max(len(kept) - self.settings.label_window, 0), None)
        pairs = np.asarray([(truth, prediction) for truth, prediction, _ in latest], dtype=float)
        pairs = pairs.reshape(-1, 2)
        if len(pairs) == 0:
            return {"labels": 0, "mae": None, "rmse": None, "r2": None}
        errors = pairs[:, 0] - pairs[:, 1]
        spread = float(np.sum((pairs[:, 0] - pairs[:, 0].mean()) ** 2))
        return {
            "labels": len(pairs),
            "mae": float(np.mean(np.abs(errors))),
            "rmse": float(math.sqrt(np.mean(errors**2))),
            "r2": 1.0 - float(np.sum(errors**2)) / spread if spread > 0 else None,
        }

    def outcomes(self) -> dict[str, dict[str, list[Any]]]:
        """The labelled predictions per ``endpoint/model_version``, oldest first: what experiments judge."""
        return {
            str(key): {
                "true_values": [truth for truth, _, _ in labels],
                "predictions": [prediction for _, prediction, _ in labels],
                "request_ids": [request_id for _, _, request_id in labels],
            }
            for key, labels in sorted(self.labels.items(), key=lambda item: str(item[0]))
        }

    def status(self) -> dict[str, Any]:
        """A JSON-safe summary per ``endpoint/model_version``: rows waiting, last result, live metrics.

        Non-finite figures (an error squared past the float range, from a forged prediction of 1e300) are
        ``null``: nothing held can make ``/status`` fail to encode.
        """
        return dict(json_safe(self._summary()))

    def _summary(self) -> dict[str, Any]:
        keys = sorted(
            {*self.windows, *self.results, *self.labels, *(key for key, _ in self.coverage)}, key=str
        )
        return {
            "reference_version": self.tester.reference.version,
            "window_size": self.settings.window_size,
            "threshold": self.tester.threshold,
            "pending": len(self.pending),
            "windows_queued": len(self.queued),
            "keys": {
                str(key): {
                    "window_rows": self.windows[key].count if key in self.windows else 0,
                    "last_result": self.results[key].to_dict() if key in self.results else None,
                    "live": self.live(key),
                    "coverage": self.interval_coverage(key),
                    "estimate": self.estimates.get(key),
                    "outliers": self.outlier_rates.get(key),
                }
                for key in keys
            },
            "retrain": self.trigger.status(),
        }

    def snapshot(self) -> dict[str, Any]:
        """The whole state as JSON-safe data, every field named (restored by passing it back as ``state``)."""
        return {
            "format": STATE_FORMAT,
            "reference_version": self.tester.reference.version,
            "pending": [
                {
                    "component": component,
                    "request_id": request_id,
                    "kind": item.kind,
                    "time": item.time,
                    "endpoint": item.endpoint,
                    "model_version": item.model_version,
                    "values": item.values.tolist(),
                }
                for (component, request_id), item in self.pending.items()
            ],
            "windows": [
                {
                    **key.labels(),
                    "rows": np.vstack(window.rows).tolist() if window.rows else [],
                    "predictions": np.concatenate(window.predictions).tolist() if window.predictions else [],
                }
                for key, window in self.windows.items()
            ],
            "queued": [
                {**item.key.labels(), "rows": item.rows.tolist(), "predictions": item.predictions.tolist()}
                for item in self.queued.values()
            ],
            "results": [{**key.labels(), "result": result.to_dict()} for key, result in self.results.items()],
            "labels": [
                {
                    **key.labels(),
                    "true_values": [truth for truth, _, _ in labels],
                    "predictions": [prediction for _, prediction, _ in labels],
                    "request_ids": [request_id for _, _, request_id in labels],
                }
                for key, labels in self.labels.items()
            ],
            "recent": [
                {
                    "request_id": request_id,
                    **key.labels(),
                    "predictions": priced.predictions.tolist(),
                    **_bounds_state(priced.bounds),
                }
                for request_id, by_key in self.recent.items()
                for key, priced in by_key.items()
            ],
            "coverage": [
                {
                    **key.labels(),
                    "level": level,
                    "hits": [hit for hit, _ in kept],
                    "widths": [width for _, width in kept],
                }
                for (key, level), kept in self.coverage.items()
            ],
            "labelled": [
                {"request_id": request_id, "true_values": values.tolist()}
                for request_id, values in self.labelled.items()
            ],
            "retrain": self.trigger.snapshot(),
            "history": [{**key.labels(), "entries": list(entries)} for key, entries in self.history.items()],
        }

    def _restore(self, state: dict[str, Any]) -> None:
        if state.get("format") != STATE_FORMAT:
            log.warning("ignoring saved state of format %r (expected %d)", state.get("format"), STATE_FORMAT)
            return
        # Trusted as detector.state.validated left it (the app validates what it loads); byte bounds apply.
        for saved in state.get("pending", []):
            values = np.asarray(saved["values"], dtype=float)
            size = values.nbytes + len(saved["request_id"]) + len(saved["component"]) + ENTRY_BYTES
            item = Pending(
                saved["kind"], saved["time"], saved["endpoint"], saved["model_version"], values, size
            )
            self._hold((saved["component"], saved["request_id"]), item)
        for saved in state.get("windows", []):
            key = WindowKey.of(saved)
            rows = np.asarray(saved["rows"], dtype=float).reshape(-1, self.width)
            if len(rows):
                self.windows[key] = Window([rows], [np.asarray(saved["predictions"], dtype=float)], len(rows))
            metrics.WINDOW_ROWS.labels(**key.labels()).set(len(rows))
        for saved in state.get("queued", []):
            self._sequence += 1
            self.queued[self._sequence] = Due(
                WindowKey.of(saved),
                np.asarray(saved["rows"], dtype=float),
                np.asarray(saved["predictions"], dtype=float),
            )
        for saved in state.get("results", []):
            key = WindowKey.of(saved)
            self.results[key] = DriftResult.from_dict(saved["result"])
            self._publish_result(key, self.results[key])
        for saved in state.get("labels", []):
            key = WindowKey.of(saved)
            ids = saved.get("request_ids") or [""] * len(saved["true_values"])  # saved before ids were kept
            kept = zip(saved["true_values"], saved["predictions"], ids, strict=True)
            self.labels[key] = deque(kept, maxlen=self._kept_labels)
            self._publish_live(key)
        for saved in state.get("history", []):
            self.history[WindowKey.of(saved)] = deque(saved["entries"], maxlen=HISTORY)
        for saved in state.get("recent", []):
            bounds = None
            if "level" in saved:  # saved with its intervals
                bounds = Bounds(
                    float(saved["level"]),
                    np.asarray(saved["lower"], dtype=float),
                    np.asarray(saved["upper"], dtype=float),
                )
            priced = Priced(np.asarray(saved["predictions"], dtype=float), bounds)
            self._add_recent(saved["request_id"], WindowKey.of(saved), priced)
        for saved in state.get("coverage", []):  # absent in states saved before intervals
            key, level = WindowKey.of(saved), float(saved["level"])
            scored = [
                (bool(hit), float(width)) for hit, width in zip(saved["hits"], saved["widths"], strict=True)
            ]
            self.coverage[(key, level)] = deque(scored, maxlen=self.settings.coverage_window)
            self._publish_coverage(key, level)
        for saved in state.get("labelled", []):
            self._keep_labelled(saved["request_id"], np.asarray(saved["true_values"], dtype=float))
        now = time.time()
        for key in sorted({*self.windows, *self.results, *self.labels, *self.history}, key=str):
            self.versions[key.model_version] = now
        log.info(
            "resumed state: %d pending, %d windows, %d results, %d label sets",
            len(self.pending),
            len(self.windows),
            len(self.results),
            len(self.labels),
        )

    def _add(self, key: WindowKey, request_id: str, rows: np.ndarray, priced: Priced) -> None:
        by_key = self.recent.get(request_id)
        truth = self.labelled.get(request_id) if by_key is None or key not in by_key else None
        self._add_recent(request_id, key, priced)
        predictions = priced.predictions
        if truth is not None and len(truth) == len(predictions):  # a shadow's copy, after the label
            self._score(key, request_id, truth, priced)
        window = self.windows.setdefault(key, Window())
        window.rows.append(rows)
        window.predictions.append(predictions)
        window.count += len(rows)
        size = self.settings.window_size
        if window.count >= size:
            all_rows, all_predictions = np.vstack(window.rows), np.concatenate(window.predictions)
            while len(all_rows) >= size:
                self._sequence += 1
                self.queued[self._sequence] = Due(key, all_rows[:size], all_predictions[:size])
                all_rows, all_predictions = all_rows[size:], all_predictions[size:]
            self.windows[key] = Window([all_rows], [all_predictions], len(all_rows))
        metrics.WINDOW_ROWS.labels(**key.labels()).set(self.windows[key].count)

    def _add_recent(self, request_id: str, key: WindowKey, priced: Priced) -> None:
        """Keep ``key``'s predictions of ``request_id`` for its label, within ``max_recent_bytes``."""
        by_key = self.recent.get(request_id)
        if by_key is None:
            by_key = self.recent[request_id] = {}
            self._buffer_bytes["recent"] += len(request_id) + ENTRY_BYTES
        previous = by_key.get(key)
        self._buffer_bytes["recent"] += priced.nbytes - (previous.nbytes if previous is not None else 0)
        by_key[key] = priced
        self.recent.move_to_end(request_id)
        while self._buffer_bytes["recent"] > self.settings.max_recent_bytes and len(self.recent) > 1:
            oldest, by_key = self.recent.popitem(last=False)
            self._buffer_bytes["recent"] -= len(oldest) + ENTRY_BYTES + sum(v.nbytes for v in by_key.values())
            metrics.EVICTED.labels(buffer="recent").inc()

    def take_due(self) -> list[tuple[int, Due]]:
        """Full windows not yet handed out for testing (each is handed out once; see :meth:`record`)."""
        due = [(number, item) for number, item in self.queued.items() if number not in self._handed_out]
        self._handed_out.update(number for number, _ in due)
        return due

    def test_due(self) -> None:
        """Test the queued windows here and now (the service tests them in a worker process instead)."""
        for number, item in self.take_due():
            self.record(number, self.tester.test(item.rows, item.predictions))

    def record(self, number: int, result: DriftResult) -> None:
        """Take the result of queued window ``number``: publish it and update the retrain episode."""
        item = self.queued.pop(number, None)
        self._handed_out.discard(number)
        if item is None:
            return
        key = item.key
        self.results[key] = result
        metrics.WINDOWS_TESTED.labels(**key.labels()).inc()
        self._publish_result(key, result)
        if self.estimator is not None:  # about 1 ms for 200 rows (./dev bench label_free)
            self.estimates[key] = estimate = self.estimator.estimate(item.rows, item.predictions)
            metrics.ESTIMATED_MAE.labels(**key.labels()).set(estimate["mae"])
            metrics.ESTIMATED_RMSE.labels(**key.labels()).set(estimate["rmse"])
        if self.outliers is not None:  # about 0.2 ms for 200 rows (./dev bench outliers)
            self._score_outliers(key, item.rows)
        drifted = [feature.name for feature in result.features if feature.drifted]
        log.info(
            "window tested: key=%s score=%.3f drifted=%s features=%s",
            key,
            result.score,
            result.drifted,
            drifted,
        )
        self._check(key)
        self.tested_rows[key] = item.rows
        # What /status shows for the key now (live accuracy, an estimate when there is one), minus the result.
        entry = dict(self.status()["keys"][str(key)], time=time.time(), drifted_features=drifted)
        entry.update(score=result.score, threshold=result.threshold, drifted=result.drifted)
        entry.pop("last_result")
        self.history.setdefault(key, deque(maxlen=HISTORY)).append(entry)

    def _score_outliers(self, key: WindowKey, rows: np.ndarray) -> None:
        """Flag the window's houses unlike any seen in training; publish their share and count."""
        assert self.outliers is not None
        flagged = int(self.outliers.flags(rows).sum())
        rate = flagged / len(rows) if len(rows) else 0.0
        self.outlier_rates[key] = {"rate": rate, "outliers": flagged, "rows": len(rows)}
        metrics.OUTLIER_RATE.labels(**key.labels()).set(rate)
        metrics.OUTLIERS.labels(**key.labels()).inc(flagged)

    def _check(self, key: WindowKey) -> None:
        result = self.results.get(key)
        live = self.live(key)
        r2 = live["r2"]
        reason = None
        if result is not None and result.drifted:
            reason = "drift"
        elif (
            r2 is not None
            and int(live["labels"] or 0) >= self.settings.min_labels
            and r2 < self.settings.r2_threshold
        ):
            reason = "r2"
        elif self._estimate_too_high(key, int(live["labels"] or 0)):
            reason = "estimated_mae"
        details = {
            **key.labels(),
            "drift_score": result.score if result else None,
            "r2": r2,
            **({"estimated_mae": self.estimates[key]["mae"]} if key in self.estimates else {}),
        }
        self.trigger.update(key, reason, details, labels=self.labels_received[key])

    def _estimate_too_high(self, key: WindowKey, labels: int) -> bool:
        """Whether the estimated MAE is over ``estimated_mae_threshold`` while labels are too few to judge."""
        threshold = self.settings.estimated_mae_threshold
        estimate = self.estimates.get(key)
        return bool(
            threshold > 0 and estimate and labels < self.settings.min_labels and estimate["mae"] > threshold
        )

    def _publish_result(self, key: WindowKey, result: DriftResult) -> None:
        labels = key.labels()
        metrics.DRIFT_SCORE.labels(**labels).set(result.score)
        metrics.DRIFT_DETECTED.labels(**labels).set(int(result.drifted))
        for feature in result.features:
            metrics.FEATURE_DRIFT_SCORE.labels(**labels, feature=feature.name).set(feature.score)
            metrics.FEATURE_P_VALUE.labels(**labels, feature=feature.name).set(feature.p_value)
            metrics.FEATURE_PSI.labels(**labels, feature=feature.name).set(feature.psi)
            metrics.FEATURE_JS.labels(**labels, feature=feature.name).set(feature.js_distance)
        if result.prediction is not None:
            metrics.PREDICTION_SCORE.labels(**labels).set(result.prediction.score)
            metrics.PREDICTION_P_VALUE.labels(**labels).set(result.prediction.p_value)
        if result.multivariate is not None:
            metrics.RECONSTRUCTION_ERROR.labels(**labels).set(result.multivariate.error)
            metrics.RECONSTRUCTION_THRESHOLD.labels(**labels).set(result.multivariate.threshold)

    def _publish_live(self, key: WindowKey) -> None:
        labels = key.labels()
        live = self.live(key)
        metrics.LIVE_LABELS.labels(**labels).set(live["labels"] or 0)
        for gauge, name in ((metrics.LIVE_MAE, "mae"), (metrics.LIVE_RMSE, "rmse"), (metrics.LIVE_R2, "r2")):
            value = live[name]
            if value is not None:
                gauge.labels(**labels).set(value)


def _bounds_state(bounds: Bounds | None) -> dict[str, Any]:
    """The saved form of a prediction's intervals (nothing without them)."""
    if bounds is None:
        return {}
    return {"level": bounds.level, "lower": bounds.lower.tolist(), "upper": bounds.upper.tolist()}
