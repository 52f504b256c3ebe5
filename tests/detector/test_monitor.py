"""The monitor in-process: joins, eviction, windows, episodes and cool-down, snapshot and restore."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from detector.events import Bounds, InferenceEvent, InvalidEventError
from detector.keys import WindowKey
from detector.monitor import ENTRY_BYTES, Monitor, Settings
from detector.retrain import RetrainTrigger
from detector.state import read_state, validated
from detector.stats import DriftTester, Reference
from model.artifact import read_metadata
from tests.detector.conftest import held_out_rows


@pytest.fixture(scope="module")
def tester(artifact_dir: Path) -> DriftTester:
    return DriftTester(Reference.from_metadata(read_metadata(artifact_dir)))


def request(event_id: str, rows: np.ndarray, endpoint: str = "default") -> InferenceEvent:
    return InferenceEvent("request", event_id, endpoint, "predictor", None, rows=np.atleast_2d(rows))


def response(event_id: str, values: list[float], version: str | None = None) -> InferenceEvent:
    return InferenceEvent("response", event_id, "default", "predictor", version, predictions=np.array(values))


def entry_bytes(row: np.ndarray, event_id: str) -> int:
    """What one pending request of ``row`` counts against the byte bounds (component ``predictor``)."""
    return np.atleast_2d(row).astype(float).nbytes + len(event_id) + len("predictor") + ENTRY_BYTES


def test_pending_buffer_is_bounded_and_duplicates_replace(tester: DriftTester, artifact_dir: Path) -> None:
    row = held_out_rows(artifact_dir)[0]
    fired: list[dict] = []
    two = 2 * entry_bytes(row, "a")  # room for two pending events of one row
    settings = Settings(max_pending_bytes=two, max_pending_bytes_per_endpoint=two, pending_ttl=10)
    monitor = Monitor(tester, settings, RetrainTrigger("none", fired.append))
    monitor.ingest(request("a", row), now=0)
    monitor.ingest(request("a", row), now=1)  # a duplicate: the older one is unmatched
    monitor.ingest(request("b", row), now=2)
    monitor.ingest(request("c", row), now=3)  # evicts "a"
    assert list(monitor.pending) == [("predictor", "b"), ("predictor", "c")]
    monitor.expire(now=12.5)  # "b" is older than 10 s
    assert list(monitor.pending) == [("predictor", "c")]
    monitor.ingest(response("c", [20.0], version="9"), now=4)
    assert monitor.windows[WindowKey("default", "9")].count == 1 and not monitor.pending
    monitor.ingest(request("d", row), now=5)
    with pytest.raises(InvalidEventError, match="2 predictions for 1 request rows"):
        monitor.ingest(response("d", [1.0, 2.0]), now=6)


def test_one_endpoints_flood_does_not_evict_anothers_pending(tester: DriftTester, artifact_dir: Path) -> None:
    row = held_out_rows(artifact_dir)[0]
    three = 3 * entry_bytes(row, "flood-49")
    settings = Settings(max_pending_bytes=100 * three, max_pending_bytes_per_endpoint=three, pending_ttl=60)
    monitor = Monitor(tester, settings, RetrainTrigger("none", None))
    monitor.ingest(request("canary-1", row, endpoint="canary"), now=0)
    for index in range(50):  # a flood on default: it pushes out its own oldest, never canary-1
        monitor.ingest(request(f"flood-{index}", row), now=1 + index)
    assert list(monitor.pending) == [
        ("predictor", "canary-1"),
        ("predictor", "flood-47"),
        ("predictor", "flood-48"),
        ("predictor", "flood-49"),
    ]
    restored = Monitor(tester, settings, RetrainTrigger("none", None), monitor.snapshot())
    restored.ingest(request("flood-50", row), now=60)  # the restored counts still bound the endpoint
    assert ("predictor", "canary-1") in restored.pending and len(restored.pending) == 4


def test_one_firing_per_episode_and_cool_down(tester: DriftTester, artifact_dir: Path) -> None:
    fired: list[dict] = []
    trigger = RetrainTrigger("webhook", fired.append, cooldown=100)
    default, canary = WindowKey("default", "1"), WindowKey("canary", "1")
    assert trigger.update(default, "drift", {"drift_score": 0.5}, now=0)
    assert not trigger.update(default, "drift", {}, now=10)  # same episode
    assert not trigger.update(canary, "drift", {}, now=20)  # a new episode, but within the cool-down
    assert not trigger.update(default, None, {}, now=30)  # recovered
    assert trigger.update(default, "r2", {}, now=200)  # a new episode after the cool-down
    for thread in trigger.threads:
        thread.join(5)
    assert [episode["reason"] for episode in fired] == ["drift", "r2"]
    assert fired[0]["key"] == "default/1" and fired[0]["drift_score"] == 0.5
    restored = RetrainTrigger("webhook", None, cooldown=100, state=trigger.snapshot())
    assert restored.active == {default, canary} and restored.last_fired == 200


def test_with_min_labels_an_episode_fires_once_enough_labels_arrived_after_it_began() -> None:
    fired: list[dict] = []
    trigger = RetrainTrigger("webhook", fired.append, cooldown=0, min_labels=50)
    key = WindowKey("default", "1")
    assert not trigger.update(key, "drift", {}, now=0, labels=120)  # begins with 120 labels of the old days
    assert trigger.status()["labels_awaited"] == {"default/1": 50}
    assert not trigger.update(key, "drift", {}, now=1, labels=169)
    assert trigger.status()["labels_awaited"] == {"default/1": 1}
    assert trigger.update(key, "drift", {}, now=2, labels=170)  # 50 since it began
    assert trigger.status()["labels_awaited"] == {} and key in trigger.active
    assert not trigger.update(key, "drift", {}, now=3, labels=500)  # the same episode fires once
    other = WindowKey("canary", "2")
    assert not trigger.update(other, "r2", {}, now=4, labels=0)
    assert not trigger.update(other, None, {}, now=5, labels=40)  # recovered before its labels came
    assert not trigger.update(other, "r2", {}, now=6, labels=60)  # a new episode counts from 60
    assert not trigger.update(other, "r2", {}, now=7, labels=100)
    assert trigger.update(other, "r2", {}, now=8, labels=110)
    for thread in trigger.threads:
        thread.join(5)
    assert [episode["key"] for episode in fired] == ["default/1", "canary/2"]


def test_a_shadow_joined_after_the_label_is_scored_when_it_comes(
    tester: DriftTester, artifact_dir: Path
) -> None:
    # The transformer sends a shadow's copy after the client's answer: its prediction may reach the detector
    # after the label, which must still compare both models on the house.
    row = held_out_rows(artifact_dir)[0]
    monitor = Monitor(tester, Settings(), RetrainTrigger("none", None))
    champion, shadow = WindowKey("default", "3"), WindowKey("shadow", "4")
    monitor.ingest(request("r1", row), now=0)
    monitor.ingest(response("r1", [20.0], version="3"), now=0)
    assert monitor.feedback("r1", 24.0) and shadow not in monitor.labels
    monitor.ingest(request("r1", row, endpoint="shadow"), now=1)
    monitor.ingest(response("r1", [23.0], version="4"), now=1)
    assert list(monitor.labels[shadow]) == [(24.0, 23.0, "r1")] and monitor.labels_received[shadow] == 1
    assert monitor.live(shadow)["mae"] == 1.0 and monitor.live(champion)["mae"] == 4.0
    monitor.ingest(request("r1", row, endpoint="shadow"), now=2)  # a duplicate is not scored twice
    monitor.ingest(response("r1", [23.0], version="4"), now=2)
    assert len(monitor.labels[shadow]) == 1 and len(monitor.labels[champion]) == 1
    # The labels kept by id survive a restart.
    monitor.ingest(request("r2", row), now=3)
    monitor.ingest(response("r2", [30.0], version="3"), now=3)
    assert monitor.feedback("r2", 25.0)
    restored = Monitor(
        tester, Settings(), RetrainTrigger("none", None), json.loads(json.dumps(monitor.snapshot()))
    )
    restored.ingest(request("r2", row, endpoint="shadow"), now=4)
    restored.ingest(response("r2", [26.0], version="4"), now=4)
    assert list(restored.labels[shadow]) == [(24.0, 23.0, "r1"), (25.0, 26.0, "r2")]


def test_windows_are_tested_when_full_and_state_round_trips(tester: DriftTester, artifact_dir: Path) -> None:
    rows = held_out_rows(artifact_dir)[:25]
    monitor = Monitor(tester, Settings(window_size=10), RetrainTrigger("none", None))
    monitor.ingest(request("big", rows[:23]), now=0)
    monitor.ingest(response("big", list(range(23))), now=0)
    key = WindowKey("default", tester.reference.version)
    assert len(monitor.queued) == 2 and key not in monitor.results
    state = monitor.snapshot()
    assert [len(window["rows"]) for window in state["queued"]] == [10, 10]
    monitor.test_due()
    assert not monitor.queued
    assert monitor.results[key].rows == 10 and monitor.windows[key].count == 3
    assert monitor.feedback("big", list(range(1, 24)))
    assert monitor.live(key) == {
        "labels": 23,
        "mae": 1.0,
        "rmse": 1.0,
        "r2": pytest.approx(1 - 23 / np.var(range(23)) / 23),
    }
    with pytest.raises(ValueError, match=r"must be 23 number\(s\), one per predicted row, got 1"):
        monitor.feedback("big", 3.0)
    monitor.ingest(request("open", rows[0]), now=0)
    state = monitor.snapshot()
    copy = Monitor(
        tester, Settings(window_size=10), RetrainTrigger("none", None, state=state["retrain"]), state
    )
    assert copy.status() == monitor.status()
    assert copy.snapshot() == monitor.snapshot()


def test_state_saved_by_the_first_release_is_resumed(
    tester: DriftTester, artifact_dir: Path, tmp_path: Path
) -> None:
    """Format 1 (positional lists, ``endpoint/model_version`` strings), as the first release wrote it."""
    rows = held_out_rows(artifact_dir)[:5]
    result = tester.test(rows, np.arange(5.0)).to_dict()
    old = {
        "format": 1,
        "reference_version": "7",
        "pending": [["predictor", "open", "request", 100.0, "default", None, [rows[0].tolist()]]],
        "windows": {
            "default/7": {"rows": rows[:2].tolist(), "predictions": [20.0, 21.0]},
            "canary/7": {"rows": [], "predictions": []},
        },
        "queued": [["canary/7", rows[2:5].tolist(), [1.0, 2.0, 3.0]]],
        "results": {"canary/7": result},
        "labels": {"default/7": [[22.0, 20.0], [23.0, 21.0]]},
        "recent": [["two", "default/7", [20.0, 21.0]]],
        "retrain": {"active": ["canary/7"], "last_fired": 50.0, "firings": []},
    }
    path = tmp_path / "state.json"
    path.write_text(json.dumps(old))
    state = read_state(path)
    trigger = RetrainTrigger("none", None, state=state["retrain"])
    monitor = Monitor(tester, Settings(window_size=10), trigger, state)
    default, canary = WindowKey("default", "7"), WindowKey("canary", "7")
    assert monitor.windows[default].count == 2 and canary not in monitor.windows
    assert [item.key for item in monitor.queued.values()] == [canary]
    assert monitor.results[canary].to_dict() == result
    assert monitor.live(default) == {"labels": 2, "mae": 2.0, "rmse": 2.0, "r2": pytest.approx(-15.0)}
    assert list(monitor.pending) == [("predictor", "open")]
    assert monitor.trigger.active == {canary} and monitor.trigger.last_fired == 50.0
    assert monitor.feedback("two", [20.0, 21.0]) and monitor.live(default)["labels"] == 4


def bounded(event_id: str, values: list[float], lower: list[float], upper: list[float], level: float = 0.9,
            version: str = "3") -> InferenceEvent:  # fmt: skip
    """A response whose predictions carry their interval bounds."""
    bounds = Bounds(level, np.array(lower), np.array(upper))
    event = response(event_id, values, version=version)
    return dataclasses.replace(event, intervals=bounds)


def test_each_label_is_a_hit_or_a_miss_of_its_interval(tester: DriftTester, artifact_dir: Path) -> None:
    rows = held_out_rows(artifact_dir)[:4]
    monitor = Monitor(tester, Settings(coverage_window=3), RetrainTrigger("none", None))
    key = WindowKey("default", "3")
    monitor.ingest(request("a", rows[:2]), now=0)
    monitor.ingest(bounded("a", [20.0, 30.0], [18.0, 27.0], [22.0, 34.0]), now=0)
    assert monitor.feedback("a", [21.0, 35.0])  # inside, then above its upper bound: a hit and a miss
    assert monitor.interval_coverage(key) == {"0.9": {"labels": 2, "coverage": 0.5, "width": 5.5}}
    assert sample("housing_interval_coverage", endpoint="default", model_version="3", level="0.9") == 0.5
    assert sample("housing_interval_width", endpoint="default", model_version="3", level="0.9") == 5.5
    assert sample("housing_interval_labels", endpoint="default", model_version="3", level="0.9") == 2
    monitor.ingest(request("b", rows[2:4]), now=1)
    monitor.ingest(bounded("b", [25.0, 25.0], [23.0, 23.0], [27.0, 27.0]), now=1)
    assert monitor.feedback("b", [23.0, 27.0])  # both on a bound: hits (the interval is closed)
    # Over the last 3 labels only: the miss, then two hits.
    assert monitor.interval_coverage(key)["0.9"] == {
        "labels": 3,
        "coverage": 2 / 3,
        "width": 5.0,
    }
    # Another level is counted on its own; a response without bounds is scored for accuracy only.
    monitor.ingest(request("c", rows[0]), now=2)
    monitor.ingest(bounded("c", [20.0], [19.0], [21.0], level=0.8), now=2)
    assert monitor.feedback("c", 25.0)
    monitor.ingest(request("d", rows[0]), now=3)
    monitor.ingest(response("d", [20.0], version="3"), now=3)
    assert monitor.feedback("d", 20.0)
    coverage = monitor.interval_coverage(key)
    assert coverage["0.8"] == {"labels": 1, "coverage": 0.0, "width": 2.0} and coverage["0.9"]["labels"] == 3
    assert monitor.live(key)["labels"] == 6
    assert monitor.status()["keys"]["default/3"]["coverage"] == coverage
    # Coverage and the bounds of predictions not yet labelled survive a restart.
    monitor.ingest(request("e", rows[1]), now=4)
    monitor.ingest(bounded("e", [20.0], [10.0], [30.0]), now=4)
    saved = json.loads(json.dumps(monitor.snapshot()))
    checked = validated(saved, Settings(coverage_window=3), monitor.width, tester.reference.version)
    assert checked["coverage"] == saved["coverage"] and checked["recent"] == saved["recent"]
    restored = Monitor(tester, Settings(coverage_window=3), RetrainTrigger("none", None), checked)
    assert restored.interval_coverage(key) == coverage
    assert restored.feedback("e", 29.0)
    assert restored.interval_coverage(key)["0.9"] == {
        "labels": 3,
        "coverage": 1.0,
        "width": pytest.approx(28 / 3),
    }


def sample(name: str, **labels: str) -> float | None:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels)


def test_a_new_model_version_takes_the_place_of_an_idle_one_never_the_references(
    tester: DriftTester, artifact_dir: Path
) -> None:
    from detector import metrics

    row = held_out_rows(artifact_dir)[0]
    settings = Settings(max_model_versions=2, model_version_idle=10)
    monitor = Monitor(tester, settings, RetrainTrigger("none", None))
    reference = tester.reference.version

    def join(event_id: str, version: str | None, now: float) -> None:
        monitor.ingest(request(event_id, row), now=now)
        monitor.ingest(response(event_id, [20.0], version=version), now=now)

    join("a", None, now=0)  # the reference's version
    join("b", "old", now=1)
    assert monitor.feedback("b", 21.0)
    evicted = metrics.EVICTED.labels(buffer="model_version")._value.get()
    with pytest.raises(InvalidEventError, match=r"'new' would be model version 3 tracked; at most 2"):
        join("c", "new", now=5)  # "old" has been idle 4 s only
    join("d", "new", now=100)  # "old" idle for 99 s: forgotten, with its windows, labels and series
    assert set(monitor.versions) == {reference, "new"}
    assert {key.model_version for key in (*monitor.windows, *monitor.labels)} == {reference, "new"}
    assert metrics.EVICTED.labels(buffer="model_version")._value.get() == evicted + 1
    assert metrics.WINDOW_ROWS.labels(endpoint="default", model_version="new")._value.get() == 1
    assert ("default", "old") not in {
        (sample.labels["endpoint"], sample.labels["model_version"])
        for sample in metrics.WINDOW_ROWS.collect()[0].samples
    }
    join("e", "newer", now=200)  # the reference's version, idle the longest, is never the one forgotten
    assert set(monitor.versions) == {reference, "newer"}


def test_predictions_wait_for_their_label_within_a_byte_bound(
    tester: DriftTester, artifact_dir: Path
) -> None:
    row = held_out_rows(artifact_dir)[0]
    one = len("r-0") + ENTRY_BYTES + np.zeros(1).nbytes  # what one one-row prediction counts
    monitor = Monitor(tester, Settings(max_recent_bytes=3 * one), RetrainTrigger("none", None))
    for index in range(5):
        monitor.ingest(request(f"r-{index}", row), now=index)
        monitor.ingest(response(f"r-{index}", [20.0]), now=index)
    assert list(monitor.recent) == ["r-2", "r-3", "r-4"]
    assert not monitor.feedback("r-0", 21.0) and monitor.feedback("r-4", 21.0)
    restored = Monitor(
        tester, Settings(max_recent_bytes=2 * one), RetrainTrigger("none", None), monitor.snapshot()
    )
    assert list(restored.recent) == ["r-3", "r-4"]  # a smaller bound applies to what is resumed
