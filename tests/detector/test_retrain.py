"""Retraining actions: a Kubernetes Job (against a mock API server), a webhook, a real training command."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from detector.keys import WindowKey
from detector.retrain import RetrainTrigger, command_action, k8s_job_action, webhook_action
from housing.processes import free_port

JOB_TEMPLATE = """\
apiVersion: batch/v1
kind: Job
metadata:
  name: housing-retrain
  namespace: ml
  labels: {app.kubernetes.io/name: housing-trainer}
spec:
  backoffLimit: 1
  template:
    spec:
      restartPolicy: Never
      containers:
        - name: trainer
          image: example.azurecr.io/housing-trainer:1.0
          args: [train, --fast]
"""


class Recorder(BaseHTTPRequestHandler):
    """Answers POSTs like the Kubernetes batch/v1 Jobs endpoint (201 with the object) and records them."""

    received: list[tuple[str, Any]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).received.append((self.path, body))
        if self.path.startswith("/apis/batch/v1/namespaces/"):
            created = {
                **body,
                "metadata": {**body["metadata"], "name": body["metadata"]["generateName"] + "abcde"},
            }
            payload, status = json.dumps(created).encode(), 201
        else:
            payload, status = b"{}", 200
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        return


@pytest.fixture
def recorder() -> Iterator[str]:
    Recorder.received = []
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_k8s_job_is_created_from_the_template(
    recorder: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No Kubernetes API server can run here: a tiny local HTTP server speaks the batch/v1 Jobs endpoint."""
    template = tmp_path / "job.yaml"
    template.write_text(JOB_TEMPLATE)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "mock",
                "clusters": [{"name": "mock", "cluster": {"server": recorder}}],
                "contexts": [{"name": "mock", "context": {"cluster": "mock", "user": "mock"}}],
                "users": [{"name": "mock", "user": {"token": "not-a-secret"}}],
            }
        )
    )
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    trigger = RetrainTrigger("k8s-job", k8s_job_action(template, kubeconfig=str(kubeconfig)))
    assert trigger.update(WindowKey("default", "3"), "drift", {"endpoint": "default", "drift_score": 0.61})
    trigger.threads[0].join(30)
    assert len(Recorder.received) == 1
    path, job = Recorder.received[0]
    assert path == "/apis/batch/v1/namespaces/ml/jobs"
    assert job["kind"] == "Job" and job["apiVersion"] == "batch/v1"
    assert job["metadata"]["generateName"] == "housing-retrain-" and "name" not in job["metadata"]
    assert job["metadata"]["labels"] == {"app.kubernetes.io/name": "housing-trainer"}
    assert job["metadata"]["annotations"]["housing.example.com/retrain-reason"] == "drift"
    assert job["metadata"]["annotations"]["housing.example.com/retrain-drift_score"] == "0.61"
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["train", "--fast"]


def test_k8s_template_must_be_a_job(tmp_path: Path) -> None:
    template = tmp_path / "pod.yaml"
    template.write_text("apiVersion: v1\nkind: Pod\n")
    with pytest.raises(ValueError, match="Job manifest"):
        k8s_job_action(template)


def test_webhook_posts_the_episode(recorder: str) -> None:
    webhook_action(recorder + "/hooks/retrain")({"reason": "r2", "r2": 0.5})
    assert Recorder.received == [("/hooks/retrain", {"reason": "r2", "r2": 0.5})]


def test_failing_command_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    trigger = RetrainTrigger("command", command_action(f"{sys.executable} -c 'raise SystemExit(3)'"))
    trigger.update(WindowKey("default", "1"), "drift", {})
    trigger.threads[0].join(30)
    assert "exited with 3" in caplog.text


@pytest.mark.slow
def test_command_action_runs_real_training_and_registers_a_challenger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default action's command, ``housing train --fast``, against an MLflow store in tmp."""
    from mlflow import MlflowClient

    from model.tracking import CHALLENGER, REGISTERED_MODEL

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    housing = Path(sys.executable).with_name("housing")
    output = tmp_path / "artifact"
    command = f"{housing} train --fast --no-progress --output {output}"
    trigger = RetrainTrigger("command", command_action(command))
    assert trigger.update(WindowKey("default", "1"), "drift", {"drift_score": 0.7})
    trigger.threads[0].join(300)
    assert (output / "model.json").is_file()
    registry = MlflowClient(tracking_uri=uri, registry_uri=uri)  # not a global one a test before set
    version = registry.get_model_version_by_alias(REGISTERED_MODEL, CHALLENGER)
    assert json.loads((output / "model.json").read_text())["version"] == str(version.version)
