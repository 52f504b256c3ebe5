"""A mock Kubernetes API server with KServe's admission webhooks, for the rollout tests.

No Kubernetes API server (nor KServe) can run on these machines, so this is the one mock in the rollout tests:
a small HTTP server that implements what ``housing rollout`` uses of the real one for InferenceServices, with
the semantics that matter here:

- the group's API discovery (for ``helm template --dry-run=server``'s ``lookup``); GET one object, and list
them
  with an equality ``labelSelector``; POST to create (409 AlreadyExists); PATCH
  (``application/merge-patch+json`` or ``application/json-patch+json``) and PUT; DELETE (404 when absent);
- resourceVersion preconditions answered with 409 Conflict, errors as ``Status`` objects, bearer tokens, a new
  resourceVersion (and generation, for spec changes) on every write;
- KServe's admission on every create and update, as its webhooks run before anything is stored: the defaulting
  webhook's renaming of the old deployment modes, then the validating webhook's rules, :func:`admit` of
  ``tests/k8s/kserve_controller.py``. A refusal is answered as the real API server answers it: 403 Forbidden
  (controller-runtime's ``admission.Denied``, webhook/admission/response.go) with the message
  ``admission webhook "inferenceservice.kserve-webhook-server.validator" denied the request: ...``
  (k8s.io/apiserver, webhook/errors/statuserror.go ``ToStatusErr``).

No controller runs: nothing reconciles, so an object reports no status until a test gives it one
(:meth:`FakeApiServer.set_ready`, or the ``after_create`` hook). The kubernetes Python client talks to it
through an ordinary kubeconfig file.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest

from tests.k8s.kserve_controller import DEPLOYMENT_MODE, KNATIVE, STANDARD, AdmissionError, admit

PREFIX = "/apis/serving.kserve.io/v1beta1/namespaces/"
# API discovery of the group, as the API server lists a CRD's resource (client-go's
# ServerResourcesForGroupVersion, which Helm's `lookup` calls to map a kind to its resource: helm
# pkg/engine/lookup_func.go getAPIResourceForGVK).
DISCOVERY = "/apis/serving.kserve.io/v1beta1"
API_RESOURCES = {
    "kind": "APIResourceList",
    "apiVersion": "v1",
    "groupVersion": "serving.kserve.io/v1beta1",
    "resources": [
        {
            "name": "inferenceservices",
            "singularName": "inferenceservice",
            "namespaced": True,
            "kind": "InferenceService",
            "shortNames": ["isvc"],
            "verbs": ["delete", "deletecollection", "get", "list", "patch", "create", "update", "watch"],
        },
        {
            "name": "inferenceservices/status",
            "singularName": "",
            "namespaced": True,
            "kind": "InferenceService",
            "verbs": ["get", "patch", "update"],
        },
    ],
}
TOKEN = "rollout-test-token"
WEBHOOK = "inferenceservice.kserve-webhook-server.validator"
# pkg/apis/serving/v1beta1/inference_service_defaults.go DefaultInferenceService: the old mode names.
LEGACY_MODES = {"RawDeployment": STANDARD, "Serverless": KNATIVE}


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: what the API server does with application/merge-patch+json."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return result


def _pointer(document: Any, path: str) -> tuple[Any, str]:
    parts = [part.replace("~1", "/").replace("~0", "~") for part in path.lstrip("/").split("/")]
    for part in parts[:-1]:
        document = document[int(part)] if isinstance(document, list) else document[part]
    return document, parts[-1]


def apply_json_patch(target: Any, operations: list[dict[str, Any]]) -> Any:
    """RFC 6902 (add, remove, replace, test): what the API server does with application/json-patch+json."""
    document = copy.deepcopy(target)
    for operation in operations:
        parent, key = _pointer(document, operation["path"])
        index: Any = int(key) if isinstance(parent, list) and key != "-" else key
        if operation["op"] == "test":
            if parent[index] != operation["value"]:
                raise ValueError(f"test failed at {operation['path']}")
        elif operation["op"] == "remove":
            del parent[index]
        elif operation["op"] == "add" and isinstance(parent, list):
            parent.insert(len(parent) if key == "-" else index, operation["value"])
        else:
            parent[index] = operation["value"]
    return document


def kserve_defaults(isvc: dict[str, Any]) -> dict[str, Any]:
    """The part of KServe's defaulting webhook that matters here: old mode names become the new ones."""
    result = copy.deepcopy(isvc)
    annotations = result.get("metadata", {}).get("annotations") or {}
    if annotations.get(DEPLOYMENT_MODE) in LEGACY_MODES:
        annotations[DEPLOYMENT_MODE] = LEGACY_MODES[annotations[DEPLOYMENT_MODE]]
    return result


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def _not_found(name: str) -> tuple[int, dict[str, Any]]:
    return 404, _status(404, "NotFound", f'inferenceservices.serving.kserve.io "{name}" not found')


@dataclass
class FakeApiServer:
    """The objects, the requests seen, and hooks to simulate other writers and the controller.

    Attributes:
        before_write: Called before each PATCH/PUT is applied (another writer changing the object).
        after_create: Called with each created object's key (what KServe's controller would then do).
        anonymous_reads: Answer GETs without a bearer token (helm over plain HTTP, see the field).
    """

    port: int = 0
    objects: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    before_write: Callable[[FakeApiServer, str, str], None] | None = None
    after_create: Callable[[FakeApiServer, str, str], None] | None = None
    # Answer GETs without a token: helm's `lookup` reads this plain-HTTP mock without one, because client-go's
    # clientcmd (DirectClientConfig.ClientConfig) adds a kubeconfig's credentials only to a TLS transport.
    anonymous_reads: bool = False
    _version: int = 100

    def put_object(self, isvc: dict[str, Any]) -> dict[str, Any]:
        """Store an object as if created (admitted first; fills resourceVersion and generation).

        Raises:
            AdmissionError: KServe's webhook would refuse it.
        """
        stored = kserve_defaults(isvc)
        admit(stored)
        stored["metadata"]["resourceVersion"] = self._next_version()
        stored["metadata"].setdefault("generation", 1)
        self.objects[(stored["metadata"]["namespace"], stored["metadata"]["name"])] = stored
        return copy.deepcopy(stored)

    def get_object(self, namespace: str, name: str) -> dict[str, Any]:
        return copy.deepcopy(self.objects[(namespace, name)])

    def set_ready(self, namespace: str, name: str, ready: bool = True, message: str = "") -> None:
        """What KServe's controller reports once the pods run (or fail): condition ``Ready``."""
        condition = {"type": "Ready", "status": "True" if ready else "False"}
        if message:
            condition |= {"reason": "PredictorNotReady", "message": message}
        self.objects[(namespace, name)].setdefault("status", {})["conditions"] = [condition]

    def touch(self, namespace: str, name: str) -> None:
        """Another writer changed the object: a new resourceVersion (and a label, to see it survive)."""
        stored = self.objects[(namespace, name)]
        stored["metadata"].setdefault("labels", {})["touched-by"] = "someone-else"
        stored["metadata"]["resourceVersion"] = self._next_version()

    def writes(self) -> list[dict[str, Any]]:
        """The requests that would change something (create, patch, replace, delete)."""
        return [
            request for request in self.requests if request["method"] in ("POST", "PATCH", "PUT", "DELETE")
        ]

    def _next_version(self) -> str:
        self._version += 1
        return str(self._version)

    def _admit(self, isvc: dict[str, Any], old: dict[str, Any] | None) -> tuple[int, Any] | None:
        try:
            admit(isvc, old)
        except AdmissionError as error:
            return 403, _status(
                403, "Forbidden", f'admission webhook "{WEBHOOK}" denied the request: {error}'
            )
        return None

    def create(self, namespace: str, body: dict[str, Any]) -> tuple[int, Any]:
        name = body.get("metadata", {}).get("name", "")
        if (namespace, name) in self.objects:
            return 409, _status(
                409, "AlreadyExists", f'inferenceservices.serving.kserve.io "{name}" already exists'
            )
        created = kserve_defaults(body)
        refused = self._admit(created, None)
        if refused:
            return refused
        created["metadata"] |= {
            "namespace": namespace,
            "resourceVersion": self._next_version(),
            "generation": 1,
        }
        created.pop("status", None)  # the status subresource is the controller's, never the creator's
        self.objects[(namespace, name)] = created
        if self.after_create is not None:
            self.after_create(self, namespace, name)
        return 201, self.get_object(namespace, name)

    def delete(self, namespace: str, name: str) -> tuple[int, Any]:
        if self.objects.pop((namespace, name), None) is None:
            return _not_found(name)
        return 200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}

    def list(self, namespace: str, selector: str) -> tuple[int, Any]:
        wanted: dict[str, str] = {}
        for term in filter(None, selector.split(",")):
            key, equals, value = term.replace("==", "=").partition("=")
            if not equals or "!" in key:
                return 400, _status(
                    400, "BadRequest", f"this mock understands only key=value selectors: {term}"
                )
            wanted[key] = value
        items = [
            copy.deepcopy(obj)
            for (ns, _), obj in sorted(self.objects.items())
            if ns == namespace and wanted.items() <= (obj["metadata"].get("labels") or {}).items()
        ]
        return 200, {
            "apiVersion": "serving.kserve.io/v1beta1",
            "kind": "InferenceServiceList",
            "metadata": {"resourceVersion": str(self._version)},
            "items": items,
        }

    def write(self, namespace: str, name: str, method: str, content_type: str, body: Any) -> tuple[int, Any]:
        if self.before_write is not None:
            self.before_write(self, namespace, name)
        current = self.objects.get((namespace, name))
        if current is None:
            return _not_found(name)
        if method == "PUT":
            updated = body
            if not body.get("metadata", {}).get("resourceVersion"):
                return 422, _status(
                    422, "Invalid", "metadata.resourceVersion: Invalid value: must be specified"
                )
        elif content_type == "application/merge-patch+json":
            updated = apply_merge_patch(current, body)
        elif content_type == "application/json-patch+json":
            try:
                updated = apply_json_patch(current, body)
            except (ValueError, KeyError, IndexError) as error:
                return 422, _status(422, "Invalid", f"the JSON patch cannot be applied: {error}")
        else:
            return 415, _status(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format: "
                f"accepted media types include: application/json-patch+json, "
                f"application/merge-patch+json, got {content_type}",
            )
        wanted_version = updated.get("metadata", {}).get("resourceVersion")
        if wanted_version and wanted_version != current["metadata"]["resourceVersion"]:
            return 409, _status(
                409,
                "Conflict",
                f"Operation cannot be fulfilled on inferenceservices.serving.kserve.io "
                f'"{name}": the object has been modified; please apply your changes '
                f"to the latest version and try again",
            )
        updated = kserve_defaults(updated)
        refused = self._admit(updated, current)
        if refused:
            return refused
        updated["metadata"]["resourceVersion"] = self._next_version()
        if updated.get("spec") != current.get("spec"):
            updated["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
        self.objects[(namespace, name)] = updated
        return 200, updated


def _handler(server: FakeApiServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _answer(self, code: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _route(self) -> tuple[str, str | None] | None:
            """``(namespace, name)``; name ``None`` for the collection."""
            path = self.path.split("?", 1)[0]
            if not path.startswith(PREFIX):
                return None
            parts = path[len(PREFIX) :].split("/")
            if len(parts) not in (2, 3) or parts[1] != "inferenceservices":
                return None
            return parts[0], parts[2] if len(parts) == 3 else None

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else {}
            content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            server.requests.append(
                {"method": self.command, "path": self.path, "content_type": content_type, "body": body}
            )
            anonymous_read = server.anonymous_reads and self.command == "GET"
            if self.headers.get("Authorization") != f"Bearer {TOKEN}" and not anonymous_read:
                self._answer(401, _status(401, "Unauthorized", "Unauthorized"))
                return
            if self.command == "GET" and self.path.split("?", 1)[0] == DISCOVERY:
                self._answer(200, API_RESOURCES)  # what `helm template --dry-run=server`'s lookup asks first
                return
            route = self._route()
            if route is None:
                self._answer(
                    404, _status(404, "NotFound", "the server could not find the requested resource")
                )
                return
            namespace, name = route
            if self.command not in (("GET", "POST") if name is None else ("GET", "PATCH", "PUT", "DELETE")):
                self._answer(405, _status(405, "MethodNotAllowed", f"{self.command} is not supported here"))
                return
            if name is None:
                if self.command == "POST":
                    self._answer(*server.create(namespace, body))
                else:
                    query = parse_qs(self.path.partition("?")[2])
                    self._answer(*server.list(namespace, query.get("labelSelector", [""])[0]))
            elif self.command == "GET":
                if (namespace, name) in server.objects:
                    self._answer(200, server.get_object(namespace, name))
                else:
                    self._answer(*_not_found(name))
            elif self.command == "DELETE":
                self._answer(*server.delete(namespace, name))
            else:
                self._answer(*server.write(namespace, name, self.command, content_type, body))

        do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle  # noqa: N815 - http.server's dispatch names

    return Handler


@pytest.fixture
def api_server() -> Iterator[FakeApiServer]:
    """A mock Kubernetes API server on a free loopback port."""
    fake = FakeApiServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    fake.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield fake
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def kubeconfig(api_server: FakeApiServer, tmp_path: Path) -> Path:
    """A kubeconfig whose current context points at the mock server, namespace ``ml``."""
    path = tmp_path / "kubeconfig"
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": f"http://127.0.0.1:{api_server.port}"}}],
                "users": [{"name": "tester", "user": {"token": TOKEN}}],
                "contexts": [
                    {"name": "fake", "context": {"cluster": "fake", "user": "tester", "namespace": "ml"}}
                ],
                "current-context": "fake",
            }
        )
    )
    return path
