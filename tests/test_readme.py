"""What the README shows is what runs: its commands exist with the flags given, its answers the real shape.

A newcomer runs the README's commands as written, after ``source .venv/bin/activate``. Every command of its
```bash blocks, and every `housing ...` or `./dev ...` in its prose and in docs/*.md, is checked here without
being run for real: a ``housing`` command of a block parses with the real argument parser (sub-commands, flags
and their values), one named in prose has its sub-commands and flags; a ``./dev`` verb and a benchmark name
exist; any other program is found on the activated PATH. Each ``curl`` to the local stack is sent to a real
one (the servers it names, on free ports) and must answer 2xx; where the README prints the answer on the
comment line below it (``# {...}``), the real answer has the same shape: the same keys and JSON types, all the
way down. New sections need no change here.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import io
import json
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from benchmarks.__main__ import available
from housing import stack as local_stack
from housing.cli import build_parser
from housing.processes import HOST, Stack, free_port
from tests.conftest import ROOT, require_tool

README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
VENV_BIN = ROOT / ".venv" / "bin"
ELSEWHERE = {"kubectl", "az"}
"""Programs the README runs against a cluster or an Azure account: none here (docs/kubernetes.md)."""


@dataclass
class Command:
    """One command as a shell splits it, where it was written, and the answer printed below it (if any)."""

    tokens: list[str]
    where: str
    answer: str | None = None
    fenced: bool = True
    """In a ```bash block, run as written; else named in prose (placeholders, required arguments left out)."""

    def __str__(self) -> str:
        return f"{self.where}: {shlex.join(self.tokens)}"


def fenced_commands(path: Path) -> list[Command]:
    """The commands of ``path``'s ```bash blocks; a ``# {...}`` line after one is its documented answer."""
    commands: list[Command] = []
    for block in re.findall(r"```bash\n(.*?)```", path.read_text(), re.S):
        pending = ""
        for line in block.splitlines():
            if not pending and line.lstrip().startswith("#"):
                comment = line.lstrip().lstrip("#").strip()
                if comment.startswith("{") and commands:
                    commands[-1].answer = comment
                continue
            if line.rstrip().endswith("\\"):  # continued on the next line
                pending += line.rstrip()[:-1] + " "
                continue
            pending += line + "\n"
            try:
                tokens = shlex.split(pending, comments=True)
            except ValueError:  # a quote still open: the command goes on
                continue
            if tokens:
                commands.append(Command(tokens, path.name))
            pending = ""
    return commands


def inline_commands(path: Path) -> list[Command]:
    """The `housing ...` and `./dev ...` commands quoted in ``path``'s prose, alternatives (a|b) expanded."""
    commands = []
    for span in re.findall(r"`((?:housing|\./dev) [^`]+)`", path.read_text()):
        tokens = shlex.split(" ".join(span.split()))
        choices = [
            token.split("|") if "|" in token and not token.startswith("-") else [token] for token in tokens
        ]
        for index, options in enumerate(choices):
            if len(options) > 1:
                for option in options:
                    expanded = [*tokens[:index], option, *tokens[index + 1 :]]
                    commands.append(Command(expanded, path.name, fenced=False))
                break
        else:
            commands.append(Command(tokens, path.name, fenced=False))
    return commands


def all_commands() -> list[Command]:
    readme = fenced_commands(README) + inline_commands(README)
    return readme + [command for doc in DOCS for command in inline_commands(doc)]


def dev_verbs() -> set[str]:
    """The verbs ``./dev`` knows: the patterns of its ``case`` statement."""
    text = (ROOT / "dev").read_text()
    case = text[text.index("case $cmd in") :]
    return {verb for pattern in re.findall(r"^\s+([a-z|-]+)\)", case, re.M) for verb in pattern.split("|")}


@functools.cache
def housing_parser() -> argparse.ArgumentParser:
    return build_parser()


def parses(tokens: list[str]) -> str | None:
    """Why ``housing TOKENS`` does not parse (its usage error), or ``None`` when it does (``--help`` too)."""
    errors = io.StringIO()
    with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
        try:
            housing_parser().parse_args(tokens)
        except SystemExit as exit_:
            return None if exit_.code == 0 else errors.getvalue().strip().splitlines()[-1]
    return None


def names_exist(tokens: list[str]) -> str | None:
    """Why ``housing TOKENS``, named in prose, is wrong: a sub-command or a flag that does not exist."""
    parser = housing_parser()
    options = set(parser._option_string_actions)
    takes_value = False
    for token in tokens:
        if token == "...":  # "any arguments": nothing more to check
            break
        if token.startswith("-"):
            action = parser._option_string_actions.get(token.split("=")[0])
            takes_value = "=" not in token and action is not None and action.nargs != 0
            continue
        if takes_value:  # the value of `--log-level DEBUG`, not a sub-command
            takes_value = False
            continue
        commands = next(
            (a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None
        )
        if commands is None:
            break  # the leaf's own arguments
        if token not in commands:
            return f"no sub-command {token!r} (there are {sorted(commands)})"
        parser = commands[token]
        options |= set(parser._option_string_actions)
    flags = {token.split("=")[0] for token in tokens if token.startswith("-")}
    return f"no option {sorted(flags - options)}" if flags - options else None


def on_activated_path(program: str) -> bool:
    return shutil.which(program, path=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}") is not None


def problem(command: Command) -> str | None:
    """What is wrong with a documented command, or ``None``."""
    program, *args = command.tokens
    if program == "housing":
        return parses(args) if command.fenced else names_exist(args)
    if program == "./dev":
        if not args or args[0] not in dev_verbs():
            return f"./dev has no verb {args[:1]} (it has {sorted(dev_verbs())})"
        if args[0] == "bench" and len(args) > 1 and args[1] not in (*available(), "NAME"):
            return f"no benchmark {args[1]!r} (there are {available()})"
        if args[0] == "test":
            missing = [
                arg
                for arg in args[1:]
                if not arg.startswith("-") and not (ROOT / arg.split("::")[0]).exists()
            ]
            return f"no such test path {missing}" if missing else None
        return None
    if program == "source":
        return None if (ROOT / args[0]).is_file() else f"{args[0]} does not exist"
    if program in ("python", "python3") and args[:1] == ["-m"]:
        return None if importlib.util.find_spec(args[1]) else f"no module {args[1]}"
    if (
        program in ELSEWHERE or program == "curl"
    ):  # curl: test_documented_requests_answer_with_the_shape_shown
        return None
    if program == "jupyter" and args:
        program = f"jupyter-{args[0]}"  # `jupyter lab` runs jupyter-lab
    return None if on_activated_path(program) else f"{program} is not on the activated PATH"


@pytest.mark.parametrize("command", all_commands(), ids=str)
def test_every_documented_command_exists_with_the_flags_given(command: Command) -> None:
    if command.tokens[0] in ("helm", "jupyter"):
        require_tool(str(VENV_BIN / ("jupyter" if command.tokens[0] == "jupyter" else "helm")))
    assert problem(command) is None, f"{command}: {problem(command)}"


def test_the_checks_catch_a_wrong_command() -> None:
    assert problem(Command(["housing", "up", "--no-such-flag"], "x")) is not None
    assert problem(Command(["housing", "nothing"], "x")) is not None
    assert problem(Command(["./dev", "bench", "nothing"], "x")) is not None
    assert problem(Command(["./dev", "deploy"], "x")) is not None
    assert problem(Command(["no-such-program"], "x")) is not None
    assert problem(Command(["housing", "up", "--once", "--azurite"], "x")) is None


def test_the_readme_block_after_dev_up_activates_the_venv_first() -> None:
    """One way to run every command in a new shell: the activation line, which ``housing up`` prints too."""
    commands = fenced_commands(README)
    activate = next(i for i, command in enumerate(commands) if command.tokens[:1] == ["source"])
    assert commands[activate].tokens == ["source", ".venv/bin/activate"]
    assert any(command.tokens[0] == "housing" for command in commands[activate:])
    assert "source" in (ROOT / "housing" / "stack.py").read_text()  # housing up says so (_say_how_...)


def test_dev_help_lists_every_verb() -> None:
    done = subprocess.run([str(ROOT / "dev"), "help"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0
    listed = set(re.findall(r"\./dev (\w+)", done.stdout))
    assert listed == dev_verbs() - {"-h", "--help"}, done.stdout


def test_every_notebook_is_named_in_the_readme() -> None:
    section = README.read_text().split("## Notebooks", 1)[1].split("\n## ", 1)[0]
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        assert notebook.stem in section, f"README's Notebooks section does not name {notebook.name}"


def shape(value: Any) -> Any:
    """A JSON value's shape: key -> shape for objects, [shape of the first item] for arrays, else the type."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return (
        "number" if isinstance(value, int | float) and not isinstance(value, bool) else type(value).__name__
    )


def requests() -> list[Command]:
    return [command for command in fenced_commands(README) if command.tokens[0] == "curl"]


@contextlib.contextmanager
def local_stack_for(documented: list[Command], artifact: Path, log_dir: Path) -> Iterator[dict[int, int]]:
    """The servers of ``housing up`` that the requests need, on free ports; yields default port -> port.

    A server is needed when a request goes to its default port; the transformer needs its predictor, and the
    explainer when a request asks ``:explain``.
    """
    parser = argparse.ArgumentParser()
    local_stack.configure(parser)
    args = parser.parse_args([])
    ports = [name for name in vars(args) if name.endswith("_port")]
    moved = {getattr(args, name): free_port() for name in ports}
    for name in ports:
        setattr(args, name, moved[getattr(args, name)])
    servers = {spec.name: spec for spec in local_stack.services(args, str(artifact), {})}
    by_port = {spec.port: name for name, spec in servers.items()}
    wanted = {by_port.get(moved.get(port, -1), f"nothing on :{port}") for port in map(port_of, documented)}
    unknown = sorted(name for name in wanted if name not in servers)
    assert not unknown, f"the README sends requests where no server of housing up listens: {unknown}"
    if "transformer" in wanted:
        wanted.add("predictor")
        if any(":explain" in url_of(command) for command in documented):
            wanted.add("explainer")
    stack = Stack(log_dir)
    try:
        order = ("predictor", "explainer", "detector", "transformer", "mlflow")
        started = [stack.start(servers[name]) for name in order if name in wanted]
        for service in started:
            service.wait_ready(timeout=180)
        yield moved
    finally:
        stack.stop()


def url_of(command: Command) -> str:
    return next(token for token in command.tokens if token.startswith("http"))


def port_of(command: Command) -> int:
    match = re.match(rf"http://{re.escape(HOST)}:(\d+)/", url_of(command))
    assert match, f"{command}: not a request to the local stack"
    return int(match.group(1))


@pytest.mark.slow
def test_documented_requests_answer_with_the_shape_shown(artifact_dir: Path, tmp_path: Path) -> None:
    documented = requests()
    assert any(command.answer for command in documented), "the README shows no answer to check"
    with local_stack_for(documented, artifact_dir, tmp_path) as moved, httpx.Client(timeout=30) as client:
        for command in documented:
            tokens, port = command.tokens, port_of(command)
            body = tokens[tokens.index("-d") + 1] if "-d" in tokens else None
            headers = dict(tokens[i + 1].split(": ", 1) for i, token in enumerate(tokens) if token == "-H")
            url = url_of(command).replace(f"{HOST}:{port}", f"{HOST}:{moved[port]}")
            answer = client.request("POST" if body else "GET", url, content=body, headers=headers)
            assert answer.is_success, f"{command}: {answer.status_code} {answer.text[:300]}"
            if command.answer:
                shown, _ = json.JSONDecoder().raw_decode(command.answer)
                assert shape(answer.json()) == shape(shown), f"{command}\nshown: {shown}\nreal: {answer.text}"
