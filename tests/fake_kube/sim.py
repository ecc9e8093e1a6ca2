"""Controller-side simulation state and small helpers shared by the controllers."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from .behavior import Behavior


@dataclass
class PodSim:
    """Controller-side state of one pod."""

    name: str
    rs_hash: str
    created: float
    start: float  # when the current behaviour started for this pod
    behavior: Behavior
    ip: str
    node: tuple[str, str]


@dataclass
class DeploySim:
    """Controller-side state of one deployment."""

    uid: str
    behavior: Behavior = field(default_factory=Behavior)
    override: Behavior | None = None
    rs_hash: str = ""
    revisions: dict[str, int] = field(default_factory=dict)  # pod-template-hash -> revision
    observed_gen: int = 0
    progress_time: float = 0.0
    last_ready: int = 0
    last_updated: int = 0
    pods: dict[str, PodSim] = field(default_factory=dict)
    scheduled: float | None = None
    events_seen: set[tuple[str, str]] = field(default_factory=set)


def template_hash(template: Any) -> str:
    """pod-template-hash: 10 hex characters derived from the pod template."""
    raw = json.dumps(template, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(raw).hexdigest()[:10]


def max_unavailable(spec: dict[str, Any], n: int) -> int:
    """Resolved rollingUpdate.maxUnavailable (0 for Recreate)."""
    strategy = spec.get("strategy") or {}
    if strategy.get("type", "RollingUpdate") != "RollingUpdate" or n == 0:
        return 0
    mu = (strategy.get("rollingUpdate") or {}).get("maxUnavailable", "25%")
    if isinstance(mu, str) and mu.endswith("%"):
        return int(n * int(mu[:-1]) / 100)
    return int(mu)


def omit_zero(d: dict[str, Any]) -> dict[str, Any]:
    """Drop zero/None values, as Go's omitempty does for status counters."""
    return {k: v for k, v in d.items() if v not in (0, None)}
