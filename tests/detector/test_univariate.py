"""The scipy backend against alibi-detect: the same p-values and the same decisions, window by window.

Both backends run on the same 2,100 windows: same population, shifted by 0.05 to 1.5 standard deviations (so
that decisions fall on both sides, and FDR passes some features but not all), tiny windows (1 to 5 rows), ties
with the reference, a constant feature, a binary feature that is constant in the reference, and windows larger
than the reference; the continuous features under FDR, Bonferroni and no correction, the binary one under the
chi-squared test. Then whole :class:`detector.stats.DriftTester` results on the trained artifact's reference.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import detector
from detector import alibi_tests, univariate
from detector.stats import DriftTester, Reference, backend_problem
from model.artifact import read_metadata
from tests.detector.conftest import DetectorProcess, held_out_rows, without_alibi

TOLERANCE = 1e-9
WINDOWS = 2100
CORRECTIONS = ("fdr", "bonferroni", None)


class Recorded:
    """A real alibi-detect detector that keeps its last ``predict`` answer (its own batch verdict)."""

    def __init__(self, detector: Any) -> None:
        self.detector = detector
        self.correction = detector.correction
        self.last: dict[str, Any] = {}

    def predict(self, window: np.ndarray, drift_type: str) -> dict[str, Any]:
        self.last = self.detector.predict(window, drift_type=drift_type)
        return self.last


SCENARIOS = ("same", "shifted", "shifted", "small", "ties", "constant", "binary_constant")


def references(generator: np.random.Generator) -> dict[str, np.ndarray]:
    """300 rows: continuous columns (normal; skewed with ties and zeros; and a constant one), binary ones."""
    rows = 300
    skewed = np.round(generator.lognormal(1.0, 0.8, rows), 1) * (generator.random(rows) > 0.3)
    continuous = np.column_stack([generator.normal(10.0, 2.0, rows), skewed])
    return {
        "continuous": continuous,
        "with_constant": np.column_stack([continuous, np.full(rows, 5.0)]),
        "binary": (generator.random((rows, 1)) < 0.07).astype(int),
        "binary_constant": np.zeros((rows, 1), dtype=int),
    }


def windows(generator: np.random.Generator, reference: dict[str, np.ndarray]) -> Iterator[dict[str, Any]]:
    """The windows: a scenario, the reference they go with, continuous columns and a binary column."""
    continuous = reference["continuous"]
    sd = continuous.std(axis=0)
    for index in range(WINDOWS):
        scenario = SCENARIOS[index % len(SCENARIOS)]
        sizes = [1, 2, 3, 4, 5] if scenario == "small" else [20, 50, 100, 200]
        size = 1000 if index % 300 == 0 else int(generator.choice(sizes))  # 1,000: larger than the reference
        skewed = np.round(generator.lognormal(1.0, 0.8, size), 1) * (generator.random(size) > 0.3)
        window = np.column_stack([generator.normal(10.0, 2.0, size), skewed])
        flags = (generator.random((size, 1)) < 0.07).astype(int)
        if scenario == "shifted":  # 0.05 to 1.5 SD on one or both columns: both sides of every cut-off
            moved = generator.random(2) < 0.7
            window[:, moved] += generator.uniform(0.05, 1.5) * sd[moved]
            flags = (generator.random((size, 1)) < generator.uniform(0.0, 0.5)).astype(int)
        elif scenario == "ties":  # values drawn from the reference itself: each ties with a reference row
            window = continuous[generator.integers(0, len(continuous), size)]
        elif scenario == "constant":  # the constant column kept, or moved a little or a lot
            window = np.column_stack([window, np.full(size, 5.0 + generator.choice([0.0, 1e-9, 0.5]))])
        elif scenario == "binary_constant" and index % 2:
            flags = np.zeros_like(flags)  # constant in the window as in its reference
        yield {
            "scenario": scenario,
            "continuous": window,
            "reference": "with_constant" if scenario == "constant" else "continuous",
            "binary": "binary_constant" if scenario == "binary_constant" else "binary",
            "flags": flags,
        }


def both(reference: np.ndarray, correction: str | None, kind: str) -> tuple[Any, Any, Recorded]:
    """The scipy test and the alibi-detect test of ``reference``, the latter recording alibi's own answers."""
    if kind == "ks":
        alibi = alibi_tests.ks_test(reference, 0.05, correction)
        scipy = univariate.ks_test(reference, 0.05, correction)
    else:
        alibi = alibi_tests.chi2_test(reference, 0.05)
        scipy = univariate.chi2_test(reference, 0.05)
    recorded = Recorded(alibi.detector)
    alibi.detector = recorded
    return scipy, alibi, recorded


def compare(scipy: Any, alibi: Any, recorded: Recorded, window: np.ndarray) -> np.ndarray:
    """Assert the same p-values, statistics and decisions; which features are significant."""
    ours, theirs = scipy.test(window), alibi.test(window)
    assert np.max(np.abs(ours.p_values.astype(float) - theirs.p_values.astype(float))) <= TOLERANCE
    assert np.max(np.abs(ours.statistics.astype(float) - theirs.statistics.astype(float))) <= TOLERANCE
    assert ours.significant.tolist() == theirs.significant.tolist()
    verdict = recorded.last["data"]["is_drift"]  # alibi's own: an int for a batch, an array per feature
    assert (
        (theirs.significant.tolist() == np.asarray(verdict).tolist())
        if np.ndim(verdict)
        else (bool(theirs.significant.any()) == bool(verdict))
    )
    return ours.significant


def test_scipy_backend_decides_as_alibi_detect_on_2100_windows() -> None:
    generator = np.random.default_rng(20260101)
    reference = references(generator)
    ks = {
        (name, correction): both(reference[name], correction, "ks")
        for name in ("continuous", "with_constant")
        for correction in CORRECTIONS
    }
    chi2 = {name: both(reference[name], None, "chi2") for name in ("binary", "binary_constant")}
    decisions: Counter[tuple[str, str, bool]] = Counter()
    partial_fdr = 0
    for index, window in enumerate(windows(generator, reference)):
        correction = CORRECTIONS[index % 3]
        significant = compare(*ks[(window["reference"], correction)], window["continuous"])
        decisions[(window["scenario"], str(correction), bool(significant.any()))] += 1
        partial_fdr += correction == "fdr" and 0 < significant.sum() < len(significant)
        flagged = compare(*chi2[window["binary"]], window["flags"])
        decisions[(window["binary"], "chi2", bool(flagged.any()))] += 1
    # The windows put decisions on both sides under each correction, and FDR passed some features but not all.
    for correction in ("fdr", "bonferroni", "None", "chi2"):
        assert sum(n for (_, c, d), n in decisions.items() if c == correction and d) > 50, decisions
        assert sum(n for (_, c, d), n in decisions.items() if c == correction and not d) > 50, decisions
    assert partial_fdr > 50
    assert {scenario for scenario, _, _ in decisions} >= set(SCENARIOS)
    assert sum(decisions.values()) == 2 * WINDOWS


def test_whole_results_agree_on_the_artifacts_reference(artifact_dir: Path) -> None:
    metadata = read_metadata(artifact_dir)
    reference = Reference.from_metadata(metadata)
    assert reference.predictions is not None
    rows = held_out_rows(artifact_dir)
    generator = np.random.default_rng(7)
    for correction in ("fdr", "bonferroni"):
        alibi = DriftTester(reference, correction=correction, backend="alibi-detect")
        scipy = DriftTester(reference, correction=correction, backend="scipy")
        verdicts = set()
        for index in range(40):
            window = rows[generator.integers(0, len(rows), int(generator.choice([10, 50, 200])))].copy()
            window[:, generator.integers(0, window.shape[1])] *= 1 + 0.02 * (index % 10)
            predictions = generator.normal(22.0 + 0.3 * (index % 10), 8.0, len(window))
            ours, theirs = scipy.test(window, predictions), alibi.test(window, predictions)
            assert ours.drifted == theirs.drifted and ours.score == theirs.score
            assert ours.prediction is not None and theirs.prediction is not None
            pairs = zip([*ours.features, ours.prediction], [*theirs.features, theirs.prediction], strict=True)
            for mine, other in pairs:
                assert (mine.name, mine.significant, mine.drifted) == (
                    other.name,
                    other.significant,
                    other.drifted,
                )
                assert abs(mine.p_value - other.p_value) <= TOLERANCE
            verdicts.add(ours.drifted)
        assert verdicts == {True, False}


def test_an_environment_without_alibi_detect(monkeypatch: pytest.MonkeyPatch, artifact_dir: Path) -> None:
    """``sys.modules[name] = None`` is how Python marks a module absent: importing it raises ImportError."""
    monkeypatch.setitem(sys.modules, "alibi_detect", None)
    monkeypatch.delitem(sys.modules, "detector.alibi_tests")  # imported anew, as in a fresh process
    monkeypatch.delattr(detector, "alibi_tests")
    reference = Reference.from_metadata(read_metadata(artifact_dir))
    problem = backend_problem("alibi-detect")
    assert problem is not None and "STATS_BACKEND=scipy" in problem
    assert backend_problem("scipy") is None and "one of" in str(backend_problem("sklearn"))
    with pytest.raises(ImportError):
        DriftTester(reference, backend="alibi-detect")
    assert DriftTester(reference, backend="scipy").test(reference.rows[:50]).rows == 50


@pytest.mark.slow
def test_the_service_tests_windows_without_alibi_detect(
    start_detector: Callable[..., DetectorProcess], artifact_dir: Path, tmp_path: Path
) -> None:
    """Chosen as an image chooses it (STATS_BACKEND=scipy): windows tested in the worker, drift found."""
    environment = {**without_alibi(tmp_path / "no-alibi"), "STATS_BACKEND": "scipy"}
    detector = start_detector("--window_size", "50", env=environment)
    held_out = held_out_rows(artifact_dir)
    rows = held_out[np.random.default_rng(7).integers(0, len(held_out), 100)]
    lstat = detector.features.index("lstat")
    rows[50:, lstat] += held_out[:, lstat].std()
    detector.send_rows(rows, np.full(len(rows), 22.0))
    version = str(read_metadata(artifact_dir)["version"])
    assert detector.metric("housing_windows_tested_total", endpoint="default", model_version=version) == 2
    result = detector.status()["keys"][f"default/{version}"]["last_result"]
    assert [feature["name"] for feature in result["features"] if feature["drifted"]] == ["lstat"]
    log = detector.service.log_path.read_text()
    assert "stats backend scipy" in log
    assert "in-process" not in log and "Traceback" not in log  # the worker tested them, without a failure


def test_the_detector_refuses_a_backend_it_cannot_run(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "detector", "--storage_uri", str(tmp_path)]
    environment = {**os.environ, **without_alibi(tmp_path)}
    environment.pop("STATS_BACKEND", None)
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=environment, check=False)
    assert done.returncode != 0 and "STATS_BACKEND=scipy" in done.stderr
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=120, env={**environment, "STATS_BACKEND": "sklearn"}
    )
    assert done.returncode != 0 and "stats backend must be one of" in done.stderr


def test_the_corrections_by_hand() -> None:
    """Benjamini-Hochberg at 5 % over four features steps up: rank 3 passes (0.035 < 0.0375), so rank 2 counts
    too although 0.03 > 0.025; Bonferroni keeps only p < 0.0125."""
    p_values = np.array([0.035, 0.001, 0.9, 0.03], dtype=np.float32)
    assert univariate.significant(p_values, 0.05, "fdr").tolist() == [True, True, False, True]
    assert univariate.significant(p_values, 0.05, "bonferroni").tolist() == [False, True, False, False]
    assert univariate.significant(p_values, 0.05, None).tolist() == [True, True, False, True]
    assert not univariate.significant(np.array([0.2, 0.9], dtype=np.float32), 0.05, "fdr").any()
    with pytest.raises(ValueError, match="correction must be one of"):
        univariate.ks_test(np.zeros((5, 1)), 0.05, "holm")
