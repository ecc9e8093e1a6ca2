"""End to end: REST → real Celery worker on Redis → fake Kubernetes → status in PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import unique_name, wait_for, wait_job
from tests.fake_kube import Behavior

pytestmark = pytest.mark.usefixtures("worker")


def deploy(client: Any, customer: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    body = {"name": unique_name(), "model_path": "/models/resnet50", "framework": "torchserve"}
    body.update(overrides)
    response = client.post("/api/inference/services", json=body, headers=customer["headers"])
    assert response.status_code == 202, response.text
    return response.json()


def namespace(customer: dict[str, Any]) -> str:
    return f"sp-customer-{customer['customer_id']}"


def test_tc01_deploy_reaches_running_with_objects(client, customer, fake_kube):
    name = unique_name("resnet50")
    response = client.post(
        "/api/inference/services",
        json={"name": name, "model_path": "/models/resnet50", "framework": "torchserve"},
        headers=customer["headers"],
    )
    assert response.status_code == 202
    body = response.json()
    assert body["service_id"].startswith("svc-") and body["job_id"].startswith("job-")
    assert body["status"] == "pending"
    assert body["api_key"].startswith("spk_")
    assert body["endpoint_url"] == f"http://testserver/inference/{body['service_id']}"
    assert response.headers["location"].endswith(f"/api/jobs/{body['job_id']}")

    job = wait_job(client, customer["headers"], body["job_id"])
    assert job["status"] == "succeeded", job
    assert job["kind"] == "deploy" and job["attempt_count"] == 1
    assert job["started_at"] and job["finished_at"]
    service = client.get(f"/api/inference/services/{body['service_id']}",
                         headers=customer["headers"]).json()
    assert service["status"] == "running"
    assert service["traffic"] == [{"version": 1, "percent": 100}]
    events = client.get(f"/api/inference/services/{body['service_id']}/events",
                        headers=customer["headers"]).json()
    transitions = [(e["from_status"], e["to_status"]) for e in events if e["kind"] == "status"]
    assert transitions == [("pending", "deploying"), ("deploying", "running")]
    assert all(e["at"] for e in events)

    ns = namespace(customer)
    deployment = fake_kube.get_object("apps/v1", "deployments", ns, f"{name}-v1")
    assert deployment is not None
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "pytorch/torchserve:0.11.1-cpu"
    assert {p["containerPort"] for p in container["ports"]} >= {8080, 8081}
    assert container["readinessProbe"]["httpGet"]["path"] == "/ping"
    assert container["resources"]["limits"]["cpu"] == "2"
    assert container["resources"]["limits"]["memory"] == "4Gi"
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    labels = deployment["metadata"]["labels"]
    assert labels["serveplane.io/service"] == body["service_id"]
    assert labels["serveplane.io/version"] == "1"
    # Spec defaults min 1 / max 10: the HPA owns the replica count.
    assert "replicas" not in fake_kube.applied_bodies("deployments", ns, f"{name}-v1")[-1]["spec"]
    hpa = fake_kube.get_object("autoscaling/v2", "horizontalpodautoscalers", ns, f"{name}-v1")
    assert hpa["spec"]["minReplicas"] == 1 and hpa["spec"]["maxReplicas"] == 10
    svc = fake_kube.get_object("v1", "services", ns, f"{name}-v1")
    assert svc["spec"]["selector"] == {"serveplane.io/service": body["service_id"],
                                       "serveplane.io/version": "1"}


def test_fixed_replicas_have_no_hpa(client, customer, fake_kube):
    body = deploy(client, customer, framework="tensorflow-serving", replicas=3, min_replicas=3,
                  max_replicas=3, cpu_cores=4, memory_gb=8, gpu_count=1)
    assert wait_job(client, customer["headers"], body["job_id"])["status"] == "succeeded"
    service = client.get(f"/api/inference/services/{body['service_id']}",
                         headers=customer["headers"]).json()
    name = service["name"]
    ns = namespace(customer)
    deployment = fake_kube.get_object("apps/v1", "deployments", ns, f"{name}-v1")
    assert deployment["spec"]["replicas"] == 3
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"].startswith("tensorflow/serving")
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert fake_kube.get_object("autoscaling/v2", "horizontalpodautoscalers", ns, f"{name}-v1") is None
    assert service["current_replicas"] == 3 and service["desired_replicas"] == 3


def test_transient_kubernetes_errors_are_retried(client, customer, fake_kube):
    fake_kube.set_faults(error_rate=0.2, codes=(500, 429), retry_after=0)
    bodies = [deploy(client, customer) for _ in range(5)]
    for body in bodies:
        job = wait_job(client, customer["headers"], body["job_id"], timeout=60)
        assert job["status"] == "succeeded", job
    fake_kube.set_faults(error_rate=0.0)
    assert fake_kube.stats()["faults_injected"] > 0


def test_api_server_422_fails_the_job_in_one_attempt(client, customer, fake_kube):
    # An admission policy on the cluster rejects this service's Deployment with a 422.
    name = unique_name("rejected")
    fake_kube.set_faults(error_rate=1.0, codes=(422,), path_regex=rf"/deployments/{name}-v1$")
    body = deploy(client, customer, name=name)
    job = wait_job(client, customer["headers"], body["job_id"])
    assert job["status"] == "failed", job
    assert job["attempt_count"] == 1 and len(job["attempts"]) == 1
    assert job["error"]["reason"] == "KubernetesRejected"
    assert "ValidatingAdmissionPolicy 'require-team-label'" in job["error"]["message"]
    service = client.get(f"/api/inference/services/{body['service_id']}",
                         headers=customer["headers"]).json()
    assert service["status"] == "failed" and service["failure"]["reason"] == "KubernetesRejected"


def test_api_server_403_fails_fast_too(client, customer, fake_kube):
    name = unique_name("forbidden")
    fake_kube.set_faults(error_rate=1.0, codes=(403,), path_regex=rf"/deployments/{name}-v1$")
    body = deploy(client, customer, name=name)
    job = wait_job(client, customer["headers"], body["job_id"])
    assert job["status"] == "failed" and job["attempt_count"] == 1
    assert "denied the request" in job["error"]["message"]


def test_image_pull_error_fails_service_with_reason(client, customer, fake_kube):
    name = unique_name("badimage")
    fake_kube.add_rule(f"{name}-v1", Behavior(mode="image_pull_backoff"))
    body = deploy(client, customer, name=name)
    job = wait_job(client, customer["headers"], body["job_id"])
    assert job["status"] == "failed"
    assert job["error"]["reason"] in ("ErrImagePull", "ImagePullBackOff")
    assert job["error"]["location"].startswith("pod/")
    service = client.get(f"/api/inference/services/{body['service_id']}",
                         headers=customer["headers"]).json()
    assert service["status"] == "failed"
    assert service["failure"]["reason"] == job["error"]["reason"]


def test_crash_loop_reports_exit_code(client, customer, fake_kube):
    name = unique_name("crashy")
    fake_kube.add_rule(f"{name}-v1", Behavior(mode="crash_loop"))
    body = deploy(client, customer, name=name)
    job = wait_job(client, customer["headers"], body["job_id"])
    assert job["status"] == "failed"
    assert job["error"]["reason"] == "CrashLoopBackOff"
    assert job["error"]["exit_code"] == 1


def test_progress_deadline_fails(client, customer, fake_kube):
    name = unique_name("stuck")
    fake_kube.add_rule(f"{name}-v1", Behavior(mode="never_ready"))
    body = deploy(client, customer, name=name)
    job = wait_job(client, customer["headers"], body["job_id"], timeout=30)
    assert job["status"] == "failed"
    assert job["error"]["reason"] == "ProgressDeadlineExceeded"


def test_unschedulable_fails(client, customer, fake_kube):
    name = unique_name("gpu")
    fake_kube.add_rule(f"{name}-v1", Behavior(mode="unschedulable"))
    body = deploy(client, customer, name=name, gpu_count=2)
    job = wait_job(client, customer["headers"], body["job_id"])
    assert job["status"] == "failed"
    assert job["error"]["reason"] == "Unschedulable"
    assert "nvidia.com/gpu" in job["error"]["message"]


def test_slow_rollout_is_polled_until_ready(client, customer, fake_kube):
    name = unique_name("slow")
    fake_kube.add_rule(f"{name}-v1", Behavior(mode="ready", delay=1.0))
    body = deploy(client, customer, name=name)
    wait_for(
        lambda: client.get(f"/api/inference/services/{body['service_id']}",
                           headers=customer["headers"]).json()["status"] == "deploying",
        what="deploying",
    )
    job = wait_job(client, customer["headers"], body["job_id"])
    assert job["status"] == "succeeded"


def test_scale_then_delete(client, customer, fake_kube):
    body = deploy(client, customer)
    headers = customer["headers"]
    assert wait_job(client, headers, body["job_id"])["status"] == "succeeded"
    sid = body["service_id"]
    name = client.get(f"/api/inference/services/{sid}", headers=headers).json()["name"]
    ns = namespace(customer)

    response = client.patch(f"/api/inference/services/{sid}", json={"replicas": 4}, headers=headers)
    assert response.status_code == 202, response.text
    job = wait_job(client, headers, response.json()["job_id"])
    assert job["kind"] == "scale" and job["status"] == "succeeded", job
    deployment = fake_kube.get_object("apps/v1", "deployments", ns, f"{name}-v1")
    assert deployment["spec"]["replicas"] == 4
    # Fixed replicas now: the HPA is gone.
    assert fake_kube.get_object("autoscaling/v2", "horizontalpodautoscalers", ns, f"{name}-v1") is None
    service = client.get(f"/api/inference/services/{sid}", headers=headers).json()
    assert service["status"] == "running" and service["replicas"] == 4
    assert service["autoscaling"] is False

    response = client.patch(f"/api/inference/services/{sid}",
                            json={"min_replicas": 2, "max_replicas": 6}, headers=headers)
    assert response.status_code == 202
    assert wait_job(client, headers, response.json()["job_id"])["status"] == "succeeded"
    hpa = fake_kube.get_object("autoscaling/v2", "horizontalpodautoscalers", ns, f"{name}-v1")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    assert "replicas" not in fake_kube.applied_bodies("deployments", ns, f"{name}-v1")[-1]["spec"]

    response = client.delete(f"/api/inference/services/{sid}", headers=headers)
    assert response.status_code == 202
    job = wait_job(client, headers, response.json()["job_id"])
    assert job["kind"] == "delete" and job["status"] == "succeeded"
    assert fake_kube.get_object("apps/v1", "deployments", ns, f"{name}-v1") is None
    assert fake_kube.get_object("v1", "services", ns, f"{name}-v1") is None
    assert fake_kube.get_object("autoscaling/v2", "horizontalpodautoscalers", ns, f"{name}-v1") is None
    service = client.get(f"/api/inference/services/{sid}", headers=headers).json()
    assert service["status"] == "deleted"
    # The name is free again.
    again = client.post("/api/inference/services",
                        json={"name": name, "model_path": "/m", "framework": "onnx"},
                        headers=headers)
    assert again.status_code == 202


def test_resource_change_rolls_a_new_version(client, customer, fake_kube):
    headers = customer["headers"]
    body = deploy(client, customer, replicas=1, min_replicas=1, max_replicas=1)
    assert wait_job(client, headers, body["job_id"])["status"] == "succeeded"
    sid = body["service_id"]
    name = client.get(f"/api/inference/services/{sid}", headers=headers).json()["name"]
    response = client.patch(f"/api/inference/services/{sid}", json={"memory_gb": 8},
                            headers=headers)
    assert response.status_code == 202
    job = wait_job(client, headers, response.json()["job_id"])
    assert job["kind"] == "update" and job["status"] == "succeeded", job
    service = client.get(f"/api/inference/services/{sid}", headers=headers).json()
    assert service["memory_gb"] == 8 and service["traffic"] == [{"version": 2, "percent": 100}]
    ns = namespace(customer)
    v2 = fake_kube.get_object("apps/v1", "deployments", ns, f"{name}-v2")
    assert v2["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] == "8Gi"
    # v1 is removed after the grace period.
    wait_for(lambda: fake_kube.get_object("apps/v1", "deployments", ns, f"{name}-v1") is None,
             what="v1 removal")
