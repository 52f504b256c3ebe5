"""scripts/check_licences.py on real environments: the dev .venv, and a fresh venv with a few wheels.

The dev environment holds every image's dependencies as pip resolved them together, so ``--requires`` judges
each image's runtime closure here, in CI; in a built image, the same script checks the image's own Python.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "check_licences.py"
IMAGES = ("predictor", "transformer", "explainer", "training", "detector-oss")
"""The extras whose images must pass with no exception at all."""


def check(
    *args: str, python: str = sys.executable, stdin: bool = False
) -> tuple[int, list[dict[str, Any]], str]:
    """Run the checker with ``python`` (``-I``: the standard library and that environment only)."""
    command = [python, "-I", "-", *args, "--json"] if stdin else [python, "-I", str(SCRIPT), *args, "--json"]
    completed = subprocess.run(
        command,
        input=SCRIPT.read_text() if stdin else None,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode in (0, 1), completed.stderr
    return completed.returncode, json.loads(completed.stdout), completed.stderr


def refused(results: list[dict[str, Any]]) -> dict[str, str]:
    return {item["name"]: item["licence"] for item in results if not item["allowed"]}


def test_default_detector_needs_the_alibi_detect_exception_and_detector_oss_none() -> None:
    code, results, _ = check("--requires", "housing-kserve[detector]")
    assert code == 1 and refused(results) == {"alibi-detect": "BUSL-1.1"}
    assert "--allow-bsl alibi-detect" in next(
        item["note"] for item in results if item["name"] == "alibi-detect"
    )
    code, results, _ = check("--requires", "housing-kserve[detector]", "--allow-bsl", "alibi-detect")
    assert code == 0 and {"alibi-detect", "scipy", "numpy", "transformers"} <= {
        item["name"] for item in results
    }
    code, results, _ = check("--requires", "housing-kserve[detector-oss]")
    names = {item["name"].lower() for item in results}
    assert code == 0 and {"housing-kserve", "scipy", "numpy", "fastapi"} <= names
    assert not names & {"alibi-detect", "transformers", "numba", "opencv-python"}


@pytest.mark.parametrize("extra", IMAGES)
def test_every_image_dependency_has_an_allowed_licence(extra: str) -> None:
    code, results, _ = check("--requires", f"housing-kserve[{extra}]")
    assert code == 0, refused(results)
    assert all(item["licence"] != "unknown" for item in results)


def test_the_whole_dev_environment_is_listed() -> None:
    """Every installed distribution, alibi-detect refused without its exception."""
    from importlib import metadata

    code, results, _ = check()
    assert code == 1 and "alibi-detect" in refused(results)
    assert len(results) == len({dist.metadata["Name"].lower() for dist in metadata.distributions()})


def wheel(directory: Path, name: str, fields: str) -> Path:
    """A minimal wheel of one empty module: its METADATA declares the licence ``fields`` say."""
    path = directory / f"{name}-1.0-py3-none-any.whl"
    info = f"{name}-1.0.dist-info"
    files = {
        f"{name}.py": "",
        f"{info}/METADATA": f"Metadata-Version: 2.4\nName: {name}\nVersion: 1.0\n{fields}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{file},,\n" for file in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(path, "w") as archive:
        for file, text in files.items():
            archive.writestr(file, text)
    return path


@pytest.mark.slow
def test_a_fresh_environment_with_a_business_source_and_a_proprietary_package(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    code, results, _ = check(python=python)
    assert (code, results) == (0, [])  # nothing installed: the project and the dev packages are not seen
    wheels = [
        wheel(tmp_path, "bsl_thing", "License-Expression: BUSL-1.1"),
        wheel(
            tmp_path, "closed_thing", "License: Proprietary\nClassifier: License :: Other/Proprietary License"
        ),
        wheel(tmp_path, "free_thing", "License: BSD 3-Clause License"),
    ]
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-index", "--no-deps",
         *map(str, wheels)],
        check=True,
        timeout=300,
    )  # fmt: skip
    code, results, _ = check(python=python)
    assert code == 1 and refused(results) == {
        "bsl_thing": "BUSL-1.1",
        "closed_thing": "LicenseRef-Proprietary",
    }
    assert next(item for item in results if item["name"] == "free_thing")["licence"] == "BSD-3-Clause"
    code, results, _ = check("--allow-bsl", "bsl-thing", python=python, stdin=True)  # fed on standard input
    assert code == 1 and refused(results) == {"closed_thing": "LicenseRef-Proprietary"}
    code, _, _ = check("--allow-bsl", "closed-thing", python=python)  # the exception is for BSL only
    assert code == 1


def load_script() -> Any:
    """The script as a module (registered, as its dataclass needs), for its parsing functions."""
    if "check_licences" not in sys.modules:
        spec = importlib.util.spec_from_file_location("check_licences", SCRIPT)
        assert spec and spec.loader
        sys.modules["check_licences"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules["check_licences"])
    return sys.modules["check_licences"]


@pytest.mark.parametrize(
    ("text", "expected", "allowed"),
    [
        ("MIT", "MIT", True),
        ("Apache-2.0 OR GPL-3.0-only", "Apache-2.0 OR GPL-3.0-only", True),
        ("MPL-2.0 AND (Apache-2.0 OR MIT)", "MPL-2.0 AND (Apache-2.0 OR MIT)", True),
        ("GPL-2.0-or-later WITH Classpath-exception-2.0", "GPL-2.0-or-later", False),
        ("MIT AND GPL-3.0", "MIT AND GPL-3.0", False),
        ("BSL-1.0", "BSL-1.0", True),  # Boost, not Business Source
    ],
)
def test_spdx_expressions(text: str, expected: str, allowed: bool) -> None:
    script = load_script()
    node = script.parse_expression(text)
    assert script.render(node) == expected and script.satisfied(node, script.ALLOWED) is allowed


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Apache License, Version 2.0", "Apache-2.0"),
        ("Apache 2.0", "Apache-2.0"),
        ("https://www.apache.org/licenses/LICENSE-2.0", "Apache-2.0"),
        ("MIT License", "MIT"),
        ("3-Clause BSD License", "BSD-3-Clause"),
        ("Business Source License 1.1", "BUSL-1.1"),
        ("Dual License", None),
        ("UNKNOWN", None),
        ("Copyright (c) 2005-2023, NumPy Developers.", None),
    ],
)
def test_free_text_licence_fields(text: str, expected: str | None) -> None:
    node = load_script().from_text(text)
    assert (node[1] if node else None) == expected


def test_bad_expressions_are_refused() -> None:
    script = load_script()
    for text in ("MIT AND", "(MIT", "MIT OR OR BSD", "Apache 2.0"):
        with pytest.raises(ValueError):
            script.parse_expression(text)


def test_the_chart_selects_the_stats_backend(tmp_path: Path) -> None:
    from tests.k8s.conftest import parse, render

    def args(values: dict[str, Any]) -> list[str]:
        completed = render({"detector": values}, tmp_path, "backend")
        assert completed.returncode == 0, completed.stderr
        deployment = next(
            doc
            for doc in parse(completed.stdout)
            if doc["kind"] == "Deployment" and doc["metadata"]["name"].endswith("-detector")
        )
        return list(deployment["spec"]["template"]["spec"]["containers"][0]["args"])

    default, scipy = args({}), args({"statsBackend": "scipy"})
    assert default[default.index("--stats_backend") + 1] == "alibi-detect"
    assert scipy[scipy.index("--stats_backend") + 1] == "scipy"
    refused = render({"detector": {"statsBackend": "sklearn"}}, tmp_path, "bad")
    assert refused.returncode != 0 and "detector.statsBackend" in refused.stderr
