"""The Azure ML command job (``housing train --azureml``), built and validated offline: nothing is sent.

``azure.ai.ml.load_job`` validates the job file with the SDK's own schemas and no network; the command the job
runs is parsed with the real ``housing train`` parser, so the two cannot drift apart.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

import pytest
import yaml

from tests.conftest import require

try:
    import azure.ai.ml  # noqa: F401

    HAVE_AZURE_ML = True
except ImportError:  # pragma: no cover - the dev environment has it
    HAVE_AZURE_ML = False


@pytest.fixture(autouse=True)
def _azure_ml() -> None:
    require(HAVE_AZURE_ML, "azure-ai-ml is not installed (the dev extra installs it)")


def training_parser() -> argparse.ArgumentParser:
    from model import train_cli

    parser = argparse.ArgumentParser(prog="housing train")
    train_cli.configure(parser)
    return parser


def test_the_job_file_is_a_valid_command_job_that_runs_housing_train() -> None:
    from model import azureml

    job = azureml.build_job()
    assert type(job).__name__ == "Command" and job.experiment_name == "housing-price"
    assert job.environment.image.endswith("/housing-trainer:latest")
    assert job.compute == "cpu-cluster"
    assert job.inputs["data"].type == "uri_file" and job.inputs["data"].path.startswith(
        "azureml://datastores/"
    )
    assert job.outputs["artifact"].type == "uri_folder"
    assert job.environment_variables["OMP_NUM_THREADS"] == "1"
    # What Azure ML runs, with its placeholders filled in, is a valid `housing train` command line.
    words = shlex.split(job.command.replace("${{inputs.data}}", "/mnt/in/boston.csv").replace(
        "${{outputs.artifact}}", "/mnt/out"))  # fmt: skip
    assert words[:2] == ["housing", "train"]
    args = training_parser().parse_args(words[2:])
    assert (args.data, args.output, args.no_progress) == (
        ["/mnt/in/boston.csv"],
        Path("/mnt/out/model"),
        True,
    )
    assert (
        not args.no_mlflow
    )  # Azure ML points MLFLOW_TRACKING_URI at the workspace: runs and models land there


def test_image_compute_and_data_can_be_overridden() -> None:
    from model import azureml

    job = azureml.build_job(
        image="contoso.azurecr.io/housing-trainer:3f2c1ab",
        compute="training-cluster",
        data="https://contosodata.blob.core.windows.net/housing/boston.csv",
    )
    described = azureml.describe(job)
    assert described["image"] == "contoso.azurecr.io/housing-trainer:3f2c1ab"
    assert described["compute"] == "training-cluster"
    assert described["inputs"]["data"] == {
        "type": "uri_file",
        "path": "https://contosodata.blob.core.windows.net/housing/boston.csv",
    }


def test_a_bad_job_file_is_refused(tmp_path: Path) -> None:
    from marshmallow import ValidationError  # what load_job raises for a field the schema refuses

    from model import azureml

    document = yaml.safe_load(azureml.JOB_FILE.read_text())
    document["inputs"]["data"]["type"] = "uri_fle"
    bad = tmp_path / "job.yml"
    bad.write_text(yaml.safe_dump(document))
    with pytest.raises(ValidationError, match="uri_fle"):
        azureml.build_job(bad)


def test_the_command_line_dry_run_prints_the_job_and_a_submit_needs_a_workspace(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from model import train_cli

    parser = training_parser()
    assert train_cli.run(parser.parse_args(["--azureml", "--dry-run", "--azureml-compute", "big"])) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["compute"] == "big" and printed["command"].startswith("housing train")
    for variable in ("AZURE_SUBSCRIPTION_ID", "AZUREML_RESOURCE_GROUP", "AZUREML_WORKSPACE"):
        monkeypatch.delenv(variable, raising=False)
    assert train_cli.run(training_parser().parse_args(["--azureml", "--workspace", "ws"])) == 2
    assert "--subscription, --resource-group" in capsys.readouterr().err
