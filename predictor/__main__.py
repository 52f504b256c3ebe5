"""``python -m predictor``: the housing model on KServe's ModelServer (REST --http_port, gRPC --grpc_port).

The server starts at once and answers health, with readiness false, while the artifact is fetched in the
background: storage that cannot be reached is retried with bounded exponential back-off (the log says why
it waits), and an artifact that fails its checksum is refused: the server never serves an unverified model.

With ``--models_config`` (or ``--model NAME=URI@SHA256``) it serves several pinned models side by side, the
champion also as ``--model_name`` (``housing``); with ``--enable_repository_api`` too, they are loaded and
unloaded at run time through the V2 repository extension (:mod:`predictor.repository`, the ``admin`` role
with ``--auth``; docs/serving.md "Several models in one predictor"). Off, those routes answer 404.

Its listeners bind ``--bind_address`` (127.0.0.1 unless told otherwise); the edge's flags
(:mod:`serving.edge`) guard its admin routes: inference is the transformer's call, ``internal`` in
serving/policy.py (loopback locally, the transformer's service account on AKS).
"""

from __future__ import annotations

import argparse
import functools
import os
import threading

from model.artifact import MODEL_FORMATS, ONNX
from predictor.model import MAX_BATCH_ROWS, HousingModel
from predictor.repository import ArtifactRepository, ConfigError, ModelPin, ModelsConfig, read_models_config
from predictor.repository_api import ENABLE_FLAG, add_repository_routes
from serving.edge import add_edge_arguments, edge_settings
from serving.lifecycle import FLUSH_SECONDS
from serving.loading import add_artifact_args, load_with_backoff, serve
from serving.server import configure_server_logging, parse_server_args, server_parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """KServe's ModelServer flags plus where the model is, the sha256 it must have, the form to serve."""
    parser = server_parser("python -m predictor", __doc__.splitlines()[0])
    add_artifact_args(
        parser,
        sha256_help="the sha256 of the model file to serve: model.onnx's (model.json onnx_sha256) for the "
        "compiled form; model.joblib's (model.json sha256) serves scikit-learn. Any other file is refused "
        "(env EXPECTED_SHA256)",
    )
    parser.add_argument(
        "--model_format",
        choices=MODEL_FORMATS,
        default=os.environ.get("MODEL_FORMAT", ONNX),
        help="onnx: model.onnx under onnxruntime (default); sklearn: model.joblib under scikit-learn (needs "
        "the predictor-sklearn extra; also what artifacts without model.onnx get) (env MODEL_FORMAT)",
    )
    parser.add_argument(
        "--intra_op_threads",
        type=int,
        default=int(os.environ.get("INTRA_OP_THREADS", "1")),
        help="threads of one onnxruntime call (default 1: fastest for small batches on few cores; "
        "env INTRA_OP_THREADS)",
    )
    parser.add_argument(
        "--max_batch_rows",
        type=int,
        default=int(os.environ.get("MAX_BATCH_ROWS", MAX_BATCH_ROWS)),
        help="most rows one request may hold; more get 400 before any work (default %(default)s; env "
        "MAX_BATCH_ROWS)",
    )
    add_repository_args(parser)
    add_edge_arguments(parser)
    args = parse_server_args(parser, argv)
    args.edge = edge_settings(args, parser)
    args.enabled = frozenset({ENABLE_FLAG}) if args.enable_repository_api else frozenset()
    if args.enable_repository_api and not (args.models_config or args.model):
        parser.error(f"{ENABLE_FLAG} serves the pinned models of --models_config or --model: give them")
    if args.models_config or args.model:
        if args.expected_sha256 and not args.storage_uri:
            parser.error("--expected_sha256 pins --storage_uri's model; each other model has its own pin")
        try:
            args.models = read_models_config(
                args.models_config,
                args.model,
                args.champion,
                args.model_name,
                args.models_root,
                args.load,
                champion_by_storage_uri=bool(args.storage_uri),
            )
        except ConfigError as error:
            parser.error(str(error))
    elif args.champion or args.load:
        parser.error("--champion and --load name pinned models: give --models_config or --model")
    elif not args.storage_uri:
        parser.error("--storage_uri (or STORAGE_URI) is required")
    if args.intra_op_threads < 1:
        parser.error(f"--intra_op_threads must be at least 1, got {args.intra_op_threads}")
    if args.max_batch_rows < 1:
        parser.error(f"--max_batch_rows must be at least 1, got {args.max_batch_rows}")
    return args


def add_repository_args(parser: argparse.ArgumentParser) -> None:
    """The flags of several models in one predictor (each model pinned; the champion served as the alias)."""
    parser.add_argument(
        "--models_config",
        default=os.environ.get("MODELS_CONFIG") or None,
        help='JSON {"champion": NAME, "load": [NAME], "models": {NAME: {"storage_uri": URI, "sha256": '
        "HEX}}}: the models this predictor may load (POST /v2/repository/models/NAME/load), each pinned "
        "(env MODELS_CONFIG)",
    )
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME=URI@SHA256",
        help="one more pinned model (repeatable; over --models_config's entry of the same name)",
    )
    parser.add_argument(
        "--champion",
        default=os.environ.get("CHAMPION") or None,
        help="the pinned model loaded at start and served as --model_name too (over the config's; env "
        "CHAMPION); without one, --storage_uri's model is the champion, served as --model_name",
    )
    parser.add_argument(
        "--load",
        action="append",
        default=[],
        metavar="NAME",
        help="a pinned model loaded at start beside the champion (repeatable; readiness waits for it)",
    )
    parser.add_argument(
        ENABLE_FLAG,
        action="store_true",
        default=os.environ.get("ENABLE_REPOSITORY_API", "").lower() in ("1", "true", "yes"),
        help="serve the V2 repository API (POST /v2/repository/models/NAME/load|unload, "
        "/v2/repository/index) over the pinned models, with the admin role under --auth "
        "(env ENABLE_REPOSITORY_API=1; default: off, 404)",
    )
    parser.add_argument(
        "--models_root",
        default=os.environ.get("MODELS_ROOT") or None,
        help="where a model without storage_uri is, as NAME/ (KServe's model agent: /mnt/models; env "
        "MODELS_ROOT)",
    )


def main(argv: list[str] | None = None) -> None:
    """Start the predictor server."""
    args = parse_args(argv)
    configure_server_logging(args.log_level, latency_logging=args.enable_latency_logging)
    if args.models_config or args.model:
        serve_several(args)
        return
    serve("predictor", housing_model(args, args.model_name, args.storage_uri, args.expected_sha256), args)


def housing_model(args: argparse.Namespace, name: str, storage_uri: str, sha256: str | None) -> HousingModel:
    """The model of one artifact (not loaded yet), in the form and with the threads the flags say."""
    return HousingModel(
        name,
        storage_uri,
        sha256,
        model_format=args.model_format,
        intra_op_threads=args.intra_op_threads,
        max_batch_rows=args.max_batch_rows,
    )


def serve_several(args: argparse.Namespace) -> None:
    """Serve the pinned models; the champion and the ``--load`` ones load at start, the others on request.

    The champion is served as its own name and as the alias (``--model_name``); every model that loads at
    start does so in the background, and readiness waits for all of them.
    """
    from kserve.model_server import app

    config: ModelsConfig = args.models

    def build(pin: ModelPin) -> HousingModel:
        return housing_model(args, pin.name, pin.storage_uri, pin.sha256)

    repository = ArtifactRepository(config.pins, args.model_name, build, args.models_root)
    if config.champion:
        champion = repository.create(config.champion)
        args.storage_uri = config.pins[config.champion].storage_uri
    else:  # the single-model flags' model, served as the alias only
        champion = housing_model(args, args.model_name, args.storage_uri, args.expected_sha256)
    repository.register_unloaded(champion, champion=True)
    stop = threading.Event()
    for name in config.load:
        model = repository.create(name)
        repository.register_unloaded(model)
        threading.Thread(
            target=load_with_backoff, args=(model, stop, args.retry_max_seconds), daemon=True
        ).start()
    if args.enable_repository_api:
        add_repository_routes(app, repository)
    try:
        # A model swap still loading when the drain ends finishes before the process stops.
        flushes = [("model swaps", functools.partial(repository.settle, FLUSH_SECONDS - 1))]
        serve("predictor", champion, args, registered_models=repository, flushes=flushes)
    finally:
        stop.set()


if __name__ == "__main__":
    main()
