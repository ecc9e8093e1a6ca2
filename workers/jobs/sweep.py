"""Remove versions whose grace period has passed (retired canaries, failed updates)."""

from __future__ import annotations

import logging

from db.engine import session_scope
from db.repositories import jobs as jobs_repo
from db.repositories import services as services_repo
from db.states import utcnow
from workers.jobs.specs import version_spec
from workers.runtime import get_runtime
from workers.runtime.base import TransientRuntimeError

log = logging.getLogger(__name__)


def remove_retired_versions(limit: int = 50) -> int:
    """Delete the runtime objects of versions past their grace period; returns how many."""
    with session_scope() as session:
        ids = services_repo.versions_past_grace(session, utcnow(), limit)
    removed = 0
    for version_id, service_id in ids:
        with session_scope() as session:
            # Service first, then version: the order every writer uses.
            service = services_repo.lock_service_if_free(session, service_id)
            if service is None:
                continue
            version = services_repo.lock_version_if_free(session, version_id)
            if version is None or version.status not in ("retiring", "failed"):
                continue
            if jobs_repo.version_has_running_job(session, version.id):
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
