"""What the predictor and the transformer add to ``kserve.ModelServer``, in one place both import.

KServe's server already routes V1/V2 REST and gRPC, answers health, decodes payloads and times each step
(``request_*_seconds``). This module adds only what a production deployment of this model needs on top:

- readiness that means "can answer": the server is ready only when its models are, and a request never
  triggers a model load on the request path (KServe's default would load synchronously inside the request);
- the serving metrics of :mod:`serving.metrics` (REST is measured around the whole HTTP exchange; gRPC at the
  data plane, with the status mapped to its HTTP equivalent by :func:`serving.errors.http_status`);
- a 400 with a readable message for bodies that are not valid JSON (NaN/Infinity, which Python and JavaScript
  emit, are parsed so that validation can name the field) or nest too deeply, for request ids that cannot be
  carried in a header (:mod:`serving.inputs`), and 503/504 when the transformer's predictor is down or slow
  (:mod:`serving.errors`);
- liveness that fails when a model says it cannot recover without a restart (the transformer's request
  logger stopped), and readiness that fails when a model repository lacks the model it must serve;
- V2 model metadata with ``versions`` and model-level ``parameters`` (feature names, units) over REST;
- a heap frozen out of the garbage collector's full scans once the server is built (:func:`freeze_heap`);
- logs in the project's logfmt shape, without KServe's per-request timing lines unless asked for;
- the edge in front of the app (:mod:`serving.edge`: the policy table's roles and limits) and listeners
  bound to ``--bind_address`` (:mod:`serving.listeners`), the gRPC repository calls closed;
- a shutdown in phases on SIGTERM (:mod:`serving.lifecycle`): readiness red, requests in flight answered
  (``--grace_period``), then what the server holds flushed (``flushes``) and its models unloaded; a second
  SIGTERM stops it at once. With ``--reuse_port`` it listens only once ready, on ports a replacement shares.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import functools
import gc
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi.exceptions import RequestValidationError
from kserve import InferRequest, ModelServer
from kserve.errors import InvalidInput, ModelNotReady, ServerNotLive
from kserve.model_server import FASTAPI_APP_IMPORT_STRING
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.rest.v2_datamodels import InferenceRequest
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from serving.edge import EdgeSettings, install_edge
from serving.errors import (
    ClientErrorLogFilter,
    UpstreamError,
    describe,
    http_error_handler,
    http_status,
    request_validation_handler,
    upstream_error_handler,
)
from serving.inputs import REQUEST_ID_HEADER, check_request_id, parse_json
from serving.lifecycle import DrainMiddleware, Shutdown, add_lifecycle_arguments
from serving.listeners import BoundGRPCServer, ClosedRepositoryExtension, rest_server
from serving.logs import configure_logging, silence_fastapi_deprecation
from serving.metrics import observe_request

_INFER_PATH = re.compile(
    r"^/v1/models/(?P<v1>[^/:]+):predict$|^/v2/models/(?P<v2>[^/]+)(/versions/[^/]+)?/infer$"
)
_IN_REST_REQUEST: contextvars.ContextVar[bool] = contextvars.ContextVar("in_rest_request", default=False)
_QUIET_LOGGERS = ("kserve.trace", "uvicorn.access")


class ServingDataPlane(DataPlane):
    """KServe's data plane with readiness tied to the models, and gRPC requests counted.

    Args:
        component: The ``component`` label of the metrics.
        upstream: Why what the server depends on does not serve now (``None`` when it does); the transformer
            passes its predictor's model readiness, so that its readiness and ``/health`` agree.
        **kwargs: KServe's ``DataPlane`` arguments.
    """

    def __init__(
        self, component: str, upstream: Callable[[], Awaitable[str | None]] | None = None, **kwargs: Any
    ):
        super().__init__(**kwargs)
        self.component = component
        self.upstream = upstream

    async def ready(self) -> bool:
        """Ready when every registered model is loaded, none that must be is missing, and the upstream serves.

        KServe's own checks must pass too. A repository that serves a model under an alias
        (:class:`predictor.repository.ArtifactRepository`) says whether it does (``serving``): after the alias
        is unloaded its other models are all loaded, yet requests for the alias answer 404.
        """
        models = self.model_registry.get_models().values()
        serving = getattr(self.model_registry, "serving", True)
        if not (models and serving and all(model.ready for model in models) and await super().ready()):
            return False
        return self.upstream is None or await self.upstream() is None

    async def live(self) -> dict[str, str]:  # KServe's is a staticmethod: an instance one overrides it
        """Alive unless a model says why it cannot do its job again without a restart (its ``dead()``).

        Raises:
            ServerNotLive: Such a model (KServe answers 503 on ``/`` and ``/v2/health/live``).
        """
        for model in self.model_registry.get_models().values():
            dead = getattr(model, "dead", None)
            reason = dead() if dead is not None else None
            if reason:
                raise ServerNotLive(reason)
        return {"status": "alive"}

    async def get_model(self, name: str) -> Any:
        """The model, or ``ModelNotReady`` while it loads (never a load on the request path)."""
        model = self.get_model_from_registry(name)
        if not await self.model_registry.is_model_ready(name):
            raise ModelNotReady(name, "the model is still loading; see the server log for why")
        return model

    def decode(self, body: Any, headers: Any, *args: Any, **kwargs: Any) -> Any:
        """KServe's decoding, made to answer every JSON body with a clear 400 rather than a confusing one.

        NaN and Infinity (which Python and JavaScript emit, but JSON does not allow) are parsed so that
        validation can name the field; a V1 body sent without ``Content-Type: application/json`` (curl's
        default) is read as JSON, the only format this model takes.
        """
        try:
            decoded, attributes = super().decode(body, headers, *args, **kwargs)
        except InvalidInput as error:
            if not isinstance(body, bytes):
                raise
            if "inference-header-content-length" not in str(error):
                return super().decode(_parsed(body), headers, *args, **kwargs)
            try:  # a V2 JSON body sent without a JSON content type
                request = InferenceRequest.model_validate(_parsed(body))
            except ValidationError as invalid:
                raise InvalidInput(f"invalid V2 inference request: {describe(invalid.errors())}") from None
            return super().decode(request, headers, *args, **kwargs)
        if isinstance(decoded, bytes):
            return super().decode(_parsed(decoded), headers, *args, **kwargs)
        return decoded, attributes

    async def model_metadata(self, model_name: str) -> dict[str, Any]:
        """KServe's V2 metadata plus ``versions``, ``platform`` and the model's ``parameters``."""
        metadata = await super().model_metadata(model_name)
        model = self.get_model_from_registry(model_name)
        describe_model: Callable[[], Awaitable[dict[str, Any]]] | None = getattr(model, "describe", None)
        if describe_model is not None:
            metadata.update(await describe_model())
        return metadata

    async def infer(self, model_name: str, request: Any, headers: Any = None) -> Any:
        """Run inference; requests that did not come through REST (gRPC) are counted here.

        Raises:
            InvalidInput: The V2 ``id`` or the ``x-request-id`` header breaks :data:`serving.inputs.ID_RULE`.
        """
        if _IN_REST_REQUEST.get():
            _check_request_ids(request, headers)
            return await super().infer(model_name, request, headers)
        start, code = time.perf_counter(), 500
        try:
            _check_request_ids(request, headers)
            result = await super().infer(model_name, request, headers)
            code = 200
            return result
        except Exception as error:
            code = http_status(error)
            raise
        finally:
            name = _label(model_name, self.model_registry)
            observe_request(self.component, name, code, time.perf_counter() - start)

    async def explain(self, model_name: str, request: Any, headers: Any = None) -> Any:
        """KServe's ``:explain``, once the request's ids are checked as for :meth:`infer`."""
        _check_request_ids(request, headers)
        return await super().explain(model_name, request, headers)


UNKNOWN_MODEL = "unknown"
"""The ``model_name`` label of requests for a model the server does not have (so labels stay bounded)."""


def _label(model_name: str, registry: Any) -> str:
    """``model_name`` when the server has that model, else :data:`UNKNOWN_MODEL`.

    A client picks the path, and a label per name it makes up would grow ``/metrics`` without bound.
    """
    return model_name if model_name in registry.get_models() else UNKNOWN_MODEL


def _check_request_ids(request: Any, headers: Any) -> None:
    """The ids a request carries, checked before anything uses them (:mod:`serving.inputs`)."""
    try:
        if isinstance(request, InferRequest):
            check_request_id(request.id, "id")
        if headers:
            check_request_id(headers.get(REQUEST_ID_HEADER), REQUEST_ID_HEADER)
    except ValueError as error:
        raise InvalidInput(str(error)) from None


class RequestMetricsMiddleware:
    """ASGI middleware measuring each REST inference request with its final HTTP status.

    Args:
        app: The ASGI app.
        component: The ``component`` label.
        registry: The server's models (a request for another name is counted as :data:`UNKNOWN_MODEL`).
    """

    def __init__(self, app: Any, component: str, registry: Any):
        self.app = app
        self.component = component
        self.registry = registry

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Pass the request on; count it and time it if it is an inference request."""
        match = _INFER_PATH.match(scope["path"]) if scope["type"] == "http" else None
        if match is None:
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()

        async def send_and_record_status(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        token = _IN_REST_REQUEST.set(True)
        try:
            await self.app(scope, receive, send_and_record_status)
        finally:
            _IN_REST_REQUEST.reset(token)
            model_name = _label(match["v1"] or match["v2"], self.registry)
            observe_request(self.component, model_name, status, time.perf_counter() - start)


class HousingModelServer(ModelServer):
    """``kserve.ModelServer`` with the additions listed in the module docstring (one worker per process).

    Args:
        component: ``predictor``, ``transformer`` or ``explainer`` (the ``component`` label of the metrics,
            and whose rows of :mod:`serving.policy` its edge applies).
        edge: The edge's settings (default: everything off but the input limits, on loopback).
        enabled: The flags given that turn routes on (``--enable_repository_api``).
        upstream: What readiness also waits for (:class:`ServingDataPlane`).
        grace_period: Seconds requests in flight have after SIGTERM (:mod:`serving.lifecycle`).
        reuse_port: Listen only once ready, on ports shared with a replacement (``SO_REUSEPORT``).
        flushes: What the server holds, flushed once it has stopped serving: ``(what, step)`` pairs, each
            ``step`` a blocking call that returns what it did, with counts (logged).
        warm: With ``reuse_port``, awaited once ready and before listening (the transformer reads its
            predictors' metadata and opens its channels: a replacement's first answers are not cold).
        **kwargs: Passed to ``kserve.ModelServer`` (ports, workers, predictor config, ...).
    """

    def __init__(
        self,
        component: str,
        *,
        edge: EdgeSettings | None = None,
        enabled: frozenset[str] = frozenset(),
        upstream: Callable[[], Awaitable[str | None]] | None = None,
        grace_period: float | None = None,
        reuse_port: bool = False,
        flushes: list[tuple[str, Callable[[], str]]] | None = None,
        warm: Callable[[], Awaitable[None]] | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.component = component
        self.edge = edge or EdgeSettings()
        self.enabled = enabled
        self.shutdown = Shutdown(component) if grace_period is None else Shutdown(component, grace_period)
        self.grace_period = self.shutdown.grace  # KServe's: uvicorn's and gRPC's graceful shutdown
        self.reuse_port = reuse_port
        self.flushes = list(flushes or [])
        self.warm = warm
        self._warmed = False
        self.dataplane = ServingDataPlane(component, upstream, model_registry=self.registered_models)
        self.model_repository_extension = ClosedRepositoryExtension(model_registry=self.registered_models)
        if self.workers > 1:
            raise ValueError(
                "--workers > 1 is not supported: scale with replicas (each replica loads one model)"
            )

    def start_unready(self, models: list[Any]) -> None:
        """Serve health and metadata at once, whether or not the models are loaded yet.

        ``kserve.ModelServer.start`` refuses to start until a model is ready; this registers the models as
        they are, so probes see "not ready" while they load in the background, then starts the server.
        """
        from kserve.model_server import app

        for model in models:
            self.register_model(model)
            model.enable_latency_logging = self.enable_latency_logging
        install_edge(app, self.edge, self.component, self.enabled)
        app.add_middleware(  # outside the edge: its refusals are counted too
            RequestMetricsMiddleware, component=self.component, registry=self.registered_models
        )
        app.add_exception_handler(UpstreamError, upstream_error_handler)
        app.add_exception_handler(RequestValidationError, request_validation_handler)
        app.add_exception_handler(HTTPException, http_error_handler)
        app.add_api_route("/v2/models/{model_name}", self._model_metadata, methods=["GET"])
        if not self.enable_latency_logging:
            # KServe wraps its app in timing_asgi's TimingMiddleware whatever the flag says: per request it
            # scans every route for the request's name and formats a timing line that its logger then drops.
            # The stack is built at the first request, after KServe has added it; leave it out then.
            app.build_middleware_stack = functools.partial(_build_without_timing, app)
        app.add_middleware(DrainMiddleware, shutdown=self.shutdown)  # outermost: every request counts
        freeze_heap()
        self.start([])

    def start(self, models: list[Any]) -> None:
        """KServe's ``ModelServer.start`` (one process), its listeners bound (:mod:`serving.listeners`).

        The changes from KServe's: the REST server's uvicorn options, the gRPC server's address, and the
        shutdown (:meth:`_serve`; KServe's signal handler is not installed).
        """
        from kserve.model_server import args as kserve_args

        self._register_and_check_atleast_one_model_is_ready(models)
        ready = self._ready_and_warm if self.reuse_port else None
        self._rest_server = rest_server(
            self.edge,
            self.shutdown,
            ready,
            FASTAPI_APP_IMPORT_STRING,
            self.dataplane,
            self.model_repository_extension,
            self.http_port,
            access_log_format=self.access_log_format,
            workers=self.workers,
            grace_period=self.grace_period,
            event_loop=self.event_loop,
            timeout_keep_alive=self.timeout_keep_alive,
        )
        self.servers.append(self._rest_server.start())
        if self.enable_grpc:
            self._grpc_server = BoundGRPCServer(
                self.edge.bind_address,
                self.grpc_port,
                self.dataplane,
                self.model_repository_extension,
                kwargs=vars(kserve_args),
                grace_period=self.grace_period,
                shutdown=self.shutdown,
                ready=ready,
            )
            self.servers.append(self._grpc_server.start(self.max_threads))
        self.setup_event_loop()
        asyncio.run(self._serve())

    async def _ready_and_warm(self) -> bool:
        """Ready (:meth:`ServingDataPlane.ready`), and warmed up once (``warm``)."""
        if not await self.dataplane.ready():
            return False
        if self.warm is not None and not self._warmed:
            self._warmed = True
            await self.warm()
        return True

    async def _serve(self) -> None:
        """Serve until a signal (:class:`serving.lifecycle.Shutdown`), drain, then flush and unload."""
        self.shutdown.install()
        await asyncio.gather(*self.servers)
        await self._flush()
        self.shutdown.stopped()

    async def _flush(self) -> None:
        """Phase 3 of the shutdown: every flush step in turn, then the models unloaded (KServe's ``stop``)."""
        for what, step in self.flushes:
            done = await self.shutdown.flush(what, step)
            if done is not None:
                logging.getLogger("serving.lifecycle").info("%s: flushed %s: %s", self.component, what, done)
        if self.shutdown.forced:
            return
        for model in {id(model): model for model in self.registered_models.get_models().values()}.values():
            model.stop()

    async def _model_metadata(self, model_name: str) -> dict[str, Any]:
        # Registered before KServe's own route so that ``versions`` and ``parameters`` survive (KServe's
        # response model keeps only name, platform, inputs and outputs).
        return await self.dataplane.model_metadata(model_name)


def _build_without_timing(app: Any) -> Any:
    """The app's middleware stack without KServe's per-request timing middleware (see ``start_unready``)."""
    from timing_asgi import TimingMiddleware

    app.user_middleware = [entry for entry in app.user_middleware if entry.cls is not TimingMiddleware]
    return type(app).build_middleware_stack(app)


def server_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """KServe's ModelServer flags (``--http_port``, ``--grpc_port``, ...) plus ``--log_level``.

    Defaults: model name ``housing`` and KServe's per-request log lines off (see
    :func:`configure_server_logging`).
    """
    from kserve import model_server

    parser = argparse.ArgumentParser(prog=prog, parents=[model_server.parser], description=description)
    parser.add_argument("--log_level", default=os.environ.get("LOG_LEVEL", "INFO"), help="logging level")
    add_lifecycle_arguments(parser)
    parser.set_defaults(model_name="housing", enable_latency_logging=False)
    return parser


def parse_server_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse, refusing ``--workers`` other than 1 with a usage error."""
    args = parser.parse_args(argv)
    if args.workers != 1:
        # Extra KServe workers are spawned processes: they share neither the background load nor metrics.
        parser.error("--workers must be 1: scale with replicas")
    return args


def freeze_heap() -> None:
    """Exempt everything alive now (modules, the app, a loaded model) from the garbage collector's scans.

    A full collection walks every tracked object, and a server that has imported KServe, FastAPI, gRPC and
    scikit-learn holds hundreds of thousands of them: under load, each one stalled the event loop long enough
    to triple the p99 latency (measured: 100 ms against 30 ms at concurrency 32). Called once the server is
    built and again after the model loads; what a request allocates is still collected as usual.
    """
    gc.collect()
    gc.freeze()


def configure_server_logging(level: str, *, latency_logging: bool) -> None:
    """The project's logfmt logs for KServe and uvicorn too; per-request lines only when asked for.

    KServe writes a timing line per request (about 12-15 % of a small request's cost); it stays off unless
    ``--enable_latency_logging true`` is given.
    """
    configure_logging(level)
    root_handlers = logging.getLogger().handlers
    for name in ("kserve", "kserve.trace", "uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        # A handler on "kserve" also stops kserve.ModelServer from installing its own log format.
        logger.handlers = list(root_handlers)
        logger.propagate = False
        logger.setLevel(level.upper())
    logging.getLogger("kserve").addFilter(ClientErrorLogFilter(access_lines=latency_logging))
    if not latency_logging:
        for name in _QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
    silence_fastapi_deprecation()


def _parsed(body: bytes) -> Any:
    try:
        return parse_json(body)
    except ValueError as error:
        raise InvalidInput(str(error)) from None
