"""No process outlives a failing test: the conftest stops what a test or a fixture started, pass or fail."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, require_tool

FAILING = """
from pathlib import Path

import pytest

from housing.processes import python_service
from tests.conftest import start_azurite

PIDS = Path({pids!r})


def sleeper(name, directory):
    return python_service(name, ["-c", "import time; time.sleep(600)"], directory).start()


@pytest.fixture(scope="module")
def broken_fixture(tmp_path_factory):
    service = sleeper("fixture", tmp_path_factory.mktemp("fixture"))
    PIDS.open("a").write(f"{{service.pid}}\\n")
    raise RuntimeError("deliberately: a fixture's setup fails after it started a process")


def test_fails_after_starting_azurite_and_a_server(tmp_path):
    azurite = start_azurite(tmp_path / "azurite")
    PIDS.open("a").write(f"{{azurite.service.pid}}\\n{{sleeper('server', tmp_path).pid}}\\n")
    assert False, "deliberately"


def test_errors_in_its_fixture(broken_fixture):
    pass
"""


def test_a_failing_test_and_a_failing_fixture_leave_no_process_running(tmp_path: Path) -> None:
    require_tool("azurite-blob")
    pids = tmp_path / "pids"
    test_file = tmp_path / "test_failing.py"
    test_file.write_text(FAILING.format(pids=str(pids)))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider", str(test_file)],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 1 and "1 failed" in done.stdout and "1 error" in done.stdout, done.stdout
    started = [int(pid) for pid in pids.read_text().split()]
    assert len(started) == 3  # Azurite, a server, a fixture's server
    for pid in started:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
