"""``housing up`` with the explainer (on by default): pinned to the artifact, routed by the transformer."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
from pathlib import Path

import pytest

from housing import stack as local_stack
from housing.processes import free_port
from model.artifact import METADATA_FILE
from tests.conftest import ROOT
from tests.serving.test_stack import assert_gone, environment, printed_prediction, started_pids, up_command

pytestmark = pytest.mark.slow


def test_the_explainer_is_pinned_and_the_transformer_routes_to_it() -> None:
    parser = argparse.ArgumentParser()
    local_stack.configure(parser)
    args = parser.parse_args(["--no-detector", "--explainer-port", "8765"])
    specs = {spec.name: spec for spec in local_stack.services(args, "/models/x", {}, model_sha256="ab" * 32)}
    assert set(specs) == {"predictor", "transformer", "explainer"}
    explainer = list(specs["explainer"].command)
    assert explainer[explainer.index("--expected_sha256") + 1] == "ab" * 32
    assert explainer[explainer.index("--storage_uri") + 1] == "/models/x"  # the predictor's artifact
    transformer = list(specs["transformer"].command)
    assert transformer[transformer.index("--explainer_host") + 1] == "127.0.0.1:8765"
    off = parser.parse_args(["--no-detector", "--no-explainer"])
    specs = {spec.name: spec for spec in local_stack.services(off, "/models/x", {})}
    assert "explainer" not in specs and "--explainer_host" not in specs["transformer"].command


def test_up_once_explains_the_first_house(artifact_dir: Path, tmp_path: Path) -> None:
    command = up_command("--once", "--artifact", str(artifact_dir))
    command.remove("--no-explainer")  # the default: on
    port = free_port()
    done = subprocess.run(
        [*command, "--explainer-port", str(port)],
        capture_output=True, text=True, timeout=180, cwd=ROOT, env=environment(tmp_path),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"ready: explainer at http://127.0.0.1:{port}" in done.stdout
    match = re.search(r"explanation: base value ([\d.]+), largest effects (\w+) x([\d.]+)", done.stdout)
    assert match, done.stdout
    assert match.group(2) in ("lstat", "rm")
    assert 5 < float(match.group(1)) < printed_prediction(done.stdout) * 2
    sha256 = json.loads((artifact_dir / METADATA_FILE).read_text())["sha256"]
    log = (tmp_path / "stack" / "explainer.log").read_text()
    assert sha256 in log  # the explainer says which artifact it explains: the pinned one
    pids = started_pids(done.stdout)
    assert len(pids) == 3  # predictor, transformer, explainer
    assert_gone(pids)
