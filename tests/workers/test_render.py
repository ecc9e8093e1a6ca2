"""Tests of the Kubernetes manifest renderer (workers/kube/render.py + k8s_templates/).

Every rendered manifest is validated against the Kubernetes OpenAPI schemas shipped inside
the ``kubernetes-validate`` package (no network), strict mode, for the newest Kubernetes
version the installed package carries.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from typing import Any

import kubernetes_validate
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes_validate.utils import all_versions, latest_version

from workers.kube import render
from workers.kube.render import (
    ManifestContext,
    RenderConfig,
    container_port,
    object_labels,
    render_deployment,
    render_hpa,
    render_manifests,
    render_namespace,
    render_service,
    selector_labels,
    service_port,
)

K8S_VERSION = latest_version()

IMAGES = {
    "tfserving": "tensorflow/serving:2.16.1",
    "torchserve": "pytorch/torchserve:0.11.1-cpu",
    "triton": "nvcr.io/nvidia/tritonserver:24.05-py3",
    "onnxruntime": "nvcr.io/nvidia/tritonserver:24.05-py3-onnx",
}
ONNX_SERVER_IMAGE = "ghcr.io/serveplane/onnx-server:1.0.0"
GPU_TOLERATIONS = ({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},)
GPU_NODE_SELECTOR = {"nvidia.com/gpu.present": "true"}

CFG = RenderConfig(
    images=IMAGES,
    onnx_server_image=None,
    model_volume_claim="serveplane-models",
    model_host_path="/var/lib/serveplane/models",
    s3_init_image="amazon/aws-cli:2.17.0",
    gpu_node_selector=GPU_NODE_SELECTOR,
    gpu_tolerations=GPU_TOLERATIONS,
    progress_deadline_seconds=600,
)
CFG_HOST = dataclasses.replace(CFG, model_volume_claim=None)
CFG_ONNX_SERVER = dataclasses.replace(CFG, onnx_server_image=ONNX_SERVER_IMAGE)

CTX = ManifestContext(
    namespace="sp-cust-12",
    object_name="resnet50-classifier-v1",
    service_name="resnet50-classifier",
    service_uuid="svc-3f9c1a2b4d5e",
    customer_id=12,
    version=1,
    framework="triton",
    model_path="/models/resnet50",
    replicas=2,
    min_replicas=1,
    max_replicas=5,
    cpu_cores=2,
    memory_gb=4,
    gpu_count=0,
    autoscale=False,
    cpu_target_percent=70,
)

# (framework, config): the four frameworks, plus ONNX Runtime on serveplane's own server.
RUNTIMES = {
    "tfserving": ("tfserving", CFG),
    "torchserve": ("torchserve", CFG),
    "triton": ("triton", CFG),
    "onnxruntime-triton": ("onnxruntime", CFG),
    "onnxruntime-server": ("onnxruntime", CFG_ONNX_SERVER),
}
MODEL_PATHS = {
    "plain": "/models/resnet50",
    "pvc": "pvc://team-models/resnet50/v1",
    "s3": "s3://ml-models/resnet50/v1",
}

LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def ctx_for(**changes: Any) -> ManifestContext:
    return dataclasses.replace(CTX, **changes)


def validate(obj: dict[str, Any]) -> None:
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def assert_valid_labels(labels: dict[str, str]) -> None:
    for key, value in labels.items():
        prefix, _, name = key.rpartition("/")
        assert not prefix or (len(prefix) <= 253 and DNS1123_SUBDOMAIN.fullmatch(prefix)), key
        assert len(name) <= 63 and LABEL_NAME.fullmatch(name), key
        assert isinstance(value, str) and len(value) <= 63 and LABEL_VALUE.fullmatch(value), value


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["model-server"]
    return containers[0]


def ports_by_name(c: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in c["ports"]}


def model_volume(deployment: dict[str, Any]) -> dict[str, Any]:
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    assert len(volumes) == 1 and volumes[0]["name"] == "model-store"
    return volumes[0]


def model_mount(deployment: dict[str, Any]) -> dict[str, Any]:
    mounts = container(deployment)["volumeMounts"]
    assert len(mounts) == 1
    mount = mounts[0]
    assert mount["name"] == "model-store"
    assert mount["mountPath"] == "/mnt/models"
    assert mount["readOnly"] is True
    return mount


# --- the schema matrix ------------------------------------------------------------------


def test_schema_version_ships_locally() -> None:
    assert K8S_VERSION in all_versions()
    # The schemas are package data: validation never needs the network.
    from importlib.resources import files

    schema_dir = (
        files("kubernetes_validate") / "kubernetes-json-schema" / f"v{K8S_VERSION}-local-strict"
    )
    assert (schema_dir / "deployment-apps-v1.json").is_file()


@pytest.mark.parametrize(
    ("runtime", "autoscale", "path_kind", "gpus"),
    list(itertools.product(RUNTIMES, [False, True], [*MODEL_PATHS, "plain-host"], [0, 1])),
)
def test_manifests_validate_against_kubernetes_schema(
    runtime: str, autoscale: bool, path_kind: str, gpus: int
) -> None:
    framework, cfg = RUNTIMES[runtime]
    if path_kind == "plain-host":
        cfg = dataclasses.replace(cfg, model_volume_claim=None)
        path_kind = "plain"
    ctx = ctx_for(
        framework=framework,
        autoscale=autoscale,
        model_path=MODEL_PATHS[path_kind],
        gpu_count=gpus,
    )
    manifests = render_manifests(ctx, cfg)
    kinds = [m["kind"] for m in manifests]
    assert kinds == (
        ["Deployment", "Service", "HorizontalPodAutoscaler"]
        if autoscale
        else ["Deployment", "Service"]
    )
    for manifest in manifests:
        validate(manifest)
        assert manifest["metadata"]["namespace"] == "sp-cust-12"
        assert manifest["metadata"]["name"] == "resnet50-classifier-v1"
        assert manifest["metadata"]["labels"] == object_labels(ctx)
    deployment, service = manifests[0], manifests[1]
    spec = deployment["spec"]
    assert ("replicas" in spec) is (not autoscale)
    c = container(deployment)
    assert ("nvidia.com/gpu" in c["resources"]["limits"]) is (gpus > 0)
    assert ("nodeSelector" in spec["template"]["spec"]) is (gpus > 0)
    assert ("tolerations" in spec["template"]["spec"]) is (gpus > 0)
    assert ("initContainers" in spec["template"]["spec"]) is (path_kind == "s3")
    http = ports_by_name(c)["http"]
    assert http == container_port(framework, cfg)
    assert service["spec"]["ports"][0]["targetPort"] == http
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["port"] == http


def test_namespace() -> None:
    ns = render_namespace("sp-cust-12", 12)
    validate(ns)
    assert ns == {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": "sp-cust-12",
            "labels": {
                "app.kubernetes.io/managed-by": "serveplane",
                "serveplane.io/customer": "12",
            },
        },
    }
    assert_valid_labels(ns["metadata"]["labels"])


# --- labels and selectors ---------------------------------------------------------------


def test_labels_and_selectors() -> None:
    ctx = ctx_for(autoscale=True, version=7, customer_id=4242)
    assert object_labels(ctx) == {
        "app.kubernetes.io/name": "resnet50-classifier",
        "app.kubernetes.io/managed-by": "serveplane",
        "app.kubernetes.io/instance": "resnet50-classifier-v1",
        "serveplane.io/service": "svc-3f9c1a2b4d5e",
        "serveplane.io/version": "7",
        "serveplane.io/customer": "4242",
    }
    assert selector_labels(ctx) == {
        "serveplane.io/service": "svc-3f9c1a2b4d5e",
        "serveplane.io/version": "7",
    }
    assert_valid_labels(object_labels(ctx))
    deployment, service, hpa = render_manifests(ctx, CFG)
    for obj in (deployment, service, hpa):
        assert obj["metadata"]["labels"] == object_labels(ctx)
    assert deployment["spec"]["selector"] == {"matchLabels": selector_labels(ctx)}
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pod_labels == object_labels(ctx)
    assert selector_labels(ctx).items() <= pod_labels.items()
    assert service["spec"]["selector"] == selector_labels(ctx)


def test_label_values_stay_valid_for_long_names() -> None:
    name = "a" + "b" * 61 + "c"  # a 63-character DNS-1035 label
    ctx = ctx_for(service_name=name, object_name=name, version=123456, customer_id=10**12)
    assert_valid_labels(object_labels(ctx))
    for manifest in render_manifests(ctx, CFG):
        validate(manifest)


# --- Deployment details -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("runtime", "image", "ports", "readiness", "liveness"),
    [
        (
            "tfserving",
            IMAGES["tfserving"],
            {"http": 8501, "grpc": 8500},
            "/v1/models/resnet50-classifier",
            "/v1/models/resnet50-classifier",
        ),
        (
            "torchserve",
            IMAGES["torchserve"],
            {"http": 8080, "management": 8081, "metrics": 8082, "grpc": 7070},
            "/ping",
            "/ping",
        ),
        (
            "triton",
            IMAGES["triton"],
            {"http": 8000, "grpc": 8001, "metrics": 8002},
            "/v2/health/ready",
            "/v2/health/live",
        ),
        (
            "onnxruntime-triton",
            IMAGES["onnxruntime"],
            {"http": 8000, "grpc": 8001, "metrics": 8002},
            "/v2/models/resnet50-classifier/ready",
            "/v2/health/live",
        ),
        (
            "onnxruntime-server",
            ONNX_SERVER_IMAGE,
            {"http": 8080},
            "/v2/models/resnet50-classifier/ready",
            "/v2/models/resnet50-classifier/ready",
        ),
    ],
)
def test_framework_image_ports_and_probes(
    runtime: str, image: str, ports: dict[str, int], readiness: str, liveness: str
) -> None:
    framework, cfg = RUNTIMES[runtime]
    c = container(render_deployment(ctx_for(framework=framework), cfg))
    assert c["image"] == image
    assert c["imagePullPolicy"] == "IfNotPresent"
    assert ports_by_name(c) == ports
    assert c["ports"][0]["name"] == "http"
    assert container_port(framework, cfg) == ports["http"]
    assert c["readinessProbe"]["httpGet"] == {"path": readiness, "port": ports["http"]}
    assert c["startupProbe"]["httpGet"] == {"path": readiness, "port": ports["http"]}
    assert c["livenessProbe"]["httpGet"] == {"path": liveness, "port": ports["http"]}
    # Generous startup window for big models: at least ten minutes.
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600
    assert c["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
    assert c["securityContext"]["allowPrivilegeEscalation"] is False


def test_framework_commands() -> None:
    tf = container(render_deployment(ctx_for(framework="tfserving"), CFG))
    assert tf["command"] == ["tensorflow_model_server"]
    assert tf["args"] == [
        "--port=8500",
        "--rest_api_port=8501",
        "--model_name=resnet50-classifier",
        "--model_base_path=/mnt/models",
    ]

    ts = container(render_deployment(ctx_for(framework="torchserve"), CFG))
    assert ts["command"] == ["torchserve"]
    args = ts["args"]
    assert {"--start", "--foreground"} <= set(args)
    assert args[args.index("--model-store") + 1] == "/mnt/models"
    assert args[args.index("--models") + 1] == "resnet50-classifier=resnet50-classifier.mar"
    assert "--ts-config" in args

    triton_args = [
        "--model-repository=/mnt/models",
        "--strict-model-config=false",
        "--http-port=8000",
        "--grpc-port=8001",
        "--metrics-port=8002",
    ]
    for framework in ("triton", "onnxruntime"):
        tr = container(render_deployment(ctx_for(framework=framework), CFG))
        assert tr["command"] == ["tritonserver"]
        assert tr["args"] == triton_args

    own = container(render_deployment(ctx_for(framework="onnxruntime"), CFG_ONNX_SERVER))
    assert "command" not in own  # the image's entrypoint is the server
    assert own["args"] == [
        "--model",
        "/mnt/models",
        "--name",
        "resnet50-classifier",
        "--port",
        "8080",
        "--host",
        "0.0.0.0",
    ]
    # The own-server image only replaces ONNX Runtime, not the other frameworks.
    tr = container(render_deployment(ctx_for(framework="triton"), CFG_ONNX_SERVER))
    assert tr["image"] == IMAGES["triton"]
    assert container_port("triton", CFG_ONNX_SERVER) == 8000


def test_container_and_service_ports() -> None:
    assert container_port("tfserving") == 8501
    assert container_port("torchserve") == 8080
    assert container_port("triton") == 8000
    assert container_port("onnxruntime") == 8000
    assert container_port("onnxruntime", CFG) == 8000
    assert container_port("onnxruntime", CFG_ONNX_SERVER) == 8080
    assert service_port() == 80
    for framework, cfg in RUNTIMES.values():
        service = render_service(ctx_for(framework=framework), cfg)
        assert service["apiVersion"] == "v1"
        assert service["spec"]["type"] == "ClusterIP"
        assert service["spec"]["ports"] == [
            {
                "name": "http",
                "protocol": "TCP",
                "port": 80,
                "targetPort": container_port(framework, cfg),
            }
        ]


def test_resources_without_gpu() -> None:
    deployment = render_deployment(ctx_for(cpu_cores=2, memory_gb=4, gpu_count=0), CFG)
    c = container(deployment)
    assert c["resources"] == {
        "requests": {"cpu": "2", "memory": "4Gi"},
        "limits": {"cpu": "2", "memory": "4Gi"},
    }
    pod = deployment["spec"]["template"]["spec"]
    assert "nodeSelector" not in pod
    assert "tolerations" not in pod


def test_resources_with_gpu() -> None:
    deployment = render_deployment(ctx_for(cpu_cores=2, memory_gb=4, gpu_count=1), CFG)
    c = container(deployment)
    assert c["resources"] == {
        "requests": {"cpu": "2", "memory": "4Gi"},
        "limits": {"cpu": "2", "memory": "4Gi", "nvidia.com/gpu": "1"},
    }
    pod = deployment["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == GPU_NODE_SELECTOR
    assert pod["tolerations"] == list(GPU_TOLERATIONS)


def test_gpu_without_configured_node_selector_or_tolerations() -> None:
    cfg = dataclasses.replace(CFG, gpu_node_selector={}, gpu_tolerations=())
    deployment = render_deployment(ctx_for(gpu_count=2), cfg)
    validate(deployment)
    pod = deployment["spec"]["template"]["spec"]
    assert "nodeSelector" not in pod and "tolerations" not in pod
    assert container(deployment)["resources"]["limits"]["nvidia.com/gpu"] == "2"


def test_deployment_spec_fixed_replicas() -> None:
    deployment = render_deployment(ctx_for(replicas=3, autoscale=False), CFG)
    spec = deployment["spec"]
    assert deployment["apiVersion"] == "apps/v1"
    assert deployment["metadata"]["annotations"] == {"serveplane.io/model-path": "/models/resnet50"}
    assert spec["replicas"] == 3
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0},
    }
    assert spec["progressDeadlineSeconds"] == 600
    assert spec["revisionHistoryLimit"] == 3
    assert spec["template"]["spec"]["terminationGracePeriodSeconds"] == 30


def test_autoscale_omits_replicas_and_renders_hpa() -> None:
    ctx = ctx_for(autoscale=True, replicas=3, min_replicas=2, max_replicas=9, cpu_target_percent=65)
    deployment, _service, hpa = render_manifests(ctx, CFG)
    assert "replicas" not in deployment["spec"]
    assert hpa == render_hpa(ctx, CFG)
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"] == {
        "scaleTargetRef": {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": "resnet50-classifier-v1",
        },
        "minReplicas": 2,
        "maxReplicas": 9,
        "metrics": [
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 65},
                },
            }
        ],
    }


def test_progress_deadline_and_pull_policy_from_config() -> None:
    cfg = dataclasses.replace(CFG, progress_deadline_seconds=1200, image_pull_policy="Always")
    deployment = render_deployment(ctx_for(model_path="s3://b/p"), cfg)
    assert deployment["spec"]["progressDeadlineSeconds"] == 1200
    pod = deployment["spec"]["template"]["spec"]
    assert pod["containers"][0]["imagePullPolicy"] == "Always"
    assert pod["initContainers"][0]["imagePullPolicy"] == "Always"


# --- model volume -----------------------------------------------------------------------


def test_plain_path_on_configured_claim() -> None:
    deployment = render_deployment(ctx_for(model_path="/models/resnet50"), CFG)
    assert model_volume(deployment) == {
        "name": "model-store",
        "persistentVolumeClaim": {"claimName": "serveplane-models", "readOnly": True},
    }
    assert model_mount(deployment)["subPath"] == "models/resnet50"


def test_plain_path_on_host_path_without_claim() -> None:
    deployment = render_deployment(ctx_for(model_path="/models/resnet50"), CFG_HOST)
    assert model_volume(deployment) == {
        "name": "model-store",
        "hostPath": {"path": "/var/lib/serveplane/models/models/resnet50", "type": "Directory"},
    }
    assert "subPath" not in model_mount(deployment)


def test_root_path_mounts_whole_store() -> None:
    deployment = render_deployment(ctx_for(model_path="/"), CFG)
    assert "subPath" not in model_mount(deployment)
    deployment = render_deployment(ctx_for(model_path="/"), CFG_HOST)
    assert model_volume(deployment)["hostPath"]["path"] == "/var/lib/serveplane/models"


def test_pvc_path() -> None:
    deployment = render_deployment(ctx_for(model_path="pvc://team-models/resnet50/v1"), CFG_HOST)
    assert model_volume(deployment) == {
        "name": "model-store",
        "persistentVolumeClaim": {"claimName": "team-models", "readOnly": True},
    }
    assert model_mount(deployment)["subPath"] == "resnet50/v1"
    whole = render_deployment(ctx_for(model_path="pvc://team-models"), CFG)
    assert model_volume(whole)["persistentVolumeClaim"]["claimName"] == "team-models"
    assert "subPath" not in model_mount(whole)


def test_s3_path_uses_init_container() -> None:
    deployment = render_deployment(ctx_for(model_path="s3://ml-models/resnet50/v1"), CFG)
    pod = deployment["spec"]["template"]["spec"]
    assert model_volume(deployment) == {"name": "model-store", "emptyDir": {}}
    assert "subPath" not in model_mount(deployment)
    (init,) = pod["initContainers"]
    assert init["name"] == "fetch-model"
    assert init["image"] == "amazon/aws-cli:2.17.0"
    assert init["args"] == ["s3", "cp", "--recursive", "s3://ml-models/resnet50/v1", "/mnt/models"]
    assert init["envFrom"] == [
        {"secretRef": {"name": "serveplane-s3-credentials", "optional": True}}
    ]
    assert init["volumeMounts"] == [{"name": "model-store", "mountPath": "/mnt/models"}]
    assert init["securityContext"]["allowPrivilegeEscalation"] is False


@pytest.mark.parametrize(
    "path",
    ["/models/../../etc", "../etc", "/a/..", "pvc://claim/../other", "pvc://claim/x/../../y"],
)
def test_parent_segments_rejected(path: str) -> None:
    with pytest.raises(ValueError, match=r"\.\."):
        render_deployment(ctx_for(model_path=path), CFG_HOST)


@pytest.mark.parametrize("path", ["pvc://", "pvc:///sub", "s3://", "s3:///prefix"])
def test_malformed_scheme_paths_rejected(path: str) -> None:
    with pytest.raises(ValueError):
        render_deployment(ctx_for(model_path=path), CFG)


def test_unknown_framework_and_missing_image() -> None:
    with pytest.raises(ValueError, match="framework"):
        render_deployment(ctx_for(framework="caffe"), CFG)
    with pytest.raises(ValueError, match="framework"):
        container_port("caffe")
    cfg = dataclasses.replace(CFG, images={"triton": IMAGES["triton"]})
    with pytest.raises(ValueError, match="image"):
        render_deployment(ctx_for(framework="tfserving"), cfg)


# --- template injection -----------------------------------------------------------------

HOSTILE = (
    "we\"ird'quote\\back\nnew: line\r\n- item\t# comment {{ 7*7 }} {% if x %}"
    " ]}[{ &anchor *alias !!python/object ---\n...\n"
    " ü ß 猫 😀 \u2028\u2029\x85\x7f\x00 ${HOME} `id` ../../etc/passwd"
)


def shape(obj: Any) -> Any:
    """The structure of a manifest: keys and list lengths, with scalars reduced to types."""
    if isinstance(obj, dict):
        return {key: shape(value) for key, value in obj.items()}
    if isinstance(obj, list):
        return [shape(value) for value in obj]
    return type(obj).__name__


def test_hostile_s3_model_path_is_inert() -> None:
    hostile_path = "s3://bucket/" + HOSTILE
    benign = render_manifests(ctx_for(model_path="s3://bucket/x", autoscale=True), CFG)
    manifests = render_manifests(ctx_for(model_path=hostile_path, autoscale=True), CFG)
    assert shape(manifests) == shape(benign)
    deployment = manifests[0]
    assert deployment["metadata"]["annotations"]["serveplane.io/model-path"] == hostile_path
    init = deployment["spec"]["template"]["spec"]["initContainers"][0]
    assert init["args"] == ["s3", "cp", "--recursive", hostile_path, "/mnt/models"]
    # Only the model path differs from the benign rendering.
    assert manifests[1:] == benign[1:]
    for manifest in manifests:
        validate(manifest)


@pytest.mark.parametrize("cfg", [CFG, CFG_HOST], ids=["claim", "host"])
def test_hostile_plain_and_pvc_model_paths_are_inert(cfg: RenderConfig) -> None:
    # Everything hostile except '..' path segments (rejected, see above).
    hostile = HOSTILE.replace("../", "..x/")
    for path, benign_path in (("/" + hostile, "/x"), ("pvc://claim/" + hostile, "pvc://claim/x")):
        deployment = render_deployment(ctx_for(model_path=path), cfg)
        assert shape(deployment) == shape(render_deployment(ctx_for(model_path=benign_path), cfg))
        assert deployment["metadata"]["annotations"]["serveplane.io/model-path"] == path
        volume, mount = model_volume(deployment), model_mount(deployment)
        if "hostPath" in volume:
            assert volume["hostPath"]["path"] == "/var/lib/serveplane/models/" + hostile.strip("/")
        else:
            assert mount["subPath"] == hostile.strip("/")
        validate(deployment)


def test_hostile_strings_everywhere_are_inert() -> None:
    """Even values that validation would reject land verbatim and change no structure."""
    ctx = ctx_for(
        namespace=HOSTILE,
        object_name=HOSTILE + "o",
        service_name=HOSTILE + "s",
        service_uuid=HOSTILE + "u",
        model_path="s3://b/" + HOSTILE,
        autoscale=True,
        gpu_count=1,
    )
    cfg = dataclasses.replace(
        CFG,
        images={k: HOSTILE + k for k in IMAGES},
        s3_init_image=HOSTILE + "init",
        gpu_node_selector={HOSTILE + "k": HOSTILE + "v"},
        gpu_tolerations=({"key": HOSTILE, "operator": "Exists", "effect": "NoSchedule"},),
        image_pull_policy=HOSTILE + "p",
    )
    # shape() keeps mapping keys, and the node selector's key is data: compare the
    # structure with the same one-entry selector, then check the hostile selector itself.
    benign = render_manifests(
        ctx_for(model_path="s3://b/x", autoscale=True, gpu_count=1),
        dataclasses.replace(CFG, gpu_node_selector={"k": "v"}),
    )
    same_selector = dataclasses.replace(cfg, gpu_node_selector={"k": "v"})
    assert shape(render_manifests(ctx, same_selector)) == shape(benign)
    manifests = render_manifests(ctx, cfg)
    deployment, service, hpa = manifests
    for obj in manifests:
        assert obj["metadata"]["namespace"] == HOSTILE
        assert obj["metadata"]["name"] == HOSTILE + "o"
        assert obj["metadata"]["labels"] == object_labels(ctx)
    assert hpa["spec"]["scaleTargetRef"]["name"] == HOSTILE + "o"
    assert service["spec"]["selector"]["serveplane.io/service"] == HOSTILE + "u"
    pod = deployment["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["image"] == HOSTILE + "triton"
    assert c["imagePullPolicy"] == HOSTILE + "p"
    assert pod["nodeSelector"] == {HOSTILE + "k": HOSTILE + "v"}
    assert pod["tolerations"] == [{"key": HOSTILE, "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["initContainers"][0]["image"] == HOSTILE + "init"
    tf = container(render_deployment(dataclasses.replace(ctx, framework="tfserving"), cfg))
    assert tf["args"][2] == "--model_name=" + HOSTILE + "s"
    assert tf["readinessProbe"]["httpGet"]["path"] == "/v1/models/" + HOSTILE + "s"
    ns = render_namespace(HOSTILE, 1)
    assert ns["metadata"]["name"] == HOSTILE


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(suffix=st.text(min_size=1, max_size=80), service_name=st.text(min_size=1, max_size=40))
def test_arbitrary_text_round_trips(suffix: str, service_name: str) -> None:
    path = "s3://bucket/" + suffix
    ctx = ctx_for(model_path=path, service_name=service_name, framework="torchserve")
    deployment = render_deployment(ctx, CFG)
    benign = render_deployment(ctx_for(model_path="s3://b/x", framework="torchserve"), CFG)
    assert shape(deployment) == shape(benign)
    assert deployment["metadata"]["annotations"]["serveplane.io/model-path"] == path
    assert deployment["spec"]["template"]["spec"]["initContainers"][0]["args"][3] == path
    assert deployment["metadata"]["labels"]["app.kubernetes.io/name"] == service_name
    args = container(deployment)["args"]
    assert args[args.index("--models") + 1] == f"{service_name}={service_name}.mar"


def test_lone_surrogates_rejected() -> None:
    with pytest.raises(ValueError, match="surrogate"):
        render_deployment(ctx_for(model_path="s3://b/\ud800"), CFG)


def test_templates_cannot_interpolate_without_tojson() -> None:
    env = render._ENV
    assert env.from_string("v: {{ x | tojson }}").render(x="a: b") == 'v: "a: b"'
    with pytest.raises(TypeError, match="tojson"):
        env.from_string("v: {{ x }}").render(x="a")
    with pytest.raises(TypeError, match="tojson"):
        env.from_string("v: {{ x | string }}").render(x=1)


# --- plumbing ---------------------------------------------------------------------------


def test_templates_located_and_cached() -> None:
    assert render.TEMPLATE_DIR.name == "k8s_templates"
    assert (render.TEMPLATE_DIR / "deployment.yaml.j2").is_file()
    render_manifests(ctx_for(autoscale=True), CFG)
    assert render._template("deployment.yaml.j2") is render._template("deployment.yaml.j2")
    assert render._ENV.auto_reload is False


def test_renderer_does_not_import_kubernetes() -> None:
    source = (render.TEMPLATE_DIR.parent / "workers" / "kube" / "render.py").read_text()
    assert not re.search(r"^\s*(import|from)\s+kubernetes\b", source, re.MULTILINE)


def test_rendering_returns_fresh_objects() -> None:
    first = render_deployment(CTX, CFG)
    first["metadata"]["labels"]["mutated"] = "yes"
    assert "mutated" not in render_deployment(CTX, CFG)["metadata"]["labels"]
