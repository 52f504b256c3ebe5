"""``python -m predictor``: the housing model on KServe's ModelServer (REST --http_port, gRPC --grpc_port).

The server starts at once and answers health, with readiness false, while the artifact is fetched in the
background: storage that cannot be reached is retried with bounded exponential back-off (the log says why
it waits), and an artifact that fails its checksum is refused: the server never serves an unverified model.
"""

from __future__ import annotations

import argparse
import logging
import os
import threading

from model.artifact import ArtifactError
from model.storage import StorageError
from predictor.model import HousingModel
from serving.server import (
    HousingModelServer,
    configure_server_logging,
    freeze_heap,
    parse_server_args,
    server_parser,
)

log = logging.getLogger("predictor")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """KServe's ModelServer flags plus where the model is and which sha256 it must have."""
    parser = server_parser("python -m predictor", __doc__.splitlines()[0])
    parser.add_argument(
        "--storage_uri",
        default=os.environ.get("STORAGE_URI"),
        help="artifact directory: local path, file://, https://ACCOUNT.blob.core.windows.net/... "
        "or an Azurite http URL (env STORAGE_URI)",
    )
    parser.add_argument(
        "--expected_sha256",
        default=os.environ.get("EXPECTED_SHA256") or None,
        help="refuse any model.joblib whose sha256 differs (env EXPECTED_SHA256)",
    )
    parser.add_argument(
        "--retry_max_seconds", type=float, default=30.0, help="longest wait between load attempts"
    )
    args = parse_server_args(parser, argv)
    if not args.storage_uri:
        parser.error("--storage_uri (or STORAGE_URI) is required")
    return args


def load_with_backoff(model: HousingModel, stop: threading.Event, max_delay: float = 30.0) -> None:
    """Load the model, retrying failures with exponential back-off (1 s doubling, capped at ``max_delay``).

    Storage errors are expected while a storage account or network policy comes up; artifact errors mean the
    files are wrong (e.g. tampered): both are logged and retried, because fixing either (re-publishing) must
    not need a restart, and the model stays not ready meanwhile.
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
            artifact = model.artifact
            assert artifact is not None
            log.info(
                "ready: model %s version %s sha256 %s, features %s",
                model.name,
                artifact.version,
                artifact.sha256,
                ",".join(artifact.feature_names),
            )
            freeze_heap()  # the model's objects join the frozen heap: no request pays to scan them
            return
        stop.wait(delay)
        delay, attempt = min(delay * 2, max_delay), attempt + 1


def main(argv: list[str] | None = None) -> None:
    """Start the predictor server."""
    args = parse_args(argv)
    configure_server_logging(args.log_level, latency_logging=args.enable_latency_logging)
    model = HousingModel(args.model_name, args.storage_uri, args.expected_sha256)
    stop = threading.Event()
    loader = threading.Thread(
        target=load_with_backoff, args=(model, stop, args.retry_max_seconds), daemon=True
    )
    loader.start()
    log.info("loading %s from %s (not ready until verified)", args.model_name, args.storage_uri)
    try:
        HousingModelServer(
            "predictor",
            http_port=args.http_port,
            grpc_port=args.grpc_port,
            workers=args.workers,
            enable_grpc=args.enable_grpc,
            enable_latency_logging=args.enable_latency_logging,
        ).start_unready([model])
    finally:
        stop.set()


if __name__ == "__main__":
    main()
