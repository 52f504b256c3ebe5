"""``./dev bench sticky``: does every user of a sticky A/B test meet one model, at the weights?

A real transformer with ``--canary b=WEIGHT,... --sticky_header x-user-id`` in front of two predictors (two
models of different seeds). ``--requests`` requests (default 10,000) come from ``--users`` users (1,000), each
request from a user drawn at random, as interleaved traffic arrives; each answer says its arm
(``x-housing-arm``) and model version (``x-model-version``). Printed: the share of requests answered by the
same arm and version as their user's first request (the target: 100%), and the canary's share of requests
and of users against its weight (the target: within 3 points); then, for comparison, requests without the
header (drawn at random: users meet both arms).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.serving import predictor_service
from housing.processes import Service, Stack, free_port


def main(argv: list[str] | None = None) -> int:
    """Send the requests, print stickiness and the split."""
    parser = argparse.ArgumentParser(prog="./dev bench sticky", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000, help="requests (default 10,000)")
    parser.add_argument("--users", type=int, default=1_000, help="users (default 1,000)")
    parser.add_argument("--weight", type=int, default=30, help="the canary's percent (default 30)")
    args = parser.parse_args(argv)

    import httpx

    from model.artifact import load_artifact
    from model.dataset import load_dataset
    from model.schema import DEFAULT_FEATURES
    from model.train import build_artifact

    work = Path(tempfile.mkdtemp(prefix="bench-sticky-"))
    artifacts = {
        name: build_artifact(work / name, fast=True, seed=seed) for name, seed in (("a", 1), ("b", 2))
    }
    versions = {name: load_artifact(path).version for name, path in artifacts.items()}
    houses = load_dataset()[list(DEFAULT_FEATURES)].to_dict(orient="records")
    stack = Stack(work)
    (stable, stable_grpc), (canary, canary_grpc) = (predictor_service(n, artifacts[n], work) for n in "ab")
    port = free_port()
    transformer = Service(
        "transformer",
        [sys.executable, "-m", "transformer", "--protocol", "grpc-v2",
         "--predictor_host", f"127.0.0.1:{stable_grpc}", "--predictor_rest_host", f"127.0.0.1:{stable.port}",
         "--canary", f"b={args.weight},127.0.0.1:{canary_grpc},127.0.0.1:{canary.port}",
         "--sticky_header", "x-user-id", "--http_port", str(port), "--grpc_port", str(free_port())],
        port,
        log_path=work / "transformer.log",
        ready_path="/v2/health/ready",
    )  # fmt: skip
    rng = np.random.default_rng(0)
    first: dict[str, tuple[str, str]] = {}  # user -> the arm and version of their first answer
    met: dict[str, set[tuple[str, str]]] = {}  # user -> every arm and version that answered them
    same = on_canary = 0
    try:
        for service in (stable, canary, transformer):
            stack.start(service)
        for service in (stable, canary, transformer):
            stack.wait_ready(service, timeout=120)
        url = f"{transformer.url}/v1/models/housing:predict"
        with httpx.Client(timeout=30) as client:

            def ask(headers: dict[str, str]) -> tuple[str, str]:
                house = houses[int(rng.integers(len(houses)))]
                answer = client.post(url, json={"instances": [house]}, headers=headers)
                answer.raise_for_status()
                return answer.headers["x-housing-arm"], answer.headers["x-model-version"]

            for number in range(1, args.requests + 1):
                user = f"user-{rng.integers(args.users)}"
                seen = ask({"x-user-id": user})
                same += first.setdefault(user, seen) == seen
                met.setdefault(user, set()).add(seen)
                on_canary += seen[0] == "b"
                if number % 2000 == 0:
                    print(f"  {number} requests", file=sys.stderr, flush=True)
            anonymous = [ask({})[0] for _ in range(1000)]
    finally:
        stack.stop()

    users_on_canary = sum(arm == "b" for arm, _ in first.values()) / len(first)
    print(f"{args.requests} requests from {len(first)} users, canary weight {args.weight}%, "
          f"models a={versions['a']} b={versions['b']}")  # fmt: skip
    print("| measure | value | target |")
    print("|---|---|---|")
    print(f"| requests on their user's first arm and version | {same / args.requests:.2%} | 100% |")
    print(f"| requests answered by the canary | {on_canary / args.requests:.1%} | {args.weight} ± 3% |")
    print(f"| users on the canary | {users_on_canary:.1%} | {args.weight} ± 3% |")
    print(f"| users who met more than one model | {sum(len(seen) > 1 for seen in met.values())} | 0 |")
    print(f"| without x-user-id (random), on the canary | {anonymous.count('b') / len(anonymous):.1%} | - |")
    return 0
