"""The detector's HTTP service: a small Starlette app in front of :class:`detector.monitor.Monitor`.

Routes (who may call each, with which limits, is its row in serving/policy.py, named in :func:`create_app`;
the edge of :mod:`serving.edge` enforces it: with ``--auth``, the role ``ingest`` for the events,
``feedback`` for labels, ``monitor`` for ``/status`` and ``/report``, ``analyst`` for ``/outcomes``):

- ``POST /`` (and ``/events``): KServe inference-logger CloudEvents, binary or structured mode, or a batch
  (``application/cloudevents-batch+json``, as the transformer sends them); 202 when accepted, 400 naming the
  problem when not (also for more than ``max_rows`` rows), 413 for a body over ``max_body_bytes``, 503 until
  the reference is loaded. In a batch every valid event is taken; bad ones make the answer a 400 naming
  each by index (``[3].instances: ...``), with ``accepted``: the count taken (do not resend the batch).
- ``POST /feedback``: ground truth, ``{"id": ID, "value": V}`` or ``{"labels": [{"id": ID, "value": V}, ..]}``
  (``V`` one number per predicted row: a number, or a list for a multi-row request); 400 naming the label
  and the rule it breaks (:mod:`detector.labels`: a finite JSON number in ``model.schema.TARGET_DOMAIN``),
  nothing recorded; 404 for one label of an unknown id (not archived).
- ``GET /status``: windows, last results, live metrics, retrain episodes (JSON).
- ``GET /report``: the drift report, a self-contained HTML page (:mod:`detector.report`).
- ``GET /metrics``: Prometheus; ``GET /healthz`` and ``/v2/health/live``: alive; ``GET /readyz`` and
  ``/v2/health/ready``: 200 once the reference is loaded, else 503 with the reason.

The reference is loaded in a background thread (retrying while storage is unreachable), so the process is live
at once and ready when it can judge traffic. Full windows are tested in one worker process
(:mod:`detector.worker`), so ingest never waits for the tests. State is saved atomically to
``STATE_DIR/state.json`` every ``flush_interval`` seconds when something changed, and on shutdown. With
``--archive_uri``, the rows and labels an answer acknowledges are first written to the archive's log
(:mod:`detector.archive`), which a background thread uploads.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import multiprocessing
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from detector import metrics, report, worker
from detector.archive import WAL_DIR, Archiver
from detector.events import InferenceEvent, InvalidEventError, is_batch, parse_batch, parse_event
from detector.labels import InvalidLabelError, parse_feedback
from detector.monitor import Due, Monitor
from detector.retrain import RetrainTrigger
from detector.settings import Config
from detector.state import STATE_FILE, read_state, validated, write_state
from detector.stats import DriftResult
from serving import policy
from serving.lifecycle import Shutdown
from serving.policy import ANALYST, EVENTS, FEEDBACK, INGEST, LABELS, MONITOR, NO_BODY, OPEN, Limits

log = logging.getLogger(__name__)

ARCHIVE_FLUSH_TIMEOUT = 60.0
"""Seconds a retrain waits for the archive's pending rows to be uploaded before it starts anyway."""

ACCEPTED = Response(status_code=202)


class Detector:
    """The service's state: the monitor (once the reference is loaded) and its persistence.

    Args:
        config: The settings.
        action_name: The retrain action's name (see :mod:`detector.retrain`).
        action: The retrain action, or ``None`` for ``none``.
    """

    def __init__(self, config: Config, action_name: str, action: Callable[[dict[str, Any]], None] | None):
        self.config = config
        self.action_name = action_name
        self.action = action
        self.monitor: Monitor | None = None
        self.executor: ProcessPoolExecutor | None = None
        self.error: str | None = "loading the reference"
        self.dirty = False
        self.state_path = config.state_dir / STATE_FILE
        self.archive = (
            Archiver(
                config.archive_uri,
                config.state_dir / WAL_DIR,
                config.archive_flush_rows,
                config.archive_flush_seconds,
                config.archive_max_wal_bytes,
            )
            if config.archive_uri
            else None
        )

    def _archive_first(
        self, action: Callable[[dict[str, Any]], None] | None
    ) -> Callable[[dict[str, Any]], None] | None:
        """``action``, run after the archive has uploaded what it holds.

        So a retrain on the archive sees every row and label joined before it fired (the wait is in the
        retrain's own thread; ingest never waits).
        """
        archive = self.archive
        if action is None or archive is None:
            return action

        def run(episode: dict[str, Any]) -> None:
            if not archive.flush(ARCHIVE_FLUSH_TIMEOUT):
                log.warning("archive not fully uploaded within %.0f s; retraining on what is there",
                            ARCHIVE_FLUSH_TIMEOUT)  # fmt: skip
            action(episode)

        return run

    def load(self) -> None:
        """Fetch the artifact's metadata, build the tests, resume the saved state (blocking; retries)."""
        from detector.stats import DriftTester, Reference
        from model.artifact import read_dle, read_metadata, read_outliers
        from model.dle import LossEstimator
        from model.outliers import OutlierDetector
        from model.storage import download

        while self.monitor is None:
            try:
                directory = download(self.config.storage_uri, self.config.state_dir / "artifact")
                metadata = read_metadata(directory)
                reference = Reference.from_metadata(metadata)
                # Verified against model.json's sha256 before it is parsed; JSON arrays, no pickle.
                dle = read_dle(directory, metadata)
                estimator = LossEstimator.from_bytes(dle) if dle is not None else None
                density = read_outliers(directory, metadata)  # verified the same way
                outliers = OutlierDetector.from_bytes(density) if density is not None else None
                if outliers is not None and outliers.features != list(reference.features):
                    raise ValueError(f"outliers.json scores {outliers.features}, not the model's inputs")
                if self.archive is not None and density is not None:
                    self.archive.use_outliers(density)
                options = self.config.drift_options()
                self.executor = ProcessPoolExecutor(
                    max_workers=1,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=worker.start,
                    initargs=(reference, options),
                )
                started = self.executor.submit(worker.ready)  # the worker starts now, alongside the next line
                tester = DriftTester(reference, **options)
                started.result(timeout=600)
                state = validated(read_state(self.state_path), self.config.settings, len(reference.features),
                                  reference.version)  # fmt: skip
                trigger = RetrainTrigger(
                    self.action_name,
                    self._archive_first(self.action),
                    self.config.cooldown,
                    state.get("retrain"),
                    self.config.retrain_min_labels,
                )
                self.monitor = Monitor(
                    tester, self.config.settings, trigger, state, estimator, outliers, self.archive
                )
                self.error = None
                log.info(
                    "reference loaded: model version %s, %d rows, features %s, stats backend %s",
                    reference.version,
                    len(reference.rows),
                    list(reference.features),
                    tester.backend,
                )
            except Exception as error:  # storage down or artifact broken: say so in readiness and retry
                self.error = f"cannot load the reference from {self.config.storage_uri}: {error}"
                log.error("%s; retrying in %.0f s", self.error, self.config.retry_interval)
                threading.Event().wait(self.config.retry_interval)

    def dispatch(self) -> None:
        """Hand full windows to the worker process; each result is recorded back on the event loop."""
        if self.monitor is None or self.executor is None:
            return
        loop = asyncio.get_running_loop()
        for number, item in self.monitor.take_due():
            future = loop.run_in_executor(self.executor, worker.test, item.rows, item.predictions)
            future.add_done_callback(functools.partial(self._record, number, item))

    def _record(self, number: int, item: Due, future: asyncio.Future[DriftResult]) -> None:
        if future.cancelled() or self.monitor is None:
            return  # shutting down: the window stays queued in the saved state and is tested after a restart
        try:
            result = future.result()
        except (
            Exception
        ) as error:  # the worker died (e.g. out of memory): test here rather than lose the window
            log.error("window test in the worker failed (%s); testing in-process", error)
            result = self.monitor.tester.test(item.rows, item.predictions)
        self.monitor.record(number, result)
        self.dirty = True

    def save(self) -> str:
        """Write the state file atomically (a temporary file renamed over the old one); what it holds."""
        if self.monitor is None:
            return "nothing to save (the reference was not loaded)"
        snapshot = self.monitor.snapshot()
        write_state(self.state_path, snapshot)
        return ", ".join(f"{len(value)} {name}" for name, value in snapshot.items()
                         if isinstance(value, (list, dict)) and name in SAVED_COUNTS)  # fmt: skip

    async def flush_forever(self) -> None:
        """Expire old pending events and save the state when it changed, every ``flush_interval`` seconds."""
        while True:
            await asyncio.sleep(self.config.flush_interval)
            if self.monitor is None:
                continue
            self.monitor.expire()
            self.dispatch()
            if self.dirty:
                self.dirty = False
                snapshot = self.monitor.snapshot()
                try:
                    await asyncio.to_thread(write_state, self.state_path, snapshot)
                except OSError as error:
                    self.dirty = True
                    log.error("cannot save state to %s: %s", self.state_path, error)


SAVED_COUNTS = ("pending", "windows", "queued", "labels")
"""What the shutdown's log line counts in the saved state: events waiting for their pair, windows filling
and waiting for a test, labels."""


class Endpoints:
    """The handlers of the detector's routes (:func:`create_app` lists them with their policy).

    Args:
        detector: The service's state.
        shutdown: The process's shutdown (its flush bound; serving/lifecycle.py).
    """

    def __init__(self, detector: Detector, shutdown: Shutdown):
        self.detector = detector
        self.shutdown = shutdown
        self.limit = detector.config.max_body_bytes

    async def events(self, request: Request) -> Response:
        """``POST /`` and ``/events``: CloudEvents (one, or a batch); 202, or 400 naming each bad one."""
        detector, limit = self.detector, self.limit
        monitor = detector.monitor
        if monitor is None:
            return JSONResponse({"error": f"not ready: {detector.error}"}, status_code=503)
        body = await read_body(request, limit)
        if body is None:
            return too_large(limit)
        if is_batch(request.headers):
            return self.ingest_batch(monitor, body)
        try:
            event = parse_event(request.headers, body, monitor.tester.reference.features)
            self.ingest(monitor, event, "body")
            self.commit()
        except InvalidEventError as error:
            metrics.EVENTS.labels(type=error.kind or "unknown", outcome="invalid").inc()
            return JSONResponse({"error": str(error)}, status_code=400)
        if monitor.queued:
            detector.dispatch()
        detector.dirty = True
        return ACCEPTED

    def commit(self) -> None:
        """Write what the monitor archived to the archive's log: before the answer that acknowledges it."""
        detector = self.detector
        if detector.archive is not None:
            detector.archive.commit()

    def ingest(self, monitor: Monitor, event: InferenceEvent, field: str) -> None:
        """Give the monitor one event (400 for more rows than ``--max_rows``)."""
        detector = self.detector
        values = event.rows if event.rows is not None else event.predictions
        if values is not None and len(values) > detector.config.max_rows:
            metrics.REFUSED.labels(reason="too_many_rows").inc()
            message = f"{field}: {len(values)} rows, more than the limit of {detector.config.max_rows}"
            raise InvalidEventError(message, event.kind)
        monitor.ingest(event)

    def ingest_batch(self, monitor: Monitor, body: bytes) -> Response:
        """Take every valid event of a batch, even beside bad ones (bad input loses nothing).

        Any bad one makes the answer a 400 listing each by index, with the count taken: do not resend.
        """
        detector = self.detector
        try:
            decoded = parse_batch(body, monitor.tester.reference.features)
        except InvalidEventError as error:
            metrics.EVENTS.labels(type="unknown", outcome="invalid").inc()
            return JSONResponse({"error": str(error)}, status_code=400)
        invalid = []

        def refuse(index: int, error: InvalidEventError) -> None:
            metrics.EVENTS.labels(type=error.kind or "unknown", outcome="invalid").inc()
            message = str(error) if str(error).startswith("[") else f"[{index}].{error}"
            invalid.append({"index": index, "error": message})

        for index, event in enumerate(decoded):
            # A decoding error is refused as it is, never raised: raised here, its traceback would hold this
            # frame (the body, every decoded event) in a cycle until a full garbage collection, megabytes a
            # refused batch (issue 26's attack with long ids grew the detector by 1.2 MB a batch).
            if isinstance(event, InvalidEventError):
                refuse(index, event)
                continue
            try:
                self.ingest(monitor, event, f"[{index}].data")
            except InvalidEventError as error:
                refuse(index, error)
        self.commit()
        if monitor.queued:
            detector.dispatch()
        detector.dirty = True
        accepted = len(decoded) - len(invalid)
        if invalid:
            return JSONResponse(
                {"error": invalid[0]["error"], "accepted": accepted, "invalid": invalid}, status_code=400
            )
        return JSONResponse({"accepted": accepted}, status_code=202)

    async def feedback(self, request: Request) -> Response:
        """``POST /feedback``: labels by request id; the accepted count and the unmatched ids."""
        detector, limit = self.detector, self.limit
        monitor = detector.monitor
        if monitor is None:
            return JSONResponse({"error": f"not ready: {detector.error}"}, status_code=503)
        body = await read_body(request, limit)
        if body is None:
            return too_large(limit)
        try:  # every label checked (detector/labels.py), then all recorded or none
            labels, batch = parse_feedback(body, detector.config.max_rows)
            unmatched = monitor.label(labels)
        except InvalidLabelError as error:
            metrics.FEEDBACK_REJECTED.labels(reason=error.reason).inc()
            return _invalid_feedback(str(error))
        self.commit()
        detector.dirty = True
        if not batch and unmatched:
            return JSONResponse(
                {"error": f"id: no recent prediction has id {unmatched[0]!r}"}, status_code=404
            )
        return JSONResponse({"accepted": len(labels) - len(unmatched), "unmatched": unmatched})

    async def status(self, request: Request) -> Response:
        """``GET /status``: windows, drift results, live accuracy, retrain episodes, the archive."""
        detector = self.detector
        if detector.monitor is None:
            return JSONResponse({"ready": False, "error": detector.error}, status_code=503)
        archive = {"archive": detector.archive.status()} if detector.archive is not None else {}
        return JSONResponse({"ready": True, **detector.monitor.status(), **archive})

    async def drift_report(self, request: Request) -> Response:
        """``GET /report``: the drift report, one HTML page."""
        detector = self.detector
        if detector.monitor is None:
            return JSONResponse({"ready": False, "error": detector.error}, status_code=503)
        # Gathered on the loop (the monitor is not thread-safe), drawn in a thread: ingest does not wait.
        sections = report.sections(detector.monitor)
        page = await asyncio.to_thread(report.render, sections, title="Drift report")
        return HTMLResponse(page)

    async def outcomes(self, request: Request) -> Response:
        """``GET /outcomes``: every labelled prediction with its true value, per endpoint and version."""
        detector = self.detector
        if detector.monitor is None:
            return JSONResponse({"ready": False, "error": detector.error}, status_code=503)
        return JSONResponse({"keys": detector.monitor.outcomes()})

    async def live(self, request: Request) -> Response:
        """``GET /healthz``, ``/v2/health/live``: alive."""
        return JSONResponse({"live": True})

    async def ready(self, request: Request) -> Response:
        """``GET /readyz``, ``/v2/health/ready``: 200 once the reference is loaded, else 503 with why."""
        detector = self.detector
        if detector.monitor is None:
            return JSONResponse({"ready": False, "reason": detector.error}, status_code=503)
        return JSONResponse({"ready": True})

    async def prometheus(self, request: Request) -> Response:
        """``GET /metrics``: the Prometheus exposition."""
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        """Start loading the reference and saving the state; on shutdown, save and stop the archive."""
        detector = self.detector
        if detector.archive is not None:  # first uploads what a previous process left in the log
            detector.archive.start()
        threading.Thread(target=detector.load, name="load-reference", daemon=True).start()
        flusher = asyncio.create_task(detector.flush_forever())
        yield
        # The flush of the shutdown (serving/lifecycle.py): nothing is served any more.
        flusher.cancel()
        shutdown = self.shutdown
        if detector.executor is not None:  # a window under test finishes; the queued ones stay in the state
            await shutdown.flush("the drift tests", functools.partial(detector.executor.shutdown, True,
                                                                      cancel_futures=True))  # fmt: skip
        saved = await shutdown.flush("the state", detector.save)
        if saved is not None:
            log.info("detector: flushed the state to %s: %s", detector.state_path, saved)
        if detector.archive is not None:
            sealed = await shutdown.flush("the archive", functools.partial(detector.archive.stop, 2.0))
            if sealed is not None:
                log.info("detector: flushed the archive: %s", sealed)


def create_app(detector: Detector, shutdown: Shutdown | None = None) -> Starlette:
    """The ASGI app serving ``detector``: the detector's whole surface, one route a line.

    Each route names the role and limits of its row in :mod:`serving.policy` (which the edge enforces and
    docs/security.md renders); a route whose row says otherwise fails here, at start-up.
    """
    handlers = Endpoints(detector, shutdown or Shutdown("detector"))
    return Starlette(
        routes=[
            served("POST", "/", handlers.events, INGEST, EVENTS),
            served("POST", "/events", handlers.events, INGEST, EVENTS),
            served("POST", "/feedback", handlers.feedback, FEEDBACK, LABELS),
            served("GET", "/status", handlers.status, MONITOR, NO_BODY),
            served("GET", "/report", handlers.drift_report, MONITOR, NO_BODY),
            served("GET", "/outcomes", handlers.outcomes, ANALYST, NO_BODY),
            served("GET", "/metrics", handlers.prometheus, OPEN, NO_BODY),
            served("GET", "/healthz", handlers.live, OPEN, NO_BODY),
            served("GET", "/v2/health/live", handlers.live, OPEN, NO_BODY),
            served("GET", "/readyz", handlers.ready, OPEN, NO_BODY),
            served("GET", "/v2/health/ready", handlers.ready, OPEN, NO_BODY),
        ],
        lifespan=handlers.lifespan,
    )


def served(method: str, path: str, handler: Callable[..., Any], role: str, limits: Limits) -> Route:
    """The route ``METHOD path`` to ``handler``, checked against its row in :mod:`serving.policy`.

    Raises:
        ValueError: The table gives the route another role or other limits (or has no row for it).
    """
    row = policy.route("detector", method, path)
    if (row.role, row.limits) != (role, limits):
        raise ValueError(f"{method} {path}: serving/policy.py says {row.role}, {row.limits}")
    return Route(path, handler, methods=[method])


async def read_body(request: Request, limit: int) -> bytes | None:
    """The request's body, or ``None`` once over ``limit`` bytes (read no further: memory stays flat)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def too_large(limit: int) -> Response:
    """The 413 for a body over ``limit`` bytes, counted."""
    metrics.REFUSED.labels(reason="body_too_large").inc()
    return JSONResponse({"error": f"body: larger than the limit of {limit} bytes"}, status_code=413)


def _invalid_feedback(message: str) -> Response:
    metrics.EVENTS.labels(type="feedback", outcome="invalid").inc()
    return JSONResponse({"error": message}, status_code=400)
