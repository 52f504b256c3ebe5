"""The inference log end to end, real processes: transformer -> detector(s) under load.

Every event delivered at a moderate load; whole inferences dropped, and counted, under a forced overload; and
several detectors, each id's events and feedback on the replica its id hashes to.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from housing.processes import wait_until
from serving.events import replica_for
from tests.detector.conftest import DetectorProcess, metric_value
from tests.serving.conftest import MODEL, Server, start_transformer

pytestmark = pytest.mark.slow


async def send_load(
    transformer: Server, houses: list[dict[str, float]], ids: list[str], concurrency: int = 8
) -> None:
    """One one-row V1 request per id, ``concurrency`` at a time; every answer must be a 200."""
    queue = list(reversed(ids))
    async with httpx.AsyncClient(timeout=30) as client:

        async def worker() -> None:
            while queue:
                request_id = queue.pop()
                house = houses[hash(request_id) % len(houses)]
                response = await client.post(
                    f"{transformer.url}/v1/models/{MODEL}:predict",
                    json={"instances": [house]},
                    headers={"x-request-id": request_id},
                )
                assert response.status_code == 200, response.text

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def logger_count(transformer: Server, outcome: str) -> float:
    text = httpx.get(f"{transformer.url}/metrics", timeout=10).text
    return metric_value(
        text, "housing_logger_inferences_total", component="transformer", endpoint="default", outcome=outcome
    )


def unmatched(detector: DetectorProcess) -> float:
    return sum(
        detector.metric("housing_detector_events_total", type=kind, outcome="unmatched")
        for kind in ("request", "response")
    )


def test_every_inference_reaches_the_detector_at_a_moderate_load(
    predictor: Server, log_dir: Path, start_detector, houses
) -> None:
    detector = start_detector("--window_size", "100000")
    transformer = start_transformer(
        log_dir, predictor, "--logger_url", f"{detector.url}/", name="transformer-all"
    )
    ids = [f"all-{index}" for index in range(1500)]
    try:
        asyncio.run(send_load(transformer, houses, ids))
        wait_until(
            lambda: logger_count(transformer, "delivered") == len(ids), timeout=30, what="every batch sent"
        )
        assert logger_count(transformer, "offered") == len(ids)
        assert logger_count(transformer, "dropped") == logger_count(transformer, "failed") == 0
    finally:
        transformer.service.stop()
    assert detector.metric("housing_detector_inferences_total", endpoint="default") == len(ids)
    assert unmatched(detector) == 0 and detector.status()["pending"] == 0
    assert detector.metric("housing_events_unseen_total", endpoint="default") == 0


def test_a_forced_overload_drops_whole_inferences_and_the_detector_knows_how_many(
    predictor: Server, log_dir: Path, start_detector, houses
) -> None:
    """A queue of 4 inferences that waits 200 ms to fill a batch (at most 20 inferences/s): most inferences
    are dropped, whole; the share the events report matches the share delivered within 2 points."""
    detector = start_detector("--window_size", "100000")
    transformer = start_transformer(
        log_dir, predictor, "--logger_url", f"{detector.url}/", "--logger_queue", "4",
        "--logger_flush_ms", "200", name="transformer-overload",
    )  # fmt: skip
    ids = [f"over-{index}" for index in range(2000)]
    try:
        asyncio.run(send_load(transformer, houses, ids))
        outcomes = ("delivered", "dropped", "failed")
        wait_until(
            lambda: sum(logger_count(transformer, outcome) for outcome in outcomes) == len(ids),
            timeout=60,
            what="every inference delivered, dropped or failed",
        )
        offered, delivered = logger_count(transformer, "offered"), logger_count(transformer, "delivered")
        failed = logger_count(transformer, "failed")
        assert offered == len(ids) and failed == 0, f"{failed} inferences failed to send"
    finally:
        transformer.service.stop()
    true_share = delivered / offered
    print(f"overload: {offered:.0f} offered, {delivered:.0f} delivered ({true_share:.1%})")
    assert true_share < 0.8, f"not an overload: {true_share:.0%} delivered"
    seen = detector.metric("housing_detector_inferences_total", endpoint="default")
    unseen = detector.metric("housing_events_unseen_total", endpoint="default")
    assert seen == delivered  # every delivered inference joined: no request without its response
    assert unmatched(detector) == 0 and detector.status()["pending"] == 0
    estimated_share = seen / (seen + unseen)
    print(f"detector's estimate of the delivered share: {estimated_share:.1%}")
    assert estimated_share == pytest.approx(true_share, abs=0.02), (estimated_share, true_share)


def test_three_detectors_each_id_on_its_own_replica_with_its_feedback(
    predictor: Server, log_dir: Path, start_detector, houses
) -> None:
    detectors = [start_detector("--window_size", "100000", name=f"replica-{index}") for index in range(3)]
    urls = ",".join(f"{detector.url}/" for detector in detectors)
    transformer = start_transformer(log_dir, predictor, "--logger_url", urls, name="transformer-replicas")
    ids = [f"rep-{index}" for index in range(600)]
    try:
        asyncio.run(send_load(transformer, houses, ids))
        wait_until(
            lambda: logger_count(transformer, "delivered") == len(ids), timeout=30, what="every batch sent"
        )
    finally:
        transformer.service.stop()
    expected = [sum(replica_for(request_id, 3) == index for request_id in ids) for index in range(3)]
    joined = [
        detector.metric("housing_detector_inferences_total", endpoint="default") for detector in detectors
    ]
    assert joined == expected and all(count > 150 for count in joined)
    assert [unmatched(detector) for detector in detectors] == [0, 0, 0]
    # Feedback sent to the replica its id hashes to finds the prediction; on another replica it does not.
    for request_id in ids[:30]:
        owner = replica_for(request_id, 3)
        found = detectors[owner].client.post(
            f"{detectors[owner].url}/feedback", json={"id": request_id, "value": 20.0}
        )
        assert found.status_code == 200, found.text
        other = detectors[(owner + 1) % 3]
        assert (
            other.client.post(f"{other.url}/feedback", json={"id": request_id, "value": 20.0}).status_code
            == 404
        )
