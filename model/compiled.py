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

With calibrated intervals (:mod:`model.intervals`) the graph has two more outputs, ``medv_lower`` and
``medv_upper`` of shape [N, n_levels] (a column per level, in the ``levels`` metadata property's order): the
same arithmetic as :meth:`model.intervals.Intervals.bounds`, as a dozen ONNX nodes after the trees (a
``MatMul`` for the scale, ``Clip``, ``Exp``, ``Log``, ``Mul``, ``Sub``, ``Add``). A call that asks only for
``medv`` runs only the nodes ``medv`` needs (onnxruntime prunes the rest), so the price alone costs what it
did; the bounds add a few microseconds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model.intervals import LOG, PRICE_FLOOR, Intervals
from model.schema import TARGET, TARGET_UNIT, select

INPUT = "input"
OUTPUT = TARGET
LOWER = f"{TARGET}_lower"
UPPER = f"{TARGET}_upper"
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
        names = {output.name for output in self.session.get_outputs()}
        properties = self.session.get_modelmeta().custom_metadata_map
        self.levels: tuple[float, ...] = ()
        if {LOWER, UPPER} <= names and properties.get("levels"):
            self.levels = tuple(float(level) for level in properties["levels"].split(","))

    def predict(self, rows: np.ndarray) -> np.ndarray:
        """Predict for rows of features.

        Args:
            rows: Array of shape [N, n_features], in model order (any real dtype; cast to float32).

        Returns:
            Predictions of shape [N], float64 (median home value, USD 1000s).
        """
        values = self.session.run(self._outputs, {self._input: rows.astype(np.float32, copy=False)})[0]
        return values.reshape(-1).astype(np.float64)

    def predict_bounds(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Prices and their bounds at every level, in one call.

        Args:
            rows: Array of shape [N, n_features], in model order.

        Returns:
            Predictions of shape [N], and lower and upper bounds of shape [N, len(levels)] (USD 1000s).

        Raises:
            ValueError: The model was compiled without intervals.
        """
        if not self.levels:
            raise ValueError("this compiled model has no intervals (an artifact older than intervals)")
        feed = {self._input: rows.astype(np.float32, copy=False)}
        price, lower, upper = self.session.run([OUTPUT, LOWER, UPPER], feed)
        return price.reshape(-1).astype(np.float64), lower.astype(np.float64), upper.astype(np.float64)


def compile_pipeline(pipeline: Any, features: Sequence[str], intervals: Intervals | None = None) -> bytes:
    """Convert a fitted pipeline of :func:`model.pipeline.make_candidate` to ONNX.

    Every step is converted by skl2onnx; a final ``TransformedTargetRegressor`` is converted as its inner
    regressor followed by the inverse of its target transform (only log/exp is supported: an ``Exp`` node).

    Args:
        pipeline: The fitted scikit-learn pipeline.
        features: Its inputs, in model order.
        intervals: Its calibrated intervals, whose bounds become two more outputs (see the module docstring).

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
    properties = {"features": ",".join(features), "unit": TARGET_UNIT}
    if intervals is not None:
        _append_bounds(graph, intervals)
        properties["levels"] = ",".join(f"{level:g}" for level in intervals.levels)
    helper.set_model_props(onnx_model, properties)
    return bytes(onnx_model.SerializeToString())


def _append_bounds(graph: Any, intervals: Intervals) -> None:
    """Add the ``medv_lower`` and ``medv_upper`` outputs: :meth:`Intervals.bounds` as ONNX nodes."""
    from onnx import TensorProto, helper, numpy_helper

    def constant(name: str, values: Any) -> str:
        graph.initializer.append(
            numpy_helper.from_array(np.asarray(values, dtype=np.float32), f"bounds_{name}")
        )
        return f"bounds_{name}"

    def node(op: str, inputs: list[str], name: str) -> str:
        graph.node.append(helper.make_node(op, inputs, [f"bounds_{name}"]))
        return f"bounds_{name}"

    coef = constant("coef", np.asarray(intervals.coef).reshape(-1, 1))
    linear = node(
        "Add",
        [node("MatMul", [INPUT, coef], "matmul"), constant("intercept", [intervals.intercept])],
        "linear",
    )
    clipped = node(
        "Clip",
        [linear, constant("min", intervals.log_scale_min), constant("max", intervals.log_scale_max)],
        "clip",
    )
    half = node(
        "Mul", [node("Exp", [clipped], "scale"), constant("quantiles", [intervals.quantiles])], "half"
    )
    if intervals.space == LOG:
        centre = node("Log", [node("Max", [OUTPUT, constant("floor", PRICE_FLOOR)], "floored")], "centre")
        graph.node.append(helper.make_node("Exp", [node("Sub", [centre, half], "log_lower")], [LOWER]))
        graph.node.append(helper.make_node("Exp", [node("Add", [centre, half], "log_upper")], [UPPER]))
    else:
        lower = node("Sub", [OUTPUT, half], "lower")
        graph.node.append(helper.make_node("Max", [lower, constant("zero", 0.0)], [LOWER]))
        graph.node.append(helper.make_node("Add", [OUTPUT, half], [UPPER]))
    width = len(intervals.levels)
    for name in (LOWER, UPPER):
        graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [None, width]))


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


def check_parity(
    pipeline: Any, compiled: CompiledModel, rows: np.ndarray, intervals: Intervals | None = None
) -> tuple[float, float]:
    """The largest absolute differences between the two forms over ``rows``, if within the tolerance.

    Args:
        pipeline: The fitted scikit-learn pipeline.
        compiled: Its compiled form.
        rows: The rows to compare (see :func:`parity_rows`).
        intervals: The calibrated intervals compiled with it, whose bounds must agree too.

    Returns:
        The largest absolute difference of the prices and of the bounds (at any level; NaN without
        intervals), USD 1000s.

    Raises:
        CompileError: One exceeds :data:`PARITY_TOLERANCE`; the message says by how much and where.
    """
    expected = np.asarray(pipeline.predict(rows), dtype=np.float64)
    if intervals is None:
        return _within_tolerance(np.abs(compiled.predict(rows) - expected), rows, "model"), float("nan")
    price, lower, upper = compiled.predict_bounds(rows)
    expected_lower, expected_upper = intervals.bounds(rows, expected)
    bounds = np.maximum(np.abs(lower - expected_lower), np.abs(upper - expected_upper)).max(axis=1)
    return (
        _within_tolerance(np.abs(price - expected), rows, "model"),
        _within_tolerance(bounds, rows, "model's interval bounds"),
    )


def _within_tolerance(difference: np.ndarray, rows: np.ndarray, what: str) -> float:
    worst = int(np.argmax(difference))
    if difference[worst] > PARITY_TOLERANCE:
        raise CompileError(
            f"the compiled {what} differ{'s' if what == 'model' else ''} from scikit-learn by up to "
            f"{difference[worst]:.4f} USD 1000s (row {worst} of {len(rows)}: {rows[worst].tolist()}), "
            f"over the limit of {PARITY_TOLERANCE}; {int((difference > PARITY_TOLERANCE).sum())} rows over"
        )
    return float(difference[worst])
