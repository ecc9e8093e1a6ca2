"""DELETE semantics: preconditions, finalizers, propagation policies and garbage collection."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from . import errors as E
from .apply import copy_managers
from .resources import BY_PLURAL, ResourceInfo
from .store import Entry, now_iso

if TYPE_CHECKING:
    from .ops import Ops


def delete(
    ops: Ops, res: ResourceInfo, ns: str, name: str, options: dict[str, Any], dry_run: bool
) -> dict[str, Any]:
    """DELETE an object (with garbage collection of dependents)."""
    old = ops.require(res, ns, name)
    meta = old.obj["metadata"]
    pre = options.get("preconditions") or {}
    if pre.get("uid") and pre["uid"] != meta.get("uid"):
        raise E.conflict(
            res,
            name,
            f"Precondition failed: UID in precondition: {pre['uid']}"
            f", UID in object meta: {meta.get('uid')}",
        )
    if pre.get("resourceVersion") and pre["resourceVersion"] != meta.get("resourceVersion"):
        raise E.conflict(
            res,
            name,
            "Precondition failed: ResourceVersion in precondition: "
            f"{pre['resourceVersion']}, ResourceVersion in object "
            f"meta: {meta.get('resourceVersion')}",
        )
    policy = options.get("propagationPolicy")
    if policy is None and options.get("orphanDependents") is True:
        policy = "Orphan"
    if policy not in (None, "Orphan", "Background", "Foreground"):
        raise E.bad_request(f"propagationPolicy: Unsupported value: {policy!r}")
    now = now_iso()
    shown = copy.deepcopy(old.obj)
    shown["metadata"]["deletionTimestamp"] = now
    shown["metadata"]["deletionGracePeriodSeconds"] = 0
    if dry_run:
        return _delete_response(res, shown, policy)
    if meta.get("finalizers") and not meta.get("deletionTimestamp"):
        new = copy.deepcopy(old.obj)
        new["metadata"]["deletionTimestamp"] = now
        entry = ops.store.commit(res, new, copy_managers(old.managers))
        ops.notify(res.plural, ns, name)
        return entry.obj
    if meta.get("finalizers"):
        return old.obj
    delete_now(ops, res, ns, name, policy or "Background")
    return _delete_response(res, shown, policy)


def _delete_response(
    res: ResourceInfo, shown: dict[str, Any], policy: str | None
) -> dict[str, Any]:
    if res.plural == "namespaces":
        shown.setdefault("status", {})["phase"] = "Terminating"
        return shown
    if res.plural in ("pods", "services") or policy == "Foreground":
        if policy == "Foreground":
            shown["metadata"]["finalizers"] = ["foregroundDeletion"]
        return shown
    details: dict[str, Any] = {"name": shown["metadata"]["name"]}
    if res.group:
        details["group"] = res.group
    details.update({"kind": res.plural, "uid": shown["metadata"]["uid"]})
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    }


def delete_now(
    ops: Ops, res: ResourceInfo, ns: str, name: str, policy: str = "Background"
) -> Entry | None:
    """Remove an object immediately and garbage-collect what it owns."""
    key_ns = ns if res.namespaced else ""
    entry = ops.store.get(res.plural, key_ns, name)
    if entry is None:
        return None
    if res.plural == "namespaces":
        for plural in list(ops.store.data):
            other = BY_PLURAL[plural]
            if other.namespaced:
                for dep in list(ops.store.entries(plural, name)):
                    ops.store.remove(other, name, dep.obj["metadata"]["name"])
                    ops.notify(plural, name, dep.obj["metadata"]["name"], True)
    removed = ops.store.remove(res, key_ns, name)
    ops.notify(res.plural, key_ns, name, True)
    if res.namespaced:
        _collect(ops, entry.obj["metadata"].get("uid", ""), policy)
    return removed


def _collect(ops: Ops, owner_uid: str, policy: str) -> None:
    """Delete (or orphan) every object owned by owner_uid."""
    for plural, dep_ns, dname in ops.store.dependents(owner_uid):
        dep_res = BY_PLURAL[plural]
        dep = ops.store.get(plural, dep_ns, dname)
        if dep is None:
            continue
        if policy == "Orphan":
            new = copy.deepcopy(dep.obj)
            refs = new["metadata"].get("ownerReferences") or []
            new["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") != owner_uid]
            if not new["metadata"]["ownerReferences"]:
                del new["metadata"]["ownerReferences"]
            ops.store.commit(dep_res, new, copy_managers(dep.managers))
        else:
            delete_now(ops, dep_res, dep_ns, dname, policy)
