"""`serveplane admin …` run as real subprocesses against the test database, broker and worker."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from typing import Any

import pytest
from sqlalchemy import select

from db.engine import session_scope
from db.models import WebhookDelivery
from tests.api.test_admin_api import failed_deploy, fix_image, make_delivery
from tests.conftest import ROOT, wait_job

pytestmark = pytest.mark.usefixtures("worker")


def serveplane(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed `serveplane` command (or the module) with the test environment."""
    command = shutil.which("serveplane")
    argv = [command, *args] if command else [sys.executable, "-m", "api.cli", *args]
    return subprocess.run(
        argv,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_list_failed_jobs_as_json_and_table(client, customer, fake_kube):
    failed = failed_deploy(client, customer, fake_kube)
    result = serveplane(
        "admin",
        "jobs",
        "list",
        "--status",
        "failed",
        "--customer-id",
        str(customer["customer_id"]),
        "--json",
    )
    assert result.returncode == 0, result.stderr
    page = json.loads(result.stdout)
    [job] = page["items"]
    assert job["job_id"] == failed["job_id"] and job["status"] == "failed"
    assert job["error"]["reason"] in ("ErrImagePull", "ImagePullBackOff")
    assert job["customer_id"] == customer["customer_id"]
    assert job["service_id"] == failed["service_id"]
    assert [(a["number"], a["status"]) for a in job["attempts"]] == [(1, "failed")]

    table = serveplane(
        "admin", "jobs", "list", "--status", "failed", "--customer-id", str(customer["customer_id"])
    )
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()
    assert header.split()[:3] == ["JOB", "KIND", "STATUS"]
    assert row.startswith(failed["job_id"]) and " deploy " in row and " failed " in row
    assert job["error"]["reason"] in row

    bad = serveplane("admin", "jobs", "list", "--since", "yesterday")
    assert bad.returncode == 2 and "--since" in bad.stderr
    wrong = serveplane("admin", "jobs", "list", "--status", "broken")
    assert wrong.returncode == 2 and "--status" in wrong.stderr


def test_retry_runs_the_job_again(client, customer, fake_kube):
    failed = failed_deploy(client, customer, fake_kube)
    fix_image(fake_kube, customer, failed["name"])
    result = serveplane("admin", "jobs", "retry", failed["job_id"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == f"retried {failed['job_id']}"
    job = wait_job(client, customer["headers"], failed["job_id"])
    assert job["status"] == "succeeded"
    assert [(a["number"], a["status"]) for a in job["attempts"]] == [
        (1, "failed"),
        (2, "succeeded"),
    ]

    again = serveplane("admin", "jobs", "retry", failed["job_id"], "job-nosuchjob")
    assert again.returncode == 1
    assert f"skipped {failed['job_id']}: " in again.stdout and "(job_not_failed)" in again.stdout
    assert "skipped job-nosuchjob: no such job (not_found)" in again.stdout


def test_retry_with_the_broker_down_is_left_to_the_dispatcher(client, customer, fake_kube):
    failed = failed_deploy(client, customer, fake_kube)
    fix_image(fake_kube, customer, failed["name"])
    result = serveplane(
        "admin",
        "jobs",
        "retry",
        failed["job_id"],
        "--json",
        env={"REDIS_URL": "redis://127.0.0.1:1/0"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    body = json.loads(result.stdout)
    assert body["retried"] == [failed["job_id"]] and body["deferred"] == [failed["job_id"]]
    # Nothing reached the broker: the worker's dispatcher finds the due job and sends it.
    job = wait_job(client, customer["headers"], failed["job_id"])
    assert job["status"] == "succeeded" and job["attempt_count"] == 2


def test_cancel_and_redeliver(customer):
    from tests.api.test_admin_api import queued_deploy

    job_id, _ = queued_deploy(customer)
    cancelled = serveplane("admin", "jobs", "cancel", job_id)
    assert cancelled.returncode == 0 and cancelled.stdout.strip() == f"cancelled {job_id}"
    twice = serveplane("admin", "jobs", "cancel", job_id)
    assert twice.returncode == 1 and "cancelled" in twice.stderr

    delivery_id = make_delivery(customer, failed=True)
    listed = serveplane(
        "admin", "deliveries", "list", "--customer-id", str(customer["customer_id"]), "--json"
    )
    assert listed.returncode == 0, listed.stderr
    assert [d["delivery_id"] for d in json.loads(listed.stdout)["items"]] == [delivery_id]
    result = serveplane("admin", "deliveries", "redeliver", delivery_id)
    assert result.returncode == 0, result.stderr
    assert delivery_id in result.stdout
    with session_scope() as session:
        row: Any = session.scalar(
            select(WebhookDelivery).where(WebhookDelivery.uuid == delivery_id)
        )
        assert row.uuid == delivery_id and row.attempts >= 2  # same message id, history kept
    missing = serveplane("admin", "deliveries", "redeliver", "msg_nope")
    assert missing.returncode == 1 and "not found" in missing.stderr
