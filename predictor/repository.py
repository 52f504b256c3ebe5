"""Several verified models in one predictor: pins, a repository that loads by name, and the champion alias.

KServe's V2 repository extension (``POST /v2/repository/models/{name}/load`` and ``/unload``) asks a
``ModelRepository`` to load a model by name; KServe's own expects a directory ``{name}`` under
``--model_dir`` and checks nothing. :class:`ArtifactRepository` resolves a name through its pins instead
(name -> storage URI and sha256, from ``--models_config`` or ``--model NAME=URI@SHA256``), and loads it as
the single-model predictor does (:class:`predictor.model.HousingModel`: download, sha256 checked before
anything is parsed). A name without a pin, an artifact that fails its pin, or storage that cannot be reached
is refused; a refused load leaves whatever was served before untouched: the server never serves an
unverified model.

``housing`` (``--model_name``) is an alias: another name of the champion, one of the loaded models. A load
with ``{"parameters": {"champion": true}}`` points it at that model once it is verified and loaded. Unloading
a name removes that name only; a model stays loaded while a name refers to it (unloading the champion's own
name leaves it served as ``housing``). The server is ready only while the alias is served
(:attr:`ArtifactRepository.serving`): without it ``housing`` answers 404, whatever else is loaded.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kserve.errors import ModelNotReady
from kserve.model_repository import ModelRepository

from model.artifact import ArtifactError
from model.storage import StorageError

SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")

log = logging.getLogger(__name__)


class RepositoryError(Exception):
    """A repository call refused, with the HTTP status to answer.

    404 an unknown name, 403 an unpinned directory, 409 an artifact that fails its checks, 400 a malformed
    call.
    """

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class ConfigError(ValueError):
    """The pins are malformed; the message names the model and the rule."""


@dataclass(frozen=True)
class ModelPin:
    """Where one model's artifact is and the sha256 its served file must have.

    Attributes:
        name: The model's name in the endpoint paths (``housing-4``).
        storage_uri: Local path, ``file://`` or Blob Storage URL of the artifact directory.
        sha256: The sha256 of ``model.onnx`` (the compiled form) or ``model.joblib`` (serves scikit-learn).
    """

    name: str
    storage_uri: str
    sha256: str


@dataclass(frozen=True)
class ModelsConfig:
    """The pins of every model the predictor may load, the champion, and the models loaded at start.

    Attributes:
        pins: By name.
        champion: The pinned model served as the alias too; ``None`` when ``--storage_uri`` gives it.
        load: Names loaded at start beside the champion (every replica loads them; readiness waits).
    """

    pins: dict[str, ModelPin]
    champion: str | None
    load: list[str]


def read_models_config(
    path: str | None,
    flags: list[str],
    champion: str | None,
    alias: str,
    models_root: str | None = None,
    load: list[str] | None = None,
    champion_by_storage_uri: bool = False,
) -> ModelsConfig:
    """The pins of ``--models_config`` (JSON) and ``--model NAME=URI@SHA256`` flags (flags win).

    The file: ``{"champion": NAME, "load": [NAME, ...], "models": {NAME: {"storage_uri": URI, "sha256":
    HEX}}}``; a model without ``storage_uri`` is the directory ``NAME`` under ``models_root`` (where KServe's
    model agent would put it).

    Args:
        path: The JSON file, if any.
        flags: ``--model`` values.
        champion: ``--champion``, over the file's.
        alias: The champion's other name (``--model_name``), which no model may take.
        models_root: ``--models_root``.
        load: ``--load`` values, added to the file's.
        champion_by_storage_uri: The champion is the single-model flags' (``--storage_uri``), not a pin.

    Raises:
        ConfigError: Unreadable file, a model without a valid sha256 or location, no champion or two.
    """
    entries: dict[str, Any] = {}
    document: dict[str, Any] = {}
    if path:
        try:
            document = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ConfigError(f"--models_config {path}: {error}") from None
        if not isinstance(document, dict) or not isinstance(document.get("models", {}), dict):
            raise ConfigError(f"--models_config {path}: must be an object with a 'models' object")
        entries = dict(document.get("models", {}))
    champion = champion or document.get("champion")
    listed = document.get("load", [])
    if not isinstance(champion, str | None) or not isinstance(listed, list):
        raise ConfigError(f"--models_config {path}: 'champion' must be a name and 'load' a list of names")
    for flag in flags:
        name, _, rest = flag.partition("=")
        uri, _, sha256 = rest.rpartition("@")
        if not name or not uri:
            raise ConfigError(f"--model {flag!r}: expected NAME=URI@SHA256")
        entries[name] = {"storage_uri": uri, "sha256": sha256}
    pins = {name: _pin(name, entry, alias, models_root) for name, entry in entries.items()}
    if champion_by_storage_uri and champion:
        raise ConfigError(
            f"two champions: --storage_uri serves one as {alias}, and the config names {champion}"
        )
    if not champion and not champion_by_storage_uri:
        raise ConfigError(
            "no champion: give --champion NAME, 'champion' in --models_config, or --storage_uri"
        )
    load_at_start = list(dict.fromkeys([*listed, *(load or [])]))
    for name in [champion, *load_at_start] if champion else load_at_start:
        if name not in pins:
            raise ConfigError(f"{name!r} is not one of the pinned models ({', '.join(pins)})")
    return ModelsConfig(pins, champion, [name for name in load_at_start if name != champion])


def _pin(name: str, entry: Any, alias: str, models_root: str | None) -> ModelPin:
    if not NAME.match(name) or name == alias:
        raise ConfigError(
            f"model {name!r}: a name is 1-63 letters, digits, '.', '_' or '-', and not the alias {alias!r}"
        )
    if not isinstance(entry, dict):
        raise ConfigError(f"model {name!r}: must be an object with storage_uri and sha256")
    sha256 = entry.get("sha256")
    if not isinstance(sha256, str) or not SHA256.match(sha256):
        raise ConfigError(f"model {name!r}: sha256 must be 64 hex digits (every model is pinned)")
    storage_uri = entry.get("storage_uri") or (str(Path(models_root) / name) if models_root else None)
    if not isinstance(storage_uri, str):
        raise ConfigError(f"model {name!r}: storage_uri is required without --models_root")
    return ModelPin(name, storage_uri, sha256.lower())


class ArtifactRepository(ModelRepository):
    """KServe's model repository over pinned artifacts, with the champion alias.

    Args:
        pins: Every model that may be loaded, by name.
        alias: The champion's other name (``housing``).
        build: Makes the (not yet loaded) model of a pin.
        models_root: Where unpinned directories are recognised (to refuse them as unpinned, not unknown).
    """

    models: dict[str, Any]
    """Name -> model: replaced, never changed in place, so that readers iterate it without a lock."""

    def __init__(
        self,
        pins: dict[str, ModelPin],
        alias: str,
        build: Callable[[ModelPin], Any],
        models_root: str | None = None,
    ):
        super().__init__(models_root or "/mnt/models")
        self.pins = pins
        self.alias = alias
        self.champion: str | None = None
        self._build = build
        self._models_root = Path(models_root) if models_root else None
        self._lock = threading.Lock()
        self._loading = threading.Condition()
        self._loads = 0  # loads in progress (each in a request's worker thread)

    def load_models(self) -> None:
        """Nothing: KServe would load every directory under the models root, pinned or not."""

    @property
    def serving(self) -> bool:
        """Whether the alias is served: readiness (:meth:`serving.server.ServingDataPlane.ready`) asks."""
        return self.alias in self.models

    def register_unloaded(self, model: Any, *, champion: bool = False) -> None:
        """Serve a model that loads in the background (start-up): answers 503 and not ready until loaded."""
        with self._lock:
            models: dict[str, Any] = {**self.models, model.name: model}
            if champion:
                models[self.alias], self.champion = model, model.name
            self.models = models

    def create(self, name: str) -> Any:
        """The model of a pin, not loaded yet."""
        return self._build(self._pin(name))

    def load(self, name: str, champion: bool = False) -> bool:
        """Download, verify and load ``name``, then serve it (and as the alias when ``champion``).

        Called by KServe's repository extension and :mod:`predictor.repository_api`; a failure leaves what
        was served before as it was.

        Raises:
            RepositoryError: Unknown, unpinned or the alias (4xx), or the artifact fails its checks (409).
            ModelNotReady: Storage cannot be reached (503; a retry may succeed).
        """
        model = self._build(self._pin(name))
        with self._loading:
            self._loads += 1
        try:
            return self._load(name, model, champion)
        finally:
            with self._loading:
                self._loads -= 1
                self._loading.notify_all()

    def settle(self, timeout: float = 30.0) -> str:
        """Wait until no load is in progress (at shutdown: a swap finishes, it is not cut in half).

        Returns:
            What it waited for, with counts (the shutdown logs it).
        """
        start = time.monotonic()
        with self._loading:
            running = self._loads
            self._loading.wait_for(lambda: self._loads == 0, timeout)
            left = self._loads
        return (
            f"{running} model loads in progress, {left} still running after {time.monotonic() - start:.2f} s"
        )

    def _load(self, name: str, model: Any, champion: bool) -> bool:
        try:
            model.load()
        except ArtifactError as error:
            log.error("refusing to load %s: %s", name, error)
            raise RepositoryError(409, f"refusing to serve {name}: {error}") from None
        except StorageError as error:
            log.warning("cannot load %s: %s", name, error)
            raise ModelNotReady(name, f"its storage cannot be reached: {error}") from None
        with self._lock:
            replaced = self.models.get(name)
            models = {**self.models, name: model}  # a new dict: readers iterate the old one undisturbed
            if champion or (replaced is not None and models.get(self.alias) is replaced):
                models[self.alias], self.champion = model, name
            self.models = models
            self._stop_unreferenced(replaced)
        log.info("loaded: %s%s", model.describe_loaded(), f", champion ({self.alias})" if champion else "")
        return True

    def unload(self, name: str) -> None:
        """Stop serving the name ``name``; its model is stopped once no name refers to it.

        Raises:
            KeyError: No model is served under ``name`` (KServe answers 404).
        """
        with self._lock:
            if name not in self.models:
                raise KeyError(f"model with name {name} does not exist")
            models = dict(self.models)
            model = models.pop(name)
            if name == self.alias:
                self.champion = None
            self.models = models
            self._stop_unreferenced(model)
        log.info("unloaded the name %s", name)

    def index(self) -> list[dict[str, Any]]:
        """Every pinned model and the alias: ``name``, ``version``, ``state`` and ``reason``."""
        models = self.models
        listed = []
        for name in [*self.pins, self.alias]:
            model = models.get(name)
            artifact = getattr(model, "artifact", None)
            ready = model is not None and model.ready
            reason = "" if model is not None else "not loaded"
            if name == self.alias and self.champion != self.alias:
                reason = f"alias of {self.champion}" if self.champion else "no champion"
            elif name == self.alias:
                reason = "the champion given by --storage_uri"
            listed.append(
                {
                    "name": name,
                    "version": artifact.version if artifact is not None else "",
                    "state": "READY" if ready else "UNAVAILABLE",
                    "reason": reason,
                }
            )
        return listed

    def _pin(self, name: str) -> ModelPin:
        if name == self.alias:
            raise RepositoryError(
                400,
                f"{name} is the champion's alias, not a model: load a model with "
                '{"parameters": {"champion": true}} to make it the champion',
            )
        pin = self.pins.get(name)
        if pin is not None:
            return pin
        if self._models_root is not None and NAME.match(name) and (self._models_root / name).is_dir():
            raise RepositoryError(
                403, f"refusing to load {name}: it has no sha256 pin (add it to --models_config)"
            )
        raise RepositoryError(404, f"no model named {name} is pinned (pinned: {', '.join(self.pins)})")

    def _stop_unreferenced(self, model: Any) -> None:
        if model is not None and all(other is not model for other in self.models.values()):
            model.stop()
