"""Local authentication: API keys or JWTs, and the roles they hold.

On the cluster, Istio checks Entra ID tokens at the gateway (``RequestAuthentication`` and
``AuthorizationPolicy``, helm/housing-kserve/templates/edge.yaml); locally, ``housing up --auth`` has each
server make the same decisions in process (:mod:`serving.edge`, the role of each route from
:mod:`serving.policy`), with this module:

- a credential is ``Authorization: Bearer <credential>`` or ``X-API-Key: <key>``; a request carrying two
  (the same header twice, or both headers with different values) is refused, never one picked;
- an API key is looked up by its sha256 (keys come from ``--api_keys_file`` or ``HOUSING_API_KEYS``, see
  :func:`parse_api_keys`); a bearer credential that is not a known key and looks like a JWT is verified
  with PyJWT (HS256 with a shared secret or RS256 with a public key; expiry and audience required, issuer
  checked when configured; ``exp``, ``nbf`` and ``iat`` must be numbers); its roles are the ``roles`` claim
  (Entra ID's app roles), a list or a space-separated string.

The verified :class:`Principal` goes into the request's ``scope["state"]`` for the rate limiter to key on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

API_KEYS_ENV = "HOUSING_API_KEYS"  # pragma: allowlist secret (a variable name)
"""API keys in the environment: ``KEY=ROLE[,ROLE]`` entries separated by ``;`` or new lines."""

PRINCIPAL = "principal"
"""The key of the verified :class:`Principal` in the ASGI scope's ``state``."""


@dataclass(frozen=True)
class Principal:
    """Who a verified credential belongs to.

    Attributes:
        name: ``key:<first 12 hex digits of its sha256>`` for an API key (never the key itself),
            ``jwt:<sub claim>`` for a JWT; the rate limiter's key.
        roles: What it may do (:data:`serving.policy.ROLES`).
    """

    name: str
    roles: frozenset[str]


class AuthError(Exception):
    """A credential that is missing, does not verify (401), or is given twice (400).

    Attributes:
        reason: ``missing``, ``invalid`` or ``ambiguous`` (the label of ``housing_auth_refused_total``).
        status: The HTTP status to answer.
    """

    def __init__(self, message: str, reason: str, status: int = 401):
        super().__init__(message)
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class JwtSettings:
    """How JWTs are verified.

    Attributes:
        key: The HS256 shared secret, or the RS256 public key (PEM).
        algorithms: The accepted algorithms (one: ``HS256`` or ``RS256``; never ``none``).
        issuer: The required ``iss`` claim, or ``None`` not to check it.
        audience: The required ``aud`` claim: a token minted for another service is refused.
        roles_claim: The claim that lists the roles.
    """

    key: str | bytes = field(repr=False)
    algorithms: tuple[str, ...]
    issuer: str | None = None
    audience: str = ""
    roles_claim: str = "roles"

    def __post_init__(self) -> None:
        if not self.audience:
            raise ValueError("JWTs need an audience (--jwt_audience): else a token for any service passes")


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

    def authenticate(self, headers: Sequence[tuple[bytes, bytes]]) -> Principal:
        """The principal of the request's credential.

        Args:
            headers: The request headers as the ASGI scope has them (names in lower case).

        Raises:
            AuthError: No credential, one that does not verify, or two.
        """
        credential = _credential(headers)
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
                options={"require": ["exp", "aud", *(["iss"] if settings.issuer else [])]},
            )
        except jwt.PyJWTError as error:
            raise AuthError(f"authorization: invalid token: {error}", "invalid") from None
        for claim in ("exp", "nbf", "iat"):  # PyJWT takes "exp": "1999999999" (a string) as a time
            value = claims.get(claim)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise AuthError(f"authorization: invalid token: claim {claim!r} must be a number", "invalid")
        if not isinstance(claims.get("sub", ""), str):
            raise AuthError("authorization: invalid token: claim 'sub' must be a string", "invalid")
        roles = claims.get(settings.roles_claim, [])
        if isinstance(roles, str):
            roles = roles.split()
        if not isinstance(roles, list):
            raise AuthError(f"authorization: claim {settings.roles_claim!r} must be a list", "invalid")
        return Principal(f"jwt:{claims.get('sub', '')}", frozenset(str(role) for role in roles))


def _credential(headers: Sequence[tuple[bytes, bytes]]) -> str:
    """The one credential of a request: ``X-API-Key``, else ``Authorization: Bearer``.

    Raises:
        AuthError: None, or two that differ (a proxy and a client could each read a different one).
    """
    keys = [value for name, value in headers if name == b"x-api-key"]
    authorizations = [value for name, value in headers if name == b"authorization"]
    if len(keys) > 1 or len(authorizations) > 1:
        raise AuthError(
            "authorization: the credential is given more than once; send one 'Authorization' or one "
            "'X-API-Key' header",
            "ambiguous",
            400,
        )
    bearer = None
    if authorizations:
        scheme, _, token = authorizations[0].decode("latin-1").partition(" ")
        bearer = token.strip() if scheme.lower() == "bearer" and token.strip() else None
        if bearer is None and not keys:
            raise AuthError("authorization: only 'Bearer <token or API key>' is accepted", "missing")
    key = keys[0].decode("latin-1").strip() if keys else None
    if key is not None and authorizations and bearer != key:
        raise AuthError(
            "authorization: X-API-Key and Authorization carry different credentials; send one",
            "ambiguous",
            400,
        )
    credential = key if key is not None else bearer
    if not credential:
        raise AuthError(
            "authorization: missing; send 'Authorization: Bearer <token or API key>' or 'X-API-Key: <key>'",
            "missing",
        )
    return credential


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()
