"""The local edge: authentication, rate limit and CORS in front of a server's app, configured by flags.

The transformer and the detector declare the same flags (:func:`add_edge_arguments`), read them once into an
:class:`EdgeSettings` (:func:`edge_settings`, which refuses contradictory values at start-up) and wrap their
app (:func:`install_edge`) with, from the outside in:

1. Starlette's ``CORSMiddleware``, only when origins are allowed (none by default): it answers preflights
   for allowed origins and refuses the others with 400, before any credential is asked for (browsers send
   none with a preflight);
2. :class:`serving.auth.AuthMiddleware` (``--auth``): 401/403 on the protected paths;
3. :class:`serving.ratelimit.RateLimitMiddleware` (``--rate_limit``): 429 with ``Retry-After`` beyond a
   client's rate, keyed on the principal authentication verified, else the address.

Everything is off by default: on loopback the stack serves one user. The cluster's edge is Istio's
(helm/housing-kserve/templates/edge.yaml), with the same defaults and refusals.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serving.auth import API_KEYS_ENV, Authenticator, AuthMiddleware, JwtSettings, parse_api_keys, rules
from serving.ratelimit import RateLimitMiddleware, TokenBucketLimiter

JWT_SECRET_ENV = "HOUSING_JWT_SECRET"  # pragma: allowlist secret (a variable name)
"""The HS256 shared secret (an environment variable, not a flag: flags show in ``ps``)."""


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
    """

    authenticator: Authenticator | None = None
    rate: float | None = None
    burst: float = 1.0
    cors_origins: tuple[str, ...] = ()
    cors_methods: tuple[str, ...] = ("GET", "POST")
    cors_headers: tuple[str, ...] = field(default=())
    cors_credentials: bool = False


def add_edge_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the edge's flags (KServe-style ``--snake_case``) on ``parser``."""
    edge = parser.add_argument_group("edge (authentication, rate limit, CORS; all off by default)")
    edge.add_argument(
        "--auth",
        action="store_true",
        default=os.environ.get("HOUSING_AUTH", "").lower() in ("1", "true", "yes"),
        help="require a credential with the right role on the protected routes (env HOUSING_AUTH=1); "
        f"API keys from --api_keys_file or env {API_KEYS_ENV}, JWTs with --jwt_public_key or env "
        f"{JWT_SECRET_ENV}",
    )
    edge.add_argument(
        "--api_keys_file",
        type=Path,
        default=os.environ.get("HOUSING_API_KEYS_FILE"),
        help="file of KEY=ROLE[,ROLE] lines (roles: predict, feedback; env HOUSING_API_KEYS_FILE)",
    )
    edge.add_argument("--jwt_public_key", type=Path, help="PEM public key verifying RS256 JWTs")
    edge.add_argument("--jwt_issuer", help="the JWTs' required iss claim (default: not checked)")
    edge.add_argument("--jwt_audience", help="the JWTs' required aud claim (default: not checked)")
    edge.add_argument("--jwt_roles_claim", default="roles", help="the claim listing a JWT's roles")
    edge.add_argument(
        "--rate_limit",
        type=float,
        help="requests a second each client (credential, else address) may sustain on the protected "
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
    return EdgeSettings(
        authenticator=authenticator,
        rate=args.rate_limit,
        burst=burst,
        cors_origins=origins,
        cors_methods=tuple(method.upper() for method in _split(args.cors_allow_methods)),
        cors_headers=_split(args.cors_allow_headers),
        cors_credentials=args.cors_allow_credentials,
    )


def install_edge(app: Any, settings: EdgeSettings, protected: Mapping[str, str], component: str) -> None:
    """Wrap ``app`` (Starlette or FastAPI, not started yet) with the edge ``settings`` ask for.

    Args:
        app: The app.
        settings: What to turn on.
        protected: Path regular expression -> the role it needs; these paths are also the rate-limited ones.
        component: The ``component`` label of the edge's metrics.
    """
    from starlette.middleware.cors import CORSMiddleware

    compiled = rules(protected)
    # Starlette's add_middleware puts each new middleware outside the ones before: add from the inside out.
    if settings.rate is not None:
        limiter = TokenBucketLimiter(settings.rate, settings.burst)
        app.add_middleware(RateLimitMiddleware, limiter=limiter, limited=compiled, component=component)
    if settings.authenticator is not None:
        app.add_middleware(
            AuthMiddleware, authenticator=settings.authenticator, protected=compiled, component=component
        )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=list(settings.cors_methods),
            allow_headers=list(settings.cors_headers),
            allow_credentials=settings.cors_credentials,
            expose_headers=["x-request-id", "retry-after"],
        )


def _api_keys(args: argparse.Namespace) -> dict[str, frozenset[str]]:
    keys = parse_api_keys(os.environ.get(API_KEYS_ENV, ""), API_KEYS_ENV)
    if args.api_keys_file is not None:
        from_file = parse_api_keys(Path(args.api_keys_file).read_text(), str(args.api_keys_file))
        keys.update(from_file)
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
    return JwtSettings(key, (algorithm,), args.jwt_issuer, args.jwt_audience, args.jwt_roles_claim)


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())
