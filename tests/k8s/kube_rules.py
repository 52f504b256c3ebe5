"""What Kubernetes itself does with the chart's pods and workloads, encoded for tests.

The counterpart of ``kserve_controller.py`` (KServe), ``mesh_rules.py`` (Istio, Knative) and ``helm_rules.py``
(Helm): no kubelet or controller manager runs here, so the rules the chart relies on are written down next to
the kubernetes/kubernetes source they encode, read at the commits ``read_file`` serves (2026):

- ``third_party/forked/golang/expansion/expand.go``: ``$(VAR)`` in a container's ``command`` and ``args``;
- ``pkg/kubelet/kuberuntime/kuberuntime_container.go`` (``killContainer``): how a container stops;
- ``pkg/controller/deployment/rolling.go`` and ``recreate.go``: how a Deployment replaces its pods;
- the PersistentVolume access modes (``ReadWriteOnce``: one node), as the volume attach controller and the
Azure
  Disk CSI driver apply them (a second node's attach fails with ``Multi-Attach error``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

POD_IP = "10.244.1.7"
"""The address the tests give a pod (any address of the cluster's pod CIDR would do)."""

MINIMUM_GRACE_SECONDS = 2
"""kuberuntime_manager.go ``minimumGracePeriodInSeconds``: the least a container gets after SIGTERM."""

_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def downward_value(field_path: str, pod_ip: str = POD_IP) -> str:
    """The value the kubelet gives an env var from ``fieldRef`` (pkg/kubelet/kubelet_pods.go
    podFieldSelectorRuntimeValue)."""
    if field_path == "status.podIP":
        return pod_ip
    raise NotImplementedError(f"kube_rules does not evaluate fieldRef {field_path}")


def container_env(container: dict[str, Any], pod_ip: str = POD_IP) -> dict[str, str]:
    """A container's environment as the kubelet builds it (literal values and the downward API)."""
    env: dict[str, str] = {}
    for item in container.get("env") or []:
        if "value" in item:
            env[item["name"]] = expand(str(item["value"]), env)
        elif "fieldRef" in (item.get("valueFrom") or {}):
            env[item["name"]] = downward_value(item["valueFrom"]["fieldRef"]["fieldPath"], pod_ip)
        else:
            raise NotImplementedError(f"kube_rules does not evaluate env {item}")
    return env


def expand(text: str, env: dict[str, str]) -> str:
    """expansion.Expand: ``$(VAR)`` becomes VAR's value when the container defines VAR, and stays as written
    otherwise; ``$$`` is an escaped ``$``."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _REFERENCE.sub(replace, text)


def container_args(
    container: dict[str, Any], extra: list[str] | None = None, pod_ip: str = POD_IP
) -> list[str]:
    """The arguments the process gets: the container's ``args`` (and what a controller appended, ``extra``),
    each expanded with the container's environment."""
    env = container_env(container, pod_ip)
    return [expand(str(arg), env) for arg in [*(container.get("args") or []), *(extra or [])]]


@dataclass(frozen=True)
class Stop:
    """How one container stops once its pod is deleted (kuberuntime_container.go ``killContainer``).

    Attributes:
        pre_stop: Seconds of the preStop hook; it runs first, while the process still serves.
        after_sigterm: Seconds the process has after SIGTERM before SIGKILL: what the hook left of the pod's
            ``terminationGracePeriodSeconds`` ("gracePeriod = gracePeriod - m.executePreStopHook(...)"), at
            least :data:`MINIMUM_GRACE_SECONDS`.
    """

    pre_stop: float
    after_sigterm: float


def stop(pod_spec: dict[str, Any], container: dict[str, Any], default_grace: int = 30) -> Stop:
    """The stop of ``container`` in a pod with ``pod_spec`` (``default_grace``: the API server's default, 30
    s, pkg/apis/core/v1/defaults.go, unless a controller sets its own)."""
    grace = pod_spec.get("terminationGracePeriodSeconds", default_grace)
    hook = ((container.get("lifecycle") or {}).get("preStop")) or {}
    if set(hook) - {"sleep"}:
        raise NotImplementedError(f"kube_rules evaluates only the sleep action, not {sorted(hook)}")
    pre_stop = float(hook["sleep"]["seconds"]) if hook else 0.0
    pre_stop = min(pre_stop, grace)  # executePreStopHook gives up on the hook when the grace period ends
    return Stop(pre_stop, max(grace - pre_stop, MINIMUM_GRACE_SECONDS))


def rolling_update_keeps_serving(strategy: dict[str, Any], replicas: int) -> bool:
    """Whether a Deployment's update never has fewer available pods than ``replicas``.

    rolling.go ``reconcileOldReplicaSets``: old pods are scaled down only while the available pods stay at or
    above ``replicas - maxUnavailable``, maxUnavailable resolved from a percentage by rounding down
    (deploymentutil.ResolveFenceposts); recreate.go ``rolloutRecreate`` first scales every old pod to zero.
    """
    if strategy.get("type", "RollingUpdate") != "RollingUpdate":
        return False
    rolling = strategy.get("rollingUpdate") or {}
    unavailable = rolling.get("maxUnavailable", "25%")
    if isinstance(unavailable, str) and unavailable.endswith("%"):
        unavailable = math.floor(replicas * int(unavailable[:-1]) / 100)
    return int(unavailable) == 0


def read_write_once_writers(access_modes: list[str], strategy: dict[str, Any]) -> int:
    """How many pods an update of a single-replica Deployment puts on one volume at once.

    ``ReadWriteOnce``: "the volume can be mounted as read-write by a single node" (several pods of that node
    may mount it); a rolling update starts the new pod beside the old one, so on another node its attach fails
    (Multi-Attach) and with maxUnavailable 0 the rollout never ends, and on the same node both write. Recreate
    stops the old pod first.
    """
    if "ReadWriteOncePod" in access_modes or strategy.get("type") == "Recreate":
        return 1
    return 2
