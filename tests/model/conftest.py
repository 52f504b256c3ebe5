"""Fixtures of the training tests: crafted data files and an isolated MLflow store and var/ folder."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from model.dataset import BUNDLED_DATA


@pytest.fixture
def write_csv(tmp_path: Path) -> Callable[[pd.DataFrame], Path]:
    """Write a data frame as a CSV in tmp and return its path."""

    def write(frame: pd.DataFrame, name: str = "data.csv") -> Path:
        path = tmp_path / name
        frame.to_csv(path, index=False)
        return path

    return write


@pytest.fixture
def bundled() -> pd.DataFrame:
    """The bundled data as read from disk, unvalidated (so tests can break it)."""
    return pd.read_csv(BUNDLED_DATA)


@pytest.fixture(scope="session")
def empty_mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real, empty MLflow SQLite store: creating its schema takes seconds, so tests copy this one."""
    import mlflow

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    mlflow.MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, empty_mlflow_store: Path) -> Path:
    """A private var/ folder and a private copy of a real SQLite MLflow store; returns the var folder."""
    var = tmp_path / "var"
    database = shutil.copy(empty_mlflow_store, tmp_path / "mlflow.db")
    monkeypatch.setenv("HOUSING_VAR_DIR", str(var))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{database}")
    return var


def housing(*args: str) -> list[str]:
    """The command line of ``housing ARGS`` run with this interpreter."""
    return [sys.executable, "-m", "housing", *args]
