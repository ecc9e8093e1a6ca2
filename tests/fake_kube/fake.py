"""FakeKube: the public facade tying store, controller, HTTP server and test helpers together."""

from __future__ import annotations

import copy
import re
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from .apply import copy_managers, grant
from .behavior import Behavior
from .controller import NODES, Controller
from .faults import FaultConfig, Faults, InFlight, Stats
from .ops import Ops
from .resources import BY_PLURAL
from .server import App, ServerThread
from .store import Store, now_iso

SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


class FakeKube:
    """An in-process fake Kubernetes API server for tests and benchmarks."""

    def __init__(self) -> None:
        self.store = Store()
        self.ops = Ops(self.store)
        self.controller = Controller(self.store)
        self.ops.hooks.append(self.controller.on_change)
        self.faults = Faults()
        self.counters = Stats()  # request counters (see stats())
        self.inflight = InFlight(self.counters)
        self.latency = 0.0  # seconds every API request waits before being processed
        self._server: ServerThread | None = None
        self._ticker: threading.Thread | None = None
        self._stop = threading.Event()
        self.url = ""
        self._seed()

    # ---- lifecycle -----------------------------------------------------------------------
    def start(self, host: str = "127.0.0.1", port: int = 0) -> FakeKube:
        """Serve on host:port (0 = free port) in background threads; returns self."""
        if self._server is not None:
            return self
        server = ServerThread(App(self), host, port)
        self.url = f"http://{host}:{server.port}"
        server.start()
        self._server = server
        self._stop.clear()
        self._ticker = threading.Thread(target=self._tick_loop, name="fake-kube-tick", daemon=True)
        self._ticker.start()
        return self

    def _tick_loop(self) -> None:
        while not self._stop.wait(0.1):
            try:
                with self.store.lock:
                    self.controller.tick()
            except Exception:
                pass

    def stop(self) -> None:
        """Stop the HTTP server and background ticker."""
        self._stop.set()
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self._ticker is not None:
            self._ticker.join(timeout=2)
            self._ticker = None

    def __enter__(self) -> FakeKube:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def write_kubeconfig(self, path: str | Path) -> str:
        """Write a kubeconfig pointing at this server; returns the path."""
        if not self.url:
            raise RuntimeError("start() the fake before writing a kubeconfig")
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake-user", "user": {"token": "fake-token"}}],
            "contexts": [
                {
                    "name": "fake",
                    "context": {"cluster": "fake", "user": "fake-user", "namespace": "default"},
                }
            ],
            "current-context": "fake",
            "preferences": {},
        }
        Path(path).write_text(yaml.safe_dump(cfg, sort_keys=False))
        return str(path)

    # ---- state ---------------------------------------------------------------------------
    def _seed(self) -> None:
        """Create what a fresh cluster has: system namespaces, nodes, the kubernetes service."""
        with self.store.lock:
            for ns in SYSTEM_NAMESPACES:
                self.ops.create(
                    BY_PLURAL["namespaces"], "", {"metadata": {"name": ns}}, "kube-apiserver", False
                )
            for name, ip in NODES:
                node = {
                    "metadata": {
                        "name": name,
                        "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"},
                    },
                    "status": {
                        "capacity": {"cpu": "8", "memory": "32Gi", "pods": "110"},
                        "allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"},
                        "addresses": [
                            {"type": "InternalIP", "address": ip},
                            {"type": "Hostname", "address": name},
                        ],
                        "conditions": [
                            {
                                "type": "Ready",
                                "status": "True",
                                "reason": "KubeletReady",
                                "message": "kubelet is posting ready status",
                            }
                        ],
                    },
                }
                self.ops.create(BY_PLURAL["nodes"], "", node, "kubelet", False)
                stored = self.store.get("nodes", "", name)
                assert stored is not None
                obj = copy.deepcopy(stored.obj)
                obj["status"] = node["status"]
                self.store.commit(BY_PLURAL["nodes"], obj, stored.managers)
            svc = {
                "metadata": {
                    "name": "kubernetes",
                    "labels": {"component": "apiserver", "provider": "kubernetes"},
                },
                "spec": {
                    "clusterIP": "10.96.0.1",
                    "ports": [{"name": "https", "port": 443, "targetPort": 6443}],
                },
            }
            self.ops.create(BY_PLURAL["services"], "default", svc, "kube-apiserver", False)

    def reset(self) -> None:
        """Drop all objects, rules, faults and counters (system namespaces are re-created)."""
        with self.store.lock:
            self.store.clear()
            self.controller.reset()
            self._seed()
        self.faults.configure(FaultConfig())
        self.latency = 0.0
        self.counters.reset()

    def set_default_behavior(self, behavior: Behavior) -> None:
        """Behaviour for deployments that match no rule (applies to rollouts from now on)."""
        with self.store.lock:
            self.controller.default = behavior

    def add_rule(self, name_regex: str, behavior: Behavior, namespace: str | None = None) -> None:
        """Behaviour for deployments whose name fullmatches name_regex; later rules win."""
        with self.store.lock:
            self.controller.rules.append((re.compile(name_regex), namespace, behavior))

    def clear_rules(self) -> None:
        """Remove every behaviour rule."""
        with self.store.lock:
            self.controller.rules.clear()

    def set_faults(
        self,
        error_rate: float = 0.0,
        codes: tuple[int, ...] = (500, 429),
        retry_after: int = 1,
        hang_rate: float = 0.0,
        hang_seconds: float = 30.0,
        path_regex: str | None = None,
    ) -> None:
        """Configure fault injection for API requests (never for /_fake)."""
        self.faults.configure(
            FaultConfig(error_rate, tuple(codes), retry_after, hang_rate, hang_seconds, path_regex)
        )

    def set_latency(self, seconds: float = 0.0) -> None:
        """Delay every API request (not /_fake) by `seconds` before it is processed."""
        self.latency = float(seconds)

    def stats(self) -> dict[str, Any]:
        """Request counters: total, by_verb, by_verb_resource, faults_injected, ..."""
        return self.counters.snapshot()

    def reset_stats(self) -> None:
        """Zero the request counters."""
        self.counters.reset()

    @property
    def concurrent_violations(self) -> int:
        """Writes that overlapped another in-flight write to the same object (see set_latency)."""
        return self.counters.concurrent_violations

    @property
    def concurrent_violation_keys(self) -> list[tuple[str, str, str]]:
        """The objects (resource, namespace, name) whose writes overlapped."""
        return list(self.inflight.violation_keys)

    # ---- direct store access -------------------------------------------------------------
    def get_object(
        self, api_version: str | None, kind_plural: str, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        """A deep copy of one stored object, or None."""
        res = BY_PLURAL[kind_plural]
        with self.store.lock:
            self.controller.tick()
            entry = self.store.get(kind_plural, (namespace or "") if res.namespaced else "", name)
            return copy.deepcopy(entry.obj) if entry else None

    def list_objects(self, kind_plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """Deep copies of all stored objects of a type (optionally in one namespace)."""
        res = BY_PLURAL[kind_plural]
        with self.store.lock:
            self.controller.tick()
            ns = namespace if res.namespaced else None
            return [copy.deepcopy(e.obj) for e in self.store.entries(kind_plural, ns)]

    def delete_object(self, kind_plural: str, namespace: str | None, name: str) -> bool:
        """Delete behind the client's back (with garbage collection); True if it existed."""
        res = BY_PLURAL[kind_plural]
        with self.store.lock:
            return self.ops.delete_now(res, namespace or "", name) is not None

    def set_replicas(self, namespace: str, name: str, n: int) -> None:
        """Scale a deployment behind the client's back (spec.replicas, generation bump)."""
        res = BY_PLURAL["deployments"]
        with self.store.lock:
            entry = self.ops.require(res, namespace, name)
            obj = copy.deepcopy(entry.obj)
            if obj["spec"].get("replicas") == n:
                return
            obj["spec"]["replicas"] = n
            obj["metadata"]["generation"] = obj["metadata"].get("generation", 1) + 1
            managers = copy_managers(entry.managers)
            grant(
                managers,
                ("kubectl", "Update", "scale"),
                {("f:spec", "f:replicas")},
                now_iso(),
                "apps/v1",
            )
            self.store.commit(res, obj, managers)
            self.controller.reconcile_deployment(namespace, name, time.time())

    def set_behavior(self, namespace: str, deployment_name: str, behavior: Behavior) -> None:
        """Change an existing deployment's behaviour now (sticky until changed again)."""
        self.controller.set_behavior(namespace, deployment_name, behavior)

    def applied_bodies(self, kind_plural: str, namespace: str | None, name: str) -> list[Any]:
        """Every body clients sent via create/update/patch/apply for an object, in order."""
        res = BY_PLURAL[kind_plural]
        with self.store.lock:
            key = (kind_plural, (namespace or "") if res.namespaced else "", name)
            return copy.deepcopy(self.store.applied.get(key, []))
