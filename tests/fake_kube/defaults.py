"""Server-side defaulting for the built-in types the fake serves."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Obj = dict[str, Any]


def _container(c: Obj) -> None:
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    image = str(c.get("image", ""))
    tail = image.rsplit("/", 1)[-1]
    latest = "@" not in tail and (":" not in tail or tail.endswith(":latest"))
    c.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
    c.setdefault("resources", {})
    for p in c.get("ports") or []:
        if isinstance(p, dict):
            p.setdefault("protocol", "TCP")
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        pr = c.get(probe)
        if isinstance(pr, dict):
            pr.setdefault("timeoutSeconds", 1)
            pr.setdefault("periodSeconds", 10)
            pr.setdefault("successThreshold", 1)
            pr.setdefault("failureThreshold", 3)
            for h in ("httpGet",):
                if isinstance(pr.get(h), dict):
                    pr[h].setdefault("scheme", "HTTP")
                    pr[h].setdefault("path", "/")


def pod_spec(spec: Obj) -> None:
    """Defaults of a PodSpec (in place)."""
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    for key in ("containers", "initContainers"):
        for c in spec.get(key) or []:
            if isinstance(c, dict):
                _container(c)
    for t in spec.get("tolerations") or []:
        if isinstance(t, dict) and "key" in t and "operator" not in t:
            t["operator"] = "Equal"


def _rolling(spec: Obj) -> None:
    strategy = spec.setdefault("strategy", {})
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        ru = strategy.setdefault("rollingUpdate", {})
        ru.setdefault("maxUnavailable", "25%")
        ru.setdefault("maxSurge", "25%")


def deployment(obj: Obj) -> None:
    """Deployment defaults."""
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    _rolling(spec)
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    tpl = spec.get("template")
    if isinstance(tpl, dict) and isinstance(tpl.get("spec"), dict):
        pod_spec(tpl["spec"])


def replicaset(obj: Obj) -> None:
    """ReplicaSet defaults."""
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    tpl = spec.get("template")
    if isinstance(tpl, dict) and isinstance(tpl.get("spec"), dict):
        pod_spec(tpl["spec"])


def pod(obj: Obj) -> None:
    """Pod defaults."""
    spec = obj.setdefault("spec", {})
    pod_spec(spec)
    spec.setdefault("serviceAccountName", "default")
    spec.setdefault("serviceAccount", spec["serviceAccountName"])
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    spec.setdefault("priority", 0)


def service(obj: Obj) -> None:
    """Service defaults (clusterIP allocation happens in the store)."""
    spec = obj.setdefault("spec", {})
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    if spec["type"] != "ExternalName":
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        spec.setdefault("internalTrafficPolicy", "Cluster")
    if spec["type"] in ("NodePort", "LoadBalancer"):
        spec.setdefault("externalTrafficPolicy", "Cluster")
    for p in spec.get("ports") or []:
        if isinstance(p, dict):
            p.setdefault("protocol", "TCP")
            if "port" in p:
                p.setdefault("targetPort", p["port"])
    obj.setdefault("status", {}).setdefault("loadBalancer", {})


_SCALE_UP = {
    "stabilizationWindowSeconds": 0,
    "selectPolicy": "Max",
    "policies": [
        {"type": "Pods", "value": 4, "periodSeconds": 15},
        {"type": "Percent", "value": 100, "periodSeconds": 15},
    ],
}
_SCALE_DOWN = {
    "stabilizationWindowSeconds": 300,
    "selectPolicy": "Max",
    "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}],
}


def hpa(obj: Obj) -> None:
    """HorizontalPodAutoscaler (autoscaling/v2) defaults."""
    spec = obj.setdefault("spec", {})
    spec.setdefault("minReplicas", 1)
    if not spec.get("metrics"):
        spec["metrics"] = [
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 80},
                },
            }
        ]
    behavior = spec.setdefault("behavior", {})
    for key, default in (("scaleUp", _SCALE_UP), ("scaleDown", _SCALE_DOWN)):
        rules = behavior.setdefault(key, {})
        for k, v in default.items():
            rules.setdefault(k, [dict(p) for p in v] if isinstance(v, list) else v)


def namespace(obj: Obj) -> None:
    """Namespace defaults (finalizer, phase, metadata.name label)."""
    meta = obj.setdefault("metadata", {})
    labels = meta.setdefault("labels", {})
    labels["kubernetes.io/metadata.name"] = meta.get("name", "")
    obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
    obj.setdefault("status", {}).setdefault("phase", "Active")


def secret(obj: Obj) -> None:
    """Secret defaults."""
    obj.setdefault("type", "Opaque")


DEFAULTERS: dict[str, Callable[[Obj], None]] = {
    "deployments": deployment,
    "replicasets": replicaset,
    "pods": pod,
    "services": service,
    "horizontalpodautoscalers": hpa,
    "namespaces": namespace,
    "secrets": secret,
}


def apply_defaults(plural: str, obj: Obj) -> None:
    """Run the defaulter for a resource type in place."""
    fn = DEFAULTERS.get(plural)
    if fn is not None:
        fn(obj)
