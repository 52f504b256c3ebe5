"""Where a model came from: the code's git commit and the versions of the libraries its pickle needs.

Both the artifact (``model.json``, see :mod:`model.artifact`) and the MLflow run (:mod:`model.tracking`)
record these facts, so they are computed here once. It uses only the standard library: importing it is cheap.
"""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata as importlib_metadata
from pathlib import Path

LIBRARIES = ("scikit-learn", "numpy", "scipy", "joblib", "skl2onnx", "onnx", "onnxruntime")
"""The libraries the model's two forms depend on (the pickle, and the compiled ONNX form: what converted it
and what ran it at training); :func:`library_versions` records each one installed."""
PINNED_REQUIREMENTS = ("scikit-learn", "numpy", "scipy")
"""The libraries the MLflow model pins (see :func:`pip_requirements`)."""


def git_commit() -> str | None:
    """The commit of the checkout this code runs from, or ``None`` outside a git checkout."""
    try:
        completed = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return completed.stdout.strip() or None


def library_versions() -> dict[str, str]:
    """Versions of Python and the libraries the pickle depends on (the predictor must match them)."""
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            continue
    return versions


def pip_requirements(names: tuple[str, ...] = PINNED_REQUIREMENTS) -> list[str]:
    """``name==version`` of each installed library of ``names`` (default: the pickle's), for MLflow."""
    libraries = library_versions()
    return [f"{name}=={libraries[name]}" for name in names if name in libraries]
