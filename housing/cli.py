"""The ``housing`` command: each sub-command lives in the module that does the work.

A command module exposes ``HELP`` (one line), ``configure(parser)`` to declare its arguments and
``run(args) -> int`` (the exit code). Modules keep heavy imports inside ``run`` so that ``housing --help`` is
fast and each container image needs only its own component's dependencies.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

from serving.logs import configure_logging

COMMANDS: dict[str, str] = {
    "train": "model.train_cli",
    "evaluate": "model.evaluate_cli",
    "publish": "model.publish",
    "promote": "model.promote_cli",
    "rollout": "housing.rollout",
    "experiment": "housing.experiment",
    "up": "housing.stack",
    "simulate": "housing.simulate",
    "drift": "detector.drift_cli",
}
"""Sub-command name -> module implementing it."""
VERBOSE_HELP = "also log the libraries' per-request lines (Azure SDK HTTP headers, httpx), as DEBUG does"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command."""
    parser = argparse.ArgumentParser(
        prog="housing",
        description="Boston Housing price prediction on KServe: train, publish, serve, watch drift, roll out",
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (default: %(default)s)")
    parser.add_argument("-v", "--verbose", action="store_true", help=VERBOSE_HELP)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        sub = commands.add_parser(name, help=module.HELP, description=module.HELP)
        module.configure(sub)
        # Also after the sub-command (`housing up --verbose`); SUPPRESS keeps the top level's value otherwise.
        sub.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP)
        sub.set_defaults(run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``housing`` command.

    Args:
        argv: Arguments without the program name; defaults to ``sys.argv[1:]``.

    Returns:
        The exit code.
    """
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level, verbose=args.verbose)
    return int(args.run(args) or 0)
