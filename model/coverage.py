"""How honest the intervals are: the methods compared on the outer folds of nested CV, and their figures.

In each outer fold of the nested evaluation (:func:`model.evaluation.score_fold`), every method is calibrated
on the fold's training rows alone and bounds its held-out rows, which no part of it saw; pooled over the
outer folds, the held-out bounds give each method's coverage and width (:func:`figures`). The methods:

- ``normalised``, ``relative``, ``constant`` (:mod:`model.intervals`): calibrated on the out-of-fold
  predictions that the fold's inner search made anyway, so they cost no model fit; every run compares them;
- ``cv_plus`` (CV+, Barber et al. 2021) and ``cqr`` (conformalized quantile regression with quantile gradient
  boosting, Romano et al. 2019), both on log(medv), both MAPIE's (``CrossConformalRegressor``,
  ``ConformalizedQuantileRegressor``): they fit models of their own (CV+ three more boosted ensembles per
  fold, CQR three quantile ensembles per level), so a run compares them only when asked
  (``housing train --compare-intervals``). Neither could be served as cheaply: CV+ needs every fold's model
  at prediction time, CQR six more ensembles.

Coverage is measured where a buyer would feel it fail: overall at each level, and at 90% within each price
quintile and each ``lstat`` quintile (constant-width intervals are too wide for cheap houses and too narrow
for dear ones); widths in USD 1000s and relative to the price.
"""

from __future__ import annotations

import contextlib
import logging
import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from model import intervals
from model.intervals import DEFAULT_LEVEL, LEVELS

log = logging.getLogger(__name__)

CV_PLUS, CQR = "cv_plus", "cqr"
MAPIE_METHODS = (CV_PLUS, CQR)
"""The methods compared only with ``--compare-intervals`` (they fit models of their own)."""
STRATA = ("price", "lstat")
"""What coverage is broken down by: the true price's quintile, and ``lstat``'s."""
QUINTILE_FLOOR = 0.85
"""The least coverage of a 90% interval in any price or lstat quintile (the issue's target, tested)."""
QUANTILE_PARAMS: dict[str, Any] = {"n_estimators": 200, "learning_rate": 0.05, "max_depth": 3}
"""CQR's quantile gradient boosting (on the shipped model's other settings): fewer, shallower trees than the
point model, as quantile losses are noisier targets."""


@dataclass(frozen=True)
class HeldOut:
    """One method's bounds for the held-out rows of every outer fold, pooled (a row once per repeat).

    Attributes:
        rows: Row indices into the training data, shape [M].
        predictions: The outer folds' predictions for them (USD 1000s).
        lower: Lower bounds, shape [M, len(levels)].
        upper: Upper bounds, shape [M, len(levels)].
        levels: The levels of the bounds' columns.
    """

    rows: np.ndarray
    predictions: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    levels: tuple[float, ...] = LEVELS

    @classmethod
    def pool(cls, folds: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]) -> HeldOut:
        """Pool per-fold ``(rows, predictions, lower, upper)``."""
        return cls(
            np.concatenate([rows for rows, _, _, _ in folds]),
            np.concatenate([predicted for _, predicted, _, _ in folds]),
            np.vstack([lower for _, _, lower, _ in folds]),
            np.vstack([upper for _, _, _, upper in folds]),
        )

    def hits(self, y: np.ndarray) -> np.ndarray:
        """Whether each held-out price lies inside its bounds, shape [M, len(levels)]."""
        truth = y[self.rows][:, None]
        return (truth >= self.lower) & (truth <= self.upper)


def fold_bounds(
    model: Any,
    x_train: np.ndarray,
    y_train: np.ndarray,
    oof_train: np.ndarray,
    x_test: np.ndarray,
    predicted: np.ndarray,
    features: Sequence[str],
    *,
    methods: Sequence[str],
    seed: int,
    levels: Sequence[float] = LEVELS,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each method's bounds for an outer fold's held-out rows, calibrated on its training rows alone.

    Args:
        model: The fold's point model, fitted on ``x_train`` (MAPIE's methods refit its settings).
        x_train: The fold's training rows.
        y_train: Their prices.
        oof_train: Their out-of-fold predictions from the fold's inner search.
        x_test: The held-out rows.
        predicted: ``model``'s predictions for them.
        features: Column names.
        methods: Names from :data:`model.intervals.METHODS` and :data:`MAPIE_METHODS`.
        seed: Seed of every split.
        levels: Nominal coverages.

    Returns:
        Method -> ``(lower, upper)``, each of shape [n_test, len(levels)].
    """
    bounds = {}
    for method in methods:
        if method in MAPIE_METHODS:
            found = mapie_bounds(method, model, x_train, y_train, x_test, seed=seed, levels=levels)
            if found is not None:
                bounds[method] = found
            continue
        calibrated = intervals.calibrate(
            x_train, y_train, oof_train, features, method=method, levels=levels, seed=seed
        )
        bounds[method] = calibrated.bounds(x_test, predicted)
    return bounds


def mapie_bounds(
    method: str,
    model: Any,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    *,
    seed: int,
    levels: Sequence[float] = LEVELS,
) -> tuple[np.ndarray, np.ndarray] | None:
    """CV+ or CQR bounds on log(medv) from MAPIE, or ``None`` for a model that is not gradient boosting.

    Both work on the boosted trees inside the pipeline, fitted to log(medv), and map their bounds back with
    ``exp``: CV+ with 3 shuffled folds of the fold's chosen settings; CQR with the same settings under the
    quantile loss (and :data:`QUANTILE_PARAMS`), fitted on two thirds of the training rows and conformalized
    on the other third.
    """
    with _quiet("root"):  # MAPIE logs an INFO line per call ("The predictions are ill-sorted") to the root
        return _mapie_bounds(method, model, x_train, y_train, x_test, seed=seed, levels=levels)


@contextlib.contextmanager
def _quiet(name: str) -> Iterator[None]:
    """Only warnings and errors from logger ``name`` (``root``: the root logger) while inside."""
    logger = logging.getLogger(None if name == "root" else name)
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


def _mapie_bounds(
    method: str,
    model: Any,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    *,
    seed: int,
    levels: Sequence[float],
) -> tuple[np.ndarray, np.ndarray] | None:
    from sklearn.base import clone
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.model_selection import KFold, train_test_split

    booster = _booster(model)
    if booster is None:
        log.info("%s skipped: the model is not gradient boosting", method)
        return None
    target = np.log(y_train)
    if method == CV_PLUS:
        from mapie.regression import CrossConformalRegressor

        regressor = CrossConformalRegressor(
            clone(booster),
            confidence_level=list(levels),
            method="plus",
            cv=KFold(n_splits=3, shuffle=True, random_state=seed),
        )
        _, bounds = regressor.fit_conformalize(x_train, target).predict_interval(x_test)
        return np.exp(bounds[:, 0, :]), np.exp(bounds[:, 1, :])
    if method == CQR:
        from mapie.regression import ConformalizedQuantileRegressor

        params = {**booster.get_params(), **QUANTILE_PARAMS, "loss": "quantile"}
        x_fit, x_cal, y_fit, y_cal = train_test_split(x_train, target, test_size=1 / 3, random_state=seed)
        lower, upper = [], []
        for level in levels:
            regressor = ConformalizedQuantileRegressor(
                GradientBoostingRegressor(**params), confidence_level=level
            )
            _, bounds = regressor.fit(x_fit, y_fit).conformalize(x_cal, y_cal).predict_interval(x_test)
            lower.append(bounds[:, 0, 0])
            upper.append(bounds[:, 1, 0])
        return np.exp(np.column_stack(lower)), np.exp(np.column_stack(upper))
    raise ValueError(f"unknown MAPIE method {method!r}; known: {', '.join(MAPIE_METHODS)}")


def _booster(model: Any) -> Any:
    """The boosted trees inside a log-target pipeline of :func:`model.pipeline.make_candidate`, or None."""
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.ensemble import GradientBoostingRegressor

    final = model.steps[-1][1]
    if isinstance(final, TransformedTargetRegressor) and isinstance(
        final.regressor, GradientBoostingRegressor
    ):
        return final.regressor
    return None


def strata(frame_columns: dict[str, np.ndarray], y: np.ndarray) -> dict[str, np.ndarray]:
    """Each row's quintile (0-4) of the true price and of each column given (``lstat``), over all rows."""
    columns = {"price": y, **frame_columns}
    return {name: _quintile(values) for name, values in columns.items()}


def _quintile(values: np.ndarray) -> np.ndarray:
    return np.digitize(values, np.quantile(values, [0.2, 0.4, 0.6, 0.8]))


def figures(
    prefix: str,
    y: np.ndarray,
    held_out: HeldOut,
    fold_sizes: Sequence[int],
    quintiles: dict[str, np.ndarray],
) -> dict[str, float]:
    """Coverage and width of one method's held-out bounds, pooled over the outer folds.

    Args:
        prefix: Start of every key (``interval`` for the shipped method, ``interval_<method>`` for each one).
        y: True prices of all rows.
        held_out: The method's bounds for the held-out rows of every outer fold, pooled in fold order.
        fold_sizes: Held-out rows per outer fold, in that order (for the spread over folds).
        quintiles: Stratum name -> each row's quintile (see :func:`strata`).

    Returns:
        ``{prefix}_coverage_80|90|95`` (share of held-out prices inside), ``{prefix}_coverage_90_std`` (over
        folds), ``{prefix}_coverage_90_<stratum>_q1..q5`` and ``{prefix}_coverage_90_worst_quintile``,
        ``{prefix}_width_90_mean|median`` (USD 1000s) and ``{prefix}_relative_width_90_mean|median`` (width
        over the predicted price).
    """
    hits = held_out.hits(y)
    result: dict[str, float] = {}
    for column, level in enumerate(held_out.levels):
        result[f"{prefix}_coverage_{_percent(level)}"] = float(hits[:, column].mean())
    at = held_out.levels.index(DEFAULT_LEVEL)
    ends = np.cumsum(fold_sizes)
    per_fold = [float(part.mean()) for part in np.split(hits[:, at], ends[:-1])]
    name = f"{prefix}_coverage_{_percent(DEFAULT_LEVEL)}"
    result[f"{name}_std"] = statistics.stdev(per_fold) if len(per_fold) > 1 else 0.0
    worst = 1.0
    for stratum, bins in quintiles.items():
        for quintile in range(5):
            inside = bins[held_out.rows] == quintile
            share = float(hits[inside, at].mean()) if inside.any() else float("nan")
            result[f"{name}_{stratum}_q{quintile + 1}"] = share
            worst = min(worst, share) if inside.any() else worst
    result[f"{name}_worst_quintile"] = worst
    width = held_out.upper[:, at] - held_out.lower[:, at]
    relative = width / np.maximum(held_out.predictions, intervals.PRICE_FLOOR)
    suffix = _percent(DEFAULT_LEVEL)
    result[f"{prefix}_width_{suffix}_mean"] = float(width.mean())
    result[f"{prefix}_width_{suffix}_median"] = float(np.median(width))
    result[f"{prefix}_relative_width_{suffix}_mean"] = float(relative.mean())
    result[f"{prefix}_relative_width_{suffix}_median"] = float(np.median(relative))
    return result


def _percent(level: float) -> int:
    return round(level * 100)


def comparison_rows(metrics: dict[str, float], methods: Sequence[str]) -> list[tuple[str, str]]:
    """One printed line per method compared: coverage at each level, the worst quintile, the 90% widths."""
    rows = []
    for method in methods:
        prefix = f"interval_{method}"
        if f"{prefix}_coverage_90" not in metrics:
            continue
        coverage = " / ".join(f"{metrics[f'{prefix}_coverage_{_percent(level)}']:.3f}" for level in LEVELS)
        worst = metrics[f"{prefix}_coverage_90_worst_quintile"]
        width, median = metrics[f"{prefix}_width_90_mean"], metrics[f"{prefix}_width_90_median"]
        relative = metrics[f"{prefix}_relative_width_90_mean"]
        rows.append(
            (
                f"interval {method}" + (" (shipped)" if method == intervals.SHIPPED else ""),
                f"coverage 80/90/95% {coverage}  worst quintile {worst:.2f}  90% width {width:.2f} "
                f"(median {median:.2f}, {relative:.0%} of the price)",
            )
        )
    return rows
