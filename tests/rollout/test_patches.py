"""``housing rollout status|canary|promote|rollback`` against a stand-in Kubernetes API server.

No cluster runs here: the API server is the mock in ``conftest.py`` (the only mock in these tests); the
kubernetes Python client, the kubeconfig handling, the patches and the CLI are the real ones. Objects
written by the commands are also validated against KServe's InferenceService CRD schema.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from housing.cli import main
from housing.rollout import cluster, objects, plans
from tests.conftest import require_shared

STABLE_URI = "https://acct.blob.core.windows.net/models/housing/1.0.0"
STABLE_SHA = "a" * 64
CANARY_URI = "https://acct.blob.core.windows.net/models/housing/1.1.0"
CANARY_SHA = "b" * 64


def isvc(mode: str | None, *, args_form: str = "equals") -> dict[str, Any]:
    """An InferenceService shaped like the Helm chart's: the project's predictor in a custom container."""
    if args_form == "equals":
        args = [
            "--model_name=housing",
            f"--storage_uri={STABLE_URI}",
            f"--expected_sha256={STABLE_SHA}",
            "--http_port=8080",
            "--grpc_port=8081",
        ]
        env: list[dict[str, Any]] = [{"name": "OMP_NUM_THREADS", "value": "1"}]
    elif args_form == "separate":
        args = ["--model_name", "housing", "--storage_uri", STABLE_URI, "--expected_sha256", STABLE_SHA]
        env = []
    else:  # env vars only
        args = ["--model_name=housing"]
        env = [{"name": "STORAGE_URI", "value": STABLE_URI}, {"name": "EXPECTED_SHA256", "value": STABLE_SHA}]
    annotations = {objects.MODE_ANNOTATION: mode} if mode else {}
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "housing", "namespace": "ml", "annotations": annotations},
        "spec": {
            "predictor": {
                "minReplicas": 1,
                "labels": {objects.ENDPOINT_LABEL: "default"},
                "annotations": {objects.VERSION_ANNOTATION: "1.0.0", objects.SHA256_ANNOTATION: STABLE_SHA},
                "containers": [
                    {
                        "name": "kserve-container",
                        "image": "ghcr.io/example/housing-predictor:1.0.0",
                        "args": args,
                        "env": env,
                        "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
                    }
                ],
            },
        },
        "status": {
            "url": "http://housing.ml.example.com",
            "address": {"url": "http://housing-predictor.ml.svc.cluster.local"},
            "conditions": [
                {"type": "Ready", "status": "True"},
                {
                    "type": "PredictorReady",
                    "status": "False",
                    "reason": "RevisionMissing",
                    "message": "waiting for revision",
                },
            ],
            "components": {
                "predictor": {
                    "url": "http://housing-predictor.ml.example.com",
                    "restUrl": "http://housing-predictor.ml.svc/v2",
                    "traffic": [
                        {"revisionName": "housing-predictor-00001", "percent": 100, "latestRevision": True}
                    ],
                }
            },
        },
    }


def housing(kubeconfig, *args: str) -> int:
    return main(["rollout", *args, "--kubeconfig", str(kubeconfig)])


def canary(kubeconfig, percent: str, *extra: str) -> int:
    """``housing rollout canary housing`` with the test canary model at ``percent``."""
    model = ["--model-uri", CANARY_URI, "--sha256", CANARY_SHA]
    return housing(kubeconfig, "canary", "housing", *model, "--percent", percent, *extra)


@pytest.fixture(scope="module")
def crd_schema():
    """A validator for KServe's InferenceService schema (built once: the schema is 2 MB)."""
    import jsonschema
    import yaml

    path = require_shared("kserve-crds/serving.kserve.io_inferenceservices.yaml")
    crd = yaml.load(path.read_text(), Loader=yaml.CSafeLoader)
    return jsonschema.Draft7Validator(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def assert_valid(obj: dict[str, Any], validator) -> None:
    validator.validate({key: value for key, value in obj.items() if key != "status"})


def stored(api_server) -> dict[str, Any]:
    return api_server.get_object("ml", "housing")


def container(predictor: dict[str, Any]) -> dict[str, Any]:
    return predictor["containers"][0]


# ---- status --------------------------------------------------------------------------------------


def test_status_shows_models_traffic_readiness_and_urls(api_server, kubeconfig, capsys):
    api_server.put_object(isvc("Serverless"))
    assert housing(kubeconfig, "status", "housing") == 0
    out = capsys.readouterr().out
    assert "ml/housing" in out and "Serverless" in out
    assert STABLE_URI in out and STABLE_SHA[:12] in out and "1.0.0" in out and "100%" in out
    assert "PredictorReady" in out and "RevisionMissing" in out
    assert "http://housing.ml.example.com" in out and "http://housing-predictor.ml.svc/v2" in out
    assert "housing-predictor-00001 100%" in out


def test_status_json_of_a_raw_canary(api_server, kubeconfig, capsys):
    api_server.put_object(isvc("RawDeployment"))
    assert (
        housing(
            kubeconfig,
            "canary",
            "housing",
            "--model-uri",
            CANARY_URI,
            "--sha256",
            CANARY_SHA,
            "--model-version",
            "1.1.0",
            "--percent",
            "20",
        )
        == 0
    )
    capsys.readouterr()
    assert housing(kubeconfig, "status", "housing", "-o", "json") == 0
    info = json.loads(capsys.readouterr().out)
    assert info["mode"] == "RawDeployment"
    assert info["endpoints"] == [
        {
            "endpoint": "default",
            "percent": 80,
            "storage_uri": STABLE_URI,
            "sha256": STABLE_SHA,
            "version": "1.0.0",
        },
        {
            "endpoint": "canary/canary",
            "percent": 20,
            "ready": None,
            "storage_uri": CANARY_URI,
            "sha256": CANARY_SHA,
            "version": "1.1.0",
        },
    ]


# ---- Serverless ----------------------------------------------------------------------------------


def test_serverless_canary_sets_new_model_and_split(api_server, kubeconfig, crd_schema):
    before = api_server.put_object(isvc("Serverless"))
    assert (
        housing(
            kubeconfig,
            "canary",
            "housing",
            "--model-uri",
            CANARY_URI,
            "--sha256",
            CANARY_SHA,
            "--model-version",
            "1.1.0",
            "--percent",
            "10",
        )
        == 0
    )
    (write,) = api_server.writes()
    assert write["method"] == "PATCH" and write["content_type"] == "application/merge-patch+json"
    assert write["body"]["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    after = stored(api_server)
    predictor = after["spec"]["predictor"]
    assert predictor["canaryTrafficPercent"] == 10
    assert f"--storage_uri={CANARY_URI}" in container(predictor)["args"]
    assert f"--expected_sha256={CANARY_SHA}" in container(predictor)["args"]
    assert predictor["annotations"][objects.VERSION_ANNOTATION] == "1.1.0"
    assert predictor["annotations"][objects.SHA256_ANNOTATION] == CANARY_SHA
    assert predictor["labels"][objects.ENDPOINT_LABEL] == "canary"
    assert container(predictor)["resources"] == container(before["spec"]["predictor"])["resources"]
    memory = json.loads(after["metadata"]["annotations"][objects.STABLE_MODEL_ANNOTATION])
    assert memory == {"storage_uri": STABLE_URI, "sha256": STABLE_SHA, "version": "1.0.0"}
    assert_valid(after, crd_schema)


def test_serverless_promote_keeps_new_model_and_drops_split(api_server, kubeconfig):
    api_server.put_object(isvc("Serverless"))
    canary(kubeconfig, "10")
    assert housing(kubeconfig, "promote", "housing") == 0
    after = stored(api_server)
    assert "canaryTrafficPercent" not in after["spec"]["predictor"]
    assert objects.read_model(after["spec"]["predictor"]).storage_uri == CANARY_URI
    assert objects.STABLE_MODEL_ANNOTATION not in after["metadata"]["annotations"]


def test_serverless_rollback_restores_stable_model(api_server, kubeconfig):
    original = api_server.put_object(isvc("Serverless"))
    canary(kubeconfig, "10")
    assert housing(kubeconfig, "rollback", "housing") == 0
    after = stored(api_server)
    assert after["spec"] == original["spec"]
    assert after["metadata"]["annotations"] == original["metadata"]["annotations"]


def test_serverless_rollback_of_a_hand_made_canary_pins_zero_percent(api_server, kubeconfig):
    obj = isvc("Serverless")
    obj["spec"]["predictor"]["canaryTrafficPercent"] = 30
    api_server.put_object(obj)
    assert housing(kubeconfig, "rollback", "housing") == 0
    assert stored(api_server)["spec"]["predictor"]["canaryTrafficPercent"] == 0


def test_canary_replace_keeps_the_remembered_stable_model(api_server, kubeconfig):
    api_server.put_object(isvc("Serverless"))
    canary(kubeconfig, "10")
    third = CANARY_URI.replace("1.1.0", "1.2.0")
    assert (
        housing(
            kubeconfig,
            "canary",
            "housing",
            "--model-uri",
            third,
            "--sha256",
            "c" * 64,
            "--percent",
            "5",
            "--replace",
        )
        == 0
    )
    after = stored(api_server)
    assert (
        json.loads(after["metadata"]["annotations"][objects.STABLE_MODEL_ANNOTATION])["storage_uri"]
        == STABLE_URI
    )
    assert after["spec"]["predictor"]["canaryTrafficPercent"] == 5


# ---- RawDeployment / Standard --------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["RawDeployment", "Standard"])
def test_raw_canary_adds_a_named_spec_canary_entry(api_server, kubeconfig, crd_schema, mode):
    before = api_server.put_object(isvc(mode))
    assert canary(kubeconfig, "25", "--canary-name", "v110") == 0
    after = stored(api_server)
    assert after["spec"]["predictor"] == before["spec"]["predictor"]
    (entry,) = after["spec"]["canary"]
    assert entry["trafficPercent"] == 25 and entry["predictor"]["name"] == "v110"
    assert "canaryTrafficPercent" not in entry["predictor"]
    assert entry["predictor"]["labels"][objects.ENDPOINT_LABEL] == "canary"
    assert objects.read_model(entry["predictor"]) == objects.ModelRef(CANARY_URI, CANARY_SHA, None)
    assert container(entry["predictor"])["image"] == container(before["spec"]["predictor"])["image"]
    assert_valid(after, crd_schema)


def test_raw_promote_moves_canary_model_into_predictor(api_server, kubeconfig, crd_schema):
    api_server.put_object(isvc("RawDeployment", args_form="separate"))
    housing(
        kubeconfig,
        "canary",
        "housing",
        "--model-uri",
        CANARY_URI,
        "--sha256",
        CANARY_SHA,
        "--model-version",
        "1.1.0",
        "--percent",
        "25",
    )
    assert housing(kubeconfig, "promote", "housing") == 0
    after = stored(api_server)
    assert "canary" not in after["spec"]
    assert objects.read_model(after["spec"]["predictor"]) == objects.ModelRef(CANARY_URI, CANARY_SHA, "1.1.0")
    assert container(after["spec"]["predictor"])["args"][2:4] == ["--storage_uri", CANARY_URI]
    assert_valid(after, crd_schema)


def test_raw_rollback_removes_canary_only(api_server, kubeconfig):
    original = api_server.put_object(isvc("RawDeployment", args_form="env"))
    canary(kubeconfig, "25")
    canary_env = container(stored(api_server)["spec"]["canary"][0]["predictor"])["env"]
    assert {"name": "STORAGE_URI", "value": CANARY_URI} in canary_env
    assert housing(kubeconfig, "rollback", "housing") == 0
    assert stored(api_server)["spec"] == original["spec"]


def test_standard_model_storage_uri_form(api_server, kubeconfig, crd_schema):
    obj = isvc("RawDeployment")
    obj["spec"]["predictor"] = {
        "model": {"name": "kserve-container", "modelFormat": {"name": "sklearn"}, "storageUri": STABLE_URI}
    }
    api_server.put_object(obj)
    assert canary(kubeconfig, "50") == 0
    entry = stored(api_server)["spec"]["canary"][0]
    assert entry["predictor"]["model"]["storageUri"] == CANARY_URI
    assert entry["predictor"]["annotations"][objects.SHA256_ANNOTATION] == CANARY_SHA
    assert_valid(stored(api_server), crd_schema)
    housing(kubeconfig, "promote", "housing")
    assert stored(api_server)["spec"]["predictor"]["model"]["storageUri"] == CANARY_URI


# ---- dry run, refusals, API errors ---------------------------------------------------------------


def test_dry_run_prints_the_patch_and_changes_nothing(api_server, kubeconfig, capsys):
    before = api_server.put_object(isvc("Serverless"))
    assert canary(kubeconfig, "10", "--dry-run") == 0
    patch = json.loads(capsys.readouterr().out)
    assert patch["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert patch["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert set(patch["spec"]["predictor"]) == {"canaryTrafficPercent", "containers", "annotations", "labels"}
    assert api_server.writes() == []
    assert stored(api_server) == before


@pytest.mark.parametrize(
    ("mode", "change", "args", "message"),
    [
        ("Serverless", None, ["--percent", "101"], "--percent must be in [0, 100]"),
        ("Serverless", None, ["--percent", "-1"], "--percent must be in [0, 100]"),
        ("Serverless", None, ["--percent", "10", "--sha256", "xyz"], "64 lower-case hex"),
        (None, None, ["--percent", "10"], "cannot tell the deployment mode"),
        ("RawDeployment", {"canaryTrafficPercent": 10}, ["--percent", "10"], "ignores it in RawDeployment"),
        ("Serverless", {"canaryTrafficPercent": 10}, ["--percent", "10"], "already gets 10% of traffic"),
        (
            "Serverless",
            None,
            ["--percent", "10", "--model-uri", STABLE_URI, "--sha256", STABLE_SHA],
            "is the stable model",
        ),
        ("Fancy", None, ["--percent", "10"], "unknown deployment mode"),
    ],
)
def test_canary_refusals_send_nothing(api_server, kubeconfig, capsys, mode, change, args, message):
    obj = isvc(mode)
    obj["spec"]["predictor"].update(change or {})
    api_server.put_object(obj)
    base = ["--model-uri", CANARY_URI, "--sha256", CANARY_SHA]
    assert housing(kubeconfig, "canary", "housing", *base, *args) == 1
    assert message in capsys.readouterr().err
    assert api_server.writes() == []


def test_raw_second_canary_refused_unless_replace(api_server, kubeconfig, capsys):
    api_server.put_object(isvc("RawDeployment"))
    base = ["canary", "housing", "--model-uri", CANARY_URI, "--sha256", CANARY_SHA, "--percent", "10"]
    assert housing(kubeconfig, *base) == 0
    assert housing(kubeconfig, *base[:3], CANARY_URI + "x", *base[4:]) == 1
    assert "canary canary already runs" in capsys.readouterr().err
    assert (
        housing(kubeconfig, *base[:3], CANARY_URI + "x", *base[4:], "--replace", "--canary-name", "next") == 0
    )
    (entry,) = stored(api_server)["spec"]["canary"]
    assert entry["predictor"]["name"] == "next"


def test_serverless_object_with_spec_canary_refused(api_server, kubeconfig, capsys):
    obj = isvc("Serverless")
    obj["spec"]["canary"] = [{"trafficPercent": 5, "predictor": copy.deepcopy(obj["spec"]["predictor"])}]
    api_server.put_object(obj)
    assert housing(kubeconfig, "promote", "housing") == 1
    assert "ignores it in Serverless mode" in capsys.readouterr().err


@pytest.mark.parametrize("action", ["promote", "rollback"])
@pytest.mark.parametrize("mode", ["Serverless", "RawDeployment"])
def test_promote_or_rollback_without_canary_refused(api_server, kubeconfig, capsys, action, mode):
    api_server.put_object(isvc(mode))
    assert housing(kubeconfig, action, "housing") == 1
    assert "no canary runs" in capsys.readouterr().err
    assert api_server.writes() == []


def test_missing_object_is_a_clear_error(api_server, kubeconfig, capsys):
    assert housing(kubeconfig, "status", "nosuch", "-n", "elsewhere") == 1
    assert "inferenceservice elsewhere/nosuch not found" in capsys.readouterr().err


def test_conflict_is_retried_on_a_fresh_read(api_server, kubeconfig):
    api_server.put_object(isvc("Serverless"))
    conflicts = []

    def another_writer_once(server, namespace, name):
        if not conflicts:
            conflicts.append(name)
            server.touch(namespace, name)

    api_server.before_write = another_writer_once
    assert canary(kubeconfig, "10") == 0
    first, second = api_server.writes()
    assert first["body"]["metadata"]["resourceVersion"] != second["body"]["metadata"]["resourceVersion"]
    after = stored(api_server)
    assert after["metadata"]["labels"]["touched-by"] == "someone-else"  # the other writer's change survives
    assert after["spec"]["predictor"]["canaryTrafficPercent"] == 10


def test_endless_conflicts_give_up_with_a_clear_error(api_server, kubeconfig, capsys):
    api_server.put_object(isvc("RawDeployment"))
    api_server.before_write = lambda server, namespace, name: server.touch(namespace, name)
    assert canary(kubeconfig, "10") == 1
    assert "kept changing" in capsys.readouterr().err
    assert len(api_server.writes()) == cluster.CONFLICT_ATTEMPTS
    assert "canary" not in stored(api_server)["spec"]


def test_no_kubeconfig_is_a_clear_error(tmp_path, capsys):
    assert main(["rollout", "status", "housing", "--kubeconfig", str(tmp_path / "absent")]) == 1
    assert "no usable kubeconfig" in capsys.readouterr().err


# ---- the pure pieces -----------------------------------------------------------------------------


def test_merge_patch_round_trips_through_the_server_semantics():
    from tests.rollout.conftest import apply_merge_patch

    current = {"a": 1, "b": {"c": [1, 2], "d": "x"}, "e": None}
    wanted = {"a": 1, "b": {"c": [1, 3]}, "f": {"g": 1}, "e": None}
    patch = plans.merge_patch(current, wanted)
    assert patch == {"b": {"c": [1, 3], "d": None}, "f": {"g": 1}}
    assert apply_merge_patch(current, patch) == {"a": 1, "b": {"c": [1, 3]}, "f": {"g": 1}, "e": None}


@pytest.mark.parametrize("form", ["equals", "separate", "env"])
def test_read_and_write_model_in_each_form(form):
    predictor = isvc("Serverless", args_form=form)["spec"]["predictor"]
    assert objects.read_model(predictor) == objects.ModelRef(STABLE_URI, STABLE_SHA, "1.0.0")
    changed = objects.with_model(predictor, objects.ModelRef(CANARY_URI, CANARY_SHA, None))
    assert objects.read_model(changed) == objects.ModelRef(CANARY_URI, CANARY_SHA, None)
    assert objects.read_model(predictor).storage_uri == STABLE_URI  # the input is not modified


def test_context_and_namespace_flags(api_server, kubeconfig, capsys):
    obj = isvc("Serverless")
    obj["metadata"]["namespace"] = "other"
    api_server.put_object(obj)
    assert housing(kubeconfig, "status", "housing", "--context", "fake", "-n", "other") == 0
    assert "other/housing" in capsys.readouterr().out
    assert housing(kubeconfig, "status", "housing", "--context", "nosuch") == 1
    assert "no usable kubeconfig" in capsys.readouterr().err
