"""The feature schema: the one place that names the model's inputs, their order, units and valid domains.

Training, the transformer's validation, the detector's reference and the notebooks all import this module;
nothing else spells the feature list out again.

The column ``b`` is defined as 1000(Bk - 0.63)^2, where Bk is the proportion of Black residents by town. It
encodes an assumption that racial self-segregation raised house prices; scikit-learn removed ``load_boston``
for this reason. The default model does not use it (:data:`DEFAULT_FEATURES`); it stays in the schema so that
the data can be validated and so that its cost can be measured.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

Kind = Literal["continuous", "integer", "binary"]


@dataclass(frozen=True)
class Feature:
    """One input of the model.

    Attributes:
        name: Column name in the data set and field name in the JSON payload.
        description: What the value measures.
        unit: Unit of the value.
        kind: ``continuous``, ``integer`` (a whole number) or ``binary`` (0 or 1).
        lower: Smallest valid value.
        upper: Largest valid value (``math.inf`` for none).
        lower_inclusive: Whether ``lower`` itself is valid.
        upper_inclusive: Whether ``upper`` itself is valid.
    """

    name: str
    description: str
    unit: str
    kind: Kind = "continuous"
    lower: float = 0.0
    upper: float = math.inf
    lower_inclusive: bool = True
    upper_inclusive: bool = True

    @property
    def domain(self) -> str:
        """The valid domain in interval notation, e.g. ``[0, 100]`` or ``{0, 1}``."""
        if self.kind == "binary":
            return "{0, 1}"
        left = "[" if self.lower_inclusive else "("
        right = "]" if self.upper_inclusive and math.isfinite(self.upper) else ")"
        upper = "inf" if math.isinf(self.upper) else f"{self.upper:g}"
        return f"{left}{self.lower:g}, {upper}{right}"

    def violation(self, value: Any) -> str | None:
        """Check one value against this feature's type and domain.

        Args:
            value: The value as received (a JSON number, a numpy scalar, ...).

        Returns:
            ``None`` when the value is valid, otherwise the rule it breaks, e.g. ``"must be in [0, 100]"``.
        """
        if isinstance(value, bool) or (
            not isinstance(value, int | float) and not hasattr(value, "__float__")
        ):
            return f"must be a number, got {type(value).__name__}"
        try:
            number = float(value)
        except OverflowError:  # an integer too large for a float (JSON allows any number of digits)
            return f"must be a finite number, got an integer of {len(str(abs(int(value)))):,} digits"
        if math.isnan(number) or math.isinf(number):
            return "must be a finite number, got " + repr(number)
        if self.kind == "binary":
            return None if number in (0.0, 1.0) else f"must be 0 or 1, got {number:g}"
        if self.kind == "integer" and not number.is_integer():
            return f"must be a whole number, got {number:g}"
        too_low = number < self.lower or (number == self.lower and not self.lower_inclusive)
        too_high = number > self.upper or (number == self.upper and not self.upper_inclusive)
        if too_low or too_high:
            return f"must be in {self.domain}, got {number:g}"
        return None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe description of the feature (for model metadata and V2 ``parameters``)."""
        data = asdict(self)
        data["upper"] = None if math.isinf(self.upper) else self.upper
        data["domain"] = self.domain
        return data


FEATURES: tuple[Feature, ...] = (
    Feature("crim", "Per capita crime rate by town", "crimes per capita"),
    Feature("zn", "Residential land zoned for lots over 25,000 sq.ft.", "percent", upper=100),
    Feature("indus", "Non-retail business acres per town", "percent", upper=100),
    Feature("chas", "Tract bounds the Charles River", "1 if yes, else 0", kind="binary", upper=1),
    Feature(
        "nox",
        "Nitric oxides concentration",
        "parts per 10 million",
        upper=1,
        lower_inclusive=False,
        upper_inclusive=False,
    ),
    Feature("rm", "Average number of rooms per dwelling", "rooms", lower_inclusive=False),
    Feature("age", "Owner-occupied units built before 1940", "percent", upper=100),
    Feature(
        "dis", "Weighted distance to five Boston employment centres", "distance index", lower_inclusive=False
    ),
    Feature("rad", "Index of accessibility to radial highways", "index", kind="integer", lower=1),
    Feature("tax", "Full-value property-tax rate", "USD per 10,000 USD"),
    Feature("ptratio", "Pupil-teacher ratio by town", "pupils per teacher", lower_inclusive=False),
    Feature(
        "b",
        "1000(Bk - 0.63)^2, Bk the proportion of Black residents by town (problematic; unused by default)",
        "index",
        upper=396.9,
    ),
    Feature("lstat", "Lower status of the population", "percent", upper=100),
)
"""All 13 inputs, in the data set's column order."""

FEATURES_BY_NAME: dict[str, Feature] = {feature.name: feature for feature in FEATURES}

ALL_FEATURES: tuple[str, ...] = tuple(feature.name for feature in FEATURES)
"""The names of all 13 inputs, in the data set's column order."""

DEFAULT_FEATURES: tuple[str, ...] = tuple(name for name in ALL_FEATURES if name != "b")
"""The inputs of the default model: every feature but ``b`` (see the module docstring)."""

TARGET = "medv"
TARGET_DESCRIPTION = "Median value of owner-occupied homes"
TARGET_UNIT = "USD 1000s"
TARGET_CENSORED_AT = 50.0
"""The data set records every value of 50 or more as 50.0."""

TARGET_DOMAIN = Feature(
    TARGET, TARGET_DESCRIPTION, TARGET_UNIT, upper=TARGET_CENSORED_AT, lower_inclusive=False
)
"""The target's valid values, (0, 50] as the data set records them: ground truth outside is refused
(the detector's ``/feedback``), as a price of 0 or less is impossible and 50 is the censoring value."""


def select(names: Iterable[str]) -> tuple[Feature, ...]:
    """The features named, in the order given.

    Args:
        names: Feature names.

    Returns:
        The :class:`Feature` objects.

    Raises:
        ValueError: A name is not a feature of the schema, or appears twice.
    """
    names = tuple(names)
    unknown = [name for name in names if name not in FEATURES_BY_NAME]
    if unknown:
        raise ValueError(f"unknown feature(s) {unknown}; known: {list(ALL_FEATURES)}")
    if len(set(names)) != len(names):
        raise ValueError(f"feature list has duplicates: {list(names)}")
    return tuple(FEATURES_BY_NAME[name] for name in names)


def first_violations(rows: Sequence[Sequence[Any]], names: Sequence[str], limit: int = 5) -> list[str]:
    """Check a table of values against the schema and describe the first problems found.

    Args:
        rows: Rows of values, one column per name in ``names``.
        names: The feature names of the columns.
        limit: How many problems to report at most.

    Returns:
        Messages like ``"row 3, column 'nox': must be in (0, 1), got 1.2"``; empty when every value is valid.
    """
    features = select(names)
    problems: list[str] = []
    for index, row in enumerate(rows):
        for feature, value in zip(features, row, strict=True):
            rule = feature.violation(value)
            if rule:
                problems.append(f"row {index}, column {feature.name!r}: {rule}")
                if len(problems) >= limit:
                    return problems
    return problems
