"""Fixtures of the image tests: the images built once per session, what each holds, the stack run from them.

The images come from ``images.build.ensure`` (what ``./dev images`` runs): built once per run, reused
after; ``./dev test`` starts that build in the background when it runs the whole suite, and these tests run
last (tests/conftest.py), so they usually find the images built. The stack is docker/compose.yaml's, run with
podman (tests/images/compose.py): MLflow and the trainer from the trainer image, the trainer training (in
``--fast`` mode: seconds, not the minutes of nested cross-validation) and publishing the artifact to Azurite,
then the predictor, explainer and detector serving that artifact from Azurite, and the transformer in front.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest.mock import patch

import httpx
import pytest

from housing.processes import Service, free_port, listening, wait_until
from housing.stack import AZURITE_ACCOUNT, azurite_connection_string, azurite_service
from images.build import IMAGES, RUNTIME, Built, ensure
from tests.conftest import ROOT, require, require_tool
from tests.images.compose import Compose, Container, podman, podman_process, ulimits

READY = {"mlflow": ("/health", 5000)}
"""Where a service says it is ready, when not ``/v2/health/ready`` on 8080 (the detector has it too)."""

LICENCES = ROOT / "scripts" / "check_licences.py"
"""The licence checker, mounted into each image and run by the image's own Python."""
# What each image reports about itself, in one container run: run by the image's own Python, standard
# library only, with what `python -m pip` and the licence checker (--json) answer there.
INVENTORY = r"""
import importlib.util, json, os, platform, shutil, subprocess, sys
from importlib import metadata
version = sys.implementation.version
environment = {
    "implementation_name": sys.implementation.name,
    "implementation_version": f"{version.major}.{version.minor}.{version.micro}",
    "os_name": os.name, "platform_machine": platform.machine(), "platform_release": platform.release(),
    "platform_system": platform.system(), "platform_version": platform.version(),
    "python_full_version": platform.python_version(),
    "platform_python_implementation": platform.python_implementation(),
    "python_version": ".".join(platform.python_version_tuple()[:2]), "sys_platform": sys.platform,
}
pip = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True, text=True)
licences = subprocess.run([sys.executable, "-I", sys.argv[1], "--json"], capture_output=True, text=True)
print(json.dumps({
    "uid": os.getuid(), "gid": os.getgid(), "executable": sys.executable, "python": platform.python_version(),
    "pip": importlib.util.find_spec("pip") is not None,
    "pip_run": {"code": pip.returncode, "output": pip.stdout + pip.stderr},
    "licences": {"code": licences.returncode, "stdout": licences.stdout, "stderr": licences.stderr},
    "sklearn": importlib.util.find_spec("sklearn") is not None,
    "compilers": [name for name in ("cc", "gcc", "g++", "c++", "clang", "tcc") if shutil.which(name)],
    "stats_backend": os.environ.get("STATS_BACKEND"),
    "distributions": {d.metadata["Name"]: {"version": d.version, "requires": d.requires or []}
                      for d in metadata.distributions()},
    "environment": environment,
}))
"""


@pytest.fixture(scope="session")
def built() -> dict[str, Built]:
    """Every image (the five and detector-oss), built or found up to date once per session."""
    for tool in ("buildah", "podman", "mmdebstrap", RUNTIME):
        require_tool(tool)
    require(os.geteuid() == 0, "building and running images here needs root (rootful buildah and podman)")
    return {item.image.name: item for item in ensure(list(IMAGES), say=lambda line: print(line, flush=True))}


def run_in(image: str, *args: str, volumes: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    """Run ``python ARGS`` in a fresh container of ``image``, as its own user, with no network."""
    mounts = [option for volume in volumes for option in ("--volume", volume)]
    return podman_process(
        "run", "--rm", "--network", "none", *ulimits(), *mounts, "--entrypoint", "python", image, *args
    )


@pytest.fixture(scope="session")
def inventories(built: dict[str, Built]) -> dict[str, dict[str, Any]]:
    """What each image holds and runs as (:data:`INVENTORY`), one container run per image."""
    checker = f"{LICENCES}:/checks/{LICENCES.name}:ro"
    return {
        name: json.loads(
            run_in(item.id, "-I", "-c", INVENTORY, f"/checks/{LICENCES.name}", volumes=[checker]).stdout
        )
        for name, item in built.items()
    }


@dataclass
class Stack:
    """docker/compose.yaml's services running from the images, with the artifact the trainer published."""

    compose: Compose
    containers: dict[str, Container]
    artifact: Path

    @property
    def transformer(self) -> str:
        """The transformer's URL where compose publishes it (127.0.0.1)."""
        return self.containers["transformer"].published(8080)


@pytest.fixture(scope="session")
def stack(built: dict[str, Built], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Azurite, MLflow, the trainer's run, then predictor, explainer, detector and transformer, as compose."""
    require_tool("azurite-blob")
    compose = Compose({f"housing-{name}:local": item.id for name, item in built.items()}, free_port)
    azurite: Service | None = None
    try:
        containers = {"mlflow": compose.up("mlflow")}
        # Azurite's image cannot be pulled here: the host's Azurite, listening on the network's gateway only
        # (an address that exists once a container has joined the network).
        compose.azurite_port = free_port()
        location = tmp_path_factory.mktemp("azurite")
        azurite = azurite_service(location, compose.azurite_port, host=compose.gateway)
        azurite.log_path = location / "azurite.log"
        azurite.start()
        wait_until(lambda: listening(compose.azurite_port, compose.gateway), timeout=30, what="Azurite")
        # As compose does (depends_on without a condition orders the starts only), the trainer starts while
        # MLflow is still starting: it trains first and reaches MLflow at the end (the client retries), which
        # takes MLflow's start (30 to 60 s here) off the stack's start.
        started = time.monotonic()
        trainer = compose.up("trainer", command=[*compose.service("trainer")["command"], "--fast"])
        code = compose.wait(trainer, timeout=600)
        assert code == 0, f"the trainer exited with {code}:\n{compose.logs(trainer)}"
        print(f"trainer trained, registered and published in {time.monotonic() - started:.1f} s", flush=True)
        wait_ready(compose, containers["mlflow"], timeout=60)
        # compose's depends_on orders the starts only: the transformer waits for its predictor by itself.
        servers = ("predictor", "explainer", "detector", "transformer")
        for name in servers:
            containers[name] = compose.up(name)
        for name in servers:
            wait_ready(compose, containers[name], timeout=240)
        artifact = _download(compose, tmp_path_factory.mktemp("artifact"))
        yield Stack(compose, containers, artifact)
    finally:
        compose.down()
        if azurite is not None:
            azurite.stop()


def wait_ready(compose: Compose, container: Container, timeout: float) -> None:
    """Poll the service's readiness URL on its network address; fail with its log if it exits first."""
    path, port = READY.get(container.service, ("/v2/health/ready", 8080))
    url = container.url(port) + path

    def ready() -> bool:
        state = podman("inspect", "--format", "{{.State.Status}}", container.name).strip()
        if state != "running":
            raise RuntimeError(f"{container.service} is {state}:\n{compose.logs(container)}")
        return httpx.get(url, timeout=2).status_code == 200

    started = time.monotonic()
    try:
        wait_until(ready, timeout=timeout, interval=0.5, what=f"{container.service} ready at {url}")
    except TimeoutError as error:
        raise TimeoutError(f"{error}\n{compose.logs(container)}") from None
    print(f"{container.service} ready in {time.monotonic() - started:.1f} s", flush=True)


def _download(compose: Compose, destination: Path) -> Path:
    """The artifact the trainer published, fetched from Azurite, readable by the images' user 10001."""
    from model.storage import CONNECTION_STRING_ENV, download

    url = f"http://{compose.gateway}:{compose.azurite_port}/{AZURITE_ACCOUNT}/models/housing/latest"
    connection = azurite_connection_string(compose.azurite_port, compose.gateway)
    with patch.dict(os.environ, {CONNECTION_STRING_ENV: connection}):
        directory = download(url, destination / "model")
    for path in [destination, directory, *directory.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IRGRP | stat.S_IROTH | (0o055 if path.is_dir() else 0))
    return directory
