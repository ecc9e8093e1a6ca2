"""Batched readiness checks for jobs waiting on a rollout.

Instead of one task (and one or two Kubernetes reads) per waiting job per tick, the dispatcher
reads the rollouts of every due job at once (`Runtime.rollout_statuses`: a few LIST calls per
namespace) and only hands the jobs whose rollout finished — ready or failed — to a worker, which
confirms and records the outcome. Jobs still progressing get their next check scheduled here.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from db.engine import session_scope
from db.models import Job
from db.repositories import jobs as jobs_repo
from db.repositories import services as services_repo
from db.states import utcnow
from workers.jobs.engine import backoff
from workers.jobs.specs import version_spec
from workers.runtime import get_runtime
from workers.runtime.base import TransientRuntimeError

log = logging.getLogger(__name__)
# Kinds that wait on exactly one version (job.version_id).
BATCHABLE = frozenset({"deploy", "update", "promote", "rollback"})


def is_batchable(job: Job) -> bool:
    """A running job in its wait phase whose readiness is one version's rollout."""
    return (
        job.status == "running"
        and job.phase == "wait"
        and job.kind in BATCHABLE
        and job.version_id is not None
    )


def check_waiting(jobs: list[Job]) -> list[Job]:
    """Check the rollouts of waiting jobs at once; returns the jobs a worker must finish."""
    if not jobs:
        return []
    with session_scope() as session:
        rows = services_repo.versions_with_services(
            session, [j.version_id for j in jobs if j.version_id is not None]
        )
    specs = {version.id: version_spec(service, version) for version, service in rows}
    try:
        statuses = get_runtime().rollout_statuses(list(specs.values()))
    except TransientRuntimeError as exc:
        log.warning("batched readiness check failed, checking one by one: %s", exc.message)
        return jobs
    finished: list[Job] = []
    schedule: list[tuple[int, datetime]] = []
    now = utcnow()
    for job in jobs:
        spec = specs.get(job.version_id or 0)
        status = statuses.get((spec.service_uuid, spec.version)) if spec else None
        if status is None or status.state in ("ready", "failed"):
            finished.append(job)
        else:
            delay = backoff(job.check_count + 1)
            schedule.append((job.id, now + timedelta(seconds=delay)))
    if schedule:
        with session_scope() as session:
            jobs_repo.reschedule_checks(session, schedule)
    return finished
