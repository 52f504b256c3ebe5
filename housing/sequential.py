"""An always-valid test of which model prices houses better: a confidence sequence on the MAE difference.

A fixed-sample test (a t-test at 1,000 labels) is valid only if it is looked at once; checking it after every
batch of labels and stopping at the first "significant" result wins a false winner far more often than its
level says. A *confidence sequence* is an interval that holds at every sample size at once, so it may be read
after every batch of labels, as often as one likes, and stopped at any time.

This is the asymptotic confidence sequence of Waudby-Smith, Arbour, Sinha, Kennedy and Ramdas (2023,
"Time-uniform central limit theory and asymptotic confidence sequences") with the one-sided normal-mixture
boundary of Howard, Ramdas, McAuliffe and Sekhon (2021, "Time-uniform, nonparametric, nonasymptotic confidence
sequences", the half-normal mixture), standardised by the running standard deviation. It runs on the
differences ``d_i = |error of the champion| - |error of the challenger|`` (USD 1000s; positive: the
challenger is better). After ``t`` differences with mean ``m`` and standard deviation ``s``, each end is
``m ∓ s * u * sqrt(t + rho) / t``, where ``u`` solves ``u²/2 + log Φ(u) = log(1/a) + log((t + rho) / 4rho)/2``
for that end's error ``a``; ``rho`` only sets where the interval is tightest, a planned size fixed before any
data is seen. The interval reported is the intersection of these over every sample size from the 30th
difference on (:func:`running_interval`): still valid, and it never widens, so a verdict once reached stays.

Three choices make it decide sooner than a plain test of the MAE, each standard in online experiments:

- **Capped errors.** House-price errors are spread out (standard deviation 2.6 against an MAE of 2.1, a few
  errors above 20): a handful of houses drown a 10% difference. Each absolute error is capped at the 95th
  percentile of the first 100 labels of each arm, pooled (:data:`CAP_QUANTILE`, :data:`CAP_LABELS`); the cap
  is then fixed, so every later look tests the same quantity. It is set from both arms alike, so two equal
  models stay equal under it. The test is on the capped MAE; the plain MAEs are reported beside it.
- **The error spent where it costs.** Of the false-winner bound ``alpha``, 80% guards against promoting a
  challenger that is not better (the lower end), 20% against naming the champion wrongly, which only ends an
  experiment early (:data:`CHALLENGER_SHARE`). Together they still bound any false winner by ``alpha``.
- **Paired** when it can be (a shadow: both models priced the same house), one difference per house. An A/B
  test is **unpaired**: the i-th labelled error of one arm is paired with the i-th of the other in arrival
  order; both are independent draws from their arms, so the differences are independent with mean MAE
  (champion) - MAE(challenger); labels of the busier arm wait for a partner.

The decision: the challenger **wins** when the interval lies above zero, the **champion** when it lies below,
**no difference** when it lies inside ``±margin`` (a difference too small to matter), otherwise **keep
going**, with the number of labels that would settle it if the difference and spread stay as they are.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np

MIN_PAIRS = 30
"""Differences needed before the first interval: the boundary rests on a normal approximation."""
CAP_QUANTILE = 0.95
"""Absolute errors are capped at this quantile of the first :data:`CAP_LABELS` labels of each arm."""
CAP_LABELS = 100
"""Labels per arm that set the cap; no verdict before it is set."""
CHALLENGER_SHARE = 0.8
"""Share of ``alpha`` spent against a false challenger win; the rest against a false champion win."""

CHALLENGER = "challenger"
CHAMPION = "champion"
NO_DIFFERENCE = "no difference"
KEEP_GOING = "keep going"

Cap = float | str | None
"""``"auto"`` (:data:`CAP_QUANTILE` of the first labels), a cap in USD 1000s, or ``None``: no cap."""


@dataclass(frozen=True)
class Decision:
    """Where an experiment stands after ``pairs`` differences.

    Attributes:
        verdict: ``challenger`` or ``champion`` (the winner), ``no difference`` or ``keep going``.
        pairs: Differences used (labelled houses for a shadow, matched pairs of labels for an A/B test).
        mae_champion: The champion's MAE on those labels (USD 1000s), uncapped.
        mae_challenger: The challenger's MAE on those labels, uncapped.
        cap: The cap on absolute errors (USD 1000s), ``None`` for none.
        difference: Capped MAE(champion) - capped MAE(challenger): what the test is on; positive means the
            challenger prices better.
        low: Lower end of the always-valid interval for ``difference``.
        high: Upper end.
        relative: ``difference`` as a share of the champion's capped MAE.
        labels_needed: More differences that would settle it at the current estimates (0 once decided;
            ``None`` when the estimates cannot tell, for instance no spread yet).
    """

    verdict: str
    pairs: int
    mae_champion: float
    mae_challenger: float
    cap: float | None
    difference: float
    low: float
    high: float
    relative: float
    labels_needed: int | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict."""
        return asdict(self)


def mixture_rho(alpha: float, planned: int) -> float:
    """The half-normal mixture's precision that makes the one-sided boundary tightest at ``planned``."""
    level = 2 * math.log(1 / (2 * alpha))
    return planned / (level + math.log(1 + level))


def _unit_width(count: int, alpha: float, planned: int) -> float:
    """One end's distance from the mean of ``count`` unit-variance differences, crossed w.p. ``alpha``."""
    rho = mixture_rho(alpha, planned)
    level = math.log(1 / alpha) + 0.5 * math.log((count + rho) / (4 * rho))
    # Solve u²/2 + log Φ(u) = level by fixed point from u = sqrt(2 level): Φ(u) is near 1 there, so it
    # contracts fast (20 rounds: within 1e-12 for alpha <= 0.25).
    u = math.sqrt(2 * max(level, 0.0))
    for _ in range(20):
        u = math.sqrt(2 * max(level - math.log(0.5 * math.erfc(-u / math.sqrt(2))), 0.0))
    return u * math.sqrt(count + rho) / count


@lru_cache(maxsize=64)
def _unit_widths(alpha: float, planned: int, size: int) -> np.ndarray:
    """:func:`_unit_width` after 1..``size`` differences: the same in every experiment, so kept."""
    return np.array([_unit_width(count, alpha, planned) for count in range(1, size + 1)])


def half_width(pairs: int, spread: float, alpha: float, planned: int) -> float:
    """One end's distance from the mean after ``pairs`` differences of standard deviation ``spread``.

    ``alpha`` is that end's own error: the chance that it ever crosses the true difference. Fewer than two
    differences give no interval (inf).
    """
    return math.inf if pairs < 2 else spread * _unit_width(pairs, alpha, planned)


def running_interval(
    differences: np.ndarray, alphas: tuple[float, float], planned: int
) -> tuple[float, float]:
    """The intersection of the intervals after each difference from the :data:`MIN_PAIRS`-th on.

    Args:
        differences: The differences in arrival order.
        alphas: The lower end's error and the upper end's.
        planned: Where the interval is tightest.

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
        spreads = np.sqrt(np.clip((squares - counts * means**2) / (counts - 1), 0, None))
    start, size = MIN_PAIRS - 1, 1 << (len(differences) - 1).bit_length()  # a power of two: few kept
    lows = means - spreads * _unit_widths(alphas[0], planned, size)[: len(differences)]
    highs = means + spreads * _unit_widths(alphas[1], planned, size)[: len(differences)]
    return float(np.max(lows[start:])), float(np.min(highs[start:]))


def error_cap(champion: np.ndarray, challenger: np.ndarray, cap: Cap) -> float | None:
    """The cap on absolute errors (``None``: none).

    ``cap`` itself, or for ``"auto"`` the pooled :data:`CAP_QUANTILE` of the first :data:`CAP_LABELS`
    absolute errors of each arm (of all there are, while there are fewer).

    Raises:
        ValueError: ``cap`` is neither ``"auto"``, ``None`` nor a positive number.
    """
    if cap is None:
        return None
    if cap == "auto":
        first = np.concatenate([champion[:CAP_LABELS], challenger[:CAP_LABELS]])
        return float(np.quantile(first, CAP_QUANTILE)) if len(first) else None
    if isinstance(cap, str) or not cap > 0:
        raise ValueError(f"cap must be 'auto', None or a positive number of USD 1000s (got {cap!r})")
    return float(cap)


def decide(
    champion_errors: np.ndarray,
    challenger_errors: np.ndarray,
    *,
    paired: bool,
    alpha: float = 0.05,
    margin: float = 0.02,
    planned: int = 1000,
    cap: Cap = "auto",
    challenger_share: float = CHALLENGER_SHARE,
) -> Decision:
    """Decide from the errors of both models.

    Args:
        champion_errors: The champion's errors (truth - prediction, USD 1000s), in arrival order.
        challenger_errors: The challenger's errors; for ``paired``, on the same houses in the same order.
        paired: ``True`` for a shadow (one difference per house), ``False`` for an A/B test.
        alpha: Probability that the interval ever misses the true difference (false winner at most
            ``alpha``; at most 0.25).
        margin: Differences smaller than this share of the champion's MAE count as no difference.
        planned: Where the interval is tightest (differences); a rough plan is enough, any value is valid.
        cap: The cap on absolute errors (see :data:`Cap`); with ``"auto"`` no verdict before
            :data:`CAP_LABELS` labels per arm.
        challenger_share: Share of ``alpha`` against a false challenger win (0.5: symmetric).

    Returns:
        The decision.

    Raises:
        ValueError: Paired errors of different lengths, or a parameter out of range.
    """
    if not 0 < alpha <= 0.25 or margin < 0 or planned < 1 or not 0 < challenger_share < 1:
        raise ValueError(
            "need 0 < alpha <= 0.25, margin >= 0, planned >= 1, 0 < challenger_share < 1 "
            f"(got {alpha}, {margin}, {planned}, {challenger_share})"
        )
    first = np.abs(np.asarray(champion_errors, dtype=float))
    second = np.abs(np.asarray(challenger_errors, dtype=float))
    if paired and len(first) != len(second):
        raise ValueError(f"paired errors must match: {len(first)} champion vs {len(second)} challenger")
    pairs = min(len(first), len(second))
    first, second = first[:pairs], second[:pairs]
    limit = error_cap(first, second, cap)
    capped = (first, second) if limit is None else (np.minimum(first, limit), np.minimum(second, limit))
    differences = capped[0] - capped[1]
    alphas = (challenger_share * alpha, (1 - challenger_share) * alpha)
    mae_capped = float(capped[0].mean()) if pairs else math.nan
    difference = float(differences.mean()) if pairs else 0.0
    spread = float(differences.std(ddof=1)) if pairs > 1 else math.nan
    low, high = running_interval(differences, alphas, planned)
    tolerance = margin * mae_capped if pairs else math.nan

    if cap == "auto" and pairs < CAP_LABELS:
        verdict = KEEP_GOING  # the cap is not settled yet
    elif low > 0:
        verdict = CHALLENGER
    elif high < 0:
        verdict = CHAMPION
    elif -tolerance < low and high < tolerance:
        verdict = NO_DIFFERENCE
    else:
        verdict = KEEP_GOING
    needed = None
    if verdict == KEEP_GOING:
        needed = _labels_needed(pairs, difference, spread, tolerance, alphas, planned)
        if cap == "auto" and needed is not None:
            needed = max(needed, CAP_LABELS - pairs)
    return Decision(
        verdict=verdict,
        pairs=pairs,
        mae_champion=float(first.mean()) if pairs else math.nan,
        mae_challenger=float(second.mean()) if pairs else math.nan,
        cap=limit,
        difference=difference,
        low=low,
        high=high,
        relative=difference / mae_capped if pairs and mae_capped > 0 else math.nan,
        labels_needed=0 if verdict != KEEP_GOING else needed,
    )


def _labels_needed(
    pairs: int,
    difference: float,
    spread: float,
    tolerance: float,
    alphas: tuple[float, float],
    planned: int,
) -> int | None:
    """Further labels until the interval excludes 0 (or fits in ``±tolerance``), the estimates fixed."""
    if not math.isfinite(spread) or spread <= 0:
        return None

    def settled(count: int) -> bool:
        low = difference - half_width(count, spread, alphas[0], planned)
        high = difference + half_width(count, spread, alphas[1], planned)
        return low > 0 or high < 0 or (-tolerance < low and high < tolerance)

    # The widths fall with the count: double until settled, then bisect for the first settled count.
    upper = max(pairs, 2)
    while not settled(upper):
        upper *= 2
        if upper > 10**9:
            return None
    lower = max(pairs, 2)
    while lower < upper:
        middle = (lower + upper) // 2
        if settled(middle):
            upper = middle
        else:
            lower = middle + 1
    return max(upper - pairs, 0)
