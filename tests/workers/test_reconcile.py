"""Drift: objects deleted, scaled or crash-looping behind serveplane's back."""

from __future__ import annotations

import os
import time
from typing import Any

import pytest

from tests.conftest import reset_settings, unique_name, wait_for, wait_job
from tests.fake_kube import Behavior

pytestmark = pytest.mark.usefixtures("worker")


def running(client: Any, customer: dict[str, Any]) -> tuple[str, str, str]:
    body = {"name": unique_name("drift"), "model_path": "/models/m", "framework": "triton",
            "replicas": 2, "min_replicas": 2, "max_replicas": 2}
    created = client.post("/api/inference/services", json=body, headers=customer["headers"]).json()
    assert wait_job(client, customer["headers"], created["job_id"])["status"] == "succeeded"
    return created["service_id"], body["name"], f"sp-customer-{customer['customer_id']}"


def status_of(client: Any, customer: dict[str, Any], sid: str) -> dict[str, Any]:
    return client.get(f"/api/inference/services/{sid}", headers=customer["headers"]).json()


def degraded_within(client, customer, sid, reason: str, timeout: float = 10) -> float:
    start = time.monotonic()
    wait_for(lambda: status_of(client, customer, sid)["status"] == "degraded", timeout,
             what=f"degraded ({reason})")
    elapsed = time.monotonic() - start
    assert status_of(client, customer, sid)["failure"]["reason"] == reason
    print(f"drift {reason}: fault -> degraded in {elapsed:.2f}s")
    return elapsed


def test_deleted_deployment_degrades_then_recovers_when_restored(client, customer, fake_kube):
    sid, name, ns = running(client, customer)
    fake_kube.delete_object("deployments", ns, f"{name}-v1")
    degraded_within(client, customer, sid, "DeploymentMissing")
    events = client.get(f"/api/inference/services/{sid}/events", headers=customer["headers"]).json()
    assert events[-1]["to_status"] == "degraded" and "DeploymentMissing" in events[-1]["reason"]
    # Self-heal (off in the worker): one pass with the setting on re-applies the version.
    os.environ["SERVEPLANE_SELF_HEAL"] = "true"
    reset_settings()
    try:
        from workers.jobs.reconcile import reconcile_services

        reconcile_services()
    finally:
        os.environ.pop("SERVEPLANE_SELF_HEAL")
        reset_settings()
    assert fake_kube.get_object("apps/v1", "deployments", ns, f"{name}-v1") is not None
    wait_for(lambda: status_of(client, customer, sid)["status"] == "running", 10,
             what="recovered")


def test_scaled_behind_our_back_degrades(client, customer, fake_kube):
    sid, name, ns = running(client, customer)
    fake_kube.set_replicas(ns, f"{name}-v1", 5)
    degraded_within(client, customer, sid, "ReplicasDrift")


def test_crash_loop_after_running_degrades(client, customer, fake_kube):
    sid, name, ns = running(client, customer)
    fake_kube.set_behavior(ns, f"{name}-v1", Behavior(mode="crash_loop"))
    degraded_within(client, customer, sid, "CrashLoopBackOff")
    fake_kube.set_behavior(ns, f"{name}-v1", Behavior(mode="ready"))
    wait_for(lambda: status_of(client, customer, sid)["status"] == "running", 10,
             what="running again after the pods recover")
