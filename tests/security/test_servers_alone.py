"""Attacks on each server run alone, with its own defaults: where it listens, slow bodies, floods of names,
forwarded addresses, forged tokens, and the start-up refusals of unsafe settings.

Six processes start once for the module, side by side: a predictor, an explainer and a detector with their
defaults, a transformer with ``--max_in_flight 32`` (the issue's slow-body case), one rate-limited without
authentication (the issue's ``X-Forwarded-For`` case, bound through ``BIND_ADDRESS``), and one taking JWTs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import jwt
import numpy as np
import pytest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

from housing.processes import Service, free_port, python_service, wait_until
from tests.conftest import ROOT
from tests.security.attacks import (
    HOUSE,
    LOOPBACK,
    Background,
    SlowResult,
    idle_keep_alive,
    listening_addresses,
    metrics_text,
    request,
    sample_lines,
    slow_body,
    slow_head,
)

pytestmark = pytest.mark.slow

SECRET = "a-shared-secret-of-at-least-32-characters"  # pragma: allowlist secret (a test's own)
AUDIENCE = "api://housing"
OTHER_BIND = "127.0.0.2"
PREDICT = "/v1/models/housing:predict"


@dataclass
class Alone:
    """The module's servers: name -> (service, HTTP port, gRPC port)."""

    services: dict[str, Service]
    ports: dict[str, tuple[int, int]]

    def http(self, name: str) -> int:
        return self.ports[name][0]

    def grpc(self, name: str) -> int:
        return self.ports[name][1]


@pytest.fixture(scope="module")
def alone(artifact_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Alone]:
    logs = tmp_path_factory.mktemp("alone")
    ports = {
        name: (free_port(), free_port()) for name in ("predictor", "explainer", "detector", "a", "b", "c")
    }
    artifact = str(artifact_dir)

    def server(component: str, name: str, *extra: str, env: dict[str, str] | None = None) -> Service:
        http, grpc_port = ports[name]
        grpc_flag = [] if component == "detector" else ["--grpc_port", str(grpc_port)]
        args = ["-m", component, "--http_port", str(http), *grpc_flag, *extra]
        return python_service(f"{component}-{name}", args, logs, env)

    predictor_grpc = f"127.0.0.1:{ports['predictor'][1]}"
    rest = f"127.0.0.1:{ports['predictor'][0]}"
    front = ["--predictor_host", predictor_grpc, "--protocol", "grpc-v2", "--predictor_rest_host", rest]
    services = {
        "predictor": server("predictor", "predictor", "--storage_uri", artifact),
        "explainer": server("explainer", "explainer", "--storage_uri", artifact),
        "detector": server("detector", "detector", "--storage_uri", artifact, "--state_dir", str(logs)),
        "a": server("transformer", "a", *front, "--max_in_flight", "32"),
        "b": server("transformer", "b", *front, "--rate_limit", "2", "--rate_burst", "4",
                    env={"BIND_ADDRESS": OTHER_BIND}),
        "c": server("transformer", "c", *front, "--auth", "--jwt_audience", AUDIENCE,
                    env={"HOUSING_JWT_SECRET": SECRET}),
    }  # fmt: skip
    try:
        services["predictor"].start().wait_ready(f"http://127.0.0.1:{ports['predictor'][0]}/v2/health/ready")
        for name in ("explainer", "detector", "a", "b", "c"):
            services[name].start()
        for name, service in services.items():
            host = OTHER_BIND if name == "b" else "127.0.0.1"
            path = "/readyz" if name == "detector" else "/v2/health/ready"
            service.wait_ready(f"http://{host}:{ports[name][0]}{path}", timeout=120)
        yield Alone(services, ports)
    finally:
        for service in services.values():
            service.stop()


@pytest.mark.parametrize("name", ["predictor", "explainer", "detector", "a"])
def test_a_server_alone_listens_on_loopback_only(alone: Alone, name: str) -> None:
    """main bound every interface (predictor HTTP and gRPC, transformer, explainer; the detector 0.0.0.0)."""
    addresses = listening_addresses(alone.services[name].pid)
    assert addresses and addresses <= LOOPBACK, sorted(addresses)


def test_bind_address_from_the_environment_is_the_only_listener(alone: Alone) -> None:
    addresses = listening_addresses(alone.services["b"].pid)
    assert addresses <= {OTHER_BIND, f"::ffff:{OTHER_BIND}"}, sorted(addresses)
    with pytest.raises(ConnectionRefusedError):
        request(alone.http("b"), "GET", "/v2/health/live")  # nothing on 127.0.0.1 at that port


def test_the_explainer_opens_no_grpc_port(alone: Alone) -> None:
    """:explain is REST only; main opened KServe's gRPC port on every interface anyway."""
    listening = {port for port in alone.ports["explainer"] if _listening(port)}
    assert listening == {alone.http("explainer")}


def _listening(port: int) -> bool:
    try:
        request(port, "GET", "/v2/health/live", timeout=2)
    except OSError:
        return False
    return True


@dataclass
class SlowAttack:
    bodies: list[SlowResult]
    head: SlowResult
    served: list[int]
    idle: list[int]


@pytest.fixture(scope="module")
def slow_attack(alone: Alone) -> SlowAttack:
    """40 connections from one address send a body a byte a second, one sends its headers a line a second,
    while another address predicts.

    On main the slow bodies took all 32 places of ``--max_in_flight 32`` and everybody else got 503.
    """
    bodies, head, idle = Background(), Background(), Background()
    idle.start(idle_keep_alive, alone.http("a"), 12.0)  # meanwhile: an honest client, idle longer than 10 s
    for _ in range(40):
        bodies.start(slow_body, alone.http("a"), PREDICT, {"content-type": "application/json"},
                     length=200, interval=1.0, give_up=25, source="127.0.0.41")  # fmt: skip
    head.start(slow_head, alone.http("a"), give_up=25)
    time.sleep(2)  # all 40 are sending
    served = [request(alone.http("a"), "POST", "/predict", HOUSE, timeout=10).status for _ in range(20)]
    return SlowAttack(bodies.join(40), head.join(30)[0], served, idle.join(30)[0])


def test_a_slow_sender_holds_no_more_than_half_the_places(slow_attack: SlowAttack) -> None:
    refused_at_once = [result for result in slow_attack.bodies if result.status == 429 and result.seconds < 5]
    assert len(refused_at_once) == 40 - 16, sorted(
        (r.status, round(r.seconds, 1)) for r in slow_attack.bodies
    )


def test_others_are_served_while_slow_bodies_arrive(slow_attack: SlowAttack) -> None:
    assert slow_attack.served == [200] * 20, slow_attack.served


def test_slow_bodies_are_cut_408_at_the_routes_time_limit(slow_attack: SlowAttack) -> None:
    held = [result for result in slow_attack.bodies if result.status != 429]
    assert len(held) == 16, held
    assert all(result.status == 408 and 9.5 < result.seconds < 16 for result in held), held


def test_a_head_sent_a_line_a_second_is_cut_408(slow_attack: SlowAttack) -> None:
    """Slowloris: main (uvicorn) waited for the blank line as long as lines kept coming."""
    assert slow_attack.head.status == 408 and 9.5 < slow_attack.head.seconds < 16, slow_attack.head
    assert slow_attack.idle == [200, 200]  # an idle keep-alive connection is not a slow head


def test_made_up_model_names_do_not_grow_metrics(alone: Alone) -> None:
    """Each name a client made up became a label on main (a histogram of 16 lines per name)."""
    before = sample_lines(metrics_text(alone.http("a")))
    for number in range(150):
        answer = request(alone.http("a"), "POST", f"/v2/models/made-up-{number}/infer", {"inputs": []})
        assert answer.status in (400, 404), answer.text
    text = metrics_text(alone.http("a"))
    assert "made-up" not in text
    assert sample_lines(text) - before < 40


def test_rotating_x_forwarded_for_does_not_multiply_the_rate(alone: Alone) -> None:
    """main's uvicorn believed X-Forwarded-For from 127.0.0.1: 60 of 60 passed a 1-a-second limit."""
    statuses = [
        _on_b(alone, "POST", "/predict", HOUSE, {"x-forwarded-for": f"203.0.113.{n}"}) for n in range(20)
    ]
    assert statuses.count(200) <= 6, statuses  # the burst of 4, and what refills while they go
    assert statuses.count(429) >= 14, statuses


def _on_b(alone: Alone, method: str, path: str, body: dict, headers: dict[str, str]) -> int:
    import http.client
    import json

    connection = http.client.HTTPConnection(OTHER_BIND, alone.http("b"), timeout=10)
    try:
        connection.request(method, path, json.dumps(body), {"content-type": "application/json", **headers})
        return connection.getresponse().status
    finally:
        connection.close()


def test_a_grpc_message_over_the_limit_is_refused(alone: Alone) -> None:
    """30,000 rows (2.9 MB) in one ModelInfer: over the table's 2 MiB, refused before it is decoded."""
    rows = np.ones((30_000, 12))
    tensor = pb.ModelInferRequest.InferInputTensor(name="input-0", datatype="FP64", shape=list(rows.shape))
    call = pb.ModelInferRequest(model_name="housing", inputs=[tensor], raw_input_contents=[rows.tobytes()])
    with grpc.insecure_channel(f"127.0.0.1:{alone.grpc('predictor')}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.ModelInfer(call, timeout=30)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refused.value.details()
        assert stub.ModelReady(pb.ModelReadyRequest(name="housing"), timeout=10).ready


def _token(**claims: object) -> dict[str, str]:
    body = {"sub": "user-1", "aud": AUDIENCE, "exp": int(time.time()) + 300, "roles": ["predict"], **claims}
    return {"authorization": f"Bearer {jwt.encode(body, SECRET, algorithm='HS256')}"}


def test_a_valid_jwt_predicts(alone: Alone) -> None:
    assert request(alone.http("c"), "POST", "/predict", HOUSE, _token(), source="127.0.0.51").status == 200


@pytest.mark.parametrize(
    "claims",
    [{"exp": str(int(time.time()) + 300)}, {"iat": str(int(time.time()))}, {"nbf": "0"}],
    ids=["exp-string", "iat-string", "nbf-string"],
)
def test_a_jwt_with_a_malformed_time_claim_is_401(alone: Alone, claims: dict[str, object]) -> None:
    """PyJWT took "exp": "1999999999" (a string) as a time; main let it in."""
    answer = request(alone.http("c"), "POST", "/predict", HOUSE, _token(**claims), source="127.0.0.52")
    assert answer.status == 401, answer.text
    assert "invalid token" in answer.json()["error"]


def _refused_at_start(module: str, *flags: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``python -m module`` with ``flags``: it must exit at once (a server that starts is a failure)."""
    try:
        return subprocess.run(
            [sys.executable, "-m", module, *flags], capture_output=True, text=True, timeout=20, cwd=ROOT,
            env={**os.environ, **env},
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail(f"python -m {module} {' '.join(flags)} started serving instead of refusing")


def test_jwts_without_an_audience_are_refused_at_start_up(alone: Alone) -> None:
    """Without one, a token minted for any other service of the tenant would pass."""
    done = _refused_at_start(
        "transformer", "--predictor_host", "127.0.0.1:1", "--http_port", str(free_port()),
        "--grpc_port", str(free_port()), "--auth", env={"HOUSING_JWT_SECRET": SECRET},
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert "--jwt_audience" in done.stderr


def test_a_key_with_an_unknown_role_is_refused_at_start_up(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("k-0123456789=predict,superuser\n")
    done = _refused_at_start(
        "detector", "--storage_uri", str(tmp_path), "--http_port", str(free_port()),
        "--state_dir", str(tmp_path / "state"), "--auth", "--api_keys_file", str(keys), env={},
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert "unknown role 'superuser'" in done.stderr


def test_last_with_the_predictor_gone_health_and_readiness_both_say_so(alone: Alone) -> None:
    """Last in the module: it stops the predictor. main's /health kept answering from cached metadata."""
    port = alone.http("a")
    assert request(port, "GET", "/health").status == 200
    alone.services["predictor"].stop()

    def both_503() -> bool:
        return {request(port, "GET", path).status for path in ("/health", "/v2/health/ready")} == {503}

    wait_until(both_503, timeout=15, what="/health and readiness both 503")
    assert "/v2/models/housing/ready" in request(port, "GET", "/health").json()["reason"]
    assert request(port, "POST", "/predict", HOUSE).status == 503
