"""Reads and writes with API-server semantics (create, update, patch, apply, delete, scale)."""

from __future__ import annotations

import copy
import json
import random
import uuid
from collections.abc import Callable
from typing import Any

from . import deletion
from . import errors as E
from .apply import (
    ApplyConflict,
    Managers,
    copy_managers,
    path_to_str,
    server_side_apply,
    track_update,
)
from .behavior import qos_class
from .bodies import parse_apply_body, parse_json, patch_document
from .defaults import apply_defaults
from .errors import ApiError, FieldError
from .resources import ResourceInfo
from .selectors import selector_to_string
from .store import Entry, Store, now_iso
from .validation import validate

APPLY = "application/apply-patch+yaml"
PATCH_TYPES = [
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    APPLY,
]
NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"
Hook = Callable[[str, str, str, bool], None]


def random_suffix(n: int = 5) -> str:
    """Random suffix like the ones generateName and ReplicaSets produce."""
    return "".join(random.choice(NAME_CHARS) for _ in range(n))


def _strip_volatile(obj: dict[str, Any]) -> dict[str, Any]:
    meta = {
        k: v
        for k, v in obj.get("metadata", {}).items()
        if k not in ("resourceVersion", "managedFields")
    }
    return {**obj, "metadata": meta}


def _same_managers(a: Managers, b: Managers) -> bool:
    return {k: v.paths for k, v in a.items()} == {k: v.paths for k, v in b.items()}


class Ops:
    """API operations on a Store; `hooks` are told about every committed change."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.hooks: list[Hook] = []
        self._ip = 10

    # ---- helpers -------------------------------------------------------------------------
    def notify(self, plural: str, ns: str, name: str, deleted: bool = False) -> None:
        """Tell hooks (the controller) about a change."""
        for hook in self.hooks:
            hook(plural, ns, name, deleted)

    def require(self, res: ResourceInfo, ns: str, name: str) -> Entry:
        """Get an object or raise 404."""
        entry = self.store.get(res.plural, ns if res.namespaced else "", name)
        if entry is None:
            raise E.not_found(res, name)
        return entry

    def require_namespace(self, res: ResourceInfo, ns: str) -> None:
        """Raise 404 when a namespaced object's namespace does not exist."""
        if res.namespaced and self.store.get("namespaces", "", ns) is None:
            raise E.namespace_not_found(ns)

    def allocate_ip(self) -> str:
        """Next ClusterIP from 10.96.0.0/16."""
        self._ip += 1
        return f"10.96.{self._ip // 250}.{self._ip % 250 + 1}"

    def _check_identity(self, res: ResourceInfo, ns: str, name: str | None, body: Any) -> None:
        if not isinstance(body, dict):
            raise E.bad_request(f"the object provided is unrecognized (must be of type {res.kind})")
        kind, api_version = body.get("kind"), body.get("apiVersion")
        if kind not in (None, "", res.kind):
            raise E.bad_request(
                f"the kind in the data ({kind}) does not match the expected kind ({res.kind})"
            )
        if api_version not in (None, "", res.api_version):
            raise E.bad_request(
                f"the API version in the data ({api_version}) does not match the "
                f"expected API version ({res.api_version})"
            )
        meta = body.get("metadata") or {}
        if not isinstance(meta, dict):
            raise E.bad_request("metadata must be an object")
        body_ns = meta.get("namespace")
        if res.namespaced and body_ns not in (None, "", ns):
            raise E.bad_request(
                "the namespace of the provided object does not match the "
                "namespace sent on the request"
            )
        body_name = meta.get("name")
        if name is not None and body_name not in (None, "", name):
            raise E.bad_request(
                f"the name of the object ({body_name}) does not match the name on the URL ({name})"
            )

    def _precondition(self, res: ResourceInfo, name: str, body: Any, old: Entry) -> None:
        want = ((body or {}).get("metadata") or {}).get("resourceVersion")
        if want and str(want) != old.obj["metadata"]["resourceVersion"]:
            raise E.conflict(res, name)

    # ---- commit path ---------------------------------------------------------------------
    def finish(
        self,
        res: ResourceInfo,
        ns: str,
        name: str,
        new: dict[str, Any],
        old: Entry | None,
        managers: Managers,
        dry_run: bool,
        update_manager: str | None = None,
        sub: str = "",
    ) -> dict[str, Any]:
        """Bookkeeping, defaulting, validation, generation, no-op detection and commit."""
        now = now_iso()
        meta = new.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise E.bad_request("metadata must be an object")
        meta["name"] = name
        if res.namespaced:
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        new["apiVersion"], new["kind"] = res.api_version, res.kind
        old_obj = old.obj if old else None
        if old_obj is not None:
            om = old_obj["metadata"]
            for k in ("uid", "creationTimestamp", "deletionTimestamp", "generateName"):
                if k in om:
                    meta[k] = om[k]
                else:
                    meta.pop(k, None)
        else:
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now
            for k in ("deletionTimestamp", "managedFields"):
                meta.pop(k, None)
        self._special_defaults(res, new, old_obj)
        apply_defaults(res.plural, new)
        errs = validate(res.plural, new, old_obj)
        if errs:
            raise E.invalid(res, name, errs)
        if res.has_generation:
            if old_obj is None:
                meta["generation"] = 1
            else:
                gen = old_obj["metadata"].get("generation", 1)
                meta["generation"] = gen + (new.get("spec") != old_obj.get("spec"))
        if update_manager is not None:
            track_update(old_obj, new, managers, update_manager, now, res.api_version, sub)
        if (
            old is not None
            and _strip_volatile(old.obj) == _strip_volatile(new)
            and _same_managers(old.managers, managers)
        ):
            return old.obj
        if dry_run:
            meta["resourceVersion"] = old_obj["metadata"]["resourceVersion"] if old_obj else ""
            return new
        if old is not None and meta.get("deletionTimestamp") and not meta.get("finalizers"):
            self.delete_now(res, ns, name)
            return new
        entry = self.store.commit(res, new, managers)
        self.notify(res.plural, ns, name)
        return entry.obj

    def _special_defaults(self, res: ResourceInfo, new: dict[str, Any], old: Any) -> None:
        if res.plural == "services":
            spec = new.setdefault("spec", {})
            old_spec = (old or {}).get("spec") or {}
            if spec.get("type") == "ExternalName":
                return
            if not spec.get("clusterIP"):
                spec["clusterIP"] = old_spec.get("clusterIP") or self.allocate_ip()
            spec["clusterIPs"] = [spec["clusterIP"]]
            if spec.get("type") in ("NodePort", "LoadBalancer"):
                old_ports = {p.get("port"): p.get("nodePort") for p in old_spec.get("ports") or []}
                for p in spec.get("ports") or []:
                    if isinstance(p, dict) and not p.get("nodePort"):
                        p["nodePort"] = old_ports.get(p.get("port")) or random.randint(30000, 32767)
        if res.plural == "pods" and old is None:
            containers = (new.get("spec") or {}).get("containers") or []
            new["status"] = {"phase": "Pending", "qosClass": qos_class(containers)}

    def _keep_status(self, res: ResourceInfo, new: dict[str, Any], old: Entry | None) -> None:
        if not res.has_status:
            return
        old_status = old.obj.get("status") if old else None
        if old is None:
            # A new object starts with an empty status (the server serializes "status": {}).
            new["status"] = (
                {"desiredReplicas": 0} if res.plural == "horizontalpodautoscalers" else {}
            )
        elif old_status is None:
            new.pop("status", None)
        else:
            new["status"] = copy.deepcopy(old_status)

    def _status_only(self, new: dict[str, Any], old: Entry) -> dict[str, Any]:
        out = copy.deepcopy(old.obj)
        if "status" in new:
            out["status"] = new["status"]
        else:
            out.pop("status", None)
        return out

    # ---- verbs ---------------------------------------------------------------------------
    def create(
        self, res: ResourceInfo, ns: str, body: Any, manager: str, dry_run: bool
    ) -> dict[str, Any]:
        """POST to a collection."""
        self._check_identity(res, ns, None, body)
        meta = body.setdefault("metadata", {})
        name = meta.get("name")
        if not name and meta.get("generateName"):
            name = f"{meta['generateName']}{random_suffix()}"
        self.store.record_body(res.plural, ns if res.namespaced else "", name or "", body)
        if not name:
            err = FieldError("Required", "metadata.name", None, "name or generateName is required")
            raise E.invalid(res, "", [err])
        if meta.get("resourceVersion"):
            raise E.internal_error("resourceVersion should not be set on objects to be created")
        self.require_namespace(res, ns)
        if self.store.get(res.plural, ns if res.namespaced else "", name) is not None:
            raise E.already_exists(res, name)
        new = copy.deepcopy(body)
        self._keep_status(res, new, None)
        return self.finish(res, ns, name, new, None, {}, dry_run, manager)

    def update(
        self,
        res: ResourceInfo,
        ns: str,
        name: str,
        body: Any,
        manager: str,
        dry_run: bool,
        sub: str = "",
    ) -> dict[str, Any]:
        """PUT an object or its status subresource."""
        self._check_identity(res, ns, name, body)
        if not sub:
            self.store.record_body(res.plural, ns, name, body)
        old = self.require(res, ns, name)
        self._precondition(res, name, body, old)
        new = copy.deepcopy(body)
        if sub == "status":
            new = self._status_only(new, old)
        else:
            self._keep_status(res, new, old)
        managers = copy_managers(old.managers)
        return self.finish(res, ns, name, new, old, managers, dry_run, manager, sub)

    def patch(
        self,
        res: ResourceInfo,
        ns: str,
        name: str,
        ctype: str,
        raw: bytes,
        manager: str | None,
        force: bool | None,
        dry_run: bool,
        sub: str = "",
    ) -> tuple[int, dict[str, Any]]:
        """PATCH with any of the four patch content types."""
        if ctype not in PATCH_TYPES:
            raise E.unsupported_media_type(ctype, PATCH_TYPES)
        if ctype == APPLY and not manager:
            raise E.invalid_options(
                "PatchOptions",
                [FieldError("Required", "fieldManager", None, "is required for apply patch")],
            )
        if ctype != APPLY and force is not None:
            raise E.invalid_options(
                "PatchOptions",
                [
                    FieldError(
                        "Forbidden", "force", None, "may not be specified for non-apply patch"
                    )
                ],
            )
        body = parse_apply_body(raw) if ctype == APPLY else parse_json(raw, "Patch")
        if not sub:
            self.store.record_body(res.plural, ns, name, body)
        if ctype == APPLY:
            return self._apply(res, ns, name, body, manager or "", bool(force), dry_run, sub)
        old = self.require(res, ns, name)
        merged = copy.deepcopy(patch_document(ctype, body, old.obj))
        if (merged.get("metadata") or {}).get("name") not in (None, name):
            raise E.invalid(
                res,
                name,
                [
                    FieldError(
                        "Invalid", "metadata.name", merged["metadata"]["name"], "field is immutable"
                    )
                ],
            )
        if isinstance(body, dict):
            self._precondition(res, name, body, old)
        if sub == "status":
            merged = self._status_only(merged, old)
        else:
            self._keep_status(res, merged, old)
        managers = copy_managers(old.managers)
        mgr = manager or "unknown"
        return 200, self.finish(res, ns, name, merged, old, managers, dry_run, mgr, sub)

    def _apply(
        self,
        res: ResourceInfo,
        ns: str,
        name: str,
        body: Any,
        manager: str,
        force: bool,
        dry_run: bool,
        sub: str,
    ) -> tuple[int, dict[str, Any]]:
        if not isinstance(body, dict):
            raise E.bad_request(
                "the object provided is unrecognized (must be of type "
                f"{res.kind}): Object 'Kind' is missing"
            )
        if not body.get("kind"):
            raise E.bad_request(f"Object 'Kind' is missing in '{json.dumps(body)[:200]}'")
        if not body.get("apiVersion"):
            raise E.bad_request("apiVersion must be set")
        self._check_identity(res, ns, name, body)
        if (body.get("metadata") or {}).get("managedFields") is not None:
            raise E.bad_request("metadata.managedFields must be nil")
        old = self.store.get(res.plural, ns if res.namespaced else "", name)
        now = now_iso()
        managers: Managers = copy_managers(old.managers) if old else {}
        if old is None:
            if sub:
                raise E.not_found(res, name)
            self.require_namespace(res, ns)
        else:
            self._precondition(res, name, body, old)
        try:
            merged = server_side_apply(
                old.obj if old else None, body, managers, manager, force, res.api_version, now, sub
            )
        except ApplyConflict as exc:
            raise self._conflict_error(res, name, exc) from None
        if old is None:
            merged.setdefault("metadata", {}).pop("resourceVersion", None)
            self._keep_status(res, merged, None)
            return 201, self.finish(res, ns, name, merged, None, managers, dry_run)
        if sub == "status":
            merged = self._status_only(merged, old)
        else:
            self._keep_status(res, merged, old)
        return 200, self.finish(res, ns, name, merged, old, managers, dry_run)

    def _conflict_error(self, res: ResourceInfo, name: str, exc: ApplyConflict) -> ApiError:
        n = len(exc.conflicts)
        causes = [
            {
                "reason": "FieldManagerConflict",
                "message": f'conflict with "{mgr}" using {res.api_version}',
                "field": path_to_str(p),
            }
            for mgr, p in exc.conflicts
        ]
        if n == 1:
            mgr, p = exc.conflicts[0]
            msg = (
                f'Apply failed with 1 conflict: conflict with "{mgr}" using '
                f"{res.api_version}: {path_to_str(p)}"
            )
        else:
            lines = "\n".join(f"- {path_to_str(p)}" for _, p in exc.conflicts)
            mgrs = sorted({m for m, _ in exc.conflicts})
            msg = (
                f"Apply failed with {n} conflicts: conflicts with "
                f'"{mgrs[0]}" using {res.api_version}:\n{lines}'
            )
        details: dict[str, Any] = {"name": name}
        if res.group:
            details["group"] = res.group
        details.update({"kind": res.plural, "causes": causes})
        return ApiError(409, "Conflict", msg, details)

    # ---- delete (see deletion.py) ---------------------------------------------------------
    def delete(
        self, res: ResourceInfo, ns: str, name: str, options: dict[str, Any], dry_run: bool
    ) -> dict[str, Any]:
        """DELETE an object (with garbage collection of dependents)."""
        return deletion.delete(self, res, ns, name, options, dry_run)

    def delete_now(
        self, res: ResourceInfo, ns: str, name: str, policy: str = "Background"
    ) -> Entry | None:
        """Remove an object immediately and garbage-collect what it owns."""
        return deletion.delete_now(self, res, ns, name, policy)

    # ---- scale subresource ---------------------------------------------------------------
    def scale_of(self, entry: Entry) -> dict[str, Any]:
        """autoscaling/v1 Scale view of a Deployment/ReplicaSet."""
        obj = entry.obj
        meta = obj["metadata"]
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                k: meta[k]
                for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                if k in meta
            },
            "spec": {"replicas": obj.get("spec", {}).get("replicas", 0)},
            "status": {
                "replicas": (obj.get("status") or {}).get("replicas", 0),
                "selector": selector_to_string(obj.get("spec", {}).get("selector")),
            },
        }

    def write_scale(
        self, res: ResourceInfo, ns: str, name: str, scale: Any, manager: str, dry_run: bool
    ) -> dict[str, Any]:
        """Set spec.replicas through the scale subresource."""
        old = self.require(res, ns, name)
        if not isinstance(scale, dict):
            raise E.bad_request("the object provided is unrecognized (must be of type Scale)")
        self._precondition(res, name, scale, old)
        replicas = (scale.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or replicas < 0:
            raise ApiError(
                422,
                "Invalid",
                f'Scale.autoscaling "{name}" is invalid: '
                f"spec.replicas: Invalid value: {replicas}: must be greater than or "
                "equal to 0",
                {"name": name, "group": "autoscaling", "kind": "Scale"},
            )
        new = copy.deepcopy(old.obj)
        new.setdefault("spec", {})["replicas"] = replicas
        managers = copy_managers(old.managers)
        self.finish(res, ns, name, new, old, managers, dry_run, manager, "scale")
        entry = self.store.get(res.plural, ns, name)
        return self.scale_of(entry if entry is not None and not dry_run else Entry(new, {}))
