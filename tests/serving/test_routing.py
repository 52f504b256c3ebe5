"""Canaries split by the transformer: ``--canary`` parsing, and the split through real processes."""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from housing.processes import wait_until
from tests.conftest import ROOT
from tests.serving.conftest import MODEL, Server, canary_flag, start_predictor, start_transformer
from transformer.__main__ import parse_args
from transformer.routing import STABLE, ArmSettings, ArmSpec, build_router, choose_arm, parse_canary

# --- --canary on the command line ---------------------------------------------------------------------------


def test_canary_values_are_read():
    assert parse_canary("v2=10,housing-kserve-v2-predictor.housing") == ArmSpec(
        "v2", 10, "housing-kserve-v2-predictor.housing"
    )
    assert parse_canary("v2=100,127.0.0.1:8181,127.0.0.1:8180") == ArmSpec(
        "v2", 100, "127.0.0.1:8181", "127.0.0.1:8180"
    )
    args = parse_args(["--predictor_host", "p:80", "--canary", "a=10,h1", "--canary", "b=15,h2,h2r"])
    assert args.canary == [ArmSpec("a", 10, "h1"), ArmSpec("b", 15, "h2", "h2r")]
    assert parse_args(["--predictor_host", "p:80"]).canary == []


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["v2=10"], "expected NAME=PERCENT,HOST[,REST_HOST]"),
        (["v2"], "expected NAME=PERCENT,HOST[,REST_HOST]"),
        (["v2=10,h1,h2,h3"], "expected NAME=PERCENT,HOST[,REST_HOST]"),
        (["v2=10,,h2"], "expected NAME=PERCENT,HOST[,REST_HOST]"),
        (["V2=10,h"], "NAME 'V2' must be a DNS label"),
        (["v2-=10,h"], "NAME 'v2-' must be a DNS label"),
        (["v_2=10,h"], "NAME 'v_2' must be a DNS label"),
        (["stable=10,h"], "other than 'stable'"),
        (["v2=ten,h"], "PERCENT 'ten' must be an integer from 0 to 100"),
        (["v2=-1,h"], "PERCENT '-1' must be an integer from 0 to 100"),
        (["v2=101,h"], "PERCENT '101' must be an integer from 0 to 100"),
        (["v2=²,h"], "PERCENT '²' must be an integer from 0 to 100"),
        (["a=60,h1", "b=50,h2"], "the canaries' percentages add up to 110, more than 100"),
        (["a=10,h1", "a=20,h2"], "canary names must be unique; repeated: a"),
    ],
)
def test_bad_canary_values_are_refused(values: list[str], message: str, capsys: pytest.CaptureFixture[str]):
    argv = ["--predictor_host", "p:80"]
    for value in values:
        argv += ["--canary", value]
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "--canary" in error and message in error, error


def test_a_bad_canary_stops_the_real_command():
    done = subprocess.run(
        [sys.executable, "-m", "transformer", "--predictor_host", "p:80", "--canary", "v2=150,h"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 2
    assert "--canary 'v2=150,h': PERCENT '150' must be an integer from 0 to 100" in done.stderr


def test_arms_get_the_share_the_flags_give():
    router = build_router("p:80", None, [ArmSpec("c", 100, "c:80")], ArmSettings(MODEL, "v2"))
    assert [(arm.spec.name, arm.spec.percent, arm.endpoint) for arm in router.arms] == [
        (STABLE, 0, "default"),
        ("c", 100, "canary"),
    ]
    assert {router.choose().spec.name for _ in range(200)} == {"c"}  # a 0% arm is never drawn
    alone = build_router("p:80", "p:8080", [], ArmSettings(MODEL, "v2"))
    assert alone.choose() is alone.stable
    assert alone.stable.metadata_url == f"http://p:8080/v2/models/{MODEL}"


def test_sticky_assignment_keeps_each_user_on_one_arm_at_the_weights():
    # 10,000 requests from 1,000 users, 30% to the canary: each user meets one arm, the split stays.
    arms, weights = ["stable", "canary"], [70, 100]
    seen: dict[str, set[str]] = {}
    for index in range(10_000):
        user = f"user-{index % 1000}"
        seen.setdefault(user, set()).add(choose_arm(arms, weights, user))
    assert all(len(chosen) == 1 for chosen in seen.values())
    canary_share = sum(chosen == {"canary"} for chosen in seen.values()) / len(seen)
    assert abs(canary_share - 0.30) <= 0.03, canary_share
    # Growing the canary to 50% moves users only from stable to canary, never back.
    grown = {user: choose_arm(arms, [50, 100], user) for user in seen}
    assert all(grown[user] == "canary" for user, chosen in seen.items() if chosen == {"canary"})
    # Without a key, the draw is random: both arms appear for the same (absent) user.
    assert {choose_arm(arms, weights) for _ in range(200)} == {"stable", "canary"}


# --- the split through real processes -----------------------------------------------------------------------

REQUESTS = 400
CANARY_PERCENT = 30


@pytest.mark.slow
def test_the_transformer_splits_requests_between_stable_and_canary(
    predictor: Server,
    reversed_artifact_dir: Path,
    log_dir: Path,
    start_detector,
    artifact,
    reversed_artifact,
    houses,
):
    """One stable predictor, one canary serving another version (and another feature order), 30% to it."""
    canary = start_predictor(log_dir, str(reversed_artifact_dir), name="predictor-canary")
    detector = start_detector("--window_size", "1000")  # no window fills: window_rows counts every row
    transformer = None
    try:
        canary.service.wait_ready(f"{canary.url}/v2/health/ready")
        transformer = start_transformer(
            log_dir,
            predictor,
            *canary_flag("c", CANARY_PERCENT, canary, "grpc-v2"),
            "--logger_url",
            f"{detector.url}/",
            protocol="grpc-v2",
            name="transformer-split",
        )
        chosen = [houses[index % len(houses)] for index in range(REQUESTS)]
        answers = asyncio.run(send_v2(transformer, chosen, bounds=True))
    finally:
        if transformer:
            transformer.service.stop()
        canary.service.stop()

    references = {artifact.version: artifact, reversed_artifact.version: reversed_artifact}
    versions = Counter(version for version, *_ in answers)
    assert set(versions) <= set(references), versions
    for house, (version, value, *bounds) in zip(
        chosen, answers, strict=True
    ):  # each arm's own model answered
        model = references[version]
        row = np.array([[house[name] for name in model.feature_names]])
        assert value == pytest.approx(model.pipeline.predict(row)[0], rel=1e-9)
        _, lower, upper = model.pipeline.predict_bounds(row)  # and with its own model's 90% interval
        assert bounds == pytest.approx([lower[0, 1], upper[0, 1]], rel=1e-9)
    # Binomial(400, 0.3): mean 120, standard deviation 9.2 requests. Within 4 standard deviations, a right
    # split fails about once in 16,000 runs; a 50/50 split, or the canary ignored, is far outside.
    tolerance = 4 * math.sqrt(REQUESTS * 0.3 * 0.7)
    assert abs(versions[reversed_artifact.version] - REQUESTS * 0.3) <= tolerance, versions

    # Every request was logged once, under its arm's endpoint and the version that answered.
    expected_rows = {
        f"default/{artifact.version}": versions[artifact.version],
        f"canary/{reversed_artifact.version}": versions[reversed_artifact.version],
    }

    def logged_rows() -> dict[str, int]:
        keys = detector.status()["keys"]
        return {key: value["window_rows"] for key, value in keys.items()}

    wait_until(lambda: logged_rows() == expected_rows, timeout=30, what=f"detector windows {expected_rows}")


async def send_v2(
    server: Server, instances: list[dict[str, float]], bounds: bool = False
) -> list[tuple[Any, ...]]:
    """One V2 request (named inputs, one row) per instance, 16 at a time: (model_version, prediction) each,
    and with ``bounds`` the prediction's 90% interval too (asked for by name)."""
    limit = asyncio.Semaphore(16)
    outputs = (
        {"outputs": [{"name": name} for name in ("medv", "price_lower", "price_upper")]} if bounds else {}
    )

    async def one(client: httpx.AsyncClient, house: dict[str, float]) -> tuple[Any, ...]:
        body = {"inputs": [{"name": name, "datatype": "FP64", "shape": [1], "data": [value]}
                           for name, value in house.items()], **outputs}  # fmt: skip
        async with limit:
            response = await client.post(f"{server.url}/v2/models/{MODEL}/infer", json=body)
        assert response.status_code == 200, response.text
        answer = response.json()
        return (answer["model_version"], *(output["data"][0] for output in answer["outputs"]))

    async with httpx.AsyncClient(timeout=30) as client:
        return await asyncio.gather(*(one(client, house) for house in instances))


@pytest.mark.slow
def test_a_canary_that_goes_away_hands_its_share_to_the_stable_predictor(
    predictor: Server, reversed_artifact_dir: Path, log_dir: Path, artifact, houses
):
    """`helm upgrade` or `housing rollout rollback` deletes a canary that transformers still route to."""
    from tests.detector.conftest import metric_value

    canary = start_predictor(log_dir, str(reversed_artifact_dir), name="predictor-canary-gone")
    transformer = None
    try:
        canary.service.wait_ready(f"{canary.url}/v2/health/ready")
        transformer = start_transformer(
            log_dir, predictor, *canary_flag("c", 50, canary, "v2"), name="transformer-canary-gone"
        )
        before = Counter(version for version, *_ in asyncio.run(send_v2(transformer, houses[:40])))
        assert len(before) == 2, before  # both arms answer while the canary runs
        canary.service.stop()
        after = asyncio.run(send_v2(transformer, houses[:60]))  # every answer 200 (send_v2 asserts it)
        metrics = httpx.get(f"{transformer.url}/metrics").text
    finally:
        if transformer:
            transformer.service.stop()
        canary.service.stop()
    assert {version for version, _ in after} == {artifact.version}, "the stable predictor answered them all"
    for house, (_, value) in zip(houses[:60], after, strict=True):  # in its own order, read by name
        row = np.array([[house[name] for name in artifact.feature_names]])
        assert value == pytest.approx(artifact.pipeline.predict(row)[0], rel=1e-9)
    fallbacks = metric_value(metrics, "housing_canary_fallbacks_total", canary="c")
    assert 10 <= fallbacks <= 60, fallbacks  # about half of the 60 requests drew the canary


@pytest.mark.slow
def test_a_sticky_ab_split_answers_each_user_from_one_arm_and_says_which(
    predictor: Server, reversed_artifact_dir: Path, log_dir: Path, artifact, reversed_artifact, houses
):
    canary = start_predictor(log_dir, str(reversed_artifact_dir), name="predictor-sticky")
    transformer = None
    try:
        canary.service.wait_ready(f"{canary.url}/v2/health/ready")
        transformer = start_transformer(
            log_dir, predictor, *canary_flag("b", 50, canary, "v2"), "--sticky_header", "X-User-Id",
            name="transformer-sticky",
        )  # fmt: skip
        url = f"{transformer.url}/v1/models/{MODEL}:predict"
        arms: dict[str, set[tuple[str, str]]] = {}
        with httpx.Client(timeout=30) as client:
            for index in range(120):
                user = f"user-{index % 30}"
                response = client.post(
                    url, json={"instances": houses[index % 5 : index % 5 + 1]}, headers={"x-user-id": user}
                )
                assert response.status_code == 200, response.text
                seen = (response.headers["x-housing-arm"], response.headers["x-model-version"])
                arms.setdefault(user, set()).add(seen)
            anonymous = client.post(url, json={"instances": houses[:1]})
    finally:
        if transformer:
            transformer.service.stop()
        canary.service.stop()
    assert all(len(seen) == 1 for seen in arms.values()), arms  # one arm, one model per user
    assert {next(iter(seen)) for seen in arms.values()} == {
        ("stable", artifact.version),
        ("b", reversed_artifact.version),
    }
    assert anonymous.status_code == 200 and anonymous.headers["x-housing-arm"] in ("stable", "b")
