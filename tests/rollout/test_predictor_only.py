"""``housing rollout`` without a transformer: KServe's own canaries, where its webhook admits them.

Knative mode: the revision split (``spec.predictor.canaryTrafficPercent``). Standard mode: ``spec.canary``,
which KServe's webhook admits only when it can see the stable predictor's model; otherwise the command refuses
before writing. Through the CLI and the real kubernetes client against the mock API server of ``conftest.py``,
which applies KServe's admission rules to every write.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from housing.rollout import objects
from tests.k8s import kserve_controller as kserve
from tests.rollout.shapes import (
    CANARY,
    CANARY_SHA,
    CANARY_URI,
    STABLE_URI,
    canary,
    housing,
    methods,
    predictor_only,
)


def stored(api_server) -> dict[str, Any]:
    return api_server.get_object("ml", "housing")


def container(predictor: dict[str, Any]) -> dict[str, Any]:
    return predictor["containers"][0]


# ---- Knative: the revision split -----------------------------------------------------------------


def test_knative_canary_names_the_new_model_and_the_split(api_server, kubeconfig):
    before = api_server.put_object(predictor_only("Knative"))
    assert canary(kubeconfig) == 0
    assert methods(api_server) == [("PATCH", "housing")]
    after = stored(api_server)
    predictor = after["spec"]["predictor"]
    assert predictor["canaryTrafficPercent"] == 10
    assert f"--storage_uri={CANARY_URI}" in container(predictor)["args"]
    assert predictor["annotations"][objects.SHA256_ANNOTATION] == CANARY_SHA
    assert predictor["labels"][objects.ENDPOINT_LABEL] == "canary"
    assert container(predictor)["resources"] == container(before["spec"]["predictor"])["resources"]
    memory = json.loads(after["metadata"]["annotations"][objects.STABLE_MODEL_ANNOTATION])
    assert memory == {"storage_uri": STABLE_URI, "sha256": "a" * 64, "version": "1.0.0"}


def test_knative_promote_keeps_the_new_model_and_drops_the_split(api_server, kubeconfig):
    api_server.put_object(predictor_only("Knative"))
    canary(kubeconfig)
    assert housing(kubeconfig, "promote", "housing") == 0
    after = stored(api_server)
    assert "canaryTrafficPercent" not in after["spec"]["predictor"]
    assert objects.read_model(after["spec"]["predictor"]) == CANARY
    assert objects.STABLE_MODEL_ANNOTATION not in after["metadata"]["annotations"]


def test_knative_rollback_restores_the_stable_model(api_server, kubeconfig):
    original = api_server.put_object(predictor_only("Knative"))
    canary(kubeconfig)
    assert housing(kubeconfig, "rollback", "housing") == 0
    after = stored(api_server)
    assert after["spec"] == original["spec"]
    assert after["metadata"]["annotations"] == original["metadata"]["annotations"]


def test_knative_rollback_of_a_hand_made_split_pins_zero_percent(api_server, kubeconfig):
    obj = predictor_only("Knative")
    obj["spec"]["predictor"]["canaryTrafficPercent"] = 30
    api_server.put_object(obj)
    assert housing(kubeconfig, "rollback", "housing") == 0
    assert stored(api_server)["spec"]["predictor"]["canaryTrafficPercent"] == 0


def test_knative_replace_keeps_the_remembered_stable_model(api_server, kubeconfig):
    api_server.put_object(predictor_only("Knative"))
    canary(kubeconfig)
    third = objects.ModelRef(CANARY_URI.replace("1.1.0", "1.2.0"), "c" * 64)
    assert canary(kubeconfig, "--replace", model=third, percent=5) == 0
    after = stored(api_server)
    assert (
        json.loads(after["metadata"]["annotations"][objects.STABLE_MODEL_ANNOTATION])["storage_uri"]
        == STABLE_URI
    )
    assert after["spec"]["predictor"]["canaryTrafficPercent"] == 5


def test_knative_second_canary_refused_without_replace(api_server, kubeconfig, capsys):
    api_server.put_object(predictor_only("Knative"))
    canary(kubeconfig)
    api_server.requests.clear()
    assert canary(kubeconfig) == 1
    assert "a canary already gets 10% of traffic" in capsys.readouterr().err
    assert api_server.writes() == []


# ---- Standard: spec.canary, only where KServe admits it ------------------------------------------


@pytest.mark.parametrize("form", ["equals", "separate"])
def test_standard_canary_refused_when_kserve_cannot_see_the_model(api_server, kubeconfig, capsys, form):
    api_server.put_object(predictor_only("Standard", form))
    assert canary(kubeconfig) == 1
    err = capsys.readouterr().err
    assert "KServe's webhook would refuse spec.canary here" in err
    assert '"canary requires a stable predictor with a model (multi-model serving is not supported' in err
    assert "custom container's STORAGE_URI env var" in err
    assert api_server.writes() == []


@pytest.mark.parametrize("mode", ["Standard", "RawDeployment"])
def test_standard_canary_admitted_with_a_storage_uri_env(api_server, kubeconfig, mode):
    before = api_server.put_object(predictor_only(mode, "env"))
    assert canary(kubeconfig, "--canary-name", "v110", percent=25) == 0
    after = stored(api_server)
    assert after["metadata"]["annotations"][objects.MODE_ANNOTATION] == "Standard"  # KServe's defaulting
    assert after["spec"]["predictor"] == before["spec"]["predictor"]
    (entry,) = after["spec"]["canary"]
    assert entry["trafficPercent"] == 25 and entry["predictor"]["name"] == "v110"
    assert {"name": "STORAGE_URI", "value": CANARY_URI} in container(entry["predictor"])["env"]
    assert entry["predictor"]["labels"][objects.ENDPOINT_LABEL] == "canary"
    assert container(entry["predictor"])["image"] == container(before["spec"]["predictor"])["image"]


def test_standard_canary_drops_the_autoscaling_fields_kserve_refuses_on_it(api_server, kubeconfig):
    obj = predictor_only("Standard", "env")
    obj["metadata"]["annotations"][objects.AUTOSCALER_CLASS_ANNOTATION] = "hpa"
    obj["spec"]["predictor"] |= {"maxReplicas": 4, "scaleMetric": "cpu", "scaleTarget": 60}
    api_server.put_object(obj)
    assert canary(kubeconfig) == 0
    (entry,) = stored(api_server)["spec"]["canary"]
    assert entry["predictor"]["minReplicas"] == 1
    assert not {"maxReplicas", "scaleMetric", "scaleTarget"} & set(entry["predictor"])


def test_standard_promote_and_rollback(api_server, kubeconfig):
    original = api_server.put_object(predictor_only("Standard", "env"))
    canary(kubeconfig)
    assert housing(kubeconfig, "rollback", "housing") == 0
    assert stored(api_server)["spec"] == original["spec"]
    canary(kubeconfig)
    assert housing(kubeconfig, "promote", "housing") == 0
    after = stored(api_server)
    assert "canary" not in after["spec"]
    assert objects.read_model(after["spec"]["predictor"]) == CANARY


def test_standard_model_storage_uri_form(api_server, kubeconfig):
    api_server.put_object(predictor_only("Standard", "model"))
    assert canary(kubeconfig, percent=50) == 0
    entry = stored(api_server)["spec"]["canary"][0]
    assert entry["predictor"]["model"]["storageUri"] == CANARY_URI
    assert entry["predictor"]["annotations"][objects.SHA256_ANNOTATION] == CANARY_SHA
    assert housing(kubeconfig, "promote", "housing") == 0
    assert stored(api_server)["spec"]["predictor"]["model"]["storageUri"] == CANARY_URI


def test_status_of_a_standard_canary(api_server, kubeconfig, capsys):
    api_server.put_object(predictor_only("Standard", "env"))
    canary(kubeconfig, percent=20)
    capsys.readouterr()
    assert housing(kubeconfig, "status", "housing", "-o", "json") == 0
    info = json.loads(capsys.readouterr().out)
    assert info["split_by"] == "KServe"
    assert [(item["endpoint"], item["percent"], item["storage_uri"]) for item in info["endpoints"]] == [
        ("default", 80, STABLE_URI),
        ("canary/canary", 20, CANARY_URI),
    ]


def test_canary_traffic_percent_on_a_standard_object_is_refused(api_server, kubeconfig, capsys):
    obj = predictor_only("Standard", "env")
    obj["spec"]["predictor"]["canaryTrafficPercent"] = 10
    api_server.put_object(obj)
    assert canary(kubeconfig) == 1
    assert "KServe ignores it in Standard mode" in capsys.readouterr().err


# ---- the rule, against the encoded KServe source -------------------------------------------------


@pytest.mark.parametrize("form", ["equals", "separate", "env", "model"])
def test_kserve_sees_a_model_agrees_with_kserve(form):
    predictor = predictor_only("Standard", form)["spec"]["predictor"]
    expected = kserve.storage_uri(predictor) is not None or predictor.get("model") is not None
    assert objects.kserve_sees_a_model(predictor) is expected
    assert expected is (form in ("env", "model"))


@pytest.mark.parametrize("form", ["equals", "separate", "env"])
def test_read_and_write_the_model_in_each_form(form):
    predictor = predictor_only("Knative", form)["spec"]["predictor"]
    assert objects.read_model(predictor) == objects.ModelRef(STABLE_URI, "a" * 64, "1.0.0")
    changed = objects.with_model(predictor, objects.ModelRef(CANARY_URI, CANARY_SHA, None))
    assert objects.read_model(changed) == objects.ModelRef(CANARY_URI, CANARY_SHA, None)
    assert objects.read_model(predictor).storage_uri == STABLE_URI  # the input is not modified


def test_kserve_looks_for_storage_uri_only_in_the_container_named_kserve_container():
    predictor = predictor_only("Standard", "env")["spec"]["predictor"]
    predictor["containers"][0]["name"] = "server"
    assert not objects.kserve_sees_a_model(predictor)
