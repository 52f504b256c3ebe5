"""``python -m detector``: the drift detector service (receives KServe inference-logger CloudEvents).

Example::

    python -m detector --storage_uri ./artifacts/latest --http_port 8080 --state_dir /var/lib/detector
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from detector.events import MAX_NAME_CHARS
from detector.retrain import ACTIONS, DEFAULT_COMMAND
from detector.settings import Config, Settings
from detector.stats import BACKEND_HELP, BACKENDS, CORRECTIONS, backend_problem
from serving import policy
from serving.edge import add_edge_arguments, edge_settings, install_edge, uvicorn_options
from serving.lifecycle import add_lifecycle_arguments


def build_parser() -> argparse.ArgumentParser:
    """The command-line arguments (KServe-style ``--snake_case`` names)."""
    parser = argparse.ArgumentParser(
        prog="python -m detector",
        description="Drift detector: joins KServe inference-logger CloudEvents, tests windows against the "
        "model's reference, tracks live accuracy from /feedback and triggers retraining.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--storage_uri",
        default=os.environ.get("STORAGE_URI"),
        help="the predictor's model artifact (Blob URL or local dir) holding the reference [env STORAGE_URI]",
    )
    parser.add_argument("--http_port", type=int, default=8080, help="HTTP port")
    parser.add_argument(  # the edge's --bind_address under its earlier name
        "--host", dest="bind_address", default=argparse.SUPPRESS, help="the same as --bind_address"
    )
    parser.add_argument(
        "--state_dir",
        type=Path,
        default=Path(os.environ.get("STATE_DIR", "detector-state")),
        help="directory (a volume) for the saved state [env STATE_DIR]",
    )
    windows = parser.add_argument_group("windows and tests")
    windows.add_argument(
        "--window_size", type=int, default=Settings.window_size, help="rows per tested window"
    )
    windows.add_argument(
        "--threshold", type=float, default=Config.threshold, help="drift score threshold, in [0, 1]"
    )
    windows.add_argument(
        "--p_value", type=float, default=Config.p_value, help="significance level of the tests"
    )
    windows.add_argument(
        "--correction", choices=CORRECTIONS, default=Config.correction, help="multiple-testing correction"
    )
    windows.add_argument(
        "--bins", type=int, default=Config.bins, help="reference-quantile bins for PSI and JS"
    )
    windows.add_argument(
        "--stats_backend",
        choices=BACKENDS,
        default=os.environ.get("STATS_BACKEND", Config.stats_backend),
        help=BACKEND_HELP,
    )
    windows.add_argument(
        "--pending_ttl",
        type=float,
        default=Settings.pending_ttl,
        help="seconds a request waits for its response (and vice versa)",
    )
    windows.add_argument(
        "--max_pending_bytes",
        type=int,
        default=Settings.max_pending_bytes,
        help="memory of the events waiting for their partner; the oldest beyond are evicted (counted)",
    )
    windows.add_argument(
        "--max_pending_bytes_per_endpoint",
        type=int,
        default=Settings.max_pending_bytes_per_endpoint,
        help="... of them for one endpoint (one endpoint's flood pushes out only its own)",
    )
    windows.add_argument(
        "--endpoints",
        type=_names,
        default=",".join(Settings.endpoints),
        help="the ce-endpoint values taken, comma-separated; events of another endpoint get 400",
    )
    windows.add_argument(
        "--max_model_versions",
        type=int,
        default=Settings.max_model_versions,
        help="model versions tracked at once; an inference of another gets 400 until one is idle",
    )
    windows.add_argument(
        "--model_version_idle",
        type=float,
        default=Settings.model_version_idle,
        help="seconds without inferences after which a model version (never the reference's) may be "
        "forgotten, with its windows and labels, to make room for a new one",
    )
    labels = parser.add_argument_group("ground truth")
    labels.add_argument(
        "--label_window",
        type=int,
        default=Settings.label_window,
        help="labels in the rolling MAE/RMSE/R² window",
    )
    labels.add_argument(
        "--coverage_window",
        type=int,
        default=Settings.coverage_window,
        help="labels over which the interval coverage (housing_interval_coverage) is computed",
    )
    labels.add_argument(
        "--max_outcomes",
        type=int,
        default=Settings.max_outcomes,
        help="labelled predictions kept per endpoint and model version for experiments (GET /outcomes)",
    )
    labels.add_argument(
        "--max_recent_bytes",
        type=int,
        default=Settings.max_recent_bytes,
        help="memory of the predictions waiting for their label; a label for one pushed out gets 404 and is "
        "not archived",
    )
    labels.add_argument(
        "--min_labels",
        type=int,
        default=Settings.min_labels,
        help="labels needed before R² can trigger a retrain",
    )
    labels.add_argument(
        "--r2_threshold",
        type=float,
        default=Settings.r2_threshold,
        help="retrain when live R² falls below this",
    )
    labels.add_argument(
        "--estimated_mae_threshold",
        type=float,
        default=Settings.estimated_mae_threshold,
        help="retrain when a window's MAE estimated without labels (USD 1000s) exceeds this while fewer than "
        "--min_labels labels are in; 0 = off (3.0 is the training quality gate's MAE)",
    )
    retrain = parser.add_argument_group("retraining")
    retrain.add_argument(
        "--retrain_action", choices=ACTIONS, default="none", help="what a drift episode fires"
    )
    retrain.add_argument("--retrain_command", default=DEFAULT_COMMAND, help="command of the 'command' action")
    retrain.add_argument("--retrain_webhook", help="URL of the 'webhook' action")
    retrain.add_argument("--job_template", type=Path, help="batch/v1 Job YAML of the 'k8s-job' action")
    retrain.add_argument(
        "--k8s_namespace", help="namespace of the Job (default: the template's, else the pod's)"
    )
    retrain.add_argument(
        "--kubeconfig", help="kubeconfig outside a cluster (default: KUBECONFIG or ~/.kube/config)"
    )
    retrain.add_argument(
        "--cooldown", type=float, default=Config.cooldown, help="seconds between two retrains at least"
    )
    retrain.add_argument(
        "--retrain_min_labels",
        type=int,
        default=Config.retrain_min_labels,
        help="labels of the drifting endpoint/version to await after the episode begins before the action "
        "fires, so that a retrain on the archive sees the shifted population's ground truth (0: at once)",
    )
    parser.add_argument(
        "--flush_interval", type=float, default=Config.flush_interval, help="seconds between state saves"
    )
    archive = parser.add_argument_group("traffic archive (docs/detector.md, 'The traffic archive')")
    archive.add_argument(
        "--archive_uri",
        default=os.environ.get("ARCHIVE_URI"),
        help="archive every joined row and label here: a Blob URL (.../CONTAINER/PREFIX) or a local "
        "directory; unset: no archive [env ARCHIVE_URI]",
    )
    archive.add_argument(
        "--archive_flush_rows",
        type=int,
        default=Config.archive_flush_rows,
        help="upload a batch once it holds this many rows",
    )
    archive.add_argument(
        "--archive_flush_seconds",
        type=float,
        default=Config.archive_flush_seconds,
        help="... or once its first row is this many seconds old",
    )
    archive.add_argument(
        "--archive_max_wal_bytes",
        type=int,
        default=Config.archive_max_wal_bytes,
        help="write-ahead log kept at most while uploads fail; the oldest rows beyond are dropped (counted)",
    )
    limits = parser.add_argument_group("input rows")
    limits.add_argument(
        "--max_rows",
        type=int,
        default=Config.max_rows,
        help="most rows (or predictions) in one event, the transformer's --max_batch_rows; more get 400",
    )
    parser.add_argument("--log_level", default="INFO", help="logging level")
    add_edge_arguments(parser)
    add_lifecycle_arguments(parser, reuse_port=False)  # one detector per state directory: no sharing
    return parser


def _names(text: str) -> tuple[str, ...]:
    """A comma-separated list of names (``--endpoints default,canary``), each at most 128 characters."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names or any(len(name) > MAX_NAME_CHARS for name in names):
        raise argparse.ArgumentTypeError(
            f"must be names of 1 to {MAX_NAME_CHARS} characters, comma-separated"
        )
    return names


def retrain_action(args: argparse.Namespace) -> Callable[[dict[str, Any]], None] | None:
    """The action ``--retrain_action`` names, checked now so that a bad setting fails at start-up."""
    from detector import retrain

    if args.retrain_action == "command":
        return retrain.command_action(args.retrain_command)
    if args.retrain_action == "webhook":
        if not args.retrain_webhook:
            raise SystemExit("--retrain_action webhook needs --retrain_webhook URL")
        return retrain.webhook_action(args.retrain_webhook)
    if args.retrain_action == "k8s-job":
        if not args.job_template:
            raise SystemExit("--retrain_action k8s-job needs --job_template FILE")
        return retrain.k8s_job_action(args.job_template, args.k8s_namespace, args.kubeconfig)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the detector until it is stopped."""
    import uvicorn

    from detector.app import Detector, create_app
    from serving.lifecycle import DrainingServer, DrainMiddleware, Shutdown
    from serving.logs import configure_logging

    parser = build_parser()
    args = parser.parse_args(argv)
    edge = edge_settings(args, parser)
    if not args.storage_uri:
        raise SystemExit("--storage_uri (or STORAGE_URI) is required: the artifact holding the reference")
    if args.archive_flush_rows < 1 or args.archive_flush_seconds <= 0 or args.archive_max_wal_bytes < 1:
        raise SystemExit("--archive_flush_rows, --archive_flush_seconds, --archive_max_wal_bytes: must be >0")
    problem = backend_problem(args.stats_backend)  # STATS_BACKEND is not checked against the choices
    if problem:
        raise SystemExit(problem)
    bounds = (args.max_pending_bytes, args.max_pending_bytes_per_endpoint, args.max_recent_bytes)
    if min(bounds) < 1 or args.max_model_versions < 1 or args.model_version_idle < 0:
        raise SystemExit(
            "--max_pending_bytes[_per_endpoint], --max_recent_bytes, --max_model_versions: must be >0; "
            "--model_version_idle: must be >=0"
        )
    configure_logging(args.log_level)
    settings = Settings(
        window_size=args.window_size,
        pending_ttl=args.pending_ttl,
        max_pending_bytes=args.max_pending_bytes,
        max_pending_bytes_per_endpoint=args.max_pending_bytes_per_endpoint,
        max_recent_bytes=args.max_recent_bytes,
        endpoints=args.endpoints,
        max_model_versions=args.max_model_versions,
        model_version_idle=args.model_version_idle,
        label_window=args.label_window,
        coverage_window=args.coverage_window,
        max_outcomes=args.max_outcomes,
        min_labels=args.min_labels,
        r2_threshold=args.r2_threshold,
        estimated_mae_threshold=args.estimated_mae_threshold,
    )
    config = Config(
        storage_uri=args.storage_uri,
        state_dir=args.state_dir,
        settings=settings,
        threshold=args.threshold,
        p_value=args.p_value,
        correction=args.correction,
        bins=args.bins,
        stats_backend=args.stats_backend,
        cooldown=args.cooldown,
        retrain_min_labels=args.retrain_min_labels,
        flush_interval=args.flush_interval,
        max_body_bytes=edge.body_bytes(policy.route("detector", "POST", "/")),
        max_rows=args.max_rows,
        archive_uri=args.archive_uri or None,
        archive_flush_rows=args.archive_flush_rows,
        archive_flush_seconds=args.archive_flush_seconds,
        archive_max_wal_bytes=args.archive_max_wal_bytes,
    )
    detector = Detector(config, args.retrain_action, retrain_action(args))
    shutdown = Shutdown("detector", args.grace_period)
    app = create_app(detector, shutdown)
    install_edge(app, edge, "detector")
    app.add_middleware(DrainMiddleware, shutdown=shutdown)  # outermost: every request counts
    server = DrainingServer(
        uvicorn.Config(
            app,
            port=args.http_port,
            log_level="warning",
            # Per-event overhead matters at thousands of events/s: no access log, no Server/Date headers on
            # the 202s nobody reads.
            access_log=False,
            server_header=False,
            date_header=False,
            **uvicorn_options(edge),  # the address, and whose X-Forwarded-For counts (nobody's by default)
        ),
        shutdown,
    )
    asyncio.run(serve(server, shutdown))
    return 0


async def serve(server: Any, shutdown: Any) -> None:
    """Serve until a signal, then drain and stop (serving/lifecycle.py; the flush is the app's lifespan)."""
    shutdown.install()
    await server.serve()
    shutdown.stopped()


if __name__ == "__main__":
    sys.exit(main())
