"""Simulated deployment/replicaset controllers and kubelet, reconciled lazily from a time heap."""

from __future__ import annotations

import copy
import heapq
import itertools
import re
import time
import uuid
from typing import Any

from .apply import copy_managers, grant
from .behavior import Behavior, PodView, pod_view
from .events import emit_event, owner_ref
from .hpa import KCM, HpaController
from .ops import random_suffix
from .resources import BY_PLURAL
from .sim import DeploySim, PodSim, max_unavailable, omit_zero, template_hash
from .store import Store, now_iso

DEPLOY, RS, POD = BY_PLURAL["deployments"], BY_PLURAL["replicasets"], BY_PLURAL["pods"]
NODES = [("fake-node-1", "10.0.0.11"), ("fake-node-2", "10.0.0.12"), ("fake-node-3", "10.0.0.13")]
REVISION = "deployment.kubernetes.io/revision"


class Controller:
    """Drives deployments, replicasets, pods and HPAs from per-deployment Behaviors."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.default = Behavior()
        self.rules: list[tuple[re.Pattern[str], str | None, Behavior]] = []
        self.sims: dict[tuple[str, str], DeploySim] = {}
        self.pod_owner: dict[tuple[str, str], str] = {}
        self.heap: list[tuple[float, int, str, str]] = []
        self.hpa = HpaController(store)
        self._seq = itertools.count()
        self._ips = itertools.count(2)

    # ---- configuration -------------------------------------------------------------------
    def reset(self) -> None:
        """Forget all simulation state and rules."""
        with self.store.lock:
            self.default = Behavior()
            self.rules.clear()
            self.sims.clear()
            self.pod_owner.clear()
            self.heap.clear()
            self.hpa.reset()

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
                    self._delete_pod(ns, sim, pod.name)  # re-created (un)scheduled below
                else:
                    pod.behavior, pod.start = b, now
            self.reconcile_deployment(ns, name, now)

    # ---- scheduling ----------------------------------------------------------------------
    def tick(self, now: float | None = None) -> None:
        """Reconcile every deployment whose next transition is due."""
        now = time.time() if now is None else now
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
            for sns, dname in list(self.sims):
                if sns == ns and name.startswith(dname + "-"):
                    self.reconcile_deployment(ns, dname, now)
        elif plural == "horizontalpodautoscalers":
            for target in self.hpa.changed(ns, name):
                self.reconcile_deployment(ns, target, now)
            target_name = self.hpa.targets.get((ns, name), "")
            self.hpa.write_status(ns, name, self.store.get("deployments", ns, target_name), now)
        elif plural == "namespaces" and deleted:
            for key in [k for k in self.sims if k[0] == name]:
                del self.sims[key]
            self.hpa.forget_namespace(name)

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
                self.hpa.refresh(ns, name, now)
                return
            dep = entry.obj
            uid = dep["metadata"]["uid"]
            if sim is None or sim.uid != uid:
                sim = self.sims[(ns, name)] = DeploySim(uid=uid)
            if dep["metadata"].get("deletionTimestamp"):
                return
            dep = self.hpa.clamp(ns, name, dep, now)
            spec = dep.get("spec") or {}
            n = int(spec.get("replicas", 1))
            gen = int(dep["metadata"].get("generation", 1))
            progressed = gen != sim.observed_gen
            if progressed:
                sim.observed_gen = gen
                sim.behavior = sim.override or self.resolve(ns, name)
                sim.progress_time = now
                h = template_hash(spec.get("template"))
                if not (spec.get("paused") and sim.rs_hash):
                    sim.rs_hash = h
            rs_obj = self._ensure_rs(ns, dep, sim, n)
            self._scale_pods(ns, dep, sim, rs_obj, n, now)
            views = self._sync_pods(ns, sim, now)
            mrs = float(spec.get("minReadySeconds") or 0)
            cur = [p for p in sim.pods.values() if p.rs_hash == sim.rs_hash]
            if len(cur) == n and all(
                p.name in views and views[p.name].available(mrs, now) for p in cur
            ):
                for old in [p for p in sim.pods.values() if p.rs_hash != sim.rs_hash]:
                    self._delete_pod(ns, sim, old.name)
                    views.pop(old.name, None)
            self._sync_rs(ns, dep, sim, views, mrs, now)
            due = self._write_status(ns, dep, sim, views, n, now, progressed)
            nexts = [v.next_at for v in views.values() if v.next_at is not None]
            nexts += [
                v.ready_since + mrs for v in views.values() if v.ready and not v.available(mrs, now)
            ]
            if due is not None:
                nexts.append(due)
            self._schedule(ns, name, sim, min(nexts) if nexts else None)
            self.hpa.refresh(ns, name, now)

    def _rs_name(self, dep: dict[str, Any], rs_hash: str) -> str:
        return f"{dep['metadata']['name']}-{rs_hash}"

    def _ensure_rs(self, ns: str, dep: dict[str, Any], sim: DeploySim, n: int) -> dict[str, Any]:
        spec = dep.get("spec") or {}
        top = max(sim.revisions.values(), default=0)
        if sim.revisions.get(sim.rs_hash) != top or not top:
            sim.revisions[sim.rs_hash] = top + 1
        revision = sim.revisions[sim.rs_hash]
        rs_name = self._rs_name(dep, sim.rs_hash)
        ann = {
            "deployment.kubernetes.io/desired-replicas": str(n),
            "deployment.kubernetes.io/max-replicas": str(n + 1),
            REVISION: str(revision),
        }
        existing = self.store.get("replicasets", ns, rs_name)
        if existing is None:
            tpl = copy.deepcopy(spec.get("template") or {})
            labels = tpl.setdefault("metadata", {}).setdefault("labels", {})
            labels["pod-template-hash"] = sim.rs_hash
            selector = copy.deepcopy(spec.get("selector") or {})
            selector.setdefault("matchLabels", {})["pod-template-hash"] = sim.rs_hash
            meta = {
                "name": rs_name,
                "namespace": ns,
                "uid": str(uuid.uuid4()),
                "generation": 1,
                "creationTimestamp": now_iso(),
                "labels": dict(labels),
                "annotations": ann,
                "ownerReferences": [owner_ref("apps/v1", "Deployment", dep)],
            }
            obj: dict[str, Any] = {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "metadata": meta,
                "spec": {"replicas": n, "selector": selector, "template": tpl},
            }
            emit_event(
                self.store,
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
        tmeta = tpl.get("metadata") or {}
        meta: dict[str, Any] = {
            "name": name,
            "generateName": f"{rs_name}-",
            "namespace": ns,
            "uid": str(uuid.uuid4()),
            "creationTimestamp": now_iso(now),
            "labels": dict(tmeta.get("labels") or {}),
            "ownerReferences": [owner_ref("apps/v1", "ReplicaSet", rs_obj)],
        }
        if tmeta.get("annotations"):
            meta["annotations"] = dict(tmeta["annotations"])
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": meta,
            "spec": spec,
            "status": {"phase": "Pending"},
        }
        ip = f"10.244.{i // 250 % 250}.{i % 250 + 1}"
        sim.pods[name] = PodSim(name, sim.rs_hash, now, now, sim.behavior, ip, node)
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
            involved = entry.obj
            if involved.get("status") != view.status:
                involved = self.store.commit(
                    POD, {**involved, "status": view.status}, entry.managers
                ).obj
            for etype, reason, message in view.events:
                key = (pod.name, reason + message[:40])
                if key not in sim.events_seen:
                    sim.events_seen.add(key)
                    emit_event(self.store, involved, etype, reason, message, "kubelet", pod.node[0])
        return views

    def _sync_rs(
        self,
        ns: str,
        dep: dict[str, Any],
        sim: DeploySim,
        views: dict[str, PodView],
        mrs: float,
        now: float,
    ) -> None:
        counts: dict[str, list[int]] = {}  # hash -> [pods, ready, available]
        for pod in sim.pods.values():
            c = counts.setdefault(pod.rs_hash, [0, 0, 0])
            view = views.get(pod.name)
            c[0] += 1
            c[1] += 1 if view is not None and view.ready else 0
            c[2] += 1 if view is not None and view.available(mrs, now) else 0
        limit = int((dep.get("spec") or {}).get("revisionHistoryLimit", 10))
        old = sorted((r, h) for h, r in sim.revisions.items() if h != sim.rs_hash)
        for _, h in old[: max(len(old) - limit, 0)]:
            if h not in counts:
                del sim.revisions[h]
                self.store.remove(RS, ns, self._rs_name(dep, h))
        for h in sim.revisions:
            entry = self.store.get("replicasets", ns, self._rs_name(dep, h))
            if entry is None:
                continue
            total, ready, available = counts.get(h, [0, 0, 0])
            obj = entry.obj
            if h != sim.rs_hash and obj["spec"].get("replicas") != total:
                gen = obj["metadata"].get("generation", 1) + 1
                obj = {
                    **obj,
                    "spec": {**obj["spec"], "replicas": total},
                    "metadata": {**obj["metadata"], "generation": gen},
                }
            counters = omit_zero(
                {
                    "fullyLabeledReplicas": total,
                    "readyReplicas": ready,
                    "availableReplicas": available,
                }
            )
            status = {
                "replicas": total,
                **counters,
                "observedGeneration": obj["metadata"].get("generation", 1),
            }
            if obj is not entry.obj or obj.get("status") != status:
                self.store.commit(RS, {**obj, "status": status}, entry.managers)

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
        """Compute and store Deployment status; returns the progress deadline if pending."""
        spec = dep.get("spec") or {}
        rs_name = self._rs_name(dep, sim.rs_hash)
        mrs = float(spec.get("minReadySeconds") or 0)
        cur = [p for p in sim.pods.values() if p.rs_hash == sim.rs_hash]
        ready = sum(1 for v in views.values() if v.ready)
        available = sum(1 for v in views.values() if v.available(mrs, now))
        cur_ready = sum(1 for p in cur if p.name in views and views[p.name].available(mrs, now))
        updated, total = len(cur), len(sim.pods)
        complete = updated == n and total == n and cur_ready == n
        old_status = dep.get("status") or {}
        old_conds = {c["type"]: c for c in old_status.get("conditions") or []}
        prev = old_conds.get("Progressing")
        deadline = sim.progress_time + float(spec.get("progressDeadlineSeconds", 600))
        progressing = ("True", "ReplicaSetUpdated", f'ReplicaSet "{rs_name}" is progressing.')
        if complete:
            prog = (
                "True",
                "NewReplicaSetAvailable",
                f'ReplicaSet "{rs_name}" has successfully progressed.',
            )
        elif progressed or cur_ready > sim.last_ready or updated > sim.last_updated:
            if not progressed:
                sim.progress_time = now
                deadline = now + float(spec.get("progressDeadlineSeconds", 600))
            prog = progressing
        elif prev is not None and prev.get("reason") == "NewReplicaSetAvailable":
            prog = ("True", "NewReplicaSetAvailable", prev.get("message", ""))
        elif now >= deadline:
            prog = (
                "False",
                "ProgressDeadlineExceeded",
                f'ReplicaSet "{rs_name}" has timed out progressing.',
            )
        else:
            prog = progressing
        sim.last_ready, sim.last_updated = cur_ready, updated
        if available >= n - max_unavailable(spec, n):
            avail = ("True", "MinimumReplicasAvailable", "Deployment has minimum availability.")
        else:
            avail = (
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
            )
        status = omit_zero(
            {
                "observedGeneration": dep["metadata"].get("generation", 1),
                "replicas": total,
                "updatedReplicas": updated,
                "readyReplicas": ready,
                "availableReplicas": available,
                "unavailableReplicas": max(max(total, n) - available, 0),
            }
        )
        status["conditions"] = [
            self._condition("Available", avail, old_conds.get("Available"), now),
            self._condition("Progressing", prog, prev, now, touch=progressed),
        ]
        revision = str(sim.revisions[sim.rs_hash])
        ann = dep["metadata"].get("annotations") or {}
        if status != old_status or ann.get(REVISION) != revision:
            entry = self.store.get("deployments", ns, dep["metadata"]["name"])
            managers = copy_managers(entry.managers) if entry else {}
            ts = now_iso(now)
            obj = dict(dep)
            obj["metadata"] = {**dep["metadata"], "annotations": {**ann, REVISION: revision}}
            obj["status"] = status
            grant(
                managers,
                (KCM, "Update", ""),
                {("f:metadata", "f:annotations", f"f:{REVISION}")},
                ts,
                "apps/v1",
            )
            grant(managers, (KCM, "Update", "status"), {("f:status",)}, ts, "apps/v1")
            self.store.commit(DEPLOY, obj, managers)
        if not complete and prog[1] == "ReplicaSetUpdated":
            return deadline
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
