"""Registry of served resource types and the discovery documents built from it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
SERVER_VERSION = {
    "major": "1",
    "minor": "31",
    "gitVersion": "v1.31.0",
    "gitCommit": "9edcffcde5595e8a5b1a35f88c421764e575afce",
    "gitTreeState": "clean",
    "buildDate": "2024-08-13T07:28:49Z",
    "goVersion": "go1.22.5",
    "compiler": "gc",
    "platform": "linux/amd64",
}


@dataclass(frozen=True)
class ResourceInfo:
    """Static description of one resource type."""

    plural: str
    kind: str
    group: str
    version: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    has_generation: bool = False
    categories: tuple[str, ...] = ()
    field_selectors: tuple[str, ...] = field(default=())

    @property
    def api_version(self) -> str:
        """Group/version string as used in apiVersion."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """`plural.group` as used in NotFound/AlreadyExists messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def group_kind(self) -> str:
        """`Kind.group` as used in Invalid messages."""
        return f"{self.kind}.{self.group}" if self.group else self.kind

    @property
    def singular(self) -> str:
        """Lower-case singular name."""
        return self.kind.lower()

    @property
    def has_status(self) -> bool:
        """Whether writes to the main resource ignore status."""
        return "status" in self.subresources


_POD_FIELDS = (
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
)
_EVENT_FIELDS = (
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
)

RESOURCES: list[ResourceInfo] = [
    ResourceInfo(
        "namespaces",
        "Namespace",
        "",
        "v1",
        False,
        ("ns",),
        ("status",),
        False,
        (),
        ("status.phase",),
    ),
    ResourceInfo("nodes", "Node", "", "v1", False, ("no",), ("status",)),
    ResourceInfo(
        "pods", "Pod", "", "v1", True, ("po",), ("status", "log"), False, ("all",), _POD_FIELDS
    ),
    ResourceInfo("services", "Service", "", "v1", True, ("svc",), ("status",), False, ("all",)),
    ResourceInfo("events", "Event", "", "v1", True, ("ev",), (), False, (), _EVENT_FIELDS),
    ResourceInfo("configmaps", "ConfigMap", "", "v1", True, ("cm",)),
    ResourceInfo("secrets", "Secret", "", "v1", True, (), (), False, (), ("type",)),
    ResourceInfo("serviceaccounts", "ServiceAccount", "", "v1", True, ("sa",)),
    ResourceInfo(
        "deployments",
        "Deployment",
        "apps",
        "v1",
        True,
        ("deploy",),
        ("status", "scale"),
        True,
        ("all",),
    ),
    ResourceInfo(
        "replicasets",
        "ReplicaSet",
        "apps",
        "v1",
        True,
        ("rs",),
        ("status", "scale"),
        True,
        ("all",),
    ),
    ResourceInfo(
        "horizontalpodautoscalers",
        "HorizontalPodAutoscaler",
        "autoscaling",
        "v2",
        True,
        ("hpa",),
        ("status",),
        True,
        ("all",),
    ),
    ResourceInfo(
        "ingresses", "Ingress", "networking.k8s.io", "v1", True, ("ing",), ("status",), True
    ),
    ResourceInfo(
        "poddisruptionbudgets",
        "PodDisruptionBudget",
        "policy",
        "v1",
        True,
        ("pdb",),
        ("status",),
        True,
    ),
    ResourceInfo("leases", "Lease", "coordination.k8s.io", "v1", True),
]

BY_GV_PLURAL: dict[tuple[str, str, str], ResourceInfo] = {
    (r.group, r.version, r.plural): r for r in RESOURCES
}
BY_PLURAL: dict[str, ResourceInfo] = {r.plural: r for r in RESOURCES}
BY_KIND: dict[str, ResourceInfo] = {r.kind: r for r in RESOURCES}
GROUP_VERSIONS: dict[str, list[str]] = {}
for _r in RESOURCES:
    if _r.group:
        GROUP_VERSIONS.setdefault(_r.group, [])
        if _r.version not in GROUP_VERSIONS[_r.group]:
            GROUP_VERSIONS[_r.group].append(_r.version)


def lookup(group: str, version: str, plural: str) -> ResourceInfo | None:
    """Find a resource by group, version and plural."""
    return BY_GV_PLURAL.get((group, version, plural))


def resource_for_plural(plural: str) -> ResourceInfo:
    """Find a resource by plural name; raises KeyError if unknown."""
    return BY_PLURAL[plural]


def api_versions(server_address: str) -> dict[str, Any]:
    """Body of GET /api."""
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
        ],
    }


def _group_doc(name: str) -> dict[str, Any]:
    versions = [{"groupVersion": f"{name}/{v}", "version": v} for v in GROUP_VERSIONS[name]]
    return {"name": name, "versions": versions, "preferredVersion": dict(versions[0])}


def api_group_list() -> dict[str, Any]:
    """Body of GET /apis."""
    return {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [_group_doc(g) for g in GROUP_VERSIONS],
    }


def api_group(name: str) -> dict[str, Any] | None:
    """Body of GET /apis/{group}."""
    if name not in GROUP_VERSIONS:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group_doc(name)}


def api_resource_list(group: str, version: str) -> dict[str, Any] | None:
    """Body of GET /api/v1 or /apis/{group}/{version}."""
    items: list[dict[str, Any]] = []
    for r in RESOURCES:
        if r.group != group or r.version != version:
            continue
        entry: dict[str, Any] = {
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": list(VERBS),
        }
        if r.short_names:
            entry["shortNames"] = list(r.short_names)
        if r.categories:
            entry["categories"] = list(r.categories)
        items.append(entry)
        for sub in r.subresources:
            sub_entry: dict[str, Any] = {
                "name": f"{r.plural}/{sub}",
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": ["get"] if sub == "log" else ["get", "patch", "update"],
            }
            if sub == "scale":
                sub_entry.update({"group": "autoscaling", "version": "v1", "kind": "Scale"})
            items.append(sub_entry)
    if not items:
        return None
    gv = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": items}
