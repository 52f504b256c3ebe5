"""``housing rollout promote|rollback --check-url``: predictions until only the new version answers.

The InferenceService lives in the mock API server (conftest.py: no cluster runs here); the service the check
predicts through is a small real HTTP server standing in for the cluster's transformer, answering with the
old version's ``x-model-version`` for its first answers (old pods draining), then the new one's.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.rollout.shapes import CANARY, STABLE, canary, chart_like, housing


class _Transformer(BaseHTTPRequestHandler):
    """Answers predictions; ``x-model-version`` is ``server.old`` for ``server.old_answers``, then ``new``."""

    def do_POST(self) -> None:
        server = self.server
        self.rfile.read(int(self.headers["content-length"]))
        server.paths.append(self.path)  # type: ignore[attr-defined]
        old = len(server.paths) <= server.old_answers  # type: ignore[attr-defined]
        body = json.dumps({"predictions": [24.0]}).encode()
        self.send_response(200)
        self.send_header("x-model-version", server.old if old else server.new)  # type: ignore[attr-defined]
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def transformer() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Transformer)
    server.paths = []  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def _serving(server: ThreadingHTTPServer, old: str, new: str, old_answers: int) -> str:
    server.old, server.new, server.old_answers = old, new, old_answers  # type: ignore[attr-defined]
    return f"http://127.0.0.1:{server.server_address[1]}"


@pytest.mark.parametrize(
    ("action", "old", "new"), [("promote", STABLE, CANARY), ("rollback", CANARY, STABLE)]
)
def test_the_check_waits_until_only_the_new_version_answers(
    api_server, kubeconfig, transformer, capsys, action, old, new
) -> None:
    api_server.put_object(chart_like("Standard"))
    api_server.after_create = lambda server, namespace, name: server.set_ready(namespace, name)
    assert canary(kubeconfig) == 0
    url = _serving(transformer, str(old.version), str(new.version), old_answers=7)
    assert housing(kubeconfig, action, "housing", "--check-url", url, "--check-timeout", "30") == 0
    out = capsys.readouterr().out
    assert f"serves version {new.version}" in out
    assert f"only version {new.version} answers (20 in a row" in out
    assert len(transformer.paths) >= 27  # type: ignore[attr-defined]  (7 old, then 20 in a row)
    assert set(transformer.paths) == {"/v1/models/housing:predict"}  # type: ignore[attr-defined]


def test_the_check_fails_when_the_old_version_still_answers(
    api_server, kubeconfig, transformer, capsys
) -> None:
    api_server.put_object(chart_like("Standard"))
    api_server.after_create = lambda server, namespace, name: server.set_ready(namespace, name)
    assert canary(kubeconfig) == 0
    url = _serving(transformer, str(STABLE.version), str(CANARY.version), old_answers=10**6)
    assert housing(kubeconfig, "promote", "housing", "--check-url", url, "--check-timeout", "1") == 1
    error = capsys.readouterr().err
    assert f"version {CANARY.version} is not the only one answering" in error
    assert re.search(
        rf"the last \d+ answers came from {re.escape(str(STABLE.version))} \(\d+\)$", error.strip()
    )
