"""Adaptive batching: rows of concurrent requests sent to the predictor together, in one call.

Each call to the predictor costs far more than the rows it carries (HTTP or gRPC, KServe's data plane and
scikit-learn's input checks: about 1 ms, against a few microseconds a row). So, like KServe's batcher and
Triton's dynamic batcher, the transformer merges the rows of requests that wait at the same time into one
call and hands each request its own slice of the answer. Nothing waits for a batch to fill: a request that
finds a free call slot goes at once, alone, so a lone client sees no added latency; requests only merge
while ``max_in_flight`` calls are already running, which is exactly when the predictor is the bottleneck.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any

import numpy as np

PredictorCall = Callable[[np.ndarray, list[Any]], Awaitable[tuple[np.ndarray, Any]]]
"""Sends rows to the predictor, given the ``context`` of each request they come from (in order); returns the
predictions and a note about the call that each of its requests gets too (the model version that answered).
"""


@dataclass(frozen=True)
class _Waiting:
    rows: np.ndarray
    key: Hashable
    context: Any
    future: asyncio.Future[tuple[np.ndarray, Any]]


COALESCE_ROWS = 256
"""The default most rows merged into one predictor call (measured: larger merges gained nothing here)."""


class Coalescer:
    """Merges the rows of waiting requests into predictor calls of at most ``max_rows`` rows.

    Args:
        call: Sends an [N, n_features] array to the predictor and returns its N predictions and a note about
            the call; it also gets the ``context`` of every request merged into the call (e.g. to forward the
            headers of a lone request).
        max_rows: The most rows merged into one call (a larger single request still goes, alone).
        max_in_flight: Calls allowed to run at once; requests beyond them wait and are merged.
        linger: Seconds a call waits before it goes, taking in the requests that come meanwhile: 0 for
            clients (nothing waits to fill a batch); a shadow's copies, which nobody waits for, linger.
    """

    def __init__(self, call: PredictorCall, *, max_rows: int, max_in_flight: int = 2, linger: float = 0.0):
        if max_rows < 1 or max_in_flight < 1 or linger < 0:
            raise ValueError("max_rows and max_in_flight must be at least 1, linger at least 0")
        self.call = call
        self.max_rows = max_rows
        self.max_in_flight = max_in_flight
        self.linger = linger
        self._waiting: deque[_Waiting] = deque()
        self._running: set[asyncio.Task[None]] = set()

    async def predict(
        self, rows: np.ndarray, *, key: Hashable = None, context: Any = None
    ) -> tuple[np.ndarray, Any]:
        """The predictions for ``rows``, computed in a call that may carry other requests' rows too.

        Args:
            rows: Validated rows, shape [N, n_features].
            key: Only requests with equal keys share a call (e.g. their credentials).
            context: Handed to the call unchanged.

        Returns:
            The predictions for ``rows`` (shape [N]) and the call's note.

        Raises:
            Exception: Whatever the call raised, for every request of that call.
        """
        future: asyncio.Future[tuple[np.ndarray, Any]] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(rows, key, context, future))
        self._start_calls()
        return await future

    def _start_calls(self) -> None:
        while self._waiting and len(self._running) < self.max_in_flight:
            batch = [self._waiting.popleft()]
            self._fill(batch)
            task = asyncio.create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._finished)

    def _fill(self, batch: list[_Waiting]) -> None:
        """Move the waiting requests that may share ``batch``'s call into it, in order, up to ``max_rows``."""
        size = sum(len(request.rows) for request in batch)
        while (
            self._waiting
            and self._waiting[0].key == batch[0].key
            and size + len(self._waiting[0].rows) <= self.max_rows
        ):
            size += len(self._waiting[0].rows)
            batch.append(self._waiting.popleft())

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._start_calls()

    async def _run(self, batch: list[_Waiting]) -> None:
        try:
            if self.linger:
                await asyncio.sleep(self.linger)
                self._fill(batch)
            batch = [request for request in batch if not request.future.done()]  # callers gone: skip them
            if not batch:
                return
            rows = batch[0].rows if len(batch) == 1 else np.concatenate([request.rows for request in batch])
            values, note = await self.call(rows, [request.context for request in batch])
            if len(values) != len(rows):
                raise ValueError(f"the predictor returned {len(values)} predictions for {len(rows)} rows")
        except asyncio.CancelledError:  # the server is stopping
            for request in batch:
                request.future.cancel()
            raise
        except Exception as error:  # every request of the call fails the same way
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(error)
            return
        ends = np.cumsum([len(request.rows) for request in batch])
        for request, part in zip(batch, np.split(values, ends[:-1]), strict=True):
            if not request.future.done():
                request.future.set_result((part, note))
