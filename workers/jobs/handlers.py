"""What each job kind does at each step: begin, apply, check, complete, fail."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from db.domain import failure_info
from db.models import InferenceService, Job, ServiceVersion
from db.repositories import jobs as jobs_repo
from db.repositories import services as services_repo
from db.settings import get_settings
from db.states import transition_service, utcnow
from workers.jobs.specs import version_spec
from workers.jobs.traffic import set_traffic
from workers.runtime import get_runtime
from workers.runtime.base import RolloutStatus

Failure = dict[str, Any]


@dataclass
class Step:
    """The rows a step works on, locked for its transaction."""

    session: Session
    job: Job
    service: InferenceService

    def versions_to_roll(self) -> list[ServiceVersion]:
        """The versions this job applies and waits for."""
        if self.job.kind in ("deploy", "update", "promote", "rollback"):
            version = services_repo.get_version(self.session, self.job.version_id or 0)
            return [version] if version else []
        if self.job.kind == "scale":
            return [
                v
                for v in services_repo.live_versions(self.session, self.service.id)
                if v.traffic_percent > 0 or v.status == "deploying"
            ]
        return list(services_repo.live_versions(self.session, self.service.id))


def _status_failure(status: RolloutStatus) -> Failure:
    return failure_info(
        status.reason or "RolloutFailed",
        status.message or "rollout failed",
        location=status.location,
        exit_code=status.exit_code,
    )


def may_start(step: Step) -> bool:
    """A delete waits until the job it superseded has stopped touching the runtime."""
    if step.job.kind != "delete" or step.job.status != "queued":
        return True
    others = jobs_repo.active_jobs(step.session, step.service.id)
    return not any(j.status == "running" and j.id != step.job.id for j in others)


def begin(step: Step) -> None:
    """Move the service into the job's working status."""
    kind, service = step.job.kind, step.service
    target = {
        "deploy": "deploying",
        "scale": "scaling",
        "update": "updating",
        "promote": "updating",
        "rollback": "updating",
        "delete": "deleting",
    }[kind]
    if service.status != target:
        transition_service(
            step.session, service, target, f"{kind} job {step.job.uuid} started", job_id=step.job.id
        )
    for version in step.versions_to_roll():
        if kind == "scale":
            version.replicas = service.replicas
            version.min_replicas = service.min_replicas
            version.max_replicas = service.max_replicas
        if kind != "delete" and version.status in ("pending", "failed", "retiring", "removed"):
            version.status = "deploying"
            version.failure = None
            version.remove_after = None


def apply(step: Step) -> None:
    """Drive the runtime toward the job's desired state (idempotent)."""
    runtime = get_runtime()
    if step.job.kind == "delete":
        for version in step.versions_to_roll():
            runtime.delete_version(version_spec(step.service, version))
        return
    for version in step.versions_to_roll():
        runtime.apply(version_spec(step.service, version))


def check(step: Step) -> Failure | bool:
    """True when done, False while in progress, or the failure."""
    runtime = get_runtime()
    versions = step.versions_to_roll()
    if step.job.kind == "delete":
        return all(runtime.version_gone(version_spec(step.service, v)) for v in versions)
    done = True
    desired = current = 0
    for version in versions:
        status = runtime.rollout_status(version_spec(step.service, version))
        if status.state == "failed":
            return _status_failure(status)
        if status.state != "ready":
            done = False
            continue
        version.endpoints = status.endpoints
        desired += status.desired_replicas or 0
        current += status.current_replicas or 0
    if done:
        step.service.desired_replicas = desired
        step.service.current_replicas = current
    return done


def complete(step: Step) -> None:
    """Record success: traffic, versions and the service status."""
    job, service, session = step.job, step.service, step.session
    grace = get_settings().version_grace_seconds
    if job.kind == "delete":
        for version in services_repo.live_versions(session, service.id):
            version.status = "removed"
            version.traffic_percent = 0
            version.endpoints = []
        service.api_key = None
        transition_service(session, service, "deleted", f"deleted by job {job.uuid}", job_id=job.id)
        return
    if job.kind in ("deploy", "update", "promote", "rollback"):
        version = step.versions_to_roll()[0]
        version.ready_at = version.ready_at or utcnow()
        percent = int(job.payload.get("canary_percent", 100))
        reason = {
            "deploy": f"version {version.number} deployed",
            "update": f"version {version.number} ready, receives {percent}%",
            "promote": f"version {version.number} promoted",
            "rollback": f"rolled back to version {version.number}",
        }[job.kind]
        set_traffic(
            session, service, version, percent, grace_seconds=grace, reason=reason, job_id=job.id
        )
    else:
        for version in step.versions_to_roll():
            version.status = "ready"
    transition_service(
        session, service, "running", f"{job.kind} job {job.uuid} succeeded", job_id=job.id
    )


def fail(step: Step, failure: Failure) -> None:
    """Record failure; a failed new version is removed and traffic stays where it was."""
    job, service, session = step.job, step.service, step.session
    reason = f"{job.kind} job {job.uuid} failed: {failure['reason']}"
    if job.kind in ("update", "promote", "rollback"):
        for version in step.versions_to_roll():
            if version.traffic_percent == 0:
                version.status = "failed"
                version.failure = failure
                version.remove_after = utcnow()
        serving = services_repo.serving_versions(session, service.id)
        to_status = "running" if serving else "failed"
        transition_service(session, service, to_status, reason, job_id=job.id, failure=failure)
        return
    for version in step.versions_to_roll():
        if job.kind == "deploy":
            version.status = "failed"
            version.failure = failure
    if service.status != "failed":
        transition_service(session, service, "failed", reason, job_id=job.id, failure=failure)


def cancel(step: Step) -> None:
    """Leave the service in a defined state after a cancelled job."""
    job, service, session = step.job, step.service, step.session
    if service.status in ("deleting", "deleted", "failed", "pending"):
        return
    serving = services_repo.serving_versions(session, service.id)
    for version in step.versions_to_roll():
        if version.status == "deploying" and version.traffic_percent == 0:
            version.status = "failed"
            version.failure = failure_info("Cancelled", f"job {job.uuid} was cancelled")
            version.remove_after = utcnow()
    if serving and service.status in ("scaling", "updating"):
        transition_service(session, service, "running", f"job {job.uuid} cancelled", job_id=job.id)
    elif service.status in ("deploying", "scaling", "updating"):
        transition_service(
            session,
            service,
            "failed",
            f"job {job.uuid} cancelled",
            job_id=job.id,
            failure=failure_info("Cancelled", f"job {job.uuid} was cancelled"),
        )
