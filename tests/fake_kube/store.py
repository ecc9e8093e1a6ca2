"""Thread-safe in-memory object store with resourceVersions and a watch event log."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

from .apply import Managers, render_managed_fields
from .resources import ResourceInfo

try:  # orjson is much faster for large list responses; stdlib json is the fallback
    import orjson

    def dumps(obj: Any) -> bytes:
        """Serialize to compact JSON bytes."""
        return orjson.dumps(obj)

except ImportError:  # pragma: no cover

    def dumps(obj: Any) -> bytes:
        """Serialize to compact JSON bytes."""
        return json.dumps(obj, separators=(",", ":")).encode()


META_ORDER = (
    "name",
    "generateName",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
)
TOP_ORDER = ("apiVersion", "kind", "metadata", "spec", "status")


def now_iso(ts: float | None = None) -> str:
    """RFC 3339 timestamp (seconds precision, UTC) as the API server renders it."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if ts is None else ts))


def ordered(obj: dict[str, Any]) -> dict[str, Any]:
    """Reorder top-level and metadata keys the way the server serializes them."""
    out = {k: obj[k] for k in TOP_ORDER if k in obj}
    out.update((k, v) for k, v in obj.items() if k not in out)
    meta = out.get("metadata")
    if isinstance(meta, dict):
        m = {k: meta[k] for k in META_ORDER if k in meta}
        m.update((k, v) for k, v in meta.items() if k not in m)
        out["metadata"] = m
    return out


class Entry:
    """One stored object (treated as immutable) plus ownership and cached JSON."""

    __slots__ = ("_item", "managers", "obj")

    def __init__(self, obj: dict[str, Any], managers: Managers) -> None:
        self.obj = obj
        self.managers = managers
        self._item: bytes | None = None

    def item_bytes(self) -> bytes:
        """JSON of the object without apiVersion/kind (as list items are served)."""
        if self._item is None:
            self._item = dumps(
                {k: v for k, v in self.obj.items() if k not in ("apiVersion", "kind")}
            )
        return self._item

    def full_bytes(self) -> bytes:
        """JSON of the object with apiVersion and kind first."""
        head = dumps({"apiVersion": self.obj.get("apiVersion"), "kind": self.obj.get("kind")})
        item = self.item_bytes()
        return head[:-1] + (b"," + item[1:] if len(item) > 2 else b"}")


EVENT_HISTORY = 20_000  # watch history kept (older resourceVersions get 410 Gone)
WatchEvent = tuple[int, str, str, str, dict[str, Any]]  # rv, type, plural, namespace, object


class Store:
    """All objects, keyed plural -> namespace -> name, guarded by one re-entrant lock."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.rv = 1000
        self.data: dict[str, dict[str, dict[str, Entry]]] = {}
        self.events: deque[WatchEvent] = deque(maxlen=EVENT_HISTORY)
        self.applied: dict[tuple[str, str, str], list[Any]] = {}
        self.owned: dict[str, set[tuple[str, str, str]]] = {}  # owner uid -> dependents
        self.event_order: deque[tuple[str, str]] = deque()  # controller Events, oldest first

    def _index_owners(self, plural: str, ns: str, obj: dict[str, Any], add: bool) -> None:
        for ref in obj["metadata"].get("ownerReferences") or ():
            uid = ref.get("uid")
            if not uid:
                continue
            deps = self.owned.setdefault(uid, set())
            if add:
                deps.add((plural, ns, obj["metadata"]["name"]))
            else:
                deps.discard((plural, ns, obj["metadata"]["name"]))
                if not deps:
                    del self.owned[uid]

    def dependents(self, uid: str) -> list[tuple[str, str, str]]:
        """(plural, namespace, name) of objects whose ownerReferences name this uid."""
        return sorted(self.owned.get(uid, ()))

    def clear(self) -> None:
        """Drop every object, event and recorded body (resourceVersions keep increasing)."""
        with self.lock:
            self.data.clear()
            self.events.clear()
            self.applied.clear()
            self.owned.clear()
            self.event_order.clear()

    def next_rv(self) -> int:
        """Allocate the next resourceVersion."""
        self.rv += 1
        return self.rv

    def get(self, plural: str, ns: str, name: str) -> Entry | None:
        """Look one object up."""
        return self.data.get(plural, {}).get(ns, {}).get(name)

    def entries(self, plural: str, ns: str | None = None) -> Iterator[Entry]:
        """Objects of a type in key order, optionally within one namespace."""
        by_ns = self.data.get(plural, {})
        spaces = [ns] if ns is not None else sorted(by_ns)
        for space in spaces:
            names = by_ns.get(space)
            if names:
                for name in sorted(names):
                    yield names[name]

    def count(self, plural: str) -> int:
        """Number of objects of a type."""
        return sum(len(v) for v in self.data.get(plural, {}).values())

    def namespaces_with(self, plural: str) -> list[str]:
        """Namespaces holding at least one object of a type."""
        return [ns for ns, names in self.data.get(plural, {}).items() if names]

    def commit(self, res: ResourceInfo, obj: dict[str, Any], managers: Managers) -> Entry:
        """Store a new version of an object: bump resourceVersion and log a watch event."""
        meta = dict(obj["metadata"])  # callers may share everything but this copy
        ns = meta.get("namespace", "") if res.namespaced else ""
        name = meta["name"]
        rv = self.next_rv()
        meta["resourceVersion"] = str(rv)
        if managers:
            meta["managedFields"] = render_managed_fields(managers)
        else:
            meta.pop("managedFields", None)
        obj = ordered({**obj, "metadata": meta})
        names = self.data.setdefault(res.plural, {}).setdefault(ns, {})
        old = names.get(name)
        etype = "MODIFIED" if old is not None else "ADDED"
        if old is not None:
            self._index_owners(res.plural, ns, old.obj, False)
        self._index_owners(res.plural, ns, obj, True)
        entry = Entry(obj, managers)
        names[name] = entry
        self.events.append((rv, etype, res.plural, ns, obj))
        return entry

    def remove(self, res: ResourceInfo, ns: str, name: str) -> Entry | None:
        """Delete an object and log a DELETED event; returns the removed entry."""
        names = self.data.get(res.plural, {}).get(ns if res.namespaced else "", {})
        entry = names.pop(name, None)
        if entry is None:
            return None
        self._index_owners(res.plural, ns, entry.obj, False)
        rv = self.next_rv()
        obj = dict(entry.obj)
        obj["metadata"] = dict(obj["metadata"], resourceVersion=str(rv))
        self.events.append((rv, "DELETED", res.plural, ns, obj))
        return Entry(obj, entry.managers)

    def record_body(self, plural: str, ns: str, name: str, body: Any) -> None:
        """Remember a body a client sent for an object (for applied_bodies)."""
        self.applied.setdefault((plural, ns, name), []).append(body)
