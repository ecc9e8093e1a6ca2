"""Replica processes of the local runtime: records on disk, start, stop, adopt.

The state directory is the source of truth, so that several worker threads, a restarted
worker process, or `serveplane dev` at shutdown all see the same replicas:

    <state>/replicas/<service uuid>-v<version>-r<index>.json   one record per replica
    <state>/logs/<same key>.log                                  stdout + stderr of its last run
    <state>/work/<same key>/                                     working dir (generated configs)
    <state>/locks/<service uuid>-v<version>.lock                 flock held while mutating

Every replica runs in its own session (process group), so a worker that crashes or is
restarted does not take its model servers down mid-request; the next worker adopts them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import psutil

# Children this process started, shared by every ProcessTable in the process: only the
# parent can reap a child and read its exit code, whichever table instance started it.
_children: dict[int, subprocess.Popen[bytes]] = {}
_children_lock = threading.Lock()
_recent_ports: list[int] = []


@dataclass
class Replica:
    """What the state directory records about one replica process."""

    service_uuid: str
    service_name: str
    version: int
    index: int
    framework: str
    pid: int
    port: int
    command: list[str]
    create_time: float
    started_at: float
    log_path: str
    workdir: str
    restarts: int = 0
    ready_at: float | None = None
    exited_at: float | None = None
    exit_code: int | None = None
    extra_ports: list[int] = field(default_factory=list)

    @property
    def key(self) -> str:
        """File-name key of the replica."""
        return replica_key(self.service_uuid, self.version, self.index)

    @property
    def url(self) -> str:
        """Base URL of the replica's HTTP server."""
        return f"http://127.0.0.1:{self.port}"


def replica_key(service_uuid: str, version: int, index: int) -> str:
    """`<uuid>-v<version>-r<index>`."""
    return f"{service_uuid}-v{version}-r{index}"


def free_port() -> int:
    """A loopback TCP port nobody listens on, not handed out recently by this process."""
    with _children_lock:
        for _ in range(50):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind(("127.0.0.1", 0))
                port = int(sock.getsockname()[1])
            if port not in _recent_ports:
                _recent_ports.append(port)
                del _recent_ports[:-256]
                return port
    raise OSError("no free loopback port found")


def tail(path: str | Path, lines: int = 20, max_bytes: int = 8192) -> str:
    """The last lines of a log file ('' when missing)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            data = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(data.strip().splitlines()[-lines:])


class ProcessTable:
    """Replica records in a state directory, and the processes behind them."""

    def __init__(self, state_dir: Path) -> None:
        self.root = state_dir
        for sub in ("replicas", "logs", "work", "locks"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    # ---- records -------------------------------------------------------------------------

    def _record_path(self, key: str) -> Path:
        return self.root / "replicas" / f"{key}.json"

    @contextlib.contextmanager
    def lock(self, service_uuid: str, version: int) -> Iterator[None]:
        """Exclusive lock on one version, across threads and processes (flock per open)."""
        path = self.root / "locks" / f"{service_uuid}-v{version}.lock"
        with open(path, "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def records(self, service_uuid: str, version: int) -> list[Replica]:
        """The version's replica records, by index."""
        found = self._load_glob(f"{service_uuid}-v{version}-r*.json")
        return sorted(
            (r for r in found if r.service_uuid == service_uuid and r.version == version),
            key=lambda r: r.index,
        )

    def all_records(self) -> list[Replica]:
        """Every replica record in the state directory."""
        return self._load_glob("*.json")

    def _load_glob(self, pattern: str) -> list[Replica]:
        out = []
        for path in (self.root / "replicas").glob(pattern):
            try:
                out.append(Replica(**json.loads(path.read_text())))
            except (OSError, ValueError, TypeError):
                continue  # being replaced right now, or not ours
        return out

    def save(self, replica: Replica) -> None:
        """Write a record atomically (callers hold the version lock)."""
        path = self._record_path(replica.key)
        tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(asdict(replica)))
        os.replace(tmp, path)

    def note(self, replica: Replica, **changes: object) -> Replica:
        """Update fields of a record if it still describes the same process (takes the lock)."""
        with self.lock(replica.service_uuid, replica.version):
            current = next(
                (
                    r
                    for r in self.records(replica.service_uuid, replica.version)
                    if r.index == replica.index and r.pid == replica.pid
                ),
                None,
            )
            if current is None:
                return replica
            updated = replace(current, **changes)  # type: ignore[arg-type]
            self.save(updated)
            return updated

    def forget(self, replica: Replica) -> None:
        """Remove a replica's record, log and working directory."""
        release(replica.pid)
        self._record_path(replica.key).unlink(missing_ok=True)
        Path(replica.log_path).unlink(missing_ok=True)
        shutil.rmtree(replica.workdir, ignore_errors=True)

    def workdir(self, key: str) -> Path:
        """A fresh working directory for a replica."""
        path = self.root / "work" / key
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    # ---- processes -----------------------------------------------------------------------

    def start(self, template: Replica, env: dict[str, str]) -> Replica:
        """Start the template's command in its own session; returns the saved record."""
        log_path = Path(template.log_path)
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                template.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=template.workdir,
                env=env,
                start_new_session=True,
                close_fds=True,
            )
        with _children_lock:
            _children[proc.pid] = proc
        try:
            create_time = psutil.Process(proc.pid).create_time()
        except psutil.NoSuchProcess:
            create_time = 0.0
        replica = replace(
            template,
            pid=proc.pid,
            create_time=create_time,
            started_at=time.time(),
            ready_at=None,
            exited_at=None,
            exit_code=None,
        )
        self.save(replica)
        return replica

    def poll(self, replica: Replica) -> tuple[bool, int | None]:
        """(alive, exit code if known) of a replica's process; reaps it when it is our child."""
        with _children_lock:
            proc = _children.get(replica.pid)
        if proc is not None:
            # The Popen stays registered after exit: it keeps the exit code for later reads.
            code = proc.poll()
            return code is None, code
        if replica.exited_at is not None:
            return False, replica.exit_code
        return self._poll_foreign(replica)

    def _poll_foreign(self, replica: Replica) -> tuple[bool, int | None]:
        """A process some other ProcessTable (or an earlier worker) started."""
        try:
            proc = psutil.Process(replica.pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                return False, _reap(replica.pid)
            same = (
                abs(proc.create_time() - replica.create_time) < 1.0
                and proc.cmdline() == replica.command
            )
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return False, None
        return same, None

    def stop(self, replicas: list[Replica], timeout: float) -> None:
        """SIGTERM each replica's process group, then SIGKILL what is left after `timeout`."""
        alive = [r for r in replicas if self.poll(r)[0]]
        for replica in alive:
            _signal_group(replica.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while alive and time.monotonic() < deadline:
            time.sleep(0.05)
            alive = [r for r in alive if self.poll(r)[0]]
        for replica in alive:
            _signal_group(replica.pid, signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while alive and time.monotonic() < deadline:
            time.sleep(0.02)
            alive = [r for r in alive if self.poll(r)[0]]

    def adopt(self) -> tuple[list[Replica], list[Replica]]:
        """Keep records whose process is alive and the same command; drop the others."""
        kept, dropped = [], []
        for replica in self.all_records():
            with self.lock(replica.service_uuid, replica.version):
                alive, _ = self.poll(replica)
                if alive:
                    kept.append(replica)
                else:
                    self.forget(replica)
                    dropped.append(replica)
        return kept, dropped


def release(pid: int) -> None:
    """Stop tracking an exited child of this process."""
    with _children_lock:
        proc = _children.get(pid)
        if proc is not None and proc.poll() is not None:
            del _children[pid]


def _reap(pid: int) -> int | None:
    """Reap a zombie child of this process and return its exit code (None if not ours)."""
    try:
        waited, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    return os.waitstatus_to_exitcode(status) if waited == pid else None


def _signal_group(pid: int, sig: int) -> None:
    """Signal the replica's process group (it leads its own session)."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
