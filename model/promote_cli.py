"""``housing promote``: move a Model Registry alias (``champion`` by default) to a registered version."""

from __future__ import annotations

import argparse
import sys

HELP = "Point a Model Registry alias (default: champion) at a registered version of housing-price."


def set_alias(version: str, alias: str, name: str | None = None) -> str | None:
    """Point ``alias`` at ``version`` of the registered model.

    Args:
        version: An existing version number, e.g. ``"3"``.
        alias: The alias to move, e.g. ``champion``.
        name: The registered model; defaults to ``housing-price``.

    Returns:
        The version the alias pointed at before, or ``None`` if it was new.

    Raises:
        mlflow.exceptions.MlflowException: The model or version does not exist.
    """
    from mlflow.exceptions import MlflowException

    from model.tracking import REGISTERED_MODEL, use_tracking

    name = name or REGISTERED_MODEL
    client = use_tracking()
    client.get_model_version(name, version)
    try:
        previous: str | None = str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        previous = None
    client.set_registered_model_alias(name, alias, version)
    return previous


def version_for(alias: str, name: str | None = None) -> str:
    """The version an alias points at (e.g. which version is ``champion``)."""
    from model.tracking import REGISTERED_MODEL, use_tracking

    return str(use_tracking().get_model_version_by_alias(name or REGISTERED_MODEL, alias).version)


def configure(parser: argparse.ArgumentParser) -> None:
    """Declare the arguments of ``housing promote``."""
    parser.add_argument("version", help="registered version to promote, e.g. 3")
    parser.add_argument("--alias", default="champion", help="alias to move (default: %(default)s)")
    parser.add_argument(
        "--model", default="housing-price", help="registered model name (default: %(default)s)"
    )


def run(args: argparse.Namespace) -> int:
    """Move the alias and print what changed.

    Returns:
        0, or 1 when the version does not exist.
    """
    from mlflow.exceptions import MlflowException

    try:
        previous = set_alias(args.version, args.alias, args.model)
    except MlflowException as error:
        print(f"error: cannot promote {args.model} version {args.version}: {error.message}", file=sys.stderr)
        return 1
    was = f"was version {previous}" if previous else "new alias"
    print(f"{args.model}@{args.alias} -> version {args.version} ({was})")
    return 0
