"""One log shape for every process: logfmt lines on standard error (the ``housing`` command and the servers).

Standard library only, so the command line and the detector use it without KServe;
:func:`serving.server.configure_server_logging` adds what the KServe servers need on top.
"""

from __future__ import annotations

import logging
import sys

CHATTY_LOGGERS = ("azure", "httpx")
"""Libraries that log a line per HTTP call at INFO: the Azure SDK dumps every request's and response's headers
(``azure.core.pipeline.policies.http_logging_policy``: about 250 of the 290 lines ``housing up --once
--azurite`` printed), httpx one line per request. They log only warnings unless asked for (``verbose``,
DEBUG)."""


def configure_logging(level: str = "INFO", *, verbose: bool = False) -> None:
    """Structured (logfmt-style) logs on standard error, the same shape in every component.

    Args:
        level: The logging level (``INFO``, ``DEBUG``, ...).
        verbose: Also the :data:`CHATTY_LOGGERS`' per-request lines (as ``level`` ``DEBUG`` does).
    """
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format='time=%(asctime)s level=%(levelname)s logger=%(name)s msg="%(message)s"',
        force=True,
    )
    quiet = not verbose and logging.getLogger().getEffectiveLevel() > logging.DEBUG
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING if quiet else logging.NOTSET)


def silence_fastapi_deprecation() -> None:
    """Ignore the warning FastAPI raises for each ORJSONResponse KServe 0.20 builds (one per request)."""
    import warnings

    from fastapi.exceptions import FastAPIDeprecationWarning

    warnings.filterwarnings(
        "ignore", message="ORJSONResponse is deprecated", category=FastAPIDeprecationWarning
    )
