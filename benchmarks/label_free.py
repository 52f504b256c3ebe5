"""Label-free accuracy: how well Direct Loss Estimation (:mod:`model.dle`) tracks the realised error.

``./dev bench label_free`` (under a minute on one core):

1. The bundled data is split into training rows (60 %) and held-out rows (40 %). The shipped candidate
   (``gbr_log``, :data:`model.pipeline.GBR_PARAMS`) is scored by 5x2-fold CV on the training rows and fitted
   on all of them; the loss estimator is fitted on the CV's out-of-fold residuals, as ``housing train`` does.
2. 100 windows of 100 held-out rows are drawn with replacement under a covariate shift growing from none to
   strong: window i draws from the held-out rows with weight ``(1 - a) / n + a * [lstat > q75] / n_high``,
   ``a = i / 99``, i.e. from all rows at first and only from houses with ``lstat`` above the training
   set's 75th percentile at the end. A second scenario shifts towards *low* ``lstat`` (dear houses, where
   the model's errors in USD are larger), so the estimate has a real change to follow.
3. Per window: the realised MAE and RMSE (the labels are known here) and the estimates. Figures: Spearman
   correlation between estimated and realised MAE over the 100 windows (target >= 0.8), median relative
   error |estimated - realised| / realised (target <= 20 %), and the time of one window's estimate (target
   <= 50 ms).
   Two rows that read the labels, which no estimator has, show what the target needs: ``oracle_mae``, each
   window's expected MAE from the held-out rows' *true* errors and the window's sampling weights (how much
   of the realised MAE the shift itself explains); ``label_fitted_mae``, a random forest fitted to the
   held-out rows' own absolute errors (inputs and prediction; leaves of 5 rows) and averaged over each
   window's rows, with its in-sample R² (an estimator of the inputs explains far less of a house's error:
   the shipped one about 0.1-0.2 out of sample).
4. If nannyml is installed, its ``DLE`` (LightGBM) is fitted on the same out-of-fold residuals and scored on
   the same windows (chunks of 100 rows), for comparison.

Figures are printed and saved to ``benchmarks/results/label_free.json``.
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

RESULTS = Path(__file__).parent / "results" / "label_free.json"


def windows(
    lstat: np.ndarray, cut: float, towards_high: bool, count: int, size: int, seed: int
) -> tuple[list[Any], list[np.ndarray]]:
    """Row indices of ``count`` windows whose share of shifted rows grows from 0 to 1, and their weights."""
    generator = np.random.default_rng(seed)
    shifted = lstat > cut if towards_high else lstat < cut
    drawn, weights = [], []
    for i in range(count):
        share = i / max(count - 1, 1)
        weight = (1 - share) / len(lstat) + share * shifted / shifted.sum()
        weights.append(weight / weight.sum())
        drawn.append(generator.choice(len(lstat), size=size, p=weights[-1]))
    return drawn, weights


def score(estimated: np.ndarray, realised: np.ndarray) -> dict[str, float]:
    """Spearman correlation and median relative error of estimated against realised figures."""
    from scipy.stats import spearmanr

    return {
        "spearman": float(spearmanr(estimated, realised).statistic),
        "median_relative_error": float(np.median(np.abs(estimated - realised) / realised)),
        "realised_first_10": float(realised[:10].mean()),
        "realised_last_10": float(realised[-10:].mean()),
        "estimated_first_10": float(estimated[:10].mean()),
        "estimated_last_10": float(estimated[-10:].mean()),
    }


def nannyml_estimates(
    features: Sequence[str],
    x: np.ndarray,
    y: np.ndarray,
    oof: np.ndarray,
    x_windows: np.ndarray,
    p_windows: np.ndarray,
    size: int,
) -> dict[str, np.ndarray] | None:
    """NannyML's DLE on the same reference and windows (``None`` when nannyml is not installed)."""
    os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")  # nannyml phones home otherwise
    try:
        import nannyml
        import pandas as pd
    except ImportError:
        return None
    reference = pd.DataFrame(x, columns=list(features)).assign(y_pred=oof, y_true=y)
    analysis = pd.DataFrame(x_windows, columns=list(features)).assign(y_pred=p_windows)
    estimator = nannyml.DLE(
        feature_column_names=list(features),
        y_pred="y_pred",
        y_true="y_true",
        metrics=["mae", "rmse"],
        chunk_size=size,
        tune_hyperparameters=False,
    )
    estimator.fit(reference)
    frame = estimator.estimate(analysis).filter(period="analysis").to_df()
    return {
        metric: frame[(metric, "value")].to_numpy(dtype=float)[: len(x_windows) // size]
        for metric in ("mae", "rmse")
    }


def label_fitted(
    x: np.ndarray, predicted: np.ndarray, errors: np.ndarray, seed: int
) -> tuple[np.ndarray, float]:
    """Each held-out row's absolute error as a forest fitted to those very errors predicts it, and its R².

    It reads the labels: a ceiling for what an estimator of the inputs could do, not an estimator.
    """
    from sklearn.ensemble import RandomForestRegressor

    inputs = np.column_stack([x, predicted])
    forest = RandomForestRegressor(300, min_samples_leaf=5, random_state=seed).fit(inputs, errors)
    fitted = forest.predict(inputs)
    return fitted, float(1 - np.mean((errors - fitted) ** 2) / np.var(errors))


def run(count: int, size: int, seed: int) -> dict[str, Any]:
    """Train, fit the estimator, draw the windows and score the estimates (see the module docstring)."""
    from sklearn.model_selection import train_test_split

    from model import dle, evaluation, pipeline
    from model.dataset import load_dataset
    from model.schema import DEFAULT_FEATURES, TARGET

    features = list(DEFAULT_FEATURES)
    train, held = train_test_split(load_dataset(), test_size=0.4, random_state=seed)
    x, y = train[features].to_numpy(float), train[TARGET].to_numpy(float)
    x_held, y_held = held[features].to_numpy(float), held[TARGET].to_numpy(float)
    started = time.perf_counter()
    cv = evaluation.cross_validate(
        pipeline.make_candidate("gbr_log", seed=seed),
        x,
        y,
        evaluation.repeated_kfold(5, 2, seed),
        progress=False,
    )
    model = pipeline.make_candidate("gbr_log", seed=seed).fit(x, y)
    oof = np.asarray(cv.oof_predictions)
    document = dle.fit(x, y, oof, features, seed)
    estimator = dle.LossEstimator.from_bytes(dle.to_bytes(document))
    training_seconds = time.perf_counter() - started
    predicted = model.predict(x_held)
    lstat = x_held[:, features.index("lstat")]
    fitted, figures_fitted_r2 = label_fitted(x_held, predicted, np.abs(y_held - predicted), seed)
    figures: dict[str, Any] = {
        "train_rows": len(y),
        "held_out_rows": len(y_held),
        "windows": count,
        "window_rows": size,
        "training_seconds": training_seconds,
        "dle_json_bytes": len(dle.to_bytes(document)),
        "oof_mae": document["mae"],
        "held_out_mae": float(np.mean(np.abs(y_held - predicted))),
        "label_fitted_r2": figures_fitted_r2,
    }
    timings = []
    for name, towards_high, quantile in (
        ("towards_high_lstat", True, 0.75),
        ("towards_low_lstat", False, 0.25),
    ):
        cut = float(np.quantile(x[:, features.index("lstat")], quantile))
        drawn, weights = windows(lstat, cut, towards_high, count, size, seed)
        realised = {
            "mae": np.array([np.mean(np.abs(y_held[i] - predicted[i])) for i in drawn]),
            "rmse": np.array([np.sqrt(np.mean((y_held[i] - predicted[i]) ** 2)) for i in drawn]),
        }
        estimates = []
        for i in drawn:
            begin = time.perf_counter()
            estimates.append(estimator.estimate(x_held[i], predicted[i]))
            timings.append(time.perf_counter() - begin)
        # The ceiling: each window's *expected* MAE, from every held-out row's true error and the window's
        # sampling weights. No estimator of the inputs can know more; what it misses is sampling noise.
        oracle = np.array([weight @ np.abs(y_held - predicted) for weight in weights])
        scenario: dict[str, Any] = {"oracle_mae": score(oracle, realised["mae"])}
        scenario["label_fitted_mae"] = score(np.array([fitted[i].mean() for i in drawn]), realised["mae"])
        for metric in ("mae", "rmse"):
            scenario[metric] = score(np.array([e[metric] for e in estimates]), realised[metric])
        stacked = np.concatenate(drawn)
        theirs = nannyml_estimates(features, x, y, oof, x_held[stacked], predicted[stacked], size)
        if theirs is not None:
            for metric in ("mae", "rmse"):
                scenario[f"nannyml_{metric}"] = score(theirs[metric], realised[metric])
        figures[name] = scenario
    timings.sort()
    figures["estimate_ms_p50"] = 1000 * timings[len(timings) // 2]
    figures["estimate_ms_max"] = 1000 * timings[-1]
    return figures


def report(figures: dict[str, Any]) -> str:
    """The figures as a table."""
    kilobytes = figures["dle_json_bytes"] / 1000
    lines = [
        f"{figures['train_rows']} training rows, {figures['held_out_rows']} held-out rows; "
        f"{figures['windows']} windows of {figures['window_rows']} rows; "
        f"out-of-fold MAE {figures['oof_mae']:.2f}, held-out MAE {figures['held_out_mae']:.2f} (USD 1000s)",
        f"estimate per window: p50 {figures['estimate_ms_p50']:.2f} ms, "
        f"max {figures['estimate_ms_max']:.2f} ms (target <= 50 ms); dle.json {kilobytes:.0f} kB",
        f"{'scenario':<20} {'estimator':<14} {'spearman':>8} {'med rel err':>11} "
        f"{'realised first->last':>21} {'estimated first->last':>22}",
    ]
    for name in ("towards_high_lstat", "towards_low_lstat"):
        for label, scored in sorted(figures[name].items()):
            lines.append(
                f"{name:<20} {label:<14} {scored['spearman']:>8.2f} {scored['median_relative_error']:>10.1%} "
                f"{scored['realised_first_10']:>10.2f} -> {scored['realised_last_10']:<8.2f} "
                f"{scored['estimated_first_10']:>11.2f} -> {scored['estimated_last_10']:<8.2f}"
            )
    lines.append(
        f"label_fitted: a forest fitted to the held-out rows' own errors, in-sample R² "
        f"{figures['label_fitted_r2']:.2f}; both read the labels (ceilings)"
    )
    lines.append("targets: spearman >= 0.8, median relative error <= 20% (mae rows)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print and save the figures."""
    parser = argparse.ArgumentParser(prog="./dev bench label_free", description=__doc__.split("\n")[0])
    parser.add_argument("--windows", type=int, default=100, help="windows per scenario")
    parser.add_argument("--window_rows", type=int, default=100, help="rows per window")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split, the models and the draws")
    args = parser.parse_args(argv)
    figures = run(args.windows, args.window_rows, args.seed)
    print(report(figures))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
    return 0
