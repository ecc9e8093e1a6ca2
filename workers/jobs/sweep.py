"""Remove versions whose grace period has passed (retired canaries, failed updates)."""

from __future__ import annotations

import logging

from sqlalchemy import select

from db.engine import session_scope
from db.models import Job, ServiceVersion
from db.repositories import services as services_repo
from db.states import utcnow
from workers.jobs.specs import version_spec
from workers.runtime import get_runtime
from workers.runtime.base import TransientRuntimeError

log = logging.getLogger(__name__)


def remove_retired_versions(limit: int = 50) -> int:
    """Delete the runtime objects of versions past their grace period; returns how many."""
    with session_scope() as session:
        ids = session.execute(
            select(ServiceVersion.id, ServiceVersion.service_id)
            .where(
                ServiceVersion.status.in_(("retiring", "failed")),
                ServiceVersion.remove_after.is_not(None),
                ServiceVersion.remove_after <= utcnow(),
            )
            .limit(limit)
        ).all()
    removed = 0
    for version_id, service_id in ids:
        with session_scope() as session:
            # Service first, then version: the order every writer uses.
            service = services_repo.lock_service_if_free(session, service_id)
            if service is None:
                continue
            version = session.scalar(
                select(ServiceVersion)
                .where(ServiceVersion.id == version_id)
                .with_for_update(skip_locked=True)
            )
            if version is None or version.status not in ("retiring", "failed"):
                continue
            busy = session.scalar(
                select(Job.id).where(
                    Job.service_id == version.service_id,
                    Job.status == "running",
                    Job.version_id == version.id,
                )
            )
            if busy is not None:
                continue
            try:
                get_runtime().delete_version(version_spec(service, version))
            except TransientRuntimeError as exc:
                log.warning("removing %s v%s failed: %s", service.uuid, version.number, exc)
                continue
            version.status = "removed" if version.status == "retiring" else "failed"
            version.remove_after = None
            version.traffic_percent = 0
            version.endpoints = []
            removed += 1
    return removed
