"""Dockerfiles and docker/compose.yaml: linted, hardened, running exactly the commands the local stack runs.

These checks read the files (tests/images/ builds the images and runs the stack from them). Commands are
checked against the local stack (``housing.stack.services``) and parsed by each component's real argument
parser, as are the compose file's and the Helm chart's commands.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from images.build import IMAGES, dockerfile_instructions
from tests.conftest import ROOT, require_tool
from tests.k8s import kube_rules as kube
from tests.k8s.conftest import Render

DOCKER = ROOT / "docker"
EXTRAS = {name: image.extra for name, image in IMAGES.items() if image.dockerfile == f"{name}.Dockerfile"}
"""Each Dockerfile's extra of pyproject.toml (images/build.py, which ./dev images builds from)."""
AZURITE_MODEL = "http://azurite:10000/devstoreaccount1/models/housing/latest"


def instructions(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs of ``docker/NAME.Dockerfile`` (what images/build.py reads too)."""
    return dockerfile_instructions(DOCKER / f"{name}.Dockerfile")


def exec_form(name: str, instruction: str) -> list[str]:
    [value] = [rest for word, rest in instructions(name) if word == instruction]
    return json.loads(value)


def container_command(name: str) -> list[str]:
    return exec_form(name, "ENTRYPOINT") + exec_form(name, "CMD")


@pytest.mark.parametrize("name", sorted(EXTRAS))
def test_hadolint_is_clean(name: str) -> None:
    hadolint = require_tool("hadolint")
    result = subprocess.run([hadolint, str(DOCKER / f"{name}.Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", sorted(EXTRAS))
def test_dockerfile_is_hardened_and_minimal(name: str) -> None:
    steps = instructions(name)
    froms = [rest for word, rest in steps if word == "FROM"]
    assert len(froms) == 2, "multi-stage: a build stage and a clean final stage"
    assert froms[0].endswith(" AS build") and froms[1] == froms[0].removesuffix(" AS build")
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", froms[1]), "pinned Python patch version"
    final = steps[[i for i, (word, _) in enumerate(steps) if word == "FROM"][-1] :]
    assert ("USER", "10001:10001") in final
    installs = " ".join(
        rest for word, rest in steps if word == "RUN" and re.search(r"pip .*\binstall\b", rest)
    )
    # pip lives outside the runtime environment: it installs into /opt/venv, which is all the image copies.
    assert "/opt/pip/bin/pip --python /opt/venv/bin/python install" in installs
    extras = set(re.findall(r'-c constraints.txt "\.\[([\w$-]+)\]"', installs))
    if extras == {"$extra"}:  # the detector: the extra a build argument chooses
        extras = set(re.findall(r"\bextra=([\w-]+)", installs))
    assert extras == ({"detector", "detector-oss"} if name == "detector" else {EXTRAS[name]})
    # What the entrypoint imports is byte-compiled (docker/bytecode.py): the read-only image cannot cache it.
    assert f"bytecode.py {ENTRYPOINT_MODULES[name]}" in installs
    assert not re.search(r"\b(gcc|g\+\+|build-essential|apt-get)\b", " ".join(rest for _, rest in steps))
    assert any(word == "COPY" and rest.startswith("--from=build /opt/venv") for word, rest in final)
    assert any(word == "HEALTHCHECK" for word, _ in final)
    env = " ".join(rest for word, rest in final if word == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env and "TMPDIR=/tmp" in env  # read-only root file system


def test_constraints_pin_exact_versions() -> None:
    lines = [
        line for line in (DOCKER / "constraints.txt").read_text().splitlines() if line and line[0] != "#"
    ]
    assert lines and all(
        re.fullmatch(r"[A-Za-z0-9_.\-\[\],]+==[A-Za-z0-9_.+!\-]+", line) for line in lines
    ), [line for line in lines if "==" not in line]
    pinned = {line.split("==")[0].lower().replace("_", "-") for line in lines}
    assert {"kserve", "scikit-learn", "numpy", "alibi-detect", "mlflow"} <= pinned


def test_dockerignore_keeps_the_context_small() -> None:
    patterns = (ROOT / ".dockerignore").read_text().splitlines()
    assert patterns[patterns.index("*")] == "*", "deny by default"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    assert allowed == {
        "pyproject.toml",
        "docker/constraints.txt",
        "docker/bytecode.py",
        "model",
        "serving",
        "housing",
        "predictor",
        "transformer",
        "detector",
        "explainer",
    }


def _stack_commands() -> dict[str, list[str]]:
    from housing.stack import configure, services

    parser = argparse.ArgumentParser()
    configure(parser)
    # The in-pod ports: 8080 HTTP and 8081 gRPC for every server.
    args = parser.parse_args(
        ["--predictor-port", "8080", "--predictor-grpc-port", "8081", "--transformer-port", "8080",
         "--transformer-grpc-port", "8081"]
    )  # fmt: skip
    return {spec.name: spec.command[1:] for spec in services(args, AZURITE_MODEL, {})}


def _flags(command: list[str]) -> list[str]:
    return [item for item in command if item.startswith("--")]


def test_image_commands_are_the_local_stack_commands() -> None:
    stack = _stack_commands()
    for name in ("predictor", "transformer"):
        image = container_command(name)
        assert image[:3] == ["python", "-m", name]
        local = stack[name]
        assert local[:2] == ["-m", name]
        # The image leaves out only what each deployment supplies: where the model is, where the predictor
        # is (its REST address defaults to --predictor_host), the local request logger (on Kubernetes,
        # KServe's agent logs) and the explainer's address.
        supplied = {
            "predictor": {"--storage_uri"},
            "transformer": {"--predictor_host", "--predictor_rest_host", "--logger_url", "--explainer_host"},
        }[name]
        assert set(_flags(local)) - set(_flags(image)) == supplied
        assert set(_flags(image)) <= set(_flags(local))
    assert container_command("detector")[:3] == ["python", "-m", "detector"]
    assert container_command("trainer")[:2] == ["housing", "train"]


def _compose() -> dict[str, Any]:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())["services"]


def test_compose_runs_the_local_stack_commands() -> None:
    services, stack = _compose(), _stack_commands()
    assert {
        "predictor",
        "transformer",
        "detector",
        "mlflow",
        "azurite",
        "prometheus",
        "grafana",
    } <= services.keys()
    assert ["-m", "predictor", *services["predictor"]["command"]] == stack["predictor"]
    transformer = ["-m", "transformer", *services["transformer"]["command"]]
    # The same command, with the compose network's host names instead of 127.0.0.1.
    local = [
        item.replace("127.0.0.1:8070", "detector:8080")
        .replace("127.0.0.1:8060", "explainer:8080")
        .replace("127.0.0.1", "predictor")
        for item in stack["transformer"]
    ]
    assert transformer == local
    explainer = ["-m", "explainer", *services["explainer"]["command"]]
    assert explainer == [item.replace("8060", "8080") for item in stack["explainer"]]
    for name in ("predictor", "transformer", "explainer", "detector"):
        service = services[name]
        assert service["build"]["dockerfile"] == f"docker/{name}.Dockerfile"
        assert "entrypoint" not in service, "the image's ENTRYPOINT is the contract"
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
    for image in (s.get("image", "") for s in services.values() if "build" not in s):
        assert not image.endswith(":latest") and ":" in image, image


def test_every_command_parses_with_the_real_programs(renders: dict[str, Render]) -> None:
    from detector.__main__ import build_parser as detector_parser
    from predictor.__main__ import parse_args as predictor_args
    from transformer.__main__ import parse_args as transformer_args

    services = _compose()
    rendered = renders["standard-canary"]
    isvc = rendered.one("InferenceService", "housing-housing-kserve")["spec"]
    canary = rendered.one("InferenceService", "housing-housing-kserve-v2")["spec"]
    # What KServe appends to a custom transformer container (pkg/apis/serving/v1beta1/transformer_custom.go).
    injected = ["--predictor_host", "housing-housing-kserve-predictor.ml", "--http_port", "8080"]
    # The chart's args as the process gets them: $(POD_IP) expanded by the kubelet (kube_rules).
    predictor_sources = [
        services["predictor"]["command"],
        kube.container_args(isvc["predictor"]["containers"][0]),
        kube.container_args(canary["predictor"]["containers"][0]),
    ]
    for args in predictor_sources:
        parsed = predictor_args(args)
        assert (parsed.model_name, parsed.http_port, parsed.grpc_port) == ("housing", 8080, 8081)
        assert parsed.storage_uri
    for args in (
        services["transformer"]["command"],
        kube.container_args(isvc["transformer"]["containers"][0], injected),
    ):
        parsed = transformer_args(args)
        assert (parsed.model_name, parsed.http_port) == ("housing", 8080)
        assert args is services["transformer"]["command"] or parsed.logger_url
        assert parsed.protocol in ("v2", "grpc-v2")  # compose: gRPC as locally; the chart: KServe's REST host
    detector = renders["defaults"].one("Deployment", "housing-housing-kserve-detector")
    for args in (
        services["detector"]["command"],
        kube.container_args(detector["spec"]["template"]["spec"]["containers"][0]),
    ):
        parsed = detector_parser().parse_args(args)
        assert (
            parsed.http_port == 8080 and str(parsed.state_dir) == "/var/lib/detector" and parsed.storage_uri
        )
    assert (
        detector_parser().parse_args([*container_command("detector")[3:], "--storage_uri", "x"]).http_port
        == 8080
    )


def test_helm_runs_the_image_entrypoints(renders: dict[str, Render]) -> None:
    rendered = renders["defaults"]
    spec = rendered.one("InferenceService", "housing-housing-kserve")["spec"]
    assert spec["predictor"]["containers"][0]["command"] == exec_form("predictor", "ENTRYPOINT")
    assert spec["transformer"]["containers"][0]["command"] == exec_form("transformer", "ENTRYPOINT")
    detector = rendered.one("Deployment", "housing-housing-kserve-detector")["spec"]["template"]["spec"]
    assert detector["containers"][0]["command"] == exec_form("detector", "ENTRYPOINT")
    cron = rendered.one("CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert cron["command"] == container_command("trainer")[:2]


def test_compose_prometheus_labels_match_the_pod_monitors() -> None:
    config = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    targets = config["scrape_configs"][0]["static_configs"]
    assert {t["labels"]["component"] for t in targets} == {"predictor", "transformer", "detector"}
    assert all(t["labels"]["endpoint"] == "default" for t in targets)
    assert Path(ROOT / "helm" / "housing-kserve" / "files" / "prometheus-rules.yaml").exists()


# What each image runs first: its entrypoint module (the trainer's is the `housing` command, whose parser
# imports every command module).
ENTRYPOINT_MODULES = {
    "predictor": "predictor.__main__",
    "transformer": "transformer.__main__",
    "detector": "detector.__main__",
    "explainer": "explainer.__main__",
    "trainer": "housing.cli",
}
PROJECT_PACKAGES = {"model", "serving", "predictor", "transformer", "detector", "explainer", "housing"}


@pytest.mark.parametrize("image", sorted(ENTRYPOINT_MODULES))
def test_image_copies_every_project_package_its_entrypoint_imports(image: str) -> None:
    module = ENTRYPOINT_MODULES[image]
    probe = (
        "import importlib, sys\n"
        f"entry = importlib.import_module({module!r})\n"
        "getattr(entry, 'build_parser', lambda: None)()\n"
        f"print(' '.join(sorted({{name.split('.')[0] for name in sys.modules}} & {PROJECT_PACKAGES!r})))\n"
    )
    imported = set(subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True,
                                  check=True).stdout.split())  # fmt: skip
    dockerfile = (DOCKER / f"{image}.Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\w+)/ \1/$", dockerfile, flags=re.MULTILINE))
    assert imported <= copied, f"{image}.Dockerfile lacks COPY for {sorted(imported - copied)}"
