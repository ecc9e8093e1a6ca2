"""Tests of the fake Kubernetes API server, driven through the real `kubernetes` client."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config, dynamic, watch
from kubernetes.client.exceptions import ApiException

from tests.fake_kube import Behavior, FakeKube

ROOT = Path(__file__).resolve().parents[1]
APPLY = "application/apply-patch+yaml"
NS = "ml"


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeKube]:
    kube = FakeKube().start()
    yield kube
    kube.stop()


@pytest.fixture(scope="module")
def api_client(fake: FakeKube, tmp_path_factory: pytest.TempPathFactory) -> client.ApiClient:
    path = fake.write_kubeconfig(tmp_path_factory.mktemp("kube") / "config")
    return config.new_client_from_config(path)


@pytest.fixture(autouse=True)
def _fresh(fake: FakeKube, api_client: client.ApiClient) -> None:
    fake.reset()
    client.CoreV1Api(api_client).create_namespace({"metadata": {"name": NS}})
    fake.reset_stats()


@pytest.fixture
def core(api_client: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api_client)


@pytest.fixture
def apps(api_client: client.ApiClient) -> client.AppsV1Api:
    return client.AppsV1Api(api_client)


@pytest.fixture
def autoscaling(api_client: client.ApiClient) -> client.AutoscalingV2Api:
    return client.AutoscalingV2Api(api_client)


def deployment(
    name: str,
    replicas: int | None = 1,
    image: str = "repo/model:1",
    pds: int | None = None,
    **labels: str,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "selector": {"matchLabels": {"app": name}},
        "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {
                "containers": [{"name": "srv", "image": image, "ports": [{"containerPort": 8080}]}]
            },
        },
    }
    if replicas is not None:
        spec["replicas"] = replicas
    if pds is not None:
        spec["progressDeadlineSeconds"] = pds
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS, "labels": {"app": name, **labels}},
        "spec": spec,
    }


def apply(apps: client.AppsV1Api, body: dict[str, Any], **kw: Any) -> Any:
    kw.setdefault("field_manager", "serveplane")
    kw.setdefault("force", True)
    return apps.patch_namespaced_deployment(
        body["metadata"]["name"], NS, body, _content_type=APPLY, **kw
    )


def raw(api_client: client.ApiClient, name: str, ns: str = NS) -> dict[str, Any]:
    api = client.AppsV1Api(api_client)
    resp = api.read_namespaced_deployment(name, ns, _preload_content=False)
    return json.loads(resp.data)


def http(
    fake: FakeKube, method: str, path: str, body: Any = None, ctype: str = "application/json"
) -> tuple[int, dict[str, Any]]:
    """A raw HTTP request (bypasses the client's own model validation)."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        fake.url + path, data=data, method=method, headers={"Content-Type": ctype}
    )
    try:
        with urllib.request.urlopen(req) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def status_body(exc: ApiException) -> dict[str, Any]:
    return json.loads(exc.body)


def wait_until(pred: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def pods_of(core: client.CoreV1Api, name: str) -> list[Any]:
    return core.list_namespaced_pod(NS, label_selector=f"app={name}").items


def condition(dep: dict[str, Any], ctype: str) -> dict[str, Any]:
    return next(c for c in dep["status"]["conditions"] if c["type"] == ctype)


# ---- CRUD, selectors, errors -----------------------------------------------------------------


def test_create_get_list_delete_with_selectors(core: client.CoreV1Api) -> None:
    specs = {
        "a": {"tier": "web", "env": "prod"},
        "b": {"tier": "db", "env": "prod"},
        "c": {"tier": "web", "env": "dev"},
        "d": {"other": "x"},
    }
    for name, labels in specs.items():
        core.create_namespaced_config_map(
            NS, {"metadata": {"name": name, "labels": labels}, "data": {"k": name}}
        )
    got = core.read_namespaced_config_map("a", NS)
    assert got.data == {"k": "a"} and got.metadata.uid and got.metadata.creation_timestamp

    def names(sel: str | None = None, fsel: str | None = None) -> list[str]:
        kwargs = {k: v for k, v in (("label_selector", sel), ("field_selector", fsel)) if v}
        return [i.metadata.name for i in core.list_namespaced_config_map(NS, **kwargs).items]

    assert names() == ["a", "b", "c", "d"]
    assert names("tier=web") == ["a", "c"]
    assert names("tier==web,env=prod") == ["a"]
    assert names("tier!=web") == ["b", "d"]
    assert names("env in (dev, prod)") == ["a", "b", "c"]
    assert names("env notin (prod)") == ["c", "d"]
    assert names("tier") == ["a", "b", "c"]
    assert names("!tier") == ["d"]
    assert names("tier in (web,db),env!=dev") == ["a", "b"]
    assert names(fsel="metadata.name=b") == ["b"]
    assert names(fsel="metadata.name!=b") == ["a", "c", "d"]
    with pytest.raises(ApiException) as err:
        names("bad key!")
    assert err.value.status == 400
    core.delete_namespaced_config_map("a", NS)
    assert names() == ["b", "c", "d"]
    with pytest.raises(ApiException) as err:
        core.read_namespaced_config_map("a", NS)
    assert err.value.status == 404


def test_error_status_bodies(
    apps: client.AppsV1Api,
    core: client.CoreV1Api,
    autoscaling: client.AutoscalingV2Api,
    fake: FakeKube,
) -> None:
    with pytest.raises(ApiException) as err:
        apps.read_namespaced_deployment("nope", NS)
    body = status_body(err.value)
    assert err.value.status == 404 and body["kind"] == "Status" and body["status"] == "Failure"
    assert body["reason"] == "NotFound" and body["message"] == 'deployments.apps "nope" not found'
    assert body["details"] == {"name": "nope", "group": "apps", "kind": "deployments"}
    assert body["code"] == 404

    apps.create_namespaced_deployment(NS, deployment("web"))
    with pytest.raises(ApiException) as err:
        apps.create_namespaced_deployment(NS, deployment("web"))
    assert err.value.status == 409 and status_body(err.value)["reason"] == "AlreadyExists"

    elsewhere = deployment("web")
    del elsewhere["metadata"]["namespace"]
    with pytest.raises(ApiException) as err:
        apps.create_namespaced_deployment("missing", elsewhere)
    assert err.value.status == 404
    assert status_body(err.value)["message"] == 'namespaces "missing" not found'

    bad = deployment("Bad_Name")
    with pytest.raises(ApiException) as err:
        apps.create_namespaced_deployment(NS, bad)
    body = status_body(err.value)
    assert err.value.status == 422 and body["reason"] == "Invalid"
    assert body["details"]["kind"] == "Deployment" and body["details"]["group"] == "apps"
    assert body["details"]["causes"][0]["field"] == "metadata.name"
    assert body["message"].startswith('Deployment.apps "Bad_Name" is invalid: metadata.name')

    cases: list[tuple[Callable[[dict[str, Any]], None], str]] = [
        (lambda d: d["metadata"]["labels"].update({"x": "bad value!"}), "metadata.labels"),
        (lambda d: d["metadata"]["labels"].update({"x": "v" * 64}), "metadata.labels"),
        (lambda d: d["spec"].pop("selector"), "spec.selector"),
        (
            lambda d: d["spec"]["template"]["metadata"]["labels"].update({"app": "other"}),
            "spec.template.metadata.labels",
        ),
        (
            lambda d: d["spec"]["template"]["spec"]["containers"][0].pop("image"),
            "spec.template.spec.containers[0].image",
        ),
        (
            lambda d: d["spec"]["template"]["spec"]["containers"][0].pop("name"),
            "spec.template.spec.containers[0].name",
        ),
    ]
    for mutate, field in cases:
        body = deployment("x")
        mutate(body)
        code, status = http(fake, "POST", f"/apis/apps/v1/namespaces/{NS}/deployments", body)
        assert (code, status["reason"]) == (422, "Invalid"), field
        assert field in [c["field"] for c in status["details"]["causes"]], field

    with pytest.raises(ApiException) as err:
        core.create_namespace({"metadata": {"name": "has.dot"}})
    assert err.value.status == 422
    with pytest.raises(ApiException) as err:
        core.create_namespaced_service(
            NS, {"metadata": {"name": "1svc"}, "spec": {"ports": [{"port": 80}]}}
        )
    assert err.value.status == 422
    hpa = {
        "metadata": {"name": "h"},
        "spec": {
            "minReplicas": 3,
            "maxReplicas": 2,
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
        },
    }
    with pytest.raises(ApiException) as err:
        autoscaling.create_namespaced_horizontal_pod_autoscaler(NS, hpa)
    assert err.value.status == 422
    assert status_body(err.value)["details"]["causes"][0]["field"] == "spec.maxReplicas"
    del hpa["spec"]["scaleTargetRef"]
    hpa["spec"]["maxReplicas"] = 4
    code, status = http(
        fake, "POST", f"/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers", hpa
    )
    assert code == 422 and status["details"]["causes"][0]["field"] == "spec.scaleTargetRef.kind"


def test_raw_http_errors(fake: FakeKube) -> None:
    def call(method: str, path: str, body: bytes | None, ctype: str) -> tuple[int, dict[str, Any]]:
        return http(fake, method, path, body, ctype)

    base = f"/apis/apps/v1/namespaces/{NS}/deployments"
    code, body = call("POST", base, b"{not json", "application/json")
    assert (code, body["reason"]) == (400, "BadRequest")
    code, body = call("POST", base + "/x", b"{}", "application/json")
    assert (code, body["reason"]) == (405, "MethodNotAllowed")
    code, _ = call("POST", base, json.dumps(deployment("d")).encode(), "application/json")
    assert code == 201
    code, body = call("PATCH", base + "/d", b"{}", "application/xml")
    assert (code, body["reason"]) == (415, "UnsupportedMediaType")
    code, body = call("PATCH", base + "/d", json.dumps(deployment("d")).encode(), APPLY)
    assert code == 422 and "fieldManager: Required value" in body["message"]
    code, body = call("GET", "/apis/nothing/v1/things", None, "application/json")
    assert code == 404
    code, body = call("PATCH", base + "/d?fieldManager=m", b"spec:\n  replicas: 3\n", APPLY)
    assert code == 400  # apply bodies need apiVersion and kind
    yaml_body = (
        b"apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\nspec:\n  replicas: 4\n"
    )
    code, body = call("PATCH", base + "/d?fieldManager=m&force=true", yaml_body, APPLY)
    assert code == 200 and body["spec"]["replicas"] == 4


def test_resource_version_and_generation(
    apps: client.AppsV1Api, api_client: client.ApiClient
) -> None:
    created = apps.create_namespaced_deployment(NS, deployment("web"))
    assert created.metadata.generation == 1
    rv0 = int(created.metadata.resource_version)
    patched = apps.patch_namespaced_deployment(
        "web",
        NS,
        {"metadata": {"labels": {"extra": "1"}}},
        _content_type="application/merge-patch+json",
    )
    assert int(patched.metadata.resource_version) > rv0 and patched.metadata.generation == 1
    patched = apps.patch_namespaced_deployment(
        "web", NS, {"spec": {"minReadySeconds": 1}}, _content_type="application/merge-patch+json"
    )
    assert patched.metadata.generation == 2
    current = raw(api_client, "web")
    stale = json.loads(json.dumps(current))
    stale["metadata"]["resourceVersion"] = str(rv0)
    with pytest.raises(ApiException) as err:
        apps.replace_namespaced_deployment("web", NS, stale)
    assert err.value.status == 409 and status_body(err.value)["reason"] == "Conflict"
    current["spec"]["replicas"] = 2
    replaced = apps.replace_namespaced_deployment("web", NS, current)
    assert replaced.metadata.generation == 3 and replaced.spec.replicas == 2
    # A no-op apply does not write (resourceVersion unchanged).
    apply(apps, deployment("web2"))
    rv = raw(api_client, "web2")["metadata"]["resourceVersion"]
    again = apply(apps, deployment("web2"))
    assert again.metadata.resource_version == rv and again.metadata.generation == 1


def test_defaults(
    apps: client.AppsV1Api, core: client.CoreV1Api, api_client: client.ApiClient
) -> None:
    apply(apps, deployment("web", replicas=None))
    d = raw(api_client, "web")
    assert d["spec"]["replicas"] == 1 and d["spec"]["progressDeadlineSeconds"] == 600
    assert d["spec"]["revisionHistoryLimit"] == 10
    assert d["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
    }
    svc = core.create_namespaced_service(
        NS,
        {
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
        },
    )
    assert svc.spec.type == "ClusterIP" and svc.spec.cluster_ip.startswith("10.96.")
    assert svc.spec.ports[0].protocol == "TCP" and svc.spec.ports[0].target_port == 80


# ---- server-side apply ---------------------------------------------------------------------


def test_server_side_apply_create_update_and_field_removal(
    apps: client.AppsV1Api, api_client: client.ApiClient, fake: FakeKube
) -> None:
    body = deployment("web", replicas=3, team="a")
    body["spec"]["template"]["spec"]["containers"].append({"name": "side", "image": "side:1"})
    created = apply(apps, body)
    assert created.spec.replicas == 3 and created.metadata.labels["team"] == "a"
    mf = next(m for m in created.metadata.managed_fields if m.manager == "serveplane")
    assert mf.operation == "Apply" and mf.fields_type == "FieldsV1"
    assert "f:replicas" in mf.fields_v1["f:spec"]

    body = deployment("web", replicas=None, image="repo/model:2")
    updated = apply(apps, body)
    d = raw(api_client, "web")
    assert d["spec"]["replicas"] == 1  # owned by serveplane, omitted -> removed -> default
    assert "team" not in d["metadata"]["labels"]
    assert [c["name"] for c in d["spec"]["template"]["spec"]["containers"]] == ["srv"]
    assert d["spec"]["template"]["spec"]["containers"][0]["image"] == "repo/model:2"
    assert updated.metadata.generation == 2
    assert fake.applied_bodies("deployments", NS, "web")[-1] == body

    # Fields set by another manager survive serveplane's applies.
    apps.patch_namespaced_deployment(
        "web",
        NS,
        {"metadata": {"annotations": {"x": "1"}}},
        field_manager="kubectl-edit",
        _content_type="application/merge-patch+json",
    )
    apply(apps, body)
    assert raw(api_client, "web")["metadata"]["annotations"]["x"] == "1"

    # Conflict with another manager's field unless force.
    apps.patch_namespaced_deployment(
        "web",
        NS,
        {"spec": {"minReadySeconds": 5}},
        field_manager="kubectl-edit",
        _content_type="application/merge-patch+json",
    )
    body["spec"]["minReadySeconds"] = 7
    with pytest.raises(ApiException) as err:
        apply(apps, body, force=False)
    assert err.value.status == 409
    assert ".spec.minReadySeconds" in status_body(err.value)["message"]
    assert apply(apps, body).spec.min_ready_seconds == 7


def test_apply_errors(apps: client.AppsV1Api, core: client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as err:
        apps.patch_namespaced_deployment("web", NS, deployment("web"), _content_type=APPLY)
    assert err.value.status == 422 and "fieldManager" in status_body(err.value)["message"]
    body = deployment("web")
    body["metadata"]["namespace"] = "nowhere"
    with pytest.raises(ApiException) as err:
        apps.patch_namespaced_deployment(
            "web", "nowhere", body, field_manager="m", _content_type=APPLY
        )
    assert err.value.status == 404
    assert status_body(err.value)["message"] == 'namespaces "nowhere" not found'
    ns = core.patch_namespace(
        "fresh",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "fresh"}},
        field_manager="serveplane",
        _content_type=APPLY,
    )
    assert ns.status.phase == "Active"


def test_hpa_owns_replicas(
    apps: client.AppsV1Api, autoscaling: client.AutoscalingV2Api, api_client: client.ApiClient
) -> None:
    apply(apps, deployment("web", replicas=1))
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web", "namespace": NS},
        "spec": {
            "minReplicas": 3,
            "maxReplicas": 5,
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
        },
    }
    autoscaling.patch_namespaced_horizontal_pod_autoscaler(
        "web", NS, hpa, _content_type=APPLY, field_manager="serveplane"
    )
    assert raw(api_client, "web")["spec"]["replicas"] == 3
    apply(apps, deployment("web", replicas=None))
    d = raw(api_client, "web")
    assert d["spec"]["replicas"] == 3 and d["status"]["readyReplicas"] == 3
    managers = {(m["manager"], m.get("subresource")) for m in d["metadata"]["managedFields"]}
    assert ("kube-controller-manager", "scale") in managers
    got = autoscaling.read_namespaced_horizontal_pod_autoscaler("web", NS)
    assert got.status.desired_replicas == 3 and got.status.current_replicas == 3
    assert {c.type for c in got.status.conditions} >= {"AbleToScale", "ScalingActive"}
    # While the HPA exists it wins; once deleted, a forced apply sets fixed replicas.
    apply(apps, deployment("web", replicas=2))
    assert raw(api_client, "web")["spec"]["replicas"] == 3
    autoscaling.delete_namespaced_horizontal_pod_autoscaler("web", NS)
    apply(apps, deployment("web", replicas=2))
    assert raw(api_client, "web")["spec"]["replicas"] == 2
    # An HPA that exists before its deployment: the defaulted replicas (1) go up to minReplicas.
    autoscaling.patch_namespaced_horizontal_pod_autoscaler(
        "web2",
        NS,
        {
            **hpa,
            "metadata": {"name": "web2"},
            "spec": {**hpa["spec"], "scaleTargetRef": {"kind": "Deployment", "name": "web2"}},
        },
        _content_type=APPLY,
        field_manager="serveplane",
    )
    missing = autoscaling.read_namespaced_horizontal_pod_autoscaler("web2", NS)
    assert missing.status.conditions[0].reason == "FailedGetScale"
    apply(apps, deployment("web2", replicas=None))
    assert raw(api_client, "web2")["spec"]["replicas"] == 3


def test_status_subresource(apps: client.AppsV1Api, api_client: client.ApiClient) -> None:
    fake_body = deployment("web")
    fake_body["status"] = {"replicas": 99}
    created = apps.create_namespaced_deployment(NS, fake_body)
    assert created.status is None or created.status.replicas != 99
    d = raw(api_client, "web")
    d["status"] = {"observedGeneration": 1, "replicas": 7, "conditions": []}
    d["spec"]["replicas"] = 5
    out = apps.replace_namespaced_deployment_status("web", NS, d)
    assert out.status.replicas == 7 and out.spec.replicas == 1 and out.metadata.generation == 1
    patched = apps.patch_namespaced_deployment_status(
        "web", NS, {"status": {"replicas": 8}}, _content_type="application/merge-patch+json"
    )
    assert patched.status.replicas == 8
    scale = apps.read_namespaced_deployment_scale("web", NS)
    assert scale.spec.replicas == 1 and scale.status.selector == "app=web"
    apps.patch_namespaced_deployment_scale(
        "web", NS, {"spec": {"replicas": 2}}, _content_type="application/merge-patch+json"
    )
    assert raw(api_client, "web")["spec"]["replicas"] == 2


def test_patch_content_types(apps: client.AppsV1Api, api_client: client.ApiClient) -> None:
    body = deployment("web", extra="1")
    body["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "A", "value": "1"}]
    apps.create_namespaced_deployment(NS, body)
    apps.patch_namespaced_deployment(
        "web",
        NS,
        {"metadata": {"labels": {"extra": None}}},
        _content_type="application/merge-patch+json",
    )
    assert "extra" not in raw(api_client, "web")["metadata"]["labels"]
    smp = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {"name": "srv", "env": [{"name": "B", "value": "2"}]},
                        {"name": "side", "image": "side:1"},
                    ]
                }
            }
        }
    }
    apps.patch_namespaced_deployment("web", NS, smp)  # strategic merge by default
    containers = raw(api_client, "web")["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["srv", "side"]
    assert containers[0]["image"] == "repo/model:1"
    assert [e["name"] for e in containers[0]["env"]] == ["A", "B"]
    ops = [
        {"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "x:2"},
        {"op": "remove", "path": "/spec/template/spec/containers/1"},
    ]
    apps.patch_namespaced_deployment("web", NS, ops)
    containers = raw(api_client, "web")["spec"]["template"]["spec"]["containers"]
    assert [(c["name"], c["image"]) for c in containers] == [("srv", "x:2")]
    with pytest.raises(ApiException) as err:
        apps.patch_namespaced_deployment(
            "web", NS, [{"op": "test", "path": "/spec/replicas", "value": 42}]
        )
    assert err.value.status == 422


def test_delete_semantics(apps: client.AppsV1Api, core: client.CoreV1Api, fake: FakeKube) -> None:
    apply(apps, deployment("web", replicas=2))
    assert len(pods_of(core, "web")) == 2
    out = apps.delete_namespaced_deployment(
        "web", NS, body=client.V1DeleteOptions(propagation_policy="Background")
    )
    assert out["kind"] == "Status" and out["status"] == "Success"  # delete returns `object`
    assert out["details"]["name"] == "web" and out["details"]["kind"] == "deployments"
    assert pods_of(core, "web") == [] and fake.list_objects("replicasets", NS) == []
    apply(apps, deployment("keep", replicas=1))
    apps.delete_namespaced_deployment("keep", NS, propagation_policy="Orphan")
    orphans = pods_of(core, "keep")
    assert (len(orphans) == 1 and not orphans[0].metadata.owner_references) or orphans[
        0
    ].metadata.owner_references[0].kind == "ReplicaSet"
    with pytest.raises(ApiException) as err:
        apps.delete_namespaced_deployment("web", NS)
    assert err.value.status == 404
    apply(apps, deployment("gone"))
    core.delete_namespace(NS)
    assert fake.list_objects("deployments", NS) == [] and fake.list_objects("pods", NS) == []
    assert fake.get_object("v1", "namespaces", None, NS) is None


def test_paging_and_cluster_wide_list(apps: client.AppsV1Api, core: client.CoreV1Api) -> None:
    core.create_namespace({"metadata": {"name": "other"}})
    for i in range(5):
        apps.create_namespaced_deployment(NS, deployment(f"d{i}", tier="x"))
    body = deployment("o1", tier="x")
    body["metadata"]["namespace"] = "other"
    apps.create_namespaced_deployment("other", body)
    everywhere = apps.list_deployment_for_all_namespaces(label_selector="tier=x")
    assert sorted(d.metadata.name for d in everywhere.items) == ["d0", "d1", "d2", "d3", "d4", "o1"]
    page = apps.list_namespaced_deployment(NS, limit=2)
    seen = [d.metadata.name for d in page.items]
    while page.metadata._continue:
        page = apps.list_namespaced_deployment(NS, limit=2, _continue=page.metadata._continue)
        seen += [d.metadata.name for d in page.items]
    assert seen == ["d0", "d1", "d2", "d3", "d4"]
    assert len(core.list_pod_for_all_namespaces(label_selector="app=o1").items) == 1


# ---- controller behaviours -----------------------------------------------------------------


def test_ready_with_delay(
    apps: client.AppsV1Api, core: client.CoreV1Api, api_client: client.ApiClient, fake: FakeKube
) -> None:
    fake.add_rule("slow-.*", Behavior("ready", delay=0.4))
    apply(apps, deployment("slow-web", replicas=2))
    d = raw(api_client, "slow-web")
    st = d["status"]
    assert st["observedGeneration"] == 1 and st["updatedReplicas"] == 2
    assert "readyReplicas" not in st and st["unavailableReplicas"] == 2
    assert condition(d, "Progressing")["reason"] == "ReplicaSetUpdated"
    assert condition(d, "Available")["status"] == "False"
    pods = pods_of(core, "slow-web")
    assert len(pods) == 2 and all(p.status.phase == "Running" for p in pods)
    assert all(not p.status.container_statuses[0].ready for p in pods)
    pod = pods[0]
    assert pod.metadata.name.startswith("slow-web-") and len(pod.metadata.name.split("-")[-2]) == 10
    assert pod.metadata.owner_references[0].kind == "ReplicaSet"
    assert "pod-template-hash" in pod.metadata.labels
    wait_until(lambda: raw(api_client, "slow-web")["status"].get("availableReplicas") == 2)
    d = raw(api_client, "slow-web")
    assert condition(d, "Progressing")["reason"] == "NewReplicaSetAvailable"
    assert condition(d, "Available")["reason"] == "MinimumReplicasAvailable"
    assert all(p.status.container_statuses[0].ready for p in pods_of(core, "slow-web"))


def test_default_is_instantly_ready_and_rollout_replaces_pods(
    apps: client.AppsV1Api, core: client.CoreV1Api, api_client: client.ApiClient, fake: FakeKube
) -> None:
    apply(apps, deployment("web", replicas=2))
    d = raw(api_client, "web")
    assert d["status"]["availableReplicas"] == 2 and d["status"]["readyReplicas"] == 2
    assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
    first = {p.metadata.name for p in pods_of(core, "web")}
    apply(apps, deployment("web", replicas=2, image="repo/model:2"))
    d = raw(api_client, "web")
    assert d["metadata"]["generation"] == 2 and d["status"]["observedGeneration"] == 2
    assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    second = {p.metadata.name for p in pods_of(core, "web")}
    assert len(second) == 2 and not first & second
    assert len(fake.list_objects("replicasets", NS)) == 2
    fake.set_replicas(NS, "web", 4)
    d = raw(api_client, "web")
    assert d["spec"]["replicas"] == 4 and d["metadata"]["generation"] == 3
    assert len(pods_of(core, "web")) == 4
    victim = sorted(p.metadata.name for p in pods_of(core, "web"))[0]
    fake.delete_object("pods", NS, victim)
    names = {p.metadata.name for p in pods_of(core, "web")}
    assert len(names) == 4 and victim not in names


def test_min_ready_seconds_delays_availability(
    apps: client.AppsV1Api, api_client: client.ApiClient
) -> None:
    body = deployment("web", replicas=2)
    body["spec"]["minReadySeconds"] = 1
    apply(apps, body)
    st = raw(api_client, "web")["status"]
    assert st["readyReplicas"] == 2 and "availableReplicas" not in st
    wait_until(lambda: raw(api_client, "web")["status"].get("availableReplicas") == 2)
    assert condition(raw(api_client, "web"), "Progressing")["reason"] == "NewReplicaSetAvailable"


def test_never_ready_hits_progress_deadline(
    apps: client.AppsV1Api, core: client.CoreV1Api, api_client: client.ApiClient, fake: FakeKube
) -> None:
    fake.add_rule("web", Behavior("never_ready"), namespace=NS)
    apply(apps, deployment("web", pds=1))
    pod = pods_of(core, "web")[0]
    assert pod.status.phase == "Running" and not pod.status.container_statuses[0].ready
    ready = next(c for c in pod.status.conditions if c.type == "Ready")
    assert ready.status == "False" and ready.reason == "ContainersNotReady"
    assert condition(raw(api_client, "web"), "Progressing")["status"] == "True"
    prog = wait_until(
        lambda: (
            (c := condition(raw(api_client, "web"), "Progressing"))["reason"]
            == "ProgressDeadlineExceeded"
            and c
        )
    )
    assert prog["status"] == "False"
    rs = fake.list_objects("replicasets", NS)[0]["metadata"]["name"]
    assert prog["message"] == f'ReplicaSet "{rs}" has timed out progressing.'


@pytest.mark.parametrize(
    "mode,reasons",
    [
        ("image_pull_backoff", ["ErrImagePull", "ImagePullBackOff"]),
        ("crash_loop", ["CrashLoopBackOff"]),
        ("create_container_config_error", ["CreateContainerConfigError"]),
    ],
)
def test_failing_container_modes(
    mode: str,
    reasons: list[str],
    apps: client.AppsV1Api,
    core: client.CoreV1Api,
    api_client: client.ApiClient,
    fake: FakeKube,
) -> None:
    fake.set_default_behavior(Behavior(mode, delay=0.1))
    apply(apps, deployment("web", pds=1 if mode == "crash_loop" else None))

    def waiting() -> Any:
        cs = pods_of(core, "web")[0].status.container_statuses
        state = cs[0].state.waiting if cs else None
        return state if state is not None and state.reason in reasons else None

    seen = [wait_until(waiting).reason]
    if len(reasons) > 1:
        seen.append(wait_until(lambda: (w := waiting()) and w.reason == reasons[-1] and w).reason)
    assert seen[-1] == reasons[-1]
    cs = pods_of(core, "web")[0].status.container_statuses[0]
    if mode == "crash_loop":
        assert cs.restart_count >= 1 and cs.last_state.terminated.exit_code == 1
        assert "back-off" in cs.state.waiting.message
    if mode == "image_pull_backoff":
        assert cs.state.waiting.message == 'Back-off pulling image "repo/model:1"'
    pod_name = pods_of(core, "web")[0].metadata.name
    if mode == "crash_loop":
        assert "RuntimeError" in core.read_namespaced_pod_log(pod_name, NS)
    else:
        with pytest.raises(ApiException) as err:
            core.read_namespaced_pod_log(pod_name, NS)
        assert (
            err.value.status == 400 and "is waiting to start" in status_body(err.value)["message"]
        )
    d = raw(api_client, "web")
    assert "availableReplicas" not in d["status"]
    if mode == "crash_loop":
        prog = wait_until(
            lambda: condition(raw(api_client, "web"), "Progressing")["status"] == "False"
        )
        assert prog
        assert (
            condition(raw(api_client, "web"), "Progressing")["reason"] == "ProgressDeadlineExceeded"
        )
    events = core.list_namespaced_event(NS).items
    assert any(e.type == "Warning" and e.involved_object.kind == "Pod" for e in events)


def test_unschedulable(apps: client.AppsV1Api, core: client.CoreV1Api, fake: FakeKube) -> None:
    fake.add_rule("gpu-.*", Behavior("unschedulable"))
    apply(apps, deployment("gpu-web"))
    pod = pods_of(core, "gpu-web")[0]
    assert pod.status.phase == "Pending" and pod.spec.node_name is None
    cond = pod.status.conditions[0]
    assert (cond.type, cond.status, cond.reason) == ("PodScheduled", "False", "Unschedulable")
    assert cond.message == "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."


def test_set_behavior_on_running_deployment(
    apps: client.AppsV1Api, core: client.CoreV1Api, api_client: client.ApiClient, fake: FakeKube
) -> None:
    apply(apps, deployment("web"))
    assert raw(api_client, "web")["status"]["availableReplicas"] == 1
    fake.set_behavior(NS, "web", Behavior("crash_loop"))
    d = raw(api_client, "web")
    assert "availableReplicas" not in d["status"]
    assert condition(d, "Available")["status"] == "False"
    assert (
        pods_of(core, "web")[0].status.container_statuses[0].state.waiting.reason
        == "CrashLoopBackOff"
    )
    fake.set_behavior(NS, "web", Behavior("ready"))
    assert raw(api_client, "web")["status"]["availableReplicas"] == 1


# ---- faults, stats, concurrency ------------------------------------------------------------


def test_fault_injection(
    apps: client.AppsV1Api, api_client: client.ApiClient, fake: FakeKube
) -> None:
    fake.set_faults(error_rate=1.0, codes=(500,))
    with pytest.raises(ApiException) as err:
        apply(apps, deployment("web"))
    assert err.value.status == 500 and status_body(err.value)["reason"] == "InternalError"
    assert fake.get_object("apps/v1", "deployments", NS, "web") is None
    fake.set_faults(error_rate=1.0, codes=(429,), retry_after=3)
    with pytest.raises(ApiException) as err:
        apps.create_namespaced_deployment(NS, deployment("web"))
    assert err.value.status == 429 and err.value.headers["Retry-After"] == "3"
    assert status_body(err.value)["reason"] == "TooManyRequests"
    assert fake.get_object("apps/v1", "deployments", NS, "web") is None
    fake.set_faults(error_rate=1.0, codes=(500,), path_regex="/services")
    apply(apps, deployment("web"))  # not matching: goes through
    fake.set_faults(hang_rate=1.0, hang_seconds=0.4)
    with pytest.raises(Exception):  # urllib3 read timeout
        apply(apps, deployment("web", replicas=3), _request_timeout=0.1)
    time.sleep(0.5)
    fake.set_faults()
    assert fake.get_object("apps/v1", "deployments", NS, "web")["spec"]["replicas"] == 1
    assert fake.stats()["faults_injected"] == 3
    fake.set_faults(hang_rate=1.0, hang_seconds=0.1)
    assert apply(apps, deployment("web", replicas=2)).spec.replicas == 2


def test_stats_counting(apps: client.AppsV1Api, core: client.CoreV1Api, fake: FakeKube) -> None:
    fake.reset_stats()
    apply(apps, deployment("web"))
    apps.read_namespaced_deployment("web", NS)
    apps.list_namespaced_deployment(NS)
    core.list_namespaced_pod(NS)
    apps.replace_namespaced_deployment("web", NS, apps.read_namespaced_deployment("web", NS))
    apps.delete_namespaced_deployment("web", NS)
    urllib.request.urlopen(fake.url + "/_fake/stats").read()
    s = fake.stats()
    assert s["by_verb"] == {
        "get": 2,
        "list": 2,
        "watch": 0,
        "create": 0,
        "update": 1,
        "patch": 1,
        "delete": 1,
        "deletecollection": 0,
    }
    assert s["total"] == 7 and s["by_verb_resource"]["patch deployments"] == 1
    assert s["by_verb_resource"]["list pods"] == 1
    fake.reset_stats()
    assert fake.stats()["total"] == 0


def test_concurrent_clients(api_client: client.ApiClient, fake: FakeKube) -> None:
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        api = client.AppsV1Api(api_client)
        try:
            for j in range(6):
                apply(api, deployment(f"w{i}-{j}", replicas=1))
                api.list_namespaced_deployment(NS, label_selector=f"app=w{i}-{j}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(fake.list_objects("deployments", NS)) == 36
    assert fake.concurrent_violations == 0


def test_latency_exposes_concurrent_writers(apps: client.AppsV1Api, fake: FakeKube) -> None:
    apply(apps, deployment("web"))
    fake.set_latency(0.2)
    apply(apps, deployment("web", replicas=2))
    apply(apps, deployment("web", replicas=3))
    assert fake.concurrent_violations == 0
    threads = [
        threading.Thread(target=apply, args=(apps, deployment("web", replicas=r))) for r in (4, 5)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert fake.concurrent_violations == 1
    assert fake.stats()["concurrent_violations"] == 1


# ---- discovery, watch, standalone ----------------------------------------------------------


def test_dynamic_client_discovery_and_apply(api_client: client.ApiClient, tmp_path: Path) -> None:
    dyn = dynamic.DynamicClient(api_client, cache_file=str(tmp_path / "discovery.json"))
    deployments = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    hpas = dyn.resources.get(api_version="autoscaling/v2", kind="HorizontalPodAutoscaler")
    assert deployments.namespaced and hpas.name == "horizontalpodautoscalers"
    out = dyn.server_side_apply(
        deployments,
        body=deployment("dyn"),
        namespace=NS,
        field_manager="serveplane",
        force_conflicts=True,
    )
    assert out.metadata.name == "dyn" and out.spec.replicas == 1
    got = dyn.get(deployments, name="dyn", namespace=NS)
    assert got.status.availableReplicas == 1
    ns_res = dyn.resources.get(api_version="v1", kind="Namespace")
    assert NS in [n.metadata.name for n in dyn.get(ns_res).items]
    assert dyn.version["kubernetes"]["major"] == "1"


def test_watch_streams_events(core: client.CoreV1Api) -> None:
    core.create_namespaced_config_map(NS, {"metadata": {"name": "before"}})
    events: list[tuple[str, str]] = []

    def run() -> None:
        w = watch.Watch()
        for ev in w.stream(core.list_namespaced_config_map, NS, timeout_seconds=5):
            events.append((ev["type"], ev["object"].metadata.name))
            if ev["type"] == "DELETED":
                w.stop()

    t = threading.Thread(target=run)
    t.start()
    time.sleep(0.2)
    core.create_namespaced_config_map(NS, {"metadata": {"name": "cm"}, "data": {"a": "1"}})
    core.patch_namespaced_config_map("cm", NS, {"data": {"a": "2"}})
    core.delete_namespaced_config_map("cm", NS)
    t.join(timeout=5)
    assert events == [("ADDED", "before"), ("ADDED", "cm"), ("MODIFIED", "cm"), ("DELETED", "cm")]


def test_standalone_mode(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kc.yaml"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.fake_kube",
            "--port",
            "0",
            "--kubeconfig",
            str(kubeconfig),
            "--ready-delay",
            "120",
        ],
        stdout=subprocess.PIPE,
        cwd=ROOT,
        env=env,
    )
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        assert info["kubeconfig"] == str(kubeconfig) and info["url"].startswith("http://")
        api = client.CoreV1Api(config.new_client_from_config(str(kubeconfig)))
        assert "default" in [n.metadata.name for n in api.list_namespace().items]
        req = urllib.request.Request(
            info["url"] + "/_fake/rules",
            method="POST",
            data=json.dumps({"name_regex": "x.*", "behavior": {"mode": "crash_loop"}}).encode(),
        )
        assert json.loads(urllib.request.urlopen(req).read()) == {"ok": True}
        stats = json.loads(urllib.request.urlopen(info["url"] + "/_fake/stats").read())
        assert stats["by_verb"]["list"] == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_control_api(fake: FakeKube, apps: client.AppsV1Api, api_client: client.ApiClient) -> None:
    def post(path: str, body: Any = None, method: str = "POST") -> tuple[int, Any]:
        return http(fake, method, "/_fake/" + path, body)

    assert post("default-behavior", {"mode": "never_ready"}) == (200, {"ok": True})
    apply(apps, deployment("web"))
    assert "readyReplicas" not in raw(api_client, "web")["status"]
    assert post(f"deployments/{NS}/web/behavior", {"behavior": {"mode": "ready"}})[0] == 200
    assert raw(api_client, "web")["status"]["readyReplicas"] == 1
    assert post(f"deployments/{NS}/web/replicas", {"replicas": 2})[0] == 200
    assert raw(api_client, "web")["spec"]["replicas"] == 2
    assert post("rules", {"name_regex": "bad-.*", "behavior": {"mode": "crash_loop"}})[0] == 200
    assert (
        post("faults", {"error_rate": 1.0, "codes": [500], "path_regex": "/configmaps"})[0] == 200
    )
    assert http(fake, "GET", f"/api/v1/namespaces/{NS}/configmaps")[0] == 500
    assert post("faults", {})[0] == 200
    code, stats = http(fake, "GET", "/_fake/stats")
    assert code == 200 and stats["faults_injected"] == 1
    assert post(f"objects/deployments/{NS}/web", method="DELETE")[0] == 200
    assert fake.get_object("apps/v1", "deployments", NS, "web") is None
    assert post("rules", method="DELETE")[0] == 200 and post("stats/reset")[0] == 200
    assert post("reset")[0] == 200
    assert fake.get_object("v1", "namespaces", None, NS) is None
    assert post("nothing")[0] == 404
