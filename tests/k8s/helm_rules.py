"""What Helm does with a release's objects on install and upgrade, encoded for tests.

Like ``kserve_controller.py`` and ``mesh_rules.py``: no API server runs here, so the Helm rules that decide
whether ``helm upgrade`` and ``housing rollout`` can share an InferenceService are written down next to the
helm/helm source they encode, read at v3.17.3 (the helm ``./dev setup`` installs): ``pkg/action/validate.go``,
``pkg/action/upgrade.go``, ``pkg/kube/client.go``. Rendering itself is the real ``helm template`` (with
``--dry-run=server`` so that the chart's ``lookup`` reads the mock API server of tests/rollout).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from housing.rollout.plans import merge_patch

# pkg/action/validate.go: the ownership metadata Helm writes on every object of a release and requires on an
# existing object before it takes it into a release.
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY_HELM = "Helm"
RELEASE_NAME_ANNOTATION = "meta.helm.sh/release-name"
RELEASE_NAMESPACE_ANNOTATION = "meta.helm.sh/release-namespace"

Key = tuple[str, str, str]  # kind, namespace, name


class OwnershipError(RuntimeError):
    """``helm upgrade`` stops: "... exists and cannot be imported into the current release"."""


def key(obj: dict[str, Any]) -> Key:
    return obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"]


def check_ownership(obj: dict[str, Any], release: str, namespace: str) -> None:
    """pkg/action/validate.go ``checkOwnership``: the label ``app.kubernetes.io/managed-by: Helm`` and the
    annotations ``meta.helm.sh/release-name`` and ``meta.helm.sh/release-namespace`` must name this release.

    Raises:
        OwnershipError: With Helm's message.
    """
    labels = obj["metadata"].get("labels") or {}
    annotations = obj["metadata"].get("annotations") or {}
    errors = []
    for where, values, wanted_key, wanted in (
        ("label", labels, MANAGED_BY_LABEL, MANAGED_BY_HELM),
        ("annotation", annotations, RELEASE_NAME_ANNOTATION, release),
        ("annotation", annotations, RELEASE_NAMESPACE_ANNOTATION, namespace),
    ):
        if wanted_key not in values:
            errors.append(f'{where} validation error: missing key "{wanted_key}": must be set to "{wanted}"')
        elif values[wanted_key] != wanted:
            errors.append(f'{where} validation error: key "{wanted_key}" must equal "{wanted}"')
    if errors:
        raise OwnershipError(
            f'{obj["kind"]} "{obj["metadata"]["name"]}" in namespace "{namespace}" exists and cannot be '
            f"imported into the current release: invalid ownership metadata; {'; '.join(errors)}"
        )


def with_release_metadata(obj: dict[str, Any], release: str, namespace: str) -> dict[str, Any]:
    """pkg/action/validate.go ``setMetadataVisitor``: what install and upgrade add to every rendered
    object."""
    result = copy.deepcopy(obj)
    metadata = result.setdefault("metadata", {})
    metadata.setdefault("labels", {})[MANAGED_BY_LABEL] = MANAGED_BY_HELM
    annotations = metadata.setdefault("annotations", {})
    annotations[RELEASE_NAME_ANNOTATION] = release
    annotations[RELEASE_NAMESPACE_ANNOTATION] = namespace
    return result


@dataclass
class Release:
    """A release: its name and namespace and the manifest Helm recorded (what it created or adopted)."""

    name: str
    namespace: str
    manifest: dict[Key, dict[str, Any]] = field(default_factory=dict)


@dataclass
class Cluster:
    """How Helm's client reaches the objects (the tests pass the mock API server's store)."""

    get: Callable[[Key], dict[str, Any] | None]
    create: Callable[[dict[str, Any]], None]
    patch: Callable[[Key, dict[str, Any]], None]
    delete: Callable[[Key], None]


def upgrade(release: Release, rendered: list[dict[str, Any]], cluster: Cluster) -> Release:
    """``helm upgrade`` of ``release`` to the ``rendered`` objects, with Helm's own semantics.

    - pkg/action/upgrade.go ``performUpgrade``: a rendered object that is not in the current manifest but
      exists in the cluster must pass :func:`check_ownership` (``existingResourceConflict``), or the upgrade
      stops; it is then adopted: appended to the current manifest as the rendered object itself.
    - pkg/kube/client.go ``Update``: a rendered object that does not exist is created; one that exists is
      patched with ``createPatch``, which for a custom resource (``runtime.Unstructured``) is the JSON merge
      patch from the object in the current manifest to the rendered one (``jsonpatch.CreateMergePatch(oldData,
      newData)``): fields the manifest never had are left as they are, and a list that changed is replaced
      whole. An adopted object's "current" is the rendered object, so it is not changed at all. Then every
      object of the current manifest that is not rendered is deleted (already gone: skipped).

    Raises:
        OwnershipError: An object to create exists and belongs to no release, or to another.
    """
    target = {key(obj): with_release_metadata(obj, release.name, release.namespace) for obj in rendered}
    current = dict(release.manifest)
    for k, obj in target.items():
        if k not in current and (live := cluster.get(k)) is not None:
            check_ownership(live, release.name, release.namespace)
            current[k] = obj
    for k, obj in target.items():
        live = cluster.get(k)
        if live is None:
            cluster.create(copy.deepcopy(obj))
            continue
        patch = merge_patch(current[k], obj)
        if patch:
            cluster.patch(k, patch)
    for k in current.keys() - target.keys():
        if cluster.get(k) is not None:
            cluster.delete(k)
    return Release(release.name, release.namespace, target)
