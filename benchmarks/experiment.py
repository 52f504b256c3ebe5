"""``./dev bench experiment``: how often the test of ``housing experiment`` errs, and how fast it decides.

The errors are bootstrapped from the shipped model's out-of-fold residuals on the bundled data (5-fold
cross-validation of the shipped candidate, ``gbr_log``; USD 1000s), so their skew and tails are the real ones.
Every experiment is analysed after each batch of labels (default 100), as an impatient analyst would.

- **A/A**: both arms draw from the same residuals. Any winner is false; the test allows ``alpha`` (5%).
- **A/B power**: the challenger's errors are the residuals times 0.9 (an MAE 10% lower), drawn independently.
- **Shadow power**: both models price the same house. The challenger's error on a house mixes the champion's
  error there with an independent draw, at the correlation measured between two real candidates' out-of-fold
  residuals (``gbr_log`` and ``gbr``), scaled to an MAE 10% lower; the paired A/A scales it to the same MAE.
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from housing.experiment_simulation import Outcome, out_of_fold_residuals, paired, simulate, unpaired
from housing.sequential import CHALLENGER, CHAMPION


def summary(name: str, outcomes: list[Outcome], want: str, maximum: int) -> str:
    """One line: share of experiments that ended in ``want``, and the labels they took."""
    hits = sorted(outcome.pairs for outcome in outcomes if outcome.verdict == want)
    share = len(hits) / len(outcomes)
    median = str(hits[len(hits) // 2]) if hits else "-"
    # Labels per arm by which 90% of all experiments had reached this verdict (if they did).
    p90 = str(hits[math.ceil(0.9 * len(outcomes)) - 1]) if share >= 0.9 else "-"
    return f"| {name} | {want} | {share:.1%} | {median} | {p90} | {maximum} | {len(outcomes)} |"


def main(argv: list[str] | None = None) -> int:
    """Simulate A/A and A/B experiments and print how often the test decides, and decides wrongly."""
    parser = argparse.ArgumentParser(prog="./dev bench experiment", description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=200, help="experiments per row (default 200)")
    parser.add_argument("--step", type=int, default=100, help="labels per arm between looks (default 100)")
    parser.add_argument("--alpha", type=float, default=0.05, help="false-winner bound (default 0.05)")
    args = parser.parse_args(argv)

    residuals = out_of_fold_residuals("gbr_log")
    correlation = float(np.corrcoef(residuals, out_of_fold_residuals("gbr"))[0, 1])
    print(
        f"out-of-fold residuals: {len(residuals)} houses, MAE {np.abs(residuals).mean():.3f} (USD 1000s); "
        f"correlation of two candidates' residuals {correlation:.2f}; looks every {args.step} labels"
    )
    settings = {"experiments": args.experiments, "step": args.step, "alpha": args.alpha}
    rows = [
        ("A/A (unpaired)", False, unpaired(residuals, 0.0), 3000, CHALLENGER + "|" + CHAMPION),
        ("A/A (paired)", True, paired(residuals, correlation, 0.0), 600, CHALLENGER + "|" + CHAMPION),
        ("A/B, challenger MAE -10%", False, unpaired(residuals, 0.10), 3000, CHALLENGER),
        ("A/B, challenger MAE -10%, longer", False, unpaired(residuals, 0.10), 8000, CHALLENGER),
        ("shadow, challenger MAE -10%", True, paired(residuals, correlation, 0.10), 600, CHALLENGER),
    ]
    print(
        "| experiment | verdict counted | share | median labels per arm | 90% by | max labels | experiments |"
    )
    print("|---|---|---|---|---|---|---|")
    for seed, (name, is_paired, draw, maximum, want) in enumerate(rows):
        outcomes = simulate(draw, paired=is_paired, maximum=maximum, seed=seed, **settings)
        if "|" in want:  # any winner is false
            outcomes = [Outcome("false winner" if o.verdict in want.split("|") else o.verdict, o.pairs)
                        for o in outcomes]  # fmt: skip
            want = "false winner"
        print(summary(name, outcomes, want, maximum))
    return 0
