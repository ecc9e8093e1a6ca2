"""Versions on the fake cluster: canary traffic, promote, rollback, failed update, autoscaling."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import unique_name, wait_for, wait_job
from tests.fake_kube import Behavior

pytestmark = pytest.mark.usefixtures("worker")


def running_service(client: Any, customer: dict[str, Any], **extra: Any) -> dict[str, Any]:
    body = {"name": unique_name("ver"), "model_path": "/models/v1", "framework": "onnxruntime",
            "replicas": 1, "min_replicas": 1, "max_replicas": 1, **extra}
    created = client.post("/api/inference/services", json=body, headers=customer["headers"]).json()
    assert wait_job(client, customer["headers"], created["job_id"])["status"] == "succeeded"
    return client.get(f"/api/inference/services/{created['service_id']}",
                      headers=customer["headers"]).json()


def versions(client: Any, headers: dict[str, str], sid: str) -> dict[int, dict[str, Any]]:
    rows = client.get(f"/api/inference/services/{sid}/versions", headers=headers).json()
    return {row["version"]: row for row in rows}


def test_canary_then_promote_then_rollback(client, customer, fake_kube):
    headers = customer["headers"]
    service = running_service(client, customer)
    sid, name = service["service_id"], service["name"]
    ns = f"sp-customer-{customer['customer_id']}"

    response = client.post(f"/api/inference/services/{sid}/versions",
                           json={"model_path": "/models/v2", "canary_percent": 20},
                           headers=headers)
    assert response.status_code == 202, response.text
    job = wait_job(client, headers, response.json()["job_id"])
    assert job["kind"] == "update" and job["status"] == "succeeded", job
    rows = versions(client, headers, sid)
    assert (rows[1]["traffic_percent"], rows[2]["traffic_percent"]) == (80, 20)
    assert rows[2]["serving"] and rows[1]["serving"]
    assert fake_kube.get_object("apps/v1", "deployments", ns, f"{name}-v2") is not None
    service = client.get(f"/api/inference/services/{sid}", headers=headers).json()
    assert service["status"] == "running"
    assert service["traffic"] == [{"version": 1, "percent": 80}, {"version": 2, "percent": 20}]

    response = client.post(f"/api/inference/services/{sid}/versions/2/promote", headers=headers)
    assert response.status_code == 202, response.text
    assert wait_job(client, headers, response.json()["job_id"])["status"] == "succeeded"
    rows = versions(client, headers, sid)
    assert (rows[1]["traffic_percent"], rows[2]["traffic_percent"]) == (0, 100)
    wait_for(lambda: fake_kube.get_object("apps/v1", "deployments", ns, f"{name}-v1") is None,
             what="v1 removed after the grace period")
    wait_for(lambda: versions(client, headers, sid)[1]["status"] == "removed", what="v1 removed")

    # Roll back to v1: it served 100% last; its objects are re-created, then traffic moves.
    response = client.post(f"/api/inference/services/{sid}/rollback", headers=headers)
    assert response.status_code == 202, response.text
    assert wait_job(client, headers, response.json()["job_id"])["status"] == "succeeded"
    rows = versions(client, headers, sid)
    assert (rows[1]["traffic_percent"], rows[2]["traffic_percent"]) == (100, 0)
    assert fake_kube.get_object("apps/v1", "deployments", ns, f"{name}-v1") is not None
    events = client.get(f"/api/inference/services/{sid}/events", headers=headers).json()
    traffic = [e["details"]["traffic"] for e in events if e["kind"] == "traffic"]
    assert traffic == [{"1": 100}, {"1": 80, "2": 20}, {"2": 100}, {"1": 100}]


def test_rollback_of_a_canary_removes_it(client, customer, fake_kube):
    headers = customer["headers"]
    service = running_service(client, customer)
    sid, name = service["service_id"], service["name"]
    ns = f"sp-customer-{customer['customer_id']}"
    job_id = client.post(f"/api/inference/services/{sid}/versions",
                         json={"model_path": "/models/v2", "canary_percent": 50},
                         headers=headers).json()["job_id"]
    assert wait_job(client, headers, job_id)["status"] == "succeeded"
    job_id = client.post(f"/api/inference/services/{sid}/rollback", headers=headers).json()["job_id"]
    assert wait_job(client, headers, job_id)["status"] == "succeeded"
    rows = versions(client, headers, sid)
    assert (rows[1]["traffic_percent"], rows[2]["traffic_percent"]) == (100, 0)
    wait_for(lambda: fake_kube.get_object("apps/v1", "deployments", ns, f"{name}-v2") is None,
             what="canary removed")


def test_failed_update_rolls_back_automatically(client, customer, fake_kube):
    headers = customer["headers"]
    service = running_service(client, customer)
    sid, name = service["service_id"], service["name"]
    ns = f"sp-customer-{customer['customer_id']}"
    fake_kube.add_rule(f"{name}-v2", Behavior(mode="image_pull_backoff"))
    response = client.post(f"/api/inference/services/{sid}/versions",
                           json={"model_path": "/models/v2"}, headers=headers)
    assert response.status_code == 202
    # While the update runs the service keeps serving v1 only.
    during = client.get(f"/api/inference/services/{sid}", headers=headers).json()
    assert during["traffic"] == [{"version": 1, "percent": 100}]
    job = wait_job(client, headers, response.json()["job_id"])
    assert job["status"] == "failed"
    assert job["error"]["reason"] in ("ErrImagePull", "ImagePullBackOff")
    service = client.get(f"/api/inference/services/{sid}", headers=headers).json()
    assert service["status"] == "running"
    assert service["traffic"] == [{"version": 1, "percent": 100}]
    rows = versions(client, headers, sid)
    assert rows[2]["traffic_percent"] == 0 and rows[2]["failure"]["reason"] == job["error"]["reason"]
    wait_for(lambda: fake_kube.get_object("apps/v1", "deployments", ns, f"{name}-v2") is None,
             what="failed v2 removed")
    assert fake_kube.get_object("apps/v1", "deployments", ns, f"{name}-v1") is not None
    events = client.get(f"/api/inference/services/{sid}/events", headers=headers).json()
    statuses = [(e["from_status"], e["to_status"]) for e in events if e["kind"] == "status"]
    assert statuses[-2:] == [("running", "updating"), ("updating", "running")]
    assert job["error"]["reason"] in events[-1]["reason"]
    # The gateway's view (traffic > 0) never included v2.
    traffic = [e["details"]["traffic"] for e in events if e["kind"] == "traffic"]
    assert all("2" not in split for split in traffic)


def test_autoscaling_switches_hpa_on_and_off(client, customer, fake_kube):
    headers = customer["headers"]
    service = running_service(client, customer, cpu_target_percent=55)
    sid, name = service["service_id"], service["name"]
    ns = f"sp-customer-{customer['customer_id']}"
    assert fake_kube.get_object("autoscaling/v2", "horizontalpodautoscalers", ns, f"{name}-v1") is None

    response = client.patch(f"/api/inference/services/{sid}",
                            json={"min_replicas": 2, "max_replicas": 5}, headers=headers)
    assert wait_job(client, headers, response.json()["job_id"])["status"] == "succeeded"
    hpa = fake_kube.get_object("autoscaling/v2", "horizontalpodautoscalers", ns, f"{name}-v1")
    assert hpa["spec"]["minReplicas"] == 2 and hpa["spec"]["maxReplicas"] == 5
    metric = hpa["spec"]["metrics"][0]["resource"]
    assert metric["name"] == "cpu" and metric["target"]["averageUtilization"] == 55
    assert "replicas" not in fake_kube.applied_bodies("deployments", ns, f"{name}-v1")[-1]["spec"]
    service = client.get(f"/api/inference/services/{sid}", headers=headers).json()
    assert service["autoscaling"] and service["desired_replicas"] >= 2

    response = client.patch(f"/api/inference/services/{sid}",
                            json={"min_replicas": 3, "max_replicas": 3, "replicas": 3},
                            headers=headers)
    assert wait_job(client, headers, response.json()["job_id"])["status"] == "succeeded"
    assert fake_kube.get_object("autoscaling/v2", "horizontalpodautoscalers", ns, f"{name}-v1") is None
    assert fake_kube.get_object("apps/v1", "deployments", ns, f"{name}-v1")["spec"]["replicas"] == 3


def test_concurrent_mutations_conflict(client, customer, fake_kube):
    headers = customer["headers"]
    service = running_service(client, customer)
    sid, name = service["service_id"], service["name"]
    fake_kube.add_rule(f"{name}-v2", Behavior(mode="ready", delay=2.0))
    first = client.post(f"/api/inference/services/{sid}/versions",
                        json={"model_path": "/models/v2"}, headers=headers)
    assert first.status_code == 202
    job_id = first.json()["job_id"]
    for method, path, body in [
        ("patch", f"/api/inference/services/{sid}", {"replicas": 2}),
        ("post", f"/api/inference/services/{sid}/versions", {"model_path": "/models/v3"}),
        ("post", f"/api/inference/services/{sid}/versions/1/promote", None),
        ("post", f"/api/inference/services/{sid}/rollback", None),
    ]:
        response = getattr(client, method)(path, json=body, headers=headers) if body else \
            getattr(client, method)(path, headers=headers)
        assert response.status_code == 409, (path, response.text)
        assert response.json()["error"]["details"]["active_job_id"] == job_id
    assert wait_job(client, headers, job_id)["status"] == "succeeded"


def test_version_validation(client, customer):
    headers = customer["headers"]
    service = running_service(client, customer)
    sid = service["service_id"]
    bad = client.post(f"/api/inference/services/{sid}/versions",
                      json={"model_path": "/m", "canary_percent": 101}, headers=headers)
    assert bad.status_code == 422
    assert bad.json()["error"]["details"][0]["field"] == "canary_percent"
    missing = client.post(f"/api/inference/services/{sid}/versions/9/promote", headers=headers)
    assert missing.status_code == 404
    nothing = client.post(f"/api/inference/services/{sid}/rollback", headers=headers)
    assert nothing.status_code == 409
    assert nothing.json()["error"]["code"] == "nothing_to_roll_back"
