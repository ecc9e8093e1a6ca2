"""Hostile input through the real API: refused with a 422 naming the field, or kept inert.

Names and model paths become parts of Kubernetes objects, so hostile ones are refused.
Descriptions are free text: stored and returned exactly, and never written to a manifest.
For what is accepted, the manifests the worker would apply are rendered from the stored rows
(the worker's own `version_spec` + `KubernetesRuntime.context` + `render_manifests`) and
validated strictly; one deploy also goes through the real worker onto the fake cluster.
Hostile ids, filters and cursors answer 404/422 in the error shape, never a 5xx.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from sqlalchemy import select

from db.domain import new_service_uuid, object_name
from db.engine import session_scope
from db.models import InferenceService, ServiceVersion
from db.repositories import services as services_repo
from db.settings import get_settings
from tests.conftest import create_customer, unique_name, wait_job
from tests.workers.test_render import assert_valid_labels, validate

HOSTILE: dict[str, str] = {
    "dot-dot": "../../etc/passwd",
    "quotes": "it's a \"quoted\" 'value'",
    "jinja-expression": "{{ 7*7 }}",
    "jinja-statement": "{% for x in range(3) %}x{% endfor %}",
    "shell-expansion": "${HOME} $(id)",
    "backticks": "`id`",
    "newline": "line one\nkind: Secret",
    "yaml-key-and-comment": "key: value # comment",
    "yaml-document": "---\napiVersion: v1\nkind: Secret",
    "html": "<script>alert(1)</script>",
    "sql": "'; DROP TABLE inference_services; --",
    "homoglyphs": "r\u0435sn\u0435t50",  # CYRILLIC SMALL LETTER IE for "e"
    "rtl-override": "model\u202egnp.exe",
    "zero-width": "res\u200bnet",
    "emoji": "resnet \U0001f680\U0001f525",
    "tab": "a\tb",
    "very-long": "x" * 4096,
}
CONTROL_CHARS: dict[str, str] = {
    "nul": "a\x00b",
    "carriage-return": "a\rb",
    "escape-sequence": "a\x1b[31mred",
    "bell": "\x07",
}
NOT_NAMES = {
    **HOSTILE,
    **CONTROL_CHARS,
    "uppercase": "ResNet50",
    "underscore": "resnet_50",
    "64-chars": "a" * 64,
    "starts-with-digit": "1resnet",
    "ends-with-dash": "resnet-",
    "dns-1123-dots": "resnet.v1",
}
BAD_MODEL_PATHS = {
    **{f"models/{k}": "/models/" + v for k, v in {**HOSTILE, **CONTROL_CHARS}.items()},
    **{f"raw/{k}": v for k, v in HOSTILE.items()},
    "pvc-hostile-claim": "pvc://{{claim}}/m",
    "pvc-uppercase-claim": "pvc://Bad_Claim/m",
    "pvc-colon-claim": "pvc://a:b/m",
    "pvc-traversal": "pvc://claim/../../etc",
    "pvc-no-claim": "pvc:///m",
    "s3-bad-bucket": "s3://Bad_Bucket/m",
    "s3-short-bucket": "s3://b/m",
    "s3-traversal": "s3://bucket/../x",
    "file-url": "file:///etc/passwd",
    "http-url": "http://evil.example/model",
    "relative": "models/m",
    "too-long": "/" + "m" * 512,
}
# Odd but harmless model paths: accepted, written verbatim (escaped) to one annotation only.
ODD_PATHS = {
    "percent-encoded-dots": "/models/%2e%2e/%2e%2e/etc",
    "punctuation": "/models/a:b@c,d=e+f~g",
    "pvc": "pvc://team-models/resnet50/v1",
    "s3": "s3://ml-models.eu/resnet50",
}
BASE = {"model_path": "/models/m", "framework": "onnx"}


def create(client: Any, headers: dict[str, str], **body: Any) -> Any:
    return client.post(
        "/api/inference/services", json={"name": unique_name(), **BASE, **body}, headers=headers
    )


def refused_field(response: Any) -> str:
    """The field a 422 in the one error shape names."""
    assert response.status_code == 422, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == "validation_error", body
    return str(body["error"]["details"][0]["field"])


def strings_in(value: Any) -> list[str]:
    """Every string in a JSON-like value, keys included."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [*value, *(s for v in value.values() for s in strings_in(v))]
    if isinstance(value, list):
        return [s for v in value for s in strings_in(v)]
    return []


# --- refused: names and model paths ---------------------------------------------------------


@pytest.mark.parametrize("value", NOT_NAMES.values(), ids=NOT_NAMES.keys())
def test_hostile_names_are_refused_naming_the_field(client, customer, value):
    assert refused_field(create(client, customer["headers"], name=value)) == "name"
    # Names cannot be changed later either.
    assert client.get("/api/inference/services", headers=customer["headers"]).json()["items"] == []


@pytest.mark.parametrize("value", BAD_MODEL_PATHS.values(), ids=BAD_MODEL_PATHS.keys())
def test_hostile_model_paths_are_refused_naming_the_field(client, customer, value):
    headers = customer["headers"]
    assert refused_field(create(client, headers, model_path=value)) == "model_path"
    new_version = client.post(
        "/api/inference/services/svc-000000000000/versions",
        json={"model_path": value},
        headers=headers,
    )
    assert refused_field(new_version) == "model_path"
    assert client.get("/api/jobs", headers=headers).json()["items"] == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"description": "x" * 4097}, "description"),
        ({"framework": "onnx\x00"}, "framework"),
        ({"framework": "{{ 7*7 }}"}, "framework"),
        ({"model_format": "onnx; rm -rf /"}, "model_format"),
        ({"callback_url": "http://127.0.0.1:9/\x00"}, "callback_url"),
        ({"callback_url": "javascript:alert(1)"}, "callback_url"),
        ({"callback_url": "http://169.254.169.254/latest/meta-data/"}, "callback_url"),
        ({"workspace_id": 2**63}, "workspace_id"),
        ({"replicas": 10**30}, "replicas"),
        ({"{{ 7*7 }}": 1}, "{{ 7*7 }}"),
    ],
)
def test_other_hostile_fields_are_refused_naming_the_field(client, customer, body, field):
    assert refused_field(create(client, customer["headers"], **body)) == field


@pytest.mark.parametrize("value", CONTROL_CHARS.values(), ids=CONTROL_CHARS.keys())
def test_control_characters_in_descriptions_are_refused(client, customer, value):
    assert refused_field(create(client, customer["headers"], description=value)) == "description"


def test_unparseable_bodies_answer_in_the_error_shape(client, customer):
    headers = {**customer["headers"], "content-type": "application/json"}
    lone_surrogate = (
        b'{"name": "ok-name", "model_path": "/m", "framework": "onnx", "description": "\\ud800"}'
    )
    deep_list = b"[" * 100_000 + b"]" * 100_000  # deeper than any JSON parser recurses
    deep_object = b'{"a":' * 50_000 + b"1" + b"}" * 50_000
    huge_number = b'{"replicas": ' + b"9" * 5000 + b"}"
    for raw in (
        b'{"name": "\xff\xfe"}',
        lone_surrogate,
        b"{{ 7*7 }}",
        b"\x00",
        deep_list,
        deep_object,
        huge_number,
        b'{"replicas": NaN}',
    ):
        response = client.post("/api/inference/services", content=raw, headers=headers)
        assert response.status_code in (400, 422), (raw, response.text)
        assert set(response.json()["error"]) == {"code", "message", "details"}


# --- accepted: descriptions are free text, stored exactly -----------------------------------


def quiet_service(customer: dict[str, Any]) -> str:
    """A failed service with no job (nothing runs for it): PATCH applies at once."""
    with session_scope() as session:
        service = services_repo.add_service(
            session,
            uuid=new_service_uuid(),
            customer_id=customer["customer_id"],
            name=unique_name("quiet"),
            description="plain",
            model_path="/models/m",
            framework="onnxruntime",
            model_format="onnx",
            status="failed",
        )
        services_repo.add_version(session, service)
        return service.uuid


@pytest.mark.parametrize("value", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_descriptions_are_stored_and_returned_exactly(client, customer, value):
    headers = customer["headers"]
    created = create(client, headers, description=value)
    assert created.status_code == 202, created.text
    sid = created.json()["service_id"]
    assert created.json()["service"]["description"] == value
    got = client.get(f"/api/inference/services/{sid}", headers=headers).json()
    assert got["description"] == value
    listed = client.get("/api/inference/services", headers=headers).json()["items"]
    assert [s["description"] for s in listed if s["service_id"] == sid] == [value]
    with session_scope() as session:
        stored = session.scalar(select(InferenceService).where(InferenceService.uuid == sid))
        assert stored is not None and stored.description == value
    # PATCH takes the same text (a description-only change needs no job).
    quiet = quiet_service(customer)
    patched = client.patch(
        f"/api/inference/services/{quiet}", json={"description": value}, headers=headers
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["description"] == value
    got = client.get(f"/api/inference/services/{quiet}", headers=headers).json()
    assert got["description"] == value


# --- accepted input renders valid manifests that carry none of it ---------------------------


def rendered_manifests(service_uuid: str) -> list[dict[str, Any]]:
    """What the worker would apply for the service's first version, from the stored rows."""
    from workers.jobs.specs import version_spec
    from workers.kube.render import render_manifests, render_namespace
    from workers.runtime.kubernetes import KubernetesRuntime

    with session_scope() as session:
        service = session.scalar(
            select(InferenceService).where(InferenceService.uuid == service_uuid)
        )
        assert service is not None
        version = session.scalar(
            select(ServiceVersion).where(
                ServiceVersion.service_id == service.id, ServiceVersion.number == 1
            )
        )
        assert version is not None
        spec = version_spec(service, version)
    runtime = KubernetesRuntime(get_settings())
    ctx = runtime.context(spec)
    return [
        render_namespace(ctx.namespace, spec.customer_id),
        *render_manifests(ctx, runtime.render_config),
    ]


DNS1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")


def check_manifests(
    manifests: list[dict[str, Any]], *, forbidden: list[str], model_path: str
) -> None:
    """Strictly valid, names and labels valid, no forbidden text, the path only where meant."""
    assert [m["kind"] for m in manifests][:3] == ["Namespace", "Deployment", "Service"]
    for manifest in manifests:
        validate(manifest)
        meta = manifest["metadata"]
        assert len(meta["name"]) <= 63 and DNS1035.fullmatch(meta["name"]), meta["name"]
        assert_valid_labels(meta.get("labels", {}))
        if manifest["kind"] == "Deployment":
            assert meta["annotations"] == {"serveplane.io/model-path": model_path}
            pod = manifest["spec"]["template"]["metadata"]
            assert_valid_labels(pod["labels"])
            assert not pod.get("annotations")
        else:
            assert not meta.get("annotations")
        for text in strings_in(manifest):
            for bad in forbidden:
                assert bad not in text, (manifest["kind"], bad, text)


@pytest.mark.parametrize("value", HOSTILE.values(), ids=HOSTILE.keys())
def test_descriptions_never_reach_a_manifest(client, customer, fake_kube, value):
    created = create(client, customer["headers"], description=value)
    assert created.status_code == 202, created.text
    manifests = rendered_manifests(created.json()["service_id"])
    check_manifests(manifests, forbidden=[value], model_path=BASE["model_path"])
    # The whole rendered text holds none of it either (escaping could hide it from strings).
    assert json.dumps(value)[1:-1] not in json.dumps(manifests)


@pytest.mark.parametrize("path", ODD_PATHS.values(), ids=ODD_PATHS.keys())
def test_odd_model_paths_stay_in_their_annotation(client, customer, fake_kube, path):
    created = create(client, customer["headers"], model_path=path)
    assert created.status_code == 202, created.text
    manifests = rendered_manifests(created.json()["service_id"])
    check_manifests(manifests, forbidden=[], model_path=path)
    for manifest in manifests:
        meta = manifest["metadata"]
        for text in [meta["name"], *meta.get("labels", {}).values()]:
            assert path not in text and "%" not in text and ":" not in text


# --- object names -------------------------------------------------------------------------


def test_object_names_are_short_valid_and_distinct():
    a, b = "a" + "b" * 61 + "c", "a" + "b" * 61 + "d"  # 63 chars, same 62-char prefix
    for version in (1, 9, 12, 123456, 2**31 - 1):
        names = {object_name(n, version) for n in (a, b)}
        assert len(names) == 2, names  # the hash keeps long names apart
        for name in names:
            assert len(name) <= 63 and DNS1035.fullmatch(name), name
            assert name.endswith(f"-v{version}")
        assert object_name(a, version) == object_name(a, version)  # stable across calls
        assert re.search(r"-[0-9a-f]{8}-v", object_name(a, version))
    assert object_name("resnet50", 3) == "resnet50-v3"  # short names are kept as they are


def test_a_63_character_name_renders_63_character_objects(client, customer, fake_kube):
    name = "m" + "x" * 61 + "1"
    created = create(client, customer["headers"], name=name)
    assert created.status_code == 202, created.text
    manifests = rendered_manifests(created.json()["service_id"])
    check_manifests(manifests, forbidden=[], model_path=BASE["model_path"])
    deployment = manifests[1]
    assert deployment["metadata"]["name"] == object_name(name, 1) != f"{name}-v1"
    assert deployment["metadata"]["labels"]["app.kubernetes.io/name"] == name
    assert refused_field(create(client, customer["headers"], name=name + "x")) == "name"


# --- one hostile deploy through the real worker ---------------------------------------------


@pytest.mark.usefixtures("worker")
def test_hostile_deploy_through_the_worker_leaves_nothing_hostile_in_the_cluster(
    client, customer, fake_kube
):
    name = "h" + "0123456789" * 6 + "z"  # 62 chars: the object names need the hash
    description = "\n".join(v for k, v in HOSTILE.items() if k != "very-long")
    path = ODD_PATHS["percent-encoded-dots"]
    created = create(
        client, customer["headers"], name=name, description=description, model_path=path
    )
    assert created.status_code == 202, created.text
    body = created.json()
    job = wait_job(client, customer["headers"], body["job_id"])
    assert job["status"] == "succeeded", job
    got = client.get(f"/api/inference/services/{body['service_id']}", headers=customer["headers"])
    assert got.json()["description"] == description and got.json()["status"] == "running"

    namespace = f"{get_settings().namespace_prefix}customer-{customer['customer_id']}"
    obj = object_name(name, 1)
    sent = [
        fake_kube.applied_bodies(plural, namespace, obj)[-1]
        for plural in ("deployments", "services", "horizontalpodautoscalers")
    ]
    check_manifests(
        [fake_kube.applied_bodies("namespaces", None, namespace)[-1], *sent],
        forbidden=[*(v for k, v in HOSTILE.items() if k not in ("very-long", "tab")), "\t"],
        model_path=path,
    )
    stored = [
        fake_kube.get_object("apps/v1", "deployments", namespace, obj),
        fake_kube.get_object("v1", "services", namespace, obj),
    ]
    for item in stored:
        assert item is not None
        assert all(description not in s for s in strings_in(item))


# --- hostile ids, filters and cursors -------------------------------------------------------

HOSTILE_IDS = {
    "nul": "svc-%00",
    "nul-only": "%00",
    "emoji": "svc-%F0%9F%9A%80",
    "dot-dot": "..%2F..%2Fetc",
    "sql": "svc-1'%20OR%20'1'%3D'1",
    "jinja": "%7B%7B7*7%7D%7D",
    "very-long": "s" * 5000,
}


@pytest.mark.parametrize("raw_id", HOSTILE_IDS.values(), ids=HOSTILE_IDS.keys())
def test_hostile_ids_in_paths_never_reach_the_database(client, customer, raw_id):
    admin = create_customer("hostile-admin", admin=True)
    for method, path, who in [
        ("GET", "/api/inference/services/{}", customer),
        ("PATCH", "/api/inference/services/{}", customer),
        ("DELETE", "/api/inference/services/{}", customer),
        ("GET", "/api/inference/services/{}/events", customer),
        ("POST", "/api/inference/services/{}/api-key/rotate", customer),
        ("GET", "/api/inference/services/{}/versions", customer),
        ("POST", "/api/inference/services/{}/rollback", customer),
        ("GET", "/api/jobs/{}", customer),
        ("GET", "/api/webhooks/{}", customer),
        ("DELETE", "/api/webhooks/{}", customer),
        ("POST", "/api/webhooks/{}/test", customer),
        ("GET", "/api/webhooks/{}/deliveries", customer),
        ("GET", "/api/admin/jobs/{}", admin),
        ("POST", "/api/admin/jobs/{}/retry", admin),
        ("POST", "/api/admin/jobs/{}/cancel", admin),
        ("POST", "/api/admin/webhook-deliveries/{}/redeliver", admin),
    ]:
        kwargs = {"json": {}} if method in ("PATCH", "POST") else {}
        response = client.request(method, path.format(raw_id), headers=who["headers"], **kwargs)
        assert response.status_code in (404, 422), (method, path, response.text)
        assert set(response.json()["error"]) == {"code", "message", "details"}


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("/api/jobs?service_id=%00", "service_id"),
        ("/api/jobs?service_id=svc-%F0%9F%9A%80", "service_id"),
        ("/api/webhooks/deliveries?job_id=%00", "job_id"),
        ("/api/inference/services?cursor=%00", "cursor"),
        ("/api/inference/services?cursor=%7B%7B7*7%7D%7D", "cursor"),
        # Well-formed cursors past the largest BIGINT id ("id:9223372036854775808") or below 0.
        ("/api/inference/services?cursor=aWQ6OTIyMzM3MjAzNjg1NDc3NTgwOA", "cursor"),
        ("/api/jobs?cursor=aWQ6LTE", "cursor"),
        ("/api/jobs?cursor=aWQ6OTIyMzM3MjAzNjg1NDc3NTgwNw", None),  # "id:…807": the last id
        ("/api/inference/services?workspace_id=9223372036854775808", "workspace_id"),
        ("/api/inference/services?status=%7B%7B7*7%7D%7D", "status"),
    ],
)
def test_hostile_filters_and_cursors_are_refused_naming_the_field(client, customer, url, field):
    response = client.get(url, headers=customer["headers"])
    if field is None:
        assert response.status_code == 200, response.text
    else:
        assert refused_field(response) == field


@pytest.mark.parametrize(
    ("method", "url", "body", "field"),
    [
        ("GET", "/api/admin/jobs?customer_id=100000000000000000000", None, "customer_id"),
        (
            "GET",
            "/api/admin/webhook-deliveries?customer_id=9223372036854775808",
            None,
            "customer_id",
        ),
        ("GET", "/api/admin/jobs?cursor=%00", None, "cursor"),
        ("POST", "/api/admin/jobs/retry", {"job_ids": ["job-\x00"]}, "job_ids.0"),
        ("POST", "/api/admin/jobs/retry", {"customer_id": 2**64}, "customer_id"),
    ],
)
def test_hostile_admin_filters_are_refused_naming_the_field(client, method, url, body, field):
    admin = create_customer("hostile-admin", admin=True)
    kwargs = {"json": body} if body is not None else {}
    response = client.request(method, url, headers=admin["headers"], **kwargs)
    assert refused_field(response) == field


def test_admin_page_filters_and_ids_never_fail(client):
    admin = create_customer("hostile-admin", admin=True)
    cookie = {"Cookie": f"sp_admin={admin['token']}"}
    for query in (
        "customer_id=%C2%B2",
        "customer_id=99999999999999999999999",
        "customer_id=%00",
        "before=%00",
        "status=%7B%7B7*7%7D%7D",
        "kind=%3Cscript%3E",
    ):
        response = client.get(f"/admin?{query}", headers=cookie)
        assert response.status_code == 200, (query, response.text[:300])
        assert "<script>" not in response.text
    response = client.get("/admin/jobs/job-%00", headers=cookie)
    assert response.status_code in (404, 422), response.text[:300]


@pytest.mark.parametrize("raw_id", ["%00", "svc-%00", "s" * 5000, "%7B%7B7*7%7D%7D"])
def test_hostile_gateway_ids_are_not_found(client, raw_id):
    response = client.post(
        f"/inference/{raw_id}/v2/models/m/infer",
        json={"inputs": []},
        headers={"X-API-Key": "spk_x"},
    )
    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] == "service_not_found"
