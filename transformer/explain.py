"""``:explain`` through the transformer: validated houses sent to the explainer, within their deadline.

KServe's ``Model.explain`` would post to ``explainer_host``, but kserve 0.20's cannot be used here: it reads
``self.use_ssl``, which ``Model`` never sets, and builds its REST client with the predictor's protocol,
which refuses ``:explain`` unless that protocol is V1 (this transformer calls its predictors over V2). The
call below is the same one (V1 ``POST /v1/models/NAME:explain``, KServe's forwardable headers), with the
transformer's own failure rules: 503 when the explainer is unreachable or not ready, 504 when it is slower
than what is left of the deadline, and the explainer's own 4xx passed on. KServe's controller does not give
a transformer the explainer's address (in Serverless mode it routes ``:explain`` at the ingress instead),
so the deployment passes ``--explainer_host`` itself.

The client is aiohttp's (a dependency of kserve): one call costs it 0.3 ms of CPU against httpx's 1.1 ms
(measured on this machine against the explainer), and on the predictions' core that difference is most of what
``:explain`` takes from them (``./dev bench explain``).

The explainer is sent named houses in the served model's features, so that it explains exactly what the
transformer validated; its answer names the artifact version it explained, which must be the stable
predictor's: an explanation of another model is refused (503) rather than shown next to a price it did not
produce.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import numpy as np
from grpc import StatusCode
from kserve.model import append_forwardable_headers

from serving.errors import UpstreamError
from transformer.resilience import Deadline


class ExplainerUnavailableError(UpstreamError):
    """The explainer cannot be reached, is not ready, or explains another model version."""

    status_code = StatusCode.UNAVAILABLE
    http_status = 503


class ExplainerTimeoutError(UpstreamError):
    """The explainer did not answer within what was left of the request's deadline."""

    status_code = StatusCode.DEADLINE_EXCEEDED
    http_status = 504


class ExplainerClientError(UpstreamError):
    """The explainer refused the houses (a 4xx): its status and message are passed on."""

    status_code = StatusCode.INVALID_ARGUMENT

    def __init__(self, details: str, http_status: int):
        super().__init__(details)
        self.http_status = http_status


class ExplainerClient:
    """Calls one explainer's V1 ``:explain`` over REST.

    Args:
        host: ``HOST[:PORT]`` of the explainer (``--explainer_host``).
        model_name: The model name in the explainer's paths (the transformer's).
        use_ssl: Call it over TLS.
    """

    def __init__(self, host: str, model_name: str, *, use_ssl: bool = False):
        self.host = host
        self.url = f"{'https' if use_ssl else 'http'}://{host}/v1/models/{model_name}:explain"
        self._session: aiohttp.ClientSession | None = None

    async def explain(
        self,
        feature_names: tuple[str, ...],
        rows: np.ndarray,
        deadline: Deadline,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """The explainer's answer for ``rows`` (validated, in ``feature_names`` order).

        Raises:
            ExplainerUnavailableError: Unreachable or not ready (503).
            ExplainerTimeoutError: No answer within the deadline (504).
            ExplainerClientError: The explainer answered 4xx (passed on).
            UpstreamError: Any other failure (502).
        """
        instances = [dict(zip(feature_names, map(float, row), strict=True)) for row in rows]
        remaining = deadline.remaining()
        if remaining <= 0:
            raise ExplainerTimeoutError(self._timeout_message(deadline))
        try:
            async with self._http().post(
                self.url,
                data=json.dumps({"instances": instances}),
                headers=append_forwardable_headers(headers, {"content-type": "application/json"}),
                timeout=aiohttp.ClientTimeout(total=remaining),
            ) as response:
                status, body = response.status, await response.read()
        except TimeoutError:  # aiohttp raises it (and ServerTimeoutError, a subclass) past the deadline
            raise ExplainerTimeoutError(self._timeout_message(deadline)) from None
        except aiohttp.ClientError as error:
            raise ExplainerUnavailableError(f"the explainer at {self.host} is unreachable: {error}") from None
        if status == 503:
            raise ExplainerUnavailableError(f"the explainer at {self.host} is not ready", retry_after=1)
        if 400 <= status < 500:
            raise ExplainerClientError(_error_message(body), status)
        if status != 200:
            raise UpstreamError(f"the explainer at {self.host} failed ({status}): {_error_message(body)}")
        return json.loads(body)

    def _http(self) -> aiohttp.ClientSession:
        # Built on first use, inside the server's event loop; connections are kept between requests.
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    def _timeout_message(self, deadline: Deadline) -> str:
        return f"the explainer at {self.host} did not answer within {deadline.seconds:g} s"


def check_same_model(answer: dict[str, Any], predictor_version: str, host: str) -> None:
    """Refuse an explanation of another model version than the one the stable predictor serves.

    Raises:
        ExplainerUnavailableError: The versions differ (during a rollout: retry once both serve one).
    """
    explained = str(answer.get("model_version"))
    if explained != predictor_version:
        raise ExplainerUnavailableError(
            f"the explainer at {host} explains model version {explained}, the predictor serves "
            f"{predictor_version}: not answering with an explanation of another model",
            retry_after=1,
        )


def _error_message(body: bytes) -> str:
    text = body.decode(errors="replace")
    try:
        return str(json.loads(text).get("error", text))
    except (ValueError, AttributeError):
        return text
