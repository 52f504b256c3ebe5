"""Evaluation plots as PNG files (matplotlib's Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def save_plots(
    directory: str | Path, y: np.ndarray, predicted: np.ndarray, importances: dict[str, float]
) -> list[Path]:
    """Draw predicted vs actual, residuals and permutation importance.

    Args:
        directory: Where to write the PNG files (created if needed).
        y: True target values, USD 1000s.
        predicted: Held-out (cross-validated) predictions for the same rows.
        importances: Mean RMSE increase per shuffled feature.

    Returns:
        The files written: ``predicted_vs_actual.png``, ``residuals.png``, ``feature_importance.png``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    residuals = y - predicted
    paths = []

    figure, axes = plt.subplots(figsize=(5, 5))
    axes.scatter(y, predicted, s=10, alpha=0.6)
    limits = [min(y.min(), predicted.min()), max(y.max(), predicted.max())]
    axes.plot(limits, limits, color="grey", linewidth=1)
    axes.set(xlabel="actual medv (USD 1000s)", ylabel="predicted (held out)", title="Predicted vs actual")
    paths.append(_save(figure, directory / "predicted_vs_actual.png"))

    figure, axes = plt.subplots(figsize=(6, 4))
    axes.scatter(predicted, residuals, s=10, alpha=0.6)
    axes.axhline(0, color="grey", linewidth=1)
    axes.set(xlabel="predicted medv (USD 1000s)", ylabel="actual - predicted", title="Residuals (held out)")
    paths.append(_save(figure, directory / "residuals.png"))

    ordered = sorted(importances.items(), key=lambda item: item[1])
    figure, axes = plt.subplots(figsize=(6, 4))
    axes.barh([name for name, _ in ordered], [value for _, value in ordered])
    axes.set(xlabel="RMSE increase when shuffled, held-out folds (USD 1000s)", title="Permutation importance")
    paths.append(_save(figure, directory / "feature_importance.png"))
    return paths


def _save(figure: Figure, path: Path) -> Path:
    import matplotlib.pyplot as plt

    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
