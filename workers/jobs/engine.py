"""The job step engine: claim under a row lock, apply, check readiness, finish. Idempotent.

A job moves through phases `apply` → `wait`. Each call does one step and returns; nothing
sleeps while Kubernetes works. The next readiness check is a time in `jobs.next_check_at`
that the dispatcher turns into a task, so checks survive a broker that lost its queues.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session

from db.domain import failure_info
from db.engine import after_commit, session_scope
from db.models import Job
from db.repositories import jobs as jobs_repo
from db.repositories import services as services_repo
from db.settings import get_settings
from db.states import transition_job, utcnow
from workers.jobs import handlers
from workers.jobs.handlers import Step
from workers.runtime.base import RuntimeError_, TransientRuntimeError

log = logging.getLogger(__name__)
ACTIVE = ("queued", "running")
# Called with (session, job, service) whenever a job ends; webhooks hook in here.
JobEndedHook = Callable[[Session, Job, Any], None]
job_ended_hooks: list[JobEndedHook] = []


def backoff(count: int) -> float:
    """Seconds until the next readiness check: doubling from the initial value, capped."""
    settings = get_settings()
    return float(
        min(
            settings.readiness_backoff_initial * (2 ** max(count - 1, 0)),
            settings.readiness_backoff_max,
        )
    )


def advance_job(job_id: int) -> None:
    """Do the next step of a job; a duplicate or concurrent delivery does nothing harmful."""
    claim = _claim(job_id)
    if claim is not None:
        _step(job_id, *claim)


def _lock_service_then_job(session: Session, job_id: int) -> tuple[Any, Job] | None:
    """Lock the job's service, then the job (skipping it if another step holds it).

    Every writer takes the service row first (the API does too), so a step and a request on
    the same service cannot deadlock.
    """
    service_id = jobs_repo.service_id_of(session, job_id)
    if service_id is None:
        return None
    service = services_repo.lock_service(session, service_id)
    job = jobs_repo.lock_job(session, job_id)
    return None if job is None else (service, job)


def _claim(job_id: int) -> tuple[str, int] | None:
    """Transaction A: take the job and count an attempt before any side effect."""
    settings = get_settings()
    with session_scope() as session:
        locked = _lock_service_then_job(session, job_id)
        if locked is None:
            return None
        service, job = locked
        if job.status not in ACTIVE:
            return None
        now = utcnow()
        step = Step(session, job, service)
        if job.cancel_requested:
            _end(step, "cancelled")
            return None
        if job.deadline_at is not None and now > job.deadline_at:
            message = f"job did not finish within {settings.job_deadline_seconds}s"
            _finish_failed(step, failure_info("JobDeadlineExceeded", message))
            return None
        if job.status == "running" and job.phase != "apply":
            return job.phase, job.attempts
        if job.status == "running" and job.lease_expires_at and job.lease_expires_at > now:
            return None  # another worker is inside its apply step
        if not handlers.may_start(step):
            job.next_check_at = now + timedelta(seconds=0.5)
            return None
        if job.attempts >= job.max_attempts:
            last = job.error or {}
            message = (
                f"gave up after {job.attempts} attempts; last error: "
                f"{last.get('reason', 'worker lost')}: {last.get('message', 'no result recorded')}"
            )
            _finish_failed(step, failure_info("AttemptsExhausted", message))
            return None
        if job.status == "queued":
            transition_job(job, "running")
            handlers.begin(step)
        job.attempts += 1
        job.phase = "apply"
        job.lease_expires_at = now + timedelta(seconds=settings.job_lease_seconds)
        job.next_check_at = job.lease_expires_at
        jobs_repo.start_attempt(session, job)
        return "apply", job.attempts


def _step(job_id: int, phase: str, attempt: int) -> None:
    """Transaction B: apply and/or check readiness, holding the job's row lock."""
    with session_scope() as session:
        locked = _lock_service_then_job(session, job_id)
        if locked is None:
            return
        service, job = locked
        if job.status != "running" or job.attempts != attempt or job.phase != phase:
            return
        step = Step(session, job, service)
        if phase == "apply":
            try:
                handlers.apply(step)
            except RuntimeError_ as exc:
                _finish_failed(step, failure_info(exc.reason, exc.message))
                return
            except TransientRuntimeError as exc:
                _retry_later(step, failure_info(exc.reason, exc.message))
                return
            job.phase = "wait"
            job.check_count = 0
            job.lease_expires_at = None
        _check(step)


def _check(step: Step) -> None:
    job = step.job
    try:
        result = handlers.check(step)
    except TransientRuntimeError as exc:
        log.warning("readiness check of %s failed: %s", job.uuid, exc.message)
        result = False
    if result is True:
        handlers.complete(step)
        jobs_repo.finish_attempt(step.session, job, "succeeded")
        _end(step, "succeeded")
    elif result is False:
        job.check_count += 1
        job.next_check_at = utcnow() + timedelta(seconds=backoff(job.check_count))
    else:
        _finish_failed(step, result)


def _retry_later(step: Step, failure: dict[str, Any]) -> None:
    """A transient failure of the apply step: record it, try again after a backoff."""
    job = step.job
    jobs_repo.finish_attempt(step.session, job, "failed", failure)
    job.error = failure
    if job.attempts >= job.max_attempts:
        _finish_failed(step, failure)
        return
    job.lease_expires_at = None
    job.next_check_at = utcnow() + timedelta(seconds=backoff(job.attempts + 2))


def _finish_failed(step: Step, failure: dict[str, Any]) -> None:
    jobs_repo.finish_attempt(step.session, step.job, "failed", failure)
    step.job.error = failure
    handlers.fail(step, failure)
    _end(step, "failed")


def _end(step: Step, status: str) -> None:
    """Move the job to a terminal status and run the job-ended hooks."""
    job = step.job
    if status == "cancelled":
        jobs_repo.finish_attempt(step.session, job, "cancelled")
        handlers.cancel(step)
        if job.error is None:
            job.error = failure_info("Cancelled", "the job was cancelled")
    transition_job(job, status)
    for hook in job_ended_hooks:
        hook(step.session, job, step.service)
    log.info("job %s %s", job.uuid, status)


__all__ = ["advance_job", "after_commit", "backoff", "job_ended_hooks"]
