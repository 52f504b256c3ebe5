"""Every server's edge: listener address, authentication, rate limits and input limits, from the policy table.

Every server (predictor, transformer, explainer, detector) declares the same flags
(:func:`add_edge_arguments`), reads them once into an :class:`EdgeSettings` (:func:`edge_settings`, which
refuses contradictory values at start-up) and wraps its app (:func:`install_edge`) with, from the outside in:

1. Starlette's ``CORSMiddleware``, only when origins are allowed (none by default): it answers preflights
   for allowed origins and refuses the others with 400, before any credential is asked for;
2. :class:`EdgeMiddleware`, one pure ASGI middleware that decides each request from its route's row in
   :mod:`serving.policy`, before the body is parsed and before the server admits it:

   - a path the table does not list: 404; a route whose flag is off (the V2 repository API): 404 naming it;
   - a header over ``--max_header_bytes`` (``x-request-id`` over 256 bytes), or all of them over four times
     that: 431 naming the header;
   - with ``--auth``, a route whose role is checked: 401 without a verified credential (400 with two), 403
     without the role; an address whose failed attempts outrun ``--auth_failures_per_minute`` gets 429
     before its credential is even looked at;
   - ``--rate_limit``: 429 with ``Retry-After`` beyond a client's rate; ``--max_in_flight_per_client``: 429
     while the client already has that many requests in flight (counted from their first byte);
   - the body: ``Content-Length`` over the route's byte limit is 413 at once; a streamed body is counted as
     it arrives (413 once over), and one not complete within the route's seconds is 408. The app then
     gets the whole body at once: a slow client holds no place in the server's admission while it sends.

The listener itself (:func:`uvicorn_options`) binds ``--bind_address`` (127.0.0.1 unless told otherwise),
trusts forwarding headers (``X-Forwarded-For``) only from ``--trusted_proxies`` (none by default; uvicorn's
own proxy headers middleware does the rewriting): the address a client is limited by is then its own; and
bounds each request's head before the app sees it: uvicorn's httptools protocol buffers a header of any
size (8 MB went through) and waits for a slow one for ever, so its subclass here answers 431 beyond eight
times ``--max_header_bytes`` (64 KiB) and 408 when the head takes longer than
:data:`serving.policy.HEAD_SECONDS`.

On the cluster Istio does the same at the gateway and the sidecars (helm/housing-kserve/templates/edge.yaml,
docs/security.md); authentication and rate limits are off by default on loopback, the input limits on.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serving import policy
from serving.auth import API_KEYS_ENV, PRINCIPAL, Authenticator, AuthError, JwtSettings, parse_api_keys
from serving.metrics import AUTH_REFUSED, EDGE_REFUSED, RATE_LIMITED
from serving.ratelimit import ClientSlots, TokenBucketLimiter

JWT_SECRET_ENV = "HOUSING_JWT_SECRET"  # pragma: allowlist secret (a variable name)
"""The HS256 shared secret (an environment variable, not a flag: flags show in ``ps``)."""
BIND_ADDRESS_ENV = "BIND_ADDRESS"
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
        max_header_bytes: The largest header value (``x-request-id``: :data:`serving.policy.ID_HEADER_BYTES`).
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


def add_edge_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the edge's flags (KServe-style ``--snake_case``) on ``parser``."""
    listener = parser.add_argument_group("listener and input limits (serving/policy.py has each route's)")
    listener.add_argument(
        "--bind_address",
        default=os.environ.get(BIND_ADDRESS_ENV, LOOPBACK),
        help="the address every listener (HTTP and gRPC) binds: 0.0.0.0 in a container or pod "
        f"(env {BIND_ADDRESS_ENV}; default: %(default)s)",
    )
    listener.add_argument(
        "--trusted_proxies",
        default=os.environ.get("TRUSTED_PROXIES", ""),
        help="comma-separated addresses or networks of proxies whose X-Forwarded-For names the client "
        "(e.g. Istio's sidecar, 127.0.0.6); others' forwarding headers are ignored (env TRUSTED_PROXIES; "
        "default: none)",
    )
    listener.add_argument(
        "--request_limits",
        choices=("on", "off"),
        default="on",
        help="the byte, time and header limits (off only to measure what they cost; default: on)",
    )
    listener.add_argument(
        "--max_body_bytes",
        type=int,
        help="largest request body on every route that takes one; larger: 413 before it is read "
        "(default: each route's, serving/policy.py)",
    )
    listener.add_argument(
        "--max_body_seconds",
        type=float,
        help="seconds a client has to send a whole body, from its request's start; slower: 408 "
        "(default: each route's, serving/policy.py)",
    )
    listener.add_argument(
        "--max_header_bytes",
        type=int,
        default=policy.HEADER_BYTES,
        help="largest value of one request header (x-request-id: at most "
        f"{policy.ID_HEADER_BYTES}); all together at most four times this; beyond: 431 (default %(default)s)",
    )
    listener.add_argument(
        "--max_in_flight_per_client",
        type=int,
        help="requests one client (credential, else address) may have in flight on the metered routes, "
        "from their first byte to their answer; more: 429 (default: none; the transformer: half its "
        "--max_in_flight)",
    )
    edge = parser.add_argument_group("edge (authentication, rate limit, CORS; all off by default)")
    edge.add_argument(
        "--auth",
        action="store_true",
        default=os.environ.get("HOUSING_AUTH", "").lower() in ("1", "true", "yes"),
        help="require a credential with the route's role (serving/policy.py) (env HOUSING_AUTH=1); "
        f"API keys from --api_keys_file or env {API_KEYS_ENV}, JWTs with --jwt_public_key or env "
        f"{JWT_SECRET_ENV}",
    )
    edge.add_argument(
        "--api_keys_file",
        type=Path,
        default=os.environ.get("HOUSING_API_KEYS_FILE"),
        help=f"file of KEY=ROLE[,ROLE] lines (roles: {', '.join(_checked_roles())}; env "
        "HOUSING_API_KEYS_FILE)",
    )
    edge.add_argument("--jwt_public_key", type=Path, help="PEM public key verifying RS256 JWTs")
    edge.add_argument("--jwt_issuer", help="the JWTs' required iss claim (default: not checked)")
    edge.add_argument("--jwt_audience", help="the JWTs' required aud claim (required with JWTs)")
    edge.add_argument("--jwt_roles_claim", default="roles", help="the claim listing a JWT's roles")
    edge.add_argument(
        "--auth_failures_per_minute",
        type=float,
        default=AUTH_FAILURES_PER_MINUTE,
        help="failed authentications an address may sustain; beyond (after a burst of "
        f"{AUTH_FAILURE_BURST:g}) its requests get 429 before any credential is checked "
        "(default %(default)s)",
    )
    edge.add_argument(
        "--rate_limit",
        type=float,
        help="requests a second each client (credential, else address) may sustain on the metered "
        "routes; more get 429 with Retry-After (default: no limit)",
    )
    edge.add_argument(
        "--rate_burst", type=float, help="requests a client may send at once (default: the rate, at least 1)"
    )
    edge.add_argument(
        "--cors_allow_origins",
        default="",
        help="comma-separated origins browsers may call from, e.g. https://app.example.com (default: none)",
    )
    edge.add_argument(
        "--cors_allow_methods", default="GET,POST", help="comma-separated methods allowed cross-origin"
    )
    edge.add_argument(
        "--cors_allow_headers",
        default="",
        help="comma-separated request headers allowed cross-origin beyond the safelisted ones "
        "(e.g. authorization,x-api-key)",
    )
    edge.add_argument(
        "--cors_allow_credentials",
        action="store_true",
        help="let browsers send credentials cross-origin (refused with origin '*')",
    )


def edge_settings(args: argparse.Namespace, parser: argparse.ArgumentParser) -> EdgeSettings:
    """The edge the parsed flags ask for; a contradictory or unusable value is a usage error (exit 2)."""
    authenticator = None
    if args.auth:
        try:
            authenticator = Authenticator(_api_keys(args), _jwt_settings(args))
        except (OSError, ValueError) as error:
            parser.error(f"--auth: {error}")
    if args.rate_limit is not None and not (args.rate_limit > 0 and math.isfinite(args.rate_limit)):
        parser.error(f"--rate_limit must be more than 0 requests a second, got {args.rate_limit:g}")
    burst = args.rate_burst if args.rate_burst is not None else max(1.0, args.rate_limit or 1.0)
    if not (burst >= 1 and math.isfinite(burst)):
        parser.error(f"--rate_burst must be at least 1, got {burst:g}")
    origins = _split(args.cors_allow_origins)
    if "*" in origins and args.cors_allow_credentials:
        parser.error(
            "--cors_allow_origins '*' with --cors_allow_credentials would let any site call with the "
            "user's credentials; list the origins"
        )
    proxies = _split(args.trusted_proxies)
    for proxy in proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            parser.error(f"--trusted_proxies: {proxy!r} is not an address or a network")
    try:
        ipaddress.ip_address(args.bind_address)
    except ValueError:
        parser.error(f"--bind_address: {args.bind_address!r} is not an IP address")
    positive = {
        "--max_body_bytes": args.max_body_bytes,
        "--max_body_seconds": args.max_body_seconds,
        "--max_header_bytes": args.max_header_bytes,
        "--max_in_flight_per_client": args.max_in_flight_per_client,
        "--auth_failures_per_minute": args.auth_failures_per_minute,
    }
    for flag, value in positive.items():
        if value is not None and not (value > 0 and math.isfinite(value)):
            parser.error(f"{flag} must be more than 0, got {value:g}")
    return EdgeSettings(
        authenticator=authenticator,
        rate=args.rate_limit,
        burst=burst,
        cors_origins=origins,
        cors_methods=tuple(method.upper() for method in _split(args.cors_allow_methods)),
        cors_headers=_split(args.cors_allow_headers),
        cors_credentials=args.cors_allow_credentials,
        bind_address=args.bind_address,
        trusted_proxies=proxies,
        request_limits=args.request_limits == "on",
        max_body_bytes=args.max_body_bytes,
        max_body_seconds=args.max_body_seconds,
        max_header_bytes=args.max_header_bytes,
        max_in_flight_per_client=args.max_in_flight_per_client,
        auth_failures_per_minute=args.auth_failures_per_minute,
    )


def uvicorn_options(settings: EdgeSettings) -> dict[str, Any]:
    """The uvicorn ``Config`` options of the listener: its address, and whose forwarding headers count.

    uvicorn believes ``X-Forwarded-For`` from 127.0.0.1 by default: any local process could then be any
    client to the rate limit. Here no one is believed unless ``--trusted_proxies`` names it.
    """
    options: dict[str, Any] = {
        "host": settings.bind_address,
        "proxy_headers": bool(settings.trusted_proxies),
        "forwarded_allow_ips": list(settings.trusted_proxies) or None,
    }
    if settings.request_limits:
        options.update(_bounded_head(8 * settings.max_header_bytes, policy.HEAD_SECONDS))
    return options


def _bounded_head(limit: int, seconds: float) -> dict[str, Any]:
    """Uvicorn's HTTP protocol with each request's head bounded to ``limit`` bytes and ``seconds``.

    Only a head that does not arrive complete in one read pays anything (a timer); without httptools,
    uvicorn's h11 protocol and its own bound (``h11_max_incomplete_event_size``) do the byte part.
    """
    try:
        from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
    except ImportError:
        return {"http": "h11", "h11_max_incomplete_event_size": limit}

    class BoundedHead(HttpToolsProtocol):
        head: int | None = 0  # bytes of the head so far; None once it is complete
        timer: asyncio.TimerHandle | None = None

        def data_received(self, data: bytes) -> None:
            if self.head is not None:
                self.head += len(data)
            super().data_received(data)
            if self.head is None or self.transport.is_closing():
                return
            if self.head > limit:
                self.refuse(431, f"request head over {limit} bytes")
            elif self.timer is None:
                self.timer = self.loop.call_later(
                    seconds, self.refuse, 408, f"head not received in {seconds:g} s"
                )

        def on_headers_complete(self) -> None:
            self.head = None
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self.head = 0

        def refuse(self, status: int, message: str) -> None:
            if self.head is None or self.transport.is_closing():
                return
            body = json.dumps({"error": message}).encode()
            length = str(len(body)).encode()
            head = b"content-type: application/json\r\nconnection: close\r\ncontent-length: " + length
            self.transport.write(STATUS_LINE[status] + head + b"\r\n\r\n" + body)
            self.transport.close()

        def connection_lost(self, exc: Exception | None) -> None:
            if self.timer is not None:
                self.timer.cancel()
            super().connection_lost(exc)

    return {"http": BoundedHead}


def install_edge(app: Any, settings: EdgeSettings, component: str, enabled: Iterable[str] = ()) -> None:
    """Wrap ``app`` (Starlette or FastAPI, not started yet) with the edge of ``component``.

    Args:
        app: The app.
        settings: What to turn on.
        component: Whose rows of :mod:`serving.policy` apply (and the ``component`` label of the metrics).
        enabled: The flags given that turn routes on (``--enable_repository_api``).
    """
    from starlette.middleware.cors import CORSMiddleware

    # Starlette's add_middleware puts each new middleware outside the ones before: add from the inside out.
    app.add_middleware(EdgeMiddleware, settings=settings, component=component, enabled=frozenset(enabled))
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=list(settings.cors_methods),
            allow_headers=list(settings.cors_headers),
            allow_credentials=settings.cors_credentials,
            expose_headers=["x-request-id", "retry-after"],
        )


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
        self.header_limits = {
            name.encode(): min(limit, settings.max_header_bytes)
            for name, limit in policy.HEADER_LIMITS.items()
        }
        self.rate_limited = RATE_LIMITED.labels(component=component)

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
            if size > limit or (name in self.header_limits and size > self.header_limits[name]):
                allowed = self.header_limits.get(name, limit)
                raise Refusal(
                    431,
                    "header_too_large",
                    f"header {name.decode('latin-1')}: {size} bytes, more than the limit of {allowed}",
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
        try:
            async with asyncio.timeout(seconds):
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
        except TimeoutError:
            raise Refusal(
                408,
                "body_timeout",
                f"body: not received within {seconds:g} s ({size} bytes came)",
                {"connection": "close"},
            ) from None
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


def _checked_roles() -> list[str]:
    return [role for role in policy.ROLES if role not in (policy.OPEN, policy.INTERNAL)]


def _api_keys(args: argparse.Namespace) -> dict[str, frozenset[str]]:
    keys = parse_api_keys(os.environ.get(API_KEYS_ENV, ""), API_KEYS_ENV)
    if args.api_keys_file is not None:
        from_file = parse_api_keys(Path(args.api_keys_file).read_text(), str(args.api_keys_file))
        keys.update(from_file)
    unknown = sorted({role for roles in keys.values() for role in roles} - set(_checked_roles()))
    if unknown:
        raise ValueError(f"unknown role {unknown[0]!r} (roles: {', '.join(_checked_roles())})")
    return keys


def _jwt_settings(args: argparse.Namespace) -> JwtSettings | None:
    secret = os.environ.get(JWT_SECRET_ENV)
    if args.jwt_public_key is not None and secret:
        raise ValueError(f"give --jwt_public_key (RS256) or {JWT_SECRET_ENV} (HS256), not both")
    if args.jwt_public_key is not None:
        key: str | bytes = Path(args.jwt_public_key).read_bytes()
        algorithm = "RS256"
    elif secret:
        if len(secret) < 32:  # RFC 7518 3.2: an HS256 key at least as long as the hash (256 bits)
            raise ValueError(f"{JWT_SECRET_ENV} must be at least 32 characters")
        key, algorithm = secret, "HS256"
    else:
        return None
    if not args.jwt_audience:
        raise ValueError("JWTs need --jwt_audience: without it a token minted for any service would pass")
    return JwtSettings(key, (algorithm,), args.jwt_issuer, args.jwt_audience, args.jwt_roles_claim)


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())
