"""The always-valid test of ``housing experiment``: decisions, error rates under repeated looks, the CLI."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from housing.cli import main
from housing.experiment_simulation import Outcome, paired, simulate, unpaired
from housing.sequential import (
    CAP_LABELS,
    CHALLENGER,
    CHAMPION,
    KEEP_GOING,
    NO_DIFFERENCE,
    decide,
    half_width,
    mixture_rho,
)

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
    # A one-sided 95% fixed-sample bound is 1.645 standard errors; peeking at every size costs width.
    assert half_width(1000, 1.0, 0.05, 1000) * np.sqrt(1000) > 1.645
    assert half_width(4000, 1.0, 0.05, 1000) < half_width(1000, 1.0, 0.05, 1000)
    assert half_width(1, 1.0, 0.05, 1000) == np.inf


def test_the_one_sided_boundary_is_the_half_normal_mixture_root_and_near_robbins_two_sided_one():
    counts, alpha, planned = np.array([30, 100, 1000, 3000, 10_000]), 0.025, 3000
    rho = mixture_rho(alpha, planned)
    widths = np.array([half_width(count, 1.0, alpha, planned) for count in counts])
    u = widths * counts / np.sqrt(counts + rho)
    # The mixture martingale (Howard et al. 2021) reaches exactly 1/alpha on the boundary.
    log_martingale = (
        0.5 * np.log(4 * rho / (counts + rho))
        + u**2 / 2
        + np.log([0.5 * math.erfc(-value / math.sqrt(2)) for value in u])
    )
    assert np.allclose(log_martingale, math.log(1 / alpha), atol=1e-9)
    # Robbins' two-sided normal mixture at 2 alpha, in closed form, differs by a few percent at most.
    r2 = (-2 * math.log(2 * alpha) + math.log(1 - 2 * math.log(2 * alpha))) / planned
    grown = counts * r2 + 1
    two_sided = np.sqrt(2 * grown / (counts**2 * r2) * np.log(np.sqrt(grown) / (2 * alpha)))
    assert np.allclose(widths, two_sided, rtol=0.05)


def test_the_alpha_spent_against_a_false_challenger_win_makes_that_end_tighter():
    errors = RNG.choice(RESIDUALS, 1000), RNG.choice(RESIDUALS, 1000)
    skewed = decide(*errors, paired=False, planned=1000)  # 80% of alpha on the lower end
    even = decide(*errors, paired=False, planned=1000, challenger_share=0.5)
    assert skewed.difference - skewed.low < even.difference - even.low
    assert skewed.high - skewed.difference > even.high - even.difference
    with pytest.raises(ValueError, match="challenger_share"):
        decide(*errors, paired=False, challenger_share=1.0)


def test_the_auto_cap_is_set_by_the_first_labels_of_both_arms_and_then_fixed():
    champion, challenger = RNG.choice(RESIDUALS, 1000), 0.5 * RNG.choice(RESIDUALS, 1000)
    first = np.abs(np.concatenate([champion[:CAP_LABELS], challenger[:CAP_LABELS]]))
    decisions = [decide(champion[:n], challenger[:n], paired=False) for n in (CAP_LABELS, 400, 1000)]
    assert [d.cap for d in decisions] == [pytest.approx(np.quantile(first, 0.95))] * 3
    capped = np.minimum(np.abs(champion), decisions[-1].cap) - np.minimum(
        np.abs(challenger), decisions[-1].cap
    )
    assert decisions[-1].difference == pytest.approx(capped.mean())
    assert decisions[-1].mae_champion == pytest.approx(np.abs(champion).mean())  # reported uncapped
    # A blatant difference still waits for the cap to be set.
    early = decide(champion[: CAP_LABELS - 1], 0.01 * challenger[: CAP_LABELS - 1], paired=False)
    assert early.verdict == KEEP_GOING and early.labels_needed is not None and early.labels_needed >= 1
    assert decide(champion[:99], 0.01 * challenger[:99], paired=False, cap=None).verdict == CHALLENGER
    assert decide(champion, challenger, paired=False, cap=3.0).cap == 3.0
    with pytest.raises(ValueError, match="cap must be"):
        decide(champion, challenger, paired=False, cap=-1.0)


def test_capping_and_the_alpha_split_find_a_10_percent_better_ab_challenger_far_more_often():
    # An A/B test (unpaired) looked at every 100 labels up to 3,000 per arm, on heavy-tailed errors: the
    # plain MAE with alpha split evenly finds the better model in about 70% of experiments; the test as
    # shipped in over 85% (./dev bench experiment measures it on the real residuals: 94%).
    settings = {"experiments": 100, "maximum": 3000, "step": 100, "alpha": 0.05, "seed": 5}
    shipped = simulate(unpaired(RESIDUALS, 0.10), paired=False, **settings)
    plain = simulate(unpaired(RESIDUALS, 0.10), paired=False, cap=None, challenger_share=0.5, **settings)
    found = [sum(outcome.verdict == CHALLENGER for outcome in run) for run in (shipped, plain)]
    assert found[0] >= 85 and found[0] >= found[1] + 10, found


def test_invalid_inputs_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="paired errors must match"):
        decide(np.ones(3), np.ones(4), paired=True)
    with pytest.raises(ValueError, match=r"0 < alpha <= 0\.25"):
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
    # A fixed-sample t-test read at every look: the inflation the confidence sequence avoids.
    draw, rng, peeked = unpaired(RESIDUALS, 0.0), np.random.default_rng(3), 0
    for _ in range(200):
        first, second = (np.abs(errors) for errors in draw(rng, 3000))
        differences = first - second
        z = [
            differences[:n].mean() / (differences[:n].std(ddof=1) / math.sqrt(n))
            for n in range(100, 3001, 100)
        ]
        peeked += max(np.abs(z)) > 1.96
    assert peeked / 200 > 0.15


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
    assert 0.2 < decision["relative"] < 0.3  # capped errors: the largest shrink by less than 30%
    assert (
        main(["experiment", "analyze", "--outcomes", str(path), "--paired", "--json", "--cap", "none"]) == 0
    )
    assert json.loads(capsys.readouterr().out)["relative"] == pytest.approx(0.3)

    write_outcomes(path, champion[:20], champion[:20] * 0.95)
    assert main(["experiment", "analyze", "--outcomes", str(path)]) == 2
    assert "KEEP GOING; about" in capsys.readouterr().out

    with pytest.raises(SystemExit):
        main(["experiment", "analyze", "--outcomes", str(path), "--cap", "-2"])
    assert "--cap: must be 'auto', 'none' or a positive number, got '-2'" in capsys.readouterr().err

    path.write_text("id,arm,truth,prediction\nr1,both,1,2\n")
    assert main(["experiment", "analyze", "--outcomes", str(path)]) == 1
    assert "arm must be champion or challenger, got 'both'" in capsys.readouterr().err
