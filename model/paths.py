"""Where the project keeps what it makes locally: artifacts and the MLflow store, under ``var/``.

``var/`` is the project root's ``var`` folder in a checkout (git-ignored), otherwise ``./var``; set
``HOUSING_VAR_DIR`` to put it elsewhere. Trained artifacts go to ``var/artifacts/housing-price/<version>/``
and ``var/artifacts/housing-price/latest`` is a symbolic link to the newest one (what ``housing up`` serves).
"""

from __future__ import annotations

import os
from pathlib import Path

VAR_DIR_ENV = "HOUSING_VAR_DIR"
MODEL_NAME = "housing-price"
LATEST = "latest"


def var_dir() -> Path:
    """The folder for local state: ``$HOUSING_VAR_DIR``, the checkout's ``var/``, or ``./var``."""
    configured = os.environ.get(VAR_DIR_ENV)
    if configured:
        return Path(configured)
    root = Path(__file__).resolve().parents[1]
    return root / "var" if (root / "pyproject.toml").is_file() else Path.cwd() / "var"


def artifacts_root() -> Path:
    """The folder holding one artifact directory per trained version."""
    return var_dir() / "artifacts" / MODEL_NAME


def default_artifact_dir(version: str) -> Path:
    """Where ``housing train`` writes the artifact of ``version`` unless ``--output`` says otherwise."""
    return artifacts_root() / version


def latest_artifact() -> Path | None:
    """The newest artifact ``housing train`` wrote to the default location, or ``None`` if there is none."""
    link = artifacts_root() / LATEST
    return link.resolve() if link.exists() else None


def point_latest_at(directory: Path) -> None:
    """Make ``latest`` point at ``directory`` (replaced atomically, so a reader never sees it missing)."""
    root = artifacts_root()
    root.mkdir(parents=True, exist_ok=True)
    temporary = root / f".{LATEST}.tmp"
    temporary.unlink(missing_ok=True)
    target = os.path.relpath(directory.resolve(), root.resolve())
    temporary.symlink_to(target, target_is_directory=True)
    os.replace(temporary, root / LATEST)


def mlflow_dir() -> Path:
    """The default MLflow store: ``var/mlflow/mlflow.db`` and artifacts in ``var/mlflow/artifacts``."""
    return var_dir() / "mlflow"
