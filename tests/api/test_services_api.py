"""The services API without a worker: validation, auth, tenancy, listing, conflicts."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import create_customer, unique_name

BASE = {"model_path": "/models/resnet50", "framework": "torchserve"}


def post(client: Any, headers: dict[str, str], **body: Any) -> Any:
    return client.post("/api/inference/services", json={**BASE, **body}, headers=headers)


def error_field(response: Any) -> str:
    body = response.json()
    assert set(body) == {"error"}, body
    assert body["error"]["code"] == "validation_error"
    return body["error"]["details"][0]["field"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "Bad_Name"}, "name"),
        ({"name": "9starts-with-digit"}, "name"),
        ({"name": "ends-with-dash-"}, "name"),
        ({"name": "a" * 64}, "name"),
        ({"name": ""}, "name"),
        ({"framework": "caffe"}, "framework"),
        ({"framework": "torchserve", "model_format": "onnx"}, "model_format"),
        ({"model_format": "pickle"}, "model_format"),
        ({"model_path": "relative/path"}, "model_path"),
        ({"model_path": "/models/../etc/passwd"}, "model_path"),
        ({"model_path": "/models/x\ny"}, "model_path"),
        ({"model_path": "/models/{{ evil }}"}, "model_path"),
        ({"model_path": "/models/'quoted'"}, "model_path"),
        ({"model_path": "http://example/model"}, "model_path"),
        ({"replicas": 0}, "replicas"),
        ({"replicas": 5, "max_replicas": 3}, "replicas"),
        ({"min_replicas": 4, "max_replicas": 2}, "min_replicas"),
        ({"max_replicas": 1000}, "max_replicas"),
        ({"cpu_cores": 0}, "cpu_cores"),
        ({"cpu_cores": 65}, "cpu_cores"),
        ({"memory_gb": -1}, "memory_gb"),
        ({"gpu_count": 9}, "gpu_count"),
        ({"unknown_field": 1}, "unknown_field"),
        ({"workspace_id": 999999}, "workspace_id"),
    ],
)
def test_validation_names_the_field(client, customer, body, field):
    response = post(client, customer["headers"], **{"name": unique_name(), **body})
    assert response.status_code == 422, response.text
    assert error_field(response) == field


def test_invalid_input_changes_nothing(client, customer):
    post(client, customer["headers"], name="Bad_Name")
    listed = client.get("/api/inference/services", headers=customer["headers"]).json()
    assert listed["items"] == []
    assert client.get("/api/jobs", headers=customer["headers"]).json()["items"] == []


@pytest.mark.parametrize(
    ("alias", "canonical"),
    [("tensorflow-serving", "tfserving"), ("onnx", "onnxruntime"), ("PyTorch", "torchserve"),
     ("triton", "triton")],
)
def test_framework_aliases(client, customer, alias, canonical):
    response = post(client, customer["headers"], name=unique_name(), framework=alias)
    assert response.status_code == 202, response.text
    assert response.json()["service"]["framework"] == canonical


def test_duplicate_live_name_conflicts(client, customer):
    name = unique_name()
    assert post(client, customer["headers"], name=name).status_code == 202
    response = post(client, customer["headers"], name=name)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "name_taken"
    # Another customer may use the same name.
    other = create_customer("other")
    assert post(client, other["headers"], name=name).status_code == 202


def test_auth_required(client):
    assert client.get("/api/inference/services").status_code == 401
    response = client.get("/api/inference/services", headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert post(client, {"Authorization": "Basic abc"}, name=unique_name()).status_code == 401


def test_other_customers_resources_are_not_found(client, customer):
    created = post(client, customer["headers"], name=unique_name()).json()
    intruder = create_customer("intruder")["headers"]
    sid, jid = created["service_id"], created["job_id"]
    assert client.get(f"/api/inference/services/{sid}", headers=intruder).status_code == 404
    assert client.get(f"/api/inference/services/{sid}/events", headers=intruder).status_code == 404
    assert client.patch(f"/api/inference/services/{sid}", json={"replicas": 2},
                        headers=intruder).status_code == 404
    assert client.delete(f"/api/inference/services/{sid}", headers=intruder).status_code == 404
    assert client.post(f"/api/inference/services/{sid}/api-key/rotate",
                       headers=intruder).status_code == 404
    assert client.get(f"/api/jobs/{jid}", headers=intruder).status_code == 404
    assert client.get(f"/api/jobs?service_id={sid}", headers=intruder).json()["items"] == []
    assert client.get("/api/inference/services", headers=intruder).json()["items"] == []


def test_one_active_job_per_service(client, customer):
    created = post(client, customer["headers"], name=unique_name()).json()
    response = client.patch(f"/api/inference/services/{created['service_id']}",
                            json={"replicas": 3}, headers=customer["headers"])
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "job_in_progress"
    assert error["details"]["active_job_id"] == created["job_id"]


def test_delete_supersedes_a_queued_job(client, customer):
    created = post(client, customer["headers"], name=unique_name()).json()
    response = client.delete(f"/api/inference/services/{created['service_id']}",
                             headers=customer["headers"])
    assert response.status_code == 202
    first = client.get(f"/api/jobs/{created['job_id']}", headers=customer["headers"]).json()
    assert first["status"] in ("cancelled", "running", "succeeded")
    service = client.get(f"/api/inference/services/{created['service_id']}",
                         headers=customer["headers"]).json()
    assert service["status"] in ("deleting", "deleted")


def test_list_filters_and_cursor_pagination(client, customer):
    headers = customer["headers"]
    ids = [post(client, headers, name=unique_name()).json()["service_id"] for _ in range(5)]
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get("/api/inference/services", params=params, headers=headers).json()
        seen += [s["service_id"] for s in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == ids
    pending = client.get("/api/inference/services", params={"status": "pending"},
                         headers=headers).json()["items"]
    deleted = client.get("/api/inference/services", params={"status": "deleted"},
                         headers=headers).json()["items"]
    assert len(pending) + len(deleted) <= 5 and deleted == []
    bad = client.get("/api/inference/services", params={"status": "bogus"}, headers=headers)
    assert bad.status_code == 422 and error_field(bad) == "status"
    jobs = client.get("/api/jobs", params={"service_id": ids[0]}, headers=headers).json()["items"]
    assert len(jobs) == 1 and jobs[0]["service_id"] == ids[0] and jobs[0]["kind"] == "deploy"
    bad_cursor = client.get("/api/jobs", params={"cursor": "!!"}, headers=headers)
    assert bad_cursor.status_code == 422 and error_field(bad_cursor) == "cursor"


def test_workspace_filter(client, customer):
    from db.engine import session_scope
    from db.repositories.customers import create_workspace

    with session_scope() as session:
        workspace_id = create_workspace(session, customer["customer_id"], "research").id
    headers = customer["headers"]
    inside = post(client, headers, name=unique_name(), workspace_id=workspace_id).json()
    post(client, headers, name=unique_name())
    items = client.get("/api/inference/services", params={"workspace_id": workspace_id},
                       headers=headers).json()["items"]
    assert [s["service_id"] for s in items] == [inside["service_id"]]


def test_api_key_is_stored_hashed(client, customer):
    from sqlalchemy import select

    from db.engine import session_scope
    from db.models import InferenceService

    created = post(client, customer["headers"], name=unique_name()).json()
    with session_scope() as session:
        stored = session.scalar(
            select(InferenceService.api_key).where(InferenceService.uuid == created["service_id"])
        )
    assert stored and created["api_key"] not in stored and len(stored) == 64
    body = client.get(f"/api/inference/services/{created['service_id']}",
                      headers=customer["headers"]).text
    assert created["api_key"] not in body


def test_body_size_limit(client, customer):
    response = client.post("/api/inference/services", content=b"x" * 2_000_000,
                           headers={**customer["headers"], "content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


def test_health_endpoints(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"database": "ok", "broker": "ok"}
    assert client.get("/openapi.json").status_code == 200
