"""Global feature importance from exact TreeSHAP: mean |contribution| per feature over the training rows.

Permutation importance (:mod:`model.evaluation`) says how much worse the model gets without a feature; this
says how much each feature moves the model's answers, in the same units as the explainer's per-house
contributions (:mod:`explainer.model`), so a house's explanation can be read against the typical one. For the
shipped model (gradient-boosted trees on log(medv)) the units are the trees' output, log(medv): 0.16 means a
factor of about exp(0.16) = 1.17 either way on a typical house.

``shap`` is imported only when a model is explained: it is in the ``training`` and ``explainer`` extras.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

IMPORTANCE_PLOT = "global_importance.png"


@dataclass(frozen=True)
class TreeModel:
    """The trees inside a fitted pipeline, and how their output becomes a price.

    Attributes:
        trees: The fitted tree ensemble ``shap.TreeExplainer`` reads.
        log_target: The trees predict log(medv) (the price is ``exp`` of their output).
    """

    trees: Any
    log_target: bool


def tree_model(pipeline: Any) -> TreeModel:
    """Find the tree ensemble in a fitted candidate pipeline (model/pipeline.py's shapes).

    Raises:
        ValueError: The pipeline has steps before the trees, or no trees: TreeSHAP would not explain its
            inputs.
    """
    steps = getattr(pipeline, "steps", [("regressor", pipeline)])
    if len(steps) != 1:
        raise ValueError(f"cannot explain a pipeline with preprocessing steps: {[name for name, _ in steps]}")
    final = steps[0][1]
    inner = getattr(final, "regressor_", None)
    trees = inner if inner is not None else final
    if not hasattr(trees, "estimators_"):
        raise ValueError(f"{type(trees).__name__} is not a tree ensemble TreeSHAP explains")
    return TreeModel(trees, log_target=inner is not None)


def global_importance(pipeline: Any, x: np.ndarray, features: Sequence[str]) -> dict[str, float]:
    """Mean |TreeSHAP contribution| of each feature over ``x``, largest first, in the trees' output space.

    Args:
        pipeline: A fitted tree candidate (see :func:`tree_model`).
        x: Rows, shape [N, len(features)], in the model's feature order (the training data).
        features: The model's features.

    Returns:
        Feature -> mean absolute contribution (log(medv) for a log-target model, else USD 1000s), sorted.

    Raises:
        ValueError: The pipeline is not a tree ensemble.
    """
    import shap

    trees = tree_model(pipeline).trees
    contributions = np.asarray(shap.TreeExplainer(trees).shap_values(x, check_additivity=False))
    mean_abs = np.abs(contributions).mean(axis=0)
    ranked = sorted(zip(features, mean_abs, strict=True), key=lambda item: -item[1])
    return {name: float(value) for name, value in ranked}


def save_importance_plot(
    directory: str | Path, importance: dict[str, float], *, log_target: bool = True
) -> Path:
    """A bar plot of :func:`global_importance`, largest at the top: ``DIRECTORY/global_importance.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(directory) / IMPORTANCE_PLOT
    path.parent.mkdir(parents=True, exist_ok=True)
    ordered = sorted(importance.items(), key=lambda item: item[1])
    figure, axes = plt.subplots(figsize=(6, 4))
    axes.barh([name for name, _ in ordered], [value for _, value in ordered])
    unit = "log(medv)" if log_target else "USD 1000s"
    axes.set(xlabel=f"mean |TreeSHAP contribution|, training rows ({unit})", title="Global importance")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
