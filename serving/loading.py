"""A server whose model is a verified artifact: its flags, and loading it in the background until it is ready.

The server starts at once and answers health, with readiness false, while the artifact is fetched: storage
that cannot be reached is retried with bounded exponential back-off (the log says why it waits), and an
artifact that fails its checksum is refused, then retried (re-publishing fixes it without a restart): the
server never serves an unverified model. The predictor and the explainer both run this way.
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
from typing import Any, Protocol

from model.artifact import ArtifactError
from model.storage import StorageError
from serving.server import HousingModelServer, freeze_heap

log = logging.getLogger(__name__)


class ArtifactModel(Protocol):
    """A KServe model that loads one artifact (``load`` raises StorageError or ArtifactError)."""

    name: str

    def load(self) -> bool:
        """Download, verify and load the artifact."""
        ...

    def describe_loaded(self) -> str:
        """What was loaded, for the log line that says the server is ready."""
        ...


def add_artifact_args(
    parser: argparse.ArgumentParser,
    sha256_help: str = "refuse any model.joblib whose sha256 differs (env EXPECTED_SHA256)",
) -> None:
    """The artifact flags: ``--storage_uri``, ``--expected_sha256`` (env alike), ``--retry_max_seconds``."""
    parser.add_argument(
        "--storage_uri",
        default=os.environ.get("STORAGE_URI"),
        help="artifact directory: local path, file://, https://ACCOUNT.blob.core.windows.net/... "
        "or an Azurite http URL (env STORAGE_URI)",
    )
    parser.add_argument(
        "--expected_sha256",
        default=os.environ.get("EXPECTED_SHA256") or None,
        help=sha256_help,
    )
    parser.add_argument(
        "--retry_max_seconds", type=float, default=30.0, help="longest wait between load attempts"
    )


def load_with_backoff(model: ArtifactModel, stop: threading.Event, max_delay: float = 30.0) -> None:
    """Load the model, retrying failures with exponential back-off (1 s doubling, capped at ``max_delay``).

    Storage errors are expected while a storage account or network policy comes up; artifact errors mean the
    files are wrong (e.g. tampered): both are logged and retried, and the model stays not ready meanwhile.
    """
    delay, attempt = 1.0, 1
    while not stop.is_set():
        try:
            model.load()
        except StorageError as error:
            log.warning(
                "not ready: model storage unreachable (attempt %d), retrying in %.0f s: %s",
                attempt,
                delay,
                error,
            )
        except ArtifactError as error:
            log.error(
                "not ready: refusing to serve the artifact (attempt %d), retrying in %.0f s: %s",
                attempt,
                delay,
                error,
            )
        else:
            log.info("ready: %s", model.describe_loaded())
            freeze_heap()  # the model's objects join the frozen heap: no request pays to scan them
            return
        stop.wait(delay)
        delay, attempt = min(delay * 2, max_delay), attempt + 1


def serve(component: str, model: ArtifactModel, args: argparse.Namespace, **server: Any) -> None:
    """Load ``model`` in the background and serve it (not ready until verified) until the server stops.

    Args:
        component: ``predictor`` or ``explainer`` (the metrics' ``component`` label).
        model: The model to load and serve.
        args: Parsed flags: KServe's server flags, :func:`add_artifact_args`' and the edge's
            (``args.edge``, :func:`serving.edge.edge_settings`; ``args.enabled``: flags that turn routes on).
        **server: More ``HousingModelServer`` arguments.
    """
    stop = threading.Event()
    loader = threading.Thread(
        target=load_with_backoff, args=(model, stop, args.retry_max_seconds), daemon=True
    )
    loader.start()
    log.info("loading %s from %s (not ready until verified)", model.name, args.storage_uri)
    try:
        HousingModelServer(
            component,
            http_port=args.http_port,
            grpc_port=args.grpc_port,
            workers=args.workers,
            enable_grpc=args.enable_grpc,
            enable_latency_logging=args.enable_latency_logging,
            edge=args.edge,
            enabled=getattr(args, "enabled", frozenset()),
            grace_period=args.grace_period,
            reuse_port=args.reuse_port,
            **server,
        ).start_unready([model])
    finally:
        stop.set()
