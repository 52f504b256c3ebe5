"""Bounded latency under faults: a deadline per request, a circuit breaker per predictor, back-pressure.

- :class:`Deadline`: every request is answered within its deadline, counted from when the transformer starts
  handling it, whatever it waits for (the predictor's metadata, a batching slot, the predictor, a canary's
  fallback). The default is the predictor timeout; a client may ask for less with the ``x-request-timeout``
  header (seconds).
- :class:`CircuitBreaker`: after ``failures`` consecutive failed requests to one predictor it opens, and
  requests for that predictor are answered 503 at once, with ``Retry-After``, without calling it; after
  ``reset_seconds`` one request goes through as a probe (half-open): its success closes the breaker, its
  failure opens it again.
- :class:`Admission`: at most ``limit`` requests in flight or queued in the transformer; beyond, 503 at once.

Why not a library: ``pybreaker`` (1.4) is thread-based and supports coroutines only through Tornado;
``aiobreaker`` (1.2) is an asyncio port of an old pybreaker, not released for years; ``purgatory`` (3.0) is
asyncio-native and maintained, but is built around a breaker factory, an event bus and optional Redis storage.
One event loop needs none of that: the state machine below is a few lines, read synchronously by the metrics
and by the decision to refuse, with exactly one probe at a time (docs/serving.md).
"""

from __future__ import annotations

import contextvars
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from fastapi.responses import JSONResponse
from kserve.errors import InvalidInput

from serving.errors import PredictorUnavailableError, UpstreamError

DEFAULT_MAX_IN_FLIGHT = 128
"""Requests admitted at once: about 100 ms of work at the measured 1,300 requests/s (docs/serving.md)."""

TIMEOUT_HEADER = "x-request-timeout"
"""The client's own deadline in seconds (at most the transformer's default; shorter is honoured)."""

ADMITTED: contextvars.ContextVar[bool] = contextvars.ContextVar("admitted", default=False)
"""Set while a REST request holds the place :class:`AdmissionMiddleware` gave it."""

CLOSED, HALF_OPEN, OPEN = "closed", "half_open", "open"
STATE_VALUES = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}
"""The breaker's state as a number, for the ``housing_predictor_breaker_state`` gauge."""


@dataclass(frozen=True)
class Deadline:
    """When a request must be answered by.

    Attributes:
        at: The moment, on ``time.monotonic()``'s clock.
        seconds: The whole budget, for messages.
        shortened: The client asked for less than the default: its timeouts say nothing about the predictor's
            health, so they do not count towards the breaker.
    """

    at: float
    seconds: float
    shortened: bool = False

    @classmethod
    def start(cls, default: float, headers: dict[str, str] | None) -> Deadline:
        """A deadline from now: ``default`` seconds, or the client's shorter ``x-request-timeout``.

        Raises:
            InvalidInput: The header is not a positive number of seconds (a 400).
        """
        seconds, shortened = default, False
        asked = (headers or {}).get(TIMEOUT_HEADER)
        if asked is not None:
            try:
                value = float(asked)
            except ValueError:
                value = math.nan
            if not value > 0 or math.isinf(value):
                raise InvalidInput(f"{TIMEOUT_HEADER}: must be a positive number of seconds, got {asked!r}")
            seconds, shortened = min(value, default), value < default
        return cls(time.monotonic() + seconds, seconds, shortened)

    def remaining(self) -> float:
        """Seconds left (0 once passed)."""
        return max(0.0, self.at - time.monotonic())


class CircuitOpenError(PredictorUnavailableError):
    """The predictor's breaker is open: answered at once with 503 and ``Retry-After``."""


class OverloadedError(UpstreamError):
    """More requests are in flight than the transformer admits: 503 at once, with ``Retry-After``."""

    http_status = 503


class CircuitBreaker:
    """Consecutive-failure circuit breaker for one predictor, for use on one event loop.

    Args:
        name: What it guards, for messages (``the predictor at HOST``).
        failures: Consecutive failed requests that open it.
        reset_seconds: How long it stays open before a probe may go.
        on_change: Called with the new state at every transition (the metrics).
        on_refuse: Called for each request refused while open (the metrics).
        clock: Seconds, monotonic (tests pass their own).
    """

    def __init__(
        self,
        name: str,
        *,
        failures: int = 5,
        reset_seconds: float = 1.0,
        on_change: Callable[[str], None] | None = None,
        on_refuse: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        if failures < 1 or reset_seconds <= 0:
            raise ValueError("failures must be at least 1 and reset_seconds more than 0")
        self.name = name
        self.failures = failures
        self.reset_seconds = reset_seconds
        self.on_change = on_change
        self.on_refuse = on_refuse
        self.clock = clock
        self.state = CLOSED
        self._failed = 0
        self._opened_at = 0.0
        self._probing = False

    @contextmanager
    def guard(self, *, count_timeouts: bool = True) -> Iterator[None]:
        """Let one request through to the predictor, or refuse it at once; record how it ended.

        Args:
            count_timeouts: Whether a timeout counts as a failure (not if the client shortened the deadline).

        Raises:
            CircuitOpenError: The breaker is open, or half-open with its probe already out.
        """
        probe = self._admit()
        try:
            yield
        except UpstreamError as error:
            if count_timeouts or error.http_status != 504:
                self._record(success=False)
            elif probe:
                self._probing = False
            raise
        except BaseException:  # the client went away or validation failed: says nothing about the predictor
            if probe:
                self._probing = False
            raise
        else:
            self._record(success=True)

    def retry_after(self) -> int:
        """Whole seconds until a probe may go (at least 1): the ``Retry-After`` of a refusal."""
        return max(1, math.ceil(self._opened_at + self.reset_seconds - self.clock()))

    def _admit(self) -> bool:
        """Whether the request may go, and whether it is the half-open probe."""
        if self.state == OPEN and self.clock() - self._opened_at >= self.reset_seconds:
            self._set(HALF_OPEN)
        if self.state == CLOSED:
            return False
        if self.state == HALF_OPEN and not self._probing:
            self._probing = True
            return True
        if self.on_refuse is not None:
            self.on_refuse()
        retry_after = self.retry_after()
        raise CircuitOpenError(
            f"circuit breaker open: {self.name} failed {self.failures} times in a row; "
            f"not calling it for {retry_after} s",
            retry_after=retry_after,
        )

    def _record(self, *, success: bool) -> None:
        self._probing = False
        if success:
            self._failed = 0
            if self.state != CLOSED:
                self._set(CLOSED)
            return
        self._failed += 1
        if self.state == HALF_OPEN or self._failed >= self.failures:
            self._opened_at = self.clock()
            self._set(OPEN)

    def _set(self, state: str) -> None:
        self.state = state
        if self.on_change is not None:
            self.on_change(state)


class Admission:
    """At most ``limit`` requests in flight or queued; the rest are refused at once (back-pressure).

    Beyond what the predictor can serve, extra requests only queue: each waits longer, none is served sooner,
    and each holds its payload in memory. Refusing them at once keeps latency and memory bounded and tells
    clients (and load balancers) to go elsewhere or come back.

    Args:
        limit: Requests admitted at once.
        on_change: Called with the number in flight after each change (the gauge).
        on_refuse: Called for each request refused (the counter).
    """

    def __init__(
        self,
        limit: int,
        on_change: Callable[[int], None] | None = None,
        on_refuse: Callable[[], None] | None = None,
    ):
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.in_flight = 0
        self.on_change = on_change
        self.on_refuse = on_refuse

    def acquire(self) -> None:
        """Take a place for a request.

        Raises:
            OverloadedError: All ``limit`` places are taken.
        """
        if self.in_flight >= self.limit:
            if self.on_refuse is not None:
                self.on_refuse()
            raise OverloadedError(
                f"overloaded: {self.in_flight} requests in flight, the limit is {self.limit}; retry shortly",
                retry_after=1,
            )
        self.in_flight += 1
        self._changed()

    def release(self) -> None:
        """Give a place back."""
        self.in_flight -= 1
        self._changed()

    @contextmanager
    def admit(self) -> Iterator[None]:
        """Hold a place for the request's lifetime (see :meth:`acquire`)."""
        if ADMITTED.get():  # already admitted, before its body was read (:class:`AdmissionMiddleware`)
            yield
            return
        self.acquire()
        try:
            yield
        finally:
            self.release()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change(self.in_flight)


class AdmissionMiddleware:
    """ASGI middleware that admits REST inference requests before their body is read.

    A refusal then costs the transformer almost nothing (no body read, no JSON decoded, no KServe routing),
    which is what keeps goodput up under overload; gRPC requests are admitted in the model instead.

    Args:
        app: The ASGI app.
        admission: The transformer's :class:`Admission`, shared with the model.
    """

    def __init__(self, app: Any, admission: Admission):
        self.app = app
        self.admission = admission

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Refuse the request with a 503 at once when the transformer is full, else pass it on, admitted."""
        if scope["type"] != "http" or not scope["path"].endswith((":predict", "/infer")):
            await self.app(scope, receive, send)
            return
        try:
            self.admission.acquire()
        except OverloadedError as error:
            refusal = JSONResponse(
                {"error": str(error)}, 503, headers={"Retry-After": str(error.retry_after)}
            )
            await refusal(scope, receive, send)
            return
        token = ADMITTED.set(True)
        try:
            await self.app(scope, receive, send)
        finally:
            ADMITTED.reset(token)
            self.admission.release()
