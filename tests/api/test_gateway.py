"""The inference gateway against real model-server subprocesses (no worker: rows set directly)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import uvicorn

from tests.conftest import ROOT, create_customer, wait_for
from tests.models import build_linear_model

RNG = np.random.default_rng(20240611)
W1 = RNG.standard_normal((4, 3)).astype(np.float32)
B1 = RNG.standard_normal(3).astype(np.float32)
W2 = RNG.standard_normal((4, 3)).astype(np.float32)
B2 = RNG.standard_normal(3).astype(np.float32)
MODEL_NAME = "lin-model"  # every test's service is called this: the module's servers serve it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ModelServer:
    """`python -m workers.model_server` as a subprocess; always stopped by its fixture."""

    def __init__(self, model: Path, name: str, log_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"model-server-{self.port}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "workers.model_server",
                    "--model",
                    str(model),
                    "--name",
                    name,
                    "--port",
                    str(self.port),
                ],
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self) -> ModelServer:
        def ready() -> bool:
            assert self.proc.poll() is None, self.log_path.read_text()
            try:
                return httpx.get(f"{self.url}/v2/health/ready", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, 30, what=f"model server on {self.port}")
        return self

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("gateway-models")
    return build_linear_model(base / "a.onnx", W1, B1), build_linear_model(base / "b.onnx", W2, B2)


@pytest.fixture(scope="module")
def start_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., ModelServer]]:
    """Start model servers (in parallel when several); all are stopped at module end."""
    started: list[ModelServer] = []
    log_dir = tmp_path_factory.mktemp("gateway-logs")

    def start(*models: Path, name: str = MODEL_NAME) -> Any:
        servers = [ModelServer(m, name, log_dir) for m in models]
        started.extend(servers)
        for server in servers:
            server.wait_ready()
        return servers[0] if len(servers) == 1 else servers

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def server_a(start_server: Callable[..., ModelServer], models: tuple[Path, Path]) -> ModelServer:
    return start_server(models[0])


@pytest.fixture(scope="module")
def server_b(start_server: Callable[..., ModelServer], models: tuple[Path, Path]) -> ModelServer:
    return start_server(models[1])


def make_service(
    customer_id: int,
    versions: list[tuple[int, list[str]]],
    *,
    status: str = "running",
    name: str = MODEL_NAME,
) -> tuple[str, str]:
    """A service row and its versions as a worker would leave them: (service uuid, api key)."""
    from db.domain import hash_secret, new_secret, new_service_uuid
    from db.engine import session_scope
    from db.repositories import services as repo
    from db.states import transition_service

    key = new_secret("spk_")
    uuid = new_service_uuid()
    with session_scope() as session:
        service = repo.add_service(
            session,
            uuid=uuid,
            customer_id=customer_id,
            name=name,
            model_path="/models/lin",
            model_format="onnx",
            framework="onnxruntime",
            api_key=hash_secret(key),
            api_key_prefix=key[:10],
            status="pending",
            endpoint_url=f"http://testserver/inference/{uuid}",
        )
        for percent, endpoints in versions:
            version = repo.add_version(session, service)
            version.traffic_percent = percent
            version.endpoints = endpoints
            version.status = "ready" if endpoints else "deploying"
        path = {
            "pending": [],
            "deploying": ["deploying"],
            "running": ["deploying", "running"],
            "failed": ["deploying", "failed"],
            "deleted": ["deleting", "deleted"],
        }[status]
        for step in path:
            transition_service(session, service, step, "set by the gateway tests")
    return uuid, key


def set_rows(uuid: str, **service_values: Any) -> None:
    """Change a service row behind the API's back (as another process would)."""
    from db.engine import session_scope
    from db.repositories import services as repo

    with session_scope() as session:
        service = repo.get_service(session, uuid)
        assert service is not None
        for field, value in service_values.items():
            setattr(service, field, value)


def infer_body(x: np.ndarray) -> dict[str, Any]:
    return {
        "inputs": [
            {
                "name": "x",
                "shape": list(x.shape),
                "datatype": "FP32",
                "data": x.reshape(-1).tolist(),
            }
        ]
    }


def outputs(response: Any) -> np.ndarray:
    out = response.json()["outputs"][0]
    return np.array(out["data"], dtype=np.float32).reshape(out["shape"])


def infer_path(uuid: str) -> str:
    return f"/inference/{uuid}/v2/models/{MODEL_NAME}/infer"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    return dict(body["error"])


@pytest.fixture
def owner(database: str) -> dict[str, Any]:
    return create_customer(f"gw-{secrets.token_hex(3)}")


@pytest.fixture(autouse=True)
def no_leaked_connections(app: Any) -> Iterator[None]:
    """After every test, each upstream connection is either idle in the pool or closed."""
    yield
    pool = getattr(app.state, "upstreams", None)
    if pool is not None:
        for address, (open_, idle) in pool.connections().items():
            assert open_ == idle, f"{address}: {open_} open, only {idle} idle"


# ---------------------------------------------------------------------------------------------
# Inference and the OIP v2 read endpoints
# ---------------------------------------------------------------------------------------------


def test_infer_matches_numpy_with_bearer_and_x_api_key(client, owner, server_a):
    uuid, key = make_service(owner["customer_id"], [(100, [server_a.url])])
    x = RNG.standard_normal((5, 4)).astype(np.float32)
    for headers in (bearer(key), {"X-API-Key": key}, {"authorization": f"bearer  {key} "}):
        response = client.post(infer_path(uuid), json=infer_body(x), headers=headers)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        assert response.headers["x-serveplane-version"] == "1"
        np.testing.assert_allclose(outputs(response), x @ W1 + B1, atol=1e-5, rtol=1e-5)


def test_read_endpoints_pass_through(client, owner, server_a):
    uuid, key = make_service(owner["customer_id"], [(100, [server_a.url])])
    for path in (
        "v2/health/ready",
        "v2/health/live",
        f"v2/models/{MODEL_NAME}",
        f"v2/models/{MODEL_NAME}/ready",
        "v2",
    ):
        via = client.get(f"/inference/{uuid}/{path}", headers={"X-API-Key": key})
        direct = httpx.get(f"{server_a.url}/{path}")
        assert via.status_code == direct.status_code == 200, (path, via.text)
        assert via.content == direct.content
        assert via.headers["content-type"] == direct.headers["content-type"]
    unknown_model = client.get(f"/inference/{uuid}/v2/models/other", headers=bearer(key))
    assert unknown_model.status_code == 404
    assert unknown_model.content == httpx.get(f"{server_a.url}/v2/models/other").content


def test_model_server_errors_pass_through_unchanged(client, owner, server_a):
    uuid, key = make_service(owner["customer_id"], [(100, [server_a.url])])
    bad = {"inputs": [{"name": "x", "shape": [2, 5], "datatype": "FP32", "data": [1.0] * 10}]}
    via = client.post(infer_path(uuid), json=bad, headers=bearer(key))
    direct = httpx.post(f"{server_a.url}/v2/models/{MODEL_NAME}/infer", json=bad)
    assert via.status_code == direct.status_code == 400
    assert via.content == direct.content
    assert "error" in via.json() and via.json()["error"]  # the server's own shape and message
    assert via.headers["content-type"] == direct.headers["content-type"]
    garbage = client.post(infer_path(uuid), content=b"{not json", headers=bearer(key))
    assert garbage.status_code == 400
    assert (
        garbage.content
        == httpx.post(f"{server_a.url}/v2/models/{MODEL_NAME}/infer", content=b"{not json").content
    )


# ---------------------------------------------------------------------------------------------
# Auth, unknown, not serving, deleted, rotation
# ---------------------------------------------------------------------------------------------


def test_missing_or_wrong_key_is_401(client, owner, server_a):
    uuid, key = make_service(owner["customer_id"], [(100, [server_a.url])])
    other_uuid, other_key = make_service(
        owner["customer_id"], [(100, [server_a.url])], name="other-model"
    )
    body = infer_body(np.ones((1, 4), dtype=np.float32))
    cases = [
        {},
        bearer(key + "x"),
        {"X-API-Key": "spk_wrong"},
        {"Authorization": f"Basic {key}"},
        {"Authorization": "Bearer "},
        bearer(other_key),  # another service's key
    ]
    for headers in cases:
        response = client.post(infer_path(uuid), json=body, headers=headers)
        error = assert_error(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == "Bearer"
        assert key not in error["message"]
    assert (
        client.post(
            infer_path(other_uuid).replace(MODEL_NAME, "other-model"),
            json=body,
            headers=bearer(key),
        ).status_code
        == 401
    )


def test_unknown_service_is_404(client, owner):
    for path in (
        "/inference/svc-000000000000/v2/health/ready",
        "/inference/svc-nope",
        "/inference/" + "x" * 80 + "/v2",
    ):
        assert_error(client.get(path, headers=bearer("spk_anything")), 404, "service_not_found")


@pytest.mark.parametrize("status", ["pending", "deploying", "failed"])
def test_service_not_serving_is_503_with_retry_after(client, owner, status):
    uuid, key = make_service(owner["customer_id"], [(0, [])], status=status)
    started = time.monotonic()
    response = client.post(infer_path(uuid), json={}, headers=bearer(key))
    error = assert_error(response, 503, "service_unavailable")
    assert time.monotonic() - started < 2
    assert int(response.headers["retry-after"]) > 0
    assert error["details"] == {"status": status}
    # A wrong key is still refused first: the gateway says nothing about a service to strangers.
    assert client.post(infer_path(uuid), json={}, headers=bearer("spk_x")).status_code == 401


def test_version_with_traffic_but_no_endpoint_yet_is_503(client, owner):
    uuid, key = make_service(owner["customer_id"], [(100, [])])
    response = client.get(f"/inference/{uuid}/v2/health/ready", headers=bearer(key))
    assert_error(response, 503, "service_unavailable")
    assert "retry-after" in response.headers


def test_deleted_service_is_404(client, owner, server_a):
    uuid, key = make_service(owner["customer_id"], [(100, [server_a.url])], status="deleted")
    assert_error(
        client.get(f"/inference/{uuid}/v2/health/ready", headers=bearer(key)),
        404,
        "service_not_found",
    )


def test_delete_through_the_api_stops_inference_at_once(client, owner, server_a):
    uuid, key = make_service(owner["customer_id"], [(100, [server_a.url])])
    ready = f"/inference/{uuid}/v2/health/ready"
    assert client.get(ready, headers=bearer(key)).status_code == 200  # the route is now cached
    deleted = client.delete(f"/api/inference/services/{uuid}", headers=owner["headers"])
    assert deleted.status_code == 202, deleted.text
    assert_error(client.get(ready, headers=bearer(key)), 404, "service_not_found")


def test_rotated_key_old_401_new_200_immediately(client, owner, server_a):
    uuid, old = make_service(owner["customer_id"], [(100, [server_a.url])])
    x = np.ones((1, 4), dtype=np.float32)
    assert client.post(infer_path(uuid), json=infer_body(x), headers=bearer(old)).status_code == 200
    rotated = client.post(
        f"/api/inference/services/{uuid}/api-key/rotate", headers=owner["headers"]
    )
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["api_key"]
    assert_error(
        client.post(infer_path(uuid), json=infer_body(x), headers=bearer(old)), 401, "unauthorized"
    )
    response = client.post(infer_path(uuid), json=infer_body(x), headers={"X-API-Key": new})
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(outputs(response), x @ W1 + B1, atol=1e-5)


def test_key_changed_by_another_process_stops_working_within_a_second(client, owner, server_a):
    from db.domain import hash_secret

    uuid, old = make_service(owner["customer_id"], [(100, [server_a.url])])
    ready = f"/inference/{uuid}/v2/health/ready"
    assert client.get(ready, headers=bearer(old)).status_code == 200
    set_rows(uuid, api_key=hash_secret("spk_new"))  # no invalidate(): only the TTL helps
    changed = time.monotonic()
    wait_for(
        lambda: client.get(ready, headers=bearer(old)).status_code == 401,
        2,
        what="the old key to be refused",
    )
    assert time.monotonic() - changed <= 1.5
    assert client.get(ready, headers=bearer("spk_new")).status_code == 200


# ---------------------------------------------------------------------------------------------
# Replicas and versions
# ---------------------------------------------------------------------------------------------


def test_dead_replica_is_skipped_and_none_left_is_502(client, owner, start_server, models):
    first, second = start_server(models[0], models[0])
    uuid, key = make_service(owner["customer_id"], [(100, [first.url, second.url])])
    x = RNG.standard_normal((2, 4)).astype(np.float32)
    for _ in range(4):
        response = client.post(infer_path(uuid), json=infer_body(x), headers=bearer(key))
        assert response.status_code == 200
    first.kill()
    for _ in range(30):
        response = client.post(infer_path(uuid), json=infer_body(x), headers=bearer(key))
        assert response.status_code == 200, response.text
        np.testing.assert_allclose(outputs(response), x @ W1 + B1, atol=1e-5)
    second.kill()
    started = time.monotonic()
    response = client.post(infer_path(uuid), json=infer_body(x), headers=bearer(key))
    error = assert_error(response, 502, "upstream_unavailable")
    assert time.monotonic() - started < 2.5
    assert "127.0.0.1" not in error["message"]  # internal addresses stay internal


def test_canary_split_follows_traffic_percent(client, owner, server_a, server_b):
    uuid, key = make_service(owner["customer_id"], [(80, [server_a.url]), (20, [server_b.url])])
    x = np.arange(4, dtype=np.float32).reshape(1, 4)
    expected = {"1": x @ W1 + B1, "2": x @ W2 + B2}
    counts: Counter[str] = Counter()
    total = 1000
    for _ in range(total):
        response = client.post(infer_path(uuid), json=infer_body(x), headers=bearer(key))
        assert response.status_code == 200, response.text
        version = response.headers["x-serveplane-version"]
        counts[version] += 1
        np.testing.assert_allclose(outputs(response), expected[version], atol=1e-5)
    share = 100 * counts["2"] / total
    assert 16 <= share <= 24, counts


def test_pinned_version(client, owner, server_a, server_b):
    uuid, key = make_service(owner["customer_id"], [(90, [server_a.url]), (10, [server_b.url])])
    x = np.ones((1, 4), dtype=np.float32)
    for _ in range(15):
        response = client.post(
            infer_path(uuid),
            json=infer_body(x),
            headers={**bearer(key), "X-Serveplane-Version": "2"},
        )
        assert response.headers["x-serveplane-version"] == "2"
        np.testing.assert_allclose(outputs(response), x @ W2 + B2, atol=1e-5)
    missing = client.post(
        infer_path(uuid), json=infer_body(x), headers={**bearer(key), "X-Serveplane-Version": "7"}
    )
    error = assert_error(missing, 404, "version_not_serving")
    assert "X-Serveplane-Version" in error["message"]
    assert error["details"]["serving_versions"] == [1, 2]
    bad = client.post(
        infer_path(uuid), json=infer_body(x), headers={**bearer(key), "X-Serveplane-Version": "v2"}
    )
    assert assert_error(bad, 400, "invalid_header")["details"][0]["field"] == "X-Serveplane-Version"


def test_traffic_change_is_seen_whole_within_the_ttl(client, owner, server_a, server_b):
    from db.engine import session_scope
    from db.repositories import services as repo

    uuid, key = make_service(owner["customer_id"], [(100, [server_a.url]), (0, [server_b.url])])
    ready = f"/inference/{uuid}/v2/health/ready"
    assert client.get(ready, headers=bearer(key)).headers["x-serveplane-version"] == "1"
    with session_scope() as session:
        service = repo.get_service(session, uuid)
        assert service is not None
        for version in repo.list_versions(session, service.id):
            version.traffic_percent = 100 if version.number == 2 else 0
    wait_for(
        lambda: client.get(ready, headers=bearer(key)).headers["x-serveplane-version"] == "2",
        1.5,
        what="the new split",
    )
    assert {
        client.get(ready, headers=bearer(key)).headers["x-serveplane-version"] for _ in range(30)
    } == {"2"}


# ---------------------------------------------------------------------------------------------
# Headers, timeouts and big bodies (against an echo upstream)
# ---------------------------------------------------------------------------------------------


async def echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An upstream that reports what reached it; /slow hangs; /big streams n bytes back."""
    assert scope["type"] == "http"
    digest = hashlib.sha256()
    size = 0
    while True:
        message = await receive()
        body = message.get("body", b"")
        digest.update(body)
        size += len(body)
        if not message.get("more_body"):
            break
    if scope["path"] == "/slow":
        await asyncio.sleep(3)
    if scope["path"] == "/big":
        n = int(scope["query_string"].decode().removeprefix("n="))
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/octet-stream")],
            }
        )
        chunk = bytes(range(256)) * 256
        sent = 0
        while sent < n:
            piece = chunk[: n - sent]
            sent += len(piece)
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    report = {
        "method": scope["method"],
        "raw_path": scope["raw_path"].decode(),
        "query": scope["query_string"].decode(),
        "headers": [[k.decode(), v.decode()] for k, v in scope["headers"]],
        "size": size,
        "sha256": digest.hexdigest(),
    }
    await send(
        {
            "type": "http.response.start",
            "status": 201,
            "headers": [
                (b"content-type", b"application/json"),
                (b"x-upstream", b"yes"),
                (b"keep-alive", b"timeout=5"),
                (b"connection", b"x-upstream-private"),
                (b"x-upstream-private", b"hop"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": orjson.dumps(report)})


class ThreadedServer:
    """A uvicorn server for an ASGI app on a free port, in a thread of the test process."""

    def __init__(self, app: Any, **config: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", **config)
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ThreadedServer:
        self.thread.start()
        wait_for(lambda: self.server.started, 20, what="the threaded server")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def echo() -> Iterator[ThreadedServer]:
    with ThreadedServer(echo_app, lifespan="off") as server:
        yield server


def test_hop_by_hop_and_key_headers_are_not_forwarded(client, owner, echo):
    uuid, key = make_service(owner["customer_id"], [(100, [echo.url])])
    response = client.post(
        f"/inference/{uuid}/v2/models/m%2Fx/infer?a=1&b=%20",
        content=b"payload",
        headers={
            "Authorization": f"Bearer {key}",
            "X-API-Key": key,
            "X-Serveplane-Version": "1",
            "Connection": "keep-alive, x-private",
            "Keep-Alive": "timeout=5",
            "X-Private": "hop",
            "Proxy-Authorization": "Basic abc",
            "TE": "trailers",
            "Upgrade": "websocket",
            "X-Request-Id": "req-1",
            "Content-Type": "application/json",
        },
    )
    assert response.status_code == 201, response.text
    seen = response.json()
    names = [name for name, _ in seen["headers"]]
    for dropped in (
        "authorization",
        "x-api-key",
        "x-serveplane-version",
        "keep-alive",
        "x-private",
        "proxy-authorization",
        "te",
        "upgrade",
    ):
        assert dropped not in names, seen["headers"]
    assert key not in str(seen["headers"])
    headers = dict(seen["headers"])
    assert headers["x-request-id"] == "req-1"
    assert headers["content-type"] == "application/json"
    assert headers["host"] == f"127.0.0.1:{echo.port}"
    assert headers["content-length"] == "7"
    assert "x-forwarded-for" in headers
    assert names.count("host") == 1
    assert seen["raw_path"] == "/v2/models/m%2Fx/infer"
    assert seen["query"] == "a=1&b=%20"
    assert seen["size"] == 7
    # The upstream's own hop-by-hop headers are not relayed; its other headers are.
    assert response.headers["x-upstream"] == "yes"
    assert "keep-alive" not in response.headers
    assert "x-upstream-private" not in response.headers
    assert response.headers["x-serveplane-version"] == "1"


def test_upstream_timeout_is_504(app, client, owner, echo):
    uuid, key = make_service(owner["customer_id"], [(100, [echo.url])])
    pool = app.state.upstreams
    saved = pool.timeout
    pool.timeout = 0.3
    try:
        started = time.monotonic()
        response = client.get(f"/inference/{uuid}/slow", headers=bearer(key))
        assert_error(response, 504, "upstream_timeout")
        assert time.monotonic() - started < 2
        # No retry of a request that reached a slow upstream; the next request still works.
        assert client.get(f"/inference/{uuid}/fast", headers=bearer(key)).status_code == 201
    finally:
        pool.timeout = saved


@pytest.fixture(scope="module")
def live_api(database: str, redis_db: Any) -> Iterator[ThreadedServer]:
    """The whole API on a real socket (chunked bodies arrive in pieces, as from real clients)."""
    from api.app import create_app

    with ThreadedServer(create_app(), lifespan="on") as server:
        yield server


def test_big_bodies_stream_both_ways(live_api, owner, echo):
    uuid, key = make_service(owner["customer_id"], [(100, [echo.url])])
    payload = os.urandom(3 * 1024 * 1024 + 17)

    def pieces() -> Iterator[bytes]:
        for i in range(0, len(payload), 100_000):
            yield payload[i : i + 100_000]

    base = f"{live_api.url}/inference/{uuid}"
    with httpx.Client(headers=bearer(key), timeout=30) as http:
        for content in (payload, pieces()):  # with a content-length, then chunked
            response = http.post(f"{base}/upload", content=content)
            assert response.status_code == 201, response.text
            report = response.json()
            assert report["size"] == len(payload)
            assert report["sha256"] == hashlib.sha256(payload).hexdigest()
        n = 5 * 1024 * 1024 + 3
        with http.stream("GET", f"{base}/big", params={"n": n}) as streamed:
            assert streamed.status_code == 200
            assert streamed.headers["x-serveplane-version"] == "1"
            received = b"".join(streamed.iter_bytes())
        assert len(received) == n
        assert received[:512] == bytes(range(256)) * 2


def test_body_over_the_gateway_limit_is_413(client, owner, echo, monkeypatch):
    from db.settings import get_settings

    uuid, key = make_service(owner["customer_id"], [(100, [echo.url])])
    monkeypatch.setattr(get_settings(), "gateway_max_body_bytes", 1000)
    response = client.post(f"/inference/{uuid}/upload", content=b"x" * 1001, headers=bearer(key))
    assert_error(response, 413, "payload_too_large")
    assert (
        client.post(
            f"/inference/{uuid}/upload", content=b"x" * 1000, headers=bearer(key)
        ).status_code
        == 201
    )


# ---------------------------------------------------------------------------------------------
# Response framings the upstream client must handle (a hand-written HTTP/1.1 upstream)
# ---------------------------------------------------------------------------------------------

RAW_ANSWERS = {
    "/eof": b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\nuntil-eof",
    "/chunked": b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    "/continue": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
    "/empty": b"HTTP/1.1 204 No Content\r\nx-answer: none\r\n\r\n",
    "/head": b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\ncontent-type: text/plain\r\n\r\n",
    "/garbage": b"NOT HTTP AT ALL\r\n\r\n",
    "/reset": b"",
}


class RawUpstream(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class RawHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        while True:
            line = self.rfile.readline()
            if not line:
                return
            path = line.split()[1].decode()
            while self.rfile.readline() not in (b"\r\n", b""):
                pass
            answer = RAW_ANSWERS[path]
            if answer:
                self.wfile.write(answer)
                self.wfile.flush()
            if path in ("/eof", "/garbage", "/reset", "/head"):
                return


@pytest.fixture(scope="module")
def raw_upstream() -> Iterator[str]:
    server = RawUpstream(("127.0.0.1", 0), RawHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_upstream_framings(client, owner, raw_upstream):
    uuid, key = make_service(owner["customer_id"], [(100, [raw_upstream])])
    base = f"/inference/{uuid}"
    headers = bearer(key)
    for _ in range(2):  # the second round reuses the kept-alive connections
        eof = client.get(f"{base}/eof", headers=headers)
        assert (eof.status_code, eof.content) == (200, b"until-eof")
        chunked = client.get(f"{base}/chunked", headers=headers)
        assert (chunked.status_code, chunked.content) == (200, b"hello world")
        informational = client.get(f"{base}/continue", headers=headers)
        assert (informational.status_code, informational.content) == (200, b"ok")
        empty = client.get(f"{base}/empty", headers=headers)
        assert (empty.status_code, empty.content, empty.headers["x-answer"]) == (204, b"", "none")
        head = client.head(f"{base}/head", headers=headers)
        assert (head.status_code, head.headers["content-length"]) == (200, "10")
    assert_error(client.get(f"{base}/garbage", headers=headers), 502, "upstream_unavailable")
    assert_error(client.post(f"{base}/reset", headers=headers), 502, "upstream_unavailable")
    assert client.get(f"{base}/chunked", headers=headers).content == b"hello world"
