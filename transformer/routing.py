"""Which predictor answers a request: the stable one or a canary, each behind its own client and batching.

The transformer is where canaries are split. KServe's own canary (``spec.canary`` in Standard mode) is refused
for a custom predictor and would bypass the transformer anyway, so each canary is a separate predictor-only
InferenceService whose host the transformer is given (``--canary NAME=PERCENT,HOST[,REST_HOST]``); the stable
predictor (``--predictor_host``) takes the share the canaries leave. Each client request goes, whole, to one
arm drawn by weight (:func:`choose_arm`): at random, or, for an A/B test, by a stable hash of a client key
(``--sticky_header``, e.g. ``x-user-id``) so that one user always meets the same model while the weights
stay; a request without the key is drawn at random.

An arm holds what belongs to one predictor: KServe's client for it (REST V1/V2 or gRPC V2), its V2 model
metadata (feature order, version and interval levels: read at first use and again after any failure of that
arm) and its adaptive batching (:mod:`transformer.batching`; requests merge only within one arm, one feature
order and one interval level). Each arm's intervals are its own model's: a canary, an A/B arm or a shadow
answers with the bounds its predictor computes.
Every V2 tensor carries the feature order its columns are in (``parameters.feature_names``), so a predictor
replaced under the transformer (a rolling update, a revision with another order) still reads them right:
see ``predictor/model.py``.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import hashlib
import itertools
import json
import logging
import math
import random
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import numpy as np
from grpc import StatusCode
from grpc.aio import AioRpcError
from kserve import (
    InferenceGRPCClient,
    InferenceRESTClient,
    InferInput,
    InferRequest,
    InferResponse,
    RESTConfig,
)
from kserve.model import append_forwardable_headers
from kserve.predictor_config import PredictorConfig

from model.intervals import BOUND_OUTPUTS, DEFAULT_LEVEL, LEVEL_PARAMETER, LOWER_OUTPUT, UPPER_OUTPUT
from serving.errors import PredictorTimeoutError, PredictorUnavailableError, UpstreamError
from serving.events import CANARY_ENDPOINT, DEFAULT_ENDPOINT
from serving.outputs import INTERVALS, request_outputs
from serving.payload import FEATURE_NAMES
from transformer.batching import COALESCE_ROWS, Coalescer
from transformer.metrics import BREAKER_STATE, CANARY_FALLBACKS, PREDICTOR_ERRORS, SHORT_CIRCUITS
from transformer.resilience import STATE_VALUES, CircuitBreaker, Deadline

STABLE = "stable"
"""The stable arm's name. Its events are logged with ``ce-endpoint: default``, a canary's with ``canary``."""
PREDICTOR_PRICE = "output-0"
"""The predictor's price output (KServe's name for a model's first output)."""

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
T = TypeVar("T")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ArmSpec:
    """One predictor the transformer may send requests to, as given on the command line.

    Attributes:
        name: ``stable``, or the canary's name (a DNS label).
        percent: Share of the requests, 0 to 100.
        host: ``HOST[:PORT]`` of the predictor, in the transformer's ``--protocol``.
        rest_host: ``HOST[:PORT]`` of its REST server, for the V2 metadata (``None``: ``host``).
    """

    name: str
    percent: int
    host: str
    rest_host: str | None = None


GRPC_SERVICE_CONFIG = json.dumps({
    "methodConfig": [{
        "name": [{}],
        "retryPolicy": {
            "maxAttempts": 2,
            "initialBackoff": "0.01s",
            "maxBackoff": "0.1s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE", "CANCELLED"],
        },
    }],
    "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1},
})  # fmt: skip
"""The gRPC channel's retry policy: a call the predictor refused or cancelled is sent once more.

A predictor that stops (``server.stop(grace)``, serving/lifecycle.py) sends GOAWAY and finishes the calls it
is running, but cancels those that had arrived and were still waiting for its event loop (gRPC core's
"Server Shutdown"): one in 4,500 in a rolling restart under load here (``./dev bench rollover``), a 502
without this. Sent again on the same channel, the call reaches the replacement. A prediction has no side
effect, so a second attempt is safe; the throttle stops retries when more than about 1 call in 10 fails
(a predictor that is down is the circuit breaker's, not the retries')."""


def parse_canary(value: str) -> ArmSpec:
    """Read one ``--canary NAME=PERCENT,HOST[,REST_HOST]`` value.

    Raises:
        ValueError: The value breaks a rule; the message says which.
    """
    name, equals, rest = value.partition("=")
    parts = rest.split(",")
    if not equals or len(parts) not in (2, 3) or not all(part.strip() for part in parts):
        raise ValueError(
            "expected NAME=PERCENT,HOST[,REST_HOST], e.g. v2=10,housing-kserve-v2-predictor.housing"
        )
    if not _DNS_LABEL.match(name) or name == STABLE:
        raise ValueError(
            f"NAME {name!r} must be a DNS label (lower-case letters, digits and '-', at most 63) "
            f"other than {STABLE!r}"
        )
    percent = parts[0].strip()
    if not re.fullmatch(r"[0-9]{1,3}", percent) or int(percent) > 100:
        raise ValueError(f"PERCENT {percent!r} must be an integer from 0 to 100")
    rest_host = parts[2].strip() if len(parts) == 3 else None
    return ArmSpec(name, int(percent), parts[1].strip(), rest_host)


def check_canaries(canaries: Sequence[ArmSpec]) -> None:
    """Canary names are unique and their shares add up to at most 100.

    Raises:
        ValueError: They do not.
    """
    names = [canary.name for canary in canaries]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"canary names must be unique; repeated: {', '.join(repeated)}")
    total = sum(canary.percent for canary in canaries)
    if total > 100:
        raise ValueError(f"the canaries' percentages add up to {total}, more than 100")


@dataclass(frozen=True)
class PredictorMetadata:
    """What the transformer learns from a predictor's V2 metadata.

    Attributes:
        feature_names: The model's inputs, in order.
        version: The model's version.
        interval_levels: The interval levels it serves (none for a model trained before intervals).
    """

    feature_names: tuple[str, ...]
    version: str
    interval_levels: tuple[float, ...] = ()

    @property
    def monitored_level(self) -> float | None:
        """The level whose bounds go to the detector with every prediction, if the model serves it."""
        return DEFAULT_LEVEL if DEFAULT_LEVEL in self.interval_levels else None

    @functools.cached_property
    def feature_list(self) -> str:
        """The feature order as it travels with each tensor: the names joined by commas."""
        return ",".join(self.feature_names)


@dataclass(frozen=True)
class Answer:
    """A predictor's predictions for some rows, the version of the model that made them, and their bounds.

    Attributes:
        values: Prices, shape [N] (USD 1000s).
        model_version: The version that answered.
        level: The interval level of ``lower`` and ``upper``; ``None`` when no bound was asked for.
        lower: Lower bounds, shape [N].
        upper: Upper bounds, shape [N].
    """

    values: np.ndarray
    model_version: str
    level: float | None = None
    lower: np.ndarray | None = None
    upper: np.ndarray | None = None

    @classmethod
    def stacked(cls, values: np.ndarray, model_version: str, level: float | None) -> Answer:
        """An answer from the prices, or from [N, 3] rows of price, lower and upper bound (a batch's form)."""
        if level is None:
            return cls(values, model_version)
        return cls(values[:, 0], model_version, level, values[:, 1], values[:, 2])


@dataclass(frozen=True)
class BreakerSettings:
    """When a predictor's circuit breaker opens and how long it stays open (see :class:`CircuitBreaker`)."""

    failures: int = 5
    reset_seconds: float = 1.0


class PredictorArm:
    """One predictor: its KServe client, its cached metadata, its adaptive batching and its circuit breaker.

    Args:
        spec: Name, share and hosts.
        config: KServe's predictor settings (protocol, TLS, timeout in seconds, retries); its host is the
            spec's.
        model_name: The model name on the predictor (``housing``).
        coalesce_rows: Merge waiting requests into calls of up to this many rows; 0 sends each on its own.
        breaker: When its circuit breaker opens, and for how long.
        linger: Seconds a call waits for more requests to merge (see :class:`Coalescer`); 0 for clients.
    """

    def __init__(
        self,
        spec: ArmSpec,
        config: PredictorConfig,
        *,
        model_name: str,
        coalesce_rows: int,
        breaker: BreakerSettings | None = None,
        linger: float = 0.0,
    ):
        self.spec = spec
        self.config = config
        self.model_name = model_name
        self.endpoint = DEFAULT_ENDPOINT if spec.name == STABLE else CANARY_ENDPOINT
        self.timeout = float(config.predictor_request_timeout_seconds)
        scheme = "https" if config.predictor_use_ssl else "http"
        self.metadata_url = f"{scheme}://{spec.rest_host or spec.host}/v2/models/{model_name}"
        self.cached_model: PredictorMetadata | None = None
        self._reading: asyncio.Task[PredictorMetadata] | None = None
        # When the predictor's model readiness was last read, and why it was not served then.
        self._served: tuple[float, str | None] = (-math.inf, "its model readiness has not been read yet")
        self._rest: InferenceRESTClient | None = None
        self._grpc: InferenceGRPCClient | None = None
        self._coalescer = (
            Coalescer(self._call_merged, max_rows=coalesce_rows, linger=linger) if coalesce_rows > 0 else None
        )
        settings = breaker or BreakerSettings()
        state = BREAKER_STATE.labels(model_name, spec.name)
        state.set(0)
        self.breaker = CircuitBreaker(
            f"the predictor at {spec.host}",
            failures=settings.failures,
            reset_seconds=settings.reset_seconds,
            on_change=lambda value: state.set(STATE_VALUES[value]),
            on_refuse=SHORT_CIRCUITS.labels(model_name, spec.name).inc,
        )

    async def model(self, deadline: Deadline) -> PredictorMetadata:
        """The predictor's feature order and version, read from its V2 model metadata once and cached.

        A burst of requests shares one read; each waits for it only until its own deadline.

        Raises:
            UpstreamError: The read failed or outlived the deadline (the breaker counts it), or the breaker is
                open (503 at once).
        """
        if self.cached_model is not None:
            return self.cached_model
        with self.breaker.guard(count_timeouts=not deadline.shortened):
            if self._reading is None or self._reading.done():
                self._reading = asyncio.create_task(self._read_metadata())
                # Retrieved here too, so that a read every waiter gave up on is not reported as unhandled.
                self._reading.add_done_callback(lambda task: task.cancelled() or task.exception())
            try:  # shielded: one request reaching its deadline must not cancel the read for the others
                reading = asyncio.shield(self._reading)
                self.cached_model = await asyncio.wait_for(reading, deadline.remaining())
            except TimeoutError as error:  # the read itself is counted when its own timeout ends it
                context = f"cannot read the predictor's metadata at {self.metadata_url}"
                raise self.failure(error, context, seconds=deadline.seconds, counted=False) from error
        return self.cached_model

    async def unserved(self, timeout: float) -> str | None:
        """Why the predictor does not serve the model now (``None`` when it does): its V2 model readiness.

        Health and readiness (``/health``, ``/v2/health/ready``) both ask this, so they agree whenever the
        served model is gone. Read at most once a second: probes, which anyone may send, never multiply
        into calls to the predictor.
        """
        checked_at, reason = self._served
        if time.monotonic() - checked_at < 1.0:
            return reason
        self._served = (time.monotonic(), reason)  # callers meanwhile share the last answer
        url = f"{self.metadata_url}/ready"
        try:
            async with httpx.AsyncClient(timeout=timeout) as client:
                response = await client.get(url)
            reason = None if response.status_code == 200 else f"{url} answered {response.status_code}"
        except httpx.HTTPError as error:
            reason = f"cannot reach {url}: {error or type(error).__name__}"
        if reason is not None:
            self.cached_model = None  # the model may come back as another version
        self._served = (time.monotonic(), reason)
        return reason

    async def predict(
        self,
        rows: np.ndarray,
        model: PredictorMetadata,
        request_id: str,
        headers: dict[str, str] | None,
        deadline: Deadline,
        level: float | None = None,
    ) -> Answer:
        """The predictor's answer for rows built in ``model``'s feature order, before ``deadline``.

        ``level``: the interval level whose bounds to ask for too (``None``: the prices alone).

        Raises:
            UpstreamError: The predictor failed (503 unreachable, not ready or breaker open, 504 not answered
                before the deadline, else 502).
        """
        with self.breaker.guard(count_timeouts=not deadline.shortened):
            if self._coalescer is None:
                try:
                    return await asyncio.wait_for(
                        self._call(rows, model, request_id, headers, level), deadline.remaining()
                    )
                except TimeoutError as error:
                    raise self.failure(error, seconds=deadline.seconds) from error
            # Requests merge only with others that carry the same credentials, the same column order and the
            # same interval level. The deadline covers the wait for a call slot too: a request queued behind a
            # hung call fails in time.
            key = ((headers or {}).get("authorization"), model.feature_list, level)
            waiting = self._coalescer.predict(rows, key=key, context=(request_id, headers, model, level))
            try:
                values, version = await asyncio.wait_for(waiting, deadline.remaining())
            except TimeoutError as error:  # the hung call itself is counted when its own timeout ends it
                raise self.failure(error, seconds=deadline.seconds, counted=False) from error
            return Answer.stacked(values, version, level)

    async def _call_merged(self, rows: np.ndarray, contexts: list[Any]) -> tuple[np.ndarray, str]:
        # A lone request keeps its id and headers; a merged call gets its own id and the shared credentials.
        request_id, headers, model, level = contexts[0]
        if len(contexts) > 1:
            authorization = (headers or {}).get("authorization")
            request_id, headers = None, {"authorization": authorization} if authorization else None
        answer = await self._call(rows, model, request_id, headers, level)
        if answer.lower is None or answer.upper is None:
            return answer.values, answer.model_version
        return np.column_stack([answer.values, answer.lower, answer.upper]), answer.model_version

    async def _call(
        self,
        rows: np.ndarray,
        model: PredictorMetadata,
        request_id: str | None,
        headers: dict[str, str] | None,
        level: float | None = None,
    ) -> Answer:
        """One call to the predictor through KServe's own REST or gRPC client."""
        request = self._request(rows, model, request_id, level)
        try:
            response = await self._send(request, headers)
        except Exception as error:
            raise self.failure(error) from error
        try:
            return self._answer(response, model, level)
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise self.failure(UpstreamError(f"predictor call failed: unexpected answer: {error}")) from error

    @staticmethod
    def _answer(response: Any, model: PredictorMetadata, level: float | None) -> Answer:
        if isinstance(response, InferResponse):
            version = response.model_version or model.version
            if level is None:
                return Answer(response.outputs[0].as_numpy().reshape(-1), version)
            lower, upper = (
                response.get_output_by_name(name).as_numpy().reshape(-1) for name in BOUND_OUTPUTS
            )
            price = response.get_output_by_name(PREDICTOR_PRICE).as_numpy().reshape(-1)
            return Answer(price, version, level, lower, upper)
        values = np.asarray(response["predictions"], dtype=np.float64)
        if level is None:
            return Answer(values, model.version)
        bounds = response[INTERVALS]
        lower = np.array([bound["lower"] for bound in bounds], dtype=np.float64)
        upper = np.array([bound["upper"] for bound in bounds], dtype=np.float64)
        return Answer(values, model.version, level, lower, upper)

    def _request(
        self, rows: np.ndarray, model: PredictorMetadata, request_id: str | None, level: float | None = None
    ) -> Any:
        protocol = self.config.predictor_protocol
        if protocol == "v1":  # V1 has no place for the feature order: the metadata's order is trusted
            body: dict[str, Any] = {"instances": rows.tolist()}
            if level is not None:
                body["parameters"] = {LEVEL_PARAMETER: level}
            return body
        names = {FEATURE_NAMES: model.feature_list}
        tensor = InferInput("input-0", list(rows.shape), "FP64", parameters=names)
        # gRPC carries the tensor as raw bytes; REST as JSON (KServe's REST binary extension fails here).
        tensor.set_data_from_numpy(rows, binary_data=protocol == "grpc-v2")
        request_id = request_id or str(uuid.uuid4())
        if level is None:
            return InferRequest(self.model_name, [tensor], request_id=request_id)
        # The level as a string: KServe's V2 gRPC parameters carry no doubles (serving/outputs.py).
        return InferRequest(
            self.model_name,
            [tensor],
            request_id=request_id,
            parameters={LEVEL_PARAMETER: str(level)},
            request_outputs=request_outputs((PREDICTOR_PRICE, LOWER_OUTPUT, UPPER_OUTPUT)),
        )

    async def _send(self, request: Any, headers: dict[str, str] | None) -> Any:
        # Only x-request-id, x-b3-traceid and authorization are forwarded, as KServe's own transformer does.
        if self.config.predictor_protocol == "grpc-v2":
            metadata = [("request_type", "grpc_v2"), ("response_type", "grpc_v2")]
            metadata += append_forwardable_headers(headers).items()
            return await self._grpc_client().infer(request, headers=metadata)
        rest_headers = append_forwardable_headers(headers, {"Content-Type": "application/json"})
        if self.config.predictor_protocol == "v1":
            return await self._rest_client().infer(
                self.config.predictor_base_url, request, model_name=self.model_name, headers=rest_headers
            )
        # KServe 0.20's REST client reads a V2 answer with InferResponse.from_bytes, which drops
        # ``model_version``; read as plain JSON (the "graph endpoint" form) and then with from_rest, it stays.
        url = f"{self.config.predictor_base_url}/v2/models/{self.model_name}/infer"
        answer = await self._rest_client().infer(url, request, headers=rest_headers, is_graph_endpoint=True)
        return InferResponse.from_rest(answer)

    def _rest_client(self) -> InferenceRESTClient:
        if self._rest is None:
            self._rest = InferenceRESTClient(
                RESTConfig(
                    protocol=self.config.predictor_protocol,
                    timeout=self.timeout,
                    retries=self.config.predictor_request_retries,
                )
            )
        return self._rest

    def _grpc_client(self) -> InferenceGRPCClient:
        # Built on first use, inside the server's event loop. KServe's channel backs off up to 120 s once the
        # predictor has gone away; capped at 1 s here, so a predictor that comes back is used within a second.
        if self._grpc is None:
            self._grpc = InferenceGRPCClient(
                self.spec.host,
                use_ssl=self.config.predictor_use_ssl,
                timeout=self.timeout,
                retries=self.config.predictor_request_retries,
                channel_args=[
                    ("grpc.max_send_message_length", -1),
                    ("grpc.max_receive_message_length", -1),
                    ("grpc.initial_reconnect_backoff_ms", 100),
                    ("grpc.min_reconnect_backoff_ms", 100),
                    ("grpc.max_reconnect_backoff_ms", 1000),
                    ("grpc.service_config", GRPC_SERVICE_CONFIG),
                ],
            )
        return self._grpc

    async def _read_metadata(self) -> PredictorMetadata:
        try:
            async with httpx.AsyncClient(timeout=self.timeout) as client:
                response = await client.get(self.metadata_url)
            response.raise_for_status()
            metadata = response.json()
            names = tuple(metadata["parameters"][FEATURE_NAMES].split(","))
            levels = metadata["parameters"].get("interval_levels")
            interval_levels = tuple(float(level) for level in levels.split(",")) if levels else ()
        except Exception as error:
            context = f"cannot read the predictor's metadata at {self.metadata_url}"
            raise self.failure(error, context) from error
        return PredictorMetadata(names, str(metadata.get("versions", ["unknown"])[0]), interval_levels)

    def failure(
        self,
        error: BaseException,
        context: str = "predictor call failed",
        *,
        seconds: float | None = None,
        counted: bool = True,
    ) -> UpstreamError:
        """The error to answer for a failed call, counted in ``housing_predictor_errors_total``.

        The cached metadata is dropped: the predictor may have been replaced by one with another model.
        ``seconds`` is the time allowed, for a timeout's message (default: the predictor timeout).
        """
        self.cached_model = None
        host = self.spec.host
        failure: UpstreamError
        if isinstance(error, httpx.TimeoutException | asyncio.TimeoutError) or (
            isinstance(error, AioRpcError) and error.code() == StatusCode.DEADLINE_EXCEEDED
        ):
            failure = PredictorTimeoutError(
                f"{context}: the predictor at {host} did not answer within {seconds or self.timeout:g} s"
            )
        elif isinstance(error, httpx.TransportError) or (
            isinstance(error, AioRpcError) and error.code() == StatusCode.UNAVAILABLE
        ):
            failure = PredictorUnavailableError(f"{context}: the predictor at {host} is unreachable: {error}")
        elif isinstance(error, httpx.HTTPStatusError) and error.response.status_code == 503:
            failure = PredictorUnavailableError(f"{context}: the predictor at {host} is not ready")
        elif isinstance(error, UpstreamError):
            return error
        else:
            failure = UpstreamError(f"{context}: {error}")
        reason = {PredictorTimeoutError: "timeout", PredictorUnavailableError: "unavailable"}.get(
            type(failure), "error"
        )
        if counted:
            PREDICTOR_ERRORS.labels(self.model_name, reason).inc()
        return failure


class Router:
    """The stable arm and the canary arms, and the draw that sends each request to one of them.

    Args:
        arms: The stable arm first, then the canaries; their ``spec.percent`` add up to 100.
    """

    def __init__(self, arms: Sequence[PredictorArm], *, sticky_header: str | None = None):
        if not arms or arms[0].spec.name != STABLE:
            raise ValueError(f"the first arm must be {STABLE!r}")
        self.arms = list(arms)
        self.stable = self.arms[0]
        self.sticky_header = sticky_header.lower() if sticky_header else None
        self._cum_weights = list(itertools.accumulate(arm.spec.percent for arm in self.arms))
        if self._cum_weights[-1] != 100:
            raise ValueError(f"the arms' percentages add up to {self._cum_weights[-1]}, not 100")

    async def warm(self) -> None:
        """Read every arm's metadata and open its gRPC channel now, not on the first requests.

        Cold, the first requests of a new transformer pay for both (0.2-2 s here): in a rolling restart
        (``--reuse_port``) they would be the replacement's first answers, so the replacement warms up before
        it takes a connection. An arm that cannot be reached yet is left to warm on use.
        """
        for arm in self.arms:
            deadline = Deadline.start(arm.timeout, None)
            try:
                await arm.model(deadline)
                if arm.config.predictor_protocol == "grpc-v2":
                    client = arm._grpc_client()
                    await client.is_model_ready(self.stable.model_name, timeout=deadline.remaining())
            except Exception as error:  # a canary still loading, say: it warms on its first request
                log.warning("cannot warm the %s predictor up: %s", arm.spec.name, error)

    def choose(self, headers: dict[str, str] | None = None) -> PredictorArm:
        """The arm for the next request: by its client key when the router is sticky and it has one."""
        if len(self.arms) == 1:
            return self.stable
        key = (headers or {}).get(self.sticky_header) if self.sticky_header else None
        return choose_arm(self.arms, self._cum_weights, key)

    async def arm_and_model(
        self, deadline: Deadline, headers: dict[str, str] | None = None
    ) -> tuple[PredictorArm, PredictorMetadata]:
        """The arm for the next request and its feature order; the stable arm if a canary cannot be reached.

        A canary's predictor may go away before the transformer stops routing to it (``helm upgrade``
        deletes the canary InferenceService while transformer pods with the old ``--canary`` still run),
        or still be loading, or its breaker be open: its share goes to the stable predictor then, counted,
        instead of failing.

        Raises:
            UpstreamError: The stable predictor's metadata cannot be read.
        """
        arm = self.choose(headers)
        try:
            return arm, await arm.model(deadline)
        except PredictorUnavailableError:
            if arm is self.stable:
                raise
            CANARY_FALLBACKS.labels(arm.model_name, arm.spec.name).inc()
            return self.stable, await self.stable.model(deadline)

    def fallback(self, arm: PredictorArm, model: PredictorMetadata) -> PredictorArm | None:
        """The arm to retry on when ``arm`` (a canary) turns out unreachable, or ``None`` when there is none.

        The rows stay in ``model``'s order: the stable predictor reads them by the names that travel with a
        V2 tensor; V1 carries no names, so only a stable predictor with the same order may take them.
        """
        if arm is self.stable:
            return None
        same_order = self.stable.cached_model is not None and self.stable.cached_model.feature_names == (
            model.feature_names
        )
        if self.stable.config.predictor_protocol == "v1" and not same_order:
            return None
        CANARY_FALLBACKS.labels(arm.model_name, arm.spec.name).inc()
        return self.stable


def choose_arm(arms: Sequence[T], cum_weights: Sequence[int], key: str | None = None) -> T:
    """One arm by weight (cumulative percentages): at random, or the same arm every time for one ``key``.

    The key's hash is a point in [0, 100) that falls in one arm's share, so a user keeps the arm as long
    as the shares stay; when they change, only the users in the moved part of a share change arm.
    """
    if key is None:
        return random.choices(arms, cum_weights=cum_weights)[0]
    return arms[bisect.bisect_right(cum_weights, sticky_point(key))]


def sticky_point(key: str) -> float:
    """A point in [0, 100) fixed by ``key`` alone (BLAKE2b: the same in every transformer replica)."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 * 100


@dataclass(frozen=True)
class ArmSettings:
    """How the transformer calls every predictor: the stable one, the canaries and a shadow alike.

    Attributes:
        model_name: The model name on every predictor.
        protocol: ``v1``, ``v2`` or ``grpc-v2``.
        use_ssl: Call the predictors over TLS.
        timeout: Seconds allowed for each call to a predictor.
        retries: KServe's client retries (connection failures only).
        coalesce_rows: See :class:`PredictorArm`.
        breaker: Each predictor's circuit breaker settings (default: :class:`BreakerSettings`).
    """

    model_name: str
    protocol: str
    use_ssl: bool = False
    timeout: float = 5.0
    retries: int = 0
    coalesce_rows: int = COALESCE_ROWS
    breaker: BreakerSettings | None = None


def build_router(
    host: str,
    rest_host: str | None,
    canaries: Sequence[ArmSpec],
    settings: ArmSettings,
    *,
    sticky_header: str | None = None,
) -> Router:
    """The router for a stable predictor and its canaries; the stable arm gets the share they leave.

    Args:
        host: ``HOST[:PORT]`` of the stable predictor.
        rest_host: ``HOST[:PORT]`` of its REST server, for the V2 metadata (``None``: ``host``).
        canaries: The canary predictors (checked with :func:`check_canaries`).
        settings: How every predictor is called.
        sticky_header: The header whose value assigns a request to an arm (``None``: at random).

    Raises:
        ValueError: The canaries break a rule.
    """
    check_canaries(canaries)
    stable = ArmSpec(STABLE, 100 - sum(canary.percent for canary in canaries), host, rest_host)
    arms = [build_arm(spec, settings) for spec in (stable, *canaries)]
    return Router(arms, sticky_header=sticky_header)


def build_arm(spec: ArmSpec, settings: ArmSettings, linger: float = 0.0) -> PredictorArm:
    """One predictor arm: a stable predictor, a canary, or what a shadow is sent through.

    ``linger``: see :class:`PredictorArm`.
    """
    config = PredictorConfig(
        predictor_host=spec.host,
        predictor_protocol=settings.protocol,
        predictor_use_ssl=settings.use_ssl,
        predictor_request_timeout_seconds=settings.timeout,
        predictor_request_retries=settings.retries,
    )
    return PredictorArm(
        spec,
        config,
        model_name=settings.model_name,
        coalesce_rows=settings.coalesce_rows,
        breaker=settings.breaker,
        linger=linger,
    )
