"""Every server's edge: listener address, authentication, rate limits and input limits, from the policy table.

Every server (predictor, transformer, explainer, detector) declares the same flags
(:func:`add_edge_arguments`), reads them once into an :class:`EdgeSettings` (:func:`edge_settings`, which
refuses contradictory values at start-up) and wraps its app (:func:`install_edge`) with, from the outside in:

1. Starlette's ``CORSMiddleware``, only when origins are allowed (none by default): it answers preflights
   for allowed origins and refuses the others with 400, before any credential is asked for;
2. :class:`serving.guard.EdgeMiddleware`, one pure ASGI middleware that decides each request from its
   route's row in :mod:`serving.policy`, before the body is parsed and before the server admits it:

   - a path the table does not list: 404; a route whose flag is off (the V2 repository API): 404 naming it;
   - a header over ``--max_header_bytes``, or all of them over four times that: 431 naming the header (a
     request id's own rule, 256 characters, is the payload rules', a 400);
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
from pathlib import Path
from typing import Any

from serving import policy
from serving.auth import API_KEYS_ENV, Authenticator, JwtSettings, parse_api_keys
from serving.guard import (
    AUTH_FAILURE_BURST,
    AUTH_FAILURES_PER_MINUTE,
    LOOPBACK,
    EdgeMiddleware,
    EdgeSettings,
)

__all__ = ["EdgeSettings", "add_edge_arguments", "edge_settings", "install_edge", "uvicorn_options"]

JWT_SECRET_ENV = "HOUSING_JWT_SECRET"  # pragma: allowlist secret (a variable name)
"""The HS256 shared secret (an environment variable, not a flag: flags show in ``ps``)."""
BIND_ADDRESS_ENV = "BIND_ADDRESS"


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
        help="largest value of one request header; all together at most four times this; beyond: 431 "
        "(default %(default)s)",
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
            if not self.head or self.transport.is_closing():
                return  # the head is complete (None), or the request too and nothing of the next came (0)
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

    if component not in policy.ROUTES:
        raise ValueError(f"{component!r} has no routes in serving/policy.py ({', '.join(policy.ROUTES)})")
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
