"""URL routing and synchronous request handlers for the Kubernetes REST API."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import yaml

from . import errors as E
from . import resources as R
from .behavior import pod_log
from .bodies import parse_apply_body, parse_json, patch_document
from .errors import ApiError
from .ops import APPLY, PATCH_TYPES
from .resources import ResourceInfo
from .selectors import (
    SelectorError,
    field_matches,
    matches,
    parse_field_selector,
    parse_label_selector,
)
from .store import Entry, dumps

if TYPE_CHECKING:
    from .fake import FakeKube

Body = bytes | str | dict[str, Any]  # str bodies are served as text/plain
MUTATING = ("create", "update", "patch", "delete", "deletecollection")


@dataclass
class Route:
    """A parsed API request target."""

    verb: str
    res: ResourceInfo | None = None
    ns: str = ""
    name: str = ""
    sub: str = ""
    all_namespaces: bool = False
    doc: dict[str, Any] | None = None

    @property
    def stat_resource(self) -> str:
        """Resource label used in stats ("deployments", "deployments/status")."""
        if self.res is None:
            return ""
        return f"{self.res.plural}/{self.sub}" if self.sub else self.res.plural


def route(method: str, path: str, query: dict[str, str], server_url: str) -> Route:
    """Map method + path to a Route; raises ApiError for unknown paths or verbs."""
    parts = [p for p in path.split("/") if p]
    if method == "GET":
        doc: dict[str, Any] | None = None
        if parts == ["version"]:
            doc = dict(R.SERVER_VERSION)
        elif parts == ["api"]:
            doc = R.api_versions(server_url.split("//")[-1])
        elif parts == ["apis"]:
            doc = R.api_group_list()
        elif len(parts) == 2 and parts[0] == "apis":
            doc = R.api_group(parts[1])
        elif len(parts) == 2 and parts[0] == "api":
            doc = R.api_resource_list("", parts[1])
        elif len(parts) == 3 and parts[0] == "apis":
            doc = R.api_resource_list(parts[1], parts[2])
        if doc is not None:
            return Route("discovery", doc=doc)
    if len(parts) >= 3 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 4 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        raise E.path_not_found()
    watch_prefix = rest[0] == "watch"
    if watch_prefix:
        rest = rest[1:]
    ns, name, sub = "", "", ""
    res: ResourceInfo | None
    nested = (
        R.lookup(group, version, rest[2]) if len(rest) >= 3 and rest[0] == "namespaces" else None
    )
    if nested is not None and nested.namespaced:
        res, ns = nested, rest[1]
        tail = rest[3:]
    else:
        res = R.lookup(group, version, rest[0]) if rest else None
        tail = rest[1:]
    if res is None or len(tail) > 2:
        raise E.path_not_found()
    if tail:
        name = tail[0]
        if res.namespaced and not ns:
            raise E.path_not_found()
    if len(tail) == 2:
        sub = tail[1]
        if sub not in res.subresources:
            raise E.path_not_found()
        if sub == "log" and method != "GET":
            raise E.method_not_allowed()
    all_ns = res.namespaced and not ns
    if method == "GET":
        if name:
            verb = "get"
        elif watch_prefix or query.get("watch") in ("true", "1", "True"):
            verb = "watch"
        else:
            verb = "list"
    elif method == "POST" and not name:
        verb = "create"
    elif method == "PUT" and name:
        verb = "update"
    elif method == "PATCH" and name:
        verb = "patch"
    elif method == "DELETE" and not sub:
        verb = "delete" if name else "deletecollection"
    else:
        raise E.method_not_allowed()
    if all_ns and verb not in ("list", "watch"):
        raise E.method_not_allowed()
    return Route(verb, res, ns, name, sub, all_ns)


def selectors_for(res: ResourceInfo, query: dict[str, str]) -> tuple[Any, Any]:
    """Parsed label and field selectors of a list/watch request (400 when malformed)."""
    try:
        label = parse_label_selector(query.get("labelSelector", ""))
        field = parse_field_selector(query.get("fieldSelector", ""), res.field_selectors)
    except SelectorError as exc:
        raise E.bad_request(str(exc)) from None
    return label, field


def select(fake: FakeKube, rt: Route, query: dict[str, str]) -> list[Entry]:
    """Entries matching a list request's namespace and selectors (no paging)."""
    assert rt.res is not None
    label, field = selectors_for(rt.res, query)
    out = []
    ns = None if rt.all_namespaces else rt.ns
    for entry in fake.store.entries(rt.res.plural, ns):
        meta = entry.obj["metadata"]
        if label and not matches(label, meta.get("labels")):
            continue
        if field and not field_matches(field, entry.obj):
            continue
        out.append(entry)
    return out


def _decode_continue(token: str) -> tuple[str, str]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        return str(data["start"][0]), str(data["start"][1])
    except (ValueError, KeyError, IndexError, TypeError):
        raise E.bad_request(f"continue key is not valid: {token!r}") from None


def list_body(fake: FakeKube, rt: Route, query: dict[str, str]) -> bytes:
    """Serialized XxxList for a list request (with limit/continue paging)."""
    assert rt.res is not None
    try:
        limit = int(query.get("limit") or 0)
    except ValueError:
        raise E.bad_request("limit must be an integer") from None
    after = _decode_continue(query["continue"]) if query.get("continue") else None
    items: list[bytes] = []
    remaining = 0
    last: tuple[str, str] | None = None
    for entry in select(fake, rt, query):
        meta = entry.obj["metadata"]
        key = (meta.get("namespace", ""), meta["name"])
        if after is not None and key <= after:
            continue
        if limit and len(items) >= limit:
            remaining += 1
            continue
        items.append(entry.item_bytes())
        last = key
    meta_out: dict[str, Any] = {"resourceVersion": str(fake.store.rv)}
    if remaining and last is not None:
        token = json.dumps({"rv": fake.store.rv, "start": list(last)}).encode()
        meta_out["continue"] = base64.urlsafe_b64encode(token).decode()
        meta_out["remainingItemCount"] = remaining
    head = dumps(
        {"kind": f"{rt.res.kind}List", "apiVersion": rt.res.api_version, "metadata": meta_out}
    )
    return head[:-1] + b',"items":[' + b",".join(items) + b"]}"


def parse_body(ctype: str, raw: bytes, kind: str) -> Any:
    """Decode a create/update body (JSON or YAML)."""
    if ctype in ("application/yaml", "text/yaml", "application/x-yaml"):
        try:
            return yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise E.bad_request(f"error decoding YAML: {exc}") from None
    if ctype not in ("", "application/json", "*/*"):
        raise E.unsupported_media_type(ctype, ["application/json", "application/yaml"])
    return parse_json(raw, kind)


def _bool(query: dict[str, str], key: str) -> bool | None:
    val = query.get(key)
    if val is None:
        return None
    return val.lower() in ("true", "1")


def _dry_run(query: dict[str, str]) -> bool:
    val = query.get("dryRun")
    if val is None or val == "":
        return False
    if val != "All":
        raise E.invalid_options(
            "PatchOptions",
            [E.FieldError("NotSupported", "dryRun", [val], 'supported values: "All"')],
        )
    return True


def handle(
    fake: FakeKube, rt: Route, query: dict[str, str], headers: dict[str, str], raw: bytes
) -> tuple[int, Body]:
    """Run one non-watch API request under the store lock."""
    if rt.verb == "discovery":
        assert rt.doc is not None
        return 200, rt.doc
    res = rt.res
    assert res is not None
    ops = fake.ops
    ctype = headers.get("content-type", "").split(";")[0].strip().lower()
    manager = query.get("fieldManager") or headers.get("user-agent", "unknown").split("/")[0]
    with fake.store.lock:
        fake.controller.tick()
        if rt.verb == "get":
            entry = ops.require(res, rt.ns, rt.name)
            if rt.sub == "scale":
                return 200, ops.scale_of(entry)
            if rt.sub == "log":
                return 200, pod_log(entry.obj, query.get("container"))
            return 200, entry.full_bytes()
        if rt.verb == "list":
            return 200, list_body(fake, rt, query)
        dry = _dry_run(query)
        if rt.verb == "create":
            body = parse_body(ctype, raw, res.kind)
            return 201, ops.create(res, rt.ns, body, manager, dry)
        if rt.verb == "update":
            body = parse_body(ctype, raw, res.kind)
            if rt.sub == "scale":
                return 200, ops.write_scale(res, rt.ns, rt.name, body, manager, dry)
            return 200, ops.update(res, rt.ns, rt.name, body, manager, dry, rt.sub)
        if rt.verb == "patch":
            return _patch(fake, rt, query, ctype, raw, dry, manager)
        if rt.verb == "delete":
            opts = parse_json(raw, "DeleteOptions") if raw.strip() else {}
            opts = opts if isinstance(opts, dict) else {}
            if "propagationPolicy" in query:
                opts.setdefault("propagationPolicy", query["propagationPolicy"])
            if _bool(query, "orphanDependents") is not None:
                opts.setdefault("orphanDependents", _bool(query, "orphanDependents"))
            out = ops.delete(res, rt.ns, rt.name, opts, dry)
            pending = (
                out.get("kind") != "Status"
                and fake.store.get(res.plural, rt.ns if res.namespaced else "", rt.name) is not None
            )
            return (202 if pending and not dry else 200), out
        if rt.verb == "deletecollection":
            for entry in select(fake, rt, query):
                if not dry:
                    ops.delete_now(res, rt.ns, entry.obj["metadata"]["name"])
            return 200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}
    raise E.method_not_allowed()


def _patch(
    fake: FakeKube,
    rt: Route,
    query: dict[str, str],
    ctype: str,
    raw: bytes,
    dry: bool,
    default_manager: str,
) -> tuple[int, Body]:
    res = rt.res
    assert res is not None
    ops = fake.ops
    manager = query.get("fieldManager")
    if not manager and ctype != APPLY:
        manager = default_manager  # like the server: derived from the User-Agent
    force = _bool(query, "force")
    if rt.sub == "scale":
        entry = ops.require(res, rt.ns, rt.name)
        scale = ops.scale_of(entry)
        if ctype not in PATCH_TYPES:
            raise E.unsupported_media_type(ctype, PATCH_TYPES)
        body = parse_apply_body(raw) if ctype == APPLY else parse_json(raw, "Patch")
        tmp = patch_document(ctype, body, scale)
        return 200, ops.write_scale(res, rt.ns, rt.name, tmp, manager or "unknown", dry)
    return ops.patch(res, rt.ns, rt.name, ctype, raw, manager, force, dry, rt.sub)


def error_response(err: ApiError) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Status body and headers for an ApiError."""
    return err.code, err.body(), err.headers
