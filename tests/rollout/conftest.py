"""A stand-in Kubernetes API server for the rollout tests.

No Kubernetes API server can run on these machines, so this is the one mock in the rollout tests: a small HTTP
server that implements what ``housing rollout`` uses of the real one for InferenceServices (GET, PATCH with
``application/merge-patch+json`` or ``application/json-patch+json``, PUT) with the real semantics that matter
here: resourceVersion preconditions answered with 409 Conflict, 404 Not Found as a ``Status`` object, bearer
token authentication, and a new resourceVersion (and generation, for spec changes) on every write. The
kubernetes Python client talks to it through an ordinary kubeconfig file.
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

import pytest

PREFIX = "/apis/serving.kserve.io/v1beta1/namespaces/"
TOKEN = "rollout-test-token"


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


@dataclass
class FakeApiServer:
    """The objects, the requests seen, and hooks to simulate other writers."""

    port: int = 0
    objects: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    before_write: Callable[[FakeApiServer, str, str], None] | None = None
    _version: int = 100

    def put_object(self, isvc: dict[str, Any]) -> dict[str, Any]:
        """Store an object as if created (fills resourceVersion and generation)."""
        stored = copy.deepcopy(isvc)
        stored["metadata"]["resourceVersion"] = self._next_version()
        stored["metadata"].setdefault("generation", 1)
        self.objects[(stored["metadata"]["namespace"], stored["metadata"]["name"])] = stored
        return stored

    def get_object(self, namespace: str, name: str) -> dict[str, Any]:
        return copy.deepcopy(self.objects[(namespace, name)])

    def touch(self, namespace: str, name: str) -> None:
        """Another writer changed the object: a new resourceVersion (and a label, to see it survive)."""
        stored = self.objects[(namespace, name)]
        stored["metadata"].setdefault("labels", {})["touched-by"] = "someone-else"
        stored["metadata"]["resourceVersion"] = self._next_version()

    def writes(self) -> list[dict[str, Any]]:
        return [request for request in self.requests if request["method"] in ("PATCH", "PUT")]

    def _next_version(self) -> str:
        self._version += 1
        return str(self._version)

    def write(self, namespace: str, name: str, method: str, content_type: str, body: Any) -> tuple[int, Any]:
        if self.before_write is not None:
            self.before_write(self, namespace, name)
        current = self.objects.get((namespace, name))
        if current is None:
            return 404, _status(404, "NotFound", f'inferenceservices.serving.kserve.io "{name}" not found')
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
        updated["metadata"]["resourceVersion"] = self._next_version()
        if updated.get("spec") != current.get("spec"):
            updated["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
        self.objects[(namespace, name)] = updated
        return 200, updated


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

        def _route(self) -> tuple[str, str] | None:
            path = self.path.split("?", 1)[0]
            if not path.startswith(PREFIX):
                return None
            parts = path[len(PREFIX) :].split("/")
            if len(parts) != 3 or parts[1] != "inferenceservices":
                return None
            return parts[0], parts[2]

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            server.requests.append(
                {"method": self.command, "path": self.path, "content_type": content_type, "body": body}
            )
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                self._answer(401, _status(401, "Unauthorized", "Unauthorized"))
                return
            route = self._route()
            if route is None:
                self._answer(
                    404, _status(404, "NotFound", "the server could not find the requested resource")
                )
                return
            namespace, name = route
            if self.command == "GET":
                if (namespace, name) not in server.objects:
                    self._answer(
                        404,
                        _status(404, "NotFound", f'inferenceservices.serving.kserve.io "{name}" not found'),
                    )
                else:
                    self._answer(200, server.get_object(namespace, name))
                return
            self._answer(*server.write(namespace, name, self.command, content_type, body))

        do_GET = do_PATCH = do_PUT = _handle  # noqa: N815 - the names http.server dispatches to

    return Handler


@pytest.fixture
def api_server() -> Iterator[FakeApiServer]:
    """A stand-in Kubernetes API server on a free loopback port."""
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
    """A kubeconfig whose current context points at the stand-in server, namespace ``ml``."""
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
