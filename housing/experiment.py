"""``housing experiment analyze``: which model prices houses better, judged on ground truth, at any time.

It reads the labelled predictions the detector has joined (``GET /outcomes``: per ``endpoint/model_version``,
the true values and the predictions, oldest first) or a CSV of outcomes, and runs the always-valid test of
:mod:`housing.sequential` on the absolute errors of the champion and the challenger. It may be run after every
batch of labels without inflating false winners. The test is on absolute errors capped at the 95th percentile
of the first 100 labels per arm (``--cap``), and spends 80% of ``--alpha`` against a false challenger win
(``--challenger-share``): both let it decide sooner (docs/experiments.md). Exit codes: 0 the challenger won,
1 error, 2 keep going, 3 the champion won, 4 no difference.

``--auto`` acts on a winner: the challenger's model version gets the MLflow alias ``champion``, and, with
``--name``, its canary is promoted on the cluster (``housing rollout promote``).

``--paired`` compares the two models on the same houses (a shadow, ``--challenger shadow``: the detector
scores both on each label), matched by request id. A CSV (``--outcomes``) has the columns
``id,arm,truth,prediction`` (``arm``: ``champion`` or ``challenger``); ``--paired`` pairs its rows by ``id``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from housing.outcomes import OutcomesError, arm_errors, fetch_outcomes, paired_errors, read_csv
from housing.sequential import (
    CHALLENGER,
    CHALLENGER_SHARE,
    CHAMPION,
    KEEP_GOING,
    NO_DIFFERENCE,
    Cap,
    Decision,
    decide,
)

HELP = "Decide an A/B test or a shadow on ground truth with an always-valid sequential test."
EXIT_CODES = {CHALLENGER: 0, KEEP_GOING: 2, CHAMPION: 3, NO_DIFFERENCE: 4}


def configure(parser: argparse.ArgumentParser) -> None:
    """Declare ``housing experiment``'s arguments."""
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    analyze = actions.add_parser("analyze", help=HELP, description=__doc__.split("\n\n")[1])
    source = analyze.add_mutually_exclusive_group()
    source.add_argument(
        "--detector",
        default="http://127.0.0.1:8070",
        help="the detector's URL; under --auth set HOUSING_API_KEY to a key with the analyst role "
        "(default: %(default)s)",
    )
    source.add_argument("--outcomes", type=Path, help="a CSV of outcomes instead: id,arm,truth,prediction")
    analyze.add_argument(
        "--champion", default="default", help="the champion's arm: endpoint or endpoint/model_version"
    )
    analyze.add_argument(
        "--challenger", default="canary", help="the challenger's arm: endpoint or endpoint/model_version"
    )
    analyze.add_argument(
        "--paired", action="store_true", help="a shadow: pair the arms' errors by request id"
    )
    analyze.add_argument(
        "--alpha", type=float, default=0.05, help="false-winner bound (default: %(default)s)"
    )
    analyze.add_argument(
        "--margin",
        type=float,
        default=0.02,
        help="an MAE difference below this share of the champion's is no difference (default: %(default)s)",
    )
    analyze.add_argument(
        "--planned",
        type=int,
        default=1000,
        help="labels per arm where the interval is tightest; any value is valid (default: %(default)s)",
    )
    analyze.add_argument(
        "--cap",
        type=_cap,
        default="auto",
        help="cap on absolute errors, USD 1000s: 'auto' (the 95th percentile of the first 100 labels per "
        "arm), a number, or 'none' for the plain MAE (default: %(default)s)",
    )
    analyze.add_argument(
        "--challenger-share",
        type=float,
        default=CHALLENGER_SHARE,
        help="share of --alpha against a false challenger win, the rest against a false champion win "
        "(default: %(default)s; 0.5 is symmetric)",
    )
    analyze.add_argument("--json", action="store_true", help="print the decision as JSON")
    analyze.add_argument(
        "--auto",
        action="store_true",
        help="on a challenger win: MLflow alias champion, then (--name) rollout",
    )
    analyze.add_argument("--name", help="with --auto: the InferenceService whose canary to promote")
    analyze.add_argument("--namespace", help="with --name: its namespace (default: the context's)")
    analyze.add_argument("--kubeconfig", help="with --name: kubeconfig file")
    analyze.add_argument("--context", help="with --name: kubeconfig context")


def _cap(value: str) -> Cap:
    """``--cap``: ``auto``, ``none`` or a positive number."""
    if value in ("auto", "none"):
        return None if value == "none" else value
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not number > 0:
        raise argparse.ArgumentTypeError(f"must be 'auto', 'none' or a positive number, got {value!r}")
    return number


def describe(decision: Decision, champion: str, challenger: str) -> str:
    """The decision as a few lines a person reads."""
    needed = "" if decision.labels_needed is None else f"; about {decision.labels_needed} more labels per arm"
    settled = {
        CHALLENGER: f"WINNER: the challenger ({challenger})",
        CHAMPION: f"WINNER: the champion ({champion})",
        NO_DIFFERENCE: "NO DIFFERENCE that matters",
        KEEP_GOING: f"KEEP GOING{needed}",
    }[decision.verdict]
    capped = "" if decision.cap is None else f" with errors capped at {decision.cap:.2f}"
    return "\n".join(
        [
            f"champion   {champion}: MAE {decision.mae_champion:.3f} (USD 1000s)",
            f"challenger {challenger}: MAE {decision.mae_challenger:.3f}",
            f"MAE difference (champion - challenger){capped} {decision.difference:+.3f} "
            f"({decision.relative:+.1%}), "
            f"always-valid interval [{decision.low:+.3f}, {decision.high:+.3f}] on {decision.pairs} pairs",
            settled,
        ]
    )


def run(args: argparse.Namespace) -> int:
    """Analyse the experiment, print the decision, and act on it with ``--auto``."""
    try:
        if args.outcomes:
            champion_errors, challenger_errors = read_csv(args.outcomes, args.paired)
            champion, challenger = CHAMPION, CHALLENGER
        else:
            outcomes = fetch_outcomes(args.detector)
            if args.paired:
                champion_errors, challenger_errors, champion, challenger = paired_errors(
                    outcomes, args.champion, args.challenger
                )
            else:
                champion_errors, champion = arm_errors(outcomes, args.champion)
                challenger_errors, challenger = arm_errors(outcomes, args.challenger)
        decision = decide(
            champion_errors,
            challenger_errors,
            paired=args.paired,
            alpha=args.alpha,
            margin=args.margin,
            planned=args.planned,
            cap=args.cap,
            challenger_share=args.challenger_share,
        )
    except (OutcomesError, ValueError) as error:
        print(f"housing experiment analyze: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"champion": champion, "challenger": challenger, **decision.to_dict()}, indent=2))
    else:
        print(describe(decision, champion, challenger))
    if args.auto and decision.verdict == CHALLENGER:
        return _promote(args, challenger)
    return EXIT_CODES[decision.verdict]


def _promote(args: argparse.Namespace, challenger: str) -> int:
    from model.promote_cli import set_alias

    version = challenger.split("/", 1)[1] if "/" in challenger else None
    if version is None:
        print("housing experiment analyze: --auto needs the challenger's model version", file=sys.stderr)
        return 1
    previous = set_alias(version, "champion")
    print(f"champion -> version {version} (was {previous or 'unset'})")
    if args.name:
        from housing.rollout.cluster import Cluster
        from housing.rollout.plans import plan_promote

        cluster = Cluster(args.kubeconfig, args.context, args.namespace)
        cluster.apply(plan_promote(cluster.observe(args.name), None))
        print(f"applied: promote of {cluster.namespace}/{args.name}")
    return EXIT_CODES[CHALLENGER]
