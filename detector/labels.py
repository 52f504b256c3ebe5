"""Ground truth posted to ``/feedback``: what a label is, checked before anything is recorded.

A body is one label, ``{"id": ID, "value": V}``, or a batch, ``{"labels": [{"id": ID, "value": V}, ..]}``.

- ``ID`` is an inference id (``ce-id``) by the servers' rule for request ids (:mod:`serving.inputs`): 1 to
  256 printable ASCII characters, without spaces.
- ``V`` is one value per predicted row of that request: a number for a one-row request, else a flat list of
  numbers. Each is a JSON number (not a string, boolean or null; not nested) in the target's domain,
  ``model.schema.TARGET_DOMAIN`` ((0, 50], USD 1000s): the one rule the training reader applies to the archive
  too (:func:`model.archive.training_frame`). So ``"999"``, ``[[-1e6]]``, ``"1e300"``, ``true``, ``NaN`` and
  ``1e300`` are refused with a 400 naming the label, where before they reached the live MAE (974), the
  archive and, as infinities, the saved state that ``/status`` could no longer encode.
- A batch holds at most ``max_labels`` labels, and each label at most ``max_labels`` values (the detector's
  ``--max_rows``: no request had more rows).
- **Duplicates**: one id twice in a batch with the same values counts once (a sender's retry merged into
  the batch: counting it twice would double that house's weight in the live MAE and R² and in the retrain's
  label count). With different values the batch is refused: the sender does not know which is true, and
  neither does the detector.

Anything else raises :class:`InvalidLabelError` naming the field and the rule, with a short ``reason`` for
``housing_feedback_rejected_total``. A batch is taken whole or not at all: one bad label cannot slip in
beside good ones (:meth:`detector.monitor.Monitor.label` checks each matches its prediction's rows first).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from detector.events import InvalidEventError, check_id, read_json
from model.schema import TARGET, TARGET_CENSORED_AT, TARGET_DOMAIN, TARGET_UNIT

REASONS = ("malformed", "not_a_number", "out_of_range", "too_many", "duplicate", "rows")
"""Why a body was refused (``housing_feedback_rejected_total{reason}``): not the documented shape; a value
that is not a finite JSON number; one outside the target's domain; more labels or values than allowed; one
id with two different values; values that do not match the prediction's rows."""

FIELDS = {"id", "value"}
JSON_TYPES = {str: "a string", bool: "a boolean", type(None): "null", dict: "an object"}


class InvalidLabelError(ValueError):
    """The body is refused; the message names the field and the rule broken.

    Attributes:
        reason: One of :data:`REASONS`.
    """

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Label:
    """One checked label.

    Attributes:
        id: The inference id.
        values: Its true values, one per predicted row.
        field: Where it was in the body, as messages name it: ``""`` or ``"labels[3]."``.
    """

    id: str
    values: tuple[float, ...]
    field: str = ""


def parse_feedback(body: bytes, max_labels: int) -> tuple[list[Label], bool]:
    """The labels of a ``/feedback`` body, each checked, duplicates counted once.

    Args:
        body: The request body.
        max_labels: Most labels in a batch, and most values in a label.

    Returns:
        The labels in order (a repeated id once, where it first came), and whether the body was a batch.

    Raises:
        InvalidLabelError: The body breaks a rule of the module docstring.
    """
    try:
        document = read_json(body, "body", "must be JSON: {'id': ..., 'value': ...} or {'labels': [...]}")
    except InvalidEventError as error:
        raise InvalidLabelError(str(error), "malformed") from None
    batch = isinstance(document, dict) and "labels" in document
    if batch:
        if set(document) != {"labels"}:
            unknown = sorted(set(document) - {"labels"})
            raise InvalidLabelError(
                f"body: unknown field(s) {unknown}; a batch has only 'labels'", "malformed"
            )
        items = document["labels"]
        if not isinstance(items, list):
            raise InvalidLabelError(
                "labels: must be a list of {'id': ..., 'value': ...} objects", "malformed"
            )
        if len(items) > max_labels:
            message = f"labels: {len(items):,} labels, more than the limit of {max_labels}"
            raise InvalidLabelError(message, "too_many")
    else:
        items = [document]
    labels: dict[str, Label] = {}
    for index, item in enumerate(items):
        label = _label(item, f"labels[{index}]." if batch else "", max_labels)
        first = labels.setdefault(label.id, label)
        if first.values != label.values:
            raise InvalidLabelError(
                f"{label.field}id: {label.id!r} is also {first.field.rstrip('.') or 'labelled'} with other "
                "values; send one label per id",
                "duplicate",
            )
    return list(labels.values()), batch


def _label(item: Any, field: str, max_values: int) -> Label:
    if not isinstance(item, dict):
        shape = "an {'id': ..., 'value': ...} object"
        raise InvalidLabelError(f"{field.rstrip('.') or 'body'}: must be {shape}", "malformed")
    unknown = set(item) - FIELDS
    if unknown:
        where = field.rstrip(".") or "body"
        message = f"{where}: unknown field(s) {sorted(unknown)}; a label has 'id' and 'value'"
        raise InvalidLabelError(message, "malformed")
    for name in ("id", "value"):
        if name not in item:
            raise InvalidLabelError(f"{field}{name}: required", "malformed")
    try:
        check_id(item["id"], f"{field}id")
    except InvalidEventError as error:
        raise InvalidLabelError(str(error), "malformed") from None
    return Label(item["id"], check_values(item["value"], field, max_values), field)


def check_values(value: Any, field: str = "", max_values: int | None = None) -> tuple[float, ...]:
    """A label's ``value`` (a number, or a flat list of numbers) as true values, each by the target's rule.

    Args:
        value: The ``value`` as received.
        field: Where it is, as messages name it (``"labels[3]."``).
        max_values: Most values taken (``None``: no limit).

    Raises:
        InvalidLabelError: The value breaks a rule of the module docstring.
    """
    values = value if isinstance(value, list | tuple) else [value]
    if not values:
        raise InvalidLabelError(f"{field}value: must not be an empty list", "malformed")
    if max_values is not None and len(values) > max_values:
        raise InvalidLabelError(
            f"{field}value: {len(values):,} values, more than the limit of {max_values}", "too_many"
        )
    return tuple(_value(field, each) for each in values)


def _value(field: str, value: Any) -> float:
    """One true value, by the target's rule: a finite JSON number in ``TARGET_DOMAIN``."""
    if isinstance(value, list | tuple):
        message = f"{field}value: must be a number or a flat list of numbers, got a nested list"
        raise InvalidLabelError(message, "not_a_number")
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        message = (
            f"{field}value: must be a JSON number, got {JSON_TYPES.get(type(value), type(value).__name__)}"
        )
        raise InvalidLabelError(message, "not_a_number")
    rule = TARGET_DOMAIN.violation(value)
    if rule is not None:
        reason = "out_of_range" if rule.startswith("must be in") else "not_a_number"
        raise InvalidLabelError(
            f"{field}value: {rule} ({TARGET}, {TARGET_UNIT}; the data set records 50 or more as "
            f"{TARGET_CENSORED_AT:g})",
            reason,
        )
    return float(value)
