"""Payloads to rows of features, found by name: what the transformer, the predictor and the detector share.

Every component meets the same two layouts of named features and turns them into one table whose columns
are in a given order (the model's):

- V1 named instances, ``{"instances": [{"crim": ..., "lstat": ...}, ...]}``: :func:`instance_rows`;
- V2 inputs, one per feature: :func:`stack_columns`; or one tensor whose columns are named (by the V2
  ``parameters.feature_names`` of :data:`FEATURE_NAMES`, or by convention): :func:`select_columns`.

The rules here are the ones all three apply: a feature is found by its name, extra named columns are left
out, every column has the same number of rows. What differs stays with its component: the transformer checks
every value against ``model/schema.py`` and names the field and rule in a 400; the predictor checks the
tensor's datatype and the names it is sent; the detector reads logged bodies leniently. Errors are raised as
``KeyError`` (a feature is missing) and ``ValueError`` (the columns do not fit), which each component turns
into its own error. Only numpy is needed: the detector's image has no KServe.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

FEATURE_NAMES = "feature_names"
"""The V2 tensor parameter (and model-metadata parameter) naming the columns, comma-separated."""


def check_unsigned_shape(name: str, shape: Sequence[int]) -> None:
    """Refuse a V2 tensor shape with a negative dimension.

    The Open Inference Protocol's dimensions are unsigned; KServe's decoders take -1 (as numpy's ``reshape``
    does) and would infer the dimension from the data, so a wrong shape would pass unnoticed.

    Raises:
        ValueError: A dimension is negative; the message names the tensor and the rule.
    """
    if any(dimension < 0 for dimension in shape):
        raise ValueError(
            f"{name}: shape {list(shape)} has a negative dimension; "
            "dimensions are unsigned (Open Inference Protocol)"
        )


def check_batch_rows(field: str, rows: int, max_rows: int) -> None:
    """Refuse a batch of more than ``max_rows`` rows, before any work is done on it.

    Each server has its own limit (``--max_batch_rows``): what one request may cost it in time and memory.

    Raises:
        ValueError: Too many rows; the message names the field and the limit (a 400 in every server).
    """
    if rows > max_rows:
        raise ValueError(f"{field}: batch of {rows} rows is over the limit of {max_rows}; split it")


def instance_rows(instances: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> list[tuple[Any, ...]]:
    """V1 named instances as rows of their values, in ``columns`` order (other keys are left out).

    Raises:
        KeyError: An instance lacks one of ``columns`` (the error's argument is the name).
    """
    if len(columns) == 1:
        return [(instance[columns[0]],) for instance in instances]
    return list(map(operator.itemgetter(*columns), instances))


def stack_columns(by_name: Mapping[str, np.ndarray], columns: Sequence[str]) -> np.ndarray:
    """V2 inputs, one 1-D array per feature, as one table of shape [N, len(columns)] in ``columns`` order.

    Raises:
        KeyError: A column is not among the inputs.
        ValueError: The inputs do not all have the same number of rows.
    """
    lengths = {name: len(values) for name, values in by_name.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"every input must have the same number of rows, got {lengths}")
    return np.column_stack([by_name[name] for name in columns])


def select_columns(table: np.ndarray, columns: Sequence[str], features: Sequence[str]) -> np.ndarray:
    """The columns of ``table`` (named ``columns``) that ``features`` names, in ``features`` order.

    ``table`` itself when the names are the same, in the same order (the common case costs a compare).

    Raises:
        ValueError: A feature is not among ``columns``.
    """
    if columns is features or list(columns) == list(features):
        return table
    return np.ascontiguousarray(table[:, [list(columns).index(name) for name in features]])
