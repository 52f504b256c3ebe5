"""No secret is committed: detect-secrets over every file git tracks (or would), against the baseline.

The baseline lists the known, audited findings (Azurite's published emulator key); a new finding fails. The
scanner is a dev dependency; without it the test skips visibly (fails under ``STRICT_TOOLS=1``). Refresh the
baseline after auditing a false positive: ``detect-secrets scan $(git ls-files) > .secrets.baseline`` and mark
it ``"is_secret": false``, or put ``# pragma: allowlist secret`` on its line.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, require_tool

BASELINE = ".secrets.baseline"
# AWS's documented example key id (docs.aws.amazon.com): a shape every scanner must catch, valid nowhere.
EXAMPLE_LEAK = "aws_access_key_id = AKIA" + "IOSFODNN7EXAMPLE\n"


def repository_files() -> list[str]:
    """Tracked files and the untracked ones git does not ignore (what the next commit may hold)."""
    git = require_tool("git")
    listed = subprocess.run(
        [git, "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    # The baseline itself holds the findings' hashes, which look like secrets too.
    return sorted({name for name in listed if name and (ROOT / name).is_file() and name != BASELINE})


def scan(files: list[str], baseline: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    hook = require_tool("detect-secrets-hook")
    # A copy of the baseline: the hook rewrites it when known findings only moved lines (exit 3).
    return subprocess.run(
        [hook, "--baseline", str(baseline), *files], cwd=cwd, capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow
def test_no_new_secret_in_the_repository(tmp_path: Path) -> None:
    baseline = tmp_path / "baseline.json"
    shutil.copy(ROOT / BASELINE, baseline)
    result = scan(repository_files(), baseline, ROOT)
    assert result.returncode in (0, 3), (
        f"new secrets (audit them, see the module docstring):\n{result.stdout}"
    )


def test_the_scanner_fails_on_a_new_secret(tmp_path: Path) -> None:
    leak = tmp_path / "settings.py"
    leak.write_text(EXAMPLE_LEAK)
    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps({**json.loads((ROOT / BASELINE).read_text()), "results": {}}))
    result = scan([leak.name], baseline, tmp_path)
    assert result.returncode == 1
    assert "AWS Access Key" in result.stdout
