"""ASGI application (API + /_fake control) served by uvicorn in a background thread."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import uvicorn

from . import api, control
from . import errors as E
from .errors import ApiError
from .selectors import field_matches, matches
from .store import dumps

if TYPE_CHECKING:
    from .fake import FakeKube

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
JSON_HEADERS = [(b"content-type", b"application/json"), (b"cache-control", b"no-cache, private")]


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        msg = await receive()
        if msg["type"] != "http.request":
            break
        chunks.append(msg.get("body", b""))
        if not msg.get("more_body"):
            break
    return b"".join(chunks)


async def _respond(send: Send, code: int, body: Any, headers: dict[str, str] | None = None) -> None:
    if isinstance(body, str):
        raw, hdrs = body.encode(), [(b"content-type", b"text/plain")]
    else:
        raw = body if isinstance(body, bytes) else dumps(body)
        hdrs = list(JSON_HEADERS)
    hdrs.append((b"content-length", str(len(raw)).encode()))
    for k, v in (headers or {}).items():
        hdrs.append((k.lower().encode(), v.encode()))
    await send({"type": "http.response.start", "status": code, "headers": hdrs})
    await send({"type": "http.response.body", "body": raw})


def _object_key(rt: api.Route, raw: bytes) -> tuple[str, str, str]:
    name = rt.name
    if not name and rt.verb == "create":
        try:
            name = str((json.loads(raw).get("metadata") or {}).get("name") or "")
        except (ValueError, AttributeError):
            name = ""
    return (rt.res.plural if rt.res else "", rt.ns, name)


class App:
    """The ASGI callable: routes /_fake control requests and Kubernetes API requests."""

    def __init__(self, fake: FakeKube) -> None:
        self.fake = fake
        self.closing = False

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        """Handle one HTTP request (control, API or watch)."""
        if scope["type"] != "http":
            return
        method: str = scope["method"]
        path: str = scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        raw = await _read_body(receive)
        if path == "/_fake" or path.startswith("/_fake/"):
            code, body = control.handle(self.fake, method, path, raw)
            await _respond(send, code, body)
            return
        qs = scope.get("query_string", b"").decode("latin-1")
        query = {k: v[-1] for k, v in parse_qs(qs, keep_blank_values=True).items()}
        fake = self.fake
        try:
            rt = api.route(method, path, query, fake.url)
        except ApiError as err:
            await _respond(send, err.code, err.body(), err.headers)
            return
        fake.counters.count(rt.verb, rt.stat_resource)
        fault = fake.faults.decide(path)
        key = _object_key(rt, raw) if rt.verb in api.MUTATING else None
        if key is not None:
            fake.inflight.enter(key)
        try:
            if fault is not None and fault[0] == "error":
                fake.counters.fault()
                injected = E.injected_fault(int(fault[1]), fake.faults.config.retry_after)
                await _respond(send, injected.code, injected.body(), injected.headers)
                return
            if fault is not None and fault[0] == "hang":
                fake.counters.fault()
                if await self._hang(receive, float(fault[1])):
                    return
            if rt.verb == "watch":
                await self._watch(rt, query, receive, send)
                return
            if fake.latency > 0 and await self._hang(receive, fake.latency):
                return
            try:
                code, body = api.handle(fake, rt, query, headers, raw)
                extra: dict[str, str] = {}
            except ApiError as err:
                code, body, extra = api.error_response(err)
            except Exception as exc:
                logging.getLogger("fake_kube").exception("handler failed")
                bug = E.internal_error(f"fake_kube bug: {exc!r}")
                code, body, extra = bug.code, bug.body(), {}
            await _respond(send, code, body, extra)
        finally:
            if key is not None:
                fake.inflight.leave(key)

    async def _hang(self, receive: Receive, seconds: float) -> bool:
        """Sleep before answering; True when the client went away (request dropped)."""
        try:
            msg = await asyncio.wait_for(receive(), timeout=seconds)
        except TimeoutError:
            return False
        return msg.get("type") == "http.disconnect"

    async def _watch(
        self, rt: api.Route, query: dict[str, str], receive: Receive, send: Send
    ) -> None:
        """Stream watch events as JSON lines until timeoutSeconds or disconnect."""
        fake = self.fake
        store = fake.store
        res = rt.res
        assert res is not None
        try:
            label, field = api.selectors_for(res, query)
        except ApiError as err:
            await _respond(send, err.code, err.body())
            return
        ns_filter = None if rt.all_namespaces or not res.namespaced else rt.ns
        rv_param = query.get("resourceVersion", "")
        initial: list[dict[str, Any]] = []
        error: ApiError | None = None
        with store.lock:
            fake.controller.tick()
            if rv_param in ("", "0"):
                initial = [e.obj for e in api.select(fake, rt, query)]
                since = store.rv
            else:
                try:
                    since = int(rv_param)
                except ValueError:
                    since = -1
                oldest = store.events[0][0] if store.events else store.rv + 1
                if since < 0 or (since < oldest - 1 and since < store.rv):
                    error = E.gone(f"too old resource version: {rv_param} ({store.rv})")
        await send({"type": "http.response.start", "status": 200, "headers": JSON_HEADERS})

        async def emit(etype: str, obj: dict[str, Any]) -> None:
            line = dumps({"type": etype, "object": obj}) + b"\n"
            await send({"type": "http.response.body", "body": line, "more_body": True})

        gone = asyncio.Event()

        async def watch_disconnect() -> None:
            while True:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    gone.set()
                    return

        listener = asyncio.ensure_future(watch_disconnect())
        try:
            if error is not None:
                await emit("ERROR", error.body())
                return
            for obj in initial:
                await emit("ADDED", obj)
            timeout = float(query.get("timeoutSeconds") or 1800)
            deadline = time.monotonic() + timeout
            while not gone.is_set() and not self.closing and time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(gone.wait(), 0.05)
                batch = []
                with store.lock:
                    fake.controller.tick()
                    for ev in reversed(store.events):
                        if ev[0] <= since:
                            break
                        batch.append(ev)
                for rv, etype, plural, ns, obj in reversed(batch):
                    since = rv
                    if plural != res.plural or (ns_filter is not None and ns != ns_filter):
                        continue
                    if label and not matches(label, obj["metadata"].get("labels")):
                        continue
                    if field and not field_matches(field, obj):
                        continue
                    await emit(etype, obj)
        except OSError:
            pass
        finally:
            listener.cancel()
            with contextlib.suppress(Exception):
                await send({"type": "http.response.body", "body": b"", "more_body": False})


class ServerThread:
    """Runs uvicorn for an App on a pre-bound socket in a daemon thread."""

    def __init__(self, app: App, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = app
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.port: int = self.sock.getsockname()[1]
        try:
            import httptools  # noqa: F401

            http = "httptools"
        except ImportError:  # pragma: no cover
            http = "h11"
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            http=http,
            loop="auto",
            timeout_keep_alive=300,
            timeout_graceful_shutdown=2,
            backlog=4096,
            log_config=None,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, name="fake-kube-http", daemon=True)

    def _run(self) -> None:
        self.server.run(sockets=[self.sock])

    def start(self) -> None:
        """Start serving and wait until the listener is up."""
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("fake kube server failed to start")
            time.sleep(0.01)

    def stop(self) -> None:
        """Ask uvicorn to exit and wait for the thread."""
        self.app.closing = True
        self.server.should_exit = True
        self.thread.join(timeout=10)
        with contextlib.suppress(OSError):
            self.sock.close()
