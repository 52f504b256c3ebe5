"""``python -m transformer``: the InferenceService's transformer (validation in front of the predictor).

KServe injects ``--model_name``, ``--predictor_host`` and ``--http_port`` into a custom transformer container;
``--protocol`` picks how the predictor is called (``v1``, ``v2`` or ``grpc-v2``).
"""

from __future__ import annotations

import argparse
import logging
import os

from kserve.predictor_config import PredictorConfig

from model.request_logger import ENDPOINTS, LOGGER_URL_ENV, RequestLogger
from predictor.server import HousingModelServer, configure_logging, parse_server_args, server_parser
from transformer.model import HousingTransformer

log = logging.getLogger("transformer")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """KServe's ModelServer and transformer flags, plus batch limit, timeout and the local request logger."""
    parser = server_parser("python -m transformer", __doc__.splitlines()[0])
    parser.add_argument(
        "--predictor_rest_host",
        default=None,
        help="HOST:PORT of the predictor's REST server, for its V2 metadata (default: --predictor_host; "
        "set it with --protocol grpc-v2 when REST and gRPC listen on different ports)",
    )
    parser.add_argument("--max_batch_rows", type=int, default=1000, help="largest batch accepted (rows)")
    parser.add_argument(
        "--coalesce_rows",
        type=int,
        default=256,
        help="merge requests that wait at the same time into predictor calls of up to this many rows "
        "(adaptive batching; 0: every request on its own; default: %(default)s)",
    )
    parser.add_argument(
        "--logger_url",
        default=os.environ.get(LOGGER_URL_ENV),
        help="post inference CloudEvents here (local stack; env LOGGER_URL); "
        "on Kubernetes, KServe's logger does it",
    )
    parser.add_argument(
        "--endpoint", choices=ENDPOINTS, default="default", help="ce-endpoint of the logged events"
    )
    parser.set_defaults(protocol="v2", predictor_request_timeout_seconds=5)
    args = parse_server_args(parser, argv)
    if not args.predictor_host:
        parser.error("--predictor_host is required")
    if args.max_batch_rows < 1:
        parser.error("--max_batch_rows must be at least 1")
    if args.coalesce_rows < 0:
        parser.error("--coalesce_rows must be 0 (off) or more")
    return args


def main(argv: list[str] | None = None) -> None:
    """Start the transformer server."""
    args = parse_args(argv)
    configure_logging(args.log_level, latency_logging=args.enable_latency_logging)
    # KServe reads --predictor_protocol; the contract (and KServe's docs for transformers) say --protocol.
    protocol = args.predictor_protocol if args.predictor_protocol != "v1" else args.protocol
    predictor = PredictorConfig(
        predictor_host=args.predictor_host,
        predictor_protocol=protocol,
        predictor_use_ssl=args.predictor_use_ssl,
        predictor_request_timeout_seconds=args.predictor_request_timeout_seconds,
        predictor_request_retries=args.predictor_request_retries,
    )
    request_logger = None
    if args.logger_url:
        request_logger = RequestLogger(args.logger_url, component="transformer", endpoint=args.endpoint)
        log.info("sending inference events to %s (endpoint %s)", args.logger_url, args.endpoint)
    scheme = "https" if args.predictor_use_ssl else "http"
    model = HousingTransformer(
        args.model_name,
        f"{scheme}://{args.predictor_rest_host or args.predictor_host}",
        max_batch_rows=args.max_batch_rows,
        timeout=args.predictor_request_timeout_seconds,
        request_logger=request_logger,
        coalesce_rows=args.coalesce_rows,
    )
    log.info("forwarding to the predictor at %s over %s", args.predictor_host, protocol)
    HousingModelServer(
        "transformer",
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        workers=args.workers,
        enable_grpc=args.enable_grpc,
        enable_latency_logging=args.enable_latency_logging,
        predictor_config=predictor,
    ).start_unready([model])
    if request_logger is not None:
        request_logger.close()


if __name__ == "__main__":
    main()
