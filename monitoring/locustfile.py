r"""Load test of the local stack through the transformer, the way clients call it (named-feature V1 JSON).

Headless and bounded, for example against ``housing up`` (transformer on port 8080 by default)::

    locust -f monitoring/locustfile.py --headless --host http://127.0.0.1:8080 --users 16 --spawn-rate 8 \
        --run-time 60s --only-summary

Most users ask for one house, some for a batch of ten; a few send a house with an impossible value and expect
the 400 that names the field (a 400 counts as success there, anything else as failure).
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from locust import FastHttpUser, between, task

# Locust puts this file's folder on sys.path, not the repository root that holds the `monitoring` package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from monitoring.traffic import PREDICT_PATH, houses, v1_body

HOUSES = houses()


class HousingClient(FastHttpUser):
    """A client of the housing InferenceService."""

    wait_time = between(0.0, 0.05)

    @task(8)
    def predict_one(self) -> None:
        """One house, one predicted value back."""
        with self.client.post(
            PREDICT_PATH, json=v1_body([random.choice(HOUSES)]), name="predict 1", catch_response=True
        ) as response:
            predictions = (response.json() or {}).get("predictions") if response.status_code == 200 else None
            if not predictions or len(predictions) != 1:
                response.failure(f"{response.status_code}: {response.text[:200]}")

    @task(2)
    def predict_batch(self) -> None:
        """Ten houses in one request."""
        with self.client.post(
            PREDICT_PATH, json=v1_body(random.sample(HOUSES, 10)), name="predict 10", catch_response=True
        ) as response:
            predictions = (response.json() or {}).get("predictions") if response.status_code == 200 else None
            if not predictions or len(predictions) != 10:
                response.failure(f"{response.status_code}: {response.text[:200]}")

    @task(1)
    def invalid_house(self) -> None:
        """A house with 150% of lower-status population: the transformer must refuse it, naming the field."""
        house = {**random.choice(HOUSES), "lstat": 150.0}
        with self.client.post(
            PREDICT_PATH, json=v1_body([house]), name="invalid (expect 400)", catch_response=True
        ) as response:
            if response.status_code == 400 and "lstat" in response.text:
                response.success()
            else:
                response.failure(
                    f"expected a 400 naming lstat, got {response.status_code}: {response.text[:200]}"
                )
