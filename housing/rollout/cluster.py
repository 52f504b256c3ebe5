"""The Kubernetes API: read an InferenceService, change it by merge patches carrying its resourceVersion."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from housing.rollout.objects import GROUP, PLURAL, VERSION, RolloutError
from housing.rollout.plans import patch_for

log = logging.getLogger(__name__)


SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
CONFLICT_ATTEMPTS = 3


class Cluster:
    """InferenceServices through the kubernetes client's ``CustomObjectsApi``.

    Configuration as kubectl finds it: ``--kubeconfig``/``--context`` when given, the in-cluster service
    account when running in a pod, otherwise ``$KUBECONFIG`` or ``~/.kube/config``.
    """

    def __init__(
        self, kubeconfig: str | None = None, context: str | None = None, namespace: str | None = None
    ) -> None:
        from kubernetes import client, config

        if kubeconfig is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config()
            api_client = client.ApiClient()
            default_namespace = SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
        else:
            try:
                api_client = config.new_client_from_config(config_file=kubeconfig, context=context)
                contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
                if context is not None:
                    active = next(item for item in contexts if item["name"] == context)
            except (config.ConfigException, OSError, StopIteration) as error:
                raise RolloutError(f"no usable kubeconfig: {error}") from error
            default_namespace = active.get("context", {}).get("namespace", "default")
        self.namespace = namespace or default_namespace
        self.api = client.CustomObjectsApi(api_client)

    def _call(self, name: str, action: Callable[[], Any]) -> Any:
        from kubernetes.client.exceptions import ApiException

        try:
            return action()
        except ApiException as error:
            where = f"inferenceservice {self.namespace}/{name}"
            if error.status == 404:
                raise RolloutError(
                    f"{where} not found (namespace or name wrong, or KServe not installed)"
                ) from None
            if error.status == 403:
                raise RolloutError(
                    f"forbidden: needs get and patch on inferenceservices.{GROUP} in "
                    f"{self.namespace}: {_api_message(error)}"
                ) from None
            if error.status == 409:
                raise
            raise RolloutError(
                f"{where}: API server answered {error.status}: {_api_message(error)}"
            ) from None

    def get(self, name: str) -> dict[str, Any]:
        """Read one InferenceService."""
        return dict(
            self._call(
                name,
                lambda: self.api.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name),
            )
        )

    def patch(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """Apply a JSON merge patch; 409 propagates as ``ApiException`` for the caller to retry."""
        return dict(
            self._call(
                name,
                lambda: self.api.patch_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    self.namespace,
                    PLURAL,
                    name,
                    patch,
                    _content_type="application/merge-patch+json",
                ),
            )
        )

    def change(
        self,
        name: str,
        plan: Callable[[dict[str, Any]], dict[str, Any]],
        dry_run: bool = False,
        out: Any = None,
    ) -> dict[str, Any]:
        """Read, plan, patch; on a 409 conflict read again and re-plan (the plan re-checks its refusals).

        Args:
            name: The InferenceService.
            plan: From the object read to the object wanted (raises :class:`RolloutError` to refuse).
            dry_run: Print the patch instead of sending it.
            out: Where the dry-run patch goes.

        Returns:
            The object as the API server returned it (the object read, in a dry run).
        """
        from kubernetes.client.exceptions import ApiException

        out = out or sys.stdout
        for attempt in range(1, CONFLICT_ATTEMPTS + 1):
            current = self.get(name)
            patch = patch_for(current, plan(current))
            if dry_run:
                print(json.dumps(patch, indent=2, sort_keys=True), file=out)
                return current
            try:
                return self.patch(name, patch)
            except ApiException as error:
                log.warning(
                    "conflict on %s/%s (attempt %d of %d): %s",
                    self.namespace,
                    name,
                    attempt,
                    CONFLICT_ATTEMPTS,
                    _api_message(error),
                )
        raise RolloutError(
            f"inferenceservice {self.namespace}/{name} kept changing under us "
            f"({CONFLICT_ATTEMPTS} conflicts in a row); try again"
        )


def _api_message(error: Any) -> str:
    try:
        return str(json.loads(error.body).get("message"))
    except (TypeError, ValueError, AttributeError):
        return str(error.reason)
