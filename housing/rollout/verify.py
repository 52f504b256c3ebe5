"""After ``housing rollout promote``/``rollback``: predictions until only the expected model version answers.

A patched InferenceService is not yet a served model: KServe rolls the transformer's and the predictor's pods
(Standard mode) or creates new revisions (Knative), and until the last old pod has drained, some answers come
from the old model. The check sends real predictions to the transformer and reads each answer's
``x-model-version`` header (transformer/model.py) until ``CONSECUTIVE`` answers in a row carry the expected
version, or fails after the timeout (the command then exits 1: the change is applied, not yet served).

Where the predictions go: ``--check-url URL`` (the transformer's URL as this machine reaches it: through the
ingress or Istio gateway, ``kubectl port-forward svc/NAME-transformer 8080:80`` then
``http://127.0.0.1:8080``, or ``http://NAME-transformer.NAMESPACE`` from a pod in the cluster), or
``--check`` alone: the InferenceService's ``status.url``, which KServe sets to the route it serves (the
transformer's, when it has one). With ``--auth`` on the servers, ``HOUSING_PREDICT_KEY`` holds a key with the
``predict`` role, sent as a bearer token.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter, deque
from typing import IO, Any

from housing.rollout.objects import RolloutError

CONSECUTIVE = 20
"""Answers in a row from the expected version that end the check: with a 10% share left on an old pod, 20 in
a row happen by chance with probability 0.9**20, about 12%; 50 would cut that to 0.5% at 2.5x the time."""
PREDICT_KEY_ENV = "HOUSING_PREDICT_KEY"  # pragma: allowlist secret (a variable name)
HOUSE = {"crim": 0.00632, "zn": 18.0, "indus": 2.31, "chas": 0.0, "nox": 0.538, "rm": 6.575, "age": 65.2,
         "dis": 4.09, "rad": 1.0, "tax": 296.0, "ptratio": 15.3, "lstat": 4.98}  # fmt: skip
"""The first house of the data set: a valid request for every model of this project."""
VERSION_HEADER = "x-model-version"


def wait_for_version(
    url: str,
    version: str,
    *,
    model: str = "housing",
    timeout: float = 300.0,
    interval: float = 0.1,
    consecutive: int = CONSECUTIVE,
    out: IO[str] | None = None,
) -> float:
    """Predict through ``url`` until ``consecutive`` answers in a row come from ``version``.

    Args:
        url: The transformer's base URL.
        version: The model version that must answer (``model.json``'s ``version``).
        model: The model name in the predict path.
        timeout: Seconds before giving up.
        interval: Seconds between predictions.
        consecutive: Answers in a row that end the check.
        out: Where progress goes (default: standard output).

    Returns:
        The seconds it took.

    Raises:
        RolloutError: ``timeout`` passed first; the message says which versions answered last.
    """
    import httpx  # here: `housing --help` stays fast

    out = out or sys.stdout
    endpoint = f"{url.rstrip('/')}/v1/models/{model}:predict"
    key = os.environ.get(PREDICT_KEY_ENV)
    headers = {"authorization": f"Bearer {key}"} if key else {}
    start, said = time.monotonic(), 0.0
    recent: deque[str] = deque(maxlen=consecutive)
    print(f"checking {endpoint}: waiting for {consecutive} answers in a row from version {version}", file=out)
    with httpx.Client(timeout=10) as client:
        while (elapsed := time.monotonic() - start) < timeout:
            recent.append(_answer(client, endpoint, headers))
            if len(recent) == consecutive and set(recent) == {version}:
                print(f"only version {version} answers ({consecutive} in a row, {elapsed:.1f} s)", file=out)
                return elapsed
            if elapsed - said >= 10:
                said = elapsed
                print(f"  {elapsed:.0f} s: the last answers came from {_summary(recent)}", file=out)
            time.sleep(interval)
    raise RolloutError(
        f"version {version} is not the only one answering at {endpoint} after {timeout:.0f} s: the last "
        f"{len(recent)} answers came from {_summary(recent)}"
    )


def _answer(client: Any, endpoint: str, headers: dict[str, str]) -> str:
    """The version that answered one prediction, or what went wrong (``HTTP 503``, ``ConnectError``)."""
    import httpx

    try:
        response = client.post(endpoint, json={"instances": [HOUSE]}, headers=headers)
    except httpx.HTTPError as error:
        return type(error).__name__
    if response.status_code != 200:
        return f"HTTP {response.status_code}"
    return str(response.headers.get(VERSION_HEADER, "no version header"))


def _summary(recent: deque[str]) -> str:
    return ", ".join(f"{name} ({count})" for name, count in Counter(recent).most_common())
