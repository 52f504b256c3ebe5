"""``housing publish``: verify an artifact and upload it to Azure Blob Storage (or Azurite)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "Verify a model artifact and upload it to Blob Storage, skipping files already there."


def publish_and_report(directory: str | Path, url: str, progress: bool = True) -> int:
    """Verify ``directory``, publish it to ``url`` and print what was uploaded and skipped.

    Args:
        directory: The artifact directory.
        url: ``https://ACCOUNT.blob.core.windows.net/CONTAINER/PATH`` or an Azurite URL.
        progress: Show upload progress bars.

    Returns:
        0, or 1 when the artifact fails verification or storage refuses it.
    """
    from model.artifact import MODEL_FORMATS, ONNX, RECORDED, ArtifactError, read_metadata, verify_artifact
    from model.storage import StorageError, publish

    try:
        formats = [form for form in MODEL_FORMATS if RECORDED[form] in read_metadata(directory)]
        for form in formats:
            metadata = verify_artifact(directory, model_format=form)
        result = publish(directory, url, progress=progress)
    except (ArtifactError, StorageError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"published {metadata['name']} version {metadata['version']} to {url}")
    print(f"uploaded: {', '.join(result.uploaded) or 'nothing'}")
    print(f"skipped (unchanged): {', '.join(result.skipped) or 'nothing'}")
    for form in formats:  # the pin of each form (model.artifact says which file a pin names)
        served = "the compiled form" if form == ONNX else "scikit-learn"
        print(f"{RECORDED[form]}: {metadata[RECORDED[form]]} (pin it to serve {served})")
    return 0


def configure(parser: argparse.ArgumentParser) -> None:
    """Declare the arguments of ``housing publish``."""
    parser.add_argument("artifact_dir", type=Path, help="artifact directory (model.joblib + model.json)")
    parser.add_argument("--to", required=True, metavar="URL", help="Blob Storage URL: .../CONTAINER/PATH")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    """Publish and report (see :func:`publish_and_report`)."""
    return publish_and_report(args.artifact_dir, args.to, progress=not args.no_progress)
