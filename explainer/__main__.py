"""``python -m explainer``: the InferenceService's explainer, TreeSHAP for ``:explain`` (REST --http_port).

It loads and verifies the same artifact as the predictor (give it the same ``--storage_uri`` and
``--expected_sha256``), and starts unready until it has: an explanation is never of another model. It serves
REST only (``:explain``; gRPC off unless ``--enable_grpc true``), on ``--bind_address`` (127.0.0.1 unless
told otherwise), behind the edge of :mod:`serving.edge`.
"""

from __future__ import annotations

import argparse

from explainer.model import MAX_BATCH_ROWS, HousingExplainer
from serving.edge import add_edge_arguments, edge_settings
from serving.loading import add_artifact_args, serve
from serving.server import configure_server_logging, parse_server_args, server_parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """KServe's ModelServer flags plus where the model is and which sha256 it must have."""
    parser = server_parser("python -m explainer", __doc__.splitlines()[0])
    add_artifact_args(parser)
    parser.add_argument(
        "--max_batch_rows",
        type=int,
        default=MAX_BATCH_ROWS,
        help="most houses one :explain may hold; more get 400 before any is explained (default %(default)s)",
    )
    add_edge_arguments(parser)
    parser.set_defaults(enable_grpc=False)  # :explain is REST only: no port nobody uses
    args = parse_server_args(parser, argv)
    args.edge = edge_settings(args, parser)
    if not args.storage_uri:
        parser.error("--storage_uri (or STORAGE_URI) is required")
    if args.max_batch_rows < 1:
        parser.error(f"--max_batch_rows must be at least 1, got {args.max_batch_rows}")
    return args


def main(argv: list[str] | None = None) -> None:
    """Start the explainer server."""
    args = parse_args(argv)
    configure_server_logging(args.log_level, latency_logging=args.enable_latency_logging)
    explainer = HousingExplainer(
        args.model_name, args.storage_uri, args.expected_sha256, max_batch_rows=args.max_batch_rows
    )
    serve("explainer", explainer, args)


if __name__ == "__main__":
    main()
