"""Drift reconcile: compare services that should be serving with what the runtime runs.

A Deployment deleted or scaled behind serveplane's back, or pods crash-looping after the
service was running, turns the service `degraded` with the reason; with SERVEPLANE_SELF_HEAL
the version is re-applied at once. A degraded service whose versions are healthy again
returns to `running`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from db.domain import failure_info
from db.engine import session_scope
from db.models import InferenceService, ServiceVersion
from db.repositories import jobs as jobs_repo
from db.repositories import services as services_repo
from db.settings import get_settings
from db.states import transition_service
from workers.jobs.specs import version_spec
from workers.runtime import get_runtime
from workers.runtime.base import RolloutStatus, RuntimeError_, TransientRuntimeError, VersionSpec

log = logging.getLogger(__name__)
# Called with (session, service) after the reconciler changed a service's status
# (degraded, or back to running); webhooks hook in here.
reconcile_hooks: list[Callable[[Any, InferenceService], None]] = []


def drift(spec: VersionSpec, status: RolloutStatus) -> dict[str, Any] | None:
    """The failure describing how the runtime differs from the version's spec, or None."""
    if status.state == "missing":
        return failure_info(
            "DeploymentMissing",
            status.message or "the version's objects are gone",
        )
    if status.state == "failed":
        return failure_info(
            status.reason or "RolloutFailed",
            status.message or "",
            location=status.location,
            exit_code=status.exit_code,
        )
    desired = status.desired_replicas
    if desired is not None and not spec.autoscale and desired != spec.replicas:
        return failure_info(
            "ReplicasDrift",
            f"runtime wants {desired} replicas, serveplane applied {spec.replicas}",
        )
    if (
        desired is not None
        and spec.autoscale
        and not (spec.min_replicas <= desired <= spec.max_replicas)
    ):
        return failure_info(
            "ReplicasDrift",
            f"runtime wants {desired} replicas, outside {spec.min_replicas}..{spec.max_replicas}",
        )
    return None


def reconcile_services(limit: int = 500) -> dict[str, int]:
    """One reconcile pass; returns counts of services checked, degraded, healed, recovered."""
    counts = {"checked": 0, "degraded": 0, "healed": 0, "recovered": 0}
    runtime = get_runtime()
    with session_scope() as session:
        services = services_repo.idle_serving_services(session, limit)
        pairs: list[tuple[InferenceService, ServiceVersion, VersionSpec]] = []
        for service in services:
            for version in services_repo.serving_versions(session, service.id):
                pairs.append((service, version, version_spec(service, version)))
    if not pairs:
        return counts
    try:
        statuses = runtime.rollout_statuses([spec for _, _, spec in pairs])
    except TransientRuntimeError as exc:
        log.warning("reconcile skipped: %s", exc.message)
        return counts
    problems: dict[int, dict[str, Any]] = {}
    for service, _, spec in pairs:
        status = statuses.get((spec.service_uuid, spec.version))
        if status is None:
            continue
        problem = drift(spec, status)
        if problem and service.id not in problems:
            problems[service.id] = problem
    heal = get_settings().self_heal
    for service in {s.id: s for s, _, _ in pairs}.values():
        counts["checked"] += 1
        _settle(service.id, problems.get(service.id), heal, counts)
    return counts


def _settle(
    service_id: int, problem: dict[str, Any] | None, heal: bool, counts: dict[str, int]
) -> None:
    """Record the outcome for one service under its row lock (skip if a job started)."""
    with session_scope() as session:
        service = services_repo.lock_service_if_free(session, service_id)
        if service is None or service.status not in ("running", "degraded"):
            return
        if jobs_repo.active_job(session, service_id) is not None:
            return
        if problem is None:
            if service.status == "degraded":
                transition_service(session, service, "running", "runtime matches the spec again")
                counts["recovered"] += 1
                for hook in reconcile_hooks:
                    hook(session, service)
            return
        if service.status == "running":
            transition_service(
                session,
                service,
                "degraded",
                f"drift: {problem['reason']}: {problem['message']}",
                failure=problem,
            )
            counts["degraded"] += 1
            for hook in reconcile_hooks:
                hook(session, service)
        elif (
            service.failure != problem
            and service.failure is not None
            and (service.failure.get("reason") != problem["reason"])
        ):
            service.failure = problem
        if heal:
            runtime = get_runtime()
            for version in services_repo.serving_versions(session, service.id):
                try:
                    runtime.apply(version_spec(service, version))
                except (RuntimeError_, TransientRuntimeError) as exc:  # retried next pass
                    log.warning("self-heal of %s failed: %s", service.uuid, exc)
                    return
            counts["healed"] += 1
