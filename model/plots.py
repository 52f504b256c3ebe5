"""Evaluation plots as PNG files (matplotlib's Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from model.coverage import HeldOut


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


def interval_figure(
    y: np.ndarray, held_out: HeldOut, quintiles: dict[str, np.ndarray], level: float = 0.9
) -> Figure:
    """Held-out prices with their intervals, and the coverage in each quintile, as one figure.

    Args:
        y: True prices of all rows, USD 1000s.
        held_out: The shipped intervals' bounds of the outer folds' held-out rows
            (:class:`model.coverage.HeldOut`).
        quintiles: Stratum name -> each row's quintile (:func:`model.coverage.strata`).
        level: The level drawn.
    """
    from matplotlib.figure import Figure  # not pyplot: no backend chosen here, so notebooks show it inline

    column = held_out.levels.index(level)
    hits = held_out.hits(y)[:, column]
    truth = y[held_out.rows]
    figure = Figure(figsize=(11, 4.5))
    left, right = figure.subplots(1, 2)
    lower, upper = held_out.lower[:, column], held_out.upper[:, column]
    left.vlines(truth, lower, upper, color="tab:blue", alpha=0.2, linewidth=1, label=f"{level:.0%} interval")
    left.scatter(truth[hits], held_out.predictions[hits], s=6, color="tab:blue", label="price inside")
    left.scatter(truth[~hits], held_out.predictions[~hits], s=10, color="tab:red", label="price outside")
    limits = [0, max(truth.max(), upper.max())]
    left.plot(limits, limits, color="grey", linewidth=1)
    left.set(
        xlabel="actual medv (USD 1000s)",
        ylabel="predicted, with its interval (held out)",
        title=f"Held-out prices: {hits.mean():.1%} inside their {level:.0%} interval",
    )
    left.legend(loc="upper left", fontsize=8)
    width = 0.8 / max(len(quintiles), 1)
    for offset, (stratum, bins) in enumerate(quintiles.items()):
        shares = [hits[bins[held_out.rows] == quintile].mean() for quintile in range(5)]
        right.bar(np.arange(5) + offset * width, shares, width=width, label=f"{stratum} quintile")
    right.axhline(level, color="grey", linewidth=1, label=f"nominal {level:.0%}")
    right.axhline(0.85, color="tab:red", linewidth=1, linestyle="--", label="floor 85%")
    right.set(
        xticks=np.arange(5) + width * (len(quintiles) - 1) / 2,
        xticklabels=["q1 (lowest)", "q2", "q3", "q4", "q5 (highest)"],
        ylim=(0.5, 1.0),
        ylabel=f"share inside the {level:.0%} interval",
        title="Coverage by quintile (held out)",
    )
    right.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=4, fontsize=8)
    figure.tight_layout()
    return figure


def save_interval_plot(
    directory: str | Path, y: np.ndarray, held_out: HeldOut, quintiles: dict[str, np.ndarray]
) -> Path:
    """Write :func:`interval_figure` as ``intervals.png`` in ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return _save(interval_figure(y, held_out, quintiles), directory / "intervals.png")


def _save(figure: Figure, path: Path) -> Path:
    import matplotlib.pyplot as plt

    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
