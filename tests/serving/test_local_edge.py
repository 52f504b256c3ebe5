"""The transformer's local edge with real processes: API keys and JWTs (401/403), rate limit (429), CORS.

One transformer runs with everything on: keys from a file, RS256 JWTs from a public key, 1 request a second
with a burst of 3 per client, and one allowed origin. Each test uses its own key, so that the buckets of one
test do not drain another's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from housing.processes import listening
from serving.auth import API_KEYS_ENV, Authenticator, AuthError, JwtSettings, parse_api_keys
from serving.ratelimit import TokenBucketLimiter
from tests.detector.conftest import metric_value
from tests.serving.conftest import MODEL, Server, start_transformer
from tests.serving.test_seed_api import HOUSE

ORIGIN = "https://app.example"
ISSUER = "https://login.example/tenant/v2.0"
AUDIENCE = "api://housing"
KEYS = {
    "predict": "k-predict-0123456789",
    "feedback": "k-feedback-0123456789",
    "limited": "k-limited-0123456789",
    "other": "k-other-0123456789",
}


@pytest.fixture(scope="module")
def signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def edge(predictor: Server, log_dir: Path, signing_key: rsa.RSAPrivateKey) -> Iterator[Server]:
    keys = log_dir / "api-keys"
    keys.write_text(
        "# test keys\n"
        f"{KEYS['predict']}=predict\n{KEYS['feedback']}=feedback\n"
        f"{KEYS['limited']}=predict; {KEYS['other']}=predict,feedback\n"
    )
    public = log_dir / "jwt.pem"
    public.write_bytes(
        signing_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    server = start_transformer(
        log_dir, predictor, "--auth", "--api_keys_file", str(keys), "--jwt_public_key", str(public),
        "--jwt_issuer", ISSUER, "--jwt_audience", AUDIENCE, "--rate_limit", "1", "--rate_burst", "3",
        "--cors_allow_origins", ORIGIN, "--cors_allow_headers", "authorization,x-api-key",
        name="transformer-edge",
    )  # fmt: skip
    yield server
    server.service.stop()


def token(signing_key: rsa.RSAPrivateKey, **claims: Any) -> str:
    body = {
        "sub": "user-1",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "exp": int(time.time()) + 300,
        "roles": ["predict"],
    }
    return jwt.encode({**body, **claims}, signing_key, algorithm="RS256")


def predict(server: Server, route: str = "/predict", **headers: str) -> httpx.Response:
    body: Any = HOUSE if route == "/predict" else {"instances": [HOUSE]}
    url = f"{server.url}/v1/models/{MODEL}:predict" if route == "v1" else f"{server.url}{route}"
    return httpx.post(url, json=body, headers=headers, timeout=10)


@pytest.mark.slow
@pytest.mark.parametrize("route", ["/predict", "/predict/batch", "v1"])
def test_no_credential_is_401_with_a_bearer_challenge(edge: Server, route: str) -> None:
    response = predict(edge, route)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="housing"'
    assert "authorization: missing" in response.json()["error"]


@pytest.mark.slow
def test_bad_credentials_are_401_invalid_token(edge: Server, signing_key: rsa.RSAPrivateKey) -> None:
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for headers in (
        {"authorization": "Bearer not-a-key"},
        {"x-api-key": "not-a-key"},
        {"authorization": f"Bearer {token(other_key)}"},  # signed by someone else
        {"authorization": f"Bearer {token(signing_key, exp=int(time.time()) - 60)}"},  # expired
        {"authorization": f"Bearer {token(signing_key, aud='api://other')}"},
        {"authorization": f"Bearer {token(signing_key, iss='https://evil.example')}"},
    ):
        response = predict(edge, **headers)
        assert response.status_code == 401, headers
        assert 'error="invalid_token"' in response.headers["www-authenticate"]


@pytest.mark.slow
def test_the_wrong_role_is_403(edge: Server, signing_key: rsa.RSAPrivateKey) -> None:
    for headers in (
        {"x-api-key": KEYS["feedback"]},
        {"authorization": f"Bearer {token(signing_key, roles=['feedback'])}"},
    ):
        response = predict(edge, **headers)
        assert response.status_code == 403, response.text
        assert "needs role 'predict'" in response.json()["error"]
        assert 'error="insufficient_scope"' in response.headers["www-authenticate"]


@pytest.mark.slow
def test_the_predict_role_predicts_with_a_key_or_a_token(
    edge: Server, signing_key: rsa.RSAPrivateKey
) -> None:
    by_key = predict(edge, authorization=f"Bearer {KEYS['predict']}")
    by_header = predict(edge, "v1", **{"x-api-key": KEYS["predict"]})
    by_token = predict(
        edge, "/predict/batch", authorization=f"Bearer {token(signing_key, roles='predict admin')}"
    )
    assert by_key.status_code == by_header.status_code == by_token.status_code == 200, by_token.text
    assert (
        by_key.json()["prediction"] == by_header.json()["predictions"][0] == by_token.json()["predictions"][0]
    )


@pytest.mark.slow
def test_health_metadata_and_metrics_stay_open(edge: Server) -> None:
    for path in ("/health", "/metrics", "/v2/health/ready", f"/v2/models/{MODEL}", "/openapi.json"):
        assert httpx.get(f"{edge.url}{path}").status_code == 200, path


@pytest.mark.slow
def test_beyond_the_rate_a_client_gets_429_with_retry_after(edge: Server) -> None:
    before = metric_value(httpx.get(f"{edge.url}/metrics").text, "housing_requests_rate_limited_total")
    answers = [predict(edge, **{"x-api-key": KEYS["limited"]}) for _ in range(6)]
    codes = [answer.status_code for answer in answers]
    assert codes[:3] == [200, 200, 200]  # the burst
    refused = [answer for answer in answers if answer.status_code == 429]
    assert refused, codes  # 6 requests in well under 3 s: at most 3 + 2 refilled tokens
    assert int(refused[0].headers["retry-after"]) >= 1
    assert "rate limit" in refused[0].json()["error"]
    # Another client (another key) has its own bucket.
    assert predict(edge, **{"x-api-key": KEYS["other"]}).status_code == 200
    after = metric_value(httpx.get(f"{edge.url}/metrics").text, "housing_requests_rate_limited_total")
    assert after - before == len(refused)


@pytest.mark.slow
def test_cors_preflight_is_answered_only_for_the_allowed_origin(edge: Server) -> None:
    preflight = {"access-control-request-method": "POST", "access-control-request-headers": "authorization"}
    allowed = httpx.options(f"{edge.url}/predict", headers={"origin": ORIGIN, **preflight})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in allowed.headers["access-control-allow-methods"]
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    refused = httpx.options(f"{edge.url}/predict", headers={"origin": "https://evil.example", **preflight})
    assert refused.status_code == 400
    assert "access-control-allow-origin" not in refused.headers
    # The actual call from the allowed origin carries the header the browser needs to read the answer.
    call = predict(edge, origin=ORIGIN, authorization=f"Bearer {KEYS['other']}")
    assert call.status_code == 200
    assert call.headers["access-control-allow-origin"] == ORIGIN


@pytest.mark.slow
@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--rate_limit", "0"], "--rate_limit must be more than 0"),
        (["--rate_limit", "-5"], "--rate_limit must be more than 0"),
        (["--rate_limit", "5", "--rate_burst", "0.5"], "--rate_burst must be at least 1"),
        (["--cors_allow_origins", "*", "--cors_allow_credentials"], "list the origins"),
        (["--auth"], "--auth: authentication needs API keys or a JWT key"),
    ],
)
def test_contradictory_edge_flags_are_refused_at_start_up(flags: list[str], message: str) -> None:
    command = [sys.executable, "-m", "transformer", "--predictor_host", "127.0.0.1:1", *flags]
    env = {name: value for name, value in os.environ.items() if not name.startswith("HOUSING_")}
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stderr


def test_api_key_entries_are_parsed_and_refused_when_malformed() -> None:
    keys = parse_api_keys("# comment\na=predict, feedback ; b=predict\n\n", "keys")
    assert keys == {"a": frozenset({"predict", "feedback"}), "b": frozenset({"predict"})}
    for bad in ("a", "=predict", "a=", "a=predict\na=feedback"):
        with pytest.raises(ValueError, match="keys, line"):
            parse_api_keys(bad, "keys")


def test_hs256_tokens_are_verified_with_the_shared_secret() -> None:
    secret = "s" * 32
    authenticator = Authenticator(jwt=JwtSettings(secret, ("HS256",), issuer=ISSUER, audience=AUDIENCE))
    claims = {"sub": "u", "iss": ISSUER, "aud": AUDIENCE, "roles": ["feedback"]}
    good = jwt.encode({**claims, "exp": int(time.time()) + 60}, secret)
    assert authenticator.authenticate(bearer(good)).roles == {"feedback"}
    no_expiry = jwt.encode(claims, secret)
    unsigned = jwt.encode({**claims, "exp": int(time.time()) + 60}, None, algorithm="none")
    for bad in (no_expiry, unsigned):
        with pytest.raises(AuthError, match="invalid token"):
            authenticator.authenticate(bearer(bad))
    with pytest.raises(ValueError, match="audience"):
        JwtSettings(secret, ("HS256",), issuer=ISSUER)


def bearer(token: str) -> list[tuple[bytes, bytes]]:
    """The ASGI scope's headers of a request carrying ``token``."""
    return [(b"authorization", f"Bearer {token}".encode())]


@pytest.mark.slow
def test_up_with_auth_generates_keys_and_guards_predictions(artifact_dir: Path, tmp_path: Path) -> None:
    from housing import stack
    from tests.serving.test_stack import environment, serving, up_command

    assert stack.API_KEYS_ENV == API_KEYS_ENV  # repeated there so that `housing --help` stays light
    env = {name: value for name, value in environment(tmp_path).items() if not name.startswith("HOUSING_API")}
    env["HOUSING_VAR_DIR"] = str(tmp_path)
    command = up_command("--artifact", str(artifact_dir), "--auth")
    with serving(command, env) as output:
        printed = "".join(output)
        keys = parse_api_keys((tmp_path / "api-keys").read_text(), "api-keys")
        assert (tmp_path / "api-keys").stat().st_mode & 0o077 == 0, "the key file must be the owner's only"
        predict_key = next(key for key, roles in keys.items() if roles == {"predict"})
        assert f"roles predict: {predict_key}" in printed
        assert f"Authorization: Bearer {predict_key}" in printed  # the curl example carries it
        port = int(command[command.index("--transformer-port") + 1])
        url = f"http://127.0.0.1:{port}/predict"
        assert httpx.post(url, json=HOUSE).status_code == 401
        assert httpx.post(url, json=HOUSE, headers={"x-api-key": predict_key}).status_code == 200
        assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200


@pytest.mark.slow
def test_with_auth_the_unguarded_grpc_port_stays_closed(edge: Server) -> None:
    assert not listening(edge.grpc_port)
    assert "the gRPC port stays closed" in edge.service.log_path.read_text()


def test_a_bucket_holds_the_burst_and_refills_at_the_rate() -> None:
    now = [0.0]
    limiter = TokenBucketLimiter(2.0, 3, max_clients=2, clock=lambda: now[0])
    assert [limiter.take("a") for _ in range(3)] == [0, 0, 0]
    assert limiter.take("a") == pytest.approx(0.5)  # empty: one token in 1/rate seconds
    now[0] += 0.5
    assert limiter.take("a") == 0
    assert limiter.take("b") == 0  # another client's own bucket
    now[0] += 100
    assert [limiter.take("a") for _ in range(4)][-1] > 0  # refilled to the burst, never beyond
    limiter.take("c")  # a third client: the least recently seen ("b") is forgotten
    assert set(limiter._buckets) == {"a", "c"}
    for rate, burst in ((0, 1), (-1, 1), (float("inf"), 1), (1, 0.5)):
        with pytest.raises(ValueError):
            TokenBucketLimiter(rate, burst)
