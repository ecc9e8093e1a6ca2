"""Per-deployment behaviour modes and the pod status each mode produces over time."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

from . import errors as E
from .store import now_iso

MODES = (
    "ready",
    "never_ready",
    "image_pull_backoff",
    "crash_loop",
    "unschedulable",
    "create_container_config_error",
)
ERR_IMAGE_PULL_SECONDS = 1.0  # ErrImagePull shows this long before ImagePullBackOff
CRASH_BACKOFFS = (10, 20, 40, 80, 160, 300)
UNSCHEDULABLE_MSG = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."


@dataclass
class Behavior:
    """How pods of a deployment behave after a rollout starts."""

    mode: str = "ready"
    delay: float = 0.0
    reason: str | None = None
    message: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown behavior mode {self.mode!r}; expected one of {MODES}")
        self.delay = float(self.delay)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Behavior:
        """Build from a JSON dict (control API)."""
        d = d or {}
        return cls(d.get("mode", "ready"), d.get("delay", 0.0), d.get("reason"), d.get("message"))

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return asdict(self)


@dataclass
class PodView:
    """Computed status of one simulated pod at one instant."""

    status: dict[str, Any]
    ready: bool
    scheduled: bool
    next_at: float | None
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)
    ready_since: float = 0.0

    def available(self, min_ready_seconds: float, now: float) -> bool:
        """Ready for at least minReadySeconds."""
        return self.ready and self.ready_since + min_ready_seconds <= now


def _hex(*parts: str, n: int = 64) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:n]


def _cond(
    ctype: str, ok: bool, at: float, reason: str | None = None, message: str | None = None
) -> dict[str, Any]:
    c: dict[str, Any] = {
        "type": ctype,
        "status": "True" if ok else "False",
        "lastProbeTime": None,
        "lastTransitionTime": now_iso(at),
    }
    if reason:
        c["reason"] = reason
    if message:
        c["message"] = message
    return c


def qos_class(containers: list[dict[str, Any]]) -> str:
    """Pod QoS class from container resources."""
    any_res = False
    guaranteed = True
    for c in containers:
        res = c.get("resources") or {}
        lim, req = res.get("limits") or {}, res.get("requests") or {}
        if lim or req:
            any_res = True
        for r in ("cpu", "memory"):
            if r not in lim or req.get(r, lim.get(r)) != lim.get(r):
                guaranteed = False
    if not any_res:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def _config_error_message(containers: list[dict[str, Any]]) -> str:
    for c in containers:
        for src in c.get("envFrom") or []:
            if (src.get("secretRef") or {}).get("name"):
                return f'secret "{src["secretRef"]["name"]}" not found'
            if (src.get("configMapRef") or {}).get("name"):
                return f'configmap "{src["configMapRef"]["name"]}" not found'
        for env in c.get("env") or []:
            ref = (env.get("valueFrom") or {}).get("secretKeyRef")
            if ref and ref.get("name"):
                return f'secret "{ref["name"]}" not found'
    return 'secret "model-credentials" not found'


def _crash_state(start_fail: float, now: float) -> tuple[int, int, float, float | None]:
    """(restartCount, current backoff, time of last restart, time of next restart)."""
    count, at, i = 0, start_fail, 0
    while at <= now:
        count += 1
        last = at
        at += CRASH_BACKOFFS[min(i, len(CRASH_BACKOFFS) - 1)]
        i += 1
    backoff = CRASH_BACKOFFS[min(count - 1, len(CRASH_BACKOFFS) - 1)]
    return count, backoff, last, at


def pod_view(
    b: Behavior,
    pod: dict[str, Any],
    created: float,
    start: float,
    now: float,
    ip: str,
    node_ip: str,
) -> PodView:
    """Status of a pod (created at `created`, behaviour `b` since `start`) as seen at `now`."""
    meta, spec = pod["metadata"], pod.get("spec") or {}
    containers = spec.get("containers") or []
    names = [c.get("name", "") for c in containers]
    fail_at = start + b.delay
    failing = now >= fail_at
    qos = qos_class(containers)
    if b.mode == "unschedulable":
        st: dict[str, Any] = {"phase": "Pending", "qosClass": qos}
        if not failing:
            return PodView(st, False, False, fail_at)
        msg = b.message or UNSCHEDULABLE_MSG
        st["conditions"] = [_cond("PodScheduled", False, fail_at, b.reason or "Unschedulable", msg)]
        return PodView(st, False, False, None, [("Warning", "FailedScheduling", msg)])

    ready = b.mode == "ready" and failing
    unready_msg = f"containers with unready status: [{' '.join(names)}]"
    if b.mode == "never_ready" and b.message:
        unready_msg = b.message
    phase = "Running"
    events: list[tuple[str, str, str]] = []
    next_at: float | None = fail_at if not failing and b.mode != "never_ready" else None
    statuses = []
    for c in containers:
        image = str(c.get("image", ""))
        cid = "containerd://" + _hex(meta.get("uid", ""), c.get("name", ""))
        cs: dict[str, Any] = {
            "name": c.get("name"),
            "state": {},
            "lastState": {},
            "ready": ready,
            "restartCount": 0,
            "image": image,
            "imageID": f"{image.split(':')[0]}@sha256:{_hex(image)}",
            "containerID": cid,
            "started": True,
        }
        running = {"running": {"startedAt": now_iso(start)}}
        if b.mode in ("ready", "never_ready") or not failing:
            if b.mode in ("image_pull_backoff", "create_container_config_error"):
                phase = "Pending"
                cs.update(
                    state={"waiting": {"reason": "ContainerCreating"}}, imageID="", started=False
                )
                cs.pop("containerID")
            else:
                cs["state"] = running
        elif b.mode == "image_pull_backoff":
            phase = "Pending"
            err = now < fail_at + ERR_IMAGE_PULL_SECONDS
            pull_err = (
                f'failed to pull and unpack image "{image}": failed to resolve reference '
                f'"{image}": {image}: not found'
            )
            if err:
                reason = "ErrImagePull"
                msg = b.message or f"rpc error: code = NotFound desc = {pull_err}"
                next_at = fail_at + ERR_IMAGE_PULL_SECONDS
                events.append(("Warning", "Failed", f'Failed to pull image "{image}": {msg}'))
            else:
                reason = b.reason or "ImagePullBackOff"
                msg = b.message or f'Back-off pulling image "{image}"'
                events.append(("Normal", "BackOff", f'Back-off pulling image "{image}"'))
            cs.update(
                state={"waiting": {"reason": reason, "message": msg}}, imageID="", started=False
            )
            cs.pop("containerID")
        elif b.mode == "create_container_config_error":
            phase = "Pending"
            msg = b.message or _config_error_message(containers)
            cs.update(
                state={
                    "waiting": {"reason": b.reason or "CreateContainerConfigError", "message": msg}
                },
                started=False,
            )
            cs.pop("containerID")
            events.append(("Warning", "Failed", f"Error: {msg}"))
        else:  # crash_loop
            count, backoff, last, nxt = _crash_state(fail_at, now)
            next_at = nxt
            term_reason = b.reason or "Error"
            terminated: dict[str, Any] = {
                "exitCode": 137 if term_reason == "OOMKilled" else 1,
                "reason": term_reason,
                "startedAt": now_iso(max(start, last - 1)),
                "finishedAt": now_iso(last),
                "containerID": "containerd://" + _hex(meta.get("uid", ""), str(count)),
            }
            if b.message:
                terminated["message"] = b.message
            pod_ref = f"{meta.get('name')}_{meta.get('namespace')}({meta.get('uid')})"
            cs.update(
                state={
                    "waiting": {
                        "reason": "CrashLoopBackOff",
                        "message": f"back-off {backoff}s restarting failed "
                        f"container={c.get('name')} pod={pod_ref}",
                    }
                },
                lastState={"terminated": terminated},
                restartCount=count,
                started=False,
                containerID=terminated["containerID"],
            )
            events.append(
                (
                    "Warning",
                    "BackOff",
                    f"Back-off restarting failed container {c.get('name')} in pod {pod_ref}",
                )
            )
        statuses.append(cs)
    ready_at = fail_at if ready else start
    conditions = [
        _cond("PodReadyToStartContainers", True, created),
        _cond("Initialized", True, created),
        _cond(
            "Ready",
            ready,
            ready_at,
            None if ready else "ContainersNotReady",
            None if ready else unready_msg,
        ),
        _cond(
            "ContainersReady",
            ready,
            ready_at,
            None if ready else "ContainersNotReady",
            None if ready else unready_msg,
        ),
        _cond("PodScheduled", True, created),
    ]
    st = {
        "phase": phase,
        "conditions": conditions,
        "hostIP": node_ip,
        "hostIPs": [{"ip": node_ip}],
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "startTime": now_iso(created),
        "containerStatuses": statuses,
        "qosClass": qos,
    }
    return PodView(st, ready, True, next_at, events, ready_at)


def pod_log(pod: dict[str, Any], container: str | None) -> str:
    """Text of GET pods/{name}/log, or raise 400 like the kubelet for waiting containers."""
    meta, spec = pod["metadata"], pod.get("spec") or {}
    names = [c.get("name") for c in spec.get("containers") or []]
    if container is None:
        if len(names) != 1:
            raise E.bad_request(
                f"a container name must be specified for pod {meta['name']}, "
                f"choose one of: [{' '.join(map(str, names))}]"
            )
        container = str(names[0])
    elif container not in names:
        raise E.bad_request(f"container {container} is not valid for pod {meta['name']}")
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    cs = next((c for c in statuses if c.get("name") == container), None)
    waiting = ((cs or {}).get("state") or {}).get("waiting") or {}
    reason = waiting.get("reason", "ContainerCreating")
    if cs is None or (reason != "CrashLoopBackOff" and waiting):
        if reason in ("ErrImagePull", "ImagePullBackOff"):
            reason = "trying and failing to pull image"
        raise E.bad_request(
            f'container "{container}" in pod "{meta["name"]}" is waiting to start: {reason}'
        )
    lines = [f"INFO starting model server container={container}", "INFO loading model"]
    if reason == "CrashLoopBackOff":
        lines += [
            "Traceback (most recent call last):",
            '  File "/app/server.py", line 42',
            "RuntimeError: failed to load model",
        ]
    else:
        lines.append("INFO listening on 0.0.0.0:8080")
    return "\n".join(lines) + "\n"
