"""Accuracy before labels: Direct Loss Estimation (DLE, NannyML's method) on scikit-learn.

House prices are known months after a prediction, so the detector estimates the model's error on live traffic
from the inputs alone. At training time two small regressors learn, from the cross-validated out-of-fold
residuals (rows the model did not see, as live rows are), the expected absolute error and the expected squared
error of the shipped model given the features and the model's prediction. A window's estimated MAE is the mean
of the first over its rows; its estimated RMSE the square root of the mean of the second. Both regressors are
``HistGradientBoostingRegressor`` with the squared-error loss, which fits a conditional *mean*: the mean of
|error| is what MAE averages (an absolute-error loss would fit the median of |error|, biased low).

**Stored without pickle.** The fitted trees are exported to ``dle.json`` (arrays of node features, thresholds
and children; :func:`export`), hashed in ``model.json`` like every artifact file (:mod:`model.artifact`), and
evaluated by :class:`LossEstimator` with numpy alone: the detector loads no pickle and needs no new library,
and nothing in the file runs code. It holds 2 x ``max_iter`` trees of at most 2^``max_depth`` leaves (about
60 kB of JSON with the defaults).

What it can and cannot see (docs/detector.md, "Accuracy before labels"): a covariate shift towards inputs
where the model erred more in cross-validation raises the estimate; a change of the relation between inputs
and price (concept drift: every house 20% dearer) leaves the inputs, hence the estimate, unchanged. Only
labels see that.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

FORMAT = 1
TARGETS = ("abs_error", "squared_error")
PARAMS: dict[str, Any] = {
    "max_iter": 100,
    "learning_rate": 0.05,
    "max_depth": 3,
    "min_samples_leaf": 20,
    "l2_regularization": 1.0,
}
"""Small, strongly regularised trees: a few hundred residuals are a noisy target (measured in
``./dev bench label_free``)."""


def fit(
    x: np.ndarray, y: np.ndarray, predictions: np.ndarray, features: Sequence[str], seed: int = 42
) -> dict[str, Any]:
    """Fit the two loss regressors on out-of-fold residuals and export them.

    Args:
        x: Training features, shape [N, n_features], in model order.
        y: True targets, shape [N] (USD 1000s).
        predictions: The model's out-of-fold predictions for ``x``, shape [N]; rows never held out (NaN)
            are skipped.
        features: Names of the columns of ``x``.
        seed: Seed of the regressors (they are deterministic without early stopping; kept for the record).

    Returns:
        The ``dle.json`` document (see :func:`export`), with the residuals' own ``mae`` and ``rmse``.
    """
    from sklearn.ensemble import HistGradientBoostingRegressor
    from threadpoolctl import threadpool_limits

    known = np.isfinite(predictions)
    x, y, predictions = x[known], y[known], predictions[known]
    inputs = np.column_stack([x, predictions])
    errors = y - predictions
    models = {}
    # One thread: on 506 rows OpenMP's threads only wait for each other, and on a busy machine they spun for
    # 7-14 s where one thread fits both regressors in 0.1 s (measured here beside other agents' load).
    with threadpool_limits(limits=1):
        for name, target in zip(TARGETS, (np.abs(errors), errors**2), strict=True):
            regressor = HistGradientBoostingRegressor(random_state=seed, early_stopping=False, **PARAMS)
            models[name] = export(regressor.fit(inputs, target))
    return {
        "format": FORMAT,
        "method": "direct loss estimation (HistGradientBoostingRegressor on out-of-fold residuals)",
        "inputs": [*features, "prediction"],
        "params": dict(PARAMS),
        "n_rows": len(y),
        "mae": float(np.mean(np.abs(errors))),
        "rmse": float(np.sqrt(np.mean(errors**2))),
        "models": models,
    }


def export(regressor: Any) -> dict[str, Any]:
    """A fitted single-output ``HistGradientBoostingRegressor`` (numeric features, identity link) as arrays.

    All trees' nodes are laid end to end; ``roots`` holds each tree's first node, and ``left``/``right`` are
    indices into the same arrays (a leaf points to itself, so walking past it stays put).

    Raises:
        ValueError: The regressor uses categorical splits, which :class:`LossEstimator` does not evaluate.
    """
    feature: list[int] = []
    left: list[int] = []
    right: list[int] = []
    roots: list[int] = []
    threshold: list[float] = []
    value: list[float] = []
    missing_left: list[bool] = []
    depth = 0
    for (tree,) in regressor._predictors:
        nodes = tree.nodes
        if nodes["is_categorical"].any():
            raise ValueError("categorical splits are not supported")
        offset = len(feature)
        roots.append(offset)
        leaf = nodes["is_leaf"].astype(bool)
        own = np.arange(len(nodes)) + offset
        feature += np.where(leaf, 0, nodes["feature_idx"]).tolist()
        threshold += np.where(leaf, 0.0, nodes["num_threshold"]).tolist()
        left += np.where(leaf, own, nodes["left"].astype(np.int64) + offset).tolist()
        right += np.where(leaf, own, nodes["right"].astype(np.int64) + offset).tolist()
        value += np.where(leaf, nodes["value"], 0.0).tolist()
        missing_left += nodes["missing_go_to_left"].astype(bool).tolist()
        depth = max(depth, int(nodes["depth"].max()))
    return {
        "baseline": float(np.ravel(regressor._baseline_prediction)[0]),
        "depth": depth,
        "roots": roots,
        "feature": feature,
        "threshold": threshold,
        "left": left,
        "right": right,
        "value": value,
        "missing_left": missing_left,
    }


def to_bytes(document: dict[str, Any]) -> bytes:
    """The ``dle.json`` file's content (compact: it is read by machines)."""
    return json.dumps(document, separators=(",", ":")).encode()


@dataclass(frozen=True)
class _Trees:
    baseline: float
    depth: int
    roots: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    value: np.ndarray
    missing_left: np.ndarray

    @classmethod
    def of(cls, document: dict[str, Any]) -> _Trees:
        arrays = {
            name: np.asarray(document[name], dtype=dtype)
            for name, dtype in (
                ("roots", np.int64),
                ("feature", np.int64),
                ("threshold", np.float64),
                ("left", np.int64),
                ("right", np.int64),
                ("value", np.float64),
                ("missing_left", bool),
            )
        }
        size = len(arrays["feature"])
        if any(len(array) != size for name, array in arrays.items() if name != "roots"):
            raise ValueError("dle.json: node arrays differ in length")
        for name in ("roots", "left", "right"):
            if size == 0 or arrays[name].min() < 0 or arrays[name].max() >= size:
                raise ValueError(f"dle.json: {name} points outside the nodes")
        return cls(float(document["baseline"]), int(document["depth"]), **arrays)

    def predict(self, inputs: np.ndarray) -> np.ndarray:
        """Walk every tree for every row at once: ``depth`` vectorised steps, then sum the leaves."""
        if self.feature.max() >= inputs.shape[1]:
            raise ValueError(f"the trees read column {self.feature.max()}, inputs have {inputs.shape[1]}")
        node = np.broadcast_to(self.roots, (len(inputs), len(self.roots))).copy()
        rows = np.arange(len(inputs))[:, None]
        for _ in range(self.depth):
            values = inputs[rows, self.feature[node]]
            go_left = np.where(np.isnan(values), self.missing_left[node], values <= self.threshold[node])
            node = np.where(go_left, self.left[node], self.right[node])
        return np.asarray(self.baseline + self.value[node].sum(axis=1))


class LossEstimator:
    """The exported loss regressors, evaluated with numpy (what the detector runs per window).

    Args:
        document: The parsed ``dle.json`` (see :func:`fit`).

    Raises:
        ValueError: The document is not a DLE export this code reads.
    """

    def __init__(self, document: dict[str, Any]):
        if document.get("format") != FORMAT:
            raise ValueError(f"dle.json: format {document.get('format')!r}, expected {FORMAT}")
        self.inputs: list[str] = list(document["inputs"])
        self.training_mae = float(document["mae"])
        self.training_rmse = float(document["rmse"])
        self._abs = _Trees.of(document["models"]["abs_error"])
        self._squared = _Trees.of(document["models"]["squared_error"])

    @classmethod
    def from_bytes(cls, data: bytes) -> LossEstimator:
        """Parse a ``dle.json`` file's content (verify its sha256 first: :func:`model.artifact.read_dle`)."""
        return cls(json.loads(data))

    def row_losses(self, rows: np.ndarray, predictions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Expected absolute and squared error of each row, shape [N] each (clipped at 0)."""
        rows = np.asarray(rows, dtype=float).reshape(len(predictions), -1)
        if rows.shape[1] != len(self.inputs) - 1:
            raise ValueError(f"rows must have {len(self.inputs) - 1} columns {self.inputs[:-1]}")
        inputs = np.column_stack([rows, np.asarray(predictions, dtype=float)])
        return np.maximum(self._abs.predict(inputs), 0.0), np.maximum(self._squared.predict(inputs), 0.0)

    def estimate(self, rows: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
        """Estimated MAE and RMSE (USD 1000s) of the model on one window.

        Args:
            rows: The window's inputs, shape [N, n_features], model order.
            predictions: The model's predictions for them, shape [N].

        Returns:
            ``mae``, ``rmse`` and ``rows``.
        """
        absolute, squared = self.row_losses(rows, predictions)
        return {
            "mae": float(absolute.mean()),
            "rmse": float(np.sqrt(squared.mean())),
            "rows": len(absolute),
        }
