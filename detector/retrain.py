"""Retraining actions, and the policy that fires one action per drift episode.

``--retrain_action``:

- ``k8s-job``: create a Kubernetes Job from a YAML template (the Helm chart mounts it) with the kubernetes
  client, configured as ``housing rollout`` configures it (:mod:`serving.kube`);
- ``command``: run a local command (by default ``housing train --fast``);
- ``webhook``: POST a JSON description of the episode to a URL;
- ``none``: only log and count.

A retrain registers a new model version with alias ``challenger`` (that is what ``housing train`` does); the
promotion stays a human (or pipeline) decision.

With ``--retrain_min_labels N`` an episode fires only once N labels of its key have arrived since it began:
retraining on the archive learns a shifted population only from its labelled rows, so firing at the first
drifted window (labels months away) would train on the old population again.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from detector.keys import WindowKey
from detector.metrics import RETRAINS
from serving import kube

log = logging.getLogger(__name__)

ACTIONS = ("none", "command", "webhook", "k8s-job")
DEFAULT_COMMAND = "housing train --fast --no-progress"
# Seconds between two firings at least, whatever the keys: when a shift reaches the default endpoint and the
# canary alike, one retrain answers both.
DEFAULT_COOLDOWN = 3600.0
# Recent firings kept for /status and the state file; older ones are in the log only.
KEPT_FIRINGS = 20


def command_action(command: str) -> Callable[[dict[str, Any]], None]:
    """Run ``command`` (split like a shell would, no shell); the episode goes in ``HOUSING_RETRAIN_*``."""
    arguments = shlex.split(command)

    def run(episode: dict[str, Any]) -> None:
        environment = {
            **os.environ,
            **{f"HOUSING_RETRAIN_{key.upper()}": str(value) for key, value in episode.items()},
        }
        completed = subprocess.run(arguments, env=environment, capture_output=True, text=True, check=False)
        tail = (completed.stdout + completed.stderr)[-2000:]
        if completed.returncode:
            raise RuntimeError(f"{command!r} exited with {completed.returncode}: {tail}")
        log.info("retrain command %r finished: %s", command, tail.strip().splitlines()[-1:] or "")

    return run


def webhook_action(url: str, timeout: float = 10.0) -> Callable[[dict[str, Any]], None]:
    """POST the episode as JSON to ``url``."""

    def run(episode: dict[str, Any]) -> None:
        import httpx

        httpx.post(url, json=episode, timeout=timeout).raise_for_status()

    return run


def k8s_job_action(
    template: str | Path, namespace: str | None = None, kubeconfig: str | None = None
) -> Callable[[dict[str, Any]], None]:
    """Create a Job from the YAML ``template`` (a batch/v1 Job manifest) for each episode.

    The Job gets a generated name (``metadata.name`` + ``-``, or ``housing-retrain-``) and the episode as
    annotations. Namespace: ``namespace``, else the template's, else the pod's own, else ``default``.
    """
    import yaml

    manifest = yaml.safe_load(Path(template).read_text())
    if not isinstance(manifest, dict) or manifest.get("kind") != "Job":
        raise ValueError(f"{template}: must be a batch/v1 Job manifest")
    metadata = manifest.setdefault("metadata", {})
    namespace = namespace or metadata.pop("namespace", None) or kube.pod_namespace()

    def run(episode: dict[str, Any]) -> None:
        from kubernetes import client

        api_client = kube.load_client(kubeconfig).api_client
        body: Any = {**manifest, "metadata": dict(metadata)}
        body["metadata"]["generateName"] = f"{body['metadata'].pop('name', 'housing-retrain')}-"
        body["metadata"]["annotations"] = {
            **metadata.get("annotations", {}),
            **{f"housing.example.com/retrain-{key}": str(value) for key, value in episode.items()},
        }
        created = client.BatchV1Api(api_client).create_namespaced_job(namespace=namespace, body=body)
        log.info("created Job %s/%s", namespace, getattr(created.metadata, "name", "?"))

    return run


class RetrainTrigger:
    """Fires the retrain action once per episode.

    An episode starts when a key (endpoint and model version) drifts or its live R² falls; it fires once
    ``min_labels`` labels of the key have arrived since (at once by default); the key must recover before it
    can fire again, and no two firings come closer than ``cooldown`` seconds.

    Args:
        action_name: One of :data:`ACTIONS` (the metric's ``action`` label).
        action: Called with the episode in a background thread (ingest never waits); ``None`` for ``none``.
        cooldown: Seconds between two firings, whatever the episode.
        state: Saved :meth:`snapshot`, to resume after a restart.
        min_labels: Labels of the key received since the episode began before it fires. Not saved: after a
            restart the count starts again (the later firing is the safe side).
    """

    def __init__(
        self,
        action_name: str,
        action: Callable[[dict[str, Any]], None] | None,
        cooldown: float = DEFAULT_COOLDOWN,
        state: dict[str, Any] | None = None,
        min_labels: int = 0,
    ):
        self.action_name = action_name
        self.action = action
        self.cooldown = cooldown
        self.min_labels = min_labels
        # Episodes waiting for labels: key -> [its label count when the episode began, the latest count].
        self.waiting: dict[WindowKey, list[int]] = {}
        state = state or {}
        self.active: set[WindowKey] = {WindowKey.of(key) for key in state.get("active", [])}
        self.last_fired: float | None = state.get("last_fired")
        self.firings: list[dict[str, Any]] = list(state.get("firings", []))[-KEPT_FIRINGS:]
        self.threads: list[threading.Thread] = []

    def update(
        self,
        key: WindowKey,
        reason: str | None,
        details: dict[str, Any],
        now: float | None = None,
        labels: int = 0,
    ) -> bool:
        """Record the latest verdict for ``key``; fire when a new episode is due, outside the cool-down.

        Args:
            key: The endpoint and model version judged.
            reason: ``drift``, ``r2`` or ``estimated_mae`` when the key is unhealthy, ``None`` when it is
                healthy again.
            details: What to pass to the action (scores, endpoint, version).
            now: Time (epoch seconds); defaults to now.
            labels: Labels received for ``key`` so far (a count that only grows), for ``min_labels``.

        Returns:
            Whether the action fired.
        """
        now = time.time() if now is None else now
        if reason is None:
            self.active.discard(key)
            self.waiting.pop(key, None)
            return False
        if key in self.active:
            return False
        if key not in self.waiting:
            self.waiting[key] = [labels, labels]
            if self.min_labels:
                log.warning(
                    "%s for %s: retrain waits for %d labels of it (--retrain_min_labels)",
                    reason,
                    key,
                    self.min_labels,
                )
        self.waiting[key][1] = labels
        if labels - self.waiting[key][0] < self.min_labels:
            return False
        del self.waiting[key]
        self.active.add(key)
        if self.last_fired is not None and now - self.last_fired < self.cooldown:
            log.info(
                "retrain for %s (%s) suppressed: cool-down until %.0f",
                key,
                reason,
                self.last_fired + self.cooldown,
            )
            return False
        self.last_fired = now
        episode = {"reason": reason, "key": str(key), "time": now, **details}
        self.firings = [*self.firings, {**episode, "action": self.action_name}][-KEPT_FIRINGS:]
        RETRAINS.labels(reason=reason, action=self.action_name).inc()
        log.warning(
            "retrain triggered: reason=%s key=%s action=%s details=%s", reason, key, self.action_name, details
        )
        if self.action is not None:
            thread = threading.Thread(
                target=self._run, args=(self.action, episode), name="retrain", daemon=True
            )
            thread.start()
            self.threads = [*(alive for alive in self.threads if alive.is_alive()), thread]
        return True

    def _run(self, action: Callable[[dict[str, Any]], None], episode: dict[str, Any]) -> None:
        try:
            action(episode)
        except (
            Exception
        ) as error:  # an action failing must not stop the detector; it is logged with its cause
            log.error("retrain action %s failed: %s", self.action_name, error)

    def snapshot(self) -> dict[str, Any]:
        """The state to save (active episodes, last firing time, recent firings); the ``state`` argument."""
        active = [key.labels() for key in sorted(self.active)]
        return {"active": active, "last_fired": self.last_fired, "firings": self.firings}

    def status(self) -> dict[str, Any]:
        """:meth:`snapshot` for ``/status``: keys as ``endpoint/model_version``; labels still awaited."""
        awaited = {str(key): self.min_labels - (seen - start) for key, (start, seen) in self.waiting.items()}
        active = sorted(str(key) for key in self.active)
        return {**self.snapshot(), "active": active, "labels_awaited": awaited}
