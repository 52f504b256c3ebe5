"""An always-valid test of which model prices houses better: a confidence sequence on the MAE difference.

A fixed-sample test (a t-test at 1,000 labels) is valid only if it is looked at once; checking it after every
batch of labels and stopping at the first "significant" result wins a false winner far more often than its
level says. A *confidence sequence* is an interval that holds at every sample size at once, so it may be read
after every batch of labels, as often as one likes, and stopped at any time.

This is the asymptotic confidence sequence of Waudby-Smith, Arbour, Sinha, Kennedy and Ramdas (2023,
"Time-uniform central limit theory and asymptotic confidence sequences", the normal-mixture boundary of
Robbins, standardised by the running standard deviation), on the differences ``d_i = |error of the champion|
- |error of the challenger|`` (in USD 1000s; positive: the challenger is better). Its mean is the difference
in MAE. After ``t`` differences with mean ``m`` and standard deviation ``s``::

    m ± s * sqrt(2 (t r + 1) / (t² r) * log(sqrt(t r + 1) / alpha))

``r`` (rho squared) only sets where the interval is tightest, the planned size ``t*`` fixed before any data
is seen: ``r = (-2 log alpha + log(1 - 2 log alpha)) / t*``. The interval reported is the intersection of
these over every sample size from the 30th difference on (:func:`running_interval`): still valid, and it
never widens, so a verdict once reached stays, however often the test is read.

- **Paired** (a shadow: both models priced the same house): ``d_i`` per house, the strongest design.
- **Unpaired** (an A/B test: each house priced by one arm): the i-th labelled error of one arm is paired with
  the i-th of the other in arrival order. Both are independent draws from their arms, so the differences are
  independent with mean MAE(champion) - MAE(challenger); labels of the busier arm wait for a partner.

The decision: the challenger **wins** when the interval lies above zero, the **champion** when it lies below,
**no difference** when it lies inside ``±margin`` (a difference too small to matter), otherwise **keep
going**, with the number of labels that would settle it if the difference and spread stay as they are.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

MIN_PAIRS = 30
"""Differences needed before the first interval: the boundary rests on a normal approximation."""

CHALLENGER = "challenger"
CHAMPION = "champion"
NO_DIFFERENCE = "no difference"
KEEP_GOING = "keep going"


@dataclass(frozen=True)
class Decision:
    """Where an experiment stands after ``pairs`` differences.

    Attributes:
        verdict: ``challenger`` or ``champion`` (the winner), ``no difference`` or ``keep going``.
        pairs: Differences used (labelled houses for a shadow, matched pairs of labels for an A/B test).
        mae_champion: The champion's MAE on those labels (USD 1000s).
        mae_challenger: The challenger's MAE on those labels.
        difference: MAE(champion) - MAE(challenger); positive means the challenger prices better.
        low: Lower end of the always-valid interval for ``difference``.
        high: Upper end.
        relative: ``difference`` as a share of the champion's MAE.
        labels_needed: More differences that would settle it at the current estimates (0 once decided;
            ``None`` when the estimates cannot tell, for instance no spread yet).
    """

    verdict: str
    pairs: int
    mae_champion: float
    mae_challenger: float
    difference: float
    low: float
    high: float
    relative: float
    labels_needed: int | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict."""
        return asdict(self)


def rho_squared(alpha: float, planned: int) -> float:
    """The mixture's tuning: makes the interval tightest after ``planned`` differences."""
    return (-2 * math.log(alpha) + math.log(1 - 2 * math.log(alpha))) / planned


def half_width(pairs: Any, spread: Any, alpha: float, planned: int) -> Any:
    """The interval's half-width after ``pairs`` differences of standard deviation ``spread``.

    Both may be arrays (one width per sample size); fewer than two differences give no interval (inf).
    """
    count = np.asarray(pairs, dtype=float)
    r2 = rho_squared(alpha, planned)
    grown = count * r2 + 1
    with np.errstate(divide="ignore", invalid="ignore"):
        width = spread * np.sqrt(2 * grown / (count**2 * r2) * np.log(np.sqrt(grown) / alpha))
    width = np.where(count < 2, np.inf, width)
    return float(width) if width.ndim == 0 else width


def running_interval(differences: np.ndarray, alpha: float, planned: int) -> tuple[float, float]:
    """The intersection of the intervals after each difference from the :data:`MIN_PAIRS`-th on.

    Every one of them holds at once (that is the guarantee), so their intersection holds too; it never
    widens, so a verdict once reached stays. Before ``MIN_PAIRS`` the normal approximation is not trusted.
    """
    if len(differences) < MIN_PAIRS:
        return -math.inf, math.inf
    counts = np.arange(1, len(differences) + 1, dtype=float)
    means = np.cumsum(differences) / counts
    # Running sample variance from running sums; clipped at 0 against rounding.
    squares = np.cumsum(differences**2)
    with np.errstate(divide="ignore", invalid="ignore"):
        variances = np.clip((squares - counts * means**2) / (counts - 1), 0, None)
    widths = half_width(counts, np.sqrt(variances), alpha, planned)
    start = MIN_PAIRS - 1
    return float(np.max(means[start:] - widths[start:])), float(np.min(means[start:] + widths[start:]))


def decide(
    champion_errors: np.ndarray,
    challenger_errors: np.ndarray,
    *,
    paired: bool,
    alpha: float = 0.05,
    margin: float = 0.02,
    planned: int = 1000,
) -> Decision:
    """Decide from the absolute errors of both models.

    Args:
        champion_errors: The champion's errors (truth - prediction, USD 1000s), in arrival order.
        challenger_errors: The challenger's errors; for ``paired``, on the same houses in the same order.
        paired: ``True`` for a shadow (one difference per house), ``False`` for an A/B test.
        alpha: Probability that the interval ever misses the true difference (false winner at most ``alpha``).
        margin: Differences smaller than this share of the champion's MAE count as no difference.
        planned: Where the interval is tightest (differences); a rough plan is enough, any value is valid.

    Returns:
        The decision.

    Raises:
        ValueError: Paired errors of different lengths, or a parameter out of range.
    """
    if not 0 < alpha < 1 or margin < 0 or planned < 1:
        raise ValueError(f"need 0 < alpha < 1, margin >= 0, planned >= 1 (got {alpha}, {margin}, {planned})")
    first = np.abs(np.asarray(champion_errors, dtype=float))
    second = np.abs(np.asarray(challenger_errors, dtype=float))
    if paired and len(first) != len(second):
        raise ValueError(f"paired errors must match: {len(first)} champion vs {len(second)} challenger")
    pairs = min(len(first), len(second))
    first, second = first[:pairs], second[:pairs]
    differences = first - second
    mae_champion = float(first.mean()) if pairs else math.nan
    mae_challenger = float(second.mean()) if pairs else math.nan
    difference = float(differences.mean()) if pairs else 0.0
    spread = float(differences.std(ddof=1)) if pairs > 1 else math.nan
    low, high = running_interval(differences, alpha, planned)
    tolerance = margin * mae_champion if pairs else math.nan

    if low > 0:
        verdict = CHALLENGER
    elif high < 0:
        verdict = CHAMPION
    elif -tolerance < low and high < tolerance:
        verdict = NO_DIFFERENCE
    else:
        verdict = KEEP_GOING
    needed = (
        0 if verdict != KEEP_GOING else _labels_needed(pairs, difference, spread, tolerance, alpha, planned)
    )
    return Decision(
        verdict=verdict,
        pairs=pairs,
        mae_champion=mae_champion,
        mae_challenger=mae_challenger,
        difference=difference,
        low=low,
        high=high,
        relative=difference / mae_champion if pairs and mae_champion > 0 else math.nan,
        labels_needed=needed,
    )


def _labels_needed(
    pairs: int, difference: float, spread: float, tolerance: float, alpha: float, planned: int
) -> int | None:
    """Further labels until the interval excludes 0 (or fits in ``±tolerance``), the estimates fixed."""
    if not math.isfinite(spread) or spread <= 0:
        return None
    # Excluding zero needs width < |difference|; fitting in the margin needs width < tolerance - |difference|.
    target = max(abs(difference), tolerance - abs(difference))
    if target <= 0:
        return None
    upper = max(pairs, 2)
    while half_width(upper, spread, alpha, planned) >= target:
        upper *= 2
        if upper > 10**9:
            return None
    lower = max(pairs, 2)
    while lower < upper:  # the width falls with the count: bisect for the first count below the target
        middle = (lower + upper) // 2
        if half_width(middle, spread, alpha, planned) < target:
            upper = middle
        else:
            lower = middle + 1
    return max(upper - pairs, 0)
