"""``housing drift``: the batch comparison of two CSV files (exit codes, table, reports)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from model.dataset import load_dataset
from tests.conftest import ROOT
from tests.detector.conftest import drift, without_alibi


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("drift-csv")
    data = load_dataset()
    reference = data.sample(300, random_state=0)
    current = data.drop(reference.index)
    shifted = current.copy()
    shifted["rm"] += data["rm"].std()
    paths = {
        "reference": directory / "reference.csv",
        "current": directory / "current.csv",
        "shifted": directory / "shifted.csv",
        "bad": directory / "bad.csv",
    }
    reference.to_csv(paths["reference"], index=False)
    current.to_csv(paths["current"], index=False)
    shifted.to_csv(paths["shifted"], index=False)
    broken = current.head(5).copy()
    broken["nox"] = broken["nox"].astype(object)
    broken.loc[broken.index[2], "nox"] = "high"
    broken.to_csv(paths["bad"], index=False)
    return paths


def test_same_distribution_exits_0_with_a_table(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert drift("--reference-data", str(files["reference"]), "--current-data", str(files["current"])) == 0
    out = capsys.readouterr().out
    assert "feature" in out and "PSI" in out and "JS dist" in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.split()}
    assert set(lines) >= {"crim", "chas", "rm", "lstat", "b"}  # b is compared when both files have it
    assert lines["chas"].split()[1] == "chi2"
    assert "no drift" in out.splitlines()[-1]


def test_shift_exits_1_and_writes_reports(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png, page = tmp_path / "report.png", tmp_path / "out" / "report.html"
    common = [
        "--reference-data",
        str(files["reference"]),
        "--current-data",
        str(files["shifted"]),
        "--threshold",
        "0.3",
    ]
    assert drift(*common, "--report", str(png)) == 1
    out = capsys.readouterr().out
    rm = next(line for line in out.splitlines() if line.startswith("rm "))
    assert rm.endswith("YES")
    assert "DRIFT" in out.splitlines()[-2]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert drift(*common, "--report", str(page), "--correction", "bonferroni") == 1
    text = page.read_text()
    # The page itself is read in a browser by tests/detector/test_report.py.
    assert "Drift report: DRIFT" in text and "<td>rm</td>" in text and "<svg" in text
    # A threshold of 1 can never be exceeded: no drift.
    assert (
        drift(
            "--reference-data",
            str(files["reference"]),
            "--current-data",
            str(files["shifted"]),
            "--threshold",
            "1",
        )
        == 0
    )


def test_predictions_column_is_compared(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reference, current = pd.read_csv(files["reference"]), pd.read_csv(files["current"])
    reference["prediction"], current["prediction"] = reference["medv"], current["medv"] + 15
    reference.to_csv(tmp_path / "r.csv", index=False)
    current.to_csv(tmp_path / "c.csv", index=False)
    assert drift("--reference-data", str(tmp_path / "r.csv"), "--current-data", str(tmp_path / "c.csv")) == 0
    prediction = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("prediction"))
    assert prediction.endswith("YES")  # prediction drift is reported; the verdict is on the inputs


def test_unusable_input_exits_2(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert drift("--reference-data", str(files["reference"]), "--current-data", str(files["bad"])) == 2
    assert "row 2, column 'nox': must be a number, got 'high'" in capsys.readouterr().err
    assert (
        drift("--reference-data", str(files["reference"]), "--current-data", str(tmp_path / "missing.csv"))
        == 2
    )
    assert "cannot read CSV" in capsys.readouterr().err
    assert (
        drift(
            "--reference-data",
            str(files["reference"]),
            "--current-data",
            str(files["current"]),
            "--report",
            str(tmp_path / "r.pdf"),
        )
        == 2
    )
    assert (
        drift(
            "--reference-data",
            str(files["reference"]),
            "--current-data",
            str(files["current"]),
            "--threshold",
            "3",
        )
        == 2
    )
    assert "threshold must be in [0, 1]" in capsys.readouterr().err


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        drift("--help")
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "--reference-data" in out and "--current-data" in out and "--report" in out


def housing(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m housing ARGS`` in a process of its own (STATS_BACKEND only as ``env`` says)."""
    inherited = {name: value for name, value in os.environ.items() if name != "STATS_BACKEND"}
    return subprocess.run(
        [sys.executable, "-m", "housing", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**inherited, **(env or {})},
        check=False,
    )


@pytest.mark.slow
def test_either_statistics_backend_prints_the_same_table(files: dict[str, Path], tmp_path: Path) -> None:
    """alibi-detect, then scipy with alibi-detect absent: the same table and verdict; the backend's noise kept
    back unless the log level is DEBUG."""
    compared = ["drift", "--reference-data", str(files["reference"]), "--current-data", str(files["shifted"])]
    alibi = housing(*compared)
    scipy = housing(*compared, "--stats-backend", "scipy", env=without_alibi(tmp_path))
    assert alibi.returncode == scipy.returncode == 1
    assert scipy.stdout == alibi.stdout  # p-values included
    assert "PyTorch" not in alibi.stderr  # transformers' advisory line, kept back at INFO
    missing = housing(*compared, env=without_alibi(tmp_path))  # the default backend, not installed
    assert missing.returncode == 2 and "STATS_BACKEND=scipy" in missing.stderr
    verbose = housing("--log-level", "DEBUG", *compared)
    assert "None of PyTorch, TensorFlow >= 2.0, or Flax have been found" in verbose.stderr
