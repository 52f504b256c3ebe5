"""A shadow predictor gets copies of the requests through real processes; clients only see the champion."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import httpx
import pytest

from housing.cli import main
from housing.processes import wait_until
from tests.detector.conftest import metric_value
from tests.serving.conftest import MODEL, Server, canary_flag, start_predictor, start_transformer
from transformer.__main__ import parse_args
from transformer.routing import ArmSpec


def shadow_flag(percent: int, shadow: Server) -> list[str]:
    return ["--shadow", canary_flag("challenger", percent, shadow, "v2")[1]]


def test_shadow_values_are_read_and_checked(capsys: pytest.CaptureFixture[str]):
    args = parse_args(["--predictor_host", "p:80", "--shadow", "next=25,h:80,h:8080"])
    assert args.shadow == ArmSpec("next", 25, "h:80", "h:8080")
    assert parse_args(["--predictor_host", "p:80"]).shadow is None
    with pytest.raises(SystemExit):
        parse_args(["--predictor_host", "p:80", "--shadow", "next=250,h"])
    assert "--shadow 'next=250,h': PERCENT '250' must be an integer from 0 to 100" in capsys.readouterr().err


def shadow_outcomes(transformer: Server) -> dict[str, float]:
    text = httpx.get(f"{transformer.url}/metrics").text
    outcomes = ("answered", "dropped", "refused", "timeout", "unavailable", "error")
    return {
        outcome: metric_value(text, "housing_shadow_requests_total", shadow="challenger", outcome=outcome)
        for outcome in outcomes
    }


@pytest.mark.slow
def test_every_request_is_mirrored_logged_as_shadow_and_a_frozen_shadow_harms_no_client(
    predictor: Server, reversed_artifact_dir: Path, log_dir: Path, start_detector, artifact, houses, capsys
):
    shadow = start_predictor(log_dir, str(reversed_artifact_dir), name="predictor-shadow")
    detector = start_detector("--window_size", "1000")  # no window fills: window_rows counts every row
    transformer = None
    try:
        shadow.service.wait_ready(f"{shadow.url}/v2/health/ready")
        transformer = start_transformer(
            log_dir, predictor, *shadow_flag(100, shadow), "--shadow_max_in_flight", "8",
            "--predictor_request_timeout_seconds", "1", "--logger_url", f"{detector.url}/",
            name="transformer-shadow",
        )  # fmt: skip
        url = f"{transformer.url}/v1/models/{MODEL}:predict"
        with httpx.Client(timeout=30) as client:
            # The first copy reads the shadow's metadata: let it finish, so no copy meets a full queue below.
            assert client.post(url, json={"instances": houses[:1]}).status_code == 200
            wait_until(lambda: shadow_outcomes(transformer)["answered"] == 1, timeout=20, what="first copy")
            answers = [client.post(url, json={"instances": [house]}) for house in houses[:40]]
        assert all(answer.status_code == 200 for answer in answers)
        assert {answer.headers["x-model-version"] for answer in answers} == {artifact.version}
        wait_until(lambda: shadow_outcomes(transformer)["answered"] == 41, timeout=20, what="41 copies")

        def logged_rows() -> dict[str, int]:
            keys = detector.status()["keys"]
            return {key.split("/")[0]: value["window_rows"] for key, value in keys.items()}

        # Both models priced the same 40 houses, under their own endpoint.
        wait_until(lambda: logged_rows() == {"default": 41, "shadow": 41}, timeout=30, what="both logged")

        # One label per request scores both models on the same house; the experiment pairs them by id.
        truths = [answer.json()["predictions"][0] for answer in answers]  # the champion exactly right
        labels = [
            {"id": answer.headers["x-request-id"], "value": truth}
            for answer, truth in zip(answers, truths, strict=True)
        ]
        accepted = detector.client.post(f"{detector.url}/feedback", json={"labels": labels}).json()
        assert accepted["accepted"] == 40
        # Each model's labels are scored against its own 90% intervals (the shadow's from its own predictor).
        keys = detector.status()["keys"]
        covered = {key.split("/")[0]: entry["coverage"]["0.9"] for key, entry in keys.items()}
        assert covered["default"]["labels"] == covered["shadow"]["labels"] == 40
        assert covered["default"]["coverage"] == 1.0  # the truth posted is the champion's own price
        assert covered["default"]["width"] != covered["shadow"]["width"]  # two models, two calibrations
        outcomes = detector.client.get(f"{detector.url}/outcomes").json()["keys"]
        shadow_key = next(key for key in outcomes if key.startswith("shadow/"))
        assert outcomes[shadow_key]["request_ids"] == [label["id"] for label in labels]  # only those labelled
        argv = ["experiment", "analyze", "--detector", detector.url, "--champion", "default",
                "--challenger", "shadow", "--paired", "--cap", "none", "--json"]  # fmt: skip
        # The champion wins: it was exactly right on every house (no cap: "auto" waits for 100 labels).
        assert main(argv) == 3
        decision = json.loads(capsys.readouterr().out)
        assert decision["pairs"] == 40 and decision["mae_champion"] == 0
        assert decision["challenger"] == shadow_key and decision["mae_challenger"] > 0

        # Frozen shadow: clients are answered as fast as ever; copies time out or are dropped, never queued.
        shadow.service.process.send_signal(signal.SIGSTOP)
        started = time.monotonic()
        with httpx.Client(timeout=30) as client:
            frozen = [client.post(url, json={"instances": [house]}) for house in houses[:30]]
        elapsed = time.monotonic() - started
        assert all(answer.status_code == 200 for answer in frozen)
        assert elapsed < 15, f"{elapsed:.1f} s for 30 requests: clients waited for the shadow"

        def lost() -> float:
            outcomes = shadow_outcomes(transformer)
            return outcomes["dropped"] + outcomes["timeout"] + outcomes["unavailable"]

        wait_until(lambda: lost() == 30, timeout=20, what="every frozen copy dropped, timed out or refused")
        assert shadow_outcomes(transformer)["error"] == 0
        assert shadow_outcomes(transformer)["dropped"] >= 1  # at most 8 copies were ever in flight
    finally:
        shadow.service.process.send_signal(signal.SIGCONT)
        if transformer:
            transformer.service.stop()
        shadow.service.stop()
