"""``python -m predictor``: the housing model on KServe's ModelServer (REST --http_port, gRPC --grpc_port).

The server starts at once and answers health, with readiness false, while the artifact is fetched in the
background: storage that cannot be reached is retried with bounded exponential back-off (the log says why
it waits), and an artifact that fails its checksum is refused: the server never serves an unverified model.
"""

from __future__ import annotations

import argparse
import os

from model.artifact import MODEL_FORMATS, ONNX
from predictor.model import HousingModel
from serving.loading import add_artifact_args, serve
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
    args = parse_server_args(parser, argv)
    if not args.storage_uri:
        parser.error("--storage_uri (or STORAGE_URI) is required")
    if args.intra_op_threads < 1:
        parser.error(f"--intra_op_threads must be at least 1, got {args.intra_op_threads}")
    return args


def main(argv: list[str] | None = None) -> None:
    """Start the predictor server."""
    args = parse_args(argv)
    configure_server_logging(args.log_level, latency_logging=args.enable_latency_logging)
    model = HousingModel(
        args.model_name,
        args.storage_uri,
        args.expected_sha256,
        model_format=args.model_format,
        intra_op_threads=args.intra_op_threads,
    )
    serve("predictor", model, args)


if __name__ == "__main__":
    main()
