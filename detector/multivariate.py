"""Multivariate drift: a change in how the features move together, which per-feature tests cannot see.

NannyML's data reconstruction method: standardize the reference, keep the principal components that explain
``variance`` of it, and measure each row's reconstruction error (the Euclidean distance between a
standardized row and its projection back from those components). Rows that follow the reference's joint
structure reconstruct well; rows whose features no longer move together, even if every marginal is
unchanged (``lstat`` shuffled against the rest, say), do not. A window drifted when its mean error exceeds the
reference's by ``z`` standard errors (``sigma / sqrt(n)``: the mean of ``n`` errors).

The reference's mean and spread of the error are measured out of sample, by cross-fitting: components fitted
on four fifths of the reference reconstruct the other fifth, in turn. Measured on the rows they were fitted
on, errors come out smaller than on any new house (the components follow that sample's noise), and a
threshold from them flagged a third of in-distribution windows in the service tests; cross-fitted, none.

Only numpy: the principal components are an SVD of the standardized reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_VARIANCE = 0.9
DEFAULT_Z = 3.0


@dataclass
class ReconstructionResult:
    """One window's reconstruction error against the reference's.

    Attributes:
        error: Mean reconstruction error of the window's rows.
        expected: Mean reconstruction error of the reference rows.
        threshold: The error above which the window drifted, for its size.
        z_score: ``(error - expected) / (sigma / sqrt(rows))``.
        drifted: ``error > threshold``.
    """

    error: float
    expected: float
    threshold: float
    z_score: float
    drifted: bool


class ReconstructionDrift:
    """PCA reconstruction error of windows against a reference.

    Args:
        reference: Reference rows, shape [n, n_features] (at least two rows).
        variance: Share of the standardized reference's variance the kept components explain.
        z: Standard errors above the reference's mean error at which a window drifted (3: about one
            in-distribution window in 700 under normality).
    """

    def __init__(self, reference: np.ndarray, *, variance: float = DEFAULT_VARIANCE, z: float = DEFAULT_Z):
        if not 0.0 < variance <= 1.0:
            raise ValueError(f"variance must be in (0, 1], got {variance}")
        rows = np.asarray(reference, dtype=float)
        if rows.ndim != 2 or len(rows) < 10:
            raise ValueError(
                f"the reference must be at least ten rows (five folds of two), got shape {rows.shape}"
            )
        self.mean, self.scale, self.components = _fit(rows, variance)
        self.z = z
        errors = np.concatenate(
            [_errors(_fit(rows[~held], variance), rows[held]) for held in _folds(len(rows))]
        )
        self.expected, self.sigma = float(errors.mean()), float(errors.std(ddof=1))

    def errors(self, rows: np.ndarray) -> np.ndarray:
        """Each row's reconstruction error, shape [n]."""
        return _errors((self.mean, self.scale, self.components), np.asarray(rows, dtype=float))

    def test(self, rows: np.ndarray) -> ReconstructionResult:
        """Compare one window's mean reconstruction error with the reference's."""
        error = float(self.errors(rows).mean())
        standard_error = self.sigma / np.sqrt(len(rows))
        threshold = self.expected + self.z * standard_error
        z_score = (error - self.expected) / standard_error if standard_error > 0 else 0.0
        return ReconstructionResult(error, self.expected, threshold, float(z_score), bool(error > threshold))


Fit = tuple[np.ndarray, np.ndarray, np.ndarray]
"""The reference's column means and scales, and the kept principal components (rows)."""


def _fit(rows: np.ndarray, variance: float) -> Fit:
    mean = rows.mean(axis=0)
    spread = rows.std(axis=0)
    scale = np.where(spread > 0, spread, 1.0)  # a constant column stays as it is
    _, singular, components = np.linalg.svd((rows - mean) / scale, full_matrices=False)
    explained = np.cumsum(singular**2) / np.sum(singular**2)
    kept = int(np.searchsorted(explained, variance - 1e-12) + 1)
    return mean, scale, components[:kept]


def _errors(fit: Fit, rows: np.ndarray) -> np.ndarray:
    mean, scale, components = fit
    standardized = (rows - mean) / scale
    return np.linalg.norm(standardized - standardized @ components.T @ components, axis=1)


def _folds(rows: int, folds: int = 5) -> list[np.ndarray]:
    """Masks of ``folds`` held-out parts of ``rows`` (a fixed shuffle: the same reference, the same fit)."""
    order = np.random.default_rng(0).permutation(rows)
    masks = []
    for part in np.array_split(order, min(folds, rows)):
        mask = np.zeros(rows, dtype=bool)
        mask[part] = True
        masks.append(mask)
    return masks
