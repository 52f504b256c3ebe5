"""How every server stops: SIGTERM drains it in phases, a second SIGTERM (or the time's end) stops it at once.

The transformer, predictor and explainer (KServe's ``ModelServer``, :mod:`serving.server`) and the detector
(Starlette under uvicorn) stop the same way, each phase logged with its counts:

1. **unready** (at once): readiness answers 503 (``/v2/health/ready``, the seed API's ``/health``, the
   detector's ``/readyz``: :data:`READINESS_PATHS`), so a probe that still reaches the process sees it leave;
2. **draining** (at most ``--grace_period`` s, :data:`GRACE_SECONDS` by default, longer than the
   transformer's 5 s request deadline): the listeners close (new connections go to another replica: on
   Kubernetes the pod has left its Service during the chart's ``preStop`` pause, locally the replacement
   shares the port, ``--reuse_port``), every response closes its connection (keep-alive clients reconnect
   elsewhere rather than lose a request to a close racing their next one), and requests in flight finish;
   uvicorn's own graceful shutdown (``timeout_graceful_shutdown``) and gRPC's ``server.stop(grace)`` do the
   waiting, given what is left of the grace period;
3. **flushing** (at most :data:`FLUSH_SECONDS`): what the process holds goes where it belongs (the
   transformer's request logger sends its pending batch to the detector; the detector saves its state and
   seals its archive segment; the predictor lets a model swap in flight finish);
4. **stopped**: the process exits 0.

A second SIGTERM (or SIGINT) during any phase stops the process at once (uvicorn's ``force_exit``, gRPC's
``stop(0)``); so does the end of the grace period plus the flush's bound: a watchdog ends the process
:data:`EXIT_MARGIN_SECONDS` later whatever still runs (a thread stuck in a download, say). So no process
outlives ``grace_period + FLUSH_SECONDS + EXIT_MARGIN_SECONDS`` after its first SIGTERM: the chart's
``terminationGracePeriodSeconds`` is above that plus its ``preStop`` pause (docs/rollout.md).

uvicorn's own signal capture is off here (:class:`DrainingServer`): one :class:`Shutdown` per process owns
SIGTERM, SIGINT and SIGQUIT (through the event loop, ``loop.add_signal_handler``) and tells every server
to stop through the flags uvicorn documents for that (``should_exit``, ``force_exit``). KServe's
``ModelServer.stop`` is not used: it unloads the models while requests are still in flight, and its
signal handler would be re-raised by uvicorn after the drain.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import uvicorn

log = logging.getLogger("serving.lifecycle")

GRACE_SECONDS = 10.0
"""Default ``--grace_period``: twice the transformer's request deadline (5 s), so every request admitted
before SIGTERM is answered within it."""
FLUSH_SECONDS = 5.0
"""The longest the flush may take (the request logger's last batch: one POST has 2 s; the detector's state
file and archive segment: well under a second on a local disk)."""
EXIT_MARGIN_SECONDS = 1.0
"""How long after the grace period and the flush, or after a second signal, the watchdog ends the process."""
IDLE_SECONDS = 0.5
"""A connection with no request for this long while draining is idle: uvicorn may close it. Shorter, and a
request already sent on it but not yet read could be cut off by the close."""
READINESS_PATHS = frozenset({"/v2/health/ready", "/health", "/readyz"})
"""The readiness routes that answer 503 from the first SIGTERM on (``/health`` is the seed API's)."""
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
_CLOSE = (b"connection", b"close")


def add_lifecycle_arguments(parser: argparse.ArgumentParser, *, reuse_port: bool = True) -> None:
    """``--grace_period`` (every server's) and ``--reuse_port`` (the KServe servers': ``reuse_port``)."""
    parser.add_argument(
        "--grace_period",
        type=float,
        default=float(os.environ.get("GRACE_PERIOD", GRACE_SECONDS)),
        help="seconds a SIGTERM leaves requests in flight to finish before they are cut off; the flush "
        f"then has {FLUSH_SECONDS:g} s more (env GRACE_PERIOD; default %(default)s)",
    )
    if not reuse_port:
        return
    parser.add_argument(
        "--reuse_port",
        action="store_true",
        default=os.environ.get("REUSE_PORT", "").lower() in ("1", "true", "yes"),
        help="share the ports with a replacement (SO_REUSEPORT) and listen only once ready: a rolling "
        "restart on one host (housing up); default: off, a port in use is an error (env REUSE_PORT=1)",
    )


class Shutdown:
    """One process's shutdown: which phase it is in, the requests in flight, and the signals that drive it.

    Args:
        component: Who stops (in every log line).
        grace: Seconds requests in flight have once the drain begins.
        flush: Seconds the flush has after the drain.
    """

    def __init__(self, component: str, grace: float = GRACE_SECONDS, flush: float = FLUSH_SECONDS):
        if grace < 0 or flush < 0:
            raise ValueError("the grace period and the flush's bound must be >= 0")
        self.component = component
        self.grace = grace
        self.flush_seconds = flush
        self.in_flight = 0
        self.began: float | None = None
        self.forced = False
        self.servers: list[uvicorn.Server] = []
        self.on_drain: list[Callable[[], Awaitable[None]]] = []
        self.on_force: list[Callable[[], Awaitable[None]]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def draining(self) -> bool:
        """Whether a SIGTERM has come (readiness is red from then on)."""
        return self.began is not None

    def remaining(self) -> float:
        """Seconds left of the grace period (the whole of it before the drain begins)."""
        if self.began is None:
            return self.grace
        return max(0.0, self.began + self.grace - time.monotonic())

    def install(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Handle SIGTERM, SIGINT and SIGQUIT on ``loop`` (the running loop by default)."""
        loop = loop or asyncio.get_running_loop()
        for signum in SIGNALS:
            loop.add_signal_handler(signum, self.signalled, signum)

    def signalled(self, signum: int) -> None:
        """The first signal begins the drain; any later one stops the process at once."""
        name = signal.Signals(signum).name
        if self.began is None:
            self.begin(name)
        elif not self.forced:
            self.force(f"a second {name}")

    def begin(self, why: str) -> None:
        """Phase 1 and 2: readiness red, every server told to stop accepting and to drain."""
        self.began = time.monotonic()
        connections = sum(len(server.server_state.connections) for server in self.servers)
        log.info(
            "%s: %s: readiness red, draining %d requests in flight on %d HTTP connections (grace period "
            "%.1f s)", self.component, why, self.in_flight, connections, self.grace,
        )  # fmt: skip
        _watchdog(self.grace + self.flush_seconds + EXIT_MARGIN_SECONDS, f"{self.component}: shutdown")
        for server in self.servers:
            for listener in getattr(server, "servers", ()):  # uvicorn's asyncio servers, once started
                listener.close()  # now, not at uvicorn's next tick (0.1 s): see DrainingServer.shutdown
            server.should_exit = True
        for hook in self.on_drain:
            self._spawn(hook())

    def force(self, why: str) -> None:
        """Stop at once: no more waiting, no flush; the watchdog ends what does not stop by itself."""
        self.forced = True
        log.warning("%s: %s: stopping at once, %d requests in flight cut off", self.component, why,
                    self.in_flight)  # fmt: skip
        _watchdog(EXIT_MARGIN_SECONDS, f"{self.component}: forced stop")
        for server in self.servers:
            server.should_exit = server.force_exit = True
        for hook in self.on_force:
            self._spawn(hook())

    async def drain_connections(self, connections: Callable[[], int]) -> None:
        """Wait until no connection is left, or none has had a request for :data:`IDLE_SECONDS`.

        Bounded by the grace period and cut short by :meth:`force`. Every response meanwhile closes its
        connection (:class:`DrainMiddleware`), so a client that keeps sending moves to another replica.
        """
        idle_since: float | None = None
        while not self.forced and self.remaining() > 0 and connections():
            now = time.monotonic()
            if self.in_flight:
                idle_since = None
            elif idle_since is None:
                idle_since = now
            elif now - idle_since >= IDLE_SECONDS:
                break
            await asyncio.sleep(0.02)

    async def flush(self, what: str, step: Callable[[], Any], timeout: float | None = None) -> Any:
        """Phase 3: run ``step`` (blocking, in a thread) within the flush's bound; its result, or ``None``.

        Skipped after :meth:`force`. A step that outlasts the bound is left to the watchdog.
        """
        if self.forced:
            log.warning("%s: %s skipped (stopped at once)", self.component, what)
            return None
        start = time.monotonic()
        try:
            done = await asyncio.wait_for(asyncio.to_thread(step), timeout or self.flush_seconds)
            return f"{done} ({time.monotonic() - start:.2f} s)" if done is not None else None
        except TimeoutError:
            log.error("%s: %s did not finish within %.1f s", self.component, what,
                      timeout or self.flush_seconds)  # fmt: skip
            return None

    def stopped(self) -> None:
        """Phase 4: say how long the whole shutdown took."""
        took = time.monotonic() - self.began if self.began is not None else 0.0
        log.info("%s: stopped %.2f s after the signal%s", self.component, took,
                 " (at once)" if self.forced else "")  # fmt: skip

    def _spawn(self, awaitable: Awaitable[None]) -> None:
        task = asyncio.ensure_future(awaitable)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _watchdog(seconds: float, what: str) -> None:
    """End the process ``seconds`` from now if it is still running (a daemon thread: it never holds it)."""

    def expire() -> None:
        time.sleep(seconds)
        log.error("%s: still running %.1f s after its bound: exiting now", what, seconds)
        logging.shutdown()
        os._exit(1)

    threading.Thread(target=expire, name="shutdown-watchdog", daemon=True).start()


class DrainMiddleware:
    """ASGI middleware: counts requests in flight; once draining, readiness answers 503, connections close.

    Outermost, so every request counts (the edge's refusals too). Costs two integer updates per request.

    Args:
        app: The ASGI app.
        shutdown: The process's shutdown.
    """

    def __init__(self, app: Any, shutdown: Shutdown):
        self.app = app
        self.shutdown = shutdown

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Pass the request on, counted; mark its response ``Connection: close`` once draining."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        shutdown = self.shutdown
        if shutdown.draining and scope["path"] in READINESS_PATHS:
            await _not_ready(send)
            return

        async def closing_when_draining(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start" and shutdown.draining:
                message = {**message, "headers": [*message.get("headers", ()), _CLOSE]}
            await send(message)

        shutdown.in_flight += 1
        try:
            await self.app(scope, receive, closing_when_draining)
        finally:
            shutdown.in_flight -= 1


async def _not_ready(send: Any) -> None:
    body = b'{"ready":false,"reason":"shutting down"}'
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), _CLOSE]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class DrainingServer(uvicorn.Server):
    """uvicorn's server, stopped by a :class:`Shutdown`, draining its connections before uvicorn's own wait.

    Args:
        config: uvicorn's configuration.
        shutdown: The process's shutdown (it owns the signals; uvicorn's capture is off).
        reuse_port: Bind with ``SO_REUSEPORT`` (see :func:`reuse_port_socket`).
        ready: With ``reuse_port``, listen only once ``ready()`` (a replacement takes no connection before
            it can answer: what a Service's readiness does on Kubernetes).
    """

    def __init__(
        self,
        config: uvicorn.Config,
        shutdown: Shutdown,
        *,
        reuse_port: bool = False,
        ready: Callable[[], Awaitable[bool]] | None = None,
    ):
        super().__init__(config)
        self.shutdown_control = shutdown
        self.reuse_port = reuse_port
        self.ready = ready
        shutdown.servers.append(self)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Nothing: the process's :class:`Shutdown` owns the signals and sets ``should_exit``."""
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Uvicorn's start-up, on a socket shared with a replacement when ``reuse_port`` (once ready)."""
        if self.reuse_port and sockets is None:
            if self.ready is not None and not await until_ready(self.ready, self.shutdown_control):
                return  # stopped before it was ready: it never listened
            sockets = [reuse_port_socket(self.config.host, self.config.port)]
        await super().startup(sockets=sockets)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Stop listening, let the connections finish on their own, then uvicorn's graceful shutdown.

        The listeners closed already, at the signal (:meth:`Shutdown.begin`): from then on every response
        asks its client to reconnect, and with ``reuse_port`` a reconnection that reached this listener's
        accept backlog before it closed would be reset: the likely cause of 3 read errors in 4,623 requests
        of a rolling restart under load when it closed at uvicorn's next tick, up to 0.1 s later
        (docs/rollout.md).

        uvicorn closes a connection at once when no request is being processed on it, which cuts off a
        request a client has just sent on it; here connections close after their response
        (:class:`DrainMiddleware`), and uvicorn gets what is left of the grace period for the rest.
        """
        control = self.shutdown_control
        for server in self.servers:
            server.close()
        await control.drain_connections(lambda: len(self.server_state.connections))
        self.config.timeout_graceful_shutdown = max(0.1, control.remaining())  # type: ignore[assignment]
        log.info(
            "%s: HTTP listener closed, connections drained: %d left to uvicorn's shutdown (%d requests in "
            "flight, %.1f s of the grace period left)", control.component, len(self.server_state.connections),
            control.in_flight, control.remaining(),
        )  # fmt: skip
        await super().shutdown(sockets)


async def until_ready(ready: Callable[[], Awaitable[bool]], shutdown: Shutdown) -> bool:
    """Wait until ``ready()``; ``False`` if the shutdown begins first."""
    while not shutdown.draining:
        if await ready():
            return True
        await asyncio.sleep(0.1)
    return False


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` with ``SO_REUSEPORT``: processes of one user share the port.

    The kernel spreads new connections over the processes listening; one that closes its socket gets no
    more. Connections still queued in its accept backlog at that moment are reset (unless the host sets
    ``net.ipv4.tcp_migrate_req=1``): a draining server closes its listener first, while it is still
    accepting promptly, and keep-alive clients (most traffic) are not affected at all.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock
