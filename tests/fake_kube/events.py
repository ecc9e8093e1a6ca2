"""Event objects emitted by the simulated controllers and kubelet."""

from __future__ import annotations

import uuid
from typing import Any

from .resources import BY_PLURAL
from .store import Store, now_iso

EVENT = BY_PLURAL["events"]
MAX_EVENTS = 5000  # like the real event TTL, old Events go away (oldest first past this count)


def owner_ref(api_version: str, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    """A controller ownerReference pointing at obj."""
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": obj["metadata"]["name"],
        "uid": obj["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def emit_event(
    store: Store,
    involved: dict[str, Any],
    etype: str,
    reason: str,
    message: str,
    component: str,
    host: str | None = None,
) -> None:
    """Store a core/v1 Event about `involved` (caller holds the store lock)."""
    meta = involved["metadata"]
    ns = meta.get("namespace", "default")
    ts = now_iso()
    source: dict[str, Any] = {"component": component}
    if host:
        source["host"] = host
    event_meta = {
        "name": f"{meta['name']}.{uuid.uuid4().hex[:16]}",
        "namespace": ns,
        "uid": str(uuid.uuid4()),
        "creationTimestamp": ts,
    }
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": event_meta,
        "involvedObject": {
            "kind": involved.get("kind"),
            "namespace": ns,
            "name": meta["name"],
            "uid": meta.get("uid"),
            "apiVersion": involved.get("apiVersion"),
            "resourceVersion": meta.get("resourceVersion", ""),
        },
        "reason": reason,
        "message": message,
        "source": source,
        "firstTimestamp": ts,
        "lastTimestamp": ts,
        "count": 1,
        "type": etype,
        "eventTime": None,
        "reportingComponent": component,
        "reportingInstance": host or "",
    }
    store.commit(EVENT, event, {})
    store.event_order.append((ns, str(event_meta["name"])))
    while len(store.event_order) > MAX_EVENTS:
        old_ns, old_name = store.event_order.popleft()
        store.remove(EVENT, old_ns, old_name)
