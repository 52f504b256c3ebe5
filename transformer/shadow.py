"""Shadow deployments: a copy of each request (or a share) to a challenger, after the client has its answer.

``--shadow NAME=PERCENT,HOST[,REST_HOST]`` mirrors PERCENT % of the requests to the predictor at HOST. The
client only ever sees the champion's answer: the copy is sent after the champion has answered, from a
background task, with the shadow's own timeout and a bound on copies in flight (``--shadow_max_in_flight``);
a copy that finds the bound reached is dropped. The shadow's errors, slowness or absence never reach clients,
and are counted (``housing_shadow_requests_total`` by outcome).

A shadow that reads the champion's columns in the same order gets the rows already validated for it; one
with other features (its V2 metadata's feature order) gets the request validated again for its own model, so
a challenger may use features the champion does not. Its predictions are logged to the detector under the
endpoint ``shadow`` with the client's request id: a label posted for that id scores both models on the same
house, and ``housing experiment analyze --paired`` compares them pair by pair. Istio can mirror traffic too,
but then the transformer of the mirrored copy would log it under a new id, and no label would ever reach it.

Copies wait up to :data:`LINGER_SECONDS` to share one call to the shadow (:class:`~transformer.batching.
Coalescer`): nobody waits for them, and each call costs the transformer far more than the rows it carries.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

import numpy as np

from serving.errors import PredictorTimeoutError, PredictorUnavailableError, UpstreamError
from serving.events import SHADOW_ENDPOINT
from transformer.metrics import SHADOW_REQUESTS
from transformer.payload import PayloadError, rows_from
from transformer.request_logger import RequestLogger
from transformer.resilience import Deadline
from transformer.routing import PredictorArm

log = logging.getLogger(__name__)

DEFAULT_MAX_IN_FLIGHT = 256
LINGER_SECONDS = 0.01
"""A copy waits up to this long to share a call with the copies that come meanwhile: nobody waits for it, and
each call costs the transformer far more than its rows (``./dev bench shadow``)."""


class Shadow:
    """A challenger that gets copies of the requests and answers no client.

    Args:
        arm: The shadow predictor (its endpoint is ``shadow``).
        percent: Share of the requests mirrored, 0 to 100.
        max_rows: The largest copy validated (as for client requests).
        request_logger: Where the shadow's predictions are logged, or ``None``.
        max_in_flight: Copies in flight at most; more are dropped (counted), never queued.
    """

    def __init__(
        self,
        arm: PredictorArm,
        percent: int,
        *,
        max_rows: int,
        request_logger: RequestLogger | None = None,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    ):
        self.arm = arm
        self.percent = percent
        self.max_rows = max_rows
        self.request_logger = request_logger
        self.max_in_flight = max_in_flight
        self._tasks: set[asyncio.Task[None]] = set()
        self._outcomes = {
            outcome: SHADOW_REQUESTS.labels(arm.model_name, arm.spec.name, outcome)
            for outcome in ("answered", "dropped", "refused", "timeout", "unavailable", "error")
        }

    def mirror(
        self,
        payload: Any,
        rows: np.ndarray,
        features: tuple[str, ...],
        request_id: str,
        headers: dict[str, str] | None,
    ) -> None:
        """Send a copy of this request to the shadow, in the background, if it is drawn and there is room.

        Args:
            payload: The request as the client sent it.
            rows: Its rows as validated for the champion, in the order ``features``.
            features: The champion's feature order.
            request_id: The client's request id, under which the shadow's predictions are logged.
            headers: The client's headers (credentials and trace ids are forwarded).
        """
        if self.percent < 100 and random.uniform(0, 100) >= self.percent:
            return
        if len(self._tasks) >= self.max_in_flight:
            self._outcomes["dropped"].inc()
            return
        copy = self._copy(payload, rows, features, request_id, dict(headers or {}))
        task = asyncio.create_task(copy)
        self._tasks.add(task)  # a reference until it ends: the event loop keeps only weak ones
        task.add_done_callback(self._tasks.discard)

    async def _copy(
        self,
        payload: Any,
        rows: np.ndarray,
        features: tuple[str, ...],
        request_id: str,
        headers: dict[str, str],
    ) -> None:
        outcome = "error"
        try:
            deadline = Deadline.start(self.arm.timeout, None)
            model = await self.arm.model(deadline)
            # Validated for the champion already: the same rows serve a shadow that reads the same columns
            # in the same order; a shadow with other features validates the request for its own.
            if model.feature_names != features:
                rows = rows_from(payload, model.feature_names, self.max_rows)
            # Its own bounds at the monitored level, for the detector: the shadow's coverage is its own.
            level = model.monitored_level if self.request_logger is not None else None
            answer = await self.arm.predict(rows, model, request_id, headers, deadline, level)
        except PayloadError as error:  # valid for the champion, not for the shadow's model
            outcome = "refused"
            log.debug("shadow %s refused request %s: %s", self.arm.spec.name, request_id, error)
        except PredictorTimeoutError:
            outcome = "timeout"
        except PredictorUnavailableError:  # down, not ready, or its circuit breaker open: nothing was sent
            outcome = "unavailable"
        except UpstreamError as error:
            log.debug("shadow %s failed request %s: %s", self.arm.spec.name, request_id, error)
        except Exception:  # never let a shadow's fault escape into the server's logs as unhandled
            log.exception("shadow %s: unexpected failure on request %s", self.arm.spec.name, request_id)
        else:
            outcome = "answered"
            if self.request_logger is not None:
                self.request_logger.log(
                    model.feature_names,
                    rows,
                    answer.values,
                    model_version=answer.model_version,
                    request_id=request_id,
                    endpoint=SHADOW_ENDPOINT,
                    intervals=None if answer.level is None else (answer.level, answer.lower, answer.upper),
                )
        self._outcomes[outcome].inc()
