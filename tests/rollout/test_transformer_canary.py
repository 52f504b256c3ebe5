"""``housing rollout`` on the chart's shape: each canary is its own InferenceService, the transformer splits.

Everything runs end to end through the CLI and the real kubernetes client against the mock API server of
``conftest.py`` (no cluster runs here), which applies KServe's admission rules to every write. Written objects
are also validated against KServe's InferenceService CRD schema.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from housing.rollout import cluster, objects
from tests.conftest import require_shared
from tests.rollout.shapes import (
    CANARY,
    CANARY_SHA,
    CANARY_URI,
    STABLE,
    STABLE_SHA,
    STABLE_URI,
    canary,
    chart_like,
    housing,
    mark_ready,
    methods,
)

MODES = ["Standard", "Knative"]
OTHER = objects.ModelRef(CANARY_URI.replace("1.1.0", "1.2.0"), "c" * 64, "1.2.0")


@pytest.fixture(scope="module")
def crd_schema():
    """A validator for KServe's InferenceService schema (built once: the schema is 2 MB)."""
    import jsonschema
    import yaml

    path = require_shared("kserve-crds/serving.kserve.io_inferenceservices.yaml")
    crd = yaml.load(path.read_text(), Loader=yaml.CSafeLoader)
    return jsonschema.Draft7Validator(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


@pytest.fixture
def ready_at_once(api_server):
    """KServe's controller, as far as these tests need it: a created InferenceService reports Ready."""
    api_server.after_create = mark_ready
    return api_server


def assert_valid(obj: dict[str, Any], validator) -> None:
    validator.validate({key: value for key, value in obj.items() if key != "status"})


def stored(api_server, name: str = "housing") -> dict[str, Any]:
    return api_server.get_object("ml", name)


def transformer_args(isvc: dict[str, Any]) -> list[str]:
    return isvc["spec"]["transformer"]["containers"][0]["args"]


def predictor_args(isvc: dict[str, Any]) -> list[str]:
    return isvc["spec"]["predictor"]["containers"][0]["args"]


# ---- canary --------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_canary_is_its_own_inference_service_and_the_transformer_routes_to_it(
    ready_at_once, kubeconfig, crd_schema, mode
):
    api_server = ready_at_once
    before = api_server.put_object(chart_like(mode))
    assert canary(kubeconfig) == 0

    # Created first, patched once it is Ready: no request goes to a predictor that is still loading.
    assert methods(api_server) == [("POST", "inferenceservices"), ("PATCH", "housing")]
    created = stored(api_server, "housing-canary")
    # Cluster-local (only the transformer calls it): KServe's ingress reconcilers give it no public route.
    assert created["metadata"]["labels"] == before["metadata"]["labels"] | {
        objects.CANARY_OF_LABEL: "housing",
        objects.VISIBILITY_LABELS[str(objects.deployment_mode(before))]: "cluster-local",
    }
    assert created["metadata"]["annotations"] == {
        key: value
        for key, value in before["metadata"]["annotations"].items()
        if key in (objects.MODE_ANNOTATION, objects.AUTOSCALER_CLASS_ANNOTATION)
    } | {objects.STARTED_BY_ANNOTATION: objects.STARTED_BY}
    assert set(created["spec"]) == {"predictor"}  # no transformer, no spec.canary
    predictor = created["spec"]["predictor"]
    assert predictor_args(created) == [
        "--model_name",
        "housing",
        "--storage_uri",
        CANARY_URI,
        "--expected_sha256",
        CANARY_SHA,
        "--http_port",
        "8080",
        "--grpc_port",
        "8081",
    ]
    assert predictor["annotations"] == {
        objects.SHA256_ANNOTATION: CANARY_SHA,
        objects.VERSION_ANNOTATION: "1.1.0",
    }
    assert predictor["labels"][objects.ENDPOINT_LABEL] == "canary"
    stable_predictor = before["spec"]["predictor"]
    unchanged = {
        key: value for key, value in predictor.items() if key not in ("containers", "annotations", "labels")
    }
    assert unchanged == {key: value for key, value in stable_predictor.items() if key in unchanged}
    assert set(unchanged) == set(stable_predictor) - {"containers", "annotations", "labels"}

    patch = api_server.writes()[1]
    assert patch["content_type"] == "application/merge-patch+json"
    assert patch["body"]["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    after = stored(api_server)
    assert transformer_args(after) == [
        *transformer_args(before),
        "--canary",
        "canary=10,housing-canary-predictor.ml",
    ]
    assert after["spec"]["predictor"] == stable_predictor
    assert_valid(created, crd_schema)
    assert_valid(after, crd_schema)


def test_canary_waits_until_its_inference_service_is_ready(api_server, kubeconfig, monkeypatch):
    monkeypatch.setattr(cluster, "READY_POLL_SECONDS", 0.05)
    api_server.put_object(chart_like("Standard"))
    became_ready: list[float] = []

    def ready_later(server, namespace, name):
        server.set_ready(namespace, name, ready=False, message="downloading the model")

        def ready() -> None:
            became_ready.append(time.monotonic())
            server.set_ready(namespace, name)

        threading.Timer(0.4, ready).start()

    api_server.after_create = ready_later
    assert canary(kubeconfig) == 0
    patch = next(request for request in api_server.requests if request["method"] == "PATCH")
    assert became_ready and patch["body"]["spec"]["transformer"]  # the route came after the Ready condition
    gets = [request for request in api_server.requests if request["path"].endswith("/housing-canary")]
    assert len(gets) > 2  # it polled while the canary was loading


def test_a_canary_that_never_gets_ready_gets_no_traffic_and_can_be_resumed(api_server, kubeconfig, capsys):
    before = api_server.put_object(chart_like("Standard"))
    api_server.after_create = lambda server, ns, name: server.set_ready(
        ns, name, False, "image pull back-off"
    )
    assert canary(kubeconfig, "--wait-timeout", "0.2") == 1
    err = capsys.readouterr().err
    assert "inferenceservice ml/housing-canary is not Ready after 0.2 s" in err
    assert "Ready=False PredictorNotReady image pull back-off" in err
    assert "Done before that: created inferenceservice ml/housing-canary" in err
    assert stored(api_server)["spec"] == before["spec"]  # the transformer was never pointed at it

    # Without --replace the half-started canary counts as running; with it the same command resumes.
    assert canary(kubeconfig) == 1
    assert "canary housing-canary (no traffic) already runs" in capsys.readouterr().err
    api_server.set_ready("ml", "housing-canary")
    api_server.requests.clear()
    assert canary(kubeconfig, "--replace") == 0
    assert methods(api_server) == [("PATCH", "housing")]  # no second InferenceService
    assert "--canary" in transformer_args(stored(api_server))


def test_wait_timeout_zero_routes_at_once(api_server, kubeconfig):
    api_server.put_object(chart_like("Knative"))
    assert canary(kubeconfig, "--wait-timeout", "0", percent=30) == 0
    assert objects.is_ready(stored(api_server, "housing-canary")) is None  # nothing reported yet
    assert transformer_args(stored(api_server))[-1] == "canary=30,housing-canary-predictor.ml"


# ---- promote, rollback ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_promote_moves_the_canary_model_to_the_stable_predictor_in_one_patch(ready_at_once, kubeconfig, mode):
    api_server = ready_at_once
    before = api_server.put_object(chart_like(mode))
    canary(kubeconfig)
    api_server.requests.clear()
    assert housing(kubeconfig, "promote", "housing") == 0
    assert methods(api_server) == [("PATCH", "housing"), ("DELETE", "housing-canary")]
    after = stored(api_server)
    assert after["spec"]["transformer"] == before["spec"]["transformer"]  # the --canary args are gone
    assert after["spec"]["predictor"] == objects.with_model(before["spec"]["predictor"], CANARY, "default")
    assert predictor_args(after)[2:6] == ["--storage_uri", CANARY_URI, "--expected_sha256", CANARY_SHA]
    assert ("ml", "housing-canary") not in api_server.objects


@pytest.mark.parametrize("mode", MODES)
def test_rollback_unroutes_then_deletes_the_canary(ready_at_once, kubeconfig, mode):
    api_server = ready_at_once
    before = api_server.put_object(chart_like(mode))
    canary(kubeconfig)
    api_server.requests.clear()
    assert housing(kubeconfig, "rollback", "housing") == 0
    assert methods(api_server) == [("PATCH", "housing"), ("DELETE", "housing-canary")]
    assert stored(api_server)["spec"] == before["spec"]
    assert ("ml", "housing-canary") not in api_server.objects


def test_rollback_deletes_a_canary_that_never_got_traffic(api_server, kubeconfig):
    before = api_server.put_object(chart_like("Standard"))
    assert canary(kubeconfig, "--wait-timeout", "0.01") == 1
    api_server.requests.clear()
    assert housing(kubeconfig, "rollback", "housing") == 0
    assert methods(api_server) == [("DELETE", "housing-canary")]  # nothing to unroute
    assert stored(api_server)["spec"] == before["spec"]


def two_canaries(api_server) -> dict[str, Any]:
    """A stable InferenceService whose transformer splits to two canaries (as the chart can render)."""
    stable = chart_like("Standard")
    transformer_args(stable).extend(
        ["--canary", "v2=10,housing-v2-predictor.ml", "--canary", "v3=5,housing-v3-predictor.ml"]
    )
    for name, model in (("v2", CANARY), ("v3", OTHER)):
        api_server.put_object(objects.canary_isvc(stable, name, model))
    return api_server.put_object(stable)


def test_promote_of_one_of_several_canaries_needs_its_name(api_server, kubeconfig, capsys):
    two_canaries(api_server)
    assert housing(kubeconfig, "promote", "housing") == 1
    assert "several canaries run (v2, v3); say which with --canary-name" in capsys.readouterr().err
    assert api_server.writes() == []
    assert housing(kubeconfig, "promote", "housing", "--canary-name", "v3") == 0
    after = stored(api_server)
    assert objects.read_model(after["spec"]["predictor"]) == OTHER
    assert objects.routes(after) == [objects.Route("v2", 10, "housing-v2-predictor.ml")]
    assert ("ml", "housing-v3") not in api_server.objects and ("ml", "housing-v2") in api_server.objects


def test_rollback_without_a_name_removes_every_canary(api_server, kubeconfig):
    two_canaries(api_server)
    assert housing(kubeconfig, "rollback", "housing") == 0
    assert objects.routes(stored(api_server)) == []
    assert sorted(api_server.objects) == [("ml", "housing")]


def test_promote_refuses_when_the_routed_canary_is_missing(api_server, kubeconfig, capsys):
    stable = chart_like("Standard")
    transformer_args(stable).extend(["--canary", "v2=10,housing-v2-predictor.ml"])
    api_server.put_object(stable)
    assert housing(kubeconfig, "promote", "housing") == 1
    assert "its InferenceService housing-v2 does not exist: roll back" in capsys.readouterr().err
    assert housing(kubeconfig, "rollback", "housing") == 0
    assert objects.routes(stored(api_server)) == []


@pytest.mark.parametrize("action", ["promote", "rollback"])
def test_promote_or_rollback_without_a_canary_is_refused(api_server, kubeconfig, capsys, action):
    api_server.put_object(chart_like("Knative"))
    assert housing(kubeconfig, action, "housing") == 1
    assert "no canary" in capsys.readouterr().err
    assert api_server.writes() == []


@pytest.mark.parametrize(
    "args",
    [("promote", "housing"), ("rollback", "housing"), ("rollback", "housing", "--canary-name", "v2")],
    ids=["promote", "rollback", "rollback by name"],
)
def test_a_canary_the_helm_values_declare_is_left_to_helm(api_server, kubeconfig, capsys, args):
    """One owner per canary: the chart lists the canaries its values declare on the transformer; removing one
    here would only last until the next `helm upgrade`, so the command refuses and says where to do it."""
    stable = chart_like("Standard")
    transformer_args(stable).extend(["--canary", "v2=10,housing-v2-predictor.ml"])
    stable["spec"]["transformer"]["annotations"] = {objects.HELM_CANARIES_ANNOTATION: "v2"}
    api_server.put_object(stable)
    declared = objects.canary_isvc(stored(api_server), "v2", CANARY)
    api_server.put_object(declared)
    assert housing(kubeconfig, *args) == 1
    assert "declared in the Helm release's values (rollout.canaries)" in capsys.readouterr().err
    assert canary(kubeconfig, "--replace") == 1  # --replace would end it too
    assert api_server.writes() == []


# ---- replace -------------------------------------------------------------------------------------


def test_replace_with_a_new_name_moves_traffic_then_deletes_the_old_canary(ready_at_once, kubeconfig):
    api_server = ready_at_once
    api_server.put_object(chart_like("Standard"))
    canary(kubeconfig)
    api_server.requests.clear()
    assert canary(kubeconfig, "--replace", "--canary-name", "v3", model=OTHER, percent=20) == 0
    assert methods(api_server) == [
        ("POST", "inferenceservices"),
        ("PATCH", "housing"),
        ("DELETE", "housing-canary"),
    ]
    assert objects.routes(stored(api_server)) == [objects.Route("v3", 20, "housing-v3-predictor.ml")]
    assert objects.read_model(stored(api_server, "housing-v3")["spec"]["predictor"]) == OTHER


def test_replace_with_the_same_name_and_model_changes_the_share(ready_at_once, kubeconfig):
    api_server = ready_at_once
    api_server.put_object(chart_like("Knative"))
    canary(kubeconfig)
    api_server.requests.clear()
    assert canary(kubeconfig, "--replace", percent=50) == 0
    assert methods(api_server) == [("PATCH", "housing")]
    assert objects.routes(stored(api_server))[0].percent == 50


def test_replace_with_the_same_name_and_another_model_is_refused(ready_at_once, kubeconfig, capsys):
    api_server = ready_at_once
    api_server.put_object(chart_like("Standard"))
    canary(kubeconfig)
    api_server.requests.clear()
    assert canary(kubeconfig, "--replace", model=OTHER) == 1
    assert "canary housing-canary runs another model; give the replacement another --canary-name" in (
        capsys.readouterr().err
    )
    assert api_server.writes() == []


# ---- refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "args", "message"),
    [
        ("Standard", ["--percent", "101"], "--percent must be in [0, 100], got 101"),
        ("Knative", ["--percent", "-1"], "--percent must be in [0, 100], got -1"),
        ("Standard", ["--percent", "10", "--sha256", "xyz"], "64 lower-case hex"),
        ("Standard", ["--percent", "10", "--canary-name", "Canary"], "--canary-name must be a DNS label"),
        ("Knative", ["--percent", "10", "--canary-name", "stable"], "the transformer's name for the stable"),
        (
            "Standard",
            ["--percent", "10", "--model-uri", STABLE_URI, "--sha256", STABLE_SHA],
            "the canary's model is the stable model",
        ),
        (None, ["--percent", "10"], "cannot tell the deployment mode"),
        ("Fancy", ["--percent", "10"], "unknown deployment mode 'Fancy'"),
    ],
)
def test_canary_refusals_write_nothing(api_server, kubeconfig, capsys, mode, args, message):
    obj = chart_like(mode or "Standard")
    if mode is None:
        del obj["metadata"]["annotations"][objects.MODE_ANNOTATION]
    elif mode == "Fancy":
        obj["metadata"]["annotations"][objects.MODE_ANNOTATION] = mode
    # Stored as is, past the mock's admission: the refusals are the command's own.
    api_server.objects[("ml", "housing")] = obj | {"metadata": obj["metadata"] | {"resourceVersion": "1"}}
    base = ["--model-uri", CANARY_URI, "--sha256", CANARY_SHA]
    assert housing(kubeconfig, "canary", "housing", *base, *args) == 1
    assert message in capsys.readouterr().err
    assert api_server.writes() == []


def test_a_canary_name_too_long_for_knative_is_refused_with_the_derived_name(api_server, kubeconfig, capsys):
    stable = "housing-price-prediction-production-ab"
    api_server.put_object(chart_like("Knative", name=stable))
    flags = [
        "--model-uri",
        CANARY_URI,
        "--sha256",
        CANARY_SHA,
        "--percent",
        "10",
        "--canary-name",
        "candidate-long",
    ]
    assert housing(kubeconfig, "canary", stable, *flags) == 1
    derived = f"{stable}-candidate-long-predictor-00001"
    assert (
        f"would name the canary's revision {derived} ({len(derived)} characters)" in capsys.readouterr().err
    )
    assert len(derived) > 63 and api_server.writes() == []
    # One character shorter than the limit allows is admitted.
    fits = "c" * (63 - len(f"{stable}--predictor-00001"))
    assert housing(kubeconfig, "canary", stable, *flags[:-1], fits, "--wait-timeout", "0") == 0


def test_a_second_canary_is_refused_without_replace(ready_at_once, kubeconfig, capsys):
    api_server = ready_at_once
    api_server.put_object(chart_like("Standard"))
    assert canary(kubeconfig) == 0
    api_server.requests.clear()
    assert canary(kubeconfig, "--canary-name", "v3", model=OTHER) == 1
    assert "canary housing-canary (10% of requests) already runs; promote or roll back, or --replace" in (
        capsys.readouterr().err
    )
    assert api_server.writes() == []


def test_kserve_canary_fields_on_a_transformer_object_are_refused(api_server, kubeconfig, capsys):
    obj = chart_like("Knative")
    obj["spec"]["predictor"]["canaryTrafficPercent"] = 20
    api_server.put_object(obj)
    assert canary(kubeconfig) == 1
    assert "behind a transformer they bypass it" in capsys.readouterr().err


def test_an_existing_inference_service_of_the_canary_name_is_not_taken_over(
    ready_at_once, kubeconfig, capsys
):
    api_server = ready_at_once
    api_server.put_object(chart_like("Standard"))
    someone_elses = chart_like("Standard", name="housing-canary")
    del someone_elses["spec"]["transformer"]
    api_server.put_object(someone_elses)
    assert canary(kubeconfig) == 1
    assert "ml/housing-canary already exists and is not labelled housing.kserve.dev/canary-of" in (
        capsys.readouterr().err
    )
    assert objects.routes(stored(api_server)) == []


# ---- status --------------------------------------------------------------------------------------


def test_status_shows_both_inference_services_with_share_and_readiness(ready_at_once, kubeconfig, capsys):
    api_server = ready_at_once
    api_server.put_object(chart_like("Knative"))
    canary(kubeconfig, percent=25)
    api_server.set_ready("ml", "housing-canary", ready=False, message="loading")
    capsys.readouterr()
    assert housing(kubeconfig, "status", "housing", "-o", "json") == 0
    info = json.loads(capsys.readouterr().out)
    assert info["mode"] == "Knative" and info["split_by"] == "transformer"
    assert info["endpoints"] == [
        {"endpoint": "default", "inferenceservice": "housing", "percent": 75, "ready": True}
        | {"storage_uri": STABLE_URI, "sha256": STABLE_SHA, "version": "1.0.0"},
        {"endpoint": "canary/canary", "inferenceservice": "housing-canary", "percent": 25, "ready": False}
        | {"storage_uri": CANARY_URI, "sha256": CANARY_SHA, "version": "1.1.0"},
    ]
    assert housing(kubeconfig, "status", "housing") == 0
    out = capsys.readouterr().out
    assert "mode: Knative  canaries split by: transformer" in out
    rows = {
        line.split()[0]: line.split() for line in out.splitlines() if line.startswith(("default", "canary/"))
    }
    assert rows["default"][1:5] == ["housing", "75%", "True", "1.0.0"]
    assert rows["canary/canary"][1:5] == ["housing-canary", "25%", "False", "1.1.0"]
    assert "http://housing.ml.example.com" in out and "housing-predictor-00001 100%" in out


def test_status_shows_a_canary_without_traffic(api_server, kubeconfig, capsys):
    api_server.put_object(chart_like("Standard"))
    canary(kubeconfig, "--wait-timeout", "0.01")
    capsys.readouterr()
    assert housing(kubeconfig, "status", "housing", "-o", "json") == 0
    endpoints = json.loads(capsys.readouterr().out)["endpoints"]
    assert [(item["endpoint"], item["percent"], item["ready"]) for item in endpoints] == [
        ("default", 100, True),
        ("canary/canary", 0, None),
    ]


# ---- dry run, conflicts, errors ------------------------------------------------------------------


def test_dry_run_prints_every_step_and_changes_nothing(api_server, kubeconfig, capsys):
    before = api_server.put_object(chart_like("Standard"))
    assert canary(kubeconfig, "--dry-run") == 0
    create, wait, patch = json.loads(capsys.readouterr().out)
    assert create["create"] == "ml/housing-canary"
    assert create["object"] == objects.canary_isvc(before, "canary", CANARY)
    assert wait == {"wait_until_ready": "ml/housing-canary", "timeout_seconds": 300}
    assert patch["patch"] == "ml/housing"
    assert patch["merge_patch"]["metadata"] == {"resourceVersion": before["metadata"]["resourceVersion"]}
    assert patch["merge_patch"]["spec"]["transformer"]["containers"][0]["args"][-2:] == [
        "--canary",
        "canary=10,housing-canary-predictor.ml",
    ]
    assert api_server.writes() == [] and stored(api_server) == before


@pytest.mark.parametrize("action", ["promote", "rollback"])
def test_dry_run_of_promote_and_rollback(ready_at_once, kubeconfig, capsys, action):
    api_server = ready_at_once
    api_server.put_object(chart_like("Knative"))
    canary(kubeconfig)
    before = {key: api_server.get_object(*key) for key in api_server.objects}
    api_server.requests.clear()
    capsys.readouterr()
    assert housing(kubeconfig, action, "housing", "--dry-run") == 0
    patch, delete = json.loads(capsys.readouterr().out)
    assert delete == {"delete": "ml/housing-canary"}
    assert ("predictor" in patch["merge_patch"]["spec"]) == (action == "promote")
    assert api_server.writes() == []
    assert {key: api_server.get_object(*key) for key in api_server.objects} == before


def test_a_conflict_is_retried_on_a_fresh_read(ready_at_once, kubeconfig):
    api_server = ready_at_once
    api_server.put_object(chart_like("Standard"))
    conflicts: list[str] = []

    def another_writer_once(server, namespace, name):
        if not conflicts:
            conflicts.append(name)
            server.touch(namespace, name)

    api_server.before_write = another_writer_once
    assert canary(kubeconfig) == 0
    first, second = [request for request in api_server.writes() if request["method"] == "PATCH"]
    assert first["body"]["metadata"]["resourceVersion"] != second["body"]["metadata"]["resourceVersion"]
    after = stored(api_server)
    assert after["metadata"]["labels"]["touched-by"] == "someone-else"  # the other writer's change survives
    assert objects.routes(after) == [objects.Route("canary", 10, "housing-canary-predictor.ml")]


def test_endless_conflicts_stop_with_what_was_done(ready_at_once, kubeconfig, capsys):
    api_server = ready_at_once
    api_server.put_object(chart_like("Standard"))
    api_server.before_write = lambda server, namespace, name: server.touch(namespace, name)
    assert canary(kubeconfig) == 1
    err = capsys.readouterr().err
    assert "kept changing under us (3 conflicts in a row)" in err
    assert "Done before that: created inferenceservice ml/housing-canary" in err
    assert len([request for request in api_server.writes() if request["method"] == "PATCH"]) == (
        cluster.CONFLICT_ATTEMPTS
    )
    assert objects.routes(stored(api_server)) == []


def test_a_route_changed_by_someone_else_meanwhile_is_not_overwritten(ready_at_once, kubeconfig, capsys):
    api_server = ready_at_once
    api_server.put_object(chart_like("Standard"))

    def another_rollout(server, namespace, name):
        if name == "housing" and not objects.routes(server.objects[(namespace, name)]):
            transformer_args(server.objects[(namespace, name)]).extend(["--canary", "v9=5,elsewhere.ml"])
            server.touch(namespace, name)

    api_server.before_write = another_rollout
    assert canary(kubeconfig) == 1
    assert (
        "the transformer's canaries changed while this ran (now: v9=5,elsewhere.ml)"
        in capsys.readouterr().err
    )
    assert objects.routes(stored(api_server)) == [objects.Route("v9", 5, "elsewhere.ml")]


def test_missing_object_and_missing_kubeconfig_are_clear_errors(api_server, kubeconfig, tmp_path, capsys):
    assert housing(kubeconfig, "status", "nosuch", "-n", "elsewhere") == 1
    assert "inferenceservice elsewhere/nosuch not found" in capsys.readouterr().err
    assert main_without_kubeconfig(tmp_path) == 1
    assert "no usable kubeconfig" in capsys.readouterr().err


def main_without_kubeconfig(tmp_path) -> int:
    from housing.cli import main

    return main(["rollout", "status", "housing", "--kubeconfig", str(tmp_path / "absent")])


def test_context_and_namespace_flags(api_server, kubeconfig, capsys):
    obj = chart_like("Standard")
    obj["metadata"]["namespace"] = "other"
    api_server.put_object(obj)
    assert housing(kubeconfig, "status", "housing", "--context", "fake", "-n", "other") == 0
    assert "other/housing" in capsys.readouterr().out
    assert housing(kubeconfig, "status", "housing", "--context", "nosuch") == 1
    assert "no usable kubeconfig" in capsys.readouterr().err


# ---- the pure pieces -----------------------------------------------------------------------------


def test_routes_round_trip_in_either_arg_form():
    isvc = chart_like("Standard")
    transformer_args(isvc).extend(
        ["--canary=v2=10,h2.ml", "--workers", "1", "--canary", "v3=5,h3.ml,h3-rest.ml"]
    )
    assert objects.routes(isvc) == [
        objects.Route("v2", 10, "h2.ml"),
        objects.Route("v3", 5, "h3.ml,h3-rest.ml"),
    ]
    rewritten = objects.with_routes(isvc, [objects.Route("v4", 1, "h4.ml")])
    # The new args take the first old one's place; the others keep their order.
    assert transformer_args(rewritten)[-4:] == ["--canary", "v4=1,h4.ml", "--workers", "1"]
    assert objects.with_routes(rewritten, []) == objects.with_routes(isvc, [])
    assert "--canary" not in transformer_args(objects.with_routes(isvc, []))
    assert transformer_args(isvc)[-2:] == ["--canary", "v3=5,h3.ml,h3-rest.ml"]  # the input is not modified


def test_a_malformed_canary_arg_is_an_error():
    isvc = chart_like("Standard")
    transformer_args(isvc).extend(["--canary", "v2:10"])
    with pytest.raises(objects.RolloutError, match="not NAME=PERCENT,HOST"):
        objects.routes(isvc)


def test_stable_model_reads_back():
    assert objects.read_model(chart_like("Knative")["spec"]["predictor"]) == STABLE
