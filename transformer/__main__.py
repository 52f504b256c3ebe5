"""``python -m transformer``: the InferenceService's transformer (validation in front of the predictor).

KServe injects ``--model_name``, ``--predictor_host`` and ``--http_port`` into a custom transformer container;
``--protocol`` picks how the predictors are called (``v1``, ``v2`` or ``grpc-v2``); each ``--canary`` adds a
canary predictor that gets a share of the requests (see :mod:`transformer.routing`); ``--explainer_host`` is
where ``:explain`` goes (:mod:`transformer.explain`; KServe does not inject it).
"""

from __future__ import annotations

import argparse
import logging
import os

from kserve.predictor_config import PredictorConfig

from serving.server import HousingModelServer, configure_server_logging, parse_server_args, server_parser
from transformer.batching import COALESCE_ROWS
from transformer.explain import ExplainerClient
from transformer.model import MAX_BATCH_ROWS, HousingTransformer
from transformer.request_logger import LOGGER_URL_ENV, RequestLogger
from transformer.resilience import DEFAULT_MAX_IN_FLIGHT, AdmissionMiddleware
from transformer.routing import BreakerSettings, build_router, check_canaries, parse_canary

log = logging.getLogger("transformer")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """KServe's ModelServer and transformer flags, plus canaries, batch and load limits, breaker, logger.

    ``--predictor_request_timeout_seconds`` (KServe's flag) is each request's deadline.
    """
    parser = server_parser("python -m transformer", __doc__.splitlines()[0])
    parser.add_argument(
        "--predictor_rest_host",
        default=None,
        help="HOST:PORT of the predictor's REST server, for its V2 metadata (default: --predictor_host; "
        "set it with --protocol grpc-v2 when REST and gRPC listen on different ports)",
    )
    parser.add_argument(
        "--canary",
        action="append",
        default=[],
        metavar="NAME=PERCENT,HOST[,REST_HOST]",
        help="send PERCENT %% of the requests to the canary predictor at HOST (REST_HOST: its REST server, "
        "like --predictor_rest_host); repeatable, the percentages add up to at most 100 and the stable "
        "predictor gets the rest; e.g. v2=10,housing-kserve-v2-predictor.housing",
    )
    parser.add_argument(
        "--explainer_host",
        default=None,
        help="HOST:PORT of the explainer's REST server: V1 :explain is validated and sent there "
        "(default: none, :explain answers 501)",
    )
    parser.add_argument(
        "--max_batch_rows", type=int, default=MAX_BATCH_ROWS, help="largest batch accepted (rows)"
    )
    parser.add_argument(
        "--coalesce_rows",
        type=int,
        default=COALESCE_ROWS,
        help="merge requests that wait at the same time into predictor calls of up to this many rows "
        "(adaptive batching, per predictor; 0: every request on its own; default: %(default)s)",
    )
    parser.add_argument(
        "--max_in_flight",
        type=int,
        default=DEFAULT_MAX_IN_FLIGHT,
        help="requests in flight or queued at once; more get 503 with Retry-After at once (back-pressure; "
        "default %(default)s: about 100 ms of work at the measured 1,300 requests/s, docs/serving.md)",
    )
    parser.add_argument(
        "--breaker_failures",
        type=int,
        default=BreakerSettings.failures,
        help="consecutive failed requests to a predictor that open its circuit breaker (default %(default)s)",
    )
    parser.add_argument(
        "--breaker_reset_seconds",
        type=float,
        default=BreakerSettings.reset_seconds,
        help="seconds an open breaker refuses calls before one probe request may go (default %(default)s)",
    )
    parser.add_argument(
        "--logger_url",
        default=os.environ.get(LOGGER_URL_ENV),
        help="post a request and a response CloudEvent for every inference here (the drift detector; "
        "env LOGGER_URL; default: off)",
    )
    parser.set_defaults(protocol="v2", predictor_request_timeout_seconds=5)
    args = parse_server_args(parser, argv)
    if not args.predictor_host:
        parser.error("--predictor_host is required")
    if args.max_batch_rows < 1:
        parser.error("--max_batch_rows must be at least 1")
    if args.coalesce_rows < 0:
        parser.error("--coalesce_rows must be 0 (off) or more")
    if args.max_in_flight < 1 or args.breaker_failures < 1:
        parser.error("--max_in_flight and --breaker_failures must be at least 1")
    if not args.breaker_reset_seconds > 0:
        parser.error("--breaker_reset_seconds must be more than 0")
    canaries = []
    for value in args.canary:
        try:
            canaries.append(parse_canary(value))
        except ValueError as error:
            parser.error(f"--canary {value!r}: {error}")
    try:
        check_canaries(canaries)
    except ValueError as error:
        parser.error(f"--canary: {error}")
    args.canary = canaries
    return args


def main(argv: list[str] | None = None) -> None:
    """Start the transformer server."""
    args = parse_args(argv)
    configure_server_logging(args.log_level, latency_logging=args.enable_latency_logging)
    # KServe reads --predictor_protocol; the contract (and KServe's docs for transformers) say --protocol.
    protocol = args.predictor_protocol if args.predictor_protocol != "v1" else args.protocol
    router = build_router(
        args.predictor_host,
        args.predictor_rest_host,
        args.canary,
        model_name=args.model_name,
        protocol=protocol,
        use_ssl=args.predictor_use_ssl,
        timeout=args.predictor_request_timeout_seconds,
        retries=args.predictor_request_retries,
        coalesce_rows=args.coalesce_rows,
        breaker=BreakerSettings(args.breaker_failures, args.breaker_reset_seconds),
    )
    request_logger = None
    if args.logger_url:
        request_logger = RequestLogger(args.logger_url, component="transformer")
        log.info("sending inference events to %s", args.logger_url)
    model = HousingTransformer(
        args.model_name,
        router,
        max_batch_rows=args.max_batch_rows,
        request_logger=request_logger,
        max_in_flight=args.max_in_flight,
        explainer=ExplainerClient(args.explainer_host, args.model_name, use_ssl=args.predictor_use_ssl)
        if args.explainer_host
        else None,
    )
    if args.explainer_host:
        log.info("sending :explain to the explainer at %s", args.explainer_host)
    for arm in router.arms:
        log.info(
            "forwarding %d%% of requests to the %s predictor at %s over %s",
            arm.spec.percent,
            arm.spec.name,
            arm.spec.host,
            protocol,
        )
    from kserve.model_server import app

    # Added before the server's own middleware, so that its request metrics count the refusals too.
    app.add_middleware(AdmissionMiddleware, admission=model.admission)
    HousingModelServer(
        "transformer",
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        workers=args.workers,
        enable_grpc=args.enable_grpc,
        enable_latency_logging=args.enable_latency_logging,
        # KServe keeps this in its context; the calls themselves go through the router's own clients.
        predictor_config=PredictorConfig(
            predictor_host=args.predictor_host,
            predictor_protocol=protocol,
            predictor_use_ssl=args.predictor_use_ssl,
            predictor_request_timeout_seconds=args.predictor_request_timeout_seconds,
            predictor_request_retries=args.predictor_request_retries,
        ),
    ).start_unready([model])
    if request_logger is not None:
        request_logger.close()


if __name__ == "__main__":
    main()
