"""Simulated experiments: how often the test of :mod:`housing.sequential` errs, and how fast it decides.

Errors are bootstrapped from real out-of-fold residuals (:func:`out_of_fold_residuals`), so their skew and
tails are those of a house-price model. Used by ``./dev bench experiment``, the tests and notebook 04.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from housing.sequential import KEEP_GOING, decide

Draw = Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray]]


def out_of_fold_residuals(candidate: str, seed: int = 0) -> np.ndarray:
    """Truth - prediction for each house, predicted by a model that did not see it (5 folds)."""
    from sklearn.model_selection import KFold, cross_val_predict

    from model.dataset import load_dataset
    from model.pipeline import make_candidate
    from model.schema import DEFAULT_FEATURES, TARGET

    frame = load_dataset()
    x, y = frame[list(DEFAULT_FEATURES)].to_numpy(), frame[TARGET].to_numpy()
    folds = KFold(5, shuffle=True, random_state=seed)
    return y - cross_val_predict(make_candidate(candidate, seed=seed), x, y, cv=folds)


@dataclass(frozen=True)
class Outcome:
    """How one simulated experiment ended."""

    verdict: str
    pairs: int


def run_experiment(
    draw: Draw,
    rng: np.random.Generator,
    *,
    paired: bool,
    maximum: int,
    step: int,
    alpha: float,
    **options: Any,
) -> Outcome:
    """Look after every ``step`` labels per arm until a verdict or ``maximum`` labels per arm.

    ``options`` go to :func:`~housing.sequential.decide` (``cap``, ``challenger_share``).
    """
    champion, challenger = draw(rng, maximum)
    for seen in range(step, maximum + 1, step):
        decision = decide(
            champion[:seen], challenger[:seen], paired=paired, alpha=alpha, planned=maximum, **options
        )
        if decision.verdict != KEEP_GOING:
            return Outcome(decision.verdict, seen)
    return Outcome(KEEP_GOING, maximum)


def simulate(
    draw: Draw,
    *,
    paired: bool,
    experiments: int,
    maximum: int,
    step: int,
    alpha: float,
    seed: int,
    **options: Any,
) -> list[Outcome]:
    """``experiments`` independent experiments of at most ``maximum`` labels per arm.

    ``options`` go to :func:`~housing.sequential.decide`, as in :func:`run_experiment`.
    """
    rng = np.random.default_rng(seed)
    return [
        run_experiment(draw, rng, paired=paired, maximum=maximum, step=step, alpha=alpha, **options)
        for _ in range(experiments)
    ]


def unpaired(residuals: np.ndarray, improvement: float) -> Draw:
    """Independent draws per arm; the challenger's errors shrunk by ``improvement``."""

    def draw(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
        return rng.choice(residuals, size), (1 - improvement) * rng.choice(residuals, size)

    return draw


def paired(residuals: np.ndarray, correlation: float, improvement: float) -> Draw:
    """Both models on the same houses: the challenger's error correlates with the champion's."""
    rng = np.random.default_rng(1)
    mix = correlation * rng.choice(residuals, 200_000) + math.sqrt(1 - correlation**2) * rng.choice(
        residuals, 200_000
    )
    # Scale the mixture so the challenger's MAE is exactly (1 - improvement) of the champion's.
    scale = (1 - improvement) * np.abs(residuals).mean() / np.abs(mix).mean()

    def draw(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
        champion = rng.choice(residuals, size)
        other = rng.choice(residuals, size)
        return champion, scale * (correlation * champion + math.sqrt(1 - correlation**2) * other)

    return draw
