"""HTTP control API under /_fake/ mirroring the FakeKube Python methods."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from .behavior import Behavior

if TYPE_CHECKING:
    from .fake import FakeKube

CLUSTER_NS = ("-", "_")


def _behavior(body: dict[str, Any]) -> Behavior:
    return Behavior.from_dict(body.get("behavior") if "behavior" in body else body)


def _ns(ns: str) -> str:
    return "" if ns in CLUSTER_NS else ns


def handle(fake: FakeKube, method: str, path: str, raw: bytes) -> tuple[int, Any]:
    """Dispatch one control request; returns (status code, JSON body)."""
    try:
        body = json.loads(raw) if raw.strip() else {}
    except ValueError as exc:
        return 400, {"error": f"invalid JSON: {exc}"}
    parts = [p for p in path.split("/") if p][1:]
    try:
        return _dispatch(fake, method, parts, body if isinstance(body, dict) else {})
    except (KeyError, ValueError, TypeError) as exc:
        return 400, {"error": str(exc)}


def _dispatch(
    fake: FakeKube, method: str, parts: list[str], body: dict[str, Any]
) -> tuple[int, Any]:
    ok = {"ok": True}
    if parts == ["healthz"]:
        return 200, ok
    if method == "POST" and parts == ["reset"]:
        fake.reset()
        return 200, ok
    if parts == ["rules"]:
        if method == "POST":
            fake.add_rule(body["name_regex"], _behavior(body), body.get("namespace"))
            return 200, ok
        if method == "DELETE":
            fake.clear_rules()
            return 200, ok
    if method == "POST" and parts == ["default-behavior"]:
        fake.set_default_behavior(_behavior(body))
        return 200, ok
    if method == "POST" and parts == ["faults"]:
        allowed = {"error_rate", "codes", "retry_after", "hang_rate", "hang_seconds", "path_regex"}
        kwargs = {k: v for k, v in body.items() if k in allowed}
        if "codes" in kwargs:
            kwargs["codes"] = tuple(kwargs["codes"])
        fake.set_faults(**kwargs)
        return 200, ok
    if method == "POST" and parts == ["latency"]:
        fake.set_latency(float(body.get("seconds", 0.0)))
        return 200, ok
    if parts == ["stats"] and method == "GET":
        return 200, fake.stats()
    if parts == ["stats", "reset"] and method == "POST":
        fake.reset_stats()
        return 200, ok
    if len(parts) == 4 and parts[0] == "deployments" and method == "POST":
        ns, name = parts[1], parts[2]
        if parts[3] == "behavior":
            fake.set_behavior(ns, name, _behavior(body))
            return 200, ok
        if parts[3] == "replicas":
            fake.set_replicas(ns, name, int(body["replicas"]))
            return 200, ok
    if parts and parts[0] == "objects":
        if method == "DELETE" and len(parts) == 4:
            fake.delete_object(parts[1], _ns(parts[2]), parts[3])
            return 200, ok
        if method == "GET" and len(parts) == 4:
            obj = fake.get_object(None, parts[1], _ns(parts[2]), parts[3])
            return (200, obj) if obj is not None else (404, {"error": "not found"})
        if method == "GET" and len(parts) in (2, 3):
            space = _ns(parts[2]) if len(parts) == 3 else None
            return 200, {"items": fake.list_objects(parts[1], space)}
    if parts and parts[0] == "applied" and method == "GET" and len(parts) == 4:
        return 200, {"items": fake.applied_bodies(parts[1], _ns(parts[2]), parts[3])}
    return 404, {"error": f"unknown control endpoint {method} /_fake/{'/'.join(parts)}"}
