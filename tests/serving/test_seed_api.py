"""The original system's API on the transformer (``/health``, ``/predict``, ``/predict/batch``).

The seed's own curl and Python examples are read from ../shared/seed/original-system.md at test time and run
verbatim, only their host and port rewritten to the transformer's.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from housing.processes import free_port, python_service, wait_until
from tests.conftest import require_shared, require_tool
from tests.serving.conftest import MODEL, Server, start_transformer

SEED_URL = "http://localhost:8000"
HOUSE = {
    "crim": 0.00632, "zn": 18.0, "indus": 2.31, "chas": 0, "nox": 0.538, "rm": 6.575, "age": 65.2,
    "dis": 4.09, "rad": 1, "tax": 296, "ptratio": 15.3, "b": 396.9, "lstat": 4.98,
}  # fmt: skip


def seed_example(language: str) -> str:
    """The code block of the seed's "Ejemplos de Uso" section in ``language`` (bash for cURL, python)."""
    text = require_shared("seed/original-system.md").read_text()
    examples = text[text.index("### Ejemplos de Uso") :]
    match = re.search(rf"```{language}\n(.*?)```", examples, re.DOTALL)
    assert match is not None, f"no {language} example in the seed"
    return match.group(1)


def v1_prediction(transformer: Server, house: dict[str, Any]) -> float:
    response = httpx.post(f"{transformer.url}/v1/models/{MODEL}:predict", json={"instances": [house]})
    response.raise_for_status()
    return float(response.json()["predictions"][0])


@pytest.mark.slow
def test_seed_curl_example_runs_verbatim(transformer: Server) -> None:
    curl = require_tool("curl")
    script = seed_example("bash").replace(SEED_URL, transformer.url)
    assert script.count(transformer.url) == 2, "the seed's example should call /health and /predict"
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={"PATH": str(Path(curl).parent)},
    )
    decoder = json.JSONDecoder()
    health, end = decoder.raw_decode(result.stdout)
    prediction, _ = decoder.raw_decode(result.stdout[end:].lstrip())
    assert health["status"] == "healthy"
    assert health["model_version"]
    assert prediction["unit"] == "USD 1000s"
    assert prediction["model_version"] == health["model_version"]
    # The same house through V1 (the seed's payload carries b, which the default model ignores).
    assert prediction["prediction"] == pytest.approx(v1_prediction(transformer, HOUSE))


@pytest.mark.slow
def test_seed_python_example_runs_verbatim(transformer: Server) -> None:
    script = seed_example("python").replace(SEED_URL, transformer.url)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    expected = v1_prediction(transformer, HOUSE)
    assert result.stdout.strip() == f"Predicted price: ${expected:.2f}"


@pytest.mark.slow
def test_batch_answers_every_house_in_order(transformer: Server, houses, artifact, rows_of) -> None:
    response = httpx.post(f"{transformer.url}/predict/batch", json={"instances": houses[:5]})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["unit"] == "USD 1000s"
    assert answer["model_version"] == artifact.version
    assert np.allclose(answer["predictions"], artifact.pipeline.predict(rows_of(houses[:5])), atol=1e-4)
    assert response.headers["x-request-id"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("route", "body", "status", "message"),
    [
        ("/predict", {**HOUSE, "nox": 1.5}, 400, "nox: must be in (0, 1), got 1.5"),
        ("/predict", {k: v for k, v in HOUSE.items() if k != "rm"}, 400, "rm: missing"),
        ("/predict", {**HOUSE, "age": "old"}, 400, "age: must be a number, got str"),
        ("/predict", {**HOUSE, "colour": 1}, 400, "colour: unknown field"),
        ("/predict", [HOUSE], 400, "body: must be an object of feature values, got list"),
        ("/predict", "{not json", 400, "body: not valid JSON"),
        ("/predict/batch", {"instances": [HOUSE, {**HOUSE, "rad": 2.5}]}, 400, "instances[1].rad: must be"),
        ("/predict/batch", {"houses": [HOUSE]}, 400, "instances: missing"),
        ("/predict/batch", {"instances": []}, 400, "instances: empty batch"),
    ],
)  # fmt: skip
def test_bad_houses_are_refused_naming_the_field(
    transformer: Server, route: str, body: Any, status: int, message: str
) -> None:
    content = body if isinstance(body, str) else json.dumps(body)
    response = httpx.post(f"{transformer.url}{route}", content=content)
    assert response.status_code == status
    assert response.json()["error"].startswith(message), response.text


@pytest.mark.slow
def test_seed_routes_are_in_the_openapi_document(transformer: Server) -> None:
    document = httpx.get(f"{transformer.url}/openapi.json").json()
    assert {"/health", "/predict", "/predict/batch", "/metrics"} <= set(document["paths"])
    route = document["paths"]["/predict"]["post"]
    assert set(route["requestBody"]["content"]["application/json"]["schema"]["properties"]) == set(HOUSE)
    answer = route["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert {"prediction", "model_version", "unit"} <= set(
        document["components"]["schemas"][answer]["properties"]
    )


@pytest.fixture
def down_predictor(log_dir: Path) -> Iterator[tuple[Server, int]]:
    """Ports for a predictor that is not started yet: a transformer in front of it, then the predictor."""
    http_port, grpc_port = free_port(), free_port()
    placeholder = Server(None, http_port, grpc_port)  # type: ignore[arg-type]
    transformer = start_transformer(log_dir, placeholder, "--predictor_request_timeout_seconds", "2",
                                    name="transformer-health", wait="/v2/health/live")  # fmt: skip
    yield transformer, http_port
    transformer.service.stop()


@pytest.mark.slow
def test_health_is_503_with_the_reason_until_the_predictor_answers(
    down_predictor, log_dir: Path, artifact_dir: Path
) -> None:
    transformer, predictor_port = down_predictor
    response = httpx.get(f"{transformer.url}/health", timeout=10)
    assert response.status_code == 503
    assert response.json()["status"] == "unhealthy"
    assert f"/v2/models/{MODEL}/ready" in response.json()["reason"], response.text
    assert httpx.get(f"{transformer.url}/v2/health/ready").status_code == 503  # readiness agrees
    predictor = python_service(
        "predictor-late",
        ["-m", "predictor", "--model_name", MODEL, "--storage_uri", str(artifact_dir),
         "--http_port", str(predictor_port), "--grpc_port", str(free_port())],
        log_dir,
    ).start()  # fmt: skip
    try:
        wait_until(
            lambda: httpx.get(f"{transformer.url}/health", timeout=10).status_code == 200,
            timeout=90,
            what="/health turning 200 once the predictor is up",
        )
        assert httpx.get(f"{transformer.url}/health").json()["model_version"]
    finally:
        predictor.stop()


@pytest.mark.slow
def test_seed_predictions_are_logged_to_the_detector(
    predictor: Server, log_dir: Path, start_detector
) -> None:
    detector = start_detector()
    transformer = start_transformer(
        log_dir, predictor, "--logger_url", detector.url + "/", name="transformer-seed-log"
    )
    try:
        response = httpx.post(f"{transformer.url}/predict", json=HOUSE, headers={"x-request-id": "seed-1"})
        assert response.status_code == 200, response.text
        truth = {"id": "seed-1", "value": 24.0}
        # Accepted only once the detector has joined the request and response events the transformer logged.
        wait_until(
            lambda: detector.client.post(detector.url + "/feedback", json=truth).status_code == 200,
            timeout=30,
            what="the seed prediction reaching the detector",
        )
    finally:
        transformer.service.stop()
