"""The Helm chart: lint, schema-valid renders of every scenario, the cross-field rules, and the wiring between
components (logger -> detector, transformer -> predictor, canaries, Workload Identity)."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import require_shared
from tests.k8s.conftest import CHART, CLIENT_ID, NAMESPACE, RELEASE, SHA_A, SHA_B, Render, helm, render

FULLNAME = f"{RELEASE}-housing-kserve"
ISTIO_KINDS = {
    "Gateway",
    "VirtualService",
    "RequestAuthentication",
    "AuthorizationPolicy",
    "PeerAuthentication",
    "EnvoyFilter",
}
BUILT_IN_KINDS = {
    "ServiceAccount",
    "PodDisruptionBudget",
    "Role",
    "RoleBinding",
    "ConfigMap",
    "PersistentVolumeClaim",
    "Service",
    "Deployment",
    "CronJob",
    "NetworkPolicy",
    "Pod",
}
CUSTOM_KINDS = {"InferenceService", "PodMonitor", "PrometheusRule", *ISTIO_KINDS}


def test_helm_lint_strict() -> None:
    result = helm("lint", "--strict", CHART, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_every_scenario_renders_only_known_kinds(renders: dict[str, Render]) -> None:
    for rendered in renders.values():
        kinds = {doc["kind"] for doc in rendered.documents}
        assert kinds <= BUILT_IN_KINDS | CUSTOM_KINDS, (rendered.name, kinds - BUILT_IN_KINDS - CUSTOM_KINDS)
        assert all(doc["metadata"]["namespace"] == NAMESPACE for doc in rendered.documents), rendered.name


def test_built_in_kinds_are_strictly_valid(renders: dict[str, Render]) -> None:
    import kubernetes_validate

    checked = 0
    for rendered in renders.values():
        for doc in rendered.documents:
            if doc["kind"] in BUILT_IN_KINDS:
                kubernetes_validate.validate(doc, "1.30", strict=True)
                checked += 1
    assert checked > 60


def _closed(schema: Any) -> Any:
    """The schema with unknown fields refused, as ``kubectl --validate=strict`` does, except where the CRD
    itself preserves unknown fields."""
    if isinstance(schema, dict):
        schema = {key: _closed(value) for key, value in schema.items()}
        if (
            schema.get("type") == "object"
            and "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    return schema


@pytest.fixture(scope="module")
def isvc_validator() -> Any:
    import jsonschema

    path = require_shared("kserve-crds/serving.kserve.io_inferenceservices.yaml")
    with path.open() as handle:
        crd = yaml.load(handle, Loader=yaml.CSafeLoader)
    schema = _closed(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    schema["properties"]["metadata"] = {"type": "object"}
    return jsonschema.Draft7Validator(schema)


def test_inference_services_match_the_kserve_crd(renders: dict[str, Render], isvc_validator: Any) -> None:
    for rendered in renders.values():
        for isvc in rendered.of_kind("InferenceService"):  # the stable one and each canary's
            errors = sorted(isvc_validator.iter_errors(isvc), key=lambda error: list(error.path))
            assert not errors, f"{rendered.name}: " + "; ".join(
                f"{'/'.join(map(str, error.path))}: {error.message}" for error in errors[:5]
            )


def test_the_strict_crd_check_refuses_an_unknown_field(
    renders: dict[str, Render], isvc_validator: Any
) -> None:
    isvc = copy.deepcopy(renders["defaults"].one("InferenceService", FULLNAME))
    isvc["spec"]["predictor"]["canaryTrafficPercents"] = 10
    assert any("canaryTrafficPercents" in error.message for error in isvc_validator.iter_errors(isvc))


def _predictor_args(predictor: dict[str, Any]) -> dict[str, str | bool]:
    """Each flag with its value (``True`` for a switch such as ``--enable_repository_api``)."""
    args = [str(arg) for arg in predictor["containers"][0]["args"]]
    values = [*args[1:], "--"]
    return {arg: True if value.startswith("--") else value
            for arg, value in zip(args, values, strict=True) if arg.startswith("--")}  # fmt: skip


def test_predictor_runs_the_contract_command_with_a_pinned_model(renders: dict[str, Render]) -> None:
    predictor = renders["aks-workload-identity"].one("InferenceService", FULLNAME)["spec"]["predictor"]
    container = predictor["containers"][0]
    assert container["command"] == ["python", "-m", "predictor"]
    args = _predictor_args(predictor)
    assert args == {
        "--model_name": "housing",
        "--storage_uri": "https://housingmodels.blob.core.windows.net/models/housing/production",
        "--expected_sha256": SHA_A,
        "--http_port": "8080",
        "--grpc_port": "8081",
        # The listener and the input limits: tests/k8s/test_listeners.py and test_limits.py.
        "--bind_address": "$(POD_IP)",
        "--max_header_bytes": "8192",
        "--max_batch_rows": "1000",
    }
    # The predictor downloads and verifies the model itself: no KServe storage initializer is triggered.
    assert "storageUri" not in predictor and "model" not in predictor
    assert "STORAGE_URI" not in {env["name"] for env in container["env"]}
    assert container["image"] == "contosoml.azurecr.io/housing-predictor:3f2c1ab"


def test_unpinned_default_is_said_so(renders: dict[str, Render]) -> None:
    predictor = renders["defaults"].one("InferenceService", FULLNAME)["spec"]["predictor"]
    assert "--expected_sha256" not in predictor["containers"][0]["args"]
    assert predictor["annotations"]["housing.kserve.dev/model-sha256"] == "unpinned"


def test_transformer_reaches_the_predictor_with_its_protocol(renders: dict[str, Render]) -> None:
    for rendered in renders.values():
        spec = rendered.one("InferenceService", FULLNAME)["spec"]
        transformer = spec["transformer"]["containers"][0]
        predictor = spec["predictor"]["containers"][0]
        args = transformer["args"]
        assert transformer["command"] == ["python", "-m", "transformer"]
        # KServe appends these two itself; passing them too would give the process the flag twice.
        assert "--predictor_host" not in args and "--http_port" not in args
        assert args[args.index("--model_name") + 1] == _predictor_args(spec["predictor"])["--model_name"]
        assert args[args.index("--protocol") + 1] == "v2"
        assert {env["name"]: env.get("value") for env in predictor["env"]}["PROTOCOL"] == "v2"
        # KServe's predictor Service targets the container's first port, 8080, where the V2 REST API listens.
        assert predictor["ports"][0] == {"name": "http1", "containerPort": 8080, "protocol": "TCP"}
        assert _predictor_args(spec["predictor"])["--http_port"] == "8080"
        assert predictor["readinessProbe"]["httpGet"] == {"path": "/v2/models/housing/ready", "port": 8080}


def test_logger_url_resolves_to_the_detector_service(renders: dict[str, Render]) -> None:
    rendered = renders["defaults"]
    spec = rendered.one("InferenceService", FULLNAME)["spec"]
    args = spec["transformer"]["containers"][0]["args"]
    url = args[args.index("--logger_url") + 1]
    assert "logger" not in spec["predictor"] and "logger" not in spec["transformer"]  # the transformer logs
    service = rendered.one("Service", f"{FULLNAME}-detector")
    deployment = rendered.one("Deployment", f"{FULLNAME}-detector")
    port = service["spec"]["ports"][0]
    assert url == (
        f"http://{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local:{port['port']}"
    )
    pod = deployment["spec"]["template"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    container = pod["spec"]["containers"][0]
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert named[port["targetPort"]] == 8080
    assert container["args"][container["args"].index("--http_port") + 1] == "8080"


def test_detector_runs_the_contract_command(renders: dict[str, Render]) -> None:
    rendered = renders["defaults"]
    container = rendered.one("Deployment", f"{FULLNAME}-detector")["spec"]["template"]["spec"]["containers"][
        0
    ]
    args = container["args"]
    assert container["command"] == ["python", "-m", "detector"]
    assert dict(zip(args[::2], args[1::2], strict=True)) | {} == {
        "--storage_uri": "https://housingmodels.blob.core.windows.net/models/housing/production",
        "--http_port": "8080",
        "--state_dir": "/var/lib/detector",
        "--window_size": "200",
        "--threshold": "0.3",
        "--stats_backend": "alibi-detect",
        "--retrain_action": "k8s-job",
        "--retrain_min_labels": "0",
        "--job_template": "/etc/detector/job-template.yaml",
        "--max_rows": "1000",
        "--bind_address": "$(POD_IP)",
        "--max_header_bytes": "8192",
    }
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    assert mounts["/var/lib/detector"] == "state" and mounts["/etc/detector"] == "job-template"
    pvc = rendered.one("PersistentVolumeClaim", f"{FULLNAME}-detector-state")
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]


def test_kserve_leaves_the_detector_and_its_jobs_alone(renders: dict[str, Render]) -> None:
    """The detector is a plain Deployment whose flags (``--retrain_min_labels`` and the others) reach it as
    written: no KServe reconciler owns it, and KServe's pod mutator (the agent and storage-initializer
    injector) only acts on pods labelled ``serving.kserve.io/inferenceservice``: kserve/kserve
    config/webhook/manifests.yaml at aaac4e29 (``inferenceservice.kserve-webhook-server.pod-mutator``,
    ``objectSelector: serving.kserve.io/inferenceservice Exists``). Neither the detector's pods nor the
    retraining Jobs' may carry it."""
    checked = 0
    for name, rendered in renders.items():
        jobs = [doc["data"]["job-template.yaml"] for doc in rendered.of_kind("ConfigMap")
                if "job-template.yaml" in doc.get("data", {})]  # fmt: skip
        pods = [yaml.safe_load(job)["spec"]["template"] for job in jobs]
        workloads = [*rendered.of_kind("Deployment"), *rendered.of_kind("StatefulSet")]
        pods += [doc["spec"]["template"] for doc in workloads if doc["metadata"]["name"].endswith("detector")]
        pods += [job["spec"]["jobTemplate"]["spec"]["template"] for job in rendered.of_kind("CronJob")]
        checked += len(pods)
        for pod in pods:
            assert "serving.kserve.io/inferenceservice" not in pod["metadata"].get("labels", {}), name
        owned = [doc for doc in rendered.of_kind("Deployment") if doc["metadata"].get("ownerReferences")]
        assert not owned, name
    assert checked >= 3 * len(renders) // 2  # detector, Job template and CronJob in most scenarios


def test_detector_role_may_only_create_and_follow_jobs(renders: dict[str, Render]) -> None:
    rendered = renders["defaults"]
    role = rendered.one("Role", f"{FULLNAME}-detector")
    assert role["rules"] == [
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "get", "list", "watch"]}
    ]
    binding = rendered.one("RoleBinding", f"{FULLNAME}-detector")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": f"{FULLNAME}-detector", "namespace": NAMESPACE}
    ]
    assert not rendered.of_kind("ClusterRole")


def test_job_template_is_a_valid_training_job(renders: dict[str, Render]) -> None:
    import kubernetes_validate

    rendered = renders["aks-workload-identity"]
    config = rendered.one("ConfigMap", f"{FULLNAME}-detector-job-template")
    job = yaml.safe_load(config["data"]["job-template.yaml"])
    kubernetes_validate.validate(job, "1.30", strict=True)
    pod = job["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert container["command"] == ["housing", "train"]
    assert container["args"][container["args"].index("--publish") + 1].startswith("https://")
    assert {env["name"]: env["value"] for env in container["env"]}["MLFLOW_TRACKING_URI"].startswith("http")
    assert pod["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    assert container["image"] == "contosoml.azurecr.io/housing-trainer:3f2c1ab"


def test_weekly_retraining_cronjob(renders: dict[str, Render]) -> None:
    cronjob = renders["defaults"].one("CronJob", f"{FULLNAME}-retrain")
    assert cronjob["spec"]["schedule"] == "0 3 * * 1"
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    container = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["housing", "train"]
    assert "--publish" in container["args"]


def test_a_canary_is_its_own_inference_service_in_either_mode(renders: dict[str, Render]) -> None:
    for scenario, mode, metric in (
        ("standard-canary", "Standard", "cpu"),
        ("knative-canary", "Knative", "concurrency"),
    ):
        rendered = renders[scenario]
        stable = rendered.one("InferenceService", FULLNAME)
        canary = rendered.one("InferenceService", f"{FULLNAME}-v2")
        assert "canary" not in stable["spec"] and "canaryTrafficPercent" not in stable["spec"]["predictor"]
        assert set(canary["spec"]) == {"predictor"}  # predictor-only: the stable transformer routes to it
        for isvc in (stable, canary):
            assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == mode
            assert isvc["spec"]["predictor"]["scaleMetric"] == metric
        predictor = canary["spec"]["predictor"]
        assert predictor["labels"]["housing.kserve.dev/endpoint"] == "canary"
        assert stable["spec"]["predictor"]["labels"]["housing.kserve.dev/endpoint"] == "default"
        assert _predictor_args(predictor)["--expected_sha256"] == SHA_B
        assert _predictor_args(predictor)["--storage_uri"].endswith("/models/housing/v2")
        assert _predictor_args(stable["spec"]["predictor"])["--expected_sha256"] == SHA_A
        assert predictor["annotations"]["housing.kserve.dev/model-version"] == "2"
        # Apart from its model, endpoint label and annotations, the canary runs the stable predictor's spec.
        own = ("containers", "labels", "annotations", "topologySpreadConstraints")  # the last: spread by role
        same = {key: value for key, value in predictor.items() if key not in own}
        assert same == {key: value for key, value in stable["spec"]["predictor"].items() if key not in own}


def test_workload_identity(renders: dict[str, Render]) -> None:
    rendered = renders["aks-workload-identity"]
    for account in rendered.of_kind("ServiceAccount"):
        if (
            account["metadata"]["name"] == f"{FULLNAME}-transformer"
        ):  # reads no Blob Storage: no Azure identity
            assert "annotations" not in account["metadata"]
            continue
        assert account["metadata"]["annotations"]["azure.workload.identity/client-id"] == CLIENT_ID
    isvc = rendered.one("InferenceService", FULLNAME)
    assert isvc["spec"]["predictor"]["labels"]["azure.workload.identity/use"] == "true"
    detector = rendered.one("Deployment", f"{FULLNAME}-detector")
    assert detector["spec"]["template"]["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    # Without Workload Identity nothing Azure-specific is rendered, and nowhere is there a key or a secret.
    plain = renders["defaults"].text
    assert "azure.workload.identity" not in plain
    for text in (plain, rendered.text):
        assert "AccountKey" not in text and "kind: Secret" not in text
        assert "AZURE_STORAGE_CONNECTION_STRING" not in text


def test_switches_remove_their_objects(renders: dict[str, Render]) -> None:
    off = renders["monitoring-off"]
    assert not off.of_kind("PodMonitor") and not off.of_kind("PrometheusRule")
    assert not [c for c in off.of_kind("ConfigMap") if "grafana_dashboard" in c["metadata"]["labels"]]
    no_detector = renders["detector-off"]
    assert not [d for d in no_detector.documents if d["metadata"]["name"].startswith(f"{FULLNAME}-detector")]
    assert (
        "--logger_url"
        not in no_detector.one("InferenceService", FULLNAME)["spec"]["transformer"]["containers"][0]["args"]
    )


def test_monitoring_objects(renders: dict[str, Render]) -> None:
    rendered = renders["defaults"]
    monitors = {m["metadata"]["name"]: m for m in rendered.of_kind("PodMonitor")}
    components = ("predictor", "transformer", "explainer", "detector")
    assert set(monitors) == {f"{FULLNAME}-{c}" for c in components}
    for component in components:
        monitor = monitors[f"{FULLNAME}-{component}"]
        assert monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == component
        targets = {r["targetLabel"] for r in monitor["spec"]["podMetricsEndpoints"][0]["relabelings"]}
        assert targets == {"component", "endpoint"}
    rules = rendered.one("PrometheusRule")
    source = yaml.safe_load((CHART / "files" / "prometheus-rules.yaml").read_text())
    assert rules["spec"]["groups"] == source["groups"]
    dashboards = [
        c for c in rendered.of_kind("ConfigMap") if c["metadata"]["labels"].get("grafana_dashboard") == "1"
    ]
    files = sorted(path.name for path in (CHART / "dashboards").glob("*.json"))
    assert sorted(name for c in dashboards for name in c["data"]) == files
    assert files


def test_every_container_is_locked_down(renders: dict[str, Render]) -> None:
    def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
        kind, spec = doc["kind"], doc.get("spec", {})
        if kind == "InferenceService":
            parts = [spec[c] for c in ("predictor", "transformer", "explainer") if c in spec]
            return [c for part in parts for c in part["containers"]]
        if kind == "Deployment":
            return spec["template"]["spec"]["containers"]
        if kind == "CronJob":
            return spec["jobTemplate"]["spec"]["template"]["spec"]["containers"]
        if kind == "Pod":
            return spec["containers"]
        return []

    seen = 0
    for rendered in renders.values():
        for doc in rendered.documents:
            for container in containers(doc):
                context = container["securityContext"]
                assert context["runAsNonRoot"] and context["readOnlyRootFilesystem"], container["name"]
                assert context["allowPrivilegeEscalation"] is False
                assert context["capabilities"] == {"drop": ["ALL"]}
                assert {"requests", "limits"} <= container["resources"].keys()
                seen += 1
    assert seen >= 30


def test_notes_render_for_every_mode(tmp_path: Path) -> None:
    # helm renders NOTES.txt only on install, which needs a cluster; a copy of the chart renders the same
    # text with `tpl` into a ConfigMap that `helm template` shows.
    from tests.k8s.conftest import SCENARIOS, parse

    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    shutil.copy(chart / "templates" / "NOTES.txt", chart / "files" / "NOTES.txt")
    (chart / "templates" / "notes-shown.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\n"
        'data:\n  notes: {{ tpl (.Files.Get "files/NOTES.txt") . | quote }}\n'
    )
    for name in ("defaults", "knative-canary", "standard-canary"):
        values = tmp_path / f"{name}.yaml"
        values.write_text(yaml.safe_dump(SCENARIOS[name]))
        shown = helm(
            "template",
            RELEASE,
            chart,
            "-n",
            NAMESPACE,
            "-f",
            values,
            "--show-only",
            "templates/notes-shown.yaml",
        )
        notes = parse(shown.stdout)[0]["data"]["notes"]
        assert "/v2/models/housing/infer" in notes and "/v1/models/housing:predict" in notes, notes
        assert f"URL=http://{FULLNAME}-transformer.{NAMESPACE}.svc.cluster.local" in notes
        assert "port-forward svc/" not in notes  # the servers listen on the pod's address, not localhost
        if name == "defaults":
            assert "WARNING: model.sha256 is empty" in notes
        else:
            assert "Promote:" in notes and "Roll back:" in notes, notes


BAD_VALUES: list[tuple[str, dict[str, Any], str]] = [
    (
        "Knative's revision split",
        {"deploymentMode": "Knative", "rollout": {"canaryTrafficPercent": 10}},
        "rollout.canaryTrafficPercent (Knative's split between revisions) is no longer used",
    ),
    (
        "a canary name too long for KServe's derived names",
        {
            "fullnameOverride": "housing-price-prediction-production-ab",
            "rollout": {
                "canaries": [
                    {
                        "name": "candidate-long",
                        "trafficPercent": 10,
                        "model": {"storageUri": "https://a1b.blob.core.windows.net/mod/x", "sha256": SHA_B},
                    }
                ]
            },
        },
        "KServe would name its predictor housing-price-prediction-production-ab-candidate-long-predictor (63",
    ),
    (
        "canary shares above 100",
        {
            "rollout": {
                "canaries": [
                    {
                        "name": n,
                        "trafficPercent": 60,
                        "model": {
                            "storageUri": f"https://a1b.blob.core.windows.net/mod/{n}",
                            "sha256": SHA_B,
                        },
                    }
                    for n in ("one", "two")
                ]
            }
        },
        "trafficPercent adds up to 120",
    ),
    (
        "duplicate canary names",
        {
            "rollout": {
                "canaries": [
                    {
                        "name": "v2",
                        "trafficPercent": 5,
                        "model": {
                            "storageUri": f"https://a1b.blob.core.windows.net/mod/{i}",
                            "sha256": SHA_B,
                        },
                    }
                    for i in (1, 2)
                ]
            }
        },
        'the name "v2" is used twice',
    ),
    (
        "rps in Standard mode",
        {"predictor": {"scaleMetric": "rps"}},
        'predictor.scaleMetric "rps" needs Knative\'s autoscaler',
    ),
    (
        "cpu in Knative mode",
        {"deploymentMode": "Knative", "transformer": {"scaleMetric": "cpu"}},
        'transformer.scaleMetric "cpu": Knative mode scales on concurrency or rps',
    ),
    (
        "min above max",
        {"predictor": {"minReplicas": 5, "maxReplicas": 2}},
        "predictor.minReplicas (5) is greater than predictor.maxReplicas (2)",
    ),
    (
        "scale to zero in Standard mode",
        {"transformer": {"minReplicas": 0}},
        "transformer.minReplicas is 0, but scale to zero needs Knative",
    ),
    (
        "logger without detector",
        {"detector": {"enabled": False}},
        "logger.enabled sends the CloudEvents to the detector, but detector.enabled is false",
    ),
    (
        "wrong type",
        {"predictor": {"minReplicas": "two"}},
        "predictor.minReplicas: Invalid type. Expected: integer, given: string",
    ),
    ("sha256 not hex", {"model": {"sha256": "not-a-sha"}}, "model.sha256: Does not match pattern"),
    (
        "workload identity without client id",
        {"azure": {"workloadIdentity": {"enabled": True}}},
        'azure.workloadIdentity: Must validate "then" as "if" was valid',
    ),
    (
        "unknown mode",
        {"deploymentMode": "Raw"},
        "deploymentMode: deploymentMode must be one of the following",
    ),
    ("unknown key", {"predicter": {}}, "Additional property predicter is not allowed"),
    (
        "storage URI with a key in it",
        {"model": {"storageUri": "DefaultEndpointsProtocol=https;AccountKey=x"}},
        "model.storageUri: Does not match pattern",
    ),
]


@pytest.mark.parametrize(
    ("values", "message"), [(v, m) for _, v, m in BAD_VALUES], ids=[n for n, _, _ in BAD_VALUES]
)
def test_bad_values_are_refused_with_a_clear_message(
    values: dict[str, Any], message: str, tmp_path: Path
) -> None:
    result = render(values, tmp_path, "bad")
    assert result.returncode != 0, f"rendered although it should not:\n{result.stdout[:500]}"
    assert message in result.stderr, result.stderr


def test_transformer_batches_with_the_inference_log_on(renders: dict[str, Render]) -> None:
    # The transformer logs each client request itself: merging requests into one predictor call loses no id.
    for scenario in ("defaults", "detector-off"):
        args = renders[scenario].one("InferenceService", FULLNAME)["spec"]["transformer"]["containers"][0][
            "args"
        ]
        assert "--coalesce_rows" not in args  # the transformer's default: adaptive batching on


def test_disruption_budgets_only_where_more_than_one_replica_runs(renders: dict[str, Render]) -> None:
    from tests.k8s.kserve_controller import pod_labels

    assert not renders["defaults"].of_kind("PodDisruptionBudget")  # one replica: a budget would block drains
    rendered = renders["highly-available"]
    stable = rendered.one("InferenceService", FULLNAME)
    budgets = {b["metadata"]["name"]: b for b in rendered.of_kind("PodDisruptionBudget")}
    assert set(budgets) == {f"{FULLNAME}-predictor", f"{FULLNAME}-transformer"}
    for component in ("predictor", "transformer"):
        budget = budgets[f"{FULLNAME}-{component}"]["spec"]
        assert budget["maxUnavailable"] == 1
        # The budget covers exactly the component's stable pods, as KServe labels them.
        assert budget["selector"]["matchLabels"].items() <= pod_labels(stable, component).items()


def test_pods_spread_across_nodes_and_zones(renders: dict[str, Render]) -> None:
    from tests.k8s.kserve_controller import pod_labels

    for scenario in ("defaults", "knative-canary", "standard-canary"):
        rendered = renders[scenario]
        for isvc in rendered.of_kind("InferenceService"):
            for component in ("predictor", "transformer"):
                if component not in isvc["spec"]:
                    continue
                constraints = isvc["spec"][component]["topologySpreadConstraints"]
                assert [c["topologyKey"] for c in constraints] == [
                    "kubernetes.io/hostname",
                    "topology.kubernetes.io/zone",
                ]
                labels = pod_labels(isvc, component)
                for constraint in constraints:
                    assert (
                        constraint["whenUnsatisfiable"] == "ScheduleAnyway"
                    )  # a preference, never unschedulable
                    assert constraint["labelSelector"]["matchLabels"].items() <= labels.items(), scenario
