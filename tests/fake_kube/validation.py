"""Validation rules that produce 422 Invalid causes like the real API server."""

from __future__ import annotations

import re
from typing import Any

from .errors import FieldError
from .selectors import (
    DNS1123_SUBDOMAIN_RE,
    label_key_errors,
    label_value_errors,
    matches,
    selector_from_object,
)

Obj = dict[str, Any]
DNS1123_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1035_LABEL_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or"
    " '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used"
    " for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
LABEL1123_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and"
    " must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex"
    " used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
LABEL1035_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an"
    " alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or"
    " 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
)
NAME_RULES = {  # plural -> (regex, max length, message)
    "namespaces": (DNS1123_LABEL_RE, 63, LABEL1123_MSG),
    "services": (DNS1035_LABEL_RE, 63, LABEL1035_MSG),
}
QUANTITY_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+|[KMGTPE]i?|[mkunMGTPE])?$")


def name_errors(plural: str, name: str, field: str = "metadata.name") -> list[FieldError]:
    """Validate an object name with the type's naming rule."""
    regex, limit, msg = NAME_RULES.get(plural, (DNS1123_SUBDOMAIN_RE, 253, SUBDOMAIN_MSG))
    errs: list[FieldError] = []
    if len(name) > limit:
        errs.append(FieldError("Invalid", field, name, f"must be no more than {limit} characters"))
    if not regex.match(name):
        errs.append(FieldError("Invalid", field, name, msg))
    return errs


def labels_errors(labels: Any, field: str) -> list[FieldError]:
    """Validate a label map."""
    errs: list[FieldError] = []
    if labels is None:
        return errs
    if not isinstance(labels, dict):
        return [FieldError("Invalid", field, labels, "must be a map of string to string")]
    for k, v in labels.items():
        for msg in label_key_errors(str(k)):
            errs.append(FieldError("Invalid", field, k, msg))
        if not isinstance(v, str):
            errs.append(FieldError("Invalid", f"{field}", v, "label values must be strings"))
            continue
        for msg in label_value_errors(v):
            errs.append(FieldError("Invalid", field, v, msg))
    return errs


def metadata_errors(plural: str, obj: Obj) -> list[FieldError]:
    """Validate metadata common to every type."""
    meta = obj.get("metadata") or {}
    errs: list[FieldError] = []
    name = meta.get("name")
    if not name:
        errs.append(
            FieldError("Required", "metadata.name", None, "name or generateName is required")
        )
    else:
        errs += name_errors(plural, str(name))
    errs += labels_errors(meta.get("labels"), "metadata.labels")
    ann = meta.get("annotations")
    if isinstance(ann, dict):
        for k, v in ann.items():
            for msg in label_key_errors(str(k)):
                errs.append(FieldError("Invalid", "metadata.annotations", k, msg))
            if not isinstance(v, str):
                errs.append(FieldError("Invalid", "metadata.annotations", v, "must be a string"))
    return errs


def _min(field: str, value: Any, lo: int) -> list[FieldError]:
    if value is None:
        return []
    if not isinstance(value, int) or isinstance(value, bool):
        return [FieldError("Invalid", field, value, "must be an integer")]
    if value < lo:
        return [FieldError("Invalid", field, value, f"must be greater than or equal to {lo}")]
    return []


def _port(field: str, value: Any) -> list[FieldError]:
    if not isinstance(value, int) or not 1 <= value <= 65535:
        return [FieldError("Invalid", field, value, "must be between 1 and 65535, inclusive")]
    return []


def _resources(path: str, res: Any) -> list[FieldError]:
    errs: list[FieldError] = []
    if not isinstance(res, dict):
        return errs
    for section in ("limits", "requests"):
        for k, v in (res.get(section) or {}).items():
            if not QUANTITY_RE.match(str(v)):
                errs.append(
                    FieldError(
                        "Invalid",
                        f"{path}.{section}[{k}]",
                        v,
                        "must match the regex ^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$",
                    )
                )
    return errs


def pod_spec_errors(spec: Any, path: str) -> list[FieldError]:
    """Validate a PodSpec (containers, names, images, ports)."""
    if not isinstance(spec, dict):
        return [FieldError("Required", f"{path}.containers", None, "")]
    errs: list[FieldError] = []
    containers = spec.get("containers")
    if not containers:
        errs.append(FieldError("Required", f"{path}.containers", None, ""))
        return errs
    seen: set[str] = set()
    for i, c in enumerate(containers):
        cp = f"{path}.containers[{i}]"
        if not isinstance(c, dict):
            errs.append(FieldError("Invalid", cp, c, "must be an object"))
            continue
        name = c.get("name")
        if not name:
            errs.append(FieldError("Required", f"{cp}.name", None, ""))
        elif not DNS1123_LABEL_RE.match(str(name)) or len(str(name)) > 63:
            errs.append(FieldError("Invalid", f"{cp}.name", name, LABEL1123_MSG))
        elif name in seen:
            errs.append(FieldError("Duplicate", f"{cp}.name", name))
        else:
            seen.add(str(name))
        if not c.get("image"):
            errs.append(FieldError("Required", f"{cp}.image", None, ""))
        for j, p in enumerate(c.get("ports") or []):
            if isinstance(p, dict):
                errs += _port(f"{cp}.ports[{j}].containerPort", p.get("containerPort"))
        errs += _resources(f"{cp}.resources", c.get("resources"))
    return errs


def _workload_errors(obj: Obj, old: Obj | None) -> list[FieldError]:
    spec = obj.get("spec") or {}
    errs = _min("spec.replicas", spec.get("replicas"), 0)
    sel = spec.get("selector")
    tpl = spec.get("template") or {}
    tpl_labels = (tpl.get("metadata") or {}).get("labels") or {}
    if sel is None:
        errs.append(FieldError("Required", "spec.selector", None, ""))
    elif not (sel.get("matchLabels") or sel.get("matchExpressions")):
        errs.append(
            FieldError("Invalid", "spec.selector", sel, "empty selector is invalid for deployment")
        )
    else:
        errs += labels_errors(sel.get("matchLabels"), "spec.selector.matchLabels")
        parsed = selector_from_object(sel)
        if parsed is not None and not matches(parsed, tpl_labels):
            errs.append(
                FieldError(
                    "Invalid",
                    "spec.template.metadata.labels",
                    tpl_labels,
                    "`selector` does not match template `labels`",
                )
            )
    errs += labels_errors(tpl_labels, "spec.template.metadata.labels")
    errs += pod_spec_errors(tpl.get("spec"), "spec.template.spec")
    if old is not None and sel is not None:
        old_sel = (old.get("spec") or {}).get("selector")
        if old_sel is not None and old_sel != sel:
            errs.append(FieldError("Invalid", "spec.selector", sel, "field is immutable"))
    return errs


def deployment_errors(obj: Obj, old: Obj | None) -> list[FieldError]:
    """Validate a Deployment spec."""
    spec = obj.get("spec") or {}
    errs = _workload_errors(obj, old)
    strategy = (spec.get("strategy") or {}).get("type")
    if strategy not in (None, "RollingUpdate", "Recreate"):
        errs.append(
            FieldError(
                "NotSupported",
                "spec.strategy.type",
                strategy,
                'supported values: "Recreate", "RollingUpdate"',
            )
        )
    pds = spec.get("progressDeadlineSeconds")
    errs += _min("spec.progressDeadlineSeconds", pds, 1)
    mrs = spec.get("minReadySeconds") or 0
    if isinstance(pds, int) and isinstance(mrs, int) and pds <= mrs:
        errs.append(
            FieldError(
                "Invalid",
                "spec.progressDeadlineSeconds",
                pds,
                "must be greater than minReadySeconds",
            )
        )
    return errs


def service_errors(obj: Obj, old: Obj | None) -> list[FieldError]:
    """Validate a Service spec."""
    spec = obj.get("spec") or {}
    errs: list[FieldError] = []
    stype = spec.get("type", "ClusterIP")
    if stype not in ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"):
        errs.append(
            FieldError(
                "NotSupported",
                "spec.type",
                stype,
                'supported values: "ClusterIP", "ExternalName", "LoadBalancer", "NodePort"',
            )
        )
    ports = spec.get("ports") or []
    if not ports and stype != "ExternalName" and spec.get("clusterIP") != "None":
        errs.append(FieldError("Required", "spec.ports", None, ""))
    names: set[str] = set()
    for i, p in enumerate(ports):
        if not isinstance(p, dict):
            continue
        errs += _port(f"spec.ports[{i}].port", p.get("port"))
        name = p.get("name")
        if len(ports) > 1 and not name:
            errs.append(FieldError("Required", f"spec.ports[{i}].name", None, ""))
        if name:
            if name in names:
                errs.append(FieldError("Duplicate", f"spec.ports[{i}].name", name))
            names.add(name)
    errs += labels_errors(spec.get("selector"), "spec.selector")
    if old is not None:
        old_ip = (old.get("spec") or {}).get("clusterIP")
        new_ip = spec.get("clusterIP")
        if old_ip and new_ip and old_ip != new_ip:
            errs.append(
                FieldError("Invalid", "spec.clusterIPs[0]", [new_ip], "may not change once set")
            )
    return errs


def hpa_errors(obj: Obj, old: Obj | None) -> list[FieldError]:
    """Validate an autoscaling/v2 HorizontalPodAutoscaler spec."""
    spec = obj.get("spec") or {}
    errs: list[FieldError] = []
    ref = spec.get("scaleTargetRef")
    if not isinstance(ref, dict):
        errs.append(FieldError("Required", "spec.scaleTargetRef.kind", None, ""))
        errs.append(FieldError("Required", "spec.scaleTargetRef.name", None, ""))
    else:
        if not ref.get("kind"):
            errs.append(FieldError("Required", "spec.scaleTargetRef.kind", None, ""))
        if not ref.get("name"):
            errs.append(FieldError("Required", "spec.scaleTargetRef.name", None, ""))
    lo = spec.get("minReplicas", 1)
    hi = spec.get("maxReplicas")
    errs += _min("spec.minReplicas", lo, 1)
    if hi is None:
        errs.append(
            FieldError("Invalid", "spec.maxReplicas", 0, "must be greater than or equal to 1")
        )
    else:
        errs += _min("spec.maxReplicas", hi, 1)
        if isinstance(lo, int) and isinstance(hi, int) and hi < lo:
            errs.append(
                FieldError(
                    "Invalid",
                    "spec.maxReplicas",
                    hi,
                    "must be greater than or equal to `minReplicas`",
                )
            )
    return errs


def pod_errors(obj: Obj, old: Obj | None) -> list[FieldError]:
    """Validate a Pod spec."""
    return pod_spec_errors(obj.get("spec"), "spec")


VALIDATORS = {
    "deployments": deployment_errors,
    "replicasets": _workload_errors,
    "services": service_errors,
    "horizontalpodautoscalers": hpa_errors,
    "pods": pod_errors,
}


def validate(plural: str, obj: Obj, old: Obj | None = None) -> list[FieldError]:
    """All validation errors for an object about to be stored."""
    errs = metadata_errors(plural, obj)
    fn = VALIDATORS.get(plural)
    if fn is not None:
        errs += fn(obj, old)
    return errs
