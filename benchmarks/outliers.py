"""Outlier scores per house: how many synthetic houses :mod:`model.outliers` flags, and how many real ones.

``./dev bench outliers`` (about 15 s on one core):

1. The bundled data is split at random into 400 training houses and 106 held-out ones, ``--splits`` times.
   On each split the outlier density is fitted on the training houses as ``housing train`` fits it (number
   of components by cross-validated likelihood, threshold at the 95th percentile of cross-fitted NLLs).
2. Per split, the share flagged of:

   - ``held_out``: the 106 real houses the density never saw, i.e. the false-positive rate (target <= 5%);
   - ``recombined``: 2,000 synthetic houses, each feature drawn from a different random training house, so
     every value is in range and the combination never seen (the issue's figure: target >= 90%);
   - ``swap_4``: a random training house with ``crim``, ``nox``, ``rm`` and ``lstat`` each taken from
     another random house (harder: 8 of 12 features still agree);
   - ``swap_rm_lstat``: only ``rm`` and ``lstat`` (correlated, -0.6) taken from other houses (harder still:
     many such pairs are plausible houses, so no detector should flag them all);
   - ``training``: the training houses themselves (the density's own rows, for reference).

3. The same with one Gaussian component (a Mahalanobis distance), as the baseline the mixture must beat.

Mean and worst split are printed and saved to ``benchmarks/results/outliers.json``, with the time to score
one window of 200 rows (the detector scores each tested window).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results" / "outliers.json"
TRAIN_ROWS = 400
SYNTHETIC = 2000
SETS = ("held_out", "recombined", "swap_4", "swap_rm_lstat", "training")


def split_figures(
    x: np.ndarray, features: list[str], seed: int, components: Sequence[int]
) -> tuple[dict[str, float], Any]:
    """Shares flagged on one random split (see the module docstring), and the fitted detector."""
    from model import outliers

    order = np.random.default_rng(seed).permutation(len(x))
    train, held = x[order[:TRAIN_ROWS]], x[order[TRAIN_ROWS:]]
    detector = outliers.OutlierDetector(outliers.fit(train, features, seed=seed, components=components))
    index = [features.index(name) for name in ("crim", "nox", "rm", "lstat")]
    sets = {
        "held_out": held,
        "recombined": outliers.recombined(train, SYNTHETIC, seed),
        "swap_4": outliers.recombined(train, SYNTHETIC, seed, columns=index),
        "swap_rm_lstat": outliers.recombined(train, SYNTHETIC, seed, columns=index[2:]),
        "training": train,
    }
    shares = {name: float(detector.flags(rows).mean()) for name, rows in sets.items()}
    return {**shares, "components": float(len(detector._constants))}, detector


def summary(per_split: list[dict[str, float]]) -> dict[str, Any]:
    """Mean and worst split per set (worst: the highest false-positive rate, the lowest detection rate)."""
    figures: dict[str, Any] = {}
    for name in (*SETS, "components"):
        values = np.array([split[name] for split in per_split])
        worst = values.max() if name in ("held_out", "training") else values.min()
        figures[name] = {"mean": float(values.mean()), "worst": float(worst), "per_split": values.tolist()}
    return figures


def run(splits: int) -> dict[str, Any]:
    """Fit and score on ``splits`` random splits, with the mixture and with one Gaussian."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from model import outliers
    from model.dataset import load_dataset
    from model.schema import DEFAULT_FEATURES

    features = list(DEFAULT_FEATURES)
    x = load_dataset()[features].to_numpy(float)
    figures: dict[str, Any] = {
        "splits": splits,
        "train_rows": TRAIN_ROWS,
        "held_out_rows": len(x) - TRAIN_ROWS,
    }
    begin = time.perf_counter()
    detector = None
    for label, components in (("mixture", outliers.COMPONENTS), ("one_gaussian", (1,))):
        per_split = []
        for seed in range(splits):
            shares, fitted = split_figures(x, features, seed, components)
            per_split.append(shares)
            detector = detector or fitted
        figures[label] = summary(per_split)
    figures["seconds"] = time.perf_counter() - begin
    assert detector is not None
    window = outliers.recombined(x, 200, 0)
    timings = []
    for _ in range(200):
        start = time.perf_counter()
        detector.flags(window)
        timings.append(time.perf_counter() - start)
    figures["score_200_rows_ms_p50"] = 1000 * float(np.median(timings))
    return figures


def report(figures: dict[str, Any]) -> str:
    """The figures as a table."""
    lines = [
        f"{figures['splits']} random splits: {figures['train_rows']} training houses, "
        f"{figures['held_out_rows']} held-out; {SYNTHETIC} synthetic houses per set and split",
        f"{'detector':<13} {'set':<14} {'flagged mean':>12} {'worst split':>11}",
    ]
    for label in ("mixture", "one_gaussian"):
        for name in SETS:
            scored = figures[label][name]
            lines.append(f"{label:<13} {name:<14} {scored['mean']:>12.1%} {scored['worst']:>11.1%}")
        components = figures[label]["components"]["per_split"]
        lines.append(f"{label:<13} components per split: {[int(count) for count in components]}")
    lines.append(
        f"targets: recombined >= 90%, held_out <= 5%; scoring 200 rows: "
        f"{figures['score_200_rows_ms_p50']:.2f} ms; {figures['seconds']:.0f} s"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print and save the figures."""
    parser = argparse.ArgumentParser(prog="./dev bench outliers", description=__doc__.split("\n")[0])
    parser.add_argument("--splits", type=int, default=30, help="random train/held-out splits")
    args = parser.parse_args(argv)
    figures = run(args.splits)
    print(report(figures))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
    return 0
