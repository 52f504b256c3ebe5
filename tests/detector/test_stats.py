"""The shared statistics: in-distribution windows pass, shifted ones drift, the score is as defined."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from detector.stats import DriftResult, DriftTester, Reference, bin_edges, js_distance, proportions, psi
from model.artifact import read_metadata
from tests.detector.conftest import held_out_rows


@pytest.fixture(scope="module")
def reference(artifact_dir: Path) -> Reference:
    return Reference.from_metadata(read_metadata(artifact_dir))


@pytest.fixture(scope="module")
def tester(reference: Reference) -> DriftTester:
    return DriftTester(reference)


def test_reference_comes_from_the_artifact(reference: Reference, artifact_dir: Path) -> None:
    metadata = read_metadata(artifact_dir)
    assert reference.features == tuple(feature["name"] for feature in metadata["features"])
    assert reference.rows.shape == (len(metadata["reference"]["features"]), len(reference.features))
    assert reference.predictions is not None and len(reference.predictions) == len(reference.rows)
    assert reference.version == metadata["version"]


def test_held_out_rows_do_not_drift(tester: DriftTester, artifact_dir: Path) -> None:
    rows = held_out_rows(artifact_dir)
    result = tester.test(rows[:200])
    assert not result.drifted
    assert result.score <= 0.3
    assert [feature.name for feature in result.features] == list(tester.reference.features)
    assert {feature.test for feature in result.features} == {"ks", "chi2"}
    assert next(feature for feature in result.features if feature.name == "chas").test == "chi2"


@pytest.mark.parametrize("name", ["lstat", "rm"])
def test_one_standard_deviation_shift_drifts_that_feature_only(
    tester: DriftTester, artifact_dir: Path, name: str
) -> None:
    rows = held_out_rows(artifact_dir)[:200].copy()
    column = tester.reference.features.index(name)
    rows[:, column] += tester.reference.rows[:, column].std()
    result = tester.test(rows)
    assert result.drifted and result.score > 0.3
    assert [feature.name for feature in result.features if feature.drifted] == [name]
    shifted = result.features[column]
    assert shifted.significant and shifted.score == shifted.js_distance == result.score
    assert shifted.p_value < 1e-6 and shifted.psi > 0.5


def test_binary_feature_uses_chi_squared(tester: DriftTester, artifact_dir: Path) -> None:
    rows = held_out_rows(artifact_dir)[:200].copy()
    chas = tester.reference.features.index("chas")
    rows[:, chas] = 1.0  # every house on the river
    result = tester.test(rows)
    assert result.features[chas].test == "chi2"
    assert result.features[chas].drifted and result.drifted


def test_prediction_drift(tester: DriftTester, reference: Reference) -> None:
    assert reference.predictions is not None
    same = tester.test(reference.rows[:150], reference.predictions[:150])
    assert same.prediction is not None and not same.prediction.drifted
    moved = tester.test(reference.rows[:150], reference.predictions[:150] + 10)
    assert moved.prediction is not None and moved.prediction.drifted and moved.prediction.p_value < 1e-6


def test_small_windows_need_significance(reference: Reference) -> None:
    """Ten rows have a large JS distance by chance, but no significant test: the score stays 0."""
    tester = DriftTester(reference)
    result = tester.test(reference.rows[np.random.default_rng(3).choice(len(reference.rows), 10)])
    assert max(feature.js_distance for feature in result.features) > 0.3
    assert result.score == 0.0 and not result.drifted


def test_bonferroni_is_stricter_than_fdr(reference: Reference) -> None:
    rows = reference.rows[:200].copy()
    generator = np.random.default_rng(1)
    for column in range(rows.shape[1]):  # a small shift of every continuous feature
        if reference.features[column] != "chas":
            rows[:, column] += 0.2 * reference.rows[:, column].std() * (1 + generator.random())
    fdr = DriftTester(reference, correction="fdr", threshold=0.0).test(rows)
    bonferroni = DriftTester(reference, correction="bonferroni", threshold=0.0).test(rows)
    assert sum(f.significant for f in fdr.features) >= sum(f.significant for f in bonferroni.features)


def test_result_round_trips_through_json(tester: DriftTester, reference: Reference) -> None:
    result = tester.test(
        reference.rows[:50], reference.predictions[:50] if reference.predictions is not None else None
    )
    assert DriftResult.from_dict(result.to_dict()) == result


def test_psi_and_js_distance() -> None:
    reference = np.arange(1000.0)
    edges = bin_edges(reference, 10)
    same = proportions(reference, edges)
    assert len(edges) == 9 and np.allclose(same, 0.1)
    assert psi(same, same) == 0.0 and js_distance(same, same) == 0.0
    disjoint = proportions(np.full(100, 5000.0), edges)
    middle = (same + disjoint) / 2

    def kl(a: np.ndarray, b: np.ndarray) -> float:
        return float(sum(x * np.log2(x / y) for x, y in zip(a, b, strict=True) if x > 0))

    assert js_distance(same, disjoint) == pytest.approx(
        np.sqrt((kl(same, middle) + kl(disjoint, middle)) / 2)
    )
    assert 0 < js_distance(same, disjoint) <= 1 and psi(same, disjoint) > 5
    # Binary values land in separate bins: the edge sits at 0 and (.., 0] holds the zeros.
    binary = np.array([0.0] * 93 + [1.0] * 7)
    assert proportions(binary, bin_edges(binary)).tolist()[0] == 0.93


def test_bad_settings_and_reference_are_refused(reference: Reference) -> None:
    with pytest.raises(ValueError, match="threshold"):
        DriftTester(reference, threshold=2)
    with pytest.raises(ValueError, match="correction"):
        DriftTester(reference, correction="holm")
    with pytest.raises(ValueError, match=r"reference\.features"):
        Reference.from_metadata({"features": [{"name": "crim"}], "reference": {"features": [[1.0, 2.0]]}})
    with pytest.raises(ValueError, match=r"shape \[n, 12\]"):
        DriftTester(reference).test(np.zeros((3, 2)))
