"""The local runtime: each replica of a version is a model-server process on a loopback port.

For a laptop (`serveplane dev`) and for tests of real inference. Replicas are supervised by
the worker host through records in a state directory (see `local_procs`). There is no
autoscaler locally: an autoscaling version runs `min_replicas` replicas.

`apply` never waits for readiness; `rollout_status` probes each replica's own ready endpoint
once with a short timeout. A replica that exits is reported as failed with the last lines of
its log; `apply` (or `repair`, run every second by the dispatcher's chore for ready versions)
starts it again on a fresh port.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import replace
from pathlib import Path

from db.settings import Settings
from workers.runtime.base import RolloutState, RolloutStatus, VersionSpec
from workers.runtime.local_procs import (
    ProcessTable,
    Replica,
    free_port,
    release,
    replica_key,
    tail,
)
from workers.runtime.local_servers import (
    build_launch,
    local_model_path,
    probe_ready,
    require_binary,
)

log = logging.getLogger(__name__)
PROJECT_ROOT = Path(__file__).resolve().parents[2]
CRASH_LOOP_RESTARTS = 3  # restarts without ever becoming ready before we call it a crash loop
MAX_RESTART_DELAY = 30.0


def wanted_replicas(spec: VersionSpec) -> int:
    """Replicas to run: the fixed count, or the autoscaling floor (no local autoscaler)."""
    return max(spec.min_replicas if spec.autoscale else spec.replicas, 0)


def restart_delay(restarts: int) -> float:
    """Crash backoff used by `repair`: 0.5 s doubling per restart, capped."""
    return float(min(0.5 * 2**restarts, MAX_RESTART_DELAY))


class LocalRuntime:
    """Runs versions as supervised model-server processes on the worker host."""

    name = "local"

    def __init__(self, settings: Settings, state_dir: Path | str | None = None) -> None:
        self.settings = settings
        root = Path(state_dir or settings.local_state_dir).expanduser().resolve()
        self.table = ProcessTable(root)
        self._adopted = False
        self._adopt_lock = threading.Lock()

    @property
    def state_dir(self) -> Path:
        """Where replica records and logs live."""
        return self.table.root

    def adopt(self) -> tuple[int, int]:
        """Adopt live replica processes, forget dead ones; returns (adopted, forgotten)."""
        with self._adopt_lock:
            kept, dropped = self.table.adopt()
            self._adopted = True
        if kept or dropped:
            log.info(
                "local runtime: adopted %d replica(s), forgot %d dead", len(kept), len(dropped)
            )
        return len(kept), len(dropped)

    def _ready_table(self) -> ProcessTable:
        if not self._adopted:
            with self._adopt_lock:
                if not self._adopted:
                    self.table.adopt()
                    self._adopted = True
        return self.table

    # ---- Runtime protocol ----------------------------------------------------------------

    def apply(self, spec: VersionSpec) -> None:
        """Start missing or dead replicas, stop extra ones; never waits for readiness."""
        self._reconcile(spec, backoff=False)

    def repair(self, spec: VersionSpec) -> None:
        """Like `apply`, but a replica that keeps crashing is restarted with a backoff."""
        self._reconcile(spec, backoff=True)

    def rollout_status(self, spec: VersionSpec) -> RolloutStatus:
        """Replica processes and one readiness probe each; an exited replica fails it."""
        table = self._ready_table()
        replicas = table.records(spec.service_uuid, spec.version)
        if not replicas:
            return RolloutStatus(
                "missing",
                reason="ReplicasNotFound",
                message=f"no local replicas of {spec.service_name} v{spec.version}",
            )
        desired = wanted_replicas(spec)
        wanted = [r for r in replicas if r.index < desired]
        alive, ready = 0, list[Replica]()
        for replica in wanted:
            is_alive, code = table.poll(replica)
            if not is_alive:
                return self._exited(spec, replica, code, desired, alive, ready)
            alive += 1
            if self._probe(replica):
                ready.append(replica)
            elif replica.ready_at is None and (
                time.time() - replica.started_at > self.settings.local_start_timeout
            ):
                return self._failed(
                    spec,
                    replica,
                    "ModelServerNotReady",
                    f"replica {replica.index} did not become ready within "
                    f"{self.settings.local_start_timeout:g}s",
                    None,
                    desired,
                    alive,
                    ready,
                )
        state: RolloutState = "progressing"
        if len(ready) == desired and len(wanted) == desired:
            state = "ready"
        return RolloutStatus(
            state,
            desired_replicas=desired,
            current_replicas=alive,
            ready_replicas=len(ready),
            endpoints=[r.url for r in ready],
        )

    def rollout_statuses(self, specs: list[VersionSpec]) -> dict[tuple[str, int], RolloutStatus]:
        """Several rollouts, keyed by (service uuid, version)."""
        return {(s.service_uuid, s.version): self.rollout_status(s) for s in specs}

    def endpoints(self, spec: VersionSpec) -> list[str]:
        """Base URLs of live replicas that have answered ready (a dead one drops out at once)."""
        table = self._ready_table()
        desired = wanted_replicas(spec)
        urls = []
        for replica in table.records(spec.service_uuid, spec.version):
            if replica.index >= desired or not table.poll(replica)[0]:
                continue
            if replica.ready_at is not None or self._probe(replica):
                urls.append(replica.url)
        return urls

    def delete_version(self, spec: VersionSpec) -> None:
        """Stop the version's processes (SIGTERM, then SIGKILL) and forget them."""
        table = self._ready_table()
        with table.lock(spec.service_uuid, spec.version):
            replicas = table.records(spec.service_uuid, spec.version)
            table.stop(replicas, self.settings.local_stop_timeout)
            for replica in replicas:
                table.forget(replica)

    def version_gone(self, spec: VersionSpec) -> bool:
        """True when no process of the version is alive."""
        table = self._ready_table()
        return not any(table.poll(r)[0] for r in table.records(spec.service_uuid, spec.version))

    # ---- beyond the protocol -------------------------------------------------------------

    def stop_all(self) -> int:
        """Stop every replica recorded in the state directory (used by `serveplane dev`)."""
        replicas = self.table.all_records()
        self.table.stop(replicas, self.settings.local_stop_timeout)
        for replica in replicas:
            self.table.forget(replica)
        return len(replicas)

    def replicas(self, spec: VersionSpec) -> list[Replica]:
        """The version's replica records (pid, port, restarts...)."""
        return self._ready_table().records(spec.service_uuid, spec.version)

    # ---- internals -----------------------------------------------------------------------

    def _reconcile(self, spec: VersionSpec, *, backoff: bool) -> None:
        model = local_model_path(spec.model_path)
        binary = require_binary(spec.framework)
        table = self._ready_table()
        desired = wanted_replicas(spec)
        with table.lock(spec.service_uuid, spec.version):
            current = {r.index: r for r in table.records(spec.service_uuid, spec.version)}
            extra = [r for i, r in current.items() if i >= desired]
            if extra:
                table.stop(extra, self.settings.local_stop_timeout)
                for replica in extra:
                    table.forget(replica)
            now = time.time()
            for index in range(desired):
                old = current.get(index)
                restarts = 0
                if old is not None:
                    is_alive, code = table.poll(old)
                    if is_alive:
                        continue
                    exited_at = old.exited_at or now
                    if backoff and now < exited_at + restart_delay(old.restarts):
                        if old.exited_at is None:
                            table.save(replace(old, exited_at=now, exit_code=code))
                        continue
                    release(old.pid)
                    restarts = old.restarts + 1
                    log.info("restarting %s (exit code %s)", old.key, code)
                self._start(table, spec, model, binary, index, restarts)

    def _start(
        self,
        table: ProcessTable,
        spec: VersionSpec,
        model: Path,
        binary: str | None,
        index: int,
        restarts: int,
    ) -> Replica:
        key = replica_key(spec.service_uuid, spec.version, index)
        workdir = table.workdir(key)
        launch = build_launch(spec.framework, spec.service_name, model, binary, free_port)
        for filename, content in launch.config_files.items():
            (workdir / filename).write_text(content)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p
        )
        template = Replica(
            service_uuid=spec.service_uuid,
            service_name=spec.service_name,
            version=spec.version,
            index=index,
            framework=spec.framework,
            pid=0,
            port=launch.ports[0],
            command=launch.command,
            create_time=0.0,
            started_at=0.0,
            log_path=str(table.root / "logs" / f"{key}.log"),
            workdir=str(workdir),
            restarts=restarts,
            extra_ports=launch.ports[1:],
        )
        replica = table.start(template, env)
        log.info("started %s pid %d on port %d", key, replica.pid, replica.port)
        return replica

    def _probe(self, replica: Replica) -> bool:
        if not probe_ready(replica.framework, replica.service_name, replica.port):
            return False
        if replica.ready_at is None:
            # Once ready, the crash-loop count starts over (as Kubernetes does after a while).
            self.table.note(replica, ready_at=time.time(), restarts=0)
        return True

    def _exited(
        self,
        spec: VersionSpec,
        replica: Replica,
        code: int | None,
        desired: int,
        alive: int,
        ready: list[Replica],
    ) -> RolloutStatus:
        if replica.exited_at is None:
            replica = self.table.note(replica, exited_at=time.time(), exit_code=code)
        reason = (
            "CrashLoopBackOff" if replica.restarts >= CRASH_LOOP_RESTARTS else ("ModelServerExited")
        )
        how = f"exit code {code}" if code is not None else "exit code unknown"
        message = f"replica {replica.index} exited ({how})"
        if replica.restarts:
            message += f" after {replica.restarts} restart(s)"
        return self._failed(spec, replica, reason, message, code, desired, alive, ready)

    def _failed(
        self,
        spec: VersionSpec,
        replica: Replica,
        reason: str,
        message: str,
        code: int | None,
        desired: int,
        alive: int,
        ready: list[Replica],
    ) -> RolloutStatus:
        log_tail = tail(replica.log_path, lines=15)
        return RolloutStatus(
            "failed",
            reason=reason,
            message=f"{message}: {log_tail}" if log_tail else message,
            location=f"{spec.service_name} v{spec.version} replica {replica.index} "
            f"(pid {replica.pid}, port {replica.port}, log {replica.log_path})",
            exit_code=code,
            desired_replicas=desired,
            current_replicas=alive,
            ready_replicas=len(ready),
            endpoints=[r.url for r in ready],
        )


def main(argv: list[str] | None = None) -> int:
    """`python -m workers.runtime.local stop-all`: stop every replica of the state directory."""
    import argparse

    from db.settings import get_settings

    parser = argparse.ArgumentParser(prog="python -m workers.runtime.local")
    parser.add_argument("action", choices=["stop-all"])
    parser.add_argument("--state-dir", default=None, help="default SERVEPLANE_LOCAL_STATE_DIR")
    args = parser.parse_args(argv)
    stopped = LocalRuntime(get_settings(), state_dir=args.state_dir).stop_all()
    print(f"stopped {stopped} local replica(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
