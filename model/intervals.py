"""Prediction intervals: a calibrated range around every price, and the facts every component shares about it.

**The method** (chosen on evidence in :mod:`model.coverage`; docs/training.md has the comparison): normalised
split-conformal prediction on log(medv), calibrated by cross-validation (Lei et al. 2018; Papadopoulos et al.
2008). A house's interval at level ``l`` is::

    exp(log(price) -/+ q_l * scale(x))

- ``price`` is the model's own prediction (USD 1000s), so ``lower <= price <= upper`` always;
- ``scale(x) = exp(w . x + b)``, a ridge regression of the log of the absolute log-residual on the features
  (MAPIE's ``ResidualNormalisedScore`` convention: the log keeps the scale positive), clipped to the range it
  takes on the training rows, so an unusual house gets no absurdly narrow or wide range. It is what makes the
  interval local: a cheap house in a poor tract, where the model errs more in relative terms, gets a wider
  range than a constant-width interval would give it;
- ``q_l`` is the conformal quantile (the ``ceil((n + 1) l)``-th smallest) of the scores
  ``|log y - log oof| / scale_cv(x)`` of the training rows, where ``oof`` is each row's out-of-fold prediction
  (from the nested loop's inner folds: rows the model did not see, as live houses are) and ``scale_cv`` the
  scale fitted without the row's fold. Computed once per level (:data:`LEVELS`).

Two more methods share this form and this code, as the comparison's references: ``relative`` (scale 1 on
the log scale: a width proportional to the price) and ``constant`` (scale 1 in USD 1000s: the constant-width
split-conformal baseline, ``price -/+ q_l``, its lower bound floored at 0).

**Stored without pickle.** :class:`Intervals` is a few numbers (``intervals.json``, hashed in ``model.json``
like every artifact file, see :mod:`model.artifact`); the compiled form bakes the same numbers into the ONNX
graph (:func:`model.compiled.compile_pipeline`), so the predictor computes the bounds in the same
onnxruntime call as the price. This module needs numpy alone; :func:`calibrate` imports scikit-learn.

**The shared facts** of the serving side are here too: the levels served, the output names and the request
parameter that chooses a level, and :func:`check_level`, whose message every 400 for a bad level carries.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

FORMAT = 1
LEVELS = (0.8, 0.9, 0.95)
"""The nominal coverages served and calibrated: a request may ask for any of these, and only these."""
DEFAULT_LEVEL = 0.9
"""The level of a request that asks for bounds without naming one; the one the detector's alert watches."""
LEVEL_PARAMETER = "interval_level"
"""The request parameter that names the level (V2 ``parameters``, V1 ``parameters``, the seed API's query)."""
LOWER_OUTPUT = "price_lower"
UPPER_OUTPUT = "price_upper"
BOUND_OUTPUTS = (LOWER_OUTPUT, UPPER_OUTPUT)
"""The V2 outputs a request names in ``outputs`` to get the bounds, on the transformer and the predictor."""
NORMALISED, RELATIVE, CONSTANT = "normalised", "relative", "constant"
METHODS = (NORMALISED, RELATIVE, CONSTANT)
"""The methods every training run calibrates and compares, the shipped one first."""
SHIPPED = NORMALISED
BASELINE = CONSTANT
LOG, PRICE = "log", "price"
PRICE_FLOOR = 1e-3
"""The smallest price (USD 1000s, a dollar) whose log is taken: a linear candidate may predict 0 or less."""
RESIDUAL_FLOOR = 1e-3
"""The smallest absolute log-residual whose log the scale is fitted on (a perfect prediction's is -inf)."""
CALIBRATION_FOLDS = 3
"""Folds of the cross-fitted scale: each row's score uses a scale fitted without its fold."""


class LevelError(ValueError):
    """A requested interval level that is not one of :data:`LEVELS`."""


def level_rule() -> str:
    """The rule a level must follow, as every 400 for a bad level says it."""
    return f"must be one of {', '.join(f'{level:g}' for level in LEVELS)}"


def check_level(value: Any) -> float:
    """The level a request asks for, or :class:`LevelError` naming the rule.

    Args:
        value: What the request gave (a number, or a string from a query parameter).

    Returns:
        One of :data:`LEVELS`.

    Raises:
        LevelError: Not a number, or not one of the levels served.
    """
    try:
        level = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError, OverflowError):
        level = math.nan
    for served in LEVELS:
        if math.isclose(level, served, abs_tol=1e-9):
            return served
    shown = repr(value)  # never echo a megabyte back
    shown = shown if len(shown) <= 40 else f"{shown[:40]}... ({len(shown):,} characters)"
    raise LevelError(f"{LEVEL_PARAMETER}: {level_rule()}, got {shown}")


def conformal_quantile(scores: np.ndarray, level: float) -> float:
    """The split-conformal quantile: the ``ceil((n + 1) level)``-th smallest of ``n`` scores.

    With exchangeable scores, a new score is at most this value with probability at least ``level``
    (Vovk et al. 2005); with fewer than ``1 / (1 - level) - 1`` scores no finite value guarantees it (inf).
    """
    ordered = np.sort(np.asarray(scores, dtype=np.float64))
    rank = math.ceil((len(ordered) + 1) * level)
    return float(ordered[rank - 1]) if rank <= len(ordered) else math.inf


@dataclass(frozen=True)
class Intervals:
    """A calibrated interval model: the numbers that turn a price into its range at each level.

    Attributes:
        method: ``normalised``, ``relative`` or ``constant`` (see the module docstring).
        space: ``log`` (bounds on log(price)) or ``price`` (bounds in USD 1000s).
        features: The model's inputs, in order (the columns ``coef`` applies to).
        levels: The nominal coverages, increasing.
        quantiles: ``q_l`` for each level, in ``space`` units of the scale.
        coef: ``w``: the log-scale's weight of each feature (0 for the methods without a scale).
        intercept: ``b``.
        log_scale_min: The smallest ``w . x + b`` on the training rows (the clip's lower end).
        log_scale_max: The largest.
        n_calibration: Rows the quantiles were computed from.
    """

    method: str
    space: str
    features: tuple[str, ...]
    levels: tuple[float, ...]
    quantiles: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float = 0.0
    log_scale_min: float = 0.0
    log_scale_max: float = 0.0
    n_calibration: int = 0

    def level_index(self, level: float) -> int:
        """The column of ``level`` in :meth:`bounds`' answers.

        Raises:
            LevelError: The level is not one of this model's.
        """
        for index, served in enumerate(self.levels):
            if math.isclose(level, served, abs_tol=1e-9):
                return index
        raise LevelError(f"{LEVEL_PARAMETER}: {level_rule()}, got {level!r}")

    def scale(self, rows: np.ndarray) -> np.ndarray:
        """``scale(x)`` of each row, shape [N] (1 for the methods without a scale)."""
        linear = np.asarray(rows, dtype=np.float64) @ np.asarray(self.coef) + self.intercept
        return np.exp(np.clip(linear, self.log_scale_min, self.log_scale_max))

    def bounds(self, rows: np.ndarray, predictions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The lower and upper bounds of every row at every level.

        Args:
            rows: Features, shape [N, n_features], in model order.
            predictions: The model's prices for them, shape [N] (USD 1000s).

        Returns:
            ``lower`` and ``upper``, each of shape [N, len(levels)], USD 1000s.
        """
        half = self.scale(rows)[:, None] * np.asarray(self.quantiles)[None, :]
        predictions = np.asarray(predictions, dtype=np.float64).reshape(-1, 1)
        if self.space == LOG:
            centre = np.log(np.maximum(predictions, PRICE_FLOOR))
            return np.exp(centre - half), np.exp(centre + half)
        return np.maximum(predictions - half, 0.0), predictions + half

    def to_bytes(self) -> bytes:
        """The ``intervals.json`` document."""
        document = {"format": FORMAT, **asdict(self)}
        return (json.dumps(document, indent=1) + "\n").encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Intervals:
        """Read an ``intervals.json`` document.

        Raises:
            ValueError: Not such a document, or of another format.
        """
        try:
            document = json.loads(data)
            version = document.pop("format", None)
            if version != FORMAT:
                raise ValueError(f"format {version!r}, expected {FORMAT}")
            for key in ("features", "levels", "quantiles", "coef"):
                document[key] = tuple(document[key])
            return cls(**document)
        except (ValueError, KeyError, TypeError, AttributeError) as error:  # JSONDecodeError is a ValueError
            raise ValueError(f"not an intervals.json document: {error}") from error


def calibrate(
    x: np.ndarray,
    y: np.ndarray,
    oof_predictions: np.ndarray,
    features: Sequence[str],
    *,
    method: str = SHIPPED,
    levels: Sequence[float] = LEVELS,
    seed: int = 42,
) -> Intervals:
    """Calibrate an interval model on rows with their out-of-fold predictions.

    Args:
        x: Features, shape [N, n_features], in model order.
        y: True prices, shape [N] (USD 1000s).
        oof_predictions: Each row's prediction by a model that did not see it, shape [N].
        features: The names of ``x``'s columns.
        method: ``normalised``, ``relative`` or ``constant``.
        levels: Nominal coverages.
        seed: Seed of the folds of the cross-fitted scale.

    Returns:
        The interval model: apply it to a model fitted on all of ``x`` (the cross-conformal "base" method:
        scores from out-of-fold models, bounds around the full model).

    Raises:
        ValueError: Unknown method.
    """
    if method not in METHODS:
        raise ValueError(f"unknown interval method {method!r}; known: {', '.join(METHODS)}")
    space = PRICE if method == CONSTANT else LOG
    if space == LOG:
        residuals = np.abs(np.log(y) - np.log(np.maximum(oof_predictions, PRICE_FLOOR)))
    else:
        residuals = np.abs(y - oof_predictions)
    coef, intercept, low, high = np.zeros(x.shape[1]), 0.0, 0.0, 0.0
    scale = np.ones(len(y))
    if method == NORMALISED:
        target = np.log(np.maximum(residuals, RESIDUAL_FLOOR))
        coef, intercept = _log_scale_fit(x, target)
        fitted = x @ coef + intercept
        low, high = float(fitted.min()), float(fitted.max())
        scale = np.exp(np.clip(_cross_fitted(x, target, seed), low, high))
    scores = residuals / scale
    return Intervals(
        method=method,
        space=space,
        features=tuple(features),
        levels=tuple(float(level) for level in levels),
        quantiles=tuple(conformal_quantile(scores, level) for level in levels),
        coef=tuple(float(value) for value in coef),
        intercept=float(intercept),
        log_scale_min=low,
        log_scale_max=high,
        n_calibration=len(y),
    )


def _log_scale_fit(x: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, float]:
    """Standardised ridge regression (alpha by efficient leave-one-out), folded back to raw features."""
    from sklearn.linear_model import RidgeCV
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x)
    ridge = RidgeCV(alphas=np.logspace(-3, 3, 13)).fit(scaler.transform(x), target)
    coef = ridge.coef_ / scaler.scale_
    return coef, float(ridge.intercept_ - scaler.mean_ @ coef)


def _cross_fitted(x: np.ndarray, target: np.ndarray, seed: int) -> np.ndarray:
    """Each row's log-scale from a ridge fitted without the row's fold."""
    from sklearn.model_selection import KFold

    values = np.empty(len(target))
    for train, held_out in KFold(CALIBRATION_FOLDS, shuffle=True, random_state=seed).split(x):
        coef, intercept = _log_scale_fit(x[train], target[train])
        values[held_out] = x[held_out] @ coef + intercept
    return values
