"""Houses unlike any seen in training: a Gaussian mixture density over the model's inputs, per request.

A drift test judges a window; this judges one house. Every feature of a house can lie inside its training
range while the combination was never seen (a large, new house in a poor, old, industrial tract): a model
that never saw such a house extrapolates, and no per-feature test notices. A density estimate sees it: the
house's negative log-likelihood (NLL) under a density fitted on the training rows is high.

**The density.** Features are first made roughly symmetric (``log1p`` of the skewed :data:`LOG_FEATURES`) and
standardised; then a ``GaussianMixture`` with full covariances (regularised by :data:`REG_COVAR`: some
training rows share exact values, which would otherwise give components of zero width) is fitted. The number
of components is the one with the best cross-validated log-likelihood among :data:`COMPONENTS`.

**The threshold** is the ``1 - false_positive_rate`` quantile of *cross-fitted* NLLs: each training row is
scored by a mixture fitted without its fold, as a live house is scored by a mixture that never saw it. A
threshold from the training rows' own NLLs would be too low (the mixture fits its own rows best) and flag
more real houses than intended. Measured over random train/held-out splits of the bundled data
(``./dev bench outliers``): see docs/detector.md, "Houses unlike any seen in training".
One Gaussian (a Mahalanobis distance) flags about 74% of such houses to the mixture's 94% (the benchmark's
baseline): the Boston tracts form several tight clusters (the industrial tracts share ``rad``, ``tax``,
``indus`` and ``ptratio``), not one elliptical cloud. Isolation Forest, LOF and a Gaussian copula did worse
than the mixture in an earlier one-split trial.

**Stored without pickle.** The fitted mixture is exported to ``outliers.json`` (weights, means, precision
Cholesky factors, the transform and the threshold; :func:`export`), hashed in ``model.json`` like every
artifact file (:mod:`model.artifact`), and scored by :class:`OutlierDetector` with numpy alone.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

FORMAT = 1
LOG_FEATURES = ("crim", "zn", "lstat")
"""Features spanning orders of magnitude (crime rate, zoned land, share of lower-status population)."""
REG_COVAR = 1e-2
"""Added to each covariance's diagonal (standardised units): measured better than 1e-3 in the benchmark."""
COMPONENTS = tuple(range(1, 11))
FOLDS = 5
FALSE_POSITIVE_RATE = 0.05


def recombined(rows: np.ndarray, count: int, seed: int, columns: Sequence[int] | None = None) -> np.ndarray:
    """Synthetic houses: in range, never seen together (what the benchmark and the tests flag).

    Args:
        rows: Real houses, shape [N, n_features].
        count: Houses to make.
        seed: Seed of the draws.
        columns: The columns replaced by another random house's value each (default: every column, each from
            its own house); the other columns keep those of one random house.
    """
    generator = np.random.default_rng(seed)
    houses = np.array(rows[generator.integers(0, len(rows), count)], dtype=float)
    for column in range(rows.shape[1]) if columns is None else columns:
        houses[:, column] = rows[generator.integers(0, len(rows), count), column]
    return houses


def transform_params(x: np.ndarray, features: Sequence[str]) -> dict[str, Any]:
    """The input transform fitted on ``x``: which columns get ``log1p``, then each column's mean and scale."""
    log_columns = [index for index, name in enumerate(features) if name in LOG_FEATURES]
    logged = _log(np.asarray(x, dtype=float), log_columns)
    scale = logged.std(axis=0)
    return {
        "log_columns": log_columns,
        "mean": logged.mean(axis=0).tolist(),
        "scale": np.where(scale > 0, scale, 1.0).tolist(),  # a constant column stays 0 instead of NaN
    }


def _log(x: np.ndarray, log_columns: Sequence[int]) -> np.ndarray:
    x = np.array(x, dtype=float)
    # Negative values are outside these features' domains; clipped so they score (as far-off) rather than NaN.
    x[:, log_columns] = np.log1p(np.maximum(x[:, log_columns], 0.0))
    return x


def _standardise(x: np.ndarray, transform: dict[str, Any]) -> np.ndarray:
    return (_log(x, transform["log_columns"]) - np.asarray(transform["mean"])) / np.asarray(
        transform["scale"]
    )


def _mixture(components: int, seed: int) -> Any:
    from sklearn.mixture import GaussianMixture

    return GaussianMixture(components, covariance_type="full", reg_covar=REG_COVAR, random_state=seed)


def fit(
    x: np.ndarray,
    features: Sequence[str],
    seed: int = 42,
    components: Sequence[int] = COMPONENTS,
    folds: int = FOLDS,
    false_positive_rate: float = FALSE_POSITIVE_RATE,
) -> dict[str, Any]:
    """Choose the number of components, fit the mixture on all rows, and set the threshold.

    Args:
        x: Training features, shape [N, n_features], in model order.
        features: Names of the columns of ``x``.
        seed: Seed of the folds and of the mixtures' initialisation.
        components: Candidate numbers of components (each must be below the rows of a training fold).
        folds: Folds of the cross-fitting (component choice and threshold).
        false_positive_rate: Share of training-like houses the threshold is meant to flag.

    Returns:
        The ``outliers.json`` document (see :func:`export`).
    """
    from sklearn.model_selection import KFold

    x = np.asarray(x, dtype=float)
    transform = transform_params(x, features)
    z = _standardise(x, transform)
    splits = list(KFold(folds, shuffle=True, random_state=seed).split(z))
    cross_fitted: dict[int, np.ndarray] = {}
    for count in components:
        nll = np.empty(len(z))
        for train, held in splits:
            nll[held] = -_mixture(count, seed).fit(z[train]).score_samples(z[held])
        cross_fitted[count] = nll
    best = min(cross_fitted, key=lambda count: float(cross_fitted[count].mean()))
    threshold = float(np.quantile(cross_fitted[best], 1.0 - false_positive_rate))
    document = export(_mixture(best, seed).fit(z), features, transform, threshold)
    document["n_rows"] = len(x)
    document["selection"] = {
        "method": f"{folds}-fold cross-validated mean NLL",
        "mean_nll": {str(count): float(nll.mean()) for count, nll in cross_fitted.items()},
        "false_positive_rate": false_positive_rate,
    }
    return document


def export(
    mixture: Any, features: Sequence[str], transform: dict[str, Any], threshold: float
) -> dict[str, Any]:
    """A fitted full-covariance ``GaussianMixture`` (on :func:`transform_params`' output) as plain arrays."""
    if mixture.covariance_type != "full":
        raise ValueError(f"covariance_type {mixture.covariance_type!r}: only 'full' is exported")
    return {
        "format": FORMAT,
        "method": "gaussian mixture density (full covariance); NLL above the threshold is an outlier",
        "features": list(features),
        "transform": transform,
        "weights": mixture.weights_.tolist(),
        "means": mixture.means_.tolist(),
        "precisions_cholesky": mixture.precisions_cholesky_.tolist(),
        "threshold": threshold,
    }


def to_bytes(document: dict[str, Any]) -> bytes:
    """The ``outliers.json`` file's content (compact: it is read by machines)."""
    return json.dumps(document, separators=(",", ":")).encode()


class OutlierDetector:
    """The exported mixture, scored with numpy (what the detector runs on each window's rows).

    Args:
        document: The parsed ``outliers.json`` (see :func:`fit`).

    Raises:
        ValueError: The document is not an export this code reads.
    """

    def __init__(self, document: dict[str, Any]):
        if document.get("format") != FORMAT:
            raise ValueError(f"outliers.json: format {document.get('format')!r}, expected {FORMAT}")
        self.features: list[str] = list(document["features"])
        self.threshold = float(document["threshold"])
        self._transform = document["transform"]
        width = len(self.features)
        weights = np.asarray(document["weights"], dtype=float)
        means = np.asarray(document["means"], dtype=float)
        precisions = np.asarray(document["precisions_cholesky"], dtype=float)
        shapes = {
            "means": (means.shape, (len(weights), width)),
            "precisions_cholesky": (precisions.shape, (len(weights), width, width)),
            "transform mean": (np.shape(self._transform["mean"]), (width,)),
            "transform scale": (np.shape(self._transform["scale"]), (width,)),
        }
        for name, (actual, expected) in shapes.items():
            if actual != expected:
                raise ValueError(f"outliers.json: {name} has shape {actual}, expected {expected}")
        if not all(0 <= column < width for column in self._transform["log_columns"]):
            raise ValueError("outliers.json: log_columns point outside the features")
        if len(weights) == 0 or (weights <= 0).any():
            raise ValueError("outliers.json: weights must be positive")
        self._precisions = precisions
        self._shifts = np.einsum("kd,kde->ke", means, precisions)  # each mean in its whitened coordinates
        # log weight + log |det precision| - d/2 log(2 pi): each component's constant term.
        log_det = np.log(np.diagonal(precisions, axis1=1, axis2=2)).sum(axis=1)
        self._constants = np.log(weights) + log_det - 0.5 * width * np.log(2 * np.pi)

    @classmethod
    def from_bytes(cls, data: bytes) -> OutlierDetector:
        """Parse an ``outliers.json`` file's content (verify its sha256 first: ``artifact.read_outliers``)."""
        return cls(json.loads(data))

    def nll(self, rows: np.ndarray) -> np.ndarray:
        """Negative log-likelihood of each row under the mixture, shape [N] (higher: less like training)."""
        rows = np.asarray(rows, dtype=float).reshape(-1, len(self.features))
        z = _standardise(rows, self._transform)
        whitened = np.matmul(z, self._precisions) - self._shifts[:, None, :]  # [components, N, features]
        log_prob = self._constants[:, None] - 0.5 * np.square(whitened).sum(axis=2)
        top = log_prob.max(axis=0)
        return -(top + np.log(np.exp(log_prob - top).sum(axis=0)))

    def flags(self, rows: np.ndarray) -> np.ndarray:
        """Whether each row is an outlier, shape [N] (a row that cannot be scored, e.g. NaN, is one)."""
        return ~(self.nll(rows) <= self.threshold)
