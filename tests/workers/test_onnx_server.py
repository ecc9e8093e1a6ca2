"""End-to-end tests of the ONNX Runtime v2 model server, run as a real subprocess."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.models import build_linear_model, save_model

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 20.0
MODEL = "lin"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("SERVEPLANE_ORT_OFFLOAD", None)
    env.pop("SERVEPLANE_ORT_THREADS", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


def _cmd(model: Path, name: str, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "workers.model_server",
        "--model",
        str(model),
        "--name",
        name,
        "--port",
        str(port),
    ]


class Server:
    """A model server subprocess; use :meth:`wait_ready` then :meth:`stop`."""

    def __init__(
        self, model: Path, name: str, log_dir: Path, env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"server-{name}-{self.port}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            _cmd(model, name, self.port),
            cwd=REPO,
            env=_env(env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> Server:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"server not ready after {timeout}s:\n{self.log()}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------

RNG = np.random.default_rng(1234)
W = RNG.standard_normal((4, 3)).astype(np.float32)
B = RNG.standard_normal(3).astype(np.float32)


def _build_multi_io_model(path: Path) -> Path:
    """Inputs a, b: FP64 [-1, 2]; k: INT64 [-1, 3]; s: BYTES [-1].

    Outputs sum = a + b (FP64), pos = sum > 0 (BOOL), half = FP16(a), k2 = 2 * k (INT64),
    s_out = s (BYTES).
    """
    vi = helper.make_tensor_value_info
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["a", "b"], ["sum"]),
            helper.make_node("Greater", ["sum", "zero"], ["pos"]),
            helper.make_node("Cast", ["a"], ["half"], to=TensorProto.FLOAT16),
            helper.make_node("Mul", ["k", "two"], ["k2"]),
            helper.make_node("Identity", ["s"], ["s_out"]),
        ],
        "multi",
        [
            vi("a", TensorProto.DOUBLE, ["n", 2]),
            vi("b", TensorProto.DOUBLE, ["m", 2]),
            vi("k", TensorProto.INT64, [None, 3]),
            vi("s", TensorProto.STRING, [None]),
        ],
        [
            vi("sum", TensorProto.DOUBLE, [None, 2]),
            vi("pos", TensorProto.BOOL, [None, 2]),
            vi("half", TensorProto.FLOAT16, ["n", 2]),
            vi("k2", TensorProto.INT64, [None, 3]),
            vi("s_out", TensorProto.STRING, [None]),
        ],
        [
            numpy_helper.from_array(np.array(0.0), "zero"),
            numpy_helper.from_array(np.array(2, dtype=np.int64), "two"),
        ],
    )
    return save_model(graph, path)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Server]]:
    """The linear FP32 model and the multi-type model, started in parallel."""
    tmp = tmp_path_factory.mktemp("onnx_server")
    lin = build_linear_model(tmp / "linear.onnx", W, B)
    multi = _build_multi_io_model(tmp / "multi.onnx")
    started = {"lin": Server(lin, MODEL, tmp), "multi": Server(multi, "multi", tmp)}
    try:
        for server in started.values():
            server.wait_ready()
        yield started
    finally:
        for server in started.values():
            server.stop()


@pytest.fixture(scope="module")
def lin(servers: dict[str, Server]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=servers["lin"].url, timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
def multi(servers: dict[str, Server]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=servers["multi"].url, timeout=10) as client:
        yield client


def _x_input(x: Any, shape: list[int], **extra: Any) -> dict[str, Any]:
    return {"name": "x", "shape": shape, "datatype": "FP32", "data": x, **extra}


def _infer(client: httpx.Client, body: Any, path: str = f"/v2/models/{MODEL}/infer") -> Any:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return client.post(path, content=content, headers={"content-type": "application/json"})


def _y(resp: httpx.Response) -> np.ndarray:
    assert resp.status_code == 200, resp.text
    (out,) = resp.json()["outputs"]
    assert out["name"] == "y" and out["datatype"] == "FP32"
    return np.array(out["data"], dtype=np.float32).reshape(out["shape"])


# --------------------------------------------------------------------------------------------
# Health and metadata
# --------------------------------------------------------------------------------------------


def test_health_and_server_metadata(lin: httpx.Client) -> None:
    assert lin.get("/v2/health/live").status_code == 200
    ready = lin.get("/v2/health/ready")
    assert ready.status_code == 200 and ready.json() == {"ready": True}
    meta = lin.get("/v2").json()
    assert set(meta) == {"name", "version", "extensions"}
    assert isinstance(meta["extensions"], list)


@pytest.mark.parametrize("path", [f"/v2/models/{MODEL}", f"/v2/models/{MODEL}/versions/1"])
def test_model_metadata(lin: httpx.Client, path: str) -> None:
    resp = lin.get(path)
    assert resp.status_code == 200
    assert resp.json() == {
        "name": MODEL,
        "versions": ["1"],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}],
    }


def test_multi_model_metadata_datatypes(multi: httpx.Client) -> None:
    meta = multi.get("/v2/models/multi").json()
    assert {t["name"]: (t["datatype"], t["shape"]) for t in meta["inputs"]} == {
        "a": ("FP64", [-1, 2]),
        "b": ("FP64", [-1, 2]),
        "k": ("INT64", [-1, 3]),
        "s": ("BYTES", [-1]),
    }
    assert {t["name"]: t["datatype"] for t in meta["outputs"]} == {
        "sum": "FP64",
        "pos": "BOOL",
        "half": "FP16",
        "k2": "INT64",
        "s_out": "BYTES",
    }


@pytest.mark.parametrize(
    "path", [f"/v2/models/{MODEL}/ready", f"/v2/models/{MODEL}/versions/1/ready"]
)
def test_model_ready(lin: httpx.Client, path: str) -> None:
    assert lin.get(path).status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v2/models/nope"),
        ("GET", "/v2/models/nope/ready"),
        ("POST", "/v2/models/nope/infer"),
        ("POST", "/v2/models/nope/versions/1/infer"),
        ("GET", f"/v2/models/{MODEL}/versions/7"),
    ],
)
def test_unknown_model_or_version_is_404(lin: httpx.Client, method: str, path: str) -> None:
    resp = lin.request(method, path, content=b"{}")
    assert resp.status_code == 404
    assert "error" in resp.json()


# --------------------------------------------------------------------------------------------
# Inference
# --------------------------------------------------------------------------------------------


def test_infer_single_flat(lin: httpx.Client) -> None:
    x = np.array([[0.5, -1.0, 2.0, 3.25]], dtype=np.float32)
    resp = _infer(lin, {"inputs": [_x_input(x.ravel().tolist(), [1, 4])]})
    body = resp.json()
    assert body["model_name"] == MODEL and body["model_version"] == "1"
    assert "id" not in body
    y = _y(resp)
    assert y.shape == (1, 3)
    np.testing.assert_allclose(y, x @ W + B, atol=1e-5)


def test_infer_batch_nested(lin: httpx.Client) -> None:
    x = RNG.standard_normal((7, 4)).astype(np.float32)
    resp = _infer(lin, {"inputs": [_x_input(x.tolist(), [7, 4])]})
    np.testing.assert_allclose(_y(resp), x @ W + B, atol=1e-5)


def test_infer_versioned_path_echoes_id_and_selects_outputs(lin: httpx.Client) -> None:
    x = RNG.standard_normal((2, 4)).astype(np.float32)
    body = {
        "id": "req-42",
        "parameters": {"anything": 1},
        "inputs": [_x_input(x.ravel().tolist(), [2, 4], parameters={"foo": "bar"})],
        "outputs": [{"name": "y", "parameters": {"binary_data": False}}],
    }
    resp = _infer(lin, body, path=f"/v2/models/{MODEL}/versions/1/infer")
    assert resp.json()["id"] == "req-42"
    np.testing.assert_allclose(_y(resp), x @ W + B, atol=1e-5)


def test_tritonclient_http(servers: dict[str, Server]) -> None:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url=servers["lin"].url.removeprefix("http://"))
    try:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready(MODEL)
        meta = client.get_model_metadata(MODEL)
        assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
        x = RNG.standard_normal((3, 4)).astype(np.float32)
        inp = httpclient.InferInput("x", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=False)
        result = client.infer(
            MODEL, [inp], outputs=[httpclient.InferRequestedOutput("y", binary_data=False)]
        )
        np.testing.assert_allclose(result.as_numpy("y"), x @ W + B, atol=1e-5)
    finally:
        client.close()


def test_multi_types(multi: httpx.Client) -> None:
    a = np.array([[1.5, -2.0], [0.25, 3.0]])
    b = np.array([[0.5, 1.0], [-1.0, 1.0]])
    k = np.array([[1, -2, 3], [2**40, 0, -(2**40)]], dtype=np.int64)
    s = ["hello", "wörld", ""]
    body = {
        "id": "m1",
        "inputs": [
            {"name": "a", "shape": [2, 2], "datatype": "FP64", "data": a.tolist()},
            {"name": "b", "shape": [2, 2], "datatype": "FP64", "data": b.ravel().tolist()},
            {"name": "k", "shape": [2, 3], "datatype": "INT64", "data": k.tolist()},
            {"name": "s", "shape": [3], "datatype": "BYTES", "data": s},
        ],
    }
    resp = _infer(multi, body, path="/v2/models/multi/infer")
    assert resp.status_code == 200, resp.text
    outs = {o["name"]: o for o in resp.json()["outputs"]}
    assert [o["name"] for o in resp.json()["outputs"]] == ["sum", "pos", "half", "k2", "s_out"]
    assert outs["sum"]["datatype"] == "FP64" and outs["sum"]["shape"] == [2, 2]
    np.testing.assert_allclose(outs["sum"]["data"], (a + b).ravel())
    assert outs["pos"] == {
        "name": "pos",
        "datatype": "BOOL",
        "shape": [2, 2],
        "data": ((a + b) > 0).ravel().tolist(),
    }
    assert outs["half"]["datatype"] == "FP16"
    np.testing.assert_allclose(outs["half"]["data"], a.ravel(), rtol=1e-3)
    assert outs["k2"]["datatype"] == "INT64" and outs["k2"]["data"] == (2 * k).ravel().tolist()
    assert outs["s_out"] == {"name": "s_out", "datatype": "BYTES", "shape": [3], "data": s}


def test_missing_required_input(multi: httpx.Client) -> None:
    body = {"inputs": [{"name": "a", "shape": [1, 2], "datatype": "FP64", "data": [1, 2]}]}
    resp = _infer(multi, body, path="/v2/models/multi/infer")
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert "missing required input" in error
    for name in ("'b'", "'k'", "'s'"):
        assert name in error


def test_runtime_error_caused_by_input_is_400(multi: httpx.Client) -> None:
    # a and b have different dynamic batch sizes: the declared shapes allow it, Add does not.
    body = {
        "inputs": [
            {"name": "a", "shape": [2, 2], "datatype": "FP64", "data": [1, 2, 3, 4]},
            {"name": "b", "shape": [3, 2], "datatype": "FP64", "data": [1, 2, 3, 4, 5, 6]},
            {"name": "k", "shape": [1, 3], "datatype": "INT64", "data": [1, 2, 3]},
            {"name": "s", "shape": [1], "datatype": "BYTES", "data": ["x"]},
        ]
    }
    resp = _infer(multi, body, path="/v2/models/multi/infer")
    assert resp.status_code == 400
    assert "Add" in resp.json()["error"]


_GOOD = [1.0, 2.0, 3.0, 4.0]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            {"inputs": [{**_x_input(_GOOD, [1, 4]), "name": "z"}]},
            ["unknown input 'z'", "expected inputs: x"],
            id="unknown-input",
        ),
        pytest.param(
            {"inputs": [_x_input(_GOOD, [1, 4], datatype="INT32")]},
            ["wrong datatype", "expected FP32", "got INT32"],
            id="wrong-datatype",
        ),
        pytest.param(
            {"inputs": [_x_input(_GOOD, [1, 4], datatype="FP99")]},
            ["wrong datatype", "expected FP32", "got FP99"],
            id="unknown-datatype",
        ),
        pytest.param(
            {"inputs": [_x_input([1.0, 2.0, 3.0], [1, 3])]},
            ["shape", "expected [-1, 4]", "got [1, 3]"],
            id="fixed-dim-mismatch",
        ),
        pytest.param(
            {"inputs": [_x_input(_GOOD, [4])]},
            ["shape", "expected [-1, 4]", "got [4]"],
            id="rank-mismatch",
        ),
        pytest.param(
            {"inputs": [_x_input(_GOOD, [2, 4])]},
            ["data has 4 elements", "shape [2, 4]", "requires 8"],
            id="count-mismatch",
        ),
        pytest.param(
            {"inputs": [_x_input([[1.0, 2.0], [3.0, 4.0, 5.0]], [2, 4])]},
            ["ragged"],
            id="ragged-nested-data",
        ),
        pytest.param(
            {"inputs": [_x_input(["a", "b", "c", "d"], [1, 4])]},
            ["not valid FP32"],
            id="non-numeric-data",
        ),
        pytest.param(
            {"inputs": [_x_input(_GOOD, [1, -4])]},
            ["'shape' must be an array of non-negative integers"],
            id="bad-shape",
        ),
        pytest.param(
            {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32"}]},
            ["missing 'data'"],
            id="missing-data",
        ),
        pytest.param(
            {"inputs": [_x_input(_GOOD, [1, 4])], "outputs": [{"name": "nope"}]},
            ["unknown output 'nope'", "available outputs: y"],
            id="unknown-output",
        ),
        pytest.param({"inputs": []}, ["'inputs'"], id="empty-inputs"),
        pytest.param({"id": "x"}, ["'inputs'"], id="no-inputs"),
        pytest.param(b'{"inputs": [', ["malformed JSON"], id="malformed-json"),
        pytest.param(b"", ["malformed JSON"], id="empty-body"),
        pytest.param([1, 2], ["must be a JSON object", "list"], id="array-body"),
        pytest.param(b"null", ["must be a JSON object"], id="null-body"),
    ],
)
def test_bad_requests_are_400(lin: httpx.Client, body: Any, expected: list[str]) -> None:
    resp = _infer(lin, body)
    assert resp.status_code == 400, resp.text
    assert resp.headers["content-type"] == "application/json"
    payload = resp.json()
    assert list(payload) == ["error"]
    for fragment in expected:
        assert fragment in payload["error"]
    assert "Traceback" not in resp.text


def test_binary_tensor_extension_is_rejected(lin: httpx.Client) -> None:
    resp = lin.post(
        f"/v2/models/{MODEL}/infer",
        content=b'{"inputs":[]}',
        headers={"Inference-Header-Content-Length": "13"},
    )
    assert resp.status_code == 400
    assert "binary" in resp.json()["error"]


def test_wrong_method_is_405(lin: httpx.Client) -> None:
    assert lin.get(f"/v2/models/{MODEL}/infer").status_code == 405
    assert lin.post("/v2/health/ready").status_code == 405


# --------------------------------------------------------------------------------------------
# Model directory layouts, startup failures, shutdown
# --------------------------------------------------------------------------------------------


def test_directory_forms_thread_pool_and_sigterm(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    build_linear_model(plain / "model.onnx", W, B)
    versioned = tmp_path / "versioned"
    W3 = (W * 3).astype(np.float32)
    build_linear_model(versioned / "1" / "model.onnx", W, B)
    build_linear_model(versioned / "3" / "model.onnx", W3, B)
    build_linear_model(versioned / "20" / "other.onnx", W, B)  # no model.onnx: ignored
    (versioned / "notes").mkdir()

    started = [
        (Server(plain, "plain", tmp_path), W),
        (
            Server(versioned, "versioned", tmp_path, env={"SERVEPLANE_ORT_OFFLOAD": "threadpool"}),
            W3,
        ),
    ]
    try:
        x = RNG.standard_normal((2, 4)).astype(np.float32)
        for server, weights in started:
            server.wait_ready()
            with httpx.Client(base_url=server.url, timeout=10) as client:
                body = {"inputs": [_x_input(x.tolist(), [2, 4])]}
                resp = _infer(client, body, path=f"/v2/models/{server.name}/infer")
                np.testing.assert_allclose(_y(resp), x @ weights + B, atol=1e-5)
    finally:
        codes = [server.stop() for server, _ in started]
    assert codes == [0, 0], [server.log() for server, _ in started]
    assert "Traceback" not in started[1][0].log()


def _run_failing(
    model: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _cmd(model, "broken", _free_port()),
        cwd=REPO,
        env=_env(env),
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_unloadable_model_exits_nonzero_with_message(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a protobuf")
    proc = _run_failing(bad)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if "failed to load model" in line]
    assert len(lines) == 1, proc.stderr
    assert str(bad) in lines[0]
    assert "Protobuf" in lines[0] or "INVALID" in lines[0]
    assert "Traceback" not in proc.stderr


def test_missing_model_and_empty_directory_exit_nonzero(tmp_path: Path) -> None:
    missing = tmp_path / "missing.onnx"
    proc = _run_failing(missing)
    assert proc.returncode != 0 and str(missing) in proc.stderr
    assert "no such file" in proc.stderr

    empty = tmp_path / "empty"
    empty.mkdir()
    proc = _run_failing(empty)
    assert proc.returncode != 0 and str(empty) in proc.stderr
    assert "no model.onnx" in proc.stderr


def test_bad_thread_setting_exits_nonzero(tmp_path: Path) -> None:
    model = build_linear_model(tmp_path / "m.onnx", W, B)
    proc = _run_failing(model, env={"SERVEPLANE_ORT_THREADS": "many"})
    assert proc.returncode != 0
    assert "SERVEPLANE_ORT_THREADS" in proc.stderr
