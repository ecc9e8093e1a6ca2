"""Supervision of the local runtime from the dispatcher: restart dead replicas, refresh URLs.

The gateway reads upstreams from `service_versions.endpoints`. With local processes those
change when a replica dies (its port must go at once) or is restarted on a new port, so the
elected dispatcher runs `supervise_local_versions` every second. It does nothing unless
SERVEPLANE_RUNTIME=local.
"""

from __future__ import annotations

import logging

from db.engine import session_scope
from db.repositories import services as services_repo
from db.settings import get_settings
from workers.jobs.specs import version_spec
from workers.runtime import get_runtime
from workers.runtime.base import RuntimeError_, TransientRuntimeError

log = logging.getLogger(__name__)
SUPERVISED = ("ready", "retiring")


def adopt_local_processes() -> None:
    """At worker start: adopt live replica processes, forget records of dead ones."""
    if get_settings().runtime != "local":
        return
    from workers.runtime.local import LocalRuntime

    runtime = get_runtime()
    if isinstance(runtime, LocalRuntime):
        runtime.adopt()


def supervise_local_versions() -> int:
    """Restart dead replicas of ready versions and refresh endpoints; returns rows updated."""
    if get_settings().runtime != "local":
        return 0
    from workers.runtime.local import LocalRuntime

    runtime = get_runtime()
    assert isinstance(runtime, LocalRuntime)
    with session_scope() as session:
        service_ids = services_repo.services_with_versions_in(session, SUPERVISED)
    updated = 0
    for service_id in service_ids:
        # Under the service's row lock, so a job step (which holds it while it applies) and
        # this chore never apply different replica counts; a busy service is skipped.
        with session_scope() as session:
            service = services_repo.lock_service_if_free(session, service_id)
            if service is None or service.status in ("deleting", "deleted"):
                continue
            for version in services_repo.versions_in(session, service_id, SUPERVISED):
                spec = version_spec(service, version)
                if version.status == "ready":
                    try:
                        runtime.repair(spec)
                    except (RuntimeError_, TransientRuntimeError) as exc:
                        log.warning(
                            "cannot restart %s v%d: %s",
                            spec.service_uuid,
                            spec.version,
                            exc.message,
                        )
                endpoints = runtime.endpoints(spec)
                if endpoints != list(version.endpoints or []):
                    version.endpoints = endpoints
                    updated += 1
    return updated
