"""Judge a Deployment rollout the way `kubectl rollout status` does, plus stuck pods."""

from __future__ import annotations

from typing import Any

from workers.runtime.base import RolloutStatus

# Container waiting reasons that will not fix themselves.
FATAL_WAITING = {
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
}


def deployment_progress(deployment: dict[str, Any]) -> RolloutStatus:
    """Ready, failed (progress deadline) or progressing, from the Deployment alone."""
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    generation = (deployment.get("metadata") or {}).get("generation", 0)
    desired = spec.get("replicas", 1)
    updated = status.get("updatedReplicas", 0)
    total = status.get("replicas", 0)
    available = status.get("availableReplicas", 0)
    counts = {
        "desired_replicas": desired,
        "current_replicas": total,
        "ready_replicas": status.get("readyReplicas", 0),
    }
    for condition in status.get("conditions") or []:
        if (
            condition.get("type") == "Progressing"
            and condition.get("reason") == "ProgressDeadlineExceeded"
        ):
            return RolloutStatus(
                "failed",
                reason="ProgressDeadlineExceeded",
                message=condition.get("message") or "rollout exceeded its progress deadline",
                **counts,
            )
    if status.get("observedGeneration", 0) < generation:
        return RolloutStatus("progressing", reason="WaitingForObservedGeneration", **counts)
    if updated < desired:
        return RolloutStatus("progressing", reason="UpdatingReplicas", **counts)
    if total > updated:
        return RolloutStatus("progressing", reason="OldReplicasPending", **counts)
    if available < updated:
        return RolloutStatus("progressing", reason="WaitingForAvailable", **counts)
    return RolloutStatus("ready", **counts)


def stuck_pod(pods: list[dict[str, Any]]) -> RolloutStatus | None:
    """A failure when any pod is stuck in a state that will not resolve itself."""
    for pod in pods:
        name = (pod.get("metadata") or {}).get("name", "?")
        status = pod.get("status") or {}
        for condition in status.get("conditions") or []:
            if (
                condition.get("type") == "PodScheduled"
                and condition.get("status") == "False"
                and condition.get("reason") == "Unschedulable"
            ):
                return RolloutStatus(
                    "failed",
                    reason="Unschedulable",
                    message=condition.get("message") or "pod cannot be scheduled",
                    location=f"pod/{name}",
                )
        statuses = (status.get("initContainerStatuses") or []) + (
            status.get("containerStatuses") or []
        )
        for container in statuses:
            waiting = (container.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason")
            if reason in FATAL_WAITING:
                terminated = (container.get("lastState") or {}).get("terminated") or {}
                return RolloutStatus(
                    "failed",
                    reason=reason,
                    message=waiting.get("message") or reason,
                    location=f"pod/{name}/container/{container.get('name', '?')}",
                    exit_code=terminated.get("exitCode"),
                )
    return None
