"""Simulated HorizontalPodAutoscaler controller: clamps target replicas and fills HPA status."""

from __future__ import annotations

import copy
from typing import Any

from .apply import copy_managers, grant
from .resources import BY_PLURAL
from .store import Entry, Store, now_iso

DEPLOY, HPA = BY_PLURAL["deployments"], BY_PLURAL["horizontalpodautoscalers"]
KCM = "kube-controller-manager"
CPU_MSG = (
    "the HPA was able to successfully calculate a replica count from cpu resource utilization"
    " (percentage of request)"
)


class HpaController:
    """Keeps each targeted Deployment's spec.replicas within [minReplicas, maxReplicas]."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.targets: dict[tuple[str, str], str] = {}  # (ns, hpa name) -> deployment name
        self.scale_times: dict[tuple[str, str], float] = {}

    def reset(self) -> None:
        """Forget every HPA."""
        self.targets.clear()
        self.scale_times.clear()

    def forget_namespace(self, ns: str) -> None:
        """Drop HPAs of a deleted namespace."""
        for key in [k for k in self.targets if k[0] == ns]:
            del self.targets[key]

    def changed(self, ns: str, name: str) -> list[str]:
        """An HPA was written or deleted; returns deployments that need a reconcile."""
        old = self.targets.pop((ns, name), None)
        new = None
        entry = self.store.get("horizontalpodautoscalers", ns, name)
        if entry is not None:
            ref = (entry.obj.get("spec") or {}).get("scaleTargetRef") or {}
            if ref.get("kind") == "Deployment" and ref.get("name"):
                new = self.targets[(ns, name)] = ref["name"]
        return [t for t in dict.fromkeys([old, new]) if t]

    def hpas_for(self, ns: str, deployment: str) -> list[str]:
        """Names of HPAs targeting a deployment."""
        return [h for (hns, h), t in self.targets.items() if hns == ns and t == deployment]

    def clamp(self, ns: str, name: str, dep: dict[str, Any], now: float) -> dict[str, Any]:
        """Scale the deployment into the HPA range (a `scale` Update by the controller)."""
        for hpa_name in self.hpas_for(ns, name):
            entry = self.store.get("horizontalpodautoscalers", ns, hpa_name)
            if entry is None:
                continue
            spec = entry.obj.get("spec") or {}
            lo, hi = int(spec.get("minReplicas", 1)), int(spec.get("maxReplicas", 1))
            cur = int((dep.get("spec") or {}).get("replicas", 1))
            want = min(max(cur, lo), hi)
            if want == cur:
                return dep
            stored = self.store.get("deployments", ns, name)
            managers = copy_managers(stored.managers) if stored else {}
            obj = copy.deepcopy(dep)
            obj["spec"]["replicas"] = want
            obj["metadata"]["generation"] = obj["metadata"].get("generation", 1) + 1
            key = (KCM, "Update", "scale")
            grant(managers, key, {("f:spec", "f:replicas")}, now_iso(now), "apps/v1")
            self.scale_times[(ns, hpa_name)] = now
            return self.store.commit(DEPLOY, obj, managers).obj
        return dep

    def refresh(self, ns: str, deployment: str, now: float) -> None:
        """Recompute status of every HPA targeting a deployment."""
        dep = self.store.get("deployments", ns, deployment)
        for hpa_name in self.hpas_for(ns, deployment):
            self.write_status(ns, hpa_name, dep, now)

    def write_status(self, ns: str, hpa_name: str, dep: Entry | None, now: float) -> None:
        """Fill HPA status from its target (or report the target missing)."""
        entry = self.store.get("horizontalpodautoscalers", ns, hpa_name)
        if entry is None:
            return
        hpa = entry.obj
        spec = hpa.get("spec") or {}
        ref = spec.get("scaleTargetRef") or {}
        lo, hi = int(spec.get("minReplicas", 1)), int(spec.get("maxReplicas", 1))
        old_status = hpa.get("status") or {}
        old = {c["type"]: c for c in old_status.get("conditions") or []}
        ts = now_iso(now)

        def cond(ctype: str, ok: bool, reason: str, msg: str) -> dict[str, Any]:
            prev = old.get(ctype)
            st = "True" if ok else "False"
            keep = prev is not None and prev.get("status") == st
            since = prev["lastTransitionTime"] if keep and prev else ts
            return {
                "type": ctype,
                "status": st,
                "lastTransitionTime": since,
                "reason": reason,
                "message": msg,
            }

        status: dict[str, Any]
        if dep is None:
            missing = (
                f'{str(ref.get("kind", "")).lower()}s/scale.apps "{ref.get("name")}" not found'
            )
            status = {
                "desiredReplicas": 0,
                "conditions": [
                    cond(
                        "AbleToScale",
                        False,
                        "FailedGetScale",
                        "the HPA controller was unable to get the target's current scale: "
                        + missing,
                    )
                ],
            }
        else:
            cur = int((dep.obj.get("spec") or {}).get("replicas", 1))
            current = int((dep.obj.get("status") or {}).get("replicas", 0))
            if cur <= lo:
                limited = cond(
                    "ScalingLimited",
                    True,
                    "TooFewReplicas",
                    "the desired replica count is less than the minimum replica count",
                )
            elif cur >= hi:
                limited = cond(
                    "ScalingLimited",
                    True,
                    "TooManyReplicas",
                    "the desired replica count is more than the maximum replica count",
                )
            else:
                limited = cond(
                    "ScalingLimited",
                    False,
                    "DesiredWithinRange",
                    "the desired count is within the acceptable range",
                )
            status = {
                "currentReplicas": current,
                "desiredReplicas": cur,
                "conditions": [
                    cond(
                        "AbleToScale",
                        True,
                        "ReadyForNewScale",
                        "recommended size matches current size",
                    ),
                    cond("ScalingActive", True, "ValidMetricFound", CPU_MSG),
                    limited,
                ],
            }
            if current == 0:
                del status["currentReplicas"]
            scaled = self.scale_times.get((ns, hpa_name))
            if scaled is not None:
                status["lastScaleTime"] = now_iso(scaled)
        status["observedGeneration"] = hpa["metadata"].get("generation", 1)
        if old_status != status:
            obj = dict(hpa)
            obj["status"] = status
            self.store.commit(HPA, obj, entry.managers)
