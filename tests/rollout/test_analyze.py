"""``housing rollout analyze`` against a real Prometheus scraping two real predictors (stable and canary).

Everything here is real except the Kubernetes API server that ``--auto`` writes to (the mock of
``conftest.py``: no cluster runs here). Prometheus scrapes every second; the targets carry
``component="predictor"`` and ``endpoint="default"|"canary"`` as on AKS.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest

from housing.cli import main
from housing.processes import free_port, python_service, wait_until
from housing.rollout import analysis, objects
from model.dataset import load_dataset
from model.schema import ALL_FEATURES, DEFAULT_FEATURES, TARGET
from tests.conftest import require_tool
from tests.rollout.shapes import CANARY_URI, chart_like, mark_ready
from tests.rollout.shapes import canary as start_canary

ROWS_PER_REQUEST = 5
REQUESTS = 40


def start_predictor(name: str, artifact: Path, log_dir: Path):
    port = free_port()
    service = python_service(
        name,
        [
            "-m",
            "predictor",
            "--model_name",
            "housing",
            "--storage_uri",
            str(artifact),
            "--http_port",
            str(port),
            "--grpc_port",
            str(free_port()),
        ],
        log_dir,
    )
    service.start().wait_ready(f"http://127.0.0.1:{port}/v2/models/housing/ready", timeout=120)
    return service, f"127.0.0.1:{port}"


def send(address: str, requests: int, offset: int = 0) -> list[int]:
    """V2 inference requests of real rows (default features), ``ROWS_PER_REQUEST`` each; the status codes."""
    frame = load_dataset()
    codes = []
    with httpx.Client(timeout=10.0) as client:
        for index in range(offset, offset + requests):
            start = (index * ROWS_PER_REQUEST) % (len(frame) - ROWS_PER_REQUEST)
            rows = frame[list(DEFAULT_FEATURES)].iloc[start : start + ROWS_PER_REQUEST].to_numpy()
            body = {
                "inputs": [
                    {
                        "name": "input-0",
                        "shape": list(rows.shape),
                        "datatype": "FP64",
                        "data": rows.ravel().tolist(),
                    }
                ]
            }
            codes.append(client.post(f"http://{address}/v2/models/housing/infer", json=body).status_code)
    return codes


def scraped_after(prometheus, moment: float) -> bool:
    """Whether every target has been scraped since ``moment`` (epoch seconds)."""
    result = prometheus.query("min(timestamp(up))")
    return bool(result) and float(result[0]["value"][1]) > moment + 0.5


@pytest.fixture(scope="module")
def stable(artifact_dir: Path, tmp_path_factory) -> Iterator[str]:
    service, address = start_predictor("stable", artifact_dir, tmp_path_factory.mktemp("stable"))
    yield address
    service.stop()


@pytest.fixture(scope="module")
def canary_artifacts(tmp_path_factory) -> dict[str, Path]:
    """A good canary (another seed), one that needs ``b`` (clients don't send it: 400s), one trained on a
    target scaled by 0.6 (its predictions shift)."""
    from model.train import build_artifact

    root = tmp_path_factory.mktemp("canaries")
    shifted = load_dataset()
    shifted[TARGET] = shifted[TARGET] * 0.6
    shifted.to_csv(root / "shifted.csv", index=False)
    return {
        "good": build_artifact(root / "good", fast=True, seed=7),
        "needs_b": build_artifact(root / "needs_b", features=ALL_FEATURES, fast=True),
        "shifted": build_artifact(root / "shifted", fast=True, data=root / "shifted.csv"),
    }


@contextmanager
def canary_with_prometheus(stable: str, artifact: Path, directory: Path):
    """A canary predictor and a fresh Prometheus scraping it and the stable one; both stopped afterwards."""
    require_tool("prometheus")
    from housing.prometheus import Target, start_prometheus

    service, address = start_predictor("canary", artifact, directory)
    prometheus = None
    try:
        prometheus = start_prometheus(
            directory / "prometheus",
            [Target("predictor", stable, "default"), Target("predictor", address, "canary")],
            free_port(),
            scrape_interval="1s",
        )
        prometheus.wait_for_targets(2, timeout=30)  # both up
        # One request each, then a scrape: every series exists before the measured traffic, so that
        # increase() counts all of it (Prometheus cannot count what a series held at its first sample).
        send(stable, 1), send(address, 1)
        warmed = time.time()
        wait_until(lambda: scraped_after(prometheus, warmed), timeout=30, what="a scrape after the warm-up")
        yield prometheus, address
    finally:
        if prometheus is not None:
            prometheus.stop()
        service.stop()


def traffic(prometheus, stable: str, canary: str) -> tuple[list[int], list[int]]:
    stable_codes, canary_codes = send(stable, REQUESTS), send(canary, REQUESTS)
    done = time.time()
    wait_until(lambda: scraped_after(prometheus, done), timeout=30, what="a scrape after the traffic")
    return stable_codes, canary_codes


def analyze(prometheus, *extra: str) -> int:
    return main(["rollout", "analyze", "housing", "--prometheus", prometheus.url, "--window", "2m", *extra])


@pytest.mark.slow
def test_good_canary_is_promoted(stable, canary_artifacts, tmp_path, capsys, api_server, kubeconfig):
    with canary_with_prometheus(stable, canary_artifacts["good"], tmp_path) as (prometheus, canary):
        assert analyze(prometheus) == analysis.INCONCLUSIVE  # one request is not enough to judge
        assert "recommendation: inconclusive" in capsys.readouterr().out

        stable_codes, canary_codes = traffic(prometheus, stable, canary)
        assert set(stable_codes) == set(canary_codes) == {200}
        assert analyze(prometheus) == analysis.PROMOTE
        out = capsys.readouterr().out
        assert "recommendation: promote" in out and "FAIL" not in out and "no data" not in out

        strict = tmp_path / "slo.yaml"
        strict.write_text("max_p95_seconds: 0.0000001\nmax_error_rate: 0.01\n")
        assert analyze(prometheus, "--slo", str(strict)) == analysis.ROLLBACK
        latency_row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("p95"))
        assert latency_row.endswith("FAIL")

        api_server.after_create = mark_ready
        api_server.put_object(chart_like("Standard"))
        assert start_canary(kubeconfig) == 0
        assert analyze(prometheus, "--auto", "--kubeconfig", str(kubeconfig)) == analysis.PROMOTE
        promoted = api_server.get_object("ml", "housing")
        assert objects.routes(promoted) == []
        assert objects.read_model(promoted["spec"]["predictor"]).storage_uri == CANARY_URI
        assert ("ml", "housing-canary") not in api_server.objects


@pytest.mark.slow
def test_canary_with_errors_is_rolled_back(
    stable, canary_artifacts, tmp_path, capsys, api_server, kubeconfig
):
    with canary_with_prometheus(stable, canary_artifacts["needs_b"], tmp_path) as (prometheus, canary):
        stable_codes, canary_codes = traffic(prometheus, stable, canary)
        assert set(stable_codes) == {200} and set(canary_codes) == {400}
        api_server.after_create = mark_ready
        obj = api_server.put_object(chart_like("Knative"))
        assert start_canary(kubeconfig) == 0
        capsys.readouterr()
        assert analyze(prometheus, "--auto", "--kubeconfig", str(kubeconfig)) == analysis.ROLLBACK
        out = capsys.readouterr().out
        error_row = next(line for line in out.splitlines() if line.startswith("error rate"))
        assert error_row.split()[2:4] == ["0", "1"] and error_row.endswith("FAIL")
        assert "recommendation: roll back" in out
        restored = api_server.get_object("ml", "housing")
        assert restored["spec"] == obj["spec"]
        assert ("ml", "housing-canary") not in api_server.objects


@pytest.mark.slow
def test_canary_with_shifted_predictions_is_rolled_back(stable, canary_artifacts, tmp_path, capsys):
    with canary_with_prometheus(stable, canary_artifacts["shifted"], tmp_path) as (prometheus, canary):
        stable_codes, canary_codes = traffic(prometheus, stable, canary)
        assert set(stable_codes) == set(canary_codes) == {200}
        assert analyze(prometheus) == analysis.ROLLBACK
        out = capsys.readouterr().out
        ks_row = next(line for line in out.splitlines() if line.startswith("prediction KS D"))
        assert ks_row.endswith("FAIL") and float(ks_row.split()[4]) > 0.2
        error_row = next(line for line in out.splitlines() if line.startswith("error rate"))
        assert error_row.endswith("ok")


def test_unreachable_prometheus_is_exit_3(capsys):
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["rollout", "analyze", "housing", "--prometheus", url]) == 3
    assert "unreachable" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("max_error_rat: 0.01\n", "unknown SLO keys ['max_error_rat']"),
        ("max_error_rate: lots\n", "max_error_rate must be a float, got 'lots'"),
        ("- 0.01\n", "an SLO file is a mapping"),
        ("max_error_rate: [\n", "cannot read the SLO file"),
    ],
)
def test_bad_slo_file_is_refused(tmp_path, capsys, text, message):
    slo = tmp_path / "slo.yaml"
    slo.write_text(text)
    command = ["rollout", "analyze", "housing", "--prometheus", "http://127.0.0.1:1", "--slo", str(slo)]
    assert main(command) == 3
    assert message in capsys.readouterr().err


def test_slo_file_values(tmp_path):
    slo = tmp_path / "slo.json"
    slo.write_text('{"max_p95_seconds": 0.1, "min_requests": "200"}')
    loaded = analysis.Slo.from_file(slo)
    assert loaded.max_p95_seconds == 0.1 and loaded.min_requests == 200 and loaded.max_error_rate == 0.01


def test_binned_ks_matches_scipy_on_the_bin_bounds():
    from scipy.stats import ks_2samp

    rng = np.random.default_rng(0)
    bounds = [5, 10, 15, 20, 25, 30, 35, 40, 45, 50, math.inf]
    stable, canary = rng.normal(22, 8, 400), rng.normal(30, 8, 300)

    def cumulative(values):
        return {bound: float(np.sum(values <= bound)) for bound in bounds}

    result = analysis.binned_ks({"default": cumulative(stable), "canary": cumulative(canary)})
    assert result is not None
    distance, p_value = result
    # Binned values give the exact KS of the values rounded up to their bucket bound.
    exact = ks_2samp(np.digitize(stable, bounds, right=True), np.digitize(canary, bounds, right=True))
    assert distance == pytest.approx(exact.statistic)
    assert p_value < 1e-6
    assert analysis.binned_ks({"default": cumulative(stable), "canary": cumulative(stable)}) == (0.0, 1.0)
    assert analysis.binned_ks({"default": cumulative(stable)}) is None
