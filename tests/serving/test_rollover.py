"""Changes to a running stack under a light load, with real processes: nothing fails, nothing is lost.

The steps are the rollover benchmark's (benchmarks/rollover.py: ``./dev bench rollover`` measures them under
~60% of capacity); here a few clients send predictions, each with its own ``x-request-id``, through a
rolling restart of the transformer (step 1), a canary at 10% promoted to 100% (step 3) and a detector
restart on its state directory (step 5). Every request must be answered 200, and every answered inference
must reach the detector's archive (found by id once the stack has stopped and sealed it).
"""

from __future__ import annotations

import functools
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from benchmarks.rollover import (
    RolloverStack,
    archived,
    canary_then_promote,
    restart_detector,
    restart_transformer,
    versions_answering,
)
from housing.processes import Stack
from monitoring.traffic import PREDICT_PATH, houses, v1_body

CLIENTS = 3


class Clients:
    """``CLIENTS`` threads predicting one after another, ids ``step-STEP-CxN``, every answer counted."""

    def __init__(self, url: str, step: str):
        self.url, self.step = url, step
        self.answers: Counter[str] = Counter()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(number,)) for number in range(CLIENTS)]

    def __enter__(self) -> Clients:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def wait(self, seconds: float) -> None:
        """Let the clients run ``seconds``."""
        self._stop.wait(seconds)

    def _run(self, client: int) -> None:
        body = v1_body(houses()[:1])
        with httpx.Client(timeout=30) as session:
            number = 0
            while not self._stop.is_set():
                number += 1
                headers = {"x-request-id": f"step-{self.step}-{client}x{number}"}
                try:
                    response = session.post(self.url + PREDICT_PATH, json=body, headers=headers)
                    outcome = str(response.status_code)
                except httpx.HTTPError as error:
                    outcome = type(error).__name__
                self.answers[outcome] += 1
                self._stop.wait(0.05)


@pytest.fixture(scope="module")
def rollover(artifact_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RolloverStack]:
    workdir = tmp_path_factory.mktemp("rollover")
    stack = RolloverStack(Stack(workdir), workdir, artifact_dir, cores=False)
    try:
        yield stack.start()
    finally:
        stack.stop()


STEPS: list[tuple[str, Callable[[RolloverStack], None], str]] = [
    ("1", restart_transformer, "1"),
    ("3", functools.partial(canary_then_promote, settle=0.5), "2"),  # the canary serves version 2
    ("5", restart_detector, "2"),
]


def test_rolling_restart_canary_promotion_and_detector_restart_lose_nothing(rollover: RolloverStack) -> None:
    answered = {}
    for step, change, version in STEPS:
        began = time.monotonic()
        with Clients(rollover.url("transformer"), step) as clients:
            clients.wait(0.5)
            change(rollover)
            clients.wait(0.5)
        answered[step] = clients.answers
        print(f"step {step}: {time.monotonic() - began:.1f} s, {dict(clients.answers)}")
        assert set(clients.answers) == {"200"}, f"step {step}: {dict(clients.answers)}"
        assert versions_answering(rollover.url("transformer"), requests=10) == {version: 10}
    rollover.stop()  # the detector seals its archive
    rows, _ = archived(rollover.workdir)
    for step, answers in answered.items():
        assert rows[f"step:{step}"] >= answers["200"] > 0, f"step {step}: inferences lost"
