"""``./dev bench experiment``: how often the test of ``housing experiment`` errs, and how fast it decides.

The errors are bootstrapped from the shipped model's out-of-fold residuals on the bundled data (5-fold
cross-validation of the shipped candidate, ``gbr_log``; USD 1000s), so their skew and tails are the real ones.
Every experiment is analysed after each batch of labels (default 100), as an impatient analyst would, with
the test as ``housing experiment analyze`` runs it (errors capped, alpha split 4:1 against a false challenger
win; :mod:`housing.sequential`) and, for comparison, without those choices.

- **A/A**: both arms draw from the same residuals. Any winner is false; the test allows ``alpha`` (5%).
- **A/B power**: the challenger's errors are the residuals times 0.9 (an MAE 10% lower), drawn independently.
- **Shadow power**: both models price the same house. The challenger's error on a house mixes the champion's
  error there with an independent draw, at the correlation measured between two real candidates' out-of-fold
  residuals (``gbr_log`` and ``gbr``), scaled to an MAE 10% lower; the paired A/A scales it to the same MAE.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

import numpy as np

from housing.experiment_simulation import Draw, Outcome, out_of_fold_residuals, paired, simulate, unpaired
from housing.sequential import CHALLENGER, CHAMPION


def summary(name: str, outcomes: list[Outcome], want: tuple[str, ...], maximum: int) -> str:
    """One line: share of experiments that ended in a verdict of ``want``, and the labels they took."""
    hits = sorted(outcome.pairs for outcome in outcomes if outcome.verdict in want)
    share = len(hits) / len(outcomes)
    median = str(hits[len(hits) // 2]) if hits else "-"
    # Labels per arm by which 90% of all experiments had reached this verdict (if they did).
    p90 = str(hits[math.ceil(0.9 * len(outcomes)) - 1]) if share >= 0.9 else "-"
    counted = " or ".join(want)
    if len(want) > 1:  # an A/A test: any winner is false; the two ends have their own bounds
        each = [sum(o.verdict == verdict for o in outcomes) / len(outcomes) for verdict in want]
        counted = "false winner (" + ", ".join(f"{v} {s:.1%}" for v, s in zip(want, each, strict=True)) + ")"
    return f"| {name} | {counted} | {share:.1%} | {median} | {p90} | {maximum} | {len(outcomes)} |"


def main(argv: list[str] | None = None) -> int:
    """Simulate A/A and A/B experiments and print how often the test decides, and decides wrongly."""
    parser = argparse.ArgumentParser(prog="./dev bench experiment", description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=400, help="experiments per row (default 400)")
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
    either = (CHALLENGER, CHAMPION)
    better, same = unpaired(residuals, 0.10), unpaired(residuals, 0.0)
    plain = {"cap": None, "challenger_share": 0.5}  # the plain MAE, alpha split evenly: the textbook test
    rows: list[tuple[str, bool, Draw, int, tuple[str, ...], dict[str, Any]]] = [
        ("A/A (unpaired)", False, same, 3000, either, {}),
        ("A/A (paired)", True, paired(residuals, correlation, 0.0), 600, either, {}),
        ("A/A (unpaired), plain MAE, alpha split evenly", False, same, 3000, either, plain),
        ("A/B, challenger MAE -10%", False, better, 3000, (CHALLENGER,), {}),
        ("A/B, challenger MAE -10%, alpha split evenly", False, better, 3000, (CHALLENGER,),
         {"challenger_share": 0.5}),
        ("A/B, challenger MAE -10%, plain MAE, alpha split evenly", False, better, 3000, (CHALLENGER,),
         plain),
        ("A/B, challenger MAE -10%, longer", False, better, 8000, (CHALLENGER,), {}),
        ("shadow, challenger MAE -10%", True, paired(residuals, correlation, 0.10), 600, (CHALLENGER,), {}),
    ]  # fmt: skip
    print(
        "| experiment | verdict counted | share | median labels per arm | 90% by | max labels | experiments |"
    )
    print("|---|---|---|---|---|---|---|")
    for seed, (name, is_paired, draw, maximum, want, options) in enumerate(rows):
        outcomes = simulate(draw, paired=is_paired, maximum=maximum, seed=seed, **settings, **options)
        print(summary(name, outcomes, want, maximum), flush=True)
    return 0
