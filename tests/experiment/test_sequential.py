"""The always-valid test of ``housing experiment``: decisions, error rates under repeated looks, the CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from housing.cli import main
from housing.experiment_simulation import Outcome, paired, simulate, unpaired
from housing.sequential import CHALLENGER, CHAMPION, KEEP_GOING, NO_DIFFERENCE, decide, half_width

RNG = np.random.default_rng(7)
# Skewed like a house-price model's errors (USD 1000s): most small, a few large.
RESIDUALS = RNG.standard_t(3, 5000) * 2.0


def test_a_clearly_better_challenger_wins_and_a_clearly_worse_one_loses():
    champion = RNG.choice(RESIDUALS, 2000)
    decision = decide(champion, 0.5 * RNG.choice(RESIDUALS, 2000), paired=False)
    assert decision.verdict == CHALLENGER and decision.low > 0 and decision.labels_needed == 0
    assert decision.mae_challenger < decision.mae_champion
    assert decide(champion, 2.0 * RNG.choice(RESIDUALS, 2000), paired=False).verdict == CHAMPION


def test_few_labels_keep_going_and_say_how_many_more_are_needed():
    decision = decide(RNG.choice(RESIDUALS, 50), 0.8 * RNG.choice(RESIDUALS, 50), paired=False)
    assert decision.verdict == KEEP_GOING and decision.low < 0 < decision.high
    assert decision.labels_needed is not None and decision.labels_needed > 0


def test_identical_models_on_the_same_houses_show_no_difference():
    errors = RNG.choice(RESIDUALS, 500)
    decision = decide(errors, -errors, paired=True)  # same absolute errors
    assert decision.verdict == NO_DIFFERENCE and decision.difference == 0


def test_the_interval_is_wider_than_a_fixed_sample_one_and_shrinks_with_labels():
    # A 95% fixed-sample interval is 1.96 standard errors; peeking at every size costs width.
    assert half_width(1000, 1.0, 0.05, 1000) * np.sqrt(1000) > 1.96
    assert half_width(4000, 1.0, 0.05, 1000) < half_width(1000, 1.0, 0.05, 1000)
    assert half_width(1, 1.0, 0.05, 1000) == np.inf


def test_invalid_inputs_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="paired errors must match"):
        decide(np.ones(3), np.ones(4), paired=True)
    with pytest.raises(ValueError, match="0 < alpha < 1"):
        decide(np.ones(3), np.ones(3), paired=False, alpha=0)


def false_winners(outcomes: list[Outcome]) -> float:
    return sum(outcome.verdict in (CHALLENGER, CHAMPION) for outcome in outcomes) / len(outcomes)


def test_looking_after_every_batch_keeps_false_winners_under_alpha():
    # 200 A/A experiments, each looked at after every 100 labels up to 3,000: a fixed-sample test read this
    # way would name a false winner far more often than 5%.
    settings = {"experiments": 200, "step": 100, "alpha": 0.05, "seed": 3}
    assert false_winners(simulate(unpaired(RESIDUALS, 0.0), paired=False, maximum=3000, **settings)) <= 0.05
    same = paired(RESIDUALS, 0.9, 0.0)
    assert false_winners(simulate(same, paired=True, maximum=600, **settings)) <= 0.05


def test_a_better_shadow_is_found_with_few_paired_labels():
    # 0.96: the correlation of two real candidates' out-of-fold residuals (./dev bench experiment).
    outcomes = simulate(
        paired(RESIDUALS, 0.96, 0.10), paired=True, experiments=100, maximum=600, step=100, alpha=0.05, seed=4
    )
    assert sum(outcome.verdict == CHALLENGER for outcome in outcomes) >= 90


def write_outcomes(path: Path, champion: np.ndarray, challenger: np.ndarray) -> None:
    with path.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["id", "arm", "truth", "prediction"])
        for index, (first, second) in enumerate(zip(champion, challenger, strict=True)):
            writer.writerow([f"r{index}", "champion", 20.0, 20.0 - first])
            writer.writerow([f"r{index}", "challenger", 20.0, 20.0 - second])


def test_cli_reads_a_csv_pairs_by_id_and_exits_by_verdict(tmp_path: Path, capsys):
    champion = RNG.choice(RESIDUALS, 600)
    path = tmp_path / "outcomes.csv"
    write_outcomes(path, champion, 0.7 * champion)
    assert main(["experiment", "analyze", "--outcomes", str(path), "--paired", "--json"]) == 0
    decision = json.loads(capsys.readouterr().out)
    assert decision["verdict"] == CHALLENGER and decision["pairs"] == 600
    assert decision["relative"] == pytest.approx(0.3)

    write_outcomes(path, champion[:20], champion[:20] * 0.95)
    assert main(["experiment", "analyze", "--outcomes", str(path)]) == 2
    assert "KEEP GOING; about" in capsys.readouterr().out

    path.write_text("id,arm,truth,prediction\nr1,both,1,2\n")
    assert main(["experiment", "analyze", "--outcomes", str(path)]) == 1
    assert "arm must be champion or challenger, got 'both'" in capsys.readouterr().err
