"""Simulated deployment, replicaset, kubelet and HPA controllers (lazy, heap-scheduled)."""

from __future__ import annotations

import copy
import hashlib
import heapq
import itertools
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from .apply import copy_managers, grant
from .behavior import Behavior, PodView, pod_view
from .ops import random_suffix
from .resources import BY_PLURAL
from .store import Store, now_iso

DEPLOY, RS, POD, HPA, EVENT = (
    BY_PLURAL[p]
    for p in ("deployments", "replicasets", "pods", "horizontalpodautoscalers", "events")
)
KCM = "kube-controller-manager"
NODES = [("fake-node-1", "10.0.0.11"), ("fake-node-2", "10.0.0.12"), ("fake-node-3", "10.0.0.13")]
REVISION = "deployment.kubernetes.io/revision"


@dataclass
class PodSim:
    """Controller-side state of one pod."""

    name: str
    rs_hash: str
    created: float
    start: float
    behavior: Behavior
    ip: str
    node: tuple[str, str]


@dataclass
class DeploySim:
    """Controller-side state of one deployment."""

    uid: str
    behavior: Behavior = field(default_factory=Behavior)
    override: Behavior | None = None
    rs_hash: str = ""
    observed_gen: int = 0
    progress_time: float = 0.0
    last_ready: int = 0
    last_updated: int = 0
    pods: dict[str, PodSim] = field(default_factory=dict)
    scheduled: float | None = None
    events_seen: set[tuple[str, str]] = field(default_factory=set)


def template_hash(template: Any) -> str:
    """pod-template-hash: 10 hex characters derived from the pod template."""
    raw = json.dumps(template, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(raw).hexdigest()[:10]


def _max_unavailable(spec: dict[str, Any], n: int) -> int:
    strategy = spec.get("strategy") or {}
    if strategy.get("type", "RollingUpdate") != "RollingUpdate" or n == 0:
        return 0
    mu = (strategy.get("rollingUpdate") or {}).get("maxUnavailable", "25%")
    if isinstance(mu, str) and mu.endswith("%"):
        return int(n * int(mu[:-1]) / 100)
    return int(mu)


def _omit_zero(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v not in (0, None)}


class Controller:
    """Drives status of deployments/replicasets/pods/HPAs from per-deployment Behaviors."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.default = Behavior()
        self.rules: list[tuple[re.Pattern[str], str | None, Behavior]] = []
        self.sims: dict[tuple[str, str], DeploySim] = {}
        self.pod_owner: dict[tuple[str, str], str] = {}
        self.hpa_target: dict[tuple[str, str], str] = {}
        self.heap: list[tuple[float, int, str, str]] = []
        self._seq = itertools.count()
        self._ips = itertools.count(2)
        self.scale_times: dict[tuple[str, str], float] = {}

    # ---- configuration -------------------------------------------------------------------
    def reset(self) -> None:
        """Forget all simulation state and rules."""
        with self.store.lock:
            self.default = Behavior()
            self.rules.clear()
            self.sims.clear()
            self.pod_owner.clear()
            self.hpa_target.clear()
            self.heap.clear()
            self.scale_times.clear()

    def resolve(self, ns: str, name: str) -> Behavior:
        """Behaviour for a deployment at rollout start: last matching rule, else default."""
        for regex, rule_ns, b in reversed(self.rules):
            if (rule_ns is None or rule_ns == ns) and regex.fullmatch(name):
                return b
        return self.default

    def set_behavior(self, ns: str, name: str, b: Behavior, now: float | None = None) -> None:
        """Change an existing deployment's behaviour from now on (sticky override)."""
        now = time.time() if now is None else now
        with self.store.lock:
            sim = self.sims.get((ns, name))
            if sim is None or self.store.get("deployments", ns, name) is None:
                raise KeyError(f"deployment {ns}/{name} does not exist")
            old_mode = sim.behavior.mode
            sim.override = sim.behavior = b
            sim.progress_time = now
            for pod in list(sim.pods.values()):
                if pod.rs_hash != sim.rs_hash:
                    continue
                if "unschedulable" in (old_mode, b.mode):
                    self._delete_pod(ns, sim, pod.name)
                else:
                    pod.behavior, pod.start = b, now
            self.reconcile_deployment(ns, name, now)

    # ---- scheduling ----------------------------------------------------------------------
    def tick(self, now: float | None = None) -> None:
        """Reconcile every deployment whose next transition is due."""
        now = time.time() if now is None else now
        if not self.heap or self.heap[0][0] > now:
            return
        with self.store.lock:
            while self.heap and self.heap[0][0] <= now:
                due, _, ns, name = heapq.heappop(self.heap)
                sim = self.sims.get((ns, name))
                if sim is None or sim.scheduled != due:
                    continue
                sim.scheduled = None
                self.reconcile_deployment(ns, name, now)

    def _schedule(self, ns: str, name: str, sim: DeploySim, due: float | None) -> None:
        if due is None or (sim.scheduled is not None and sim.scheduled <= due):
            return
        sim.scheduled = due
        heapq.heappush(self.heap, (due, next(self._seq), ns, name))

    # ---- change notifications ------------------------------------------------------------
    def on_change(self, plural: str, ns: str, name: str, deleted: bool) -> None:
        """Hook called by Ops after every committed API change."""
        now = time.time()
        if plural == "deployments":
            self.reconcile_deployment(ns, name, now)
        elif plural == "pods" and deleted:
            owner = self.pod_owner.pop((ns, name), None)
            if owner is not None:
                sim = self.sims.get((ns, owner))
                if sim is not None:
                    sim.pods.pop(name, None)
                self.reconcile_deployment(ns, owner, now)
        elif plural == "replicasets" and deleted:
            for (sns, dname), _sim in list(self.sims.items()):
                if sns == ns and name.startswith(dname + "-"):
                    self.reconcile_deployment(ns, dname, now)
        elif plural == "horizontalpodautoscalers":
            old_target = self.hpa_target.pop((ns, name), None)
            entry = self.store.get("horizontalpodautoscalers", ns, name)
            if entry is not None:
                ref = entry.obj.get("spec", {}).get("scaleTargetRef") or {}
                if ref.get("kind") == "Deployment" and ref.get("name"):
                    self.hpa_target[(ns, name)] = ref["name"]
                    self.reconcile_deployment(ns, ref["name"], now)
                target = self.store.get("deployments", ns, ref.get("name") or "")
                self._hpa_status(ns, name, target if ref.get("kind") == "Deployment" else None, now)
            if old_target is not None and old_target != self.hpa_target.get((ns, name)):
                self.reconcile_deployment(ns, old_target, now)
        elif plural == "namespaces" and deleted:
            for key in [k for k in self.sims if k[0] == name]:
                del self.sims[key]
            for key in [k for k in self.hpa_target if k[0] == name]:
                del self.hpa_target[key]

    # ---- deployment reconcile ------------------------------------------------------------
    def reconcile_deployment(self, ns: str, name: str, now: float) -> None:
        """Bring RS/pods/status of one deployment up to date at time `now`."""
        with self.store.lock:
            entry = self.store.get("deployments", ns, name)
            sim = self.sims.get((ns, name))
            if entry is None:
                if sim is not None:
                    del self.sims[(ns, name)]
                    for pod in sim.pods:
                        self.pod_owner.pop((ns, pod), None)
                for hpa_key, target in list(self.hpa_target.items()):
                    if hpa_key[0] == ns and target == name:
                        self._hpa_status(ns, hpa_key[1], None, now)
                return
            dep = entry.obj
            uid = dep["metadata"]["uid"]
            if sim is None or sim.uid != uid:
                sim = self.sims[(ns, name)] = DeploySim(uid=uid)
            if dep["metadata"].get("deletionTimestamp"):
                return
            dep = self._hpa_clamp(ns, name, dep, now)
            spec = dep.get("spec") or {}
            n = int(spec.get("replicas", 1))
            gen = int(dep["metadata"].get("generation", 1))
            progressed = False
            if gen != sim.observed_gen:
                sim.observed_gen = gen
                sim.behavior = sim.override or self.resolve(ns, name)
                sim.progress_time = now
                progressed = True
                h = template_hash(spec.get("template"))
                if h != sim.rs_hash and not (spec.get("paused") and sim.rs_hash):
                    sim.rs_hash = h
            rs_obj = self._ensure_rs(ns, dep, sim, n)
            self._scale_pods(ns, dep, sim, rs_obj, n, now)
            views = self._sync_pods(ns, sim, now)
            cur = [p for p in sim.pods.values() if p.rs_hash == sim.rs_hash]
            cur_ready = sum(1 for p in cur if views[p.name].ready)
            if len(cur) == n and cur_ready == n:
                for pod in [p for p in sim.pods.values() if p.rs_hash != sim.rs_hash]:
                    self._delete_pod(ns, sim, pod.name)
                    views.pop(pod.name, None)
            self._sync_rs_status(ns, sim, views)
            due = self._write_status(ns, dep, sim, views, n, now, progressed)
            nexts = [v.next_at for v in views.values() if v.next_at is not None]
            if due is not None:
                nexts.append(due)
            self._schedule(ns, name, sim, min(nexts) if nexts else None)
            for hpa_key, target in list(self.hpa_target.items()):
                if hpa_key[0] == ns and target == name:
                    self._hpa_status(ns, hpa_key[1], self.store.get("deployments", ns, name), now)

    def _ensure_rs(self, ns: str, dep: dict[str, Any], sim: DeploySim, n: int) -> dict[str, Any]:
        spec = dep.get("spec") or {}
        dname = dep["metadata"]["name"]
        rs_name = f"{dname}-{sim.rs_hash}"
        revisions = []
        for e in self.store.entries("replicasets", ns):
            refs = e.obj["metadata"].get("ownerReferences") or []
            if any(r.get("uid") == sim.uid for r in refs):
                rev = int((e.obj["metadata"].get("annotations") or {}).get(REVISION, "0"))
                revisions.append((rev, e.obj["metadata"]["name"]))
        existing = self.store.get("replicasets", ns, rs_name)
        cur_rev = max((r for r, nm in revisions if nm == rs_name), default=0)
        top = max((r for r, _ in revisions), default=0)
        revision = cur_rev if cur_rev == top and cur_rev else top + 1
        tpl = copy.deepcopy(spec.get("template") or {})
        tpl.setdefault("metadata", {}).setdefault("labels", {})["pod-template-hash"] = sim.rs_hash
        selector = copy.deepcopy(spec.get("selector") or {})
        selector.setdefault("matchLabels", {})["pod-template-hash"] = sim.rs_hash
        ann = {
            "deployment.kubernetes.io/desired-replicas": str(n),
            "deployment.kubernetes.io/max-replicas": str(n + 1),
            REVISION: str(revision),
        }
        if existing is None:
            obj: dict[str, Any] = {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "metadata": {
                    "name": rs_name,
                    "namespace": ns,
                    "uid": _uuid(),
                    "generation": 1,
                    "creationTimestamp": now_iso(),
                    "labels": dict(tpl["metadata"]["labels"]),
                    "annotations": ann,
                    "ownerReferences": [self._owner("apps/v1", "Deployment", dep)],
                },
                "spec": {"replicas": n, "selector": selector, "template": tpl},
            }
            self._event(
                ns,
                dep,
                "Normal",
                "ScalingReplicaSet",
                f"Scaled up replica set {rs_name} to {n} from 0",
                "deployment-controller",
            )
            return self.store.commit(RS, obj, {}).obj
        obj = existing.obj
        if obj["spec"].get("replicas") != n or obj["metadata"].get("annotations") != ann:
            obj = copy.deepcopy(obj)
            if obj["spec"].get("replicas") != n:
                obj["metadata"]["generation"] = obj["metadata"].get("generation", 1) + 1
            obj["spec"]["replicas"] = n
            obj["metadata"]["annotations"] = ann
            obj = self.store.commit(RS, obj, existing.managers).obj
        return obj

    def _scale_pods(
        self,
        ns: str,
        dep: dict[str, Any],
        sim: DeploySim,
        rs_obj: dict[str, Any],
        n: int,
        now: float,
    ) -> None:
        cur = sorted(
            (p for p in sim.pods.values() if p.rs_hash == sim.rs_hash),
            key=lambda p: (p.created, p.name),
        )
        for pod in cur[n:][::-1]:
            self._delete_pod(ns, sim, pod.name)
        for _ in range(n - len(cur)):
            self._create_pod(ns, dep, sim, rs_obj, now)

    def _create_pod(
        self, ns: str, dep: dict[str, Any], sim: DeploySim, rs_obj: dict[str, Any], now: float
    ) -> None:
        tpl = rs_obj["spec"]["template"]
        rs_name = rs_obj["metadata"]["name"]
        name = f"{rs_name}-{random_suffix()}"
        while self.store.get("pods", ns, name) is not None:
            name = f"{rs_name}-{random_suffix()}"
        i = next(self._ips)
        node = NODES[i % len(NODES)]
        spec = copy.deepcopy(tpl.get("spec") or {})
        spec.setdefault("serviceAccountName", "default")
        spec.setdefault("serviceAccount", spec["serviceAccountName"])
        spec.setdefault("enableServiceLinks", True)
        spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
        spec.setdefault("priority", 0)
        if sim.behavior.mode != "unschedulable":
            spec["nodeName"] = node[0]
        meta: dict[str, Any] = {
            "name": name,
            "generateName": f"{rs_name}-",
            "namespace": ns,
            "uid": _uuid(),
            "creationTimestamp": now_iso(now),
            "labels": dict((tpl.get("metadata") or {}).get("labels") or {}),
            "ownerReferences": [self._owner("apps/v1", "ReplicaSet", rs_obj)],
        }
        ann = (tpl.get("metadata") or {}).get("annotations")
        if ann:
            meta["annotations"] = dict(ann)
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": meta,
            "spec": spec,
            "status": {"phase": "Pending"},
        }
        sim.pods[name] = PodSim(
            name,
            sim.rs_hash,
            now,
            now,
            sim.behavior,
            f"10.244.{i // 250 % 250}.{i % 250 + 1}",
            node,
        )
        self.pod_owner[(ns, name)] = dep["metadata"]["name"]
        self.store.commit(POD, pod, {})

    def _delete_pod(self, ns: str, sim: DeploySim, name: str) -> None:
        sim.pods.pop(name, None)
        self.pod_owner.pop((ns, name), None)
        self.store.remove(POD, ns, name)

    def _sync_pods(self, ns: str, sim: DeploySim, now: float) -> dict[str, PodView]:
        views: dict[str, PodView] = {}
        for pod in list(sim.pods.values()):
            entry = self.store.get("pods", ns, pod.name)
            if entry is None:
                sim.pods.pop(pod.name, None)
                self.pod_owner.pop((ns, pod.name), None)
                continue
            view = pod_view(
                pod.behavior, entry.obj, pod.created, pod.start, now, pod.ip, pod.node[1]
            )
            views[pod.name] = view
            if entry.obj.get("status") != view.status:
                obj = dict(entry.obj)
                obj["metadata"] = dict(obj["metadata"])
                obj["status"] = view.status
                self.store.commit(POD, obj, entry.managers)
            for etype, reason, message in view.events:
                if (pod.name, reason + message[:40]) not in sim.events_seen:
                    sim.events_seen.add((pod.name, reason + message[:40]))
                    self._event(ns, entry.obj, etype, reason, message, "kubelet", pod.node[0])
        return views

    def _sync_rs_status(self, ns: str, sim: DeploySim, views: dict[str, PodView]) -> None:
        counts: dict[str, list[int]] = {}
        for pod in sim.pods.values():
            c = counts.setdefault(pod.rs_hash, [0, 0])
            c[0] += 1
            c[1] += 1 if pod.name in views and views[pod.name].ready else 0
        for e in list(self.store.entries("replicasets", ns)):
            refs = e.obj["metadata"].get("ownerReferences") or []
            if not any(r.get("uid") == sim.uid for r in refs):
                continue
            rs_hash = (e.obj["metadata"].get("labels") or {}).get("pod-template-hash", "")
            total, ready = counts.get(rs_hash, [0, 0])
            obj = copy.deepcopy(e.obj)
            if rs_hash != sim.rs_hash and obj["spec"].get("replicas") != total:
                obj["spec"]["replicas"] = total
                obj["metadata"]["generation"] = obj["metadata"].get("generation", 1) + 1
            status = _omit_zero(
                {"fullyLabeledReplicas": total, "readyReplicas": ready, "availableReplicas": ready}
            )
            status = {
                "replicas": total,
                **status,
                "observedGeneration": obj["metadata"].get("generation", 1),
            }
            obj["status"] = status
            if obj != e.obj:
                self.store.commit(RS, obj, e.managers)

    def _write_status(
        self,
        ns: str,
        dep: dict[str, Any],
        sim: DeploySim,
        views: dict[str, PodView],
        n: int,
        now: float,
        progressed: bool,
    ) -> float | None:
        """Compute and store Deployment status; returns the progress-deadline time if pending."""
        spec = dep.get("spec") or {}
        name = dep["metadata"]["name"]
        rs_name = f"{name}-{sim.rs_hash}"
        cur = [p for p in sim.pods.values() if p.rs_hash == sim.rs_hash]
        updated = len(cur)
        total = len(sim.pods)
        ready = sum(1 for v in views.values() if v.ready)
        cur_ready = sum(1 for p in cur if p.name in views and views[p.name].ready)
        complete = updated == n and total == n and cur_ready == n
        old_status = dep.get("status") or {}
        old_conds = {c["type"]: c for c in old_status.get("conditions") or []}
        prev = old_conds.get("Progressing")
        if complete:
            prog = (
                "True",
                "NewReplicaSetAvailable",
                f'ReplicaSet "{rs_name}" has successfully progressed.',
            )
        elif progressed or cur_ready > sim.last_ready or updated > sim.last_updated:
            if not progressed:
                sim.progress_time = now
            prog = ("True", "ReplicaSetUpdated", f'ReplicaSet "{rs_name}" is progressing.')
        elif prev is not None and prev.get("reason") == "NewReplicaSetAvailable":
            prog = ("True", "NewReplicaSetAvailable", prev.get("message", ""))
        elif now >= sim.progress_time + float(spec.get("progressDeadlineSeconds", 600)):
            prog = (
                "False",
                "ProgressDeadlineExceeded",
                f'ReplicaSet "{rs_name}" has timed out progressing.',
            )
        else:
            prog = ("True", "ReplicaSetUpdated", f'ReplicaSet "{rs_name}" is progressing.')
        sim.last_ready, sim.last_updated = cur_ready, updated
        available = ready >= n - _max_unavailable(spec, n)
        avail = (
            ("True", "MinimumReplicasAvailable", "Deployment has minimum availability.")
            if available
            else (
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
            )
        )
        conds = [
            self._condition("Available", avail, old_conds.get("Available"), now),
            self._condition("Progressing", prog, prev, now, progressed),
        ]
        status = _omit_zero(
            {
                "observedGeneration": dep["metadata"].get("generation", 1),
                "replicas": total,
                "updatedReplicas": updated,
                "readyReplicas": ready,
                "availableReplicas": ready,
                "unavailableReplicas": max(max(total, n) - ready, 0),
            }
        )
        status["conditions"] = conds
        rs_entry = self.store.get("replicasets", ns, rs_name)
        rs_ann = (rs_entry.obj["metadata"].get("annotations") or {}) if rs_entry else {}
        revision = rs_ann.get(REVISION)
        ann = dep["metadata"].get("annotations") or {}
        if status != old_status or (revision and ann.get(REVISION) != revision):
            entry = self.store.get("deployments", ns, name)
            managers = copy_managers(entry.managers) if entry else {}
            obj = dict(dep)
            obj["metadata"] = dict(dep["metadata"])
            if revision:
                obj["metadata"]["annotations"] = {**ann, REVISION: revision}
                grant(
                    managers,
                    (KCM, "Update", ""),
                    {("f:metadata", "f:annotations", f"f:{REVISION}")},
                    now_iso(now),
                    "apps/v1",
                )
            obj["status"] = status
            grant(managers, (KCM, "Update", "status"), {("f:status",)}, now_iso(now), "apps/v1")
            self.store.commit(DEPLOY, obj, managers)
        if not complete and prog[1] == "ReplicaSetUpdated":
            return sim.progress_time + float(spec.get("progressDeadlineSeconds", 600))
        return None

    @staticmethod
    def _condition(
        ctype: str,
        want: tuple[str, str, str],
        old: dict[str, Any] | None,
        now: float,
        touch: bool = False,
    ) -> dict[str, Any]:
        status, reason, message = want
        ts = now_iso(now)
        if old is not None and old.get("status") == status:
            transition = old.get("lastTransitionTime", ts)
            same = old.get("reason") == reason and old.get("message") == message and not touch
            update = old.get("lastUpdateTime", ts) if same else ts
        else:
            transition = update = ts
        return {
            "type": ctype,
            "status": status,
            "lastUpdateTime": update,
            "lastTransitionTime": transition,
            "reason": reason,
            "message": message,
        }

    # ---- HPA -----------------------------------------------------------------------------
    def _hpa_for(self, ns: str, name: str) -> dict[str, Any] | None:
        for (hns, hname), target in self.hpa_target.items():
            if hns == ns and target == name:
                entry = self.store.get("horizontalpodautoscalers", ns, hname)
                if entry is not None:
                    return entry.obj
        return None

    def _hpa_clamp(self, ns: str, name: str, dep: dict[str, Any], now: float) -> dict[str, Any]:
        hpa = self._hpa_for(ns, name)
        if hpa is None:
            return dep
        spec = hpa.get("spec") or {}
        lo, hi = int(spec.get("minReplicas", 1)), int(spec.get("maxReplicas", 1))
        cur = int((dep.get("spec") or {}).get("replicas", 1))
        want = min(max(cur, lo), hi)
        if want == cur:
            return dep
        entry = self.store.get("deployments", ns, name)
        managers = copy_managers(entry.managers) if entry else {}
        obj = copy.deepcopy(dep)
        obj["spec"]["replicas"] = want
        obj["metadata"]["generation"] = obj["metadata"].get("generation", 1) + 1
        grant(
            managers, (KCM, "Update", "scale"), {("f:spec", "f:replicas")}, now_iso(now), "apps/v1"
        )
        hpa_name = hpa["metadata"]["name"]
        self.scale_times[(ns, hpa_name)] = now
        return self.store.commit(DEPLOY, obj, managers).obj

    def _hpa_status(self, ns: str, hpa_name: str, dep_entry: Any, now: float | None) -> None:
        entry = self.store.get("horizontalpodautoscalers", ns, hpa_name)
        if entry is None:
            return
        hpa = entry.obj
        spec = hpa.get("spec") or {}
        ref = spec.get("scaleTargetRef") or {}
        lo, hi = int(spec.get("minReplicas", 1)), int(spec.get("maxReplicas", 1))
        ts = now_iso(now)
        old_conds = {c["type"]: c for c in (hpa.get("status") or {}).get("conditions") or []}

        def cond(ctype: str, ok: bool, reason: str, msg: str) -> dict[str, Any]:
            old = old_conds.get(ctype)
            st = "True" if ok else "False"
            same = old is not None and old.get("status") == st and old.get("reason") == reason
            return {
                "type": ctype,
                "status": st,
                "lastTransitionTime": old["lastTransitionTime"] if same and old else ts,
                "reason": reason,
                "message": msg,
            }

        if dep_entry is None:
            target = f'{ref.get("kind", "").lower()}s/scale.apps "{ref.get("name")}" not found'
            status: dict[str, Any] = {
                "currentReplicas": 0,
                "desiredReplicas": 0,
                "conditions": [
                    cond(
                        "AbleToScale",
                        False,
                        "FailedGetScale",
                        "the HPA controller was unable to get the target's current scale: "
                        + target,
                    )
                ],
            }
        else:
            dep = dep_entry.obj
            cur = int((dep.get("spec") or {}).get("replicas", 1))
            current = int((dep.get("status") or {}).get("replicas", 0))
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
                    cond(
                        "ScalingActive",
                        True,
                        "ValidMetricFound",
                        "the HPA was able to successfully calculate a replica count from cpu "
                        "resource utilization (percentage of request)",
                    ),
                    limited,
                ],
            }
            scaled = self.scale_times.get((ns, hpa_name))
            old_last = (hpa.get("status") or {}).get("lastScaleTime")
            if scaled is not None:
                status["lastScaleTime"] = now_iso(scaled)
            elif old_last:
                status["lastScaleTime"] = old_last
        status["observedGeneration"] = hpa["metadata"].get("generation", 1)
        if hpa.get("status") != status:
            obj = dict(hpa)
            obj["status"] = status
            self.store.commit(HPA, obj, entry.managers)

    # ---- helpers -------------------------------------------------------------------------
    @staticmethod
    def _owner(api_version: str, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
        return {
            "apiVersion": api_version,
            "kind": kind,
            "name": obj["metadata"]["name"],
            "uid": obj["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }

    def _event(
        self,
        ns: str,
        involved: dict[str, Any],
        etype: str,
        reason: str,
        message: str,
        component: str,
        host: str | None = None,
    ) -> None:
        meta = involved["metadata"]
        ts = now_iso()
        source: dict[str, Any] = {"component": component}
        if host:
            source["host"] = host
        ev = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{meta['name']}.{_uuid().replace('-', '')[:16]}",
                "namespace": ns,
                "uid": _uuid(),
                "creationTimestamp": ts,
            },
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
        self.store.commit(EVENT, ev, {})


def _uuid() -> str:
    return str(uuid.uuid4())
