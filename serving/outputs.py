"""Which outputs a request asks for, and at which interval level: shared by the transformer and predictor.

A price's interval is asked for in each protocol's own way (:mod:`model.intervals` holds the names):

- V2 (REST and gRPC): by name in the request's ``outputs`` (the Open Inference Protocol's way to choose
  outputs: KServe's ``RequestedOutput``), ``price_lower`` and ``price_upper`` beside the price, with
  ``parameters.interval_level`` on the request (0.8, 0.9 or 0.95; 0.9 when not given). The answer holds the
  outputs asked for, in the order asked. Without ``outputs`` it is what it always was: the price alone.
- V1: ``{"instances": [...], "parameters": {"interval_level": 0.9}}`` adds ``intervals`` beside
  ``predictions``, one ``{"level", "lower", "upper"}`` per instance.

A bad level or an unknown output name is a 400 (``InvalidInput``) naming the field and the rule. Over gRPC,
KServe's ``InferParameter`` carries booleans, integers and strings only (no doubles, which tritonclient sends
for a Python float), so a level sent as a double is refused with a message that says to send a string
(``"0.9"``); a REST level may be a number or a string.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from kserve import InferOutput, InferRequest
from kserve.errors import InvalidInput

from model.intervals import (
    BOUND_OUTPUTS,
    DEFAULT_LEVEL,
    LEVEL_PARAMETER,
    LOWER_OUTPUT,
    LevelError,
    check_level,
)

INTERVALS = "intervals"
"""The V1 answer's key beside ``predictions``."""


class NoIntervalsError(InvalidInput):
    """Bounds were asked of a model that has none (its artifact was trained before intervals): a 400."""


@dataclass(frozen=True)
class Outputs:
    """What a request asks for.

    Attributes:
        names: The V2 outputs asked for by name, in order; ``None`` when the request names none (V1, or V2
            without ``outputs``: the answer is the price alone, as it always was).
        level: The interval level whose bounds to compute, or ``None`` when no bound is asked for.
    """

    names: tuple[str, ...] | None = None
    level: float | None = None

    @property
    def bounds(self) -> bool:
        """Whether the answer carries bounds."""
        return self.level is not None


PRICE_ONLY = Outputs()


def requested(payload: Any, price: str) -> Outputs:
    """The outputs and level a V1 body or a V2 request asks for.

    Args:
        payload: A V1 body (a dict) or a V2 ``InferRequest`` (REST or gRPC).
        price: The name of the price output on this server (``medv`` on the transformer, ``output-0`` on the
            predictor).

    Raises:
        InvalidInput: An unknown or repeated output name, or a level that is not one of the levels served.
    """
    if isinstance(payload, InferRequest):
        level = _level(payload.parameters)
        if not payload.request_outputs:
            return PRICE_ONLY
        names = tuple(output.name for output in payload.request_outputs)
        known = (price, *BOUND_OUTPUTS)
        for name in names:
            if name not in known:
                raise InvalidInput(
                    f"outputs: unknown output {name!r}; this model's outputs are {', '.join(known)}"
                )
        if len(set(names)) != len(names):
            raise InvalidInput(f"outputs: an output is named twice: {', '.join(names)}")
        wants_bounds = any(name in BOUND_OUTPUTS for name in names)
        return Outputs(names, (level or DEFAULT_LEVEL) if wants_bounds else None)
    parameters = payload.get("parameters") if isinstance(payload, dict) else None
    if parameters is None:
        return PRICE_ONLY
    if not isinstance(parameters, dict):
        raise InvalidInput(f'parameters: must be an object, e.g. {{"{LEVEL_PARAMETER}": {DEFAULT_LEVEL}}}')
    return Outputs(None, _level(parameters))


def _level(parameters: Any) -> float | None:
    """The level in V2 (or V1) ``parameters``, checked; ``None`` when absent."""
    if not parameters or LEVEL_PARAMETER not in parameters:
        return None
    value = parameters[LEVEL_PARAMETER]
    if hasattr(value, "WhichOneof"):  # a gRPC InferParameter
        kind = value.WhichOneof("parameter_choice")
        if kind is None:
            raise InvalidInput(
                f'{LEVEL_PARAMETER}: send it as a string (e.g. "0.9") over gRPC: KServe\'s V2 gRPC '
                "parameters carry no doubles"
            )
        value = getattr(value, kind)
    try:
        return check_level(value)
    except LevelError as error:
        raise InvalidInput(str(error)) from None


def v2_outputs(
    outputs: Outputs,
    price_name: str,
    price: np.ndarray,
    lower: np.ndarray | None,
    upper: np.ndarray | None,
    *,
    binary: bool = False,
) -> list[InferOutput]:
    """The V2 output tensors a request asked for, in its order (the price alone when it named none).

    Args:
        outputs: What the request asked for (see :func:`requested`).
        price_name: The price output's name on this server.
        price: Prices, shape [N].
        lower: Lower bounds at ``outputs.level``, shape [N] (``None`` when no bound was asked for).
        upper: Upper bounds, likewise.
        binary: Send the data as raw bytes (the V2 REST binary extension, as the client asked).
    """
    columns = {price_name: price, LOWER_OUTPUT: lower, BOUND_OUTPUTS[1]: upper}
    result = []
    for name in outputs.names or (price_name,):
        values = np.asarray(columns[name], dtype=np.float64)
        parameters = {LEVEL_PARAMETER: str(outputs.level)} if name in BOUND_OUTPUTS else None
        tensor = InferOutput(name, [len(values)], "FP64", parameters=parameters)
        tensor.set_data_from_numpy(values, binary_data=binary)
        result.append(tensor)
    return result


def v1_intervals(level: float, lower: np.ndarray, upper: np.ndarray) -> list[dict[str, float]]:
    """The V1 answer's ``intervals``: one ``{"level", "lower", "upper"}`` per instance."""
    return [
        {"level": level, "lower": low, "upper": high}
        for low, high in zip(np.asarray(lower).tolist(), np.asarray(upper).tolist(), strict=True)
    ]


def request_outputs(names: Sequence[str]) -> list[Any]:
    """KServe's ``RequestedOutput`` for each name: what a V2 request to a predictor asks for."""
    from kserve.protocol.infer_type import RequestedOutput

    return [RequestedOutput(name) for name in names]
