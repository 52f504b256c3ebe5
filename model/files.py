"""Writing a file so that a reader sees the old content or the new, never half (artifacts, detector state)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to a temporary file next to ``path``, then rename it over ``path``.

    A rename within one directory is atomic, so a crash, or a reader at the same moment, never sees a
    partial file. The directory must exist.
    """
    path = Path(path)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as handle:
        handle.write(text)
    os.replace(handle.name, path)
