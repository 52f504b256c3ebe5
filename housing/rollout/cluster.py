"""The Kubernetes API: read InferenceServices, carry out a plan's steps, retry a patch after a 409."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

from housing.rollout.objects import (
    CANARY_OF_LABEL,
    GROUP,
    PLURAL,
    VERSION,
    RolloutError,
    has_transformer,
    is_ready,
    ready_detail,
)
from housing.rollout.plans import Change, Create, Observed, Step, WaitReady, patch_for
from serving import kube

log = logging.getLogger(__name__)


CONFLICT_ATTEMPTS = 3
READY_POLL_SECONDS = 2.0
VERBS = "get, list, create, patch and delete"
# The API server prefixes every webhook refusal with this (k8s.io/apiserver, webhook/errors/statuserror.go
# ToStatusErr); controller-runtime answers a refusal with 403, the code RBAC uses too.
WEBHOOK_DENIAL = "admission webhook"


class Cluster:
    """InferenceServices through the kubernetes client's ``CustomObjectsApi``.

    Configuration as kubectl finds it (:func:`serving.kube.load_client`): ``--kubeconfig``/``--context`` when
    given, the in-cluster service account when running in a pod, otherwise ``$KUBECONFIG`` or
    ``~/.kube/config``.
    """

    def __init__(
        self, kubeconfig: str | None = None, context: str | None = None, namespace: str | None = None
    ) -> None:
        # The kubernetes client takes about 0.35 s to import: here and in the methods below, not at the top,
        # so that `housing --help` stays fast.
        from kubernetes import client

        try:
            configured = kube.load_client(kubeconfig, context)
        except kube.KubeConfigError as error:
            raise RolloutError(str(error)) from error
        self.namespace = namespace or configured.namespace
        self.api = client.CustomObjectsApi(configured.api_client)

    def _call(self, name: str, action: Callable[[], Any], missing_ok: bool = False) -> Any:
        from kubernetes.client.exceptions import ApiException

        try:
            return action()
        except ApiException as error:
            where = f"inferenceservice {self.namespace}/{name}"
            message = _api_message(error)
            if WEBHOOK_DENIAL in message:
                raise RolloutError(f"KServe refused {where}: {message}") from None
            if error.status == 404 and missing_ok:
                return None
            if error.status == 404:
                raise RolloutError(
                    f"{where} not found (namespace or name wrong, or KServe not installed)"
                ) from None
            if error.status == 403:
                raise RolloutError(
                    f"forbidden: needs {VERBS} on inferenceservices.{GROUP} in {self.namespace}: {message}"
                ) from None
            if error.status == 409:
                raise
            raise RolloutError(f"{where}: API server answered {error.status}: {message}") from None

    def get(self, name: str) -> dict[str, Any]:
        """Read one InferenceService."""
        return dict(
            self._call(
                name,
                lambda: self.api.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name),
            )
        )

    def canaries_of(self, name: str) -> list[dict[str, Any]]:
        """The InferenceServices labelled as canaries of ``name``, sorted by name."""
        found = self._call(
            name,
            lambda: self.api.list_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, label_selector=f"{CANARY_OF_LABEL}={name}"
            ),
        )
        return sorted(found.get("items") or [], key=lambda item: item["metadata"]["name"])

    def observe(self, name: str) -> Observed:
        """The stable InferenceService and, when it has a transformer, its canary InferenceServices."""
        stable = self.get(name)
        return Observed(stable, self.canaries_of(name) if has_transformer(stable) else [])

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create an InferenceService; one that exists already is an error that says what to do."""
        from kubernetes.client.exceptions import ApiException

        name = obj["metadata"]["name"]
        try:
            return dict(
                self._call(
                    name,
                    lambda: self.api.create_namespaced_custom_object(
                        GROUP, VERSION, self.namespace, PLURAL, obj
                    ),
                )
            )
        except (
            ApiException
        ):  # 409 AlreadyExists: the plan saw no canary of that name, so it is someone else's
            raise RolloutError(
                f"inferenceservice {self.namespace}/{name} already exists and is not labelled "
                f"{CANARY_OF_LABEL} (or was created meanwhile): choose another --canary-name"
            ) from None

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

    def delete(self, name: str) -> bool:
        """Delete an InferenceService; ``False`` when it was already gone."""
        deleted = self._call(
            name,
            lambda: self.api.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name),
            missing_ok=True,
        )
        return deleted is not None

    def wait_ready(self, name: str, timeout: float) -> None:
        """Poll until the InferenceService reports ``Ready``.

        Raises:
            RolloutError: It is not Ready after ``timeout`` seconds; the message carries its Ready condition.
        """
        deadline = time.monotonic() + timeout
        while True:
            current = self.get(name)
            if is_ready(current):
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RolloutError(
                    f"inferenceservice {self.namespace}/{name} is not Ready after {timeout:g} s "
                    f"({ready_detail(current)}); it gets no traffic"
                )
            time.sleep(min(READY_POLL_SECONDS, remaining))

    def change(
        self, name: str, plan: Callable[[dict[str, Any]], dict[str, Any]], dry_run: bool = False
    ) -> dict[str, Any]:
        """Read, plan, patch; on a 409 conflict read again and re-plan (the plan re-checks its refusals).

        Args:
            name: The InferenceService.
            plan: From the object read to the object wanted (raises :class:`RolloutError` to refuse).
            dry_run: Return the patch instead of sending it.

        Returns:
            The object as the API server returned it, or in a dry run the patch.
        """
        from kubernetes.client.exceptions import ApiException

        for attempt in range(1, CONFLICT_ATTEMPTS + 1):
            current = self.get(name)
            patch = patch_for(current, plan(current))
            if dry_run:
                return patch
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

    def apply(self, steps: list[Step], dry_run: bool = False, out: Any = None, hint: str = "") -> None:
        """Carry out a plan's steps in order, one line each on ``out``; a dry run prints them as JSON.

        Args:
            steps: The plan.
            dry_run: Print what would be created, waited for, patched (the merge patch) and deleted instead.
            out: Where the lines go (default: standard output).
            hint: What to do when a step fails after others were done, appended to the error.

        Raises:
            RolloutError: A step failed; the message says which steps were already done.
        """
        out = out or sys.stdout
        if dry_run:
            print(json.dumps([self._describe(step) for step in steps], indent=2, sort_keys=True), file=out)
            return
        done: list[str] = []
        for step in steps:
            try:
                done.append(self._carry_out(step))
            except RolloutError as error:
                if not done:
                    raise
                raise RolloutError(f"{error}. Done before that: {'; '.join(done)}. {hint}".strip()) from None
            print(done[-1], file=out)

    def _where(self, name: str) -> str:
        return f"{self.namespace}/{name}"

    def _carry_out(self, step: Step) -> str:
        if isinstance(step, Create):
            self.create(step.obj)
            return f"created inferenceservice {self._where(step.obj['metadata']['name'])}"
        if isinstance(step, WaitReady):
            self.wait_ready(step.name, step.timeout)
            return f"inferenceservice {self._where(step.name)} is Ready"
        if isinstance(step, Change):
            self.change(step.name, step.plan)
            return f"patched inferenceservice {self._where(step.name)}: {step.what}"
        if self.delete(step.name):
            return f"deleted inferenceservice {self._where(step.name)}"
        return f"inferenceservice {self._where(step.name)} was already gone"

    def _describe(self, step: Step) -> dict[str, Any]:
        """A step as the dry run prints it: what would be created, waited for, patched or deleted."""
        if isinstance(step, Create):
            return {"create": self._where(step.obj["metadata"]["name"]), "object": step.obj}
        if isinstance(step, WaitReady):
            return {"wait_until_ready": self._where(step.name), "timeout_seconds": step.timeout}
        if isinstance(step, Change):
            return {
                "patch": self._where(step.name),
                "what": step.what,
                "merge_patch": self.change(step.name, step.plan, dry_run=True),
            }
        return {"delete": self._where(step.name)}


def _api_message(error: Any) -> str:
    try:
        return str(json.loads(error.body).get("message"))
    except (TypeError, ValueError, AttributeError):
        return str(error.reason)
