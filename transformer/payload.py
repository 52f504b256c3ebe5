"""Client payloads -> the predictor's tensor, every value checked against ``model/schema.py``.

Three shapes are accepted, all answering the same thing (median home value, USD 1000s):

- V1, one object per house (the original system's payload)::

      {"instances": [{"crim": 0.006, "zn": 18, ..., "lstat": 4.98}, ...]}

- V2 with one named input per feature, each of shape [N] (or [N, 1]);
- V2 with one input of shape [N, 13] (every schema feature, in ``model.schema.ALL_FEATURES`` order) or
  [N, n_model] (the model's own features, in the model's order).

Features the schema knows but the model does not use (``b`` for the default model) are accepted, validated and
dropped. Finding features by name is :mod:`serving.payload`'s, shared with the predictor and the detector;
checking them against the schema is this module's. Every problem raises :class:`PayloadError`, a
``kserve.errors.InvalidInput`` (HTTP 400, gRPC INVALID_ARGUMENT) whose message names the field, the instance
index and the rule broken.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from kserve import InferInput, InferRequest
from kserve.errors import InvalidInput

from model.schema import ALL_FEATURES, FEATURES_BY_NAME, Feature
from serving.payload import check_unsigned_shape, instance_rows, select_columns, stack_columns

V2_DATATYPES = ("FP32", "FP64", "INT32", "INT64")
_NUMBER_TYPES = frozenset((int, float))
_ALL_FEATURE_SET = frozenset(ALL_FEATURES)
Location = Callable[[int, str], str]


class PayloadError(InvalidInput):
    """A client payload that breaks a rule.

    Attributes:
        field: The feature or payload field at fault (``instances``, ``inputs``, ``nox``, ...).
        rule: The kind of rule broken: ``malformed``, ``missing``, ``unknown``, ``wrong_type``,
            ``not_finite``, ``out_of_domain``, ``empty_batch``, ``too_many_rows``, ``wrong_datatype`` or
            ``wrong_shape``.
    """

    def __init__(self, message: str, *, field: str, rule: str):
        super().__init__(message)
        self.field = field
        self.rule = rule


def rows_from_v1(payload: Any, features: Sequence[str], max_rows: int) -> np.ndarray:
    """Validate a V1 body of named instances.

    Args:
        payload: The decoded JSON body.
        features: The model's features, in model order.
        max_rows: The largest batch accepted.

    Returns:
        An FP64 array of shape [N, len(features)], columns in model order.

    Raises:
        PayloadError: The body breaks a rule.
    """
    if not isinstance(payload, dict) or "instances" not in payload:
        raise PayloadError(
            'instances: missing; a V1 body is {"instances": [{"crim": ..., "lstat": ...}, ...]}, '
            "one object per house",
            field="instances",
            rule="missing",
        )
    instances = payload["instances"]
    if not isinstance(instances, list):
        raise PayloadError(
            f"instances: must be a list of objects, got {type(instances).__name__}",
            field="instances",
            rule="malformed",
        )
    _check_batch_size(len(instances), max_rows, "instances")
    names = list(features)
    required = set(names)
    # Instances that carry exactly the model's features, or exactly the schema's (the original payload, with
    # ``b``), are the common case and are read in bulk; anything else is checked instance by instance.
    if all(type(instance) is dict and instance.keys() == required for instance in instances):
        columns = names
    elif all(type(instance) is dict and instance.keys() == _ALL_FEATURE_SET for instance in instances):
        columns = list(ALL_FEATURES)
    else:
        for index, instance in enumerate(instances):
            _check_instance(instance, required, index)
        columns = names
    rows = instance_rows(instances, columns)
    if not set(map(type, itertools.chain.from_iterable(rows))) <= _NUMBER_TYPES:
        for index, row in enumerate(rows):
            for name, value in zip(columns, row, strict=True):
                if type(value) not in _NUMBER_TYPES:
                    _raise_violation(FEATURES_BY_NAME[name], value, f"instances[{index}].{name}")
    table = np.array(rows, dtype=np.float64)
    check_domains(table, columns, lambda index, name: f"instances[{index}].{name}")
    return select_columns(table, columns, names)


def rows_from(payload: Any, features: Sequence[str], max_rows: int) -> np.ndarray:
    """Validate a V2 request (:func:`rows_from_v2`) or a V1 body (:func:`rows_from_v1`) for ``features``."""
    if isinstance(payload, InferRequest):
        return rows_from_v2(payload, features, max_rows)
    return rows_from_v1(payload, features, max_rows)


def rows_from_v2(request: InferRequest, features: Sequence[str], max_rows: int) -> np.ndarray:
    """Validate a V2 request: one named input per feature, or one [N, 13] / [N, n_model] input.

    Args:
        request: The decoded V2 request (REST or gRPC).
        features: The model's features, in model order.
        max_rows: The largest batch accepted.

    Returns:
        An FP64 array of shape [N, len(features)], columns in model order.

    Raises:
        PayloadError: The request breaks a rule.
    """
    inputs = list(request.inputs)
    if not inputs:
        raise PayloadError("inputs: at least one input tensor is required", field="inputs", rule="missing")
    for tensor in inputs:
        try:
            check_unsigned_shape(tensor.name, tensor.shape)
        except ValueError as error:
            raise PayloadError(str(error), field=tensor.name, rule="wrong_shape") from None
    if len(inputs) == 1 and len(inputs[0].shape) == 2:
        tensor = inputs[0]
        columns = _matrix_columns(tensor, features)
        matrix = _as_array(tensor)
        _check_batch_size(matrix.shape[0], max_rows, tensor.name)
        check_domains(matrix, columns, lambda index, name: f"{tensor.name}[{index}].{name}")
        return np.ascontiguousarray(select_columns(matrix, columns, features))
    by_name = _named_columns(inputs, features)
    present = [name for name in ALL_FEATURES if name in by_name]
    try:
        table = stack_columns(by_name, present)
    except ValueError as error:
        raise PayloadError(f"inputs: {error}", field="inputs", rule="wrong_shape") from None
    _check_batch_size(len(table), max_rows, inputs[0].name)
    check_domains(table, present, lambda index, name: f"{name}[{index}]")
    return np.ascontiguousarray(select_columns(table, present, features))


def check_domains(table: np.ndarray, names: Sequence[str], location: Location) -> None:
    """Check every value of ``table`` (columns ``names``) against the schema; raise for the first bad one.

    The check runs on the whole table at once; only a failure goes back to ``Feature.violation`` for the
    message, so the rule text is the schema's own.
    """
    bounds = _bounds(tuple(names))
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(table)
        valid &= np.where(bounds.lower_inclusive, table >= bounds.lower, table > bounds.lower)
        valid &= np.where(bounds.upper_inclusive, table <= bounds.upper, table < bounds.upper)
        valid &= ~bounds.whole | (table == np.floor(table))
    if not valid.all():
        index, column = np.argwhere(~valid)[0]
        _raise_violation(
            FEATURES_BY_NAME[names[column]], float(table[index, column]), location(int(index), names[column])
        )


@dataclass(frozen=True)
class _Bounds:
    lower: np.ndarray
    upper: np.ndarray
    lower_inclusive: np.ndarray
    upper_inclusive: np.ndarray
    whole: np.ndarray


@functools.cache
def _bounds(names: tuple[str, ...]) -> _Bounds:
    features = [FEATURES_BY_NAME[name] for name in names]
    return _Bounds(
        lower=np.array([0.0 if feature.kind == "binary" else feature.lower for feature in features]),
        upper=np.array([1.0 if feature.kind == "binary" else feature.upper for feature in features]),
        lower_inclusive=np.array(
            [feature.lower_inclusive or feature.kind == "binary" for feature in features]
        ),
        upper_inclusive=np.array(
            [feature.upper_inclusive or feature.kind == "binary" for feature in features]
        ),
        # A binary feature is a whole number in [0, 1].
        whole=np.array([feature.kind in ("integer", "binary") for feature in features]),
    )


def _raise_violation(feature: Feature, value: Any, where: str) -> None:
    rule = feature.violation(value) or f"must be in {feature.domain}, got {value!r}"
    if rule.startswith("must be a number"):
        kind = "wrong_type"
    elif rule.startswith("must be a finite"):
        kind = "not_finite"
    else:
        kind = "out_of_domain"
    raise PayloadError(f"{where}: {rule}", field=feature.name, rule=kind)


def _check_batch_size(rows: int, max_rows: int, field: str) -> None:
    if rows == 0:
        raise PayloadError(f"{field}: empty batch; send at least one row", field=field, rule="empty_batch")
    if rows > max_rows:
        raise PayloadError(
            f"{field}: batch of {rows} rows is over the limit of {max_rows}; split it",
            field=field,
            rule="too_many_rows",
        )


def _check_instance(instance: Any, required: set[str], index: int) -> None:
    if not isinstance(instance, dict):
        raise PayloadError(
            f"instances[{index}]: must be an object of feature values, got {type(instance).__name__}",
            field="instances",
            rule="malformed",
        )
    unknown = sorted(set(instance) - set(ALL_FEATURES))
    if unknown:
        raise PayloadError(
            f"instances[{index}].{unknown[0]}: unknown field; known fields are {', '.join(ALL_FEATURES)}",
            field=unknown[0],
            rule="unknown",
        )
    missing = [name for name in ALL_FEATURES if name in required and name not in instance]
    if missing:
        raise PayloadError(
            f"instances[{index}].{missing[0]}: missing; the model needs "
            + ", ".join(name for name in ALL_FEATURES if name in required),
            field=missing[0],
            rule="missing",
        )
    for name, value in instance.items():  # known features the model does not use: validated, then dropped
        if name not in required and FEATURES_BY_NAME[name].violation(value):
            _raise_violation(FEATURES_BY_NAME[name], value, f"instances[{index}].{name}")


def _matrix_columns(tensor: InferInput, features: Sequence[str]) -> list[str]:
    width = tensor.shape[1]
    if width == len(ALL_FEATURES):
        return list(ALL_FEATURES)
    if width == len(features):
        return list(features)
    raise PayloadError(
        f"{tensor.name}: shape {list(tensor.shape)} must be [N, {len(ALL_FEATURES)}] "
        f"(columns {', '.join(ALL_FEATURES)}) or [N, {len(features)}] (columns {', '.join(features)})",
        field=tensor.name,
        rule="wrong_shape",
    )


def _named_columns(inputs: list[InferInput], features: Sequence[str]) -> dict[str, np.ndarray]:
    by_name: dict[str, np.ndarray] = {}
    for tensor in inputs:
        if tensor.name not in FEATURES_BY_NAME:
            raise PayloadError(
                f"{tensor.name}: unknown input; send one input per feature ({', '.join(features)}) "
                f"or one [N, {len(ALL_FEATURES)}] tensor",
                field=tensor.name,
                rule="unknown",
            )
        if tensor.name in by_name:
            raise PayloadError(f"{tensor.name}: given twice", field=tensor.name, rule="malformed")
        if len(tensor.shape) > 2 or (len(tensor.shape) == 2 and tensor.shape[1] != 1):
            raise PayloadError(
                f"{tensor.name}: shape {list(tensor.shape)} must be [N] or [N, 1]",
                field=tensor.name,
                rule="wrong_shape",
            )
        by_name[tensor.name] = _as_array(tensor).reshape(-1)
    missing = [name for name in features if name not in by_name]
    if missing:
        raise PayloadError(
            f"{missing[0]}: missing input; the model needs {', '.join(features)}",
            field=missing[0],
            rule="missing",
        )
    return by_name


def _as_array(tensor: InferInput) -> np.ndarray:
    if tensor.datatype not in V2_DATATYPES:
        raise PayloadError(
            f"{tensor.name}: datatype {tensor.datatype} is not accepted; "
            f"use one of {', '.join(V2_DATATYPES)}",
            field=tensor.name,
            rule="wrong_datatype",
        )
    try:
        return tensor.as_numpy().astype(np.float64, copy=False)
    except (ValueError, TypeError) as error:
        rule = "wrong_shape" if "reshape" in str(error) else "wrong_type"
        raise PayloadError(
            f"{tensor.name}: data does not fit datatype {tensor.datatype} "
            f"and shape {list(tensor.shape)}: {error}",
            field=tensor.name,
            rule=rule,
        ) from None
