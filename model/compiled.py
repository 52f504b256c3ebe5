"""The compiled serving form of a trained pipeline: ONNX, run by onnxruntime.

scikit-learn checks its input at every layer of a pipeline on every call: for one row those checks cost more
than the trees themselves (a one-row ``pipeline.predict`` of the shipped model takes 0.3-0.9 ms here, the same
trees under onnxruntime with one thread about 10 µs). So training converts the shipped pipeline to ONNX
(:func:`compile_pipeline`, with skl2onnx), checks that both forms agree on every training row and on rows at
the schema's edges (:func:`parity_rows`, within :data:`PARITY_TOLERANCE`), and the artifact carries both files
(``model.onnx`` beside ``model.joblib``, see :mod:`model.artifact`). The predictor serves this form with
onnxruntime alone (:class:`CompiledModel`): its image needs neither scikit-learn nor joblib.

The graph takes one float32 tensor ``input`` of shape [N, n_features] (the model's feature order; float32
because onnxruntime's ``TreeEnsembleRegressor`` takes no float64) and gives one tensor ``medv`` of shape
[N, 1] in USD 1000s. For a model trained on log(medv) the inverse, ``exp``, is an ``Exp`` node in the graph,
so the file alone gives prices. Its metadata properties name the features, in order, and the target's unit.
Compiling needs skl2onnx and scikit-learn (the ``training`` extra); running needs only onnxruntime.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model.schema import TARGET, TARGET_UNIT, select

INPUT = "input"
OUTPUT = TARGET
OPSET = 17
"""The ONNX opset of the graph (onnxruntime 1.17 and later run it)."""
PARITY_TOLERANCE = 0.01
"""The largest absolute difference (USD 1000s, i.e. 10 dollars) allowed between the compiled form and
scikit-learn on any checked row: far below the model's error (RMSE about 2.9), far above float32 rounding
(about 0.00005 measured)."""
UNBOUNDED_EDGE = 2.0
"""A feature without an upper bound in the schema is checked at this multiple of its largest training value.

Trees are constant past their last split, so any value past the training range checks them; a linear model
extrapolates, and at absurd values (a million rooms) float32 rounding alone moves its prediction by dollars.
"""


class CompileError(RuntimeError):
    """The pipeline cannot be compiled, or its compiled form does not predict as it does."""


class CompiledModel:
    """An ONNX model under onnxruntime, with a fitted pipeline's ``predict``.

    Args:
        model: The serialised ONNX model (bytes already verified by the caller) or its path.
        intra_op_threads: Threads one call may use. One is fastest for a few rows on a small machine, and
            leaves the other cores to the server's event loop.
    """

    def __init__(self, model: bytes | str | Path, intra_op_threads: int = 1):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1  # one graph of one node: nothing to run side by side
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        source = model if isinstance(model, bytes) else str(model)
        self.session = onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        self._input = self.session.get_inputs()[0].name
        self._outputs = [self.session.get_outputs()[0].name]

    def predict(self, rows: np.ndarray) -> np.ndarray:
        """Predict for rows of features.

        Args:
            rows: Array of shape [N, n_features], in model order (any real dtype; cast to float32).

        Returns:
            Predictions of shape [N], float64 (median home value, USD 1000s).
        """
        values = self.session.run(self._outputs, {self._input: rows.astype(np.float32, copy=False)})[0]
        return values.reshape(-1).astype(np.float64)


def compile_pipeline(pipeline: Any, features: Sequence[str]) -> bytes:
    """Convert a fitted pipeline of :func:`model.pipeline.make_candidate` to ONNX.

    Every step is converted by skl2onnx; a final ``TransformedTargetRegressor`` is converted as its inner
    regressor followed by the inverse of its target transform (only log/exp is supported: an ``Exp`` node).

    Args:
        pipeline: The fitted scikit-learn pipeline.
        features: Its inputs, in model order.

    Returns:
        The serialised ONNX model.

    Raises:
        CompileError: A step has no ONNX converter, or the target transform is not log/exp.
    """
    from onnx import helper
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.pipeline import Pipeline

    steps = list(pipeline.steps)
    name, final = steps[-1]
    inverse = "Identity"
    if isinstance(final, TransformedTargetRegressor):
        inverse = _inverse_node(final)
        steps[-1] = (name, final.regressor_)
    estimator = steps[0][1] if len(steps) == 1 else Pipeline(steps)
    try:
        onnx_model = convert_sklearn(
            estimator,
            initial_types=[(INPUT, FloatTensorType([None, len(features)]))],
            target_opset=OPSET,
        )
    except Exception as error:  # skl2onnx raises its own types, none shared, for an unsupported model
        raise CompileError(f"cannot convert {type(estimator).__name__} to ONNX: {error}") from error
    graph = onnx_model.graph
    graph.node.append(helper.make_node(inverse, [graph.output[0].name], [OUTPUT]))
    graph.output[0].name = OUTPUT
    helper.set_model_props(onnx_model, {"features": ",".join(features), "unit": TARGET_UNIT})
    return bytes(onnx_model.SerializeToString())


def _inverse_node(regressor: Any) -> str:
    """The ONNX operator that maps a ``TransformedTargetRegressor``'s output back to the target's unit."""
    transformer = regressor.transformer_
    if getattr(transformer, "func", None) is np.log and getattr(transformer, "inverse_func", None) is np.exp:
        return "Exp"
    raise CompileError(
        f"cannot compile the target transform {transformer!r}: only log (inverse exp) is supported"
    )


def parity_rows(x: np.ndarray, features: Sequence[str]) -> np.ndarray:
    """The rows both forms must agree on: every training row, then each with one feature at each edge.

    A feature's edges are its schema bounds (an open bound nudged inside; :data:`UNBOUNDED_EDGE` times the
    largest training value for a missing upper bound).

    Args:
        x: The training rows, shape [N, n_features], in ``features`` order.
        features: The feature names of the columns.

    Returns:
        Array of shape [N * (1 + 2 * n_features), n_features].
    """
    blocks = [x]
    for column, feature in enumerate(select(features)):
        upper = feature.upper if math.isfinite(feature.upper) else UNBOUNDED_EDGE * float(x[:, column].max())
        lower_edge = feature.lower if feature.lower_inclusive else math.nextafter(feature.lower, upper)
        upper_edge = upper if feature.upper_inclusive else math.nextafter(upper, feature.lower)
        for edge in (lower_edge, upper_edge):
            block = x.copy()
            block[:, column] = edge
            blocks.append(block)
    return np.vstack(blocks)


def check_parity(pipeline: Any, compiled: CompiledModel, rows: np.ndarray) -> float:
    """The largest absolute difference between the two forms over ``rows``, if within the tolerance.

    Args:
        pipeline: The fitted scikit-learn pipeline.
        compiled: Its compiled form.
        rows: The rows to compare (see :func:`parity_rows`).

    Returns:
        The largest absolute difference, USD 1000s.

    Raises:
        CompileError: It exceeds :data:`PARITY_TOLERANCE`; the message says by how much and where.
    """
    difference = np.abs(compiled.predict(rows) - np.asarray(pipeline.predict(rows), dtype=np.float64))
    worst = int(np.argmax(difference))
    if difference[worst] > PARITY_TOLERANCE:
        raise CompileError(
            f"the compiled model differs from scikit-learn by up to {difference[worst]:.4f} USD 1000s "
            f"(row {worst} of {len(rows)}: {rows[worst].tolist()}), over the limit of {PARITY_TOLERANCE}; "
            f"{int((difference > PARITY_TOLERANCE).sum())} rows are over it"
        )
    return float(difference[worst])
