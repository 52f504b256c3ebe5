"""The key that windows, results, labels and retrain episodes are kept under: one endpoint, one model version.

Canary traffic is judged apart from the default endpoint's, and each model version against the reference, so
everything the detector tracks is per :class:`WindowKey`. Its string form, ``endpoint/model_version``, appears
only where text is needed: ``/status``, retrain episodes and logs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, order=True)
class WindowKey:
    """One endpoint serving one model version.

    Attributes:
        endpoint: ``default`` or ``canary`` (``ce-endpoint``).
        model_version: The version that answered the requests.
    """

    endpoint: str
    model_version: str

    def __str__(self) -> str:
        return f"{self.endpoint}/{self.model_version}"

    @classmethod
    def parse(cls, text: str) -> WindowKey:
        """The inverse of ``str(key)``; the endpoint never holds a ``/``, a model version may."""
        endpoint, model_version = text.split("/", 1)
        return cls(endpoint, model_version)

    def labels(self) -> dict[str, str]:
        """The fields by name: the Prometheus labels, and the key's part of a saved-state object."""
        return {"endpoint": self.endpoint, "model_version": self.model_version}

    @classmethod
    def of(cls, saved: Mapping[str, Any]) -> WindowKey:
        """The key named by the ``endpoint`` and ``model_version`` fields of a saved-state object."""
        return cls(str(saved["endpoint"]), str(saved["model_version"]))
