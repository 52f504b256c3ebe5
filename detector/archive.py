"""The detector's side of the traffic archive: a write-ahead log on the state volume, uploaded in batches.

The monitor hands every joined inference (:class:`~model.archive.RowRecord`) and every label
(:class:`~model.archive.LabelRecord`) to :meth:`Archiver.add`, on the event loop: a list append, no I/O.
Before the HTTP answer (the 202 that acknowledges them), :meth:`Archiver.commit` encodes them as one JSON line
and appends it to ``STATE_DIR/archive-wal/current.jsonl`` in one write. A background thread seals that file
into a segment every ``flush_rows`` rows or ``flush_seconds`` seconds; the uploader writes each segment as
Parquet files
(:mod:`model.archive`: partitioned by date and model version) and deletes the segment once every file is
uploaded. The uploader is its own process (:func:`upload_forever`): building Parquet and talking to Blob
Storage cost about as much CPU as the ingest, and in this process would take it from the event loop. So:

- **kill -9 loses nothing acknowledged**: what was committed is in the kernel's page cache (no fsync, so a
  power loss of the node may lose the last seconds); on start, sealed segments and the old ``current.jsonl``
  are uploaded before anything new;
- **ingest never waits on Blob**: an unreachable store only makes segments wait on disk; the uploader retries
  with back-off (1 s doubling to 30 s), counting ``housing_archive_rows_total{outcome="retried"}``;
- **memory stays flat**: the buffer is the log on disk, bounded by ``max_wal_bytes``; over it, the oldest
  segments are deleted and their rows counted ``dropped``;
- **idempotent**: a segment's files are named after it, so uploading it again (a crash between the upload and
  the deletion) overwrites them; :func:`model.archive.read_archive` de-duplicates by request id anyway.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from detector import metrics
from model.archive import LabelRecord, RowRecord, label_files, open_store, row_files
from model.outliers import OutlierDetector

log = logging.getLogger(__name__)

WAL_DIR = "archive-wal"
CURRENT = "current.jsonl"
POLL_SECONDS = 0.2
CPU_BUDGET = 0.1
"""Share of one core the uploader may use while its backlog is young (see :class:`CpuBudget`)."""
BURST_CPU_SECONDS = 1.0
"""CPU seconds the uploader may spend at once before the budget paces it."""
MAX_LAG_SECONDS = 30.0
"""A segment sealed longer ago than this is overdue: the uploader uploads it without waiting for budget."""
BACKOFF_SECONDS = (1.0, 30.0)
"""First and longest wait between two failed uploads (doubling)."""
# The uploader's client: no SDK retries (the back-off above is the retry policy), and short timeouts so that
# an unreachable store is noticed in seconds.
CLIENT_OPTIONS: dict[str, Any] = {"retry_total": 0, "connection_timeout": 5, "read_timeout": 60}


class Archiver:
    """Archives joined rows and labels to ``uri`` through a write-ahead log in ``directory``.

    Args:
        uri: The archive's location (Blob URL, local directory or ``file://``; see :mod:`model.archive`).
        directory: The write-ahead log's directory (on the state volume).
        flush_rows: Seal and upload a segment once it holds this many rows (rows and labels).
        flush_seconds: ... or once its first row is this old.
        max_wal_bytes: Sealed segments kept at most while uploads fail; the oldest beyond are dropped.
    """

    def __init__(
        self, uri: str, directory: Path, flush_rows: int, flush_seconds: float, max_wal_bytes: int
    ) -> None:
        self.uri = uri
        self.directory = directory
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self.max_wal_bytes = max_wal_bytes
        self._rows: list[RowRecord] = []  # not yet committed (event loop only)
        self._labels: list[LabelRecord] = []
        self._uncommitted = {"rows": 0, "labels": 0}
        self._lock = threading.Lock()  # the current file: committed to by the loop, sealed by the thread
        self._handle: Any = None
        self._current_rows = 0
        self._first_at = 0.0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._process: Any = None  # the uploader (multiprocessing.Process)
        self._commands: Any = None  # to the uploader: ("outliers", bytes) or ("stop", None)
        self._reports: Any = None  # from it: what each pass archived, retried, dropped
        self._density: bytes | None = None  # outliers.json, for the uploader
        self.last_error: str | None = None
        for kind in ("rows", "labels"):  # every series from 0, so that rates and ratios exist at once
            for outcome in ("written", "archived", "retried", "dropped"):
                _counter(kind, outcome)

    @property
    def current(self) -> Path:
        """The log file commits append to."""
        return self.directory / CURRENT

    def add(self, record: RowRecord | LabelRecord) -> None:
        """Keep one record for the next :meth:`commit` (event loop; no I/O, no encoding yet)."""
        if isinstance(record, RowRecord):
            self._rows.append(record)
            self._uncommitted["rows"] += len(record.predictions)
        else:
            self._labels.append(record)
            self._uncommitted["labels"] += len(record.values)

    def commit(self) -> None:
        """Append the records added since the last commit to the log, in one write (before the HTTP answer).

        A log that cannot be written (disk full) loses them, counted ``dropped``: ingest goes on regardless.
        """
        if not self._rows and not self._labels:
            return
        data = encode(self._rows, self._labels)
        counts = self._uncommitted
        self._rows, self._labels, self._uncommitted = [], [], {"rows": 0, "labels": 0}
        try:
            with self._lock:
                if self._handle is None:
                    self.directory.mkdir(parents=True, exist_ok=True)
                    self._handle = open(self.current, "ab")  # noqa: SIM115 (kept open)
                self._handle.write(data)
                self._handle.flush()  # into the kernel: survives kill -9 of this process
                if self._current_rows == 0:
                    self._first_at = time.monotonic()
                self._current_rows += counts["rows"] + counts["labels"]
        except OSError as error:
            log.error("cannot write the archive's log %s: %s", self.current, error)
            outcome = "dropped"
        else:
            outcome = "written"
        for kind, count in counts.items():
            if count:
                _counter(kind, outcome).inc(count)
        if self._current_rows >= self.flush_rows:
            self._wake.set()

    def use_outliers(self, density: bytes) -> None:
        """Flag each archived row with the artifact's outlier detector (``outliers.json``, verified).

        Rows uploaded before it is given are archived unflagged (null).
        """
        self._density = density
        if self._commands is not None:
            self._commands.put(("outliers", density))

    def start(self) -> None:
        """Seal what a previous process left in the log; start the uploader process and the sealing thread.

        The uploader is its own process (:func:`upload_forever`): reading segments, building Parquet and
        talking to Blob Storage take about as much CPU as the ingest itself, and in this process they would
        take it from the event loop (one GIL). This process only appends to the log and seals it.
        """
        import multiprocessing

        self.directory.mkdir(parents=True, exist_ok=True)
        self._seal(force=True)
        context = multiprocessing.get_context("spawn")
        self._commands, self._reports = context.Queue(), context.Queue()
        level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
        self._process = context.Process(
            target=upload_forever,
            args=(self.uri, self.directory, self.max_wal_bytes, self._commands, self._reports, os.getpid(),
                  level),
            name="archive-upload",
            daemon=True,
        )  # fmt: skip
        self._process.start()
        if self._density is not None:
            self._commands.put(("outliers", self._density))
        self._thread = threading.Thread(target=self._run, name="archive-seal", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> str:
        """Seal the log, let the uploader try one last pass and stop (what fails stays for the next start).

        Returns:
            What it sealed and what is left to upload at the next start, with counts.
        """
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        sealed = self._current_rows
        self._seal(force=True)
        if self._process is not None:
            self._commands.put(("stop", None))
            self._process.join(timeout)
            if self._process.is_alive():  # still in an upload: it keeps the log; the next start uploads it
                self._process.terminate()
                self._process.join(5)
            self._receive()
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None
        return f"{sealed} rows and labels sealed; {len(self._segments())} segments left for the next start"

    def flush(self, timeout: float) -> bool:
        """Seal the log now and wait until the uploader has uploaded every segment (before a retrain).

        Returns:
            Whether the log was empty within ``timeout`` seconds (``False``: the store is down, say).
        """
        self._seal(force=True)
        deadline = time.monotonic() + timeout
        while self._segments():
            if time.monotonic() > deadline or self._process is None or not self._process.is_alive():
                return False
            time.sleep(POLL_SECONDS / 4)
        return True

    def status(self) -> dict[str, Any]:
        """The log's size and the last upload error, for ``/status``."""
        segments = self._segments()
        return {
            "uri": self.uri,
            "segments_waiting": len(segments),
            "wal_bytes": _wal_bytes(self.directory, segments),
            "last_error": self.last_error,
        }

    def _run(self) -> None:
        """Seal the log when due; count what the uploader reports."""
        while not self._stop.is_set():
            try:
                self._seal(force=False)
            except OSError as error:  # e.g. the state volume unreadable: try again later
                log.error("archive log: cannot seal %s: %s", self.current, error)
            self._receive()
            self._wake.wait(POLL_SECONDS)
            self._wake.clear()

    def _receive(self) -> None:
        """Apply the uploader's reports: counters, the log's size, the last error."""
        import queue

        while True:
            try:
                report = self._reports.get_nowait()
            except (queue.Empty, OSError, ValueError):
                return
            for kind, outcome, count in report["counts"]:
                _counter(kind, outcome).inc(count)
            self.last_error = report["last_error"]
            metrics.ARCHIVE_WAL_BYTES.set(report["wal_bytes"])

    def _seal(self, *, force: bool) -> None:
        """Rename ``current.jsonl`` into a segment when it is due (or, with ``force``, when not empty)."""
        with self._lock:
            if self._handle is None and not self.current.exists():
                return
            if not force:
                if self._current_rows == 0:
                    return
                age = time.monotonic() - self._first_at
                if self._current_rows < self.flush_rows and age < self.flush_seconds:
                    return
            if self._handle is not None:
                self._handle.close()
                self._handle = None
            self._current_rows = 0
            if self.current.exists() and self.current.stat().st_size > 0:
                sealed = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.jsonl"
                os.replace(self.current, self.directory / sealed)

    def _segments(self) -> list[Path]:
        return segments_of(self.directory)


def segments_of(directory: Path) -> list[Path]:
    """Sealed segments, oldest first (their names start with the time they were sealed)."""
    try:
        return sorted(path for path in directory.glob("*.jsonl") if path.name != CURRENT)
    except OSError:
        return []


def _wal_bytes(directory: Path, segments: list[Path]) -> int:
    paths = [*segments, directory / CURRENT]
    total = 0
    for path in paths:
        with contextlib.suppress(OSError):  # uploaded and deleted meanwhile
            total += path.stat().st_size
    return total


def sealed_at(segment: Path) -> float:
    """When a segment was sealed (seconds since the epoch): its name starts with that time in nanoseconds."""
    try:
        return int(segment.name.split("-", 1)[0]) / 1e9
    except ValueError:  # not one of ours: treat it as old
        return 0.0


class CpuBudget:
    """A token bucket over this process's own CPU time: ``share`` of one core, ``burst`` CPU seconds at once.

    Why not ``nice``: the uploader used to run at nice 19, whose CFS weight (15 against 1,024) starves it
    under saturation; measured with four busy loops on the two cores, its first row was archived 115 s after
    the 202. At nice 0 with this budget it yields to the ingest in a burst (at most ``share`` of a core)
    and still gets its fair share of the CPU once a segment is overdue.

    Args:
        share: CPU seconds per second of wall-clock time the bucket refills with.
        burst: The bucket's size in CPU seconds (its initial content).
        clock: Wall-clock seconds, monotonic.
        cpu: This process's CPU seconds.
    """

    def __init__(
        self,
        share: float,
        burst: float,
        clock: Callable[[], float] = time.monotonic,
        cpu: Callable[[], float] = time.process_time,
    ) -> None:
        self.share, self.burst, self._clock, self._cpu = share, burst, clock, cpu
        self._tokens, self._at, self._used = burst, clock(), cpu()

    def delay(self) -> float:
        """Seconds to wait until the CPU spent so far is paid back (0 when within the budget)."""
        now, used = self._clock(), self._cpu()
        # Refilled up to the burst, then charged (the CPU may have been spent at the end of the interval).
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.share) - (used - self._used)
        self._at, self._used = now, used
        return max(0.0, -self._tokens / self.share)


class Uploader:
    """Uploads sealed segments as Parquet files, oldest first (runs in the uploader process).

    Each segment waits for the CPU budget (:class:`CpuBudget`) unless it was sealed more than ``max_lag``
    seconds ago: in a burst the ingest keeps the CPU, and no segment waits on the budget beyond that bound.

    Args:
        uri: The archive's location.
        directory: The write-ahead log's directory.
        max_wal_bytes: Sealed segments kept at most while uploads fail; the oldest beyond are dropped.
        budget: The uploader's CPU budget (default: :data:`CPU_BUDGET` of a core, :data:`BURST_CPU_SECONDS`).
        max_lag: Seconds after its sealing when a segment no longer waits for the budget.
    """

    def __init__(
        self,
        uri: str,
        directory: Path,
        max_wal_bytes: int,
        budget: CpuBudget | None = None,
        max_lag: float = MAX_LAG_SECONDS,
    ) -> None:
        self.uri = uri
        self.directory = directory
        self.max_wal_bytes = max_wal_bytes
        self.budget = budget or CpuBudget(CPU_BUDGET, BURST_CPU_SECONDS)
        self.max_lag = max_lag
        self.outliers: OutlierDetector | None = None
        self.last_error: str | None = None
        self.counts: list[tuple[str, str, int]] = []  # since the last report
        self._store: Any = None

    def upload(self, *, paced: bool = True) -> bool:
        """Upload the sealed segments, oldest first; ``False`` at the first failure (the rest wait).

        Args:
            paced: Wait for the CPU budget before each segment that is not overdue (``False``: the last pass
                before the detector stops).
        """
        for path in self._bound(segments_of(self.directory)):
            if paced:
                overdue_in = sealed_at(path) + self.max_lag - time.time()
                time.sleep(min(self.budget.delay(), max(0.0, overdue_in)))
            try:
                rows, labels = read_segment(path)
            except FileNotFoundError:  # uploaded by the uploader of a detector killed a moment ago
                continue
            files = {**row_files(path.stem, rows, self.outliers), **label_files(path.stem, labels)}
            try:
                if self._store is None:
                    self._store = open_store(self.uri, **CLIENT_OPTIONS)
                for name, data in files.items():
                    self._store.put(name, data)
            except Exception as error:  # any failure of the store: the segment waits, nothing is lost
                self.last_error = f"{type(error).__name__}: {(str(error).splitlines() or [''])[0]}"
                log.warning("archive upload to %s failed (%s); back-off", self.uri, self.last_error)
                self._count(rows, labels, "retried")
                return False
            path.unlink(missing_ok=True)
            self.last_error = None
            self._count(rows, labels, "archived")
        return True

    def report(self) -> dict[str, Any]:
        """What happened since the last report, for the detector's metrics and ``/status``."""
        counts, self.counts = self.counts, []
        wal_bytes = _wal_bytes(self.directory, segments_of(self.directory))
        return {"counts": counts, "last_error": self.last_error, "wal_bytes": wal_bytes}

    def _bound(self, segments: list[Path]) -> list[Path]:
        """Drop the oldest segments while the log is over ``max_wal_bytes`` (counted ``dropped``)."""
        total = _wal_bytes(self.directory, segments)
        while segments and total > self.max_wal_bytes:
            oldest = segments.pop(0)
            total -= oldest.stat().st_size
            rows, labels = read_segment(oldest)
            oldest.unlink()
            self._count(rows, labels, "dropped")
            log.error("archive log over %d bytes: dropped segment %s", self.max_wal_bytes, oldest.name)
        return segments

    def _count(self, rows: list[RowRecord], labels: list[LabelRecord], outcome: str) -> None:
        self.counts += [
            ("rows", outcome, sum(len(record.predictions) for record in rows)),
            ("labels", outcome, sum(len(record.values) for record in labels)),
        ]


def upload_forever(
    uri: str, directory: Path, max_wal_bytes: int, commands: Any, reports: Any, parent: int, level: str
) -> None:
    """The uploader process: upload what is sealed, report, wait; until told to stop or orphaned.

    After a failure it backs off (1 s doubling to 30 s). When the detector is gone (``kill -9``), it stops
    before its next pass (within 0.2 s, or its back-off): the next detector's uploader takes the log over.
    """
    import queue

    from model.outliers import OutlierDetector
    from serving.logs import configure_logging

    configure_logging(level)
    warm_up()  # before the budget starts counting: a one-time cost, not the uploads'
    uploader = Uploader(uri, directory, max_wal_bytes)
    failures, stopping = 0, False
    while not stopping and os.getppid() == parent:
        try:
            uploaded = uploader.upload()
        except Exception as error:  # e.g. the state volume unreadable: keep going, try again later
            log.exception("archive uploader: %s", error)
            uploaded = False
        reports.put(uploader.report())
        failures = 0 if uploaded else failures + 1
        first, longest = BACKOFF_SECONDS
        wait = POLL_SECONDS if uploaded else min(longest, first * 2 ** (failures - 1))
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0 and not stopping:
            try:
                command, value = commands.get(timeout=left)
            except queue.Empty:
                break
            if command == "outliers":
                uploader.outliers = OutlierDetector.from_bytes(value)
            elif command == "stop":
                stopping = True
    if stopping:  # one last pass over what the detector sealed on its way out
        uploader.upload(paced=False)
        reports.put(uploader.report())


def warm_up() -> None:
    """Import what the first upload needs (Parquet, the Blob client): about 1 s of CPU, paid once at start."""
    import azure.storage.blob  # noqa: F401
    import pyarrow.parquet  # noqa: F401


def encode(rows: list[RowRecord], labels: list[LabelRecord]) -> bytes:
    """One log line (JSON, by orjson) for a commit's records: the rows' numbers as base64 float64.

    Writing floats as decimal text cost as much as the rest of the ingest (``./dev bench archive``);
    their bytes cost a copy. The rows of one process share the model's inputs (``features``).
    """
    document: dict[str, Any] = {
        "labels": [[item.request_id, _list(item.values), item.time] for item in labels]
    }
    if rows:
        document["features"] = list(rows[0].features)
        document["requests"] = [
            [item.request_id, item.endpoint, item.model_version, item.request_time, item.response_time,
             len(item.predictions)]
            for item in rows
        ]  # fmt: skip
        document["rows"] = _bytes(np.concatenate([np.asarray(item.rows, dtype="<f8") for item in rows]))
        document["predictions"] = _bytes(
            np.concatenate([np.asarray(item.predictions, dtype="<f8") for item in rows])
        )
    return orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n"


def decode(line: bytes) -> tuple[list[RowRecord], list[LabelRecord]]:
    """The records of one log line (see :func:`encode`)."""
    document = orjson.loads(line)
    labels = [LabelRecord(*item) for item in document["labels"]]
    rows = []
    if "requests" in document:
        features = document["features"]
        values = np.frombuffer(base64.b64decode(document["rows"]), "<f8").reshape(-1, len(features))
        predictions = np.frombuffer(base64.b64decode(document["predictions"]), "<f8")
        offset = 0
        for request_id, endpoint, version, requested, responded, count in document["requests"]:
            window = slice(offset, offset + count)
            rows.append(
                RowRecord(request_id, endpoint, version, requested, responded, features, values[window],
                          predictions[window])
            )  # fmt: skip
            offset += count
        if offset != len(predictions):
            raise ValueError(f"{offset} rows announced, {len(predictions)} stored")
    return rows, labels


def read_segment(path: Path) -> tuple[list[RowRecord], list[LabelRecord]]:
    """The records of one log segment (a line per commit); a line cut short by a crash is skipped."""
    rows: list[RowRecord] = []
    labels: list[LabelRecord] = []
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, 1):
            try:
                found, labelled = decode(line)
            except (ValueError, KeyError, TypeError) as error:  # JSONDecodeError and binascii.Error too
                log.warning("%s line %d unreadable, skipped: %s", path.name, number, error)
                continue
            rows.extend(found)
            labels.extend(labelled)
    return rows, labels


@functools.lru_cache(maxsize=16)
def _counter(kind: str, outcome: str) -> Any:
    """``housing_archive_rows_total{kind, outcome}``, looked up once (a commit per POST counts here)."""
    return metrics.ARCHIVE_ROWS.labels(kind=kind, outcome=outcome)


def _bytes(array: Any) -> str:
    return base64.b64encode(np.ascontiguousarray(array, dtype="<f8").tobytes()).decode("ascii")


def _list(values: Any) -> Any:
    return values.tolist() if hasattr(values, "tolist") else list(values)
