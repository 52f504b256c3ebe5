"""Global importance at training: mean |TreeSHAP contribution| per feature, in model.json."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest

from explainer.model import HousingExplainer
from model.artifact import METADATA_FILE
from model.dataset import load_dataset
from model.importance import IMPORTANCE_PLOT, global_importance, save_importance_plot
from model.pipeline import make_candidate
from model.schema import DEFAULT_FEATURES


def test_lstat_and_rm_are_the_two_largest_in_model_json(artifact_dir: Path) -> None:
    metadata = json.loads((artifact_dir / METADATA_FILE).read_text())
    importance = metadata["global_importance"]
    assert sorted(importance, key=importance.__getitem__, reverse=True)[:2] == ["lstat", "rm"], importance
    assert set(importance) == {feature["name"] for feature in metadata["features"]}
    assert min(importance.values()) >= 0


def test_it_is_the_mean_of_the_explainers_contributions(artifact_dir: Path) -> None:
    """The same numbers the explainer gives per house, averaged over the training rows."""
    metadata = json.loads((artifact_dir / METADATA_FILE).read_text())
    explainer = HousingExplainer("housing", str(artifact_dir))
    explainer.load()
    features = explainer.artifact.feature_names  # type: ignore[union-attr]
    rows = load_dataset()[features].to_numpy(dtype=np.float64)
    answer = asyncio.run(explainer.explain({"instances": rows.tolist()}))
    for name, value in metadata["global_importance"].items():
        contributions = [item["contributions"][name]["contribution"] for item in answer["explanations"]]
        assert np.mean(np.abs(contributions)) == pytest.approx(value, rel=1e-9), name


def test_a_model_without_trees_has_none_and_the_plot_is_drawn(tmp_path: Path) -> None:
    frame = load_dataset()
    ridge = make_candidate("linear").fit(frame[list(DEFAULT_FEATURES)].to_numpy(), frame["medv"].to_numpy())
    with pytest.raises(ValueError, match="preprocessing steps"):
        global_importance(ridge, frame[list(DEFAULT_FEATURES)].to_numpy(), DEFAULT_FEATURES)
    path = save_importance_plot(tmp_path, {"lstat": 0.16, "rm": 0.09})
    assert path.name == IMPORTANCE_PLOT and path.stat().st_size > 1000
