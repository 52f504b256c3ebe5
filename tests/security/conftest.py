"""Fixtures of the adversarial suite: the whole stack as ``housing up --auth --rate-limit 50`` starts it.

The stack runs once per session (every module of tests/security may attack it; each test leaves it serving:
a test that takes something down puts it back or is refused). Its keys are the ones ``housing up`` generates
into ``HOUSING_VAR_DIR/api-keys``, one per role.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from housing.processes import free_port
from tests.security.attacks import HOUSE, request
from tests.serving.test_stack import serving

RATE_LIMIT = 50
"""The stack's --rate-limit: requests a second per credential on the metered routes (burst the same)."""

PORTS = (
    "--predictor-port", "--predictor-grpc-port", "--transformer-port", "--transformer-grpc-port",
    "--detector-port", "--explainer-port",
)  # fmt: skip


@dataclass
class AuthStack:
    """A running ``housing up --auth`` and what a test needs to attack it."""

    ports: dict[str, int]
    pids: dict[str, int]
    keys: dict[str, str]
    """Role -> an API key holding (only) that role; absent when the stack generated none for the role."""
    var_dir: Path
    output: list[str] = field(default_factory=list)

    def port(self, flag: str) -> int:
        return self.ports[f"--{flag}-port"]

    def key(self, role: str) -> dict[str, str]:
        """The ``X-API-Key`` header of ``role``'s key (a key that verifies nothing when there is none)."""
        return {"x-api-key": self.keys.get(role, f"no-{role}-key-generated")}


def _keys(path: Path) -> dict[str, str]:
    keys: dict[str, str] = {}
    for line in path.read_text().splitlines():
        key, _, roles = line.split("#", 1)[0].strip().partition("=")
        if key and "," not in roles:
            keys.setdefault(roles.strip(), key)
    return keys


@pytest.fixture(scope="session")
def auth_stack(artifact_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthStack]:
    """``housing up --auth --rate-limit 50`` with every component, on free ports, until the session ends."""
    var_dir = tmp_path_factory.mktemp("auth-stack")
    ports = {flag: free_port() for flag in PORTS}
    flags = [str(part) for pair in ports.items() for part in pair]
    command = [sys.executable, "-m", "housing", "up", "--artifact", str(artifact_dir), "--auth",
               "--rate-limit", str(RATE_LIMIT), *flags]  # fmt: skip
    env = {**os.environ, "HOUSING_VAR_DIR": str(var_dir), "OMP_NUM_THREADS": "1"}
    for name in ("HOUSING_API_KEYS", "HOUSING_API_KEYS_FILE", "AZURE_STORAGE_CONNECTION_STRING"):
        env.pop(name, None)
    with serving(command, env) as output:  # housing up until it serves; Ctrl-C (checked) at the end
        text = "".join(output)
        pids = {name: int(pid) for name, pid in re.findall(r"started (\w+) \(pid (\d+)\)", text)}
        yield AuthStack(ports, pids, _keys(var_dir / "api-keys"), var_dir, output)


def served(stack: AuthStack) -> int:
    """The status of a real prediction through the stack's transformer (with the predict key)."""
    return request(stack.port("transformer"), "POST", "/predict", HOUSE, stack.key("predict")).status
