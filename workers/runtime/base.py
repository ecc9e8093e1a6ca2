"""The runtime interface: the few operations job handlers need, whatever runs the models."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

RolloutState = Literal["progressing", "ready", "failed", "missing"]


@dataclass(frozen=True)
class VersionSpec:
    """Everything a runtime needs to run one version of one service."""

    service_uuid: str
    service_name: str
    customer_id: int
    version: int
    framework: str
    model_path: str
    model_format: str | None
    replicas: int
    min_replicas: int
    max_replicas: int
    cpu_cores: int
    memory_gb: int
    gpu_count: int
    cpu_target_percent: int

    @property
    def autoscale(self) -> bool:
        """An autoscaler owns the replica count when the bounds differ."""
        return self.max_replicas > self.min_replicas


@dataclass(frozen=True)
class RolloutStatus:
    """Where a version's rollout stands, `kubectl rollout status` style."""

    state: RolloutState
    reason: str | None = None
    message: str | None = None
    location: str | None = None
    exit_code: int | None = None
    desired_replicas: int | None = None
    current_replicas: int | None = None
    ready_replicas: int | None = None
    endpoints: list[str] = field(default_factory=list)


class RuntimeError_(Exception):
    """A runtime operation failed for a reason the user can act on (not transient)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class TransientRuntimeError(Exception):
    """A runtime operation failed for a reason that may pass (retry later)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class Runtime(Protocol):
    """What job handlers use; `kubernetes` and `local` implement it."""

    name: str

    def apply(self, spec: VersionSpec) -> None:
        """Create or update the version's objects (idempotent)."""

    def rollout_status(self, spec: VersionSpec) -> RolloutStatus:
        """Read how far the version's rollout is."""

    def rollout_statuses(self, specs: list[VersionSpec]) -> dict[tuple[str, int], RolloutStatus]:
        """Read several rollouts at once, keyed by (service uuid, version)."""

    def endpoints(self, spec: VersionSpec) -> list[str]:
        """Base URLs of the version's upstreams, for the gateway."""

    def delete_version(self, spec: VersionSpec) -> None:
        """Remove the version's objects (idempotent; gone is fine)."""

    def version_gone(self, spec: VersionSpec) -> bool:
        """True once nothing of the version is left."""
