"""``housing train --azureml``: the same training as an Azure ML command job, built offline, sent on request.

The job is ``azureml/train-job.yml`` (an ordinary Azure ML command job file, also usable with
``az ml job create -f``), loaded and validated by ``azure.ai.ml.load_job``; the trainer image, the compute
cluster and the training data can be overridden. Nothing is sent until :func:`submit`, which authenticates
with ``DefaultAzureCredential`` (the OIDC login of the workflow, or ``az login``): no key anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

JOB_FILE = Path(__file__).resolve().parents[1] / "azureml" / "train-job.yml"


@dataclass(frozen=True)
class Workspace:
    """Where the job runs: an Azure ML workspace."""

    subscription_id: str
    resource_group: str
    name: str


def build_job(
    job_file: Path = JOB_FILE,
    *,
    image: str | None = None,
    compute: str | None = None,
    data: str | None = None,
) -> Any:
    """The command job of ``job_file``, validated, with the given overrides.

    Args:
        job_file: An Azure ML command job YAML.
        image: The trainer image (``ACR.azurecr.io/housing-trainer:TAG``).
        compute: The compute cluster's name.
        data: The training CSV: an ``azureml://`` datastore path or an ``https://`` Blob Storage URL.

    Returns:
        An ``azure.ai.ml.entities.Command``.

    Raises:
        azure.ai.ml.exceptions.ValidationException: The file is not a valid command job.
    """
    import logging

    from azure.ai.ml import load_job

    # The SDK logs a line per experimental schema class it loads, whatever the job holds.
    logging.getLogger("azure.ai.ml").setLevel(logging.ERROR)
    overrides: list[dict[str, Any]] = []
    if image:
        overrides.append({"environment": {"image": image}})
    if compute:
        overrides.append({"compute": compute})
    if data:
        overrides.append({"inputs.data.path": data})
    # Overrides applied by the loader itself, so the job is validated with them.
    return load_job(source=job_file, params_override=overrides)


def describe(job: Any) -> dict[str, Any]:
    """What the job runs, where and on what: the dry run's output.

    Not the SDK's own YAML dump, which shows an https input as ``azureml:https://...``, not what it sends.
    """
    return {
        "experiment": job.experiment_name,
        "command": job.command,
        "image": job.environment.image,
        "compute": job.compute,
        "inputs": {name: {"type": value.type, "path": value.path} for name, value in job.inputs.items()},
        "outputs": {name: {"type": value.type} for name, value in job.outputs.items()},
        "environment_variables": dict(job.environment_variables),
    }


def submit(job: Any, workspace: Workspace) -> str:
    """Send the job to the workspace; its studio URL."""
    from azure.ai.ml import MLClient
    from azure.identity import DefaultAzureCredential

    client = MLClient(
        DefaultAzureCredential(), workspace.subscription_id, workspace.resource_group, workspace.name
    )
    created = client.jobs.create_or_update(job)
    return str(created.studio_url)
