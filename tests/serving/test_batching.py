"""Adaptive batching in the transformer: the coalescer alone, then through real transformer and predictor."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import numpy as np
import pytest

from tests.serving.conftest import MODEL, Server, start_transformer
from tests.serving.test_protocols import expected, sample
from transformer.batching import Coalescer


class Predictor:
    """A stand-in for the predictor call that records each call and can be held open."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, list[Any]]] = []
        self.release = asyncio.Event()
        self.fail_with: Exception | None = None
        self.short = False

    async def __call__(self, rows: np.ndarray, contexts: list[Any]) -> tuple[np.ndarray, str]:
        self.calls.append((len(rows), contexts))
        call = f"call-{len(self.calls)}"
        await self.release.wait()
        if self.fail_with is not None:
            raise self.fail_with
        # One value per row, traceable to its row; the note names the call.
        return (rows[:-1, 0] if self.short else rows[:, 0] * 10), call


def rows(*values: float) -> np.ndarray:
    return np.array([[value, 0.0] for value in values])


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_requests_merge_only_while_calls_are_in_flight():
    async def scenario() -> None:
        predictor = Predictor()
        coalescer = Coalescer(predictor, max_rows=4, max_in_flight=1)
        first = asyncio.create_task(coalescer.predict(rows(1), context="a"))
        await settle()
        assert predictor.calls == [(1, ["a"])]  # a lone request goes at once, alone
        waiting = [
            asyncio.create_task(coalescer.predict(rows(*values), context=name))
            for name, values in (("b", (2, 3)), ("c", (4,)), ("d", (5,)), ("e", (6, 7, 8, 9, 10)))
        ]
        await settle()
        predictor.release.set()
        values, note = await first
        assert (values.tolist(), note) == ([10], "call-1")
        results = [await task for task in waiting]
        # Each request gets its own rows and the note of the call that carried it.
        assert [(values.tolist(), note) for values, note in results] == [
            ([20, 30], "call-2"), ([40], "call-2"), ([50], "call-2"), ([60, 70, 80, 90, 100], "call-3")
        ]  # fmt: skip
        # b, c and d fill one call (4 rows); e, larger than max_rows on its own, goes alone.
        assert predictor.calls[1:] == [(4, ["b", "c", "d"]), (5, ["e"])]

    asyncio.run(scenario())


def test_requests_with_other_keys_are_not_merged():
    async def scenario() -> None:
        predictor = Predictor()
        coalescer = Coalescer(predictor, max_rows=100, max_in_flight=1)
        busy = asyncio.create_task(coalescer.predict(rows(0)))
        await settle()
        tasks = [
            asyncio.create_task(coalescer.predict(rows(value), key=key, context=value))
            for value, key in ((1, "alice"), (2, "alice"), (3, "bob"), (4, "alice"))
        ]
        await settle()
        predictor.release.set()
        await asyncio.gather(busy, *tasks)
        assert [contexts for _, contexts in predictor.calls[1:]] == [[1, 2], [3], [4]]

    asyncio.run(scenario())


def test_a_failed_call_fails_each_of_its_requests_and_the_next_call_works():
    async def scenario() -> None:
        predictor = Predictor()
        coalescer = Coalescer(predictor, max_rows=10, max_in_flight=1)
        predictor.fail_with = RuntimeError("predictor down")
        tasks = [asyncio.create_task(coalescer.predict(rows(value))) for value in (1, 2, 3)]
        await settle()
        predictor.release.set()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        assert [str(outcome) for outcome in outcomes] == ["predictor down"] * 3
        predictor.fail_with = None
        assert (await coalescer.predict(rows(4)))[0].tolist() == [40]

    asyncio.run(scenario())


def test_a_caller_that_gave_up_is_left_out_of_the_call():
    async def scenario() -> None:
        predictor = Predictor()
        coalescer = Coalescer(predictor, max_rows=10, max_in_flight=1)
        busy = asyncio.create_task(coalescer.predict(rows(0), context="busy"))
        await settle()
        gone = asyncio.create_task(coalescer.predict(rows(1), context="gone"))
        kept = asyncio.create_task(coalescer.predict(rows(2), context="kept"))
        await settle()
        gone.cancel()
        predictor.release.set()
        assert (await kept)[0].tolist() == [20]
        await busy
        assert predictor.calls[-1] == (1, ["kept"])

    asyncio.run(scenario())


def test_a_wrong_number_of_predictions_is_an_error_not_a_misaligned_answer():
    async def scenario() -> None:
        predictor = Predictor()
        predictor.short, predictor.release = True, asyncio.Event()
        predictor.release.set()
        with pytest.raises(ValueError, match="returned 1 predictions for 2 rows"):
            await Coalescer(predictor, max_rows=10).predict(rows(1, 2))

    asyncio.run(scenario())


def test_with_linger_a_call_waits_and_takes_in_the_requests_that_come_meanwhile():
    # A shadow's copies: nobody waits for them, so a call lingers to carry more rows.
    async def scenario() -> None:
        predictor = Predictor()
        predictor.release.set()
        coalescer = Coalescer(predictor, max_rows=3, max_in_flight=1, linger=0.05)
        first = asyncio.create_task(coalescer.predict(rows(1), context="a"))
        await settle()
        assert predictor.calls == []  # lingering, not yet sent
        later = [asyncio.create_task(coalescer.predict(rows(value), context=value)) for value in (2, 3, 4)]
        results = await asyncio.gather(first, *later)
        assert [values.tolist() for values, _ in results] == [[10], [20], [30], [40]]
        # The first call took in 2 and 3 up to max_rows; the fourth went in the next (lingering) call.
        assert predictor.calls == [(3, ["a", 2, 3]), (1, [4])]

    asyncio.run(scenario())


def test_limits_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        Coalescer(Predictor(), max_rows=0)
    with pytest.raises(ValueError, match="linger at least 0"):
        Coalescer(Predictor(), max_rows=1, linger=-1)


# --- through real servers -------------------------------------------------------------------------------


def concurrent_predictions(server: Server, batches: list[list[dict[str, float]]]) -> list[list[float]]:
    """Send every batch at once, as V1 named instances; the predictions of each, in order."""

    async def send() -> list[list[float]]:
        async with httpx.AsyncClient(timeout=30) as client:
            responses = await asyncio.gather(
                *(
                    client.post(f"{server.url}/v1/models/{MODEL}:predict", json={"instances": batch})
                    for batch in batches
                )
            )
        for response in responses:
            assert response.status_code == 200, response.text
        return [response.json()["predictions"] for response in responses]

    return asyncio.run(send())


def predictor_calls(predictor: Server) -> tuple[float, float]:
    """How many inference calls the predictor has served, and how many rows they carried."""
    metrics = httpx.get(f"{predictor.url}/metrics").text
    labels = {"component": "predictor", "model_name": MODEL}
    return sample(metrics, "housing_batch_rows_count", **labels), sample(
        metrics, "housing_batch_rows_sum", **labels
    )


@pytest.mark.parametrize(("coalesce_rows", "merged"), [("256", True), ("0", False)])
def test_concurrent_requests_through_the_servers(
    predictor: Server, log_dir, artifact, houses, rows_of, coalesce_rows, merged
):
    server = start_transformer(
        log_dir,
        predictor,
        "--coalesce_rows",
        coalesce_rows,
        protocol="grpc-v2",
        name=f"coalesce-{coalesce_rows}",
    )
    batches = [houses[index : index + 1 + index % 3] for index in range(60)]  # 1 to 3 rows each
    try:
        calls_before, rows_before = predictor_calls(predictor)
        answers = concurrent_predictions(server, batches)
        calls_after, rows_after = predictor_calls(predictor)
    finally:
        server.service.stop()
    calls, predicted_rows = calls_after - calls_before, rows_after - rows_before
    for batch, answer in zip(batches, answers, strict=True):  # every request gets its own rows' predictions
        np.testing.assert_allclose(answer, expected(artifact, rows_of(batch)), rtol=1e-9)
    assert predicted_rows == sum(len(batch) for batch in batches)  # no row lost or predicted twice
    if merged:
        assert calls < len(batches), "60 simultaneous requests should share predictor calls"
    else:
        assert calls == len(batches)
