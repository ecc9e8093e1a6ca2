"""The local runtime with real model-server processes and a real ONNX model."""

from __future__ import annotations

import json
import os
import secrets
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import pytest

from db.settings import Settings
from tests.conftest import wait_for
from tests.models import build_linear_model
from workers.runtime.base import RolloutStatus, RuntimeError_, VersionSpec
from workers.runtime.local import LocalRuntime
from workers.runtime.local_procs import Replica

W = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)
B = np.array([0.5, -0.5], dtype=np.float32)


def spec_for(model: Path | str, replicas: int = 1, **overrides: Any) -> VersionSpec:
    values: dict[str, Any] = {
        "service_uuid": f"svc-{secrets.token_hex(4)}",
        "service_name": "linear",
        "customer_id": 1,
        "version": 1,
        "framework": "onnxruntime",
        "model_path": str(model),
        "model_format": "onnx",
        "replicas": replicas,
        "min_replicas": replicas,
        "max_replicas": replicas,
        "cpu_cores": 1,
        "memory_gb": 1,
        "gpu_count": 0,
        "cpu_target_percent": 70,
    }
    values.update(overrides)
    return VersionSpec(**values)


def scaled(spec: VersionSpec, replicas: int) -> VersionSpec:
    values = {
        **spec.__dict__,
        "replicas": replicas,
        "min_replicas": replicas,
        "max_replicas": replicas,
    }
    return VersionSpec(**values)


def wait_state(
    rt: LocalRuntime, spec: VersionSpec, state: str, timeout: float = 30.0
) -> RolloutStatus:
    def reached() -> RolloutStatus | None:
        status = rt.rollout_status(spec)
        return status if status.state == state else None

    return wait_for(reached, timeout, interval=0.05, what=f"{spec.service_uuid} to be {state}")


def infer(url: str, x: list[list[float]], name: str = "linear") -> list[float]:
    body = {
        "inputs": [
            {
                "name": "x",
                "shape": [len(x), 2],
                "datatype": "FP32",
                "data": [v for row in x for v in row],
            }
        ]
    }
    response = httpx.post(f"{url}/v2/models/{name}/infer", json=body, timeout=5)
    assert response.status_code == 200, response.text
    return list(response.json()["outputs"][0]["data"])


def pids(rt: LocalRuntime, spec: VersionSpec) -> list[int]:
    return [r.pid for r in rt.replicas(spec)]


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def kill_replica(rt: LocalRuntime, replica: Replica) -> None:
    """SIGKILL a replica; returns once every thread of it is gone (it is reapable)."""
    os.kill(replica.pid, signal.SIGKILL)
    wait_for(lambda: gone(replica.pid), 5, what="the replica to die")
    # The leader shows as a zombie while its other threads still exit: only then is it dead.
    wait_for(lambda: not rt.table.poll(replica)[0], 5, what="the runtime to see the exit")


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return build_linear_model(tmp_path / "linear.onnx", W, B)


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[LocalRuntime]:
    """A runtime on a temp state dir; afterwards no process it started may be left."""
    rt = LocalRuntime(Settings(local_stop_timeout=3.0), state_dir=tmp_path / "state")
    yield rt
    rt.stop_all()
    leftovers = [
        p
        for p in psutil.process_iter(["cmdline", "status"])
        if p.info["status"] != psutil.STATUS_ZOMBIE
        and any(str(tmp_path) in part for part in (p.info["cmdline"] or []))
    ]
    assert not leftovers, f"orphan model servers: {[p.pid for p in leftovers]}"


def test_replicas_become_ready_serve_and_scale(runtime: LocalRuntime, model: Path) -> None:
    spec = spec_for(model, replicas=2)
    assert runtime.rollout_status(spec).state == "missing"
    runtime.apply(spec)
    status = wait_state(runtime, spec, "ready")
    assert (status.desired_replicas, status.current_replicas, status.ready_replicas) == (2, 2, 2)
    assert len(set(status.endpoints)) == 2
    assert sorted(status.endpoints) == sorted(runtime.endpoints(spec))
    for url in status.endpoints:
        assert url.startswith("http://127.0.0.1:")
        assert infer(url, [[1.0, 1.0]]) == pytest.approx([4.5, 5.5])

    runtime.apply(spec)  # idempotent: nothing restarted
    two = pids(runtime, spec)
    assert len(two) == 2

    down = scaled(spec, 1)
    runtime.apply(down)
    assert pids(runtime, down) == two[:1]
    assert gone(two[1])
    assert wait_state(runtime, down, "ready").ready_replicas == 1

    up = scaled(spec, 3)
    runtime.apply(up)
    assert wait_state(runtime, up, "ready").ready_replicas == 3
    three = pids(runtime, up)
    assert three[0] == two[0] and len(set(three)) == 3
    for url in runtime.endpoints(up):
        assert infer(url, [[0.0, 1.0]]) == pytest.approx([3.5, 3.5])

    runtime.delete_version(up)
    assert all(gone(pid) for pid in three)
    assert runtime.version_gone(up)
    assert runtime.rollout_status(up).state == "missing"
    runtime.delete_version(up)  # idempotent


def test_autoscaling_version_runs_min_replicas(runtime: LocalRuntime, model: Path) -> None:
    spec = spec_for(model, replicas=4, min_replicas=2, max_replicas=5)
    runtime.apply(spec)
    status = wait_state(runtime, spec, "ready")
    assert status.desired_replicas == 2 and len(status.endpoints) == 2


def test_killed_replica_is_reported_dropped_and_restarted(
    runtime: LocalRuntime, model: Path
) -> None:
    spec = spec_for(model, replicas=2)
    runtime.apply(spec)
    ready = wait_state(runtime, spec, "ready")
    victim = runtime.replicas(spec)[1]
    kill_replica(runtime, victim)

    assert victim.url not in runtime.endpoints(spec)
    assert len(runtime.endpoints(spec)) == 1
    status = runtime.rollout_status(spec)
    assert status.state == "failed"
    assert status.reason == "ModelServerExited"
    assert status.exit_code == -signal.SIGKILL
    assert "replica 1" in (status.location or "")

    runtime.apply(spec)  # the watchdog path: a dead replica is started again
    replica = runtime.replicas(spec)[1]
    assert replica.pid != victim.pid and replica.restarts == 1
    status = wait_state(runtime, spec, "ready")
    assert len(status.endpoints) == 2
    assert replica.port != victim.port and replica.url in status.endpoints
    assert set(status.endpoints) - set(ready.endpoints) == {replica.url}
    for url in status.endpoints:
        assert infer(url, [[1.0, 0.0]]) == pytest.approx([1.5, 1.5])


def test_repair_waits_for_the_crash_backoff(runtime: LocalRuntime, model: Path) -> None:
    spec = spec_for(model, replicas=1)
    runtime.apply(spec)
    wait_state(runtime, spec, "ready")
    first = runtime.replicas(spec)[0]
    kill_replica(runtime, first)
    runtime.repair(spec)  # right after the crash: not yet (0.5 s backoff)
    assert runtime.replicas(spec)[0].pid == first.pid
    wait_for(
        lambda: (runtime.repair(spec), runtime.replicas(spec)[0].pid != first.pid)[1],
        5,
        what="repair to restart the replica",
    )
    assert wait_state(runtime, spec, "ready").ready_replicas == 1


def test_model_that_fails_to_load_reports_the_servers_message(
    runtime: LocalRuntime, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"this is not an onnx model")
    spec = spec_for(broken, replicas=1)
    runtime.apply(spec)
    status = wait_state(runtime, spec, "failed")
    assert status.reason == "ModelServerExited"
    assert status.exit_code == 1
    assert "failed to load model" in (status.message or "")
    assert runtime.endpoints(spec) == []
    for _ in range(3):  # each apply restarts it; after repeated crashes: CrashLoopBackOff
        runtime.apply(spec)
        status = wait_state(runtime, spec, "failed")
    assert status.reason == "CrashLoopBackOff"
    assert "failed to load model" in (status.message or "")


def test_framework_without_its_binary_fails_clearly(
    runtime: LocalRuntime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    models = tmp_path / "saved_model"
    (models / "1").mkdir(parents=True)
    for framework, binary in (
        ("tfserving", "tensorflow_model_server"),
        ("torchserve", "torchserve"),
        ("triton", "tritonserver"),
    ):
        with pytest.raises(RuntimeError_) as caught:
            runtime.apply(spec_for(models, framework=framework))
        assert caught.value.reason == "ModelServerNotInstalled"
        assert binary in caught.value.message
        assert "SERVEPLANE_RUNTIME=kubernetes" in caught.value.message


def test_model_locations_the_local_runtime_cannot_serve(
    runtime: LocalRuntime, tmp_path: Path
) -> None:
    for path in ("pvc://models/linear.onnx", "s3://bucket/linear"):
        with pytest.raises(RuntimeError_) as caught:
            runtime.apply(spec_for(path))
        assert caught.value.reason == "UnsupportedModelLocation"
        assert path.split("://")[0] + "://" in caught.value.message
    with pytest.raises(RuntimeError_) as caught:
        runtime.apply(spec_for(tmp_path / "nope.onnx"))
    assert caught.value.reason == "ModelNotFound"
    assert list((runtime.state_dir / "replicas").iterdir()) == []


def test_concurrent_applies_start_each_replica_once(runtime: LocalRuntime, model: Path) -> None:
    spec = spec_for(model, replicas=3)
    errors: list[BaseException] = []

    def apply() -> None:
        try:
            runtime.apply(spec)
            runtime.rollout_status(spec)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=apply) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(pids(runtime, spec)) == 3
    assert wait_state(runtime, spec, "ready").ready_replicas == 3
    assert len({r.port for r in runtime.replicas(spec)}) == 3


def test_new_runtime_adopts_live_processes_and_forgets_dead_ones(
    runtime: LocalRuntime, model: Path, tmp_path: Path
) -> None:
    spec = spec_for(model, replicas=2)
    runtime.apply(spec)
    wait_state(runtime, spec, "ready")
    survivor, victim = runtime.replicas(spec)
    kill_replica(runtime, victim)
    # A record whose pid is alive but runs another command (pid reuse) must not be adopted.
    impostor = {
        **json.loads((runtime.state_dir / "replicas" / f"{survivor.key}.json").read_text()),
        "index": 7,
        "pid": os.getpid(),
        "log_path": str(tmp_path / "impostor.log"),
        "workdir": str(tmp_path / "imp"),
    }
    impostor_file = runtime.state_dir / "replicas" / f"{spec.service_uuid}-v1-r7.json"
    impostor_file.write_text(json.dumps(impostor))

    again = LocalRuntime(Settings(local_stop_timeout=3.0), state_dir=runtime.state_dir)
    assert again.adopt() == (1, 2)
    assert [r.pid for r in again.replicas(spec)] == [survivor.pid]
    assert not impostor_file.exists()
    assert again.endpoints(spec) == [survivor.url]
    assert infer(survivor.url, [[1.0, 1.0]]) == pytest.approx([4.5, 5.5])

    again.apply(spec)  # restarts the missing replica
    assert wait_state(again, spec, "ready").ready_replicas == 2
    adopted_pids = pids(again, spec)
    again.delete_version(spec)
    assert all(gone(pid) for pid in adopted_pids)
    assert psutil.pid_exists(os.getpid())  # the impostor (this process) was left alone


def test_stop_all_stops_every_version(runtime: LocalRuntime, model: Path) -> None:
    one, two = spec_for(model, replicas=1), spec_for(model, replicas=2)
    runtime.apply(one)
    runtime.apply(two)
    started = pids(runtime, one) + pids(runtime, two)
    assert len(started) == 3
    assert runtime.stop_all() == 3
    assert all(gone(pid) for pid in started)
    assert runtime.version_gone(one) and runtime.version_gone(two)


@pytest.fixture
def local_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """This process's settings switched to the local runtime (restored afterwards)."""
    from db.settings import get_settings
    from workers.runtime import get_runtime

    state = tmp_path / "watch-state"
    monkeypatch.setenv("SERVEPLANE_RUNTIME", "local")
    monkeypatch.setenv("SERVEPLANE_LOCAL_STATE_DIR", str(state))
    get_settings.cache_clear()
    get_runtime.cache_clear()
    yield state
    runtime = get_runtime()
    assert isinstance(runtime, LocalRuntime)
    runtime.stop_all()
    monkeypatch.undo()
    get_settings.cache_clear()
    get_runtime.cache_clear()


def test_supervisor_refreshes_endpoints_and_restarts_dead_replicas(
    database: str, local_settings: Path, model: Path
) -> None:
    from db.engine import session_scope
    from db.models import ServiceVersion
    from db.repositories import services as services_repo
    from tests.conftest import create_customer, unique_name
    from workers.jobs.specs import version_spec
    from workers.runtime import get_runtime
    from workers.runtime.local_watch import supervise_local_versions

    customer = create_customer("local-watch")
    with session_scope() as session:
        service = services_repo.add_service(
            session,
            uuid=f"svc-{secrets.token_hex(6)}",
            customer_id=customer["customer_id"],
            name=unique_name("lin"),
            model_path=str(model),
            model_format="onnx",
            framework="onnxruntime",
            status="running",
            replicas=2,
            min_replicas=2,
            max_replicas=2,
            cpu_cores=1,
            memory_gb=1,
            gpu_count=0,
        )
        version = services_repo.add_version(session, service)
        version.status, version.traffic_percent = "ready", 100
        spec = version_spec(service, version)
        version_id = version.id

    def column() -> list[str]:
        with session_scope() as session:
            row = session.get(ServiceVersion, version_id)
            assert row is not None
            return list(row.endpoints)

    runtime = get_runtime()
    assert isinstance(runtime, LocalRuntime) and runtime.state_dir == local_settings.resolve()
    supervise_local_versions()  # a ready version without replicas (after a restart): started
    wait_for(
        lambda: (supervise_local_versions(), len(column()) == 2)[1],
        30,
        what="the chore to publish both replicas",
    )
    before = column()
    assert sorted(before) == sorted(runtime.endpoints(spec))

    victim = runtime.replicas(spec)[0]
    kill_replica(runtime, victim)
    assert supervise_local_versions() == 1
    assert column() == [u for u in before if u != victim.url]  # dropped at once

    wait_for(
        lambda: (supervise_local_versions(), len(column()) == 2)[1],
        30,
        what="the dead replica to be restarted and published",
    )
    after = column()
    assert victim.url not in after
    restarted = runtime.replicas(spec)[0]
    assert restarted.pid != victim.pid and restarted.url in after
    for url in after:
        assert infer(url, [[1.0, 1.0]], spec.service_name) == pytest.approx([4.5, 5.5])

    # While a job step holds the service row, the chore leaves the service alone.
    kill_replica(runtime, runtime.replicas(spec)[1])
    with session_scope() as session:
        services_repo.lock_service(session, service.id)
        assert supervise_local_versions() == 0
    assert supervise_local_versions() == 1


FAKE_SERVER = '''#!{python}
"""Stands in for {binary}: speaks just its readiness endpoint on the port it was given."""
import json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

args = sys.argv[1:]
flags = dict(a[2:].split("=", 1) for a in args if a.startswith("--") and "=" in a)
if "rest_api_port" in flags:  # tensorflow_model_server
    port, path = int(flags["rest_api_port"]), "/v1/models/" + flags["model_name"]
    body = {{"model_version_status": [{{"version": "1", "state": "AVAILABLE"}}]}}
elif "--ts-config" in args:  # torchserve
    config = open(args[args.index("--ts-config") + 1]).read().splitlines()
    address = [line.split("=", 1)[1] for line in config if line.startswith("inference_address")]
    port, path, body = int(address[0].rsplit(":", 1)[1]), "/ping", {{"status": "Healthy"}}
else:  # tritonserver
    port, path, body = int(flags["http-port"]), "/v2/models/{name}/ready", {{}}

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        data = json.dumps(body).encode() if self.path == path else b"{{}}"
        self.send_response(200 if self.path == path else 404)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *a):
        pass

HTTPServer(("127.0.0.1", port), Handler).serve_forever()
'''


@pytest.mark.parametrize(
    ("framework", "binary", "layout"),
    [
        ("tfserving", "tensorflow_model_server", "saved_model/1/saved_model.pb"),
        ("torchserve", "torchserve", "store/linear.mar"),
        ("triton", "tritonserver", "repository/linear/config.pbtxt"),
    ],
)
def test_other_frameworks_run_their_binary_with_ports_the_probe_uses(
    runtime: LocalRuntime,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    framework: str,
    binary: str,
    layout: str,
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / binary
    script.write_text(FAKE_SERVER.format(python=sys.executable, binary=binary, name="linear"))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    model_file = tmp_path / layout
    model_file.parent.mkdir(parents=True)
    model_file.write_bytes(b"model")
    model_dir = tmp_path / layout.split("/")[0]

    spec = spec_for(model_dir, replicas=2, framework=framework)
    runtime.apply(spec)
    status = wait_state(runtime, spec, "ready")
    assert len(status.endpoints) == 2
    replicas = runtime.replicas(spec)
    assert all(r.command[0] == str(script) for r in replicas)
    ports = [p for r in replicas for p in (r.port, *r.extra_ports)]
    assert len(ports) == len(set(ports))  # gRPC/metrics/management ports never collide
    if framework == "torchserve":
        assert "linear=linear.mar" in replicas[0].command
        config = (Path(replicas[0].workdir) / "config.properties").read_text()
        assert f"inference_address=http://127.0.0.1:{replicas[0].port}" in config
    runtime.delete_version(spec)
    assert runtime.version_gone(spec)
