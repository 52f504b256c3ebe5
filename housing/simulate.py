"""``housing simulate drift``: the monitoring loop end to end on the local stack, each step printed.

A market shift is sent through the stack ``housing up`` starts (same processes, same flags), and the loop
runs as it would on the cluster, with nothing but HTTP between the steps:

1. **Shift.** The bundled houses are split into a traffic pool (60 %) and held-out houses (40 %). First
   ``--before`` houses of the pool are sent as they are, labelled: the champion's live interval coverage
   before the shift (on houses it was trained on, so above its held-out 90%). After the shift, buyers lean
   to the cheaper half of the city (three in four houses from those whose ``lstat`` is above the data set's
   median), prices rose 20 % (years of inflation: the labels) and the property-tax rate per USD 10,000 fell
   by the same factor (the same levy on dearer houses).
2. **Detect.** Shifted houses from the traffic pool go through the transformer; their labels follow
   ``--label-delay`` requests later (``POST /feedback``). The detector flags the drifted window, and the
   live coverage of the champion's 90% intervals falls: its ranges were calibrated on the old prices.
3. **Retrain.** The detector's ``command`` action runs ``housing train --data bundled ARCHIVE`` once
   ``--min-labels`` labels of the shifted traffic are in (``--retrain_min_labels``), after uploading its
   archive: the new version is registered in MLflow with the alias ``challenger``.
4. **Shadow.** The challenger gets its own predictor (pinned by its sha256); the transformer copies every
   request to it. Held-out shifted houses, never seen in training, are priced by both, and labelled.
5. **Analyse.** The always-valid paired test of ``housing experiment analyze`` on the detector's outcomes;
   the figure: the challenger's MAE on the held-out shifted houses against the champion's, and both models'
   live interval coverage there (the challenger's recovers: it was calibrated on the new prices).
6. **Promote.** On a win: the MLflow alias ``champion`` moves to the challenger, and the stack is restarted
   on it (what ``housing rollout promote`` does on the cluster); one prediction shows the new version.

Live coverage is the detector's ``housing_interval_coverage`` (``/status``), over the last ``--window``
labels of each model (the detector's ``--coverage_window``), so each figure is about one phase's houses.

Everything the loop writes (detector state, archive, MLflow store, the new artifact, logs) goes under
``var/simulate/<time>/``: the champion the user serves and the user's MLflow store (``MLFLOW_TRACKING_URI``
or ``var/mlflow``) are not touched. The run's own store numbers its versions from 1 again, so each version
printed carries the sha256 of its ``model.onnx`` too: "version 1" of the run's store is not the champion's.
Exit code 0: promoted; 2: the test did not decide; 1: a step failed.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from housing.processes import HOST, Service, Stack, free_port, wait_until
from model.artifact import read_metadata
from model.paths import VAR_DIR_ENV, var_dir

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

HELP = "Simulate a market shift through the local stack: drift, retrain on the archive, shadow, promote."
INFLATION = 0.20
"""How much prices rose: the labels of the shifted houses are raised by this share."""
LEAN = 0.75
"""Share of shifted houses drawn from the cheaper half of the city (``lstat`` above the median)."""
ALL = ("detector", "predictor", "challenger", "transformer")
"""The services of the loop, in starting order (the transformer last: it reads the predictor's metadata)."""
TARGET_IMPROVEMENT = 0.15
"""The issue's figure: the retrained model's MAE on held-out shifted houses this much lower at least."""


def configure(parser: argparse.ArgumentParser) -> None:
    """Declare the arguments of ``housing simulate``."""
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    drift = actions.add_parser("drift", help=HELP, description=__doc__.split("\n\n")[0])
    drift.add_argument("--artifact", type=Path, help="the champion (default: the latest trained)")
    drift.add_argument(
        "--requests",
        type=int,
        default=300,
        help="shifted houses sent before retraining (default: %(default)s)",
    )
    drift.add_argument(
        "--before",
        type=int,
        default=100,
        help="houses sent before the shift, as they are, labelled (default: %(default)s)",
    )
    drift.add_argument(
        "--held-out",
        type=int,
        default=200,
        help="held-out shifted houses priced by both (default: %(default)s)",
    )
    drift.add_argument(
        "--label-delay",
        type=int,
        default=50,
        help="a label follows its request N requests later (default: %(default)s)",
    )
    drift.add_argument(
        "--min-labels",
        type=int,
        default=200,
        help="labels of the shifted traffic before the retrain (default: %(default)s)",
    )
    drift.add_argument("--window", type=int, default=100, help="detector window, rows (default: %(default)s)")
    drift.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    drift.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to wait for each step (default: %(default)s)"
    )
    drift.add_argument("--out", type=Path, help="where the run writes (default: var/simulate/<time>)")


def shifted_houses(
    pool: pd.DataFrame, count: int, rng: np.random.Generator, median_lstat: float
) -> pd.DataFrame:
    """``count`` houses of ``pool`` as the market after the shift (see the module docstring, step 1).

    Drawn with replacement (a kind of house sells again); the labels and ``tax`` are changed, the rest kept.
    """
    from model.schema import TARGET, TARGET_CENSORED_AT

    cheap = (pool["lstat"] > median_lstat).to_numpy()
    weights = (1 - LEAN) / len(pool) + LEAN * cheap / max(cheap.sum(), 1)
    houses = pool.iloc[rng.choice(len(pool), size=count, p=weights / weights.sum())].copy()
    # The data set records prices of 50 or more as 50 (and the detector refuses more): so does the market.
    houses[TARGET] = (houses[TARGET] * (1 + INFLATION)).clip(upper=TARGET_CENSORED_AT)
    houses["tax"] = houses["tax"] / (1 + INFLATION)
    return houses.reset_index(drop=True)


def split(frame: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The traffic pool (60 %) and the held-out houses (40 %), disjoint."""
    shuffled = frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    cut = int(0.6 * len(shuffled))
    return shuffled.iloc[:cut], shuffled.iloc[cut:]


def named(metadata: dict[str, Any]) -> str:
    """A model version named unambiguously: ``version 1 (model.onnx sha256 0123456789ab)``.

    Version numbers belong to one MLflow store, and the run's store starts at 1 again; the sha256 of the file
    the predictor serves tells two models apart wherever they were numbered.
    """
    served = metadata.get("onnx_sha256") or metadata["sha256"]
    return f"version {metadata['version']} (model.onnx sha256 {str(served)[:12]})"


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables (inherited by every process started meanwhile); restore them after."""
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def step(number: int, text: str) -> None:
    """One step of the loop, printed as it happens."""
    print(f"\n[{number}/6] {text}", flush=True)


def run(args: argparse.Namespace) -> int:
    """Run the loop (see the module docstring)."""
    from housing.stack import latest_or_train
    from model.tracking import TRACKING_URI_ENV, tracking_uri

    if args.requests < args.window + args.min_labels:
        print(f"housing simulate drift: --requests must be at least --window + --min-labels "
              f"({args.window + args.min_labels}): the retrain awaits its labels after the first window",
              file=sys.stderr)  # fmt: skip
        return 1
    out = (args.out or var_dir() / "simulate" / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")).resolve()
    champion_dir = (args.artifact or latest_or_train(fast=True)).resolve()
    yours = tracking_uri()
    # The retrain (a child of the detector), its MLflow store, the detector's state and archive: all in out,
    # whatever MLFLOW_TRACKING_URI says.
    store = f"sqlite:///{out / 'mlflow' / 'mlflow.db'}"
    (out / "mlflow").mkdir(parents=True, exist_ok=True)
    stack = Stack(out / "logs")
    with environment({VAR_DIR_ENV: str(out), TRACKING_URI_ENV: store}):
        try:
            print(f"MLflow store of this run: {store} (yours, {yours}, is not touched)", flush=True)
            return Loop(args, stack, champion_dir, out).run()
        except (RuntimeError, TimeoutError, OSError) as error:
            print(f"housing simulate drift: {error}", file=sys.stderr)
            return 1
        finally:
            stack.stop()


class Loop:
    """The steps of the loop over one local stack (see the module docstring)."""

    def __init__(self, args: argparse.Namespace, stack: Stack, champion_dir: Path, out: Path) -> None:
        import numpy as np

        self.args = args
        self.stack = stack
        self.out = out
        self.champion_dir = champion_dir
        self.rng = np.random.default_rng(args.seed)
        self.ports = argparse.Namespace(
            predictor_port=free_port(),
            predictor_grpc_port=free_port(),
            transformer_port=free_port(),
            transformer_grpc_port=free_port(),
            detector_port=free_port(),
            detector=True,
            explainer=False,
            mlflow=False,
        )
        self.services: dict[str, Service] = {}

    def run(self) -> int:
        """Shift, detect, retrain, shadow, analyse, promote; the exit code."""
        from model.dataset import load_dataset

        frame = load_dataset()
        pool, held_out = split(frame, self.args.seed)
        median = float(frame["lstat"].median())
        champion = read_metadata(self.champion_dir)
        version = str(champion["version"])
        step(1, f"champion: {named(champion)} ({self.champion_dir}); the run writes to {self.out}")
        self.start(self.champion_dir)
        key = f"default/{version}"
        if self.args.before:
            self.send(pool.sample(self.args.before, replace=True, random_state=self.args.seed))
            print(f"before the shift: {self.coverage(key)} (houses it was trained on)", flush=True)
        print(f"shift: {LEAN:.0%} of houses from the cheaper half (lstat > {median:.2f}), "
              f"prices +{INFLATION:.0%}, tax rate / {1 + INFLATION:g}")  # fmt: skip
        self.send(shifted_houses(pool, self.args.requests, self.rng, median))

        def drifted_window(status: dict[str, Any]) -> bool:  # not the unshifted window tested before it
            return bool(((status["keys"].get(key) or {}).get("last_result") or {}).get("drifted"))

        status = self.wait(drifted_window, "a drifted window (the detector did not flag the shifted traffic)")
        result = status["keys"][key]["last_result"]
        drifted = [feature["name"] for feature in result["features"] if feature["drifted"]]
        step(2, f"detector: window drift score {result['score']:.2f} (threshold {status['threshold']}), "
                f"drifted: {', '.join(drifted) or 'none'}; {self.live(status, key)}")  # fmt: skip
        print(f"after the shift: {self.coverage(key, status)}", flush=True)

        firings = self.wait(lambda s: s["retrain"]["firings"], "the retrain to fire")["retrain"]["firings"]
        print(f"retrain fired: reason {firings[-1]['reason']}, after {self.args.min_labels} labels of the "
              "shifted traffic; training on the archive ...", flush=True)  # fmt: skip
        challenger_dir = self.await_artifact()
        metadata = read_metadata(challenger_dir)
        params = metadata.get("params", {})
        step(3, f"retrained: {named(metadata)} registered in the run's MLflow store as 'challenger' "
                f"({out_path(self.out, challenger_dir)}); {params.get('data_rows')} rows from "
                f"{params.get('data_sources')}, {params.get('data_archive_rows')} of them archived "
                "traffic")  # fmt: skip

        self.start(self.champion_dir, shadow=challenger_dir, names=("challenger", "transformer"))
        step(4, f"challenger {named(metadata)} served as a shadow: every request copied to it")
        houses = shifted_houses(held_out, self.args.held_out, self.rng, median)
        self.send(houses)
        shadow_key = f"shadow/{metadata['version']}"
        return self.analyse_and_promote(key, shadow_key, challenger_dir)

    def analyse_and_promote(self, key: str, shadow_key: str, challenger_dir: Path) -> int:
        """Steps 5 and 6: the paired test on the held-out houses; promotion on a win."""
        from housing.experiment import describe
        from housing.outcomes import fetch_outcomes, paired_errors
        from housing.sequential import CHALLENGER, decide

        detector = self.services["detector"].url

        outcomes: dict[str, Any] = {}

        def labelled() -> bool:
            outcomes.update(fetch_outcomes(detector))
            return len(outcomes.get(shadow_key, {}).get("true_values", [])) >= self.args.held_out

        wait_until(labelled, timeout=self.args.timeout, what="the shadow's labelled outcomes")
        champion_errors, challenger_errors, _, _ = paired_errors(outcomes, key, shadow_key)
        status = self.wait(lambda s: True, "the detector's status")
        both = f"challenger {self.coverage(shadow_key, status)}; champion {self.coverage(key, status)}"
        print(f"after the retrain, on the held-out shifted houses: {both}", flush=True)
        # Only the held-out houses: both models priced them, the challenger never trained on them.
        decision = decide(champion_errors, challenger_errors, paired=True)
        improvement = 1 - decision.mae_challenger / decision.mae_champion
        step(5, f"analysis on {decision.pairs} held-out shifted houses (paired, always-valid):\n"
                f"{describe(decision, key, shadow_key)}\n"
                f"figure: challenger MAE {improvement:.1%} lower than the champion's "
                f"(target >= {TARGET_IMPROVEMENT:.0%}): "
                f"{'met' if improvement >= TARGET_IMPROVEMENT else 'MISSED'}")  # fmt: skip
        if decision.verdict != CHALLENGER:
            print("no winner yet: the champion stays (send more labelled traffic)", flush=True)
            return 2
        from model.promote_cli import set_alias

        challenger = read_metadata(challenger_dir)
        previous = set_alias(str(challenger["version"]), "champion")
        before = f"version {previous}" if previous else "unset, a new store"
        self.start(challenger_dir)
        answered = self.predict_one()
        step(6, f"promoted in the run's MLflow store: alias champion -> {named(challenger)} "
                f"(before: {before}); the stack now serves it: a prediction answered by "
                f"{answered}")  # fmt: skip
        return 0

    # --- the stack ---------------------------------------------------------------------------------------

    def start(self, artifact: Path, shadow: Path | None = None, names: tuple[str, ...] = ALL) -> None:
        """(Re)start ``names`` on ``artifact`` (a shadow predictor for ``shadow``); wait until ready."""
        from housing import stack as local_stack

        specs = {spec.name: spec for spec in local_stack.services(self.ports, str(artifact), {})}
        retrain = shlex.join([sys.executable, "-m", "housing", "train", "--fast", "--no-progress", "--data",
                              "bundled", local_stack.archive_uri(self.ports)])  # fmt: skip
        specs["detector"].command = [
            *specs["detector"].command, "--window_size", str(self.args.window),
            "--coverage_window", str(self.args.window), "--retrain_action", "command",
            "--retrain_command", retrain, "--retrain_min_labels", str(self.args.min_labels),
            "--archive_flush_seconds", "1",
        ]  # fmt: skip
        if shadow is not None:  # a second predictor, started as the champion's is, pinned to its model.onnx
            http, grpc = free_port(), free_port()
            ports = argparse.Namespace(**vars(self.ports))
            ports.predictor_port, ports.predictor_grpc_port = http, grpc
            found = local_stack.services(ports, str(shadow), {})
            challenger = next(spec for spec in found if spec.name == "predictor")
            challenger.name = "challenger"
            pin = read_metadata(shadow)["onnx_sha256"]
            challenger.command = [*challenger.command, "--expected_sha256", pin]
            specs["challenger"] = challenger
            shadow_flag = ["--shadow", f"challenger=100,{HOST}:{grpc},{HOST}:{http}"]
            specs["transformer"].command = [*specs["transformer"].command, *shadow_flag]
        restarted = [name for name in names if name in specs]
        for name in [*restarted, *(["challenger"] if shadow is None else [])]:
            if name in self.services:
                self.services.pop(name).stop()
        for name in restarted:
            self.services[name] = self.stack.start(specs[name])
        for name in restarted:
            self.services[name].wait_ready(timeout=self.args.timeout)

    def send(self, houses: pd.DataFrame) -> None:
        """Each house as one prediction; its label ``--label-delay`` requests later (the rest at the end)."""
        import httpx

        from model.schema import DEFAULT_FEATURES, TARGET

        url = f"{self.services['transformer'].url}/v1/models/housing:predict"
        feedback = f"{self.services['detector'].url}/feedback"
        waiting: list[tuple[str, float]] = []
        with httpx.Client(timeout=30) as client:
            for _, house in houses.iterrows():
                instance = {name: float(house[name]) for name in DEFAULT_FEATURES}
                answer = client.post(url, json={"instances": [instance]})
                answer.raise_for_status()
                waiting.append((answer.headers["x-request-id"], float(house[TARGET])))
                if len(waiting) > self.args.label_delay:
                    self.label(client, feedback, *waiting.pop(0))
            for item in waiting:
                self.label(client, feedback, *item)
        delay = self.args.label_delay
        print(f"sent {len(houses)} houses and their labels (each {delay} requests late)", flush=True)

    def label(self, client: Any, url: str, request_id: str, value: float) -> None:
        """``POST /feedback``, again while the detector answers 404: the request logger sends in batches."""

        def accepted() -> bool:
            answer = client.post(url, json={"id": request_id, "value": value})
            if answer.status_code not in (200, 404):
                raise RuntimeError(f"/feedback answered {answer.status_code}: {answer.text[:200]}")
            return bool(answer.status_code == 200)

        wait_until(accepted, timeout=self.args.timeout, what=f"the detector to know request {request_id}")

    def predict_one(self) -> str:
        """One prediction through the transformer; the version that answered, named as :func:`named` does."""
        import httpx

        from model.dataset import load_dataset
        from model.schema import DEFAULT_FEATURES

        house = load_dataset().iloc[0]
        instance = {name: float(house[name]) for name in DEFAULT_FEATURES}
        url = f"{self.services['transformer'].url}/v1/models/housing:predict"
        answer = httpx.post(url, json={"instances": [instance]}, timeout=30)
        answer.raise_for_status()
        served = httpx.get(f"{self.services['predictor'].url}/v2/models/housing", timeout=30).json()
        return named({"version": answer.headers.get("x-model-version", "?"), **served["parameters"]})

    # --- reading the detector and the artifacts --------------------------------------------------------

    def wait(self, found: Callable[[dict[str, Any]], Any], what: str) -> dict[str, Any]:
        """Poll the detector's ``/status`` until ``found(status)`` is true; that status."""
        import httpx

        seen: list[dict[str, Any]] = []

        def check() -> bool:
            status = httpx.get(self.services["detector"].url + "/status", timeout=10).json()
            seen.append(status)
            return bool(found(status))

        wait_until(check, timeout=self.args.timeout, what=what)
        return seen[-1]

    def await_artifact(self) -> Path:
        """The artifact the retrain wrote (the latest under the run's var dir)."""
        from model.paths import latest_artifact

        wait_until(lambda: latest_artifact() is not None, timeout=self.args.timeout,
                   what="the retrained artifact (see the detector's log)")  # fmt: skip
        artifact = latest_artifact()
        assert artifact is not None
        return artifact

    def coverage(self, key: str, status: dict[str, Any] | None = None) -> str:
        """The live coverage of ``key``'s 90% intervals, as one phrase (``/status`` read if not given)."""
        status = status or self.wait(lambda s: True, "the detector's status")
        found = ((status["keys"].get(key) or {}).get("coverage") or {}).get("0.9")
        if not found:
            return f"{key} has no labelled interval yet"
        share, labels, width = found["coverage"], found["labels"], found["width"]
        return (
            f"{key}'s 90% intervals hold {share:.0%} of its last {labels} labelled prices (width {width:.1f})"
        )

    @staticmethod
    def live(status: dict[str, Any], key: str) -> str:
        """Live and estimated accuracy of ``key`` as one phrase."""
        entry = status["keys"].get(key, {})
        live, estimate = entry.get("live") or {}, entry.get("estimate") or {}
        parts = [f"{live.get('labels', 0)} labels"]
        if live.get("mae") is not None:
            parts.append(f"live MAE {live['mae']:.2f}, R² {live['r2']:.2f}")
        if estimate:
            parts.append(f"estimated MAE {estimate['mae']:.2f}")
        return ", ".join(parts)


def out_path(root: Path, path: Path) -> str:
    """``path`` relative to ``root`` when inside it (shorter lines)."""
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
