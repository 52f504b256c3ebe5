"""Shared fixtures: tools (strict or skipping), free ports, real server processes, Azurite.

``STRICT_TOOLS=1`` (CI) turns every "tool missing" skip into a failure: a green CI run means every check ran.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from housing.stack import AZURITE_ACCOUNT, AZURITE_KEY, free_port, stop_process

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
STRICT = os.environ.get("STRICT_TOOLS") == "1"


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


def wait_until(check, timeout: float = 60.0, interval: float = 0.1, what: str = "condition") -> None:
    """Poll ``check()`` until it returns true, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(interval)
    raise TimeoutError(f"{what} not reached within {timeout:.0f} s")


def http_ok(url: str) -> bool:
    """Whether a GET of ``url`` answers 200."""
    return httpx.get(url, timeout=2.0).status_code == 200


@dataclass
class Service:
    """A real server process started by a test, with its log kept for failure reports."""

    name: str
    command: Sequence[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen | None = None

    def start(self) -> Service:
        environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **self.env}
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop())
        self.process = subprocess.Popen(
            list(self.command), stdout=self._log, stderr=subprocess.STDOUT, env=environment, cwd=ROOT
        )
        return self

    def wait_ready(self, url: str, timeout: float = 60.0) -> Service:
        def ready() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log()}")
            return http_ok(url)

        try:
            wait_until(ready, timeout=timeout, what=f"{self.name} ready at {url}")
        except TimeoutError as error:
            raise TimeoutError(f"{error}\n--- {self.name} log ---\n{self.log()}") from None
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-8000:] if self.log_path.exists() else ""

    def stop(self, timeout: float = 15.0) -> None:
        if self.process is not None:
            stop_process(self.process, timeout)
            self._log.close()


def python_service(
    name: str, args: Sequence[str], log_dir: Path, env: dict[str, str] | None = None
) -> Service:
    """A ``python -m ...`` service run with this interpreter (so coverage follows it)."""
    return Service(name, [sys.executable, *args], log_dir / f"{name}.log", env or {})


@dataclass(frozen=True)
class Azurite:
    """A running Azurite Blob endpoint."""

    port: int
    service: Service

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{self.port}/{AZURITE_ACCOUNT};"
        )

    def url(self, container: str, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}/{AZURITE_ACCOUNT}/{container}/{path}".rstrip("/")


def start_azurite(directory: Path, port: int | None = None) -> Azurite:
    """Start a real Azurite Blob service (always with telemetry off) and wait until it answers."""
    binary = require_tool("azurite-blob")
    port = port or free_port()
    directory.mkdir(parents=True, exist_ok=True)
    service = Service(
        "azurite",
        [
            binary,
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(port),
            "--location",
            str(directory),
            "--silent",
            "--skipApiVersionCheck",
            "--disableTelemetry",
            "--loose",
        ],
        directory / "azurite.log",
    ).start()
    wait_until(
        lambda: socket.create_connection(("127.0.0.1", port), timeout=1).close() is None,
        timeout=30,
        what="Azurite listening",
    )
    return Azurite(port=port, service=service)


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """One Azurite for the session; ``AZURE_STORAGE_CONNECTION_STRING`` is set while it runs."""
    instance = start_azurite(tmp_path_factory.mktemp("azurite"))
    previous = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
    os.environ["AZURE_STORAGE_CONNECTION_STRING"] = instance.connection_string
    yield instance
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
