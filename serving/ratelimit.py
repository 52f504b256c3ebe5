"""Local rate limits: a token bucket per client, and a cap on the requests one client has in flight.

On the cluster Envoy's ``local_ratelimit`` filter limits rates at the sidecar
(helm/housing-kserve/templates/edge.yaml); locally every server's edge (:mod:`serving.edge`) does it in
process, so that ``housing up`` behaves like the cluster. A client is its verified principal (when
authentication is on), else its address (the peer's, or the one a trusted proxy forwarded).

- :class:`TokenBucketLimiter`: each client's bucket holds up to ``burst`` tokens and refills at ``rate`` a
  second; a request takes one or is refused (429 with ``Retry-After``). The edge keeps one for requests
  (``--rate_limit``) and one for failed authentications per address (``--auth_failures_per_minute``), so
  that guessing keys costs time.
- :class:`ClientSlots`: at most ``limit`` requests of one client in flight, from their first byte to their
  answer (``--max_in_flight_per_client``): one client cannot hold all of a server's places, even with
  bodies sent a byte at a time.

Why not a library: ``slowapi`` (on ``limits``) decorates FastAPI routes one by one (KServe's routes are not
ours to decorate) and counts fixed or moving windows rather than a token bucket; one event loop needs no
storage back-end or lock, and the bucket is a few lines.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

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

    def peek(self, key: str) -> float:
        """Like :meth:`take`, without taking: 0 when ``key``'s bucket holds a token, else the wait."""
        tokens, at = self._buckets.get(key, (self.burst, 0.0))
        tokens = min(self.burst, tokens + (self.clock() - at) * self.rate)
        return 0.0 if tokens >= 1 else (1 - tokens) / self.rate


class ClientSlots:
    """At most ``limit`` requests of one client in flight at once, for use on one event loop.

    Args:
        limit: Requests one client may have in flight; at least 1.

    Raises:
        ValueError: ``limit`` is less than 1.
    """

    def __init__(self, limit: int):
        if limit < 1:
            raise ValueError(f"a client needs at least 1 request in flight, got {limit}")
        self.limit = limit
        self._held: dict[str, int] = {}  # only clients with requests in flight: bounded by the connections

    def acquire(self, key: str) -> bool:
        """Take a place for ``key``; ``False`` when it holds ``limit`` already."""
        held = self._held.get(key, 0)
        if held >= self.limit:
            return False
        self._held[key] = held + 1
        return True

    def release(self, key: str) -> None:
        """Give ``key``'s place back."""
        held = self._held[key] - 1
        if held:
            self._held[key] = held
        else:
            del self._held[key]
