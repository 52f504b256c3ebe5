"""Errors a server answers with, and their HTTP status as KServe's REST server maps them.

KServe registers one exception handler per exception class on its FastAPI app
(``kserve.protocol.rest.server.RESTServer._add_exception_handlers``); :func:`http_status` reads that table, so
the status a gRPC request is counted under is the one the same failure gets over REST. The only errors
added here are the transformer's for a failing predictor (:class:`UpstreamError`: 502, 503 or 504), which
carry their own gRPC status (``grpc_interceptor``'s ``GrpcException``, which KServe's gRPC server honours)
and HTTP status.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from fastapi import Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from grpc import StatusCode
from grpc_interceptor.exceptions import GrpcException
from kserve.errors import InvalidInput, ModelNotFound, ModelNotReady
from starlette.exceptions import HTTPException

from serving.inputs import NESTING_RULE


class UpstreamError(GrpcException):
    """The transformer's predictor failed; carries both the gRPC status and the HTTP status to answer with.

    Args:
        details: The message.
        retry_after: Seconds after which a retry may succeed: a ``Retry-After`` header on the REST answer.
    """

    status_code = StatusCode.INTERNAL
    http_status = 502

    def __init__(self, details: str, retry_after: int | None = None):
        super().__init__(details)
        self.retry_after = retry_after

    def __str__(self) -> str:
        return self.details


class PredictorUnavailableError(UpstreamError):
    """The predictor cannot be reached or is not ready."""

    status_code = StatusCode.UNAVAILABLE
    http_status = 503


class PredictorTimeoutError(UpstreamError):
    """The predictor did not answer within the configured timeout."""

    status_code = StatusCode.DEADLINE_EXCEEDED
    http_status = 504


def http_status(error: BaseException) -> int:
    """The HTTP status KServe's REST server answers for ``error`` (used to label gRPC requests).

    The most specific class of ``error`` (its method resolution order) that KServe has a handler for decides;
    an :class:`UpstreamError` says its own.
    """
    if isinstance(error, UpstreamError):
        return error.http_status
    table = _kserve_statuses()
    return next((table[cls] for cls in type(error).__mro__ if cls in table), 500)


@functools.cache
def _kserve_statuses() -> dict[type, int]:
    """Exception class -> HTTP status, from the handlers KServe's REST server registers on its app."""
    from kserve.protocol.rest.server import RESTServer

    class Recorder:
        def __init__(self) -> None:
            self.handlers: dict[type, Any] = {}

        def add_exception_handler(self, cls: type, handler: Any) -> None:
            self.handlers[cls] = handler

    recorder = Recorder()
    RESTServer._add_exception_handlers(None, recorder)  # reads no attribute of self
    kserve_log = logging.getLogger("kserve")
    statuses, disabled = {}, kserve_log.disabled
    kserve_log.disabled = True  # each handler logs the exception it answers: not this stand-in
    try:
        for cls, handler in recorder.handlers.items():
            answer = handler(None, Exception("status probe"))
            try:  # the handlers are coroutines that return at once, without awaiting
                answer.send(None)
            except StopIteration as done:
                statuses[cls] = int(done.value.status_code)
    finally:
        kserve_log.disabled = disabled
    return statuses


class ClientErrorLogFilter(logging.Filter):
    """Turns KServe's stack traces for client mistakes and expected upstream faults into one warning line.

    Args:
        access_lines: Keep KServe's line per gRPC call (``grpc method: ...``), an access log.
    """

    def __init__(self, access_lines: bool = False):
        super().__init__()
        self.access_lines = access_lines

    def filter(self, record: logging.LogRecord) -> bool:
        """Drop or rewrite one record (always kept, except gRPC access lines when they are off)."""
        if not self.access_lines and str(record.msg).startswith("grpc method:"):
            return False
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, InvalidInput | ModelNotReady | ModelNotFound | UpstreamError):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg, record.args, record.exc_info, record.exc_text = (
                f"{http_status(error)} {type(error).__name__}: {error}",
                None,
                None,
                None,
            )
        return True


async def upstream_error_handler(_: Request, error: Exception) -> JSONResponse:
    """The REST answer for an :class:`UpstreamError`: its HTTP status and message (and ``Retry-After``)."""
    if not isinstance(error, UpstreamError):
        return JSONResponse(status_code=502, content={"error": str(error)})
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after is not None else None
    return JSONResponse(status_code=error.http_status, content={"error": str(error)}, headers=headers)


async def request_validation_handler(_: Request, error: Exception) -> JSONResponse:
    """A 400 naming what is wrong with a V2 body FastAPI could not read (KServe's default is a 422)."""
    problems = error.errors() if isinstance(error, RequestValidationError) else []
    return JSONResponse(
        status_code=400, content={"error": f"invalid V2 inference request: {describe(problems)}"}
    )


async def http_error_handler(request: Request, error: Exception) -> Response:
    """FastAPI's answer to an ``HTTPException``, but a body too deeply nested for its parser names the rule.

    FastAPI parses a V2 JSON body with the standard library, which recurses; it turns the ``RecursionError``
    into a 400 "There was an error parsing the body" (the error is its cause): answered here with
    :data:`serving.inputs.NESTING_RULE`, as every other parser's refusal is.
    """
    if not isinstance(error, HTTPException):  # registered for HTTPException alone
        raise error
    if isinstance(error.__cause__, RecursionError):
        return JSONResponse(status_code=400, content={"error": NESTING_RULE})
    return await http_exception_handler(request, error)


def describe(problems: Any) -> str:
    """Pydantic's validation problems (at most five) as one line: where, and what is wrong."""
    described = []
    for problem in list(problems)[:5]:
        if problem.get("type") == "json_invalid":
            position = problem.get("loc", ("body", "?"))[-1]
            described.append(
                f"body is not valid JSON (at character {position}): {problem.get('ctx', {}).get('error')}"
            )
        else:
            where = ".".join(str(part) for part in problem.get("loc", ()) if part != "body") or "body"
            described.append(f"{where}: {problem.get('msg')}")
    return "; ".join(described)
