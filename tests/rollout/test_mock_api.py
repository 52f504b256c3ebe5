"""The mock API server answers as a cluster with KServe would: its webhook refuses what KServe refuses.

In particular the old ``housing rollout canary`` (a ``spec.canary`` entry on the chart's InferenceService,
whose custom predictor takes its model from an arg) is refused now, with KServe's own message.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from housing.rollout import objects, plans
from housing.rollout.cluster import Cluster
from tests.rollout.shapes import CANARY, chart_like, predictor_only

ARGS = (objects.GROUP, objects.VERSION, "ml", objects.PLURAL)
DENIED = 'admission webhook "inferenceservice.kserve-webhook-server.validator" denied the request: '


@pytest.fixture
def api(kubeconfig) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(config.new_client_from_config(config_file=str(kubeconfig)))


def message(error: ApiException) -> str:
    """The ``message`` of the ``Status`` the API server answered."""
    return str(json.loads(str(error.body))["message"])


def old_canary_patch(isvc: dict[str, Any]) -> dict[str, Any]:
    """What ``housing rollout canary`` wrote before: a spec.canary entry, a copy of the stable predictor."""
    predictor = objects.with_model(objects.predictor_spec(isvc), CANARY, "canary")
    for field in plans.CANARY_FORBIDDEN_FIELDS:
        predictor.pop(field, None)
    return {
        "metadata": {"resourceVersion": isvc["metadata"]["resourceVersion"]},
        "spec": {"canary": [{"trafficPercent": 10, "predictor": predictor | {"name": "canary"}}]},
    }


def test_the_old_spec_canary_on_the_chart_shape_is_refused_with_kserves_message(api_server, api):
    before = api_server.put_object(chart_like("Standard"))
    with pytest.raises(ApiException) as refused:
        api.patch_namespaced_custom_object(
            *ARGS, "housing", old_canary_patch(before), _content_type="application/merge-patch+json"
        )
    assert refused.value.status == 403
    assert message(refused.value).startswith(DENIED + "canary requires a stable predictor with a model")
    assert api_server.get_object("ml", "housing") == before


def test_the_same_entry_is_admitted_when_kserve_sees_the_model(api_server, api):
    """The refusal above is about the model KServe cannot see, not the entry: with STORAGE_URI it passes."""
    before = api_server.put_object(predictor_only("Standard", "env"))
    api.patch_namespaced_custom_object(
        *ARGS, "housing", old_canary_patch(before), _content_type="application/merge-patch+json"
    )
    assert objects.canary_entries(api_server.get_object("ml", "housing"))


def test_a_refusal_reaches_the_user_as_kserves_not_as_missing_rbac(api_server, kubeconfig):
    before = api_server.put_object(chart_like("Standard"))
    wanted = copy.deepcopy(before)
    wanted["spec"]["canary"] = old_canary_patch(before)["spec"]["canary"]
    with pytest.raises(objects.RolloutError) as refused:
        Cluster(str(kubeconfig)).change("housing", lambda isvc: wanted | {"metadata": isvc["metadata"]})
    assert str(refused.value).startswith("KServe refused inferenceservice ml/housing: " + DENIED)


def test_create_is_admitted_too(api_server, api):
    bad = chart_like("Standard", name="Housing")  # KServe's name rule: lower case, starting with a letter
    with pytest.raises(ApiException) as refused:
        api.create_namespaced_custom_object(*ARGS, bad)
    assert refused.value.status == 403
    assert message(refused.value).startswith(DENIED + "the InferenceService 'Housing' is invalid")
    assert api_server.objects == {}


def test_create_conflict_delete_and_list(api_server, api):
    stable = chart_like("Knative")
    created = api.create_namespaced_custom_object(*ARGS, stable)
    assert created["metadata"]["generation"] == 1 and "status" not in created
    with pytest.raises(ApiException) as exists:
        api.create_namespaced_custom_object(*ARGS, stable)
    assert exists.value.status == 409 and json.loads(str(exists.value.body))["reason"] == "AlreadyExists"

    api.create_namespaced_custom_object(*ARGS, objects.canary_isvc(stable, "v2", CANARY))
    selector = f"{objects.CANARY_OF_LABEL}=housing"
    listed = api.list_namespaced_custom_object(*ARGS, label_selector=selector)
    assert [item["metadata"]["name"] for item in listed["items"]] == ["housing-v2"]
    assert len(api.list_namespaced_custom_object(*ARGS)["items"]) == 2

    api.delete_namespaced_custom_object(*ARGS, "housing-v2")
    with pytest.raises(ApiException) as gone:
        api.delete_namespaced_custom_object(*ARGS, "housing-v2")
    assert gone.value.status == 404
    assert api.list_namespaced_custom_object(*ARGS, label_selector=selector)["items"] == []


def test_the_old_mode_names_are_rewritten_as_kserves_defaulting_webhook_does(api_server, api):
    created = api.create_namespaced_custom_object(*ARGS, predictor_only("Serverless", "env"))
    assert created["metadata"]["annotations"][objects.MODE_ANNOTATION] == "Knative"
