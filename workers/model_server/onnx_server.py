"""ONNX Runtime model server speaking the Open Inference Protocol (KServe v2 REST).

The HTTP layer is a minimal raw ASGI application (served by uvicorn) rather than a framework
router: every route is an exact string lookup, and the static responses (health, server and
model metadata) are pre-serialised once, which keeps per-request overhead to the JSON decode,
the numpy conversion, the onnxruntime call and the orjson encode.

Endpoints (``{name}`` is the served model name, the only version is ``"1"``)::

    GET  /v2/health/live
    GET  /v2/health/ready
    GET  /v2
    GET  /v2/models/{name}                        /v2/models/{name}/versions/1
    GET  /v2/models/{name}/ready                  /v2/models/{name}/versions/1/ready
    POST /v2/models/{name}/infer                  /v2/models/{name}/versions/1/infer

Every error answer is ``{"error": "<message>"}`` with a 4xx/5xx status; tracebacks go to the
log, never into a response body.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import re
import statistics
import time
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson
from onnxruntime.capi import onnxruntime_pybind11_state as _ort_state

from . import __version__
from .datatypes import numpy_from_v2, v2_from_ort_type

log = logging.getLogger("serveplane.model_server")

SERVER_NAME = "serveplane-onnx"
SERVER_VERSION = __version__
PLATFORM = "onnxruntime_onnx"
MODEL_VERSION = "1"

ENV_THREADS = "SERVEPLANE_ORT_THREADS"
ENV_OFFLOAD = "SERVEPLANE_ORT_OFFLOAD"  # auto | inline | threadpool
ENV_MAX_BODY = "SERVEPLANE_MAX_BODY_BYTES"
ENV_MODEL_PATH = "SERVEPLANE_MODEL_PATH"  # used to hand the model to uvicorn worker processes
ENV_MODEL_NAME = "SERVEPLANE_MODEL_NAME"

DEFAULT_MAX_BODY = 256 * 1024 * 1024
# In "auto" mode a model whose warm-up run takes longer than this is run in a thread pool
# (onnxruntime releases the GIL, so several requests then execute on several cores); faster
# models run inline on the event loop, where the thread hand-off would cost more than it saves.
OFFLOAD_THRESHOLD_S = 0.001

_JSON_OPTS = orjson.OPT_SERIALIZE_NUMPY
_ORT_INVALID_ARGUMENT = getattr(_ort_state, "InvalidArgument", ())
_ORT_FAIL = getattr(_ort_state, "Fail", ())
_ORT_ALLOC_FAILURES = ("bad_alloc", "bad allocation", "out of memory", "failed to allocate")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class ModelLoadError(Exception):
    """The model could not be found or loaded; the message is a single line."""


class RequestError(Exception):
    """A request problem reported to the client as ``{"error": message}``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


# --------------------------------------------------------------------------------------------
# Model location and loading
# --------------------------------------------------------------------------------------------


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def resolve_model_path(path: str | os.PathLike[str]) -> Path:
    """Locate the ``.onnx`` file for ``path``.

    ``path`` is either a model file, or a directory holding ``<version>/model.onnx`` (the
    highest numeric version wins) or ``model.onnx``.
    """
    p = Path(path)
    if p.is_file():
        return p
    if not p.exists():
        raise ModelLoadError(f"{p}: no such file or directory")
    if not p.is_dir():
        raise ModelLoadError(f"{p}: not a regular file or directory")
    versions = [
        int(child.name)
        for child in p.iterdir()
        if child.name.isdigit() and (child / "model.onnx").is_file()
    ]
    if versions:
        return p / str(max(versions)) / "model.onnx"
    if (p / "model.onnx").is_file():
        return p / "model.onnx"
    raise ModelLoadError(
        f"{p}: no model.onnx in the directory or in a numeric version subdirectory"
    )


def ort_threads_from_env() -> int:
    raw = os.environ.get(ENV_THREADS, "1").strip() or "1"
    try:
        threads = int(raw)
    except ValueError:
        raise ModelLoadError(f"{ENV_THREADS}={raw!r} is not an integer") from None
    if threads < 0:
        raise ModelLoadError(f"{ENV_THREADS}={raw!r} must be >= 0 (0 lets onnxruntime decide)")
    return threads


class TensorSpec:
    __slots__ = ("datatype", "dtype", "name", "ort_type", "shape")

    def __init__(self, arg: Any) -> None:
        self.name: str = arg.name
        self.ort_type: str = arg.type
        self.datatype: str = v2_from_ort_type(arg.type)
        try:
            self.dtype: np.dtype | None = numpy_from_v2(self.datatype)
        except ValueError:
            self.dtype = None  # e.g. BF16, sequences, maps: listed in metadata, not servable
        shape = arg.shape if isinstance(arg.shape, list | tuple) else []
        self.shape: list[int] = [d if isinstance(d, int) and d >= 0 else -1 for d in shape]

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": self.shape}


class OnnxModel:
    """An onnxruntime session plus the request decoding / response encoding around it."""

    def __init__(self, name: str, path: str | os.PathLike[str], threads: int = 1) -> None:
        self.name = name
        self.path = Path(path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3  # errors only; run-time errors are reported to clients
        try:
            self.session = ort.InferenceSession(
                str(self.path), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises several unrelated exception types
            raise ModelLoadError(f"{self.path}: {_one_line(exc)}") from exc
        self.inputs = [TensorSpec(a) for a in self.session.get_inputs()]
        self.outputs = [TensorSpec(a) for a in self.session.get_outputs()]
        self.input_by_name = {t.name: t for t in self.inputs}
        self.output_by_name = {t.name: t for t in self.outputs}
        self.input_names = [t.name for t in self.inputs]
        self.output_names = [t.name for t in self.outputs]
        self.metadata = {
            "name": name,
            "versions": [MODEL_VERSION],
            "platform": PLATFORM,
            "inputs": [t.metadata() for t in self.inputs],
            "outputs": [t.metadata() for t in self.outputs],
        }

    # ---- request decoding -------------------------------------------------------------------

    def decode_request(self, body: bytes) -> tuple[dict[str, np.ndarray], list[str], Any]:
        """Parse and validate an infer request body.

        Returns ``(feeds, requested output names, request id or None)``.
        """
        try:
            req = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise RequestError(f"malformed JSON in request body: {exc}") from None
        if not isinstance(req, dict):
            raise RequestError(
                f"request body must be a JSON object, got {type(req).__name__}"
                if req is not None
                else "request body must be a JSON object, got null"
            )
        inputs = req.get("inputs")
        if not isinstance(inputs, list) or not inputs:
            raise RequestError("request must have a non-empty 'inputs' array")

        feeds: dict[str, np.ndarray] = {}
        for item in inputs:
            if not isinstance(item, dict):
                raise RequestError("each entry of 'inputs' must be a JSON object")
            name = item.get("name")
            if not isinstance(name, str):
                raise RequestError("each input must have a string 'name'")
            spec = self.input_by_name.get(name)
            if spec is None:
                raise RequestError(
                    f"unknown input {name!r}; expected inputs: {', '.join(self.input_names)}"
                )
            if name in feeds:
                raise RequestError(f"input {name!r} given more than once")
            feeds[name] = self._decode_input(spec, item)

        if len(feeds) != len(self.inputs):
            missing = [n for n in self.input_names if n not in feeds]
            raise RequestError(
                f"missing required input{'s' if len(missing) > 1 else ''} "
                f"{', '.join(repr(n) for n in missing)}; expected inputs: "
                f"{', '.join(self.input_names)}"
            )

        outputs = req.get("outputs")
        if outputs is None:
            out_names = self.output_names
        else:
            if not isinstance(outputs, list):
                raise RequestError("'outputs' must be an array of {\"name\": ...} objects")
            out_names = []
            for out in outputs:
                oname = out.get("name") if isinstance(out, dict) else None
                if not isinstance(oname, str):
                    raise RequestError("each requested output must have a string 'name'")
                if oname not in self.output_by_name:
                    raise RequestError(
                        f"unknown output {oname!r}; available outputs: "
                        f"{', '.join(self.output_names)}"
                    )
                if oname not in out_names:
                    out_names.append(oname)
            if not out_names:
                out_names = self.output_names
        return feeds, out_names, req.get("id")

    def _decode_input(self, spec: TensorSpec, item: dict[str, Any]) -> np.ndarray:
        name = spec.name
        datatype = item.get("datatype")
        if datatype != spec.datatype:
            if not isinstance(datatype, str):
                raise RequestError(
                    f"input {name!r}: missing or non-string 'datatype' (expected {spec.datatype})"
                )
            raise RequestError(
                f"input {name!r}: wrong datatype: expected {spec.datatype}, got {datatype}"
            )
        if spec.dtype is None:
            raise RequestError(
                f"input {name!r}: model input type {spec.ort_type} is not supported by this server"
            )

        shape = item.get("shape")
        if not isinstance(shape, list) or not all(
            type(d) is int and d >= 0
            for d in shape  # exact type check: bool is not a dimension
        ):
            raise RequestError(
                f"input {name!r}: 'shape' must be an array of non-negative integers, got {shape!r}"
            )
        expected = spec.shape
        if len(shape) != len(expected) or any(
            e != -1 and e != d for e, d in zip(expected, shape, strict=False)
        ):
            raise RequestError(
                f"input {name!r}: shape incompatible with the model's input shape: "
                f"expected {expected}, got {shape}"
            )

        if "data" not in item:
            params = item.get("parameters")
            if isinstance(params, dict) and "binary_data_size" in params:
                raise RequestError("binary tensor data is not supported; send 'data' as JSON")
            raise RequestError(f"input {name!r}: missing 'data'")
        data = item["data"]
        count = math.prod(shape)
        if not isinstance(data, list):
            if count == 1 and isinstance(data, int | float | str | bool):
                data = [data]
            else:
                raise RequestError(f"input {name!r}: 'data' must be a JSON array")

        if spec.datatype == "BYTES":
            flat: list[Any] = []
            _flatten_strings(data, flat, name)
            if len(flat) != count:
                raise _count_error(name, len(flat), shape, count)
            strings = np.empty(count, dtype=object)
            strings[:] = flat
            return strings.reshape(shape)

        try:
            arr: np.ndarray = np.array(data, dtype=spec.dtype)
        except (ValueError, TypeError, OverflowError) as exc:
            if isinstance(exc, ValueError) and "inhomogeneous" in str(exc):
                raise RequestError(
                    f"input {name!r}: nested 'data' is ragged (rows of different lengths)"
                ) from None
            raise RequestError(
                f"input {name!r}: 'data' is not valid {spec.datatype}: {_one_line(exc)}"
            ) from None
        if arr.size != count:
            raise _count_error(name, arr.size, shape, count)
        if arr.shape != tuple(shape):
            arr = arr.reshape(shape)
        return arr

    # ---- inference and response encoding ----------------------------------------------------

    def encode_response(self, out_names: list[str], results: list[Any], req_id: Any) -> bytes:
        outputs = []
        for oname, value in zip(out_names, results, strict=True):
            outputs.append(self._encode_output(oname, value))
        resp: dict[str, Any] = {"model_name": self.name, "model_version": MODEL_VERSION}
        if req_id is not None:
            resp["id"] = req_id
        resp["outputs"] = outputs
        return orjson.dumps(resp, option=_JSON_OPTS)

    def _encode_output(self, oname: str, value: Any) -> dict[str, Any]:
        if not isinstance(value, np.ndarray):
            spec = self.output_by_name[oname]
            raise RequestError(
                f"output {oname!r} has non-tensor type {spec.ort_type} and cannot be returned",
                status=500,
            )
        shape = list(value.shape)
        kind = value.dtype.kind
        if kind in ("O", "U", "S"):
            data: Any = [
                v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
                for v in value.ravel().tolist()
            ]
            datatype = "BYTES"
        else:
            datatype = self.output_by_name[oname].datatype
            if value.dtype == np.float16:
                value = value.astype(np.float32)  # orjson cannot serialise float16
                datatype = "FP16"
            data = value.ravel()
            if not data.flags.c_contiguous or not data.dtype.isnative:
                data = np.ascontiguousarray(data, dtype=data.dtype.newbyteorder("="))
        return {"name": oname, "datatype": datatype, "shape": shape, "data": data}

    # ---- startup ----------------------------------------------------------------------------

    def warmup_seconds(self, runs: int = 5) -> float | None:
        """Median wall time of a batch-1 run on zero inputs (None if that cannot be done)."""
        feeds: dict[str, np.ndarray] = {}
        for spec in self.inputs:
            if spec.dtype is None:
                return None
            shape = [1 if d < 0 else d for d in spec.shape]
            if spec.datatype == "BYTES":
                arr = np.empty(shape, dtype=object)
                arr.fill("")
            else:
                arr = np.zeros(shape, dtype=spec.dtype)
            feeds[spec.name] = arr
        times = []
        try:
            for _ in range(runs):
                t0 = time.perf_counter()
                self.session.run(None, feeds)
                times.append(time.perf_counter() - t0)
        except Exception as exc:  # zero inputs may be meaningless for some models
            log.info("warm-up run skipped: %s", _one_line(exc))
            return None
        return statistics.median(times)


def _flatten_strings(data: Any, out: list[Any], name: str) -> None:
    for v in data:
        if isinstance(v, str):
            out.append(v)
        elif isinstance(v, list):
            _flatten_strings(v, out, name)
        else:
            raise RequestError(
                f"input {name!r}: BYTES data must contain strings, got {type(v).__name__}"
            )


def _count_error(name: str, got: int, shape: list[int], count: int) -> RequestError:
    return RequestError(
        f"input {name!r}: data has {got} element{'s' if got != 1 else ''} but shape {shape} "
        f"requires {count}"
    )


# --------------------------------------------------------------------------------------------
# ASGI application
# --------------------------------------------------------------------------------------------

_JSON_HEADERS = [(b"content-type", b"application/json")]
_MODEL_PATH_RE = re.compile(
    r"^/v2/models/(?P<name>.+?)(?:/versions/(?P<version>[^/]+))?(?P<rest>/ready|/infer)?$"
)


class ModelServerApp:
    """Raw ASGI application serving one :class:`OnnxModel`."""

    def __init__(
        self,
        model: OnnxModel,
        *,
        offload: bool = False,
        executor: ThreadPoolExecutor | None = None,
        max_body: int = DEFAULT_MAX_BODY,
    ) -> None:
        self.model = model
        self.offload = offload
        self.executor = executor
        if offload and executor is None:
            self.executor = ThreadPoolExecutor(
                max_workers=max(2, os.cpu_count() or 1), thread_name_prefix="ort"
            )
        self.max_body = max_body
        self.ready = True

        name = model.name
        base = f"/v2/models/{name}"
        vbase = f"{base}/versions/{MODEL_VERSION}"
        server_meta = orjson.dumps(
            {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": []}
        )
        model_meta = orjson.dumps(model.metadata)
        model_ready = orjson.dumps({"name": name, "ready": True})
        self._get: dict[str, bytes] = {
            "/v2/health/live": b'{"live":true}',
            "/v2/health/ready": b'{"ready":true}',
            "/v2": server_meta,
            "/v2/": server_meta,
            base: model_meta,
            vbase: model_meta,
            f"{base}/ready": model_ready,
            f"{vbase}/ready": model_ready,
        }
        self._infer_paths = frozenset({f"{base}/infer", f"{vbase}/infer"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            try:
                await self._http(scope, receive, send)
            except Exception:
                log.exception("unhandled error serving %s %s", scope["method"], scope["path"])
                # Fails if the response had already started or the client went away.
                with contextlib.suppress(Exception):
                    await _send_json(send, 500, _error_body("internal server error"))
        elif kind == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    if self.executor is not None:
                        self.executor.shutdown(wait=True)
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        if method == "POST" and path in self._infer_paths:
            await self._infer(scope, receive, send)
            return
        static = self._get.get(path)
        if static is not None:
            if method in ("GET", "HEAD"):
                if path.endswith("/ready") and not self.ready:
                    await _send_json(send, 503, _error_body("model is not ready"))
                else:
                    await _send_json(send, 200, static)
            else:
                await _send_json(send, 405, _error_body(f"method {method} not allowed on {path}"))
            return
        if path in self._infer_paths:
            await _send_json(send, 405, _error_body(f"method {method} not allowed on {path}"))
            return
        await _send_json(send, 404, _error_body(self._not_found_message(path)))

    def _not_found_message(self, path: str) -> str:
        m = _MODEL_PATH_RE.match(path)
        if m is None:
            return f"not found: {path}"
        name, version = m.group("name"), m.group("version")
        if name != self.model.name:
            return f"model {name!r} not found; this server serves {self.model.name!r}"
        if version is not None and version != MODEL_VERSION:
            return f"model {name!r} has no version {version!r}; available versions: {MODEL_VERSION}"
        return f"not found: {path}"

    async def _infer(self, scope: Scope, receive: Receive, send: Send) -> None:
        for key, _value in scope["headers"]:
            if key == b"inference-header-content-length":
                await _send_json(
                    send,
                    400,
                    _error_body(
                        "binary tensor data extension (Inference-Header-Content-Length) is not "
                        "supported; send tensors as JSON"
                    ),
                )
                return
        body = await self._read_body(receive)
        if body is None:
            await _send_json(
                send, 413, _error_body(f"request body larger than {self.max_body} bytes")
            )
            return
        model = self.model
        try:
            feeds, out_names, req_id = model.decode_request(body)
            try:
                if self.offload:
                    loop = asyncio.get_running_loop()
                    results = await loop.run_in_executor(
                        self.executor, model.session.run, out_names, feeds
                    )
                else:
                    results = model.session.run(out_names, feeds)
            except Exception as exc:
                message = _one_line(exc)
                status = ort_error_status(exc, message)
                if status >= 500:
                    log.error("inference failed: %s", message)
                raise RequestError(f"inference failed: {message}", status=status) from None
            payload = model.encode_response(out_names, results, req_id)
        except RequestError as exc:
            await _send_json(send, exc.status, _error_body(exc.message))
            return
        await _send_json(send, 200, payload)

    async def _read_body(self, receive: Receive) -> bytes | None:
        message = await receive()
        body: bytes = message.get("body", b"")
        if not message.get("more_body", False):
            return body
        chunks = [body]
        size = len(body)
        while True:
            message = await receive()
            if message["type"] != "http.request":  # client went away
                return b""
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def ort_error_status(exc: BaseException, message: str) -> int:
    """HTTP status for an exception raised by ``InferenceSession.run``.

    INVALID_ARGUMENT (wrong type/rank/dimension, bad names) is the caller's fault. So is a node
    that rejects the data it was given (FAIL "... while running <Op> node ...", e.g. a
    broadcast between inputs of incompatible batch sizes): the model loaded and the inputs
    matched its declared signature, so what differs is the request. Allocation failures and
    anything else are server errors.
    """
    if isinstance(exc, _ORT_INVALID_ARGUMENT):
        return 400
    lowered = message.lower()
    if any(s in lowered for s in _ORT_ALLOC_FAILURES):
        return 500
    if isinstance(exc, _ORT_FAIL) and "non-zero status code returned while running" in lowered:
        return 400
    return 500


def _error_body(message: str) -> bytes:
    return orjson.dumps({"error": message})


async def _send_json(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*_JSON_HEADERS, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


# --------------------------------------------------------------------------------------------
# Construction helpers
# --------------------------------------------------------------------------------------------


def load_model(path: str | os.PathLike[str], name: str) -> OnnxModel:
    """Resolve ``path`` and load the model; raises :class:`ModelLoadError` (one-line message)."""
    model_file = resolve_model_path(path)
    return OnnxModel(name, model_file, threads=ort_threads_from_env())


def choose_offload(model: OnnxModel) -> bool:
    mode = os.environ.get(ENV_OFFLOAD, "auto").strip().lower() or "auto"
    if mode in ("inline", "never", "0", "false"):
        return False
    if mode in ("threadpool", "always", "1", "true"):
        return True
    if mode != "auto":
        raise ModelLoadError(f"{ENV_OFFLOAD}={mode!r}: expected auto, inline or threadpool")
    elapsed = model.warmup_seconds()
    offload = elapsed is None or elapsed > OFFLOAD_THRESHOLD_S
    log.info(
        "warm-up run: %s -> running inference %s",
        "n/a" if elapsed is None else f"{elapsed * 1e3:.3f} ms",
        "in a thread pool" if offload else "inline on the event loop",
    )
    return offload


def max_body_from_env() -> int:
    raw = os.environ.get(ENV_MAX_BODY, "").strip()
    if not raw:
        return DEFAULT_MAX_BODY
    try:
        return int(raw)
    except ValueError:
        raise ModelLoadError(f"{ENV_MAX_BODY}={raw!r} is not an integer") from None


def create_app(model: OnnxModel) -> ModelServerApp:
    return ModelServerApp(model, offload=choose_offload(model), max_body=max_body_from_env())


def create_app_from_env() -> ModelServerApp:
    """uvicorn factory used by worker processes when ``--workers`` > 1."""
    model = load_model(os.environ[ENV_MODEL_PATH], os.environ[ENV_MODEL_NAME])
    return create_app(model)
