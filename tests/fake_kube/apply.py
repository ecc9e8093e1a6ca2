"""Server-side apply: field ownership sets per manager, merge and removal of dropped fields."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

Path = tuple[str, ...]
MISSING: Any = object()
UNTRACKED_META = {
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
    "generateName",
}

# x-kubernetes-list-map-keys for associative lists (a subset of the built-in API types).
SSA_LIST_KEYS: dict[str, tuple[str, ...]] = {
    "containers": ("name",),
    "initContainers": ("name",),
    "ephemeralContainers": ("name",),
    "env": ("name",),
    "volumes": ("name",),
    "volumeMounts": ("mountPath",),
    "volumeDevices": ("devicePath",),
    "imagePullSecrets": ("name",),
    "conditions": ("type",),
    "ownerReferences": ("uid",),
    "hostAliases": ("ip",),
    "resourceClaims": ("name",),
    "topologySpreadConstraints": ("topologyKey", "whenUnsatisfiable"),
}
_KEY_DEFAULTS = {"protocol": "TCP"}


@dataclass
class ManagedEntry:
    """Field set owned by one (manager, operation, subresource)."""

    paths: set[Path] = field(default_factory=set)
    time: str = ""
    api_version: str = ""


Managers = dict[tuple[str, str, str], ManagedEntry]


class ApplyConflict(Exception):
    """Fields owned by other managers would change (and force was not set)."""

    def __init__(self, conflicts: list[tuple[str, Path]]) -> None:
        super().__init__("apply conflict")
        self.conflicts = conflicts


def copy_managers(managers: Managers) -> Managers:
    """Deep-enough copy so a write can modify ownership without touching the stored entry."""
    return {k: ManagedEntry(set(v.paths), v.time, v.api_version) for k, v in managers.items()}


def list_keys(field_name: str | None, items: list[Any]) -> tuple[str, ...] | None:
    """Map keys of an associative list, or None when the list is atomic."""
    if field_name == "ports":
        dicts = [i for i in items if isinstance(i, dict)]
        keys: tuple[str, ...] | None
        keys = ("containerPort", "protocol") if dicts and "containerPort" in dicts[0] else None
        keys = keys or ("port", "protocol")
    else:
        keys = SSA_LIST_KEYS.get(field_name or "")
    if keys is None or not items:
        return keys
    for item in items:
        if not isinstance(item, dict) or keys[0] not in item:
            return None
    return keys


def item_key(item: dict[str, Any], keys: tuple[str, ...]) -> str:
    """Path element for a list item, e.g. k:{"name":"app"}."""
    ident = {k: item.get(k, _KEY_DEFAULTS.get(k)) for k in keys}
    return "k:" + json.dumps(ident, separators=(",", ":"))


def tracked(obj: dict[str, Any] | None, status: bool = False) -> dict[str, Any]:
    """The part of an object whose fields are ownership-tracked (spec or status side)."""
    if not obj:
        return {}
    if status:
        return {"status": obj["status"]} if "status" in obj else {}
    out = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "status")}
    meta = out.get("metadata")
    if isinstance(meta, dict):
        out["metadata"] = {k: v for k, v in meta.items() if k not in UNTRACKED_META}
        if not out["metadata"]:
            del out["metadata"]
    return out


def field_paths(obj: Any, prefix: Path = (), name: str | None = None) -> set[Path]:
    """Leaf field paths of a value (list items of associative lists become k: elements)."""
    out: set[Path] = set()
    if isinstance(obj, dict):
        if not obj and prefix:
            out.add(prefix)
        for k, v in obj.items():
            if v is None:
                continue
            out |= field_paths(v, (*prefix, "f:" + k), k)
        return out
    if isinstance(obj, list):
        keys = list_keys(name, obj)
        if keys is None or not obj:
            out.add(prefix)
            return out
        for item in obj:
            p = (*prefix, item_key(item, keys))
            out.add(p)
            out |= field_paths(item, p, None)
        return out
    out.add(prefix)
    return out


def _find_item(lst: list[Any], elem: str, name: str | None) -> int | None:
    keys = list_keys(name, lst)
    if keys is None:
        return None
    for i, item in enumerate(lst):
        if item_key(item, keys) == elem:
            return i
    return None


def get_at(obj: Any, path: Path) -> Any:
    """Value at a field path, or MISSING."""
    cur = obj
    name: str | None = None
    for elem in path:
        if elem.startswith("f:"):
            if not isinstance(cur, dict) or elem[2:] not in cur:
                return MISSING
            name = elem[2:]
            cur = cur[elem[2:]]
        else:
            if not isinstance(cur, list):
                return MISSING
            idx = _find_item(cur, elem, name)
            if idx is None:
                return MISSING
            cur = cur[idx]
            name = None
    return cur


def remove_at(obj: Any, path: Path) -> bool:
    """Remove the field/item at path in place; True when something was removed."""
    parent = get_at(obj, path[:-1]) if len(path) > 1 else obj
    last = path[-1]
    if parent is MISSING:
        return False
    if last.startswith("f:"):
        if isinstance(parent, dict) and last[2:] in parent:
            del parent[last[2:]]
            return True
        return False
    if isinstance(parent, list):
        name = path[-2][2:] if len(path) > 1 and path[-2].startswith("f:") else None
        idx = _find_item(parent, last, name)
        if idx is not None:
            parent.pop(idx)
            return True
    return False


def apply_merge(live: Any, applied: Any, name: str | None = None) -> Any:
    """Merge an applied configuration into a live value (maps merge, keyed lists merge)."""
    if isinstance(applied, dict):
        out = dict(live) if isinstance(live, dict) else {}
        for k, v in applied.items():
            if v is None:
                continue
            out[k] = apply_merge(out.get(k), v, k)
        return out
    if isinstance(applied, list):
        keys = list_keys(name, applied)
        if keys is None or not isinstance(live, list) or list_keys(name, live) is None:
            return copy.deepcopy(applied)
        live_by_key = {item_key(x, keys): x for x in live}
        seen: set[str] = set()
        result: list[Any] = []
        for item in applied:
            k = item_key(item, keys)
            seen.add(k)
            result.append(apply_merge(live_by_key.get(k), item))
        result.extend(x for x in live if item_key(x, keys) not in seen)
        return result
    return copy.deepcopy(applied)


def _prefixes(paths: set[Path]) -> set[Path]:
    out: set[Path] = set()
    for p in paths:
        for i in range(1, len(p) + 1):
            out.add(p[:i])
    return out


def _prune_empty(obj: dict[str, Any], path: Path, keep: set[Path]) -> None:
    """Drop maps left empty by a removal, walking up from path."""
    for i in range(len(path) - 1, 0, -1):
        anc = path[:i]
        if not anc[-1].startswith("f:") or anc in keep:
            return
        val = get_at(obj, anc)
        if isinstance(val, dict) and not val:
            remove_at(obj, anc)
        else:
            return


def server_side_apply(
    live: dict[str, Any] | None,
    applied: dict[str, Any],
    managers: Managers,
    manager: str,
    force: bool,
    api_version: str,
    now: str,
    subresource: str = "",
) -> dict[str, Any]:
    """Apply `applied` for `manager`; mutates `managers`, returns the merged object."""
    is_status = subresource == "status"
    applied_t = tracked(applied, is_status)
    new_paths = field_paths(applied_t)
    me = (manager, "Apply", subresource)
    conflicts: list[tuple[str, Path]] = []
    live_obj = live or {}
    for key, entry in managers.items():
        if key[0] == manager:
            continue
        for p in entry.paths & new_paths:
            if get_at(live_obj, p) != get_at(applied_t, p):
                conflicts.append((key[0], p))
    if conflicts and not force:
        raise ApplyConflict(sorted(conflicts))
    for owner, p in conflicts:
        for key, entry in managers.items():
            if key[0] == owner:
                entry.paths.discard(p)
    prev = managers[me].paths if me in managers else set()
    others: set[Path] = set()
    for key, entry in managers.items():
        if key != me:
            others |= entry.paths
    other_prefixes = _prefixes(others)
    keep = new_paths | other_prefixes
    result = copy.deepcopy(live_obj)
    for p in sorted(prev - new_paths, key=len):
        if p in other_prefixes:
            continue
        if remove_at(result, p):
            _prune_empty(result, p, keep)
    merge_src = {k: v for k, v in applied.items() if is_status or k != "status"}
    meta = merge_src.get("metadata")
    if isinstance(meta, dict) and "managedFields" in meta:
        merge_src["metadata"] = {k: v for k, v in meta.items() if k != "managedFields"}
    result = apply_merge(result, merge_src)
    mine = managers.get(me)
    if mine is None or mine.paths != new_paths or not mine.time:
        managers[me] = ManagedEntry(set(new_paths), now, api_version)
    if not new_paths:
        managers.pop(me, None)
    merged: dict[str, Any] = result
    return merged


def grant(
    managers: Managers, key: tuple[str, str, str], paths: set[Path], now: str, api_version: str
) -> None:
    """Give `key` ownership of paths (an Update), taking them away from everybody else."""
    for other, entry in list(managers.items()):
        if other != key:
            entry.paths -= paths
            if not entry.paths:
                del managers[other]
    mine = managers.get(key)
    if mine is None:
        managers[key] = ManagedEntry(set(paths), now, api_version)
    elif not paths <= mine.paths:
        mine.paths |= paths
        mine.time = now


def track_update(
    old: dict[str, Any] | None,
    new: dict[str, Any],
    managers: Managers,
    manager: str,
    now: str,
    api_version: str,
    subresource: str = "",
) -> None:
    """Record an Update-operation write: changed fields move to `manager`."""
    is_status = subresource == "status"
    old_t, new_t = tracked(old, is_status), tracked(new, is_status)
    new_paths = field_paths(new_t)
    if old is None:
        changed = new_paths
        gone: set[Path] = set()
    else:
        changed = {p for p in new_paths if get_at(old_t, p) != get_at(new_t, p)}
        gone = field_paths(old_t) - new_paths
    for key, entry in list(managers.items()):
        entry.paths -= gone
        if not entry.paths:
            del managers[key]
    if changed:
        grant(managers, (manager, "Update", subresource), changed, now, api_version)


def fields_v1(paths: set[Path]) -> dict[str, Any]:
    """Render a path set as a FieldsV1 tree (shared result: treat as read-only)."""
    return _fields_v1(frozenset(paths))


@lru_cache(maxsize=8192)
def _fields_v1(paths: frozenset[Path]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for p in paths:
        node = root
        for elem in p:
            node = node.setdefault(elem, {})
            if elem.startswith("k:"):
                node.setdefault(".", {})
    return _sorted_tree(root)


def _sorted_tree(node: dict[str, Any]) -> dict[str, Any]:
    return {k: _sorted_tree(node[k]) for k in sorted(node)}


def render_managed_fields(managers: Managers) -> list[dict[str, Any]]:
    """metadata.managedFields entries for a manager table."""
    out: list[dict[str, Any]] = []
    for (mgr, op, sub), entry in managers.items():
        if not entry.paths:
            continue
        item: dict[str, Any] = {
            "manager": mgr,
            "operation": op,
            "apiVersion": entry.api_version,
            "time": entry.time,
            "fieldsType": "FieldsV1",
            "fieldsV1": fields_v1(entry.paths),
        }
        if sub:
            item["subresource"] = sub
        out.append(item)
    return out


def path_to_str(path: Path) -> str:
    """Render a path the way conflict messages show it (.spec.replicas)."""
    out = ""
    for elem in path:
        if elem.startswith("f:"):
            out += "." + elem[2:]
        else:
            ident = json.loads(elem[2:])
            out += "[" + ",".join(f"{k}={json.dumps(v)}" for k, v in ident.items()) + "]"
    return out
