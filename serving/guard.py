"""The edge's ASGI middleware: each request decided by its route's row in :mod:`serving.policy`.

One pure ASGI middleware in front of every server's app (KServe's FastAPI app and the detector's Starlette
app alike), which :func:`serving.edge.install_edge` adds; what it checks, in order, and why, is in
:mod:`serving.edge`'s docstring and docs/security.md. It answers refusals itself (:class:`Refusal`), before
the body is parsed, and hands the app the whole body at once once it has arrived within the route's limits.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import dataclass
from typing import Any

from serving import policy
from serving.auth import PRINCIPAL, Authenticator, AuthError
from serving.metrics import AUTH_REFUSED, EDGE_REFUSED, RATE_LIMITED
from serving.ratelimit import ClientSlots, TokenBucketLimiter

LOOPBACK = "127.0.0.1"
AUTH_FAILURES_PER_MINUTE = 30.0
AUTH_FAILURE_BURST = 10.0
_REALM = 'Bearer realm="housing"'
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


@dataclass(frozen=True)
class EdgeSettings:
    """The edge of one server, read once at start-up.

    Attributes:
        authenticator: Verifies credentials, or ``None`` when authentication is off.
        rate: Requests a second each client may sustain, or ``None`` for no limit.
        burst: Requests a client may send at once.
        cors_origins: Origins allowed to call from a browser (none: no CORS headers at all).
        cors_methods: Methods allowed from those origins.
        cors_headers: Request headers allowed beyond the CORS-safelisted ones.
        cors_credentials: Whether browsers may send cookies or ``Authorization`` with cross-origin calls.
        bind_address: The address every listener of the server binds.
        trusted_proxies: Addresses or networks whose ``X-Forwarded-For`` is believed.
        request_limits: Whether the byte, time and header limits apply (off only to measure their cost).
        max_body_bytes: Over the table's byte limit of every route that takes a body, or ``None``.
        max_body_seconds: Over the table's seconds to send a body, or ``None``.
        max_header_bytes: The largest header value (four times this: all headers together).
        max_in_flight_per_client: Requests one client may have in flight, or ``None`` for no cap.
        auth_failures_per_minute: Failed authentications an address may sustain (after the burst).
        auth_failure_burst: Failed authentications an address may make at once.
    """

    authenticator: Authenticator | None = None
    rate: float | None = None
    burst: float = 1.0
    cors_origins: tuple[str, ...] = ()
    cors_methods: tuple[str, ...] = ("GET", "POST")
    cors_headers: tuple[str, ...] = ()
    cors_credentials: bool = False
    bind_address: str = LOOPBACK
    trusted_proxies: tuple[str, ...] = ()
    request_limits: bool = True
    max_body_bytes: int | None = None
    max_body_seconds: float | None = None
    max_header_bytes: int = policy.HEADER_BYTES
    max_in_flight_per_client: int | None = None
    auth_failures_per_minute: float = AUTH_FAILURES_PER_MINUTE
    auth_failure_burst: float = AUTH_FAILURE_BURST

    def body_bytes(self, route: policy.Route) -> int:
        """The largest body ``route`` takes here (the flag over the table, for routes that take one)."""
        limit = route.limits.body_bytes
        return self.max_body_bytes if self.max_body_bytes is not None and limit else limit

    def body_seconds(self, route: policy.Route) -> float:
        """The seconds a client has to send ``route``'s body here."""
        return self.max_body_seconds if self.max_body_seconds is not None else route.limits.body_seconds


class Deadlines:
    """Cancels the body reads that outlive their deadline: one task looks every ``tick`` seconds.

    ``asyncio.timeout`` around each read cost about 9 µs a request here (a timer pushed on the loop's heap,
    cancelled at once), 2 % of a one-row prediction's CPU; an entry in a dict costs a fraction of a µs, and
    the deadline holds to within ``tick``.

    Args:
        tick: Seconds between two looks.
    """

    def __init__(self, tick: float = 0.25):
        self.tick = tick
        self._reads: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    def start(self, seconds: float) -> asyncio.Task[Any]:
        """The current task reads a body for at most ``seconds``; it is cancelled beyond."""
        task = asyncio.current_task()
        assert task is not None
        self._reads[task] = time.monotonic() + seconds
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        return task

    def stop(self, task: asyncio.Task[Any]) -> None:
        """The read of ``task`` is over."""
        self._reads.pop(task, None)

    def expired(self, task: asyncio.Task[Any]) -> bool:
        """Whether ``task`` was cancelled for its deadline (then it is no longer cancelled: it may answer)."""
        if task not in self._expired:
            return False
        self._expired.discard(task)
        task.uncancel()
        return True

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.tick)
            now = time.monotonic()
            for task, deadline in list(self._reads.items()):
                if deadline <= now and task not in self._expired:
                    self._expired.add(task)
                    task.cancel()


class Refusal(Exception):  # noqa: N818 (an answer, not an error)
    """A request the edge answers itself: its status, message and extra headers."""

    def __init__(self, status: int, reason: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.headers = headers or {}


class EdgeMiddleware:
    """The ASGI middleware of :func:`install_edge`: each request decided by its route's policy row.

    Args:
        app: The ASGI app.
        settings: The edge's settings.
        component: Whose routes (:func:`serving.policy.http_routes`).
        enabled: Flags given that turn routes on.
    """

    _CACHED_PATHS = 4096

    def __init__(self, app: Any, settings: EdgeSettings, component: str, enabled: frozenset[str]):
        self.app = app
        self.settings = settings
        self.component = component
        self.enabled = enabled
        self.routes = policy.http_routes(component)
        self._paths: dict[str, policy.Route | None] = {}  # the paths served so far: a bounded cache
        self.limiter = TokenBucketLimiter(settings.rate, settings.burst) if settings.rate else None
        self.failures = TokenBucketLimiter(
            settings.auth_failures_per_minute / 60, settings.auth_failure_burst
        )
        cap = settings.max_in_flight_per_client
        self.slots = ClientSlots(cap) if cap else None
        self.rate_limited = RATE_LIMITED.labels(component=component)
        self.deadlines = Deadlines()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Refuse what the route's policy refuses; pass the rest on with its body already received."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = self._route(scope["path"])
        slot, received = None, False
        try:
            if route is None:
                raise Refusal(404, "not_found", f"{scope['method']} {scope['path']}: no such route")
            if route.flag is not None and route.flag not in self.enabled:
                raise Refusal(404, "off", f"{scope['path']}: off on this server (it needs {route.flag})")
            if self.settings.request_limits:
                self._check_headers(scope["headers"])
            metered = route.rate_limited and route.checked
            if route.checked and self.settings.authenticator is not None:
                self._authenticate(scope, route.role)
            if metered:
                slot = self._admit(scope)
            if self.settings.request_limits and scope["method"] in _BODY_METHODS:
                receive, received = await self._received(scope, receive, route), True
            elif self.settings.request_limits and _declared_length(scope["headers"]):
                message = f"{scope['path']}: takes no body"
                raise Refusal(413, "body_too_large", message, {"connection": "close"})
        except Refusal as refusal:
            if slot is not None and self.slots is not None:
                self.slots.release(slot)
            if scope["method"] in _BODY_METHODS and not received:  # an unread body: do not read it after
                refusal.headers.setdefault("connection", "close")
            EDGE_REFUSED.labels(component=self.component, reason=refusal.reason).inc()
            await _answer(send, refusal)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            if slot is not None and self.slots is not None:
                self.slots.release(slot)

    def _route(self, path: str) -> policy.Route | None:
        try:
            return self._paths[path]
        except KeyError:
            found = next((route for route in self.routes if route.pattern.match(path)), None)
            if found is not None and len(self._paths) < self._CACHED_PATHS:
                self._paths[path] = found  # unknown paths are not kept: a scan of random paths stays small
            return found

    def _check_headers(self, headers: list[tuple[bytes, bytes]]) -> None:
        """431 naming the first header over its limit, or when all of them are over four times the limit."""
        total, limit = 0, self.settings.max_header_bytes
        for name, value in headers:
            size = len(value)
            total += len(name) + size
            if size > limit:
                raise Refusal(
                    431,
                    "header_too_large",
                    f"header {name.decode('latin-1')}: {size} bytes, more than the limit of {limit}",
                    {"connection": "close"},
                )
        if total > 4 * limit:
            raise Refusal(
                431,
                "header_too_large",
                f"headers: {total} bytes in all, more than the limit of {4 * limit}",
                {"connection": "close"},
            )

    def _authenticate(self, scope: dict[str, Any], role: str) -> None:
        """Put the verified principal in the scope, or refuse (400, 401, 403; 429 for a guessing address)."""
        authenticator = self.settings.authenticator
        assert authenticator is not None
        address = _address(scope)
        wait = self.failures.peek(address)
        if wait > 0:
            AUTH_REFUSED.labels(component=self.component, reason="throttled").inc()
            seconds = math.ceil(wait)
            raise Refusal(
                429,
                "auth_throttled",
                f"authorization: too many failed attempts from {address}; retry in {seconds} s",
                {"retry-after": str(seconds)},
            )
        try:
            principal = authenticator.authenticate(scope["headers"])
        except AuthError as error:
            self.failures.take(address)
            AUTH_REFUSED.labels(component=self.component, reason=error.reason).inc()
            challenge = _REALM if error.reason == "missing" else f'{_REALM}, error="invalid_token"'
            headers = {"www-authenticate": challenge} if error.status == 401 else {"connection": "close"}
            raise Refusal(error.status, "auth", str(error), headers) from None
        if role not in principal.roles:
            AUTH_REFUSED.labels(component=self.component, reason="forbidden").inc()
            held = ", ".join(sorted(principal.roles)) or "none"
            raise Refusal(
                403,
                "auth",
                f"authorization: {scope['path']} needs role {role!r}; the credential has {held}",
                {"www-authenticate": f'{_REALM}, error="insufficient_scope", scope="{role}"'},
            )
        scope.setdefault("state", {})[PRINCIPAL] = principal

    def _admit(self, scope: dict[str, Any]) -> str | None:
        """The client's key holding a place, after its rate; ``None`` when no cap applies."""
        principal = scope.get("state", {}).get(PRINCIPAL)
        key = principal.name if principal is not None else f"address:{_address(scope)}"
        if self.limiter is not None:
            wait = self.limiter.take(key)
            if wait > 0:
                self.rate_limited.inc()
                seconds = math.ceil(wait)
                raise Refusal(
                    429,
                    "rate_limited",
                    f"rate limit: more than {self.limiter.rate:g} requests a second (burst "
                    f"{self.limiter.burst:g}) from this client; retry in {seconds} s",
                    {"retry-after": str(seconds)},
                )
        if self.slots is None:
            return None
        if not self.slots.acquire(key):
            raise Refusal(
                429,
                "client_in_flight",
                f"too many requests in flight from this client (at most {self.slots.limit}); retry shortly",
                {"retry-after": "1"},
            )
        return key

    async def _received(self, scope: dict[str, Any], receive: Any, route: policy.Route) -> Any:
        """A ``receive`` that hands the app the whole body at once, received within the route's limits."""
        limit = self.settings.body_bytes(route)
        declared = _declared_length(scope["headers"])
        if declared is not None and declared > limit:
            raise Refusal(
                413,
                "body_too_large",
                f"body: {declared} bytes, more than the limit of {limit} bytes for {route.path}",
                {"connection": "close"},
            )
        chunks: list[bytes] = []
        size, more, disconnect = 0, True, None
        seconds = self.settings.body_seconds(route)
        task = self.deadlines.start(seconds)
        try:
            while more:
                message = await receive()
                if message["type"] != "http.request":
                    disconnect = message
                    break
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise Refusal(
                        413,
                        "body_too_large",
                        f"body: more than the limit of {limit} bytes for {route.path}",
                        {"connection": "close"},
                    )
                chunks.append(chunk)
                more = message.get("more_body", False)
        except asyncio.CancelledError:
            if not self.deadlines.expired(task):
                raise
            raise Refusal(
                408,
                "body_timeout",
                f"body: not received within {seconds:g} s ({size} bytes came)",
                {"connection": "close"},
            ) from None
        finally:
            self.deadlines.stop(task)
        first: dict[str, Any] = disconnect or {
            "type": "http.request",
            "body": chunks[0] if len(chunks) == 1 else b"".join(chunks),
            "more_body": False,
        }
        given = False

        async def replay() -> dict[str, Any]:
            nonlocal given
            if given:
                return await receive()  # what comes after the body: the client's disconnect
            given = True
            return first

        return replay


def _address(scope: dict[str, Any]) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def _declared_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


async def _answer(send: Any, refusal: Refusal) -> None:
    body = json.dumps({"error": str(refusal)}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *((name.encode(), value.encode()) for name, value in refusal.headers.items()),
    ]
    await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
