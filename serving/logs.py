"""One log shape for every process: logfmt lines on standard error (the ``housing`` command and the servers).

Standard library only, so the command line and the detector use it without KServe;
:func:`serving.server.configure_server_logging` adds what the KServe servers need on top.
"""

from __future__ import annotations

import logging
import sys


def configure_logging(level: str = "INFO") -> None:
    """Structured (logfmt-style) logs on standard error, the same shape in every component."""
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format='time=%(asctime)s level=%(levelname)s logger=%(name)s msg="%(message)s"',
        force=True,
    )


def silence_fastapi_deprecation() -> None:
    """Ignore the warning FastAPI raises for each ORJSONResponse KServe 0.20 builds (one per request)."""
    import warnings

    from fastapi.exceptions import FastAPIDeprecationWarning

    warnings.filterwarnings(
        "ignore", message="ORJSONResponse is deprecated", category=FastAPIDeprecationWarning
    )
