"""Multivariate drift by PCA reconstruction error: joint changes found, in-distribution windows left alone."""

from __future__ import annotations

import numpy as np
import pytest

from detector.multivariate import ReconstructionDrift
from detector.stats import DriftResult, DriftTester, Reference
from model.dataset import load_dataset
from model.schema import DEFAULT_FEATURES

WINDOW, WINDOWS = 200, 200


@pytest.fixture(scope="module")
def split() -> tuple[np.ndarray, np.ndarray]:
    """300 reference rows (as model.json keeps) and the 206 other houses, never seen by the detector."""
    rows = load_dataset(None)[list(DEFAULT_FEATURES)].to_numpy(dtype=float)
    order = np.random.default_rng(11).permutation(len(rows))
    return rows[order[:300]], rows[order[300:]]


def test_shuffling_lstat_against_the_rest_is_found_while_every_marginal_stays(split) -> None:
    reference, held_out = split
    detector = ReconstructionDrift(reference)
    rng = np.random.default_rng(3)
    lstat = list(DEFAULT_FEATURES).index("lstat")
    flagged_normal = flagged_shuffled = 0
    for _ in range(WINDOWS):
        window = held_out[rng.integers(0, len(held_out), WINDOW)]
        flagged_normal += detector.test(window).drifted
        shuffled = window.copy()
        shuffled[:, lstat] = rng.permutation(shuffled[:, lstat])  # the same values: its marginal is unchanged
        assert sorted(shuffled[:, lstat]) == sorted(window[:, lstat])
        flagged_shuffled += detector.test(shuffled).drifted
    assert flagged_shuffled / WINDOWS >= 0.90, flagged_shuffled
    assert flagged_normal / WINDOWS <= 0.05, flagged_normal


def test_the_tester_reports_it_and_declares_drift_on_it(split) -> None:
    reference, held_out = split
    tester = DriftTester(Reference(tuple(DEFAULT_FEATURES), reference))
    rng = np.random.default_rng(5)
    window = held_out[rng.integers(0, len(held_out), WINDOW)]
    lstat = list(DEFAULT_FEATURES).index("lstat")
    window[:, lstat] = rng.permutation(window[:, lstat])
    result = tester.test(window)
    assert result.multivariate is not None and result.multivariate.drifted
    assert result.drifted  # per-feature tests see nothing here: the joint test decides
    assert not [feature.name for feature in result.features if feature.name == "lstat" and feature.drifted]
    again = DriftResult.from_dict(result.to_dict())  # saved in state.json and read back
    assert again.multivariate == result.multivariate
    old = {key: value for key, value in result.to_dict().items() if key != "multivariate"}
    assert DriftResult.from_dict(old).multivariate is None  # results saved before it existed still load


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="variance"):
        ReconstructionDrift(np.ones((5, 2)), variance=0.0)
    with pytest.raises(ValueError, match="at least ten rows"):
        ReconstructionDrift(np.ones((9, 2)))
