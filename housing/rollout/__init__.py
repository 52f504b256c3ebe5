"""``housing rollout``: canary rollouts of the housing InferenceService, decided by its own metrics.

Sub-commands:

- ``status NAME``: model per endpoint (storage URI, sha256, version), traffic split, readiness, URLs.
- ``canary NAME --model-uri URI --sha256 HEX --percent P``: start a canary.
- ``analyze NAME --prometheus URL``: compare canary and stable against SLOs; exit 0 promote, 1 roll back,
  2 inconclusive (``--auto`` applies the verdict).
- ``promote NAME`` / ``rollback NAME``: end the canary one way or the other, print what changed and which
  model the stable predictor serves; with ``--check`` (or ``--check-url``), predict until only that version
  answers (:mod:`housing.rollout.verify`), exit 1 if it does not in time.

With a transformer in front of the predictor (the Helm chart's shape), in either deployment mode, canary NAME
of InferenceService STABLE is its own predictor-only InferenceService ``STABLE-NAME`` and the transformer
sends it the canary's share (``--canary NAME=PERCENT,STABLE-NAME-predictor.NAMESPACE``). KServe's own canaries
do not fit that shape: its webhook refuses ``spec.canary`` when the stable predictor is a custom container
that downloads its model itself, and both ``spec.canary`` and Knative's ``canaryTrafficPercent`` split traffic
behind the transformer, which then cannot tell (nor log) which model answered.

Without a transformer, KServe's own mechanisms are used where its webhook admits them: the Knative revision
split (``spec.predictor.canaryTrafficPercent``), or ``spec.canary`` in Standard mode when KServe can see the
stable predictor's model. Changes are JSON merge patches carrying the ``metadata.resourceVersion`` that was
read, so the API server refuses them (409) if someone changed the object in between; the command then reads
it again, re-checks and retries. Details: docs/rollout.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from housing.prometheus import PrometheusClient, PrometheusError
from housing.rollout.analysis import (
    INCONCLUSIVE,
    PROMOTE,
    SLO_HELP,
    VERDICTS,
    Slo,
    accuracy_check,
    analyze,
    print_checks,
    verdict,
)
from housing.rollout.cluster import Cluster
from housing.rollout.objects import DEFAULT_CANARY_NAME, ModelRef, RolloutError, predictor_spec, read_model
from housing.rollout.plans import plan_canary, plan_promote, plan_rollback
from housing.rollout.status import describe, print_description
from housing.rollout.verify import wait_for_version

HELP = "Canary rollouts of the InferenceService: status, canary, analyze, promote, rollback."


def configure(parser: argparse.ArgumentParser) -> None:
    """Declare the sub-commands and their arguments."""
    cluster = argparse.ArgumentParser(add_help=False)
    cluster.add_argument("name", help="InferenceService name")
    cluster.add_argument("-n", "--namespace", help="namespace (default: the context's, else 'default')")
    cluster.add_argument(
        "--kubeconfig", help="kubeconfig file (default: in-cluster, $KUBECONFIG, ~/.kube/config)"
    )
    cluster.add_argument("--context", help="kubeconfig context (default: the current one)")
    dry = argparse.ArgumentParser(add_help=False)
    dry.add_argument(
        "--dry-run",
        action="store_true",
        help="print what would be created, patched (the JSON merge patch) and deleted, and change nothing",
    )
    named = argparse.ArgumentParser(add_help=False)
    named.add_argument("--canary-name", help="which canary (default: the only one; rollback: all)")

    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    status = actions.add_parser("status", parents=[cluster], help="models, traffic split, readiness and URLs")
    status.add_argument("-o", "--output", choices=["table", "json"], default="table")

    canary = actions.add_parser("canary", parents=[cluster, dry], help="start a canary with a new model")
    canary.add_argument("--model-uri", required=True, help="storage URI of the canary's model artifact")
    canary.add_argument(
        "--sha256",
        required=True,
        help="sha256 of the file the predictor serves: model.onnx's (model.json 'onnx_sha256')",
    )
    canary.add_argument("--model-version", help="version to record (model.json 'version')")
    canary.add_argument("--percent", type=int, required=True, help="share of traffic for the canary, 0-100")
    canary.add_argument(
        "--canary-name",
        default=DEFAULT_CANARY_NAME,
        help="the canary's name: its InferenceService is NAME-CANARY_NAME (default: %(default)s)",
    )
    canary.add_argument(
        "--replace",
        action="store_true",
        help="replace the canaries that run; with the same name and model: resume one, or change its share",
    )
    canary.add_argument(
        "--wait-timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="wait this long for the canary InferenceService to be Ready before it gets traffic; "
        "0: send traffic at once (default: %(default)g)",
    )

    analyze_parser = actions.add_parser(
        "analyze",
        parents=[cluster],
        help="compare canary and stable in Prometheus; exit 0 promote, 1 roll back, 2 inconclusive",
    )
    analyze_parser.add_argument("--prometheus", required=True, help="Prometheus base URL")
    analyze_parser.add_argument("--window", default="10m", help="PromQL range (default: %(default)s)")
    analyze_parser.add_argument(
        "--selector",
        default='component="predictor"',
        help="extra PromQL label matchers (default: %(default)s)",
    )
    analyze_parser.add_argument("--slo", help="SLO file (YAML/JSON; keys as the flags, with underscores)")
    defaults = Slo()
    for field_name, value in asdict(defaults).items():
        analyze_parser.add_argument(
            "--" + field_name.replace("_", "-"),
            type=type(value),
            default=None,
            help=f"{SLO_HELP[field_name]} (default: {value})",
        )
    analyze_parser.add_argument(
        "--detector",
        help="the detector's URL: also judge live MAE on its labelled outcomes (a sequential test)",
    )
    analyze_parser.add_argument("--auto", action="store_true", help="promote or roll back as recommended")
    analyze_parser.add_argument("--canary-name", help="which canary --auto acts on (default: the only one)")

    check = argparse.ArgumentParser(add_help=False)
    check.add_argument(
        "--check",
        action="store_true",
        help="then predict through the InferenceService's status.url until only the stable model's version "
        "answers (x-model-version); exit 1 if it does not within --check-timeout",
    )
    check.add_argument(
        "--check-url",
        help="as --check, through this URL: the transformer as this machine reaches it (ingress, gateway, "
        "kubectl port-forward); with --auth, HOUSING_PREDICT_KEY holds a key with the predict role",
    )
    check.add_argument(
        "--check-timeout", type=float, default=300.0, help="seconds the check may take (default: %(default)g)"
    )
    actions.add_parser("promote", parents=[cluster, dry, named, check], help="the canary becomes stable")
    actions.add_parser(
        "rollback", parents=[cluster, dry, named, check], help="remove the canary; stable untouched"
    )


def run(args: argparse.Namespace) -> int:
    """Run one ``housing rollout`` action; errors are one line on stderr and exit code 1 (analyze: 3)."""
    try:
        return _run(args)
    except (RolloutError, PrometheusError) as error:
        print(f"housing rollout {args.action}: {error}", file=sys.stderr)
        return 3 if args.action == "analyze" else 1


def _run(args: argparse.Namespace) -> int:
    if args.action == "analyze":
        return _analyze(args)
    cluster = Cluster(args.kubeconfig, args.context, args.namespace)
    seen = cluster.observe(args.name)
    if args.action == "status":
        info = describe(seen)
        if args.output == "json":
            print(json.dumps(info, indent=2, sort_keys=True))
        else:
            print_description(info)
        return 0
    if args.action == "canary":
        model = ModelRef(args.model_uri, args.sha256, args.model_version)
        steps = plan_canary(
            seen, model, args.percent, args.canary_name, args.replace, wait_seconds=args.wait_timeout
        )
        hint = (
            f"The same command with --replace resumes, `housing rollout rollback {args.name}` removes what "
            "was created"
        )
    elif args.action == "promote":
        steps = plan_promote(seen, args.canary_name)
        hint = f"`housing rollout rollback {args.name}` deletes what is left of the canary"
    else:
        steps = plan_rollback(seen, args.canary_name)
        hint = "Run the same command again"
    cluster.apply(steps, dry_run=args.dry_run, hint=hint)
    if args.action in ("promote", "rollback") and not args.dry_run:
        return _check(args, cluster)
    return 0


def _check(args: argparse.Namespace, cluster: Cluster) -> int:
    """Say which model the stable predictor now serves; with ``--check``, wait until only it answers."""
    stable = cluster.observe(args.name).stable
    model = read_model(predictor_spec(stable))
    print(f"the stable predictor of {cluster.namespace}/{args.name} serves version {model.version or '?'} "
          f"({model.storage_uri})")  # fmt: skip
    if not (args.check or args.check_url):
        return 0
    url = args.check_url or (stable.get("status") or {}).get("url")
    if not url:
        raise RolloutError(f"{args.name} has no status.url yet: give the transformer's URL with --check-url")
    if not model.version:
        raise RolloutError(
            f"{args.name}'s predictor records no model version: nothing to check answers against"
        )
    wait_for_version(url, model.version, timeout=args.check_timeout)
    return 0


def _analyze(args: argparse.Namespace) -> int:
    slo = Slo.from_file(args.slo) if args.slo else Slo()
    overrides = {name: getattr(args, name) for name in asdict(slo) if getattr(args, name) is not None}
    slo = Slo(**(asdict(slo) | overrides))
    checks = analyze(PrometheusClient(args.prometheus), slo, args.window, args.selector)
    if args.detector:
        checks.append(accuracy_check(args.detector))
    print_checks(checks)
    outcome = verdict(checks)
    if args.auto and outcome != INCONCLUSIVE:
        plan = plan_promote if outcome == PROMOTE else plan_rollback
        cluster = Cluster(args.kubeconfig, args.context, args.namespace)
        cluster.apply(plan(cluster.observe(args.name), args.canary_name))
        print(f"applied: {VERDICTS[outcome]} of {cluster.namespace}/{args.name}")
    return outcome
