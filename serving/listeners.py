"""KServe's REST and gRPC servers, bound to the edge's address, with the repository calls closed on gRPC.

KServe 0.20 and 0.21 bind every interface with no way to say otherwise (``host="0.0.0.0"`` in
``kserve/protocol/rest/server.py``, ``"[::]:port"`` in ``protocol/grpc/server.py``), and trust
``X-Forwarded-For`` from 127.0.0.1 (uvicorn's default). These are the smallest overrides that bind
``--bind_address`` and trust only ``--trusted_proxies`` (:func:`serving.edge.uvicorn_options`):

- :func:`rest_server`: KServe's ``RESTServer``, its uvicorn configuration given the edge's options before
  it starts (uvicorn reads them when the server starts, not when it is built), and its uvicorn server the
  one that drains (:class:`serving.lifecycle.DrainingServer`);
- :class:`BoundGRPCServer`: KServe's ``GRPCServer.start`` with the listening address and the largest
  message the policy table allows (:data:`serving.policy.GRPC`), ``SO_REUSEPORT`` only when asked
  (gRPC's default is on: a second server on the port would silently take half the connections), and its
  ``stop(grace)`` started at the first SIGTERM, beside the REST drain;
- :class:`ClosedRepositoryExtension`: KServe's V2 repository extension as gRPC sees it: every call refused
  (``UNIMPLEMENTED``). The gRPC server checks no credential, and KServe's gRPC unload removed the served
  model before failing; the repository API is REST only, behind the edge (``--enable_repository_api``, role
  ``admin``). KServe's REST repository routes never reach it either: the edge answers 404 while the API is
  off, and the predictor's own routes (:mod:`predictor.repository_api`) come first when it is on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from concurrent import futures
from typing import Any

from grpc import aio
from grpc_interceptor.exceptions import Unimplemented
from kserve.logging import logger
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor, LoggingInterceptor
from kserve.protocol.grpc.server import GRPCServer
from kserve.protocol.grpc.servicer import InferenceServicer
from kserve.protocol.model_repository_extension import ModelRepositoryExtension
from kserve.protocol.rest.server import RESTServer

from serving import policy
from serving.edge import EdgeSettings, uvicorn_options
from serving.lifecycle import DrainingServer, Shutdown, until_ready

Readiness = Callable[[], Awaitable[bool]]
"""Whether the server is ready; given (with ``reuse_port``), the listeners open only once it is."""

REPOSITORY_OFF = (
    "the V2 repository API is not served over gRPC: it checks no credential here; use REST "
    "(/v2/repository, the admin role, --enable_repository_api)"
)


class ClosedRepositoryExtension(ModelRepositoryExtension):
    """The V2 repository extension with every call refused (see the module docstring)."""

    async def index(self, filter_ready: bool | None = False) -> list[dict[str, str]]:
        """Refused."""
        raise Unimplemented(REPOSITORY_OFF)

    async def load(self, model_name: str) -> None:
        """Refused."""
        raise Unimplemented(REPOSITORY_OFF)

    async def unload(self, model_name: str) -> None:
        """Refused."""
        raise Unimplemented(REPOSITORY_OFF)


def rest_server(
    settings: EdgeSettings, shutdown: Shutdown, ready: Readiness | None, *args: Any, **kwargs: Any
) -> RESTServer:
    """KServe's ``RESTServer(*args, **kwargs)``, listening where ``settings`` say, trusting whom they say.

    Its uvicorn server drains on ``shutdown``; with ``ready`` it shares its port (``SO_REUSEPORT``) and
    listens only once ``ready()`` says so.
    """
    server = RESTServer(*args, **kwargs)
    for name, value in uvicorn_options(settings).items():
        setattr(server.config, name, value)
    server._server = DrainingServer(server.config, shutdown, reuse_port=ready is not None, ready=ready)
    return server


class BoundGRPCServer(GRPCServer):
    """KServe's gRPC server on ``host`` rather than every interface, with the policy's message limit.

    Args:
        host: The address to bind (an IPv6 address is bracketed).
        *args: ``GRPCServer``'s.
        shutdown: Stops it (``stop(grace)`` at the first signal, ``stop(0)`` at a second).
        ready: With it, the port is shared (``SO_REUSEPORT``) and the server listens once ``ready()``.
        **kwargs: ``GRPCServer``'s.
    """

    def __init__(
        self,
        host: str,
        *args: Any,
        shutdown: Shutdown,
        ready: Readiness | None = None,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.host = f"[{host}]" if ":" in host else host
        self.shutdown = shutdown
        self.ready = ready
        shutdown.on_drain.append(self._drain)
        shutdown.on_force.append(self._abort)

    async def _drain(self) -> None:
        if self._server is not None:
            log = self.shutdown.component
            logger.info("%s: gRPC draining: new calls refused, those in flight have %.1f s", log,
                        self.shutdown.remaining())  # fmt: skip
            await self._server.stop(grace=self.shutdown.remaining())
            logger.info("%s: gRPC drained", log)

    async def _abort(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=None)

    async def start(self, max_workers: int) -> None:
        """Serve until stopped: ``GRPCServer.start``, bound to ``host``."""
        if self.ready is not None and not await until_ready(self.ready, self.shutdown):
            return
        servicer = InferenceServicer(self._data_plane, self._model_repository_extension)
        self._server = aio.server(
            futures.ThreadPoolExecutor(max_workers=max_workers),
            interceptors=(LoggingInterceptor(), ExceptionToStatusInterceptor()),
            options=[
                ("grpc.max_send_message_length", self._kwargs.get("grpc_max_send_message_length")),
                ("grpc.max_receive_message_length", policy.GRPC.body_bytes),
                ("grpc.so_reuseport", int(self.ready is not None)),
            ],
        )
        grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, self._server)
        address = f"{self.host}:{self._port}"
        self._server.add_insecure_port(address)
        logger.info("Starting gRPC server with %d workers on %s", max_workers, address)
        await self._server.start()
        if self.shutdown.draining:  # the signal came while it started: _drain found no server yet
            await self._drain()
        await self._server.wait_for_termination()
