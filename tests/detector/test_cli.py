"""``python -m detector`` start-up: help, and settings refused before anything starts."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT


def detector(*args: str) -> subprocess.CompletedProcess[str]:
    environment = {"PATH": "", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "detector", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=environment,
    )


def test_help_lists_the_settings() -> None:
    done = detector("--help")
    assert done.returncode == 0
    for flag in (
        "--storage_uri",
        "--window_size",
        "--threshold",
        "--retrain_action",
        "--state_dir",
        "--cooldown",
    ):
        assert flag in done.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "--storage_uri (or STORAGE_URI) is required"),
        (("--storage_uri", "x", "--retrain_action", "webhook"), "needs --retrain_webhook"),
        (("--storage_uri", "x", "--retrain_action", "k8s-job"), "needs --job_template"),
        (("--storage_uri", "x", "--correction", "holm"), "invalid choice"),
    ],
)
def test_bad_settings_fail_at_start(args: tuple[str, ...], message: str) -> None:
    done = detector(*args)
    assert done.returncode != 0 and message in done.stderr
