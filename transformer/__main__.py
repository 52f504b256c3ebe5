"""``python -m transformer``: the InferenceService's transformer (validation in front of the predictor).

KServe injects ``--model_name``, ``--predictor_host`` and ``--http_port`` into a custom transformer container;
``--protocol`` picks how the predictors are called (``v1``, ``v2`` or ``grpc-v2``); each ``--canary`` adds a
canary predictor that gets a share of the requests (see :mod:`transformer.routing`); ``--explainer_host`` is
where ``:explain`` goes (:mod:`transformer.explain`; KServe does not inject it). Beside V1 and V2 it serves
the original system's API (:mod:`transformer.seed_api`); ``--auth``, ``--rate_limit`` and ``--cors_*`` turn on
the local edge (:mod:`serving.edge`, all off by default; the input limits of serving/policy.py always on).
With ``--auth`` locally, the request logger sends the key in ``HOUSING_LOGGER_API_KEY`` (role ``ingest``).
"""

from __future__ import annotations

import argparse
import functools
import logging
import os

from kserve.predictor_config import PredictorConfig

from serving.edge import add_edge_arguments, edge_settings
from serving.server import HousingModelServer, configure_server_logging, parse_server_args, server_parser
from transformer.batching import COALESCE_ROWS
from transformer.explain import ExplainerClient
from transformer.model import MAX_BATCH_ROWS, HousingTransformer
from transformer.request_logger import BATCH_EVENTS as LOGGER_BATCH_EVENTS
from transformer.request_logger import FLUSH_SECONDS as LOGGER_FLUSH_SECONDS
from transformer.request_logger import LOGGER_KEY_ENV, LOGGER_URL_ENV, RequestLogger
from transformer.request_logger import MAX_QUEUE as LOGGER_MAX_QUEUE
from transformer.resilience import DEFAULT_MAX_IN_FLIGHT, AdmissionMiddleware
from transformer.routing import (
    ArmSettings,
    BreakerSettings,
    build_arm,
    build_router,
    check_canaries,
    parse_canary,
)
from transformer.seed_api import HEALTH_SECONDS, seed_router
from transformer.shadow import DEFAULT_MAX_IN_FLIGHT as SHADOW_MAX_IN_FLIGHT
from transformer.shadow import LINGER_SECONDS as SHADOW_LINGER_SECONDS
from transformer.shadow import Shadow

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
        "--shadow",
        default=None,
        metavar="NAME=PERCENT,HOST[,REST_HOST]",
        help="copy PERCENT %% of the requests to the shadow predictor at HOST after the client has its "
        "answer; its predictions are logged under the endpoint 'shadow' with the request's id, never "
        "answered to a client (default: no shadow)",
    )
    parser.add_argument(
        "--shadow_max_in_flight",
        type=int,
        default=SHADOW_MAX_IN_FLIGHT,
        help="copies in flight to the shadow at most; more are dropped and counted (default: %(default)s)",
    )
    parser.add_argument(
        "--sticky_header",
        default=os.environ.get("STICKY_HEADER"),
        help="assign each request to the stable predictor or a canary by a stable hash of this header's "
        "value (e.g. x-user-id: one user always meets the same model; an A/B test), at random when absent "
        "(default: every request at random; env STICKY_HEADER)",
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
        action="append",
        default=[],
        help="send a request and a response CloudEvent for every inference here (the drift detector; "
        "env LOGGER_URL; default: off); several (repeated or comma-separated): one per detector replica, "
        "each inference to the one its id hashes to",
    )
    parser.add_argument(
        "--logger_queue",
        type=int,
        default=LOGGER_MAX_QUEUE,
        help="inferences waiting to be logged, per URL; beyond it whole inferences are dropped at random "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--logger_batch_events",
        type=int,
        default=LOGGER_BATCH_EVENTS,
        help="events per batch POST at most (2: each inference alone, for a proxy hashing on x-request-id; "
        "default %(default)s)",
    )
    parser.add_argument(
        "--logger_flush_ms",
        type=float,
        default=LOGGER_FLUSH_SECONDS * 1000,
        help="longest an inference waits before its batch is sent, milliseconds (default %(default)s)",
    )
    add_edge_arguments(parser)
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
    urls = args.logger_url or [os.environ.get(LOGGER_URL_ENV) or ""]
    args.logger_url = [url.strip() for value in urls for url in value.split(",") if url.strip()]
    if args.logger_queue < 1 or args.logger_batch_events < 2 or not args.logger_flush_ms > 0:
        parser.error("--logger_queue must be at least 1, --logger_batch_events 2, --logger_flush_ms above 0")
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
    if args.shadow is not None:
        try:
            args.shadow = parse_canary(args.shadow)
        except ValueError as error:
            parser.error(f"--shadow {args.shadow!r}: {error}")
    if args.shadow_max_in_flight < 1:
        parser.error(f"--shadow_max_in_flight must be at least 1, got {args.shadow_max_in_flight}")
    if args.max_in_flight_per_client is None:  # one client may hold half the places, not all of them
        args.max_in_flight_per_client = max(1, args.max_in_flight // 2)
    args.edge = edge_settings(args, parser)
    return args


def shadow(
    args: argparse.Namespace, settings: ArmSettings, request_logger: RequestLogger | None
) -> Shadow | None:
    """The shadow predictor that ``--shadow`` names, or ``None``."""
    if args.shadow is None:
        return None
    arm = build_arm(args.shadow, settings, linger=SHADOW_LINGER_SECONDS)
    spec = args.shadow
    log.info("copying %d%% of requests to the shadow %s at %s", spec.percent, spec.name, spec.host)
    return Shadow(
        arm,
        args.shadow.percent,
        max_rows=args.max_batch_rows,
        request_logger=request_logger,
        max_in_flight=args.shadow_max_in_flight,
    )


def main(argv: list[str] | None = None) -> None:
    """Start the transformer server."""
    args = parse_args(argv)
    configure_server_logging(args.log_level, latency_logging=args.enable_latency_logging)
    if args.edge.authenticator is not None and args.enable_grpc:
        # KServe's gRPC server takes no interceptor of ours: it could not check credentials, so it stays shut.
        log.warning("--auth: the gRPC port stays closed (credentials are checked over HTTP only)")
        args.enable_grpc = False
    # KServe reads --predictor_protocol; the contract (and KServe's docs for transformers) say --protocol.
    protocol = args.predictor_protocol if args.predictor_protocol != "v1" else args.protocol
    settings = ArmSettings(
        model_name=args.model_name,
        protocol=protocol,
        use_ssl=args.predictor_use_ssl,
        timeout=args.predictor_request_timeout_seconds,
        retries=args.predictor_request_retries,
        coalesce_rows=args.coalesce_rows,
        breaker=BreakerSettings(args.breaker_failures, args.breaker_reset_seconds),
    )
    router = build_router(
        args.predictor_host,
        args.predictor_rest_host,
        args.canary,
        settings,
        sticky_header=args.sticky_header,
    )
    request_logger = None
    if args.logger_url:
        request_logger = RequestLogger(
            args.logger_url,
            component="transformer",
            max_queue=args.logger_queue,
            batch_events=args.logger_batch_events,
            flush_seconds=args.logger_flush_ms / 1000,
            api_key=os.environ.get(LOGGER_KEY_ENV) or None,
        )
        log.info("sending inference events to %s", ", ".join(args.logger_url))
    model = HousingTransformer(
        args.model_name,
        router,
        max_batch_rows=args.max_batch_rows,
        request_logger=request_logger,
        max_in_flight=args.max_in_flight,
        explainer=ExplainerClient(args.explainer_host, args.model_name, use_ssl=args.predictor_use_ssl)
        if args.explainer_host
        else None,
        shadow=shadow(args, settings, request_logger),
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

    # Added before the server's own middleware, so that its request metrics count the refusals too; the
    # server puts its edge outside: a request refused there, or still sending its body, takes no place.
    app.add_middleware(AdmissionMiddleware, admission=model.admission)
    server = HousingModelServer(
        "transformer",
        edge=args.edge,
        upstream=functools.partial(router.stable.unserved, HEALTH_SECONDS),  # /health's question too
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        workers=args.workers,
        enable_grpc=args.enable_grpc,
        enable_latency_logging=args.enable_latency_logging,
        grace_period=args.grace_period,
        reuse_port=args.reuse_port,
        warm=router.warm,
        # Once no request is served any more: the inference log's last batch goes to the detector.
        flushes=[("the inference log", request_logger.close)] if request_logger is not None else [],
        # KServe keeps this in its context; the calls themselves go through the router's own clients.
        predictor_config=PredictorConfig(
            predictor_host=args.predictor_host,
            predictor_protocol=protocol,
            predictor_use_ssl=args.predictor_use_ssl,
            predictor_request_timeout_seconds=args.predictor_request_timeout_seconds,
            predictor_request_retries=args.predictor_request_retries,
        ),
    )
    app.include_router(seed_router(server.dataplane, model))  # the original system's API, beside V1/V2
    server.start_unready([model])


if __name__ == "__main__":
    main()
