"""Shared fixtures: tools (strict or skipping), Azurite, a trained artifact, no process left behind.

Processes (free ports, services with their logs, readiness, stopping) are housing/processes.py's, as for
``housing up`` and the benchmarks. Every :class:`~housing.processes.Service` a test or a fixture starts is
stopped when that test ends (or, started by a module or session fixture, when the session ends), whether it
passed or failed: a failing test once left its Azurite running for 42 minutes. ``STRICT_TOOLS=1`` (CI)
turns every "tool missing" skip into a failure: a green CI run means every check ran.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from housing.processes import Service, free_port
from housing.stack import AZURITE_ACCOUNT, azurite_connection_string, azurite_service

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
STRICT = os.environ.get("STRICT_TOOLS") == "1"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The image tests run last: ``./dev test`` builds the images in the background meanwhile."""
    items.sort(key=lambda item: item.get_closest_marker("images") is not None)


def require(condition: bool, reason: str) -> None:
    """Skip the test with a visible reason, or fail it in strict mode (CI)."""
    if condition:
        return
    if STRICT:
        pytest.fail(f"STRICT_TOOLS=1 and {reason}", pytrace=False)
    pytest.skip(reason)


def require_tool(name: str) -> str:
    """The path of a command-line tool, or skip (fail in strict mode) when it is not installed."""
    path = shutil.which(name)
    require(path is not None, f"{name} is not installed (./dev setup installs it)")
    return str(path)


def require_shared(relative: str) -> Path:
    """A file from ../shared/, or skip (fail in strict mode) when it is absent."""
    path = SHARED / relative
    require(path.exists(), f"{path} is absent")
    return path


@dataclass(frozen=True)
class Azurite:
    """A running Azurite Blob endpoint."""

    port: int
    service: Service

    @property
    def connection_string(self) -> str:
        return azurite_connection_string(self.port)

    def url(self, container: str, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}/{AZURITE_ACCOUNT}/{container}/{path}".rstrip("/")


_OPEN_SCOPES: list[list[Service]] = []
"""Services started while each scope is open: the session's, then the running test's."""


@pytest.fixture(scope="session", autouse=True)
def _no_process_outlives_the_session() -> Iterator[None]:
    """Record every Service started (Service.start); stop those still running when the session ends."""
    original = Service.start

    def start(service: Service, *args: Any, **kwargs: Any) -> Service:
        for scope in _OPEN_SCOPES:
            scope.append(service)
        return original(service, *args, **kwargs)

    session: list[Service] = []
    _OPEN_SCOPES.append(session)
    Service.start = start  # type: ignore[method-assign]
    try:
        yield
    finally:
        Service.start = original  # type: ignore[method-assign]
        _close(session)


@pytest.fixture(autouse=True)
def _no_process_outlives_its_test() -> Iterator[None]:
    """Stop what the test and its function-scoped fixtures started and left running (a failed assertion).

    Module and session fixtures are set up before this one (pytest orders fixtures by scope), so what they
    start is not the test's: the session fixture above stops it at the end at the latest.
    """
    started: list[Service] = []
    _OPEN_SCOPES.append(started)
    try:
        yield
    finally:
        _close(started)


def _close(scope: list[Service]) -> None:
    """Stop the services started in ``scope`` (the last first) and stop recording into it."""
    _OPEN_SCOPES[:] = [other for other in _OPEN_SCOPES if other is not scope]  # lists compare equal by value
    for service in reversed(scope):
        service.stop()


def start_azurite(directory: Path, port: int | None = None) -> Azurite:
    """Start a real Azurite Blob service (always with telemetry off) and wait until it answers."""
    require_tool("azurite-blob")
    port = port or free_port()
    service = azurite_service(directory, port)
    service.log_path = directory / "azurite.log"
    try:
        return Azurite(port=port, service=service.start().wait_ready(timeout=30))
    except BaseException:
        service.stop()
        raise


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """One Azurite for the session; ``AZURE_STORAGE_CONNECTION_STRING`` is set while it runs."""
    instance = start_azurite(tmp_path_factory.mktemp("azurite"))
    previous = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
    os.environ["AZURE_STORAGE_CONNECTION_STRING"] = instance.connection_string
    try:
        yield instance
    finally:
        instance.service.stop()
        if previous is None:
            os.environ.pop("AZURE_STORAGE_CONNECTION_STRING", None)
        else:
            os.environ["AZURE_STORAGE_CONNECTION_STRING"] = previous


@pytest.fixture(scope="session")
def artifact_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real model artifact trained once per session in fast mode (default features, no MLflow)."""
    from model.train import build_artifact

    return build_artifact(tmp_path_factory.mktemp("artifact"), fast=True)
