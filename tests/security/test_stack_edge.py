"""Attacks on ``housing up --auth --rate-limit 50`` as a local attacker runs them.

Back doors, open reads, forged ingest, guessing, odd headers, oversized and slow bodies. Each asserts the
exact status and that nothing was lost or stored (the model still serves; the detector's counts, metrics and
archive unchanged).
"""

from __future__ import annotations

import json
import time
import uuid

import grpc
import pytest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

from serving.policy import lookup
from tests.security.attacks import (
    HOUSE,
    LOOPBACK,
    chunked,
    cloud_event,
    endless_header,
    listening_addresses,
    metric,
    metrics_text,
    request,
    rss_kib,
    sample_lines,
    slow_body,
)
from tests.security.conftest import AuthStack, served

pytestmark = pytest.mark.slow

UNLOADS = [
    ("transformer", "/v2/repository/models/housing/unload"),
    ("predictor", "/v2/repository/models/housing/unload"),
    ("explainer", "/v2/repository/models/housing/unload"),
    ("predictor", "/v2/repository/models/housing/load"),
]


@pytest.mark.parametrize(("component", "path"), UNLOADS)
def test_the_repository_api_is_off_and_the_model_keeps_serving(
    auth_stack: AuthStack, component: str, path: str
) -> None:
    """The issue's back door: an unauthenticated unload answered 200 and took the model down."""
    answer = request(auth_stack.port(component), "POST", path, b"")
    assert answer.status == 404, answer.text
    assert "--enable_repository_api" in answer.json()["error"]
    assert served(auth_stack) == 200
    ready = request(auth_stack.port(component), "GET", "/v2/models/housing/ready")
    assert ready.status == 200, ready.text


def test_the_repository_api_is_off_even_for_an_admin(auth_stack: AuthStack) -> None:
    answer = request(auth_stack.port("predictor"), "POST", UNLOADS[1][1], b"", auth_stack.key("admin"))
    assert answer.status == 404, answer.text
    assert served(auth_stack) == 200


def test_grpc_repository_unload_is_refused_and_the_model_stays(auth_stack: AuthStack) -> None:
    """KServe's gRPC unload removed the model, then failed: gRPC checks no credential, so it is closed."""
    with grpc.insecure_channel(f"127.0.0.1:{auth_stack.port('predictor-grpc')}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="housing"), timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED, refused.value.details()
        assert stub.ModelReady(pb.ModelReadyRequest(name="housing"), timeout=10).ready
    assert served(auth_stack) == 200


@pytest.mark.parametrize("component", ["predictor", "transformer", "explainer", "detector"])
def test_every_listener_binds_loopback_only(auth_stack: AuthStack, component: str) -> None:
    addresses = listening_addresses(auth_stack.pids[component])
    assert addresses, f"{component} listens nowhere?"
    assert addresses <= LOOPBACK, f"{component} listens on {sorted(addresses)}"


@pytest.mark.parametrize(
    ("path", "role"), [("/outcomes", "analyst"), ("/status", "monitor"), ("/report", "monitor")]
)
def test_the_detectors_reads_need_their_role(auth_stack: AuthStack, path: str, role: str) -> None:
    port = auth_stack.port("detector")
    anonymous = request(port, "GET", path)
    assert anonymous.status == 401, anonymous.text
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    assert request(port, "GET", path, headers=auth_stack.key("predict")).status == 403
    assert request(port, "GET", path, headers=auth_stack.key(role)).status == 200


def _detector_counts(stack: AuthStack) -> tuple[float, int, dict[str, int]]:
    text = metrics_text(stack.port("detector"))
    assert "forged" not in text
    refusals = ("housing_edge_refused_", "housing_auth_refused_")  # counters with a fixed set of reasons
    text = "\n".join(line for line in text.splitlines() if not line.startswith(refusals))
    files = {
        str(path.relative_to(stack.var_dir)): path.stat().st_size
        for path in (stack.var_dir / "archive").rglob("*")
        if path.is_file()
    }
    return metric(text, "housing_detector_events_total"), sample_lines(text), files


def test_forged_events_without_the_ingest_credential_are_refused_and_nothing_is_stored(
    auth_stack: AuthStack,
) -> None:
    """Forged endpoints grew /metrics and the archive on main; without a credential now, none gets in."""
    port = auth_stack.port("detector")
    before = _detector_counts(auth_stack)
    statuses = []
    for number in range(40):
        for kind in ("request", "response"):
            headers, body = cloud_event(f"forged-{number}", kind, endpoint=f"forged-{number}")
            statuses.append(request(port, "POST", "/", body, headers, source="127.0.0.31").status)
    assert statuses[:10] == [401] * 10, statuses  # then 429: the address failed too often
    assert set(statuses) == {401, 429}, statuses
    time.sleep(1.5)  # a state save and an archive flush would have come by now
    assert _detector_counts(auth_stack) == before


def test_a_predict_key_cannot_ingest(auth_stack: AuthStack) -> None:
    headers, body = cloud_event(f"forged-{uuid.uuid4()}")
    answer = request(
        auth_stack.port("detector"), "POST", "/events", body, {**headers, **auth_stack.key("predict")}
    )
    assert answer.status == 403, answer.text


def test_the_transformers_own_logger_still_delivers(auth_stack: AuthStack) -> None:
    """The ingest credential reaches the logger: a real prediction is joined at the detector."""
    port = auth_stack.port("detector")
    before = metric(metrics_text(port), "housing_detector_events_total", outcome="accepted")
    assert served(auth_stack) == 200
    deadline = time.monotonic() + 20
    while metric(metrics_text(port), "housing_detector_events_total", outcome="accepted") < before + 2:
        assert time.monotonic() < deadline, "the logged inference never reached the detector"
        time.sleep(0.2)


def test_guessing_keys_is_throttled_per_address(auth_stack: AuthStack) -> None:
    """300 guesses got 300 answers on main; now an address that keeps failing gets 429 before any check."""
    port = auth_stack.port("transformer")
    statuses = [
        request(port, "POST", "/predict", HOUSE, {"x-api-key": f"guess-{n}"}, source="127.0.0.21").status
        for n in range(40)
    ]
    assert statuses.count(401) <= 12, statuses
    assert statuses[-10:] == [429] * 10, statuses
    throttled = request(port, "POST", "/predict", HOUSE, auth_stack.key("predict"), source="127.0.0.21")
    assert throttled.status == 429 and int(throttled.headers["retry-after"]) >= 1
    other = request(port, "POST", "/predict", HOUSE, auth_stack.key("predict"), source="127.0.0.22")
    assert other.status == 200, other.text


def test_rotating_x_forwarded_for_does_not_escape_the_throttle(auth_stack: AuthStack) -> None:
    port = auth_stack.port("detector")
    statuses = [
        request(port, "GET", "/status", headers={"x-api-key": f"guess-{n}", "x-forwarded-for": f"10.0.{n}.1"},
                source="127.0.0.23").status
        for n in range(40)
    ]  # fmt: skip
    assert statuses[-10:] == [429] * 10, statuses


@pytest.mark.parametrize(
    "headers",
    [
        [("x-api-key", "predict"), ("x-api-key", "other")],
        [("x-api-key", "predict"), ("authorization", "Bearer other")],
        [("x-api-key", "predict"), ("authorization", "Basic dXNlcjpwYXNz")],
        [("authorization", "Bearer predict"), ("authorization", "Bearer other")],
    ],
    ids=["two-api-keys", "key-and-bearer", "key-and-basic", "two-bearers"],
)
def test_two_credentials_in_one_request_are_refused(
    auth_stack: AuthStack, headers: list[tuple[str, str]]
) -> None:
    """main picked one (the last X-API-Key): a proxy checking the first would let the second through."""
    real = auth_stack.keys["predict"]
    sent = [(name, value.replace("predict", real)) for name, value in headers]
    answer = request(auth_stack.port("transformer"), "POST", "/predict", HOUSE, sent, source="127.0.0.24")
    assert answer.status == 400, answer.text
    assert "credential" in answer.json()["error"]


def test_a_60_kb_request_id_is_431_naming_the_header(auth_stack: AuthStack) -> None:
    """main answered 502 with gRPC internals in the body."""
    headers = {**auth_stack.key("predict"), "x-request-id": "r" * 60_000}
    answer = request(auth_stack.port("transformer"), "POST", "/predict", HOUSE, headers)
    assert answer.status == 431, answer.text
    assert answer.json()["error"].startswith("header x-request-id: 60000 bytes")
    assert served(auth_stack) == 200


@pytest.mark.parametrize("component", ["transformer", "detector"])
def test_a_header_that_never_ends_is_cut_at_64_kib(auth_stack: AuthStack, component: str) -> None:
    """uvicorn's httptools buffered a header of any size (8 MB went through): now 431 after 64 KiB."""
    pid = auth_stack.pids[component]
    before = rss_kib(pid)
    status, sent = endless_header(auth_stack.port(component), chunk=256 << 10, most=32 << 20)
    assert status == 431, (status, sent)
    assert rss_kib(pid) - before < 8 * 1024, "the server kept what came of the 32 MiB offered"


def test_many_large_headers_are_431(auth_stack: AuthStack) -> None:
    headers = [*auth_stack.key("predict").items(), *((f"x-pad-{n}", "p" * 8000) for n in range(6))]
    answer = request(auth_stack.port("transformer"), "POST", "/predict", HOUSE, headers)
    assert answer.status == 431, answer.text
    assert answer.json()["error"].startswith("headers: ")


BODY_LIMITS = [
    (component, path, role, lookup(component, path).limits.body_bytes)  # type: ignore[union-attr]
    for component, path, role in [
        ("transformer", "/v1/models/housing:predict", "predict"),
        ("transformer", "/predict", "predict"),
        ("predictor", "/v2/models/housing/infer", None),
        ("explainer", "/v1/models/housing:explain", None),
        ("detector", "/feedback", "feedback"),
        ("detector", "/", "ingest"),
    ]
]
"""The limits the servers enforce are the policy table's (serving/policy.py), the one place they are set."""


@pytest.mark.parametrize(("component", "path", "role", "limit"), BODY_LIMITS)
def test_a_body_over_the_routes_limit_is_413_before_it_is_read(
    auth_stack: AuthStack, component: str, path: str, role: str | None, limit: int
) -> None:
    """A valid JSON body padded with spaces past the limit: refused on its Content-Length, memory flat."""
    pid = auth_stack.pids[component]
    before = rss_kib(pid)
    body = b'{"instances": [' + json.dumps(HOUSE).encode() + b"]" + b" " * (limit + 1) + b"}"
    headers = {"content-type": "application/json", **(auth_stack.key(role) if role else {})}
    answer = request(auth_stack.port(component), "POST", path, body, headers)
    assert answer.status == 413, answer.text
    assert answer.json()["error"].startswith(f"body: {len(body)} bytes, more than the limit of {limit} bytes")
    assert rss_kib(pid) - before < 16 * 1024  # the body was never read


def test_a_streamed_body_is_cut_at_the_limit(auth_stack: AuthStack) -> None:
    """No Content-Length: counted as it arrives; 64 MiB offered, refused after about 1 MiB."""
    pid = auth_stack.pids["transformer"]
    before = rss_kib(pid)
    sent = []

    def chunks():
        yield b'{"instances": ['
        for _ in range(1024):
            sent.append(1)
            yield b" " * (64 << 10)

    headers = {"content-type": "application/json", **auth_stack.key("predict")}
    answer = chunked(auth_stack.port("transformer"), "/v1/models/housing:predict", chunks(), headers)
    assert answer.status == 413, answer.text
    assert len(sent) < 1024, "the server read the whole 64 MiB"
    assert rss_kib(pid) - before < 16 * 1024


def test_a_get_with_a_body_is_413(auth_stack: AuthStack) -> None:
    answer = request(auth_stack.port("transformer"), "GET", "/health", b"x" * 1000)
    assert answer.status == 413, answer.text


def test_a_slow_label_body_is_408_and_records_nothing(auth_stack: AuthStack) -> None:
    """A body sent a byte a second is cut at the route's 5 s (main waited while the client kept sending)."""
    labels = {"type": "feedback"}
    before = metric(metrics_text(auth_stack.port("detector")), "housing_detector_events_total", **labels)
    result = slow_body(auth_stack.port("detector"), "/feedback", auth_stack.key("feedback"), give_up=20)
    assert result.status == 408, result
    assert 4.5 < result.seconds < 12, result
    assert (
        metric(metrics_text(auth_stack.port("detector")), "housing_detector_events_total", **labels) == before
    )


def test_paths_the_table_does_not_list_are_404(auth_stack: AuthStack) -> None:
    for component in ("transformer", "predictor", "explainer", "detector"):
        answer = request(auth_stack.port(component), "GET", "/docs")
        assert answer.status == 404, (component, answer.text)
    assert request(auth_stack.port("detector"), "POST", "/admin", b"{}").status == 404
