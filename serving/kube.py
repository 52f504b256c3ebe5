"""The Kubernetes client, configured as kubectl is (the detector's Job action and ``housing rollout``).

``--kubeconfig``/``--context`` when given; the pod's service account when running in a pod
(``KUBERNETES_SERVICE_HOST`` set); otherwise ``$KUBECONFIG`` or ``~/.kube/config``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class KubeConfigError(RuntimeError):
    """No usable configuration: no kubeconfig, an unknown context, or an unreadable file."""


@dataclass(frozen=True)
class KubeClient:
    """A configured API client and the namespace its configuration names.

    Attributes:
        api_client: ``kubernetes.client.ApiClient``, for any of the client's API classes.
        namespace: The pod's namespace in a cluster, else the context's (``default`` when it names none).
    """

    api_client: Any
    namespace: str


def pod_namespace(default: str = "default") -> str:
    """The namespace of the pod this runs in, from its service account; ``default`` outside a pod."""
    if SERVICE_ACCOUNT_NAMESPACE.exists():
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    return default


def load_client(kubeconfig: str | None = None, context: str | None = None) -> KubeClient:
    """The API client as kubectl would configure it (see the module docstring).

    Raises:
        KubeConfigError: Out of a cluster, with no usable kubeconfig or context.
    """
    from kubernetes import client, config

    if kubeconfig is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()
        return KubeClient(client.ApiClient(), pod_namespace())
    try:
        api_client = config.new_client_from_config(config_file=kubeconfig, context=context)
        contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
        if context is not None:
            active = next(item for item in contexts if item["name"] == context)
    except (config.ConfigException, OSError, StopIteration) as error:
        raise KubeConfigError(f"no usable kubeconfig: {error}") from error
    return KubeClient(api_client, active.get("context", {}).get("namespace", "default"))
