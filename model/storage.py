"""Publish model artifacts to Azure Blob Storage and download them again.

Locations are URLs of the form KServe's ``storageUri`` uses, ``https://ACCOUNT.blob.core.windows.net/CONTAINER/PATH``,
or an Azurite endpoint, ``http://HOST:PORT/ACCOUNT/CONTAINER/PATH``; a local path or ``file://`` URL works
for :func:`download`.

Credentials, in order:

1. ``AZURE_STORAGE_CONNECTION_STRING`` when it is set (Azurite, CI, a developer's own account);
2. otherwise ``DefaultAzureCredential``, which on AKS is Azure Workload Identity: no keys anywhere.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from model.artifact import (
    DLE_FILE,
    INTERVALS_FILE,
    METADATA_FILE,
    MODEL_FILE,
    ONNX_FILE,
    OUTLIERS_FILE,
    sha256_file,
)

log = logging.getLogger(__name__)

CONNECTION_STRING_ENV = "AZURE_STORAGE_CONNECTION_STRING"
SHA256_METADATA_KEY = "sha256"
# model.json goes last: a reader that sees the new metadata finds the new model beside it.
UPLOAD_ORDER = (MODEL_FILE, ONNX_FILE, DLE_FILE, OUTLIERS_FILE, INTERVALS_FILE, METADATA_FILE)
OPTIONAL = frozenset({ONNX_FILE, DLE_FILE, OUTLIERS_FILE, INTERVALS_FILE})
"""Files an artifact may lack: artifacts written before the compiled form have no ``model.onnx``, those
written before the loss estimator no ``dle.json``, those written before the outlier density no
``outliers.json``, those written before intervals no ``intervals.json``."""


class StorageError(RuntimeError):
    """A storage location could not be parsed, reached or read."""


@dataclass(frozen=True)
class BlobLocation:
    """Where an artifact lives in Blob Storage.

    Attributes:
        account_url: ``https://ACCOUNT.blob.core.windows.net`` or ``http://HOST:PORT/ACCOUNT`` (Azurite).
        container: The container name.
        prefix: The "directory" inside the container, without leading or trailing slashes.
    """

    account_url: str
    container: str
    prefix: str

    def blob_name(self, file_name: str) -> str:
        """The blob name of one file of the artifact."""
        return f"{self.prefix}/{file_name}" if self.prefix else file_name


@dataclass(frozen=True)
class PublishResult:
    """What :func:`publish` did: files uploaded, and files skipped because the same content was there."""

    uploaded: list[str]
    skipped: list[str]


def is_blob_url(uri: str) -> bool:
    """Whether ``uri`` names Blob Storage (Azure or Azurite) rather than a local path."""
    return urlparse(uri).scheme in ("http", "https")


def parse_blob_url(url: str) -> BlobLocation:
    """Split a Blob Storage URL into account URL, container and prefix.

    Args:
        url: ``https://ACCOUNT.blob.core.windows.net/CONTAINER/PATH`` or ``http://HOST:PORT/ACCOUNT/CONTAINER/PATH``.

    Raises:
        StorageError: The URL has no container, or is not of either form.
    """
    parsed = urlparse(url)
    parts = [unquote(part) for part in parsed.path.split("/") if part]
    if parsed.scheme == "https" and parsed.hostname and parsed.hostname.endswith(".blob.core.windows.net"):
        account_url, rest = f"https://{parsed.netloc}", parts
    elif parsed.scheme in ("http", "https") and parsed.hostname and len(parts) >= 1:
        # Azurite and other emulators put the account name first in the path.
        account_url, rest = f"{parsed.scheme}://{parsed.netloc}/{parts[0]}", parts[1:]
    else:
        raise StorageError(f"not a Blob Storage URL: {url!r}")
    if not rest:
        raise StorageError(f"{url!r} names no container: expected .../CONTAINER/PATH")
    return BlobLocation(account_url=account_url, container=rest[0], prefix="/".join(rest[1:]))


def container_client(location: BlobLocation, **client_options: Any) -> Any:
    """A ``ContainerClient`` for the location, authenticated as described in the module docstring.

    ``client_options`` go to ``BlobServiceClient`` (e.g. ``retry_total=0`` for a caller that retries itself).
    """
    from azure.storage.blob import BlobServiceClient

    connection_string = os.environ.get(CONNECTION_STRING_ENV)
    if connection_string:
        service = BlobServiceClient.from_connection_string(connection_string, **client_options)
    else:
        from azure.identity import DefaultAzureCredential

        service = BlobServiceClient(
            account_url=location.account_url, credential=DefaultAzureCredential(), **client_options
        )
    return service.get_container_client(location.container)


def publish(directory: str | Path, url: str, *, progress: bool = True) -> PublishResult:
    """Upload an artifact directory to Blob Storage, skipping files whose content is already there.

    Each blob carries the sha256 of its content in its metadata; a file whose sha256 matches the blob's is
    not uploaded again, so publishing the same artifact twice transfers nothing.

    Args:
        directory: An artifact directory (``model.joblib``, ``model.json`` and, if any, ``model.onnx``).
        url: The target location (see the module docstring).
        progress: Show a progress bar per file on standard error.

    Returns:
        Which files were uploaded and which were skipped.

    Raises:
        StorageError: The directory is not an artifact, or storage refused the upload.
    """
    from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
    from tqdm import tqdm

    directory = Path(directory)
    files = [name for name in UPLOAD_ORDER if (directory / name).is_file()]
    missing = [name for name in UPLOAD_ORDER if name not in files and name not in OPTIONAL]
    if missing:
        raise StorageError(f"{directory} is not a model artifact: missing {missing}")
    location = parse_blob_url(url)
    container = container_client(location)
    result = PublishResult(uploaded=[], skipped=[])
    try:
        with contextlib.suppress(ResourceExistsError):
            container.create_container()
        for name in files:
            path = directory / name
            digest = sha256_file(path)
            blob = container.get_blob_client(location.blob_name(name))
            try:
                if blob.get_blob_properties().metadata.get(SHA256_METADATA_KEY) == digest:
                    result.skipped.append(name)
                    log.info("unchanged, not uploaded: %s", blob.url)
                    continue
            except ResourceNotFoundError:
                pass
            size = path.stat().st_size
            with (
                tqdm(
                    total=size, unit="B", unit_scale=True, desc=f"upload {name}", disable=not progress
                ) as bar,
                open(path, "rb") as handle,
            ):
                blob.upload_blob(
                    handle,
                    length=size,
                    overwrite=True,
                    metadata={SHA256_METADATA_KEY: digest},
                    progress_hook=lambda done, _total: bar.update(done - bar.n),
                )
            result.uploaded.append(name)
            log.info("uploaded %s (%d bytes, sha256 %s)", blob.url, size, digest)
    except AzureError as error:
        raise StorageError(f"cannot publish to {url}: {error}") from error
    return result


def download(uri: str, destination: str | Path, **client_options: Any) -> Path:
    """Fetch an artifact directory, from Blob Storage or a local path.

    Args:
        uri: A Blob Storage URL, a ``file://`` URL, or a local directory.
        destination: Where to put downloaded files (ignored for local artifacts, which are used in place).
        **client_options: Passed to ``BlobServiceClient`` (see :func:`container_client`).

    Returns:
        The local artifact directory. Nothing is verified here: use :func:`model.artifact.load_artifact`.

    Raises:
        StorageError: Storage cannot be reached, or the location holds no artifact.
    """
    from azure.core.exceptions import AzureError, ResourceNotFoundError

    if not is_blob_url(uri):
        path = Path(unquote(urlparse(uri).path) if uri.startswith("file://") else uri)
        if not path.is_dir():
            raise StorageError(f"{path} is not a directory")
        return path
    location = parse_blob_url(uri)
    destination = Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    container = container_client(location, **client_options)
    try:
        for name in UPLOAD_ORDER:
            blob = container.get_blob_client(location.blob_name(name))
            try:
                downloader = blob.download_blob()
            except ResourceNotFoundError:
                if name in OPTIONAL:  # an older artifact; model.json says whether one was expected
                    continue
                raise
            with open(destination / name, "wb") as handle:
                downloader.readinto(handle)
    except ResourceNotFoundError as error:
        raise StorageError(f"{uri} holds no model artifact ({name} not found)") from error
    except AzureError as error:
        raise StorageError(f"cannot download {uri}: {error}") from error
    return destination
