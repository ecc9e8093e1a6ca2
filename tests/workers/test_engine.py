"""The job engine in-process: idempotent steps, crash between applies, attempt cap, deadline."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from typing import Any

from sqlalchemy import update

from db.engine import session_scope
from db.models import Job
from db.repositories import jobs as jobs_repo
from db.repositories import services as services_repo
from db.settings import get_settings
from db.states import utcnow
from tests.conftest import ROOT, unique_name, wait_for
from workers.jobs.engine import advance_job

FAR = timedelta(hours=1)


def make_job(customer: dict[str, Any], name: str, *, max_attempts: int = 5) -> tuple[int, str]:
    """A deploy job that the running dispatcher (if any) leaves alone: its check is far away."""
    with session_scope() as session:
        service = services_repo.add_service(
            session, uuid=f"svc-{name[-8:]}", customer_id=customer["customer_id"], name=name,
            model_path="/models/m", framework="onnxruntime", model_format="onnx",
            replicas=1, min_replicas=1, max_replicas=1, status="pending",
        )
        version = services_repo.add_version(session, service)
        job = jobs_repo.create_job(session, kind="deploy", service=service, version_id=version.id,
                                   max_attempts=max_attempts, deadline_seconds=600)
        job.next_check_at = utcnow() + FAR
        return job.id, service.uuid


def job_row(job_id: int) -> Job:
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        session.expunge(job)
        return job


def park(job_id: int, **values: Any) -> None:
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job_id).values(**values))


def drive(job_id: int, timeout: float = 10) -> Job:
    """Call the engine until the job is terminal (keeping the dispatcher away)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        advance_job(job_id)
        job = job_row(job_id)
        if job.status in ("succeeded", "failed", "cancelled"):
            return job
        park(job_id, next_check_at=utcnow() + FAR)
        time.sleep(0.05)
    raise AssertionError("job did not finish")


def test_concurrent_deliveries_apply_once(database, fake_kube, customer):
    name = unique_name("twice")
    job_id, _ = make_job(customer, name)
    fake_kube.reset_stats()
    threads = [threading.Thread(target=advance_job, args=(job_id,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    job = drive(job_id)
    with session_scope() as session:
        history = [(a.number, a.status, a.error) for a in jobs_repo.list_attempts(session, job_id)]
    assert job.status == "succeeded" and job.attempts == 1, history
    ns = f"sp-customer-{customer['customer_id']}"
    assert len(fake_kube.applied_bodies("deployments", ns, f"{name}-v1")) == 1
    assert [d["metadata"]["name"] for d in fake_kube.list_objects("deployments", ns)
            if d["metadata"]["name"].startswith(name)] == [f"{name}-v1"]


def test_killed_between_applies_then_rerun(database, fake_kube, customer, tmp_path):
    name = unique_name("killed")
    job_id, _ = make_job(customer, name)
    ns = f"sp-customer-{customer['customer_id']}"
    # The Service apply hangs: the process dies after the Deployment and before the Service.
    fake_kube.set_faults(hang_rate=1.0, hang_seconds=30, path_regex=r".*/services/.*")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SERVEPLANE_KUBE_REQUEST_TIMEOUT": "60"}
    proc = subprocess.Popen(
        [sys.executable, "-c", f"from workers.jobs.engine import advance_job; advance_job({job_id})"],
        cwd=ROOT, env=env, start_new_session=True,
    )
    try:
        wait_for(lambda: fake_kube.get_object("apps/v1", "deployments", ns, f"{name}-v1"),
                 what="the first apply")
        time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
    finally:
        fake_kube.set_faults(hang_rate=0.0)
    assert fake_kube.get_object("v1", "services", ns, f"{name}-v1") is None
    job = job_row(job_id)
    assert job.status == "running" and job.attempts == 1 and job.phase == "apply"
    # A duplicate delivery while the lease holds does nothing.
    advance_job(job_id)
    assert job_row(job_id).attempts == 1
    # The lease expires (the dispatcher would re-send it): the job resumes as attempt 2.
    park(job_id, lease_expires_at=utcnow() - timedelta(seconds=1))
    job = drive(job_id)
    assert job.status == "succeeded" and job.attempts == 2
    assert fake_kube.get_object("v1", "services", ns, f"{name}-v1") is not None
    names = [d["metadata"]["name"] for d in fake_kube.list_objects("deployments", ns)]
    assert names.count(f"{name}-v1") == 1


def test_poison_job_stops_at_the_attempt_cap(database, fake_kube, customer):
    name = unique_name("poison")
    job_id, uuid = make_job(customer, name, max_attempts=2)
    for _ in range(2):
        # Each attempt "dies" after claiming: lease expiry hands it to the next attempt.
        park(job_id, lease_expires_at=utcnow() - timedelta(seconds=1), phase="apply",
             status="running" if job_row(job_id).attempts else "queued")
        from workers.jobs.engine import _claim

        assert _claim(job_id) is not None
    park(job_id, lease_expires_at=utcnow() - timedelta(seconds=1))
    advance_job(job_id)
    job = job_row(job_id)
    assert job.status == "failed" and job.error["reason"] == "AttemptsExhausted"
    with session_scope() as session:
        service = services_repo.get_service(session, uuid)
        assert service.status == "failed" and service.failure["reason"] == "AttemptsExhausted"


def test_job_deadline_fails_the_job(database, fake_kube, customer):
    name = unique_name("late")
    job_id, _ = make_job(customer, name)
    park(job_id, deadline_at=utcnow() - timedelta(seconds=1))
    advance_job(job_id)
    job = job_row(job_id)
    assert job.status == "failed" and job.error["reason"] == "JobDeadlineExceeded"
    assert get_settings().job_deadline_seconds > 0
