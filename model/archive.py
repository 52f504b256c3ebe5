"""The traffic archive: every joined inference row the detector saw, and its label once it arrived.

The detector writes it (:mod:`detector.archive`); retraining reads it (``housing train --data ARCHIVE``,
:func:`training_frame`). Both sides meet here, so the layout is defined once.

Layout under the archive's location (a Blob URL, ``https://ACCOUNT.blob.core.windows.net/CONTAINER/PREFIX``
or Azurite's ``http://HOST:PORT/ACCOUNT/CONTAINER/PREFIX``, or a local directory / ``file://`` URL)::

    rows/date=2026-11-29/model_version=3/<segment>.parquet     one row per predicted house
    labels/date=2026-11-29/<segment>.parquet                   one row per labelled house

Files are append-only and named after the detector's write-ahead segment they came from, so uploading a
segment twice (a crash between upload and clean-up) overwrites the same files. The reader de-duplicates
anyway: one row per (``request_id``, ``row``), the earliest, since a shadow model's prediction of the same
request describes the same house; and the latest label per row. Parquet rather than CSV: typed columns
(timestamps, floats that round-trip), compressed, and readable by pandas, Spark and Azure ML as they are.

Columns of a rows file: ``request_id``, ``row`` (index in the request), ``endpoint``, ``model_version``,
``request_time``, ``response_time`` (UTC, when the detector received each event), one float column per model
input, ``prediction``, ``outlier`` (the artifact's outlier flag for the house, :mod:`model.outliers`: True
when it is unlike any house seen in training; null when the detector had no outlier model to score it with).
Of a labels file: ``request_id``, ``row``, ``medv`` (the target, USD 1000s),
``label_time``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlparse

from model.schema import ALL_FEATURES, FEATURES_BY_NAME, TARGET, TARGET_DOMAIN
from model.storage import StorageError, container_client, is_blob_url, parse_blob_url

if TYPE_CHECKING:
    import pandas as pd

    from model.outliers import OutlierDetector

log = logging.getLogger(__name__)

ROWS = "rows"
LABELS = "labels"
KEY = ["request_id", "row"]
ROW_META = ["request_id", "row", "endpoint", "model_version", "request_time", "response_time"]
LABEL_COLUMNS = ["request_id", "row", TARGET, "label_time"]


class EmptyArchiveError(StorageError):
    """The archive holds no rows, or (for training) no labelled row, yet."""


@dataclass(slots=True)  # not frozen: made once per inference on the ingest path, where __init__ costs show
class RowRecord:
    """One joined inference (a request and its response), as the detector logs it.

    Attributes:
        request_id: The inference request id (``ce-id``).
        endpoint: ``default`` or ``canary``.
        model_version: The version that answered.
        request_time: When the request event arrived (seconds since the epoch).
        response_time: When the response event arrived.
        features: The input names, in the order of ``rows``' columns.
        rows: The request's rows, shape [N, len(features)] (an array or nested lists).
        predictions: The N predictions (an array or a list).
    """

    request_id: str
    endpoint: str
    model_version: str
    request_time: float
    response_time: float
    features: Sequence[str]
    rows: Any
    predictions: Any


@dataclass(slots=True)
class LabelRecord:
    """The true value(s) of one request's prediction(s), one per row, posted at ``time``."""

    request_id: str
    values: Any
    time: float


class LocalStore:
    """An archive in a local directory (tests, ``housing up``): each file written whole, then renamed."""

    def __init__(self, root: Path):
        self.root = root

    def put(self, name: str, data: bytes) -> None:
        """Write ``data`` to ``name`` (relative, ``/``-separated) atomically."""
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(temporary, path)

    def names(self, under: str) -> list[str]:
        """The files below ``under``, relative to the root, sorted."""
        base = self.root / under
        return sorted(str(path.relative_to(self.root)) for path in base.rglob("*.parquet") if path.is_file())

    def get(self, name: str) -> bytes:
        """The content of ``name``."""
        return (self.root / name).read_bytes()


class BlobStore:
    """An archive in a Blob Storage container, below a prefix (credentials as :mod:`model.storage`'s)."""

    def __init__(self, url: str, **client_options: Any):
        self.location = parse_blob_url(url)
        self.container = container_client(self.location, **client_options)
        self._created = False

    def put(self, name: str, data: bytes) -> None:
        """Upload ``data`` as ``name`` (below the prefix), replacing a blob of that name."""
        from azure.core.exceptions import ResourceExistsError

        if not self._created:
            with contextlib.suppress(ResourceExistsError):
                self.container.create_container()
            self._created = True
        self.container.upload_blob(self.location.blob_name(name), data, overwrite=True)

    def names(self, under: str) -> list[str]:
        """The blob names below ``under``, relative to the prefix, sorted."""
        from azure.core.exceptions import ResourceNotFoundError

        start = self.location.blob_name(under) + "/"
        strip = len(self.location.prefix) + 1 if self.location.prefix else 0
        try:
            return sorted(blob[strip:] for blob in self.container.list_blob_names(name_starts_with=start))
        except ResourceNotFoundError:  # no container yet: nothing archived
            return []

    def get(self, name: str) -> bytes:
        """The content of blob ``name``."""
        return bytes(self.container.download_blob(self.location.blob_name(name)).readall())


Store = LocalStore | BlobStore


def open_store(uri: str, **client_options: Any) -> Store:
    """The store an archive location names (``client_options`` go to ``BlobServiceClient``)."""
    if is_blob_url(uri):
        return BlobStore(uri, **client_options)
    return LocalStore(Path(unquote(urlparse(uri).path) if uri.startswith("file://") else uri))


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def row_files(
    segment: str, records: Iterable[RowRecord], outliers: OutlierDetector | None = None
) -> dict[str, bytes]:
    """The Parquet files of one segment's rows, by name (one per date and model version).

    The date is the response's (UTC). Feature columns are the union of the records' inputs (NaN where a
    record lacks one: an artifact with other inputs may have answered in the same segment). ``outliers``
    scores every row for the ``outlier`` column, all of a file's rows at once (about 1 µs a row), in the
    uploader's thread rather than on the ingest path; null without it.
    """
    import numpy as np
    import pyarrow as pa

    groups: dict[tuple[int, str], list[RowRecord]] = {}
    for record in records:  # by UTC day number, then version
        groups.setdefault((int(record.response_time // 86400), record.model_version), []).append(record)
    files = {}
    for (day, version), group in groups.items():
        date = _utc(day * 86400).date().isoformat()
        # The records of one process share one list of inputs: the union is over the distinct lists.
        distinct = {id(record.features): record.features for record in group}
        features = list(dict.fromkeys(name for names in distinct.values() for name in names))
        counts = np.array([len(record.predictions) for record in group])
        # Built column by column with numpy (a few µs per row in Python loops would show in the benchmark).
        if all(list(names) == features for names in distinct.values()):
            values = np.vstack([np.asarray(record.rows, dtype=float) for record in group])
        else:
            values = np.full((int(counts.sum()), len(features)), np.nan)
            offset = 0
            for record, count in zip(group, counts.tolist(), strict=True):
                where = [features.index(name) for name in record.features]
                values[offset : offset + count, where] = np.asarray(record.rows, dtype=float).reshape(
                    count, -1
                )
                offset += count
        columns = {
            "request_id": pa.array(np.repeat([record.request_id for record in group], counts), pa.string()),
            "row": pa.array(_row_numbers(counts), pa.int32()),
            "endpoint": pa.array(np.repeat([record.endpoint for record in group], counts), pa.string()),
            "model_version": pa.array(np.full(len(values), version), pa.string()),
            "request_time": _timestamps(np.repeat([record.request_time for record in group], counts)),
            "response_time": _timestamps(np.repeat([record.response_time for record in group], counts)),
            **{name: pa.array(values[:, column], pa.float64()) for column, name in enumerate(features)},
            "prediction": pa.array(
                np.concatenate([np.asarray(record.predictions, dtype=float) for record in group]),
                pa.float64(),
            ),
            "outlier": _outlier_flags(outliers, values, features),
        }
        name = f"{ROWS}/date={date}/model_version={quote(version, safe='')}/{segment}.parquet"
        files[name] = _parquet(pa.table(columns))
    return files


def _outlier_flags(outliers: OutlierDetector | None, values: Any, features: list[str]) -> Any:
    """The ``outlier`` column: each row's flag, or nulls when there is no detector or it lacks an input."""
    import pyarrow as pa

    if outliers is None or not set(outliers.features) <= set(features):
        return pa.nulls(len(values), pa.bool_())
    return pa.array(outliers.flags(values[:, [features.index(name) for name in outliers.features]]))


def label_files(segment: str, records: Iterable[LabelRecord]) -> dict[str, bytes]:
    """The Parquet files of one segment's labels, by name (one per date of arrival, UTC)."""
    import numpy as np
    import pyarrow as pa

    groups: dict[str, list[LabelRecord]] = {}
    for record in records:
        groups.setdefault(_utc(record.time).date().isoformat(), []).append(record)
    files = {}
    for date, group in groups.items():
        counts = np.array([len(record.values) for record in group])
        columns = {
            "request_id": pa.array(np.repeat([record.request_id for record in group], counts), pa.string()),
            "row": pa.array(_row_numbers(counts), pa.int32()),
            TARGET: pa.array(
                np.concatenate([np.asarray(record.values, dtype=float) for record in group]), pa.float64()
            ),
            "label_time": _timestamps(np.repeat([record.time for record in group], counts)),
        }
        files[f"{LABELS}/date={date}/{segment}.parquet"] = _parquet(pa.table(columns))
    return files


def _row_numbers(counts: Any) -> Any:
    """0, 1, .., count - 1 for each request, concatenated."""
    import numpy as np

    starts = np.cumsum(counts) - counts
    return np.arange(int(np.sum(counts))) - np.repeat(starts, counts)


def _timestamps(seconds: Any) -> Any:
    """Seconds since the epoch as an Arrow UTC timestamp column (microseconds)."""
    import numpy as np
    import pyarrow as pa

    micros = np.round(np.asarray(seconds, dtype=float) * 1e6).astype("int64")
    return pa.array(micros, pa.timestamp("us", tz="UTC"))


def _parquet(table: Any) -> bytes:
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


def _read(store: Store, under: str) -> pd.DataFrame | None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = [pq.read_table(io.BytesIO(store.get(name))) for name in store.names(under)]
    if not tables:
        return None
    frame: pd.DataFrame = pa.concat_tables(tables, promote_options="default").to_pandas()
    return frame


def read_archive(uri: str) -> pd.DataFrame:
    """Every archived row, de-duplicated, with its latest label.

    Args:
        uri: The archive's location (see the module docstring).

    Returns:
        One row per (``request_id``, ``row``), the earliest archived, sorted by ``response_time``: the rows
        columns, then ``medv`` (NaN until labelled) and ``label_time``.

    Raises:
        StorageError: The location cannot be read, or holds no archived rows.
    """
    import pandas as pd
    from azure.core.exceptions import AzureError

    try:
        store = open_store(uri)
        rows, labels = _read(store, ROWS), _read(store, LABELS)
    except (AzureError, OSError) as error:
        raise StorageError(f"cannot read the archive at {uri}: {error}") from error
    if rows is None:
        raise EmptyArchiveError(f"{uri} holds no archived rows ({ROWS}/...parquet)")
    rows = rows.sort_values("response_time", kind="stable").drop_duplicates(KEY, keep="first")
    if labels is None:
        labels = pd.DataFrame(
            {
                "request_id": pd.Series(dtype=object),
                "row": pd.Series(dtype="int32"),
                TARGET: pd.Series(dtype="float64"),
                "label_time": pd.Series(dtype="datetime64[us, UTC]"),
            }
        )
    labels = labels.sort_values("label_time", kind="stable").drop_duplicates(KEY, keep="last")
    joined = rows.merge(labels[LABEL_COLUMNS], on=KEY, how="left")
    return joined.reset_index(drop=True)


def training_frame(uri: str) -> pd.DataFrame:
    """The archive's labelled rows as training data: the schema's features (NaN where not archived), ``medv``.

    A labelled row is refused (left out, logged; counted in the frame's ``attrs["refused"]``) when its label
    breaks the target's rule (``model.schema.TARGET_DOMAIN``: a finite number in (0, 50], the rule the
    detector's ``/feedback`` applies), when it was labelled before its prediction was made (a label posted
    for an id in advance, joined to whatever later came with that id), or when a feature breaks the schema
    (as :func:`model.dataset.load_dataset` checks a CSV). So labels poisoned before the detector checked them
    (``999``, ``-1e6``) never reach training, and one of them cannot stop every retraining either.

    Raises:
        EmptyArchiveError: The archive holds no archived row, or none with a label (that is not refused) yet.
        StorageError: The archive cannot be read.
    """
    import numpy as np

    archived = read_archive(uri)
    labelled = archived[archived[TARGET].notna()].reset_index(drop=True)
    if labelled.empty:
        raise EmptyArchiveError(f"{uri}: none of its {len(archived)} archived rows has a label yet")
    reasons = np.full(len(labelled), None, dtype=object)
    for feature in [TARGET_DOMAIN, *(FEATURES_BY_NAME[name] for name in ALL_FEATURES if name in labelled)]:
        values = labelled[feature.name].to_numpy(dtype="float64")
        values_seen = (
            np.unique(values[~np.isnan(values)]) if feature is not TARGET_DOMAIN else np.unique(values)
        )
        broken = {
            value: rule for value in values_seen.tolist() if (rule := feature.violation(value)) is not None
        }
        if broken:
            where = np.isin(values, list(broken)) & (reasons == None)  # noqa: E711 (elementwise)
            reasons[where] = [f"{feature.name} {broken[value]}" for value in values[where].tolist()]
    early = (labelled["label_time"] < labelled["response_time"]).to_numpy() & (reasons == None)  # noqa: E711
    reasons[early] = "labelled before its prediction was made"
    refused = reasons != None  # noqa: E711
    if refused.any():
        examples = [
            f"request {request_id!r} row {row}: {reason}"
            for (request_id, row), reason in zip(
                labelled.loc[refused, ["request_id", "row"]].itertuples(index=False),
                reasons[refused],
                strict=True,
            )
        ][:5]
        log.warning(
            "%s: %d of %d labelled rows refused, e.g. %s",
            uri,
            int(refused.sum()),
            len(labelled),
            "; ".join(examples),
        )
    kept = labelled[~refused]
    if kept.empty:
        raise EmptyArchiveError(f"{uri}: every one of its {len(labelled)} labelled rows was refused")
    frame = kept.reindex(columns=[*ALL_FEATURES, TARGET]).astype("float64").reset_index(drop=True)
    frame.attrs["refused"] = int(refused.sum())
    return frame


BUNDLED = "bundled"
"""The name of the bundled data set among ``housing train --data`` sources."""


def load_training_data(
    sources: Sequence[str | Path], features: Sequence[str]
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The training frame from CSVs and archives, and what it was made of.

    Args:
        sources: Each a CSV file (``*.csv``, checked by :func:`model.dataset.load_dataset`), ``bundled`` (the
            bundled data set) or an archive location (its labelled rows, :func:`training_frame`). Empty: the
            bundled data set. An archive with no labelled row yet adds nothing beside other sources (the
            scheduled retraining keeps working on a new archive) and is an error alone.
        features: The model's inputs: every row must have them (archived rows carry only the inputs of the
            model that served them).

    Returns:
        The rows of every source in order (the schema's features, NaN where a source lacks one; ``medv``),
        and the provenance model.json and MLflow record: ``data_sources``, ``data_rows``,
        ``data_archive_rows``, ``data_archive_refused`` (labelled rows left out by :func:`training_frame`) and
        ``data_sha256`` (of the frame written as CSV without index: reproducible from the same sources).

    Raises:
        DataValidationError: A CSV breaks the schema.
        StorageError: An archive cannot be read, or is empty and the only source.
        ValueError: Rows lack one of ``features``.
    """
    import hashlib

    import pandas as pd

    from model.dataset import load_dataset

    frames, archived, refused, names = [], 0, 0, []
    for source in sources or [BUNDLED]:
        text = str(source)
        if text == BUNDLED:
            frames.append(load_dataset())
        elif text.endswith(".csv") and not is_blob_url(text):
            frames.append(load_dataset(text))
        else:
            try:
                frames.append(training_frame(text))
            except EmptyArchiveError as error:
                if len(sources) < 2:
                    raise
                log.warning("%s; training on the other sources", error)
            else:
                archived += len(frames[-1])
                refused += frames[-1].attrs.get("refused", 0)
        names.append(text)
    frame = pd.concat(frames, ignore_index=True)[[*ALL_FEATURES, TARGET]]
    lacking = [name for name in features if frame[name].isna().any()]
    if lacking:
        raise ValueError(
            f"{int(frame[lacking].isna().any(axis=1).sum())} rows lack feature(s) {lacking} (archived rows "
            "carry only the inputs of the model that served them): train without them, or on other data"
        )
    provenance = {
        "data_sources": " + ".join(names),
        "data_rows": len(frame),
        "data_archive_rows": archived,
        "data_archive_refused": refused,
        "data_sha256": hashlib.sha256(frame.to_csv(index=False).encode()).hexdigest(),
    }
    return frame, provenance
