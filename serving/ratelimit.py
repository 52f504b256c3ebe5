"""Local rate limit: a token bucket per client, as an ASGI middleware answering 429 with ``Retry-After``.

On the cluster Envoy's ``local_ratelimit`` filter does this at the sidecar
(helm/housing-kserve/templates/edge.yaml); locally the transformer and the detector do it in process, so
that ``housing up`` behaves like the cluster. A client is its verified principal (:mod:`serving.auth`, when
authentication is on), else its address. Each client's bucket holds up to ``burst`` tokens and refills at
``rate`` tokens a second; a request takes one or is refused.

Why not a library: ``slowapi`` (on ``limits``) decorates FastAPI routes one by one (KServe's routes are not
ours to decorate) and counts fixed or moving windows rather than a token bucket; one event loop needs no
storage back-end or lock, and the bucket is a few lines.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from starlette.responses import JSONResponse

from serving.auth import PRINCIPAL, Rule, required_role
from serving.metrics import RATE_LIMITED

MAX_CLIENTS = 10_000
"""Buckets kept at most; the least recently seen client's is dropped first (a full bucket is the default)."""


class TokenBucketLimiter:
    """A token bucket per client key, for use on one event loop.

    Args:
        rate: Tokens added a second (requests a second a client may sustain); more than 0.
        burst: Tokens a bucket holds at most (requests a client may send at once); at least 1.
        max_clients: Buckets kept at most.
        clock: Seconds, monotonic (tests pass their own).

    Raises:
        ValueError: ``rate`` is not more than 0 or ``burst`` is less than 1.
    """

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        max_clients: int = MAX_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ):
        if not rate > 0 or math.isinf(rate):
            raise ValueError(f"the rate must be a positive number of requests a second, got {rate}")
        if not burst >= 1 or math.isinf(burst):
            raise ValueError(f"the burst must be at least 1 request, got {burst}")
        self.rate = rate
        self.burst = burst
        self.max_clients = max_clients
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)

    def take(self, key: str) -> float:
        """Take a token from ``key``'s bucket.

        Returns:
            0 when the request may go, else the seconds until a token is back.
        """
        now = self.clock()
        tokens, at = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / self.rate
        self._buckets[key] = (tokens, now)  # most recently seen last
        if len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return wait


class RateLimitMiddleware:
    """ASGI middleware limiting each client's rate on the protected paths (the others stay unlimited).

    Args:
        app: The ASGI app.
        limiter: The buckets.
        limited: The paths limited (the same rules as authentication's; their roles are not used here).
        component: The ``component`` label of ``housing_requests_rate_limited_total``.
    """

    def __init__(self, app: Any, limiter: TokenBucketLimiter, limited: Sequence[Rule], component: str):
        self.app = app
        self.limiter = limiter
        self.limited = limited
        self.refused = RATE_LIMITED.labels(component=component)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Pass the request on, or answer 429 when its client's bucket is empty."""
        if scope["type"] != "http" or required_role(scope["path"], self.limited) is None:
            await self.app(scope, receive, send)
            return
        wait = self.limiter.take(client_key(scope))
        if wait > 0:
            self.refused.inc()
            seconds = math.ceil(wait)
            refusal = JSONResponse(
                {
                    "error": f"rate limit: more than {self.limiter.rate:g} requests a second (burst "
                    f"{self.limiter.burst:g}) from this client; retry in {seconds} s"
                },
                429,
                headers={"Retry-After": str(seconds)},
            )
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)


def client_key(scope: dict[str, Any]) -> str:
    """The verified principal's name, else the client's address."""
    principal = scope.get("state", {}).get(PRINCIPAL)
    if principal is not None:
        return str(principal.name)
    client = scope.get("client")
    return f"address:{client[0]}" if client else "address:unknown"
