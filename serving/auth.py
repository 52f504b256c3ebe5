"""Local authentication: API keys or JWTs, one role per protected path, as an ASGI middleware.

On the cluster, Istio checks Entra ID tokens at the gateway (``RequestAuthentication`` and
``AuthorizationPolicy``, helm/housing-kserve/templates/edge.yaml); locally, ``housing up --auth`` has the
transformer and the detector make the same decisions in process with this module:

- a credential is ``Authorization: Bearer <credential>`` or ``X-API-Key: <key>``;
- an API key is looked up by its sha256 (keys come from ``--api_keys_file`` or ``HOUSING_API_KEYS``, see
  :func:`parse_api_keys`); a bearer credential that is not a known key and looks like a JWT is verified
  with PyJWT (HS256 with a shared secret or RS256 with a public key; expiry required; issuer and audience
  checked when configured); its roles are the ``roles`` claim (Entra ID's app roles), a list or a
  space-separated string;
- a protected path without a credential, or with one that does not verify, is answered 401 with
  ``WWW-Authenticate: Bearer`` (RFC 6750); a verified credential without the path's role, 403;
- every other path (health, readiness, metrics, metadata, the detector's event ingest) stays open, as the
  probes and Prometheus need it.

The verified principal goes into the request's ``scope["state"]`` for the rate limiter
(:mod:`serving.ratelimit`) to key on. Why a pure ASGI middleware rather than a FastAPI dependency: the same
code guards KServe's own routes (which take no extra dependencies) and the detector's Starlette app, and
refuses before a body is read.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from starlette.responses import JSONResponse

from serving.metrics import AUTH_REFUSED

API_KEYS_ENV = "HOUSING_API_KEYS"  # pragma: allowlist secret (a variable name)
"""API keys in the environment: ``KEY=ROLE[,ROLE]`` entries separated by ``;`` or new lines."""

PRINCIPAL = "principal"
"""The key of the verified :class:`Principal` in the ASGI scope's ``state``."""

_REALM = 'Bearer realm="housing"'


@dataclass(frozen=True)
class Principal:
    """Who a verified credential belongs to.

    Attributes:
        name: ``key:<first 12 hex digits of its sha256>`` for an API key (never the key itself),
            ``jwt:<sub claim>`` for a JWT; the rate limiter's key.
        roles: What it may do (``predict``, ``feedback``).
    """

    name: str
    roles: frozenset[str]


class AuthError(Exception):
    """A credential that is missing or does not verify (401).

    Attributes:
        reason: ``missing`` or ``invalid`` (the label of ``housing_auth_refused_total``).
    """

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class JwtSettings:
    """How JWTs are verified.

    Attributes:
        key: The HS256 shared secret, or the RS256 public key (PEM).
        algorithms: The accepted algorithms (one: ``HS256`` or ``RS256``; never ``none``).
        issuer: The required ``iss`` claim, or ``None`` not to check it.
        audience: The required ``aud`` claim, or ``None`` not to check it.
        roles_claim: The claim that lists the roles.
    """

    key: str | bytes = field(repr=False)
    algorithms: tuple[str, ...]
    issuer: str | None = None
    audience: str | None = None
    roles_claim: str = "roles"


def parse_api_keys(text: str, source: str) -> dict[str, frozenset[str]]:
    """``KEY=ROLE[,ROLE]`` entries, one a line or separated by ``;`` (``#`` starts a comment) -> key -> roles.

    Args:
        text: The entries.
        source: Where they come from, for messages (a file name or ``HOUSING_API_KEYS``).

    Raises:
        ValueError: An entry without a key or a role, or a key given twice.
    """
    keys: dict[str, frozenset[str]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        for entry in line.split("#", 1)[0].split(";"):
            if not entry.strip():
                continue
            key, _, roles = entry.strip().partition("=")
            role_set = frozenset(role.strip() for role in roles.split(",") if role.strip())
            if not key.strip() or not role_set:
                raise ValueError(f"{source}, line {number}: an entry must be KEY=ROLE[,ROLE]")
            if key.strip() in keys:
                raise ValueError(f"{source}, line {number}: a key is given twice")
            keys[key.strip()] = role_set
    return keys


class Authenticator:
    """Verifies a request's credential: an API key, else a JWT.

    Args:
        api_keys: Key -> roles (stored by sha256, so the keys themselves are not kept in memory).
        jwt: How JWTs are verified, or ``None`` to accept API keys only.

    Raises:
        ValueError: Neither API keys nor a JWT setting is given: nobody could be let in.
    """

    def __init__(self, api_keys: Mapping[str, Iterable[str]] | None = None, jwt: JwtSettings | None = None):
        if not api_keys and jwt is None:
            raise ValueError("authentication needs API keys or a JWT key: nobody could be let in")
        self._keys = {
            _digest(key): Principal(f"key:{_digest(key)[:12]}", frozenset(roles))
            for key, roles in (api_keys or {}).items()
        }
        self.jwt = jwt

    def authenticate(self, headers: Mapping[str, str]) -> Principal:
        """The principal of the request's credential.

        Args:
            headers: The request headers, names in lower case.

        Raises:
            AuthError: No credential, or one that does not verify.
        """
        credential = headers.get("x-api-key")
        if credential is None:
            scheme, _, credential = headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not credential.strip():
                raise AuthError(
                    "authorization: missing; send 'Authorization: Bearer <token or API key>' "
                    "or 'X-API-Key: <key>'",
                    "missing",
                )
        credential = credential.strip()
        principal = self._keys.get(_digest(credential))
        if principal is not None:
            return principal
        if self.jwt is not None and credential.count(".") == 2:
            return self._verify_jwt(credential, self.jwt)
        raise AuthError("authorization: unknown API key", "invalid")

    @staticmethod
    def _verify_jwt(token: str, settings: JwtSettings) -> Principal:
        import jwt  # PyJWT: imported only when JWTs are configured

        try:
            claims = jwt.decode(
                token,
                settings.key,
                algorithms=list(settings.algorithms),
                issuer=settings.issuer,
                audience=settings.audience,
                options={
                    "require": [
                        "exp",
                        *(["iss"] if settings.issuer else []),
                        *(["aud"] if settings.audience else []),
                    ],
                    "verify_aud": settings.audience is not None,
                },
            )
        except jwt.PyJWTError as error:
            raise AuthError(f"authorization: invalid token: {error}", "invalid") from None
        roles = claims.get(settings.roles_claim, [])
        if isinstance(roles, str):
            roles = roles.split()
        if not isinstance(roles, list):
            raise AuthError(f"authorization: claim {settings.roles_claim!r} must be a list", "invalid")
        return Principal(f"jwt:{claims.get('sub', '')}", frozenset(str(role) for role in roles))


@dataclass(frozen=True)
class Rule:
    """A protected path pattern and the role it needs."""

    pattern: re.Pattern[str]
    role: str


def rules(protected: Mapping[str, str]) -> tuple[Rule, ...]:
    """Regular expression of a path -> role, compiled."""
    return tuple(Rule(re.compile(pattern), role) for pattern, role in protected.items())


def required_role(path: str, protected: Sequence[Rule]) -> str | None:
    """The role ``path`` needs, or ``None`` for an open path."""
    return next((rule.role for rule in protected if rule.pattern.match(path)), None)


class AuthMiddleware:
    """ASGI middleware answering 401/403 for protected paths without the right credential.

    Args:
        app: The ASGI app.
        authenticator: Verifies credentials.
        protected: The protected paths and their roles (see :func:`rules`).
        component: The ``component`` label of ``housing_auth_refused_total``.
    """

    def __init__(self, app: Any, authenticator: Authenticator, protected: Sequence[Rule], component: str):
        self.app = app
        self.authenticator = authenticator
        self.protected = protected
        self.component = component

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Pass open paths on; check the credential of protected ones."""
        role = required_role(scope["path"], self.protected) if scope["type"] == "http" else None
        if role is None:
            await self.app(scope, receive, send)
            return
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]
        }
        try:
            principal = self.authenticator.authenticate(headers)
        except AuthError as error:
            AUTH_REFUSED.labels(component=self.component, reason=error.reason).inc()
            challenge = _REALM if error.reason == "missing" else f'{_REALM}, error="invalid_token"'
            refusal = JSONResponse({"error": str(error)}, 401, headers={"WWW-Authenticate": challenge})
            await refusal(scope, receive, send)
            return
        if role not in principal.roles:
            AUTH_REFUSED.labels(component=self.component, reason="forbidden").inc()
            held = ", ".join(sorted(principal.roles)) or "none"
            refusal = JSONResponse(
                {"error": f"authorization: {scope['path']} needs role {role!r}; the credential has {held}"},
                403,
                headers={"WWW-Authenticate": f'{_REALM}, error="insufficient_scope", scope="{role}"'},
            )
            await refusal(scope, receive, send)
            return
        scope.setdefault("state", {})[PRINCIPAL] = principal
        await self.app(scope, receive, send)


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()
