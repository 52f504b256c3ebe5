from __future__ import annotations

import subprocess

import pytest

from housing.cli import COMMANDS

from .conftest import housing


def test_housing_help_lists_the_training_commands():
    completed = subprocess.run(housing("--help"), capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0
    for name in ("train", "evaluate", "publish", "promote"):
        assert name in completed.stdout


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("train", "--with-b"),
        ("evaluate", "--expected-sha256"),
        ("publish", "--to URL"),
        ("promote", "--alias ALIAS"),
    ],
)
def test_each_training_command_has_help(command, expected):
    assert COMMANDS[command].startswith("model.")
    completed = subprocess.run(housing(command, "--help"), capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0
    assert expected in completed.stdout
