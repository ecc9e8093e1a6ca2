"""How the local runtime starts and probes each framework's model server."""

from __future__ import annotations

import http.client
import json
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from workers.runtime.base import RuntimeError_

# Framework -> (binary, how to get it). onnxruntime is served by serveplane's own server.
BINARIES: dict[str, tuple[str, str]] = {
    "tfserving": (
        "tensorflow_model_server",
        "install TensorFlow Serving (apt package tensorflow-model-server, see "
        "https://www.tensorflow.org/tfx/serving/setup)",
    ),
    "torchserve": (
        "torchserve",
        "pip install torchserve torch-model-archiver (TorchServe also needs Java 11+)",
    ),
    "triton": (
        "tritonserver",
        "install NVIDIA Triton Inference Server (tritonserver on PATH; it ships as the "
        "nvcr.io/nvidia/tritonserver image)",
    ),
}
PROBE_TIMEOUT = 0.5


@dataclass(frozen=True)
class Launch:
    """A model-server command line and the ports it binds (the first one serves HTTP)."""

    command: list[str]
    ports: list[int]
    config_files: dict[str, str]


def local_model_path(model_path: str) -> Path:
    """The model's filesystem path; remote locations are a Kubernetes-runtime feature."""
    scheme = model_path.split("://", 1)[0] if "://" in model_path else None
    if scheme == "file":
        model_path = model_path[len("file://") :]
    elif scheme is not None:
        raise RuntimeError_(
            "UnsupportedModelLocation",
            f"model_path {model_path!r} is a {scheme}:// location; the local runtime serves "
            "models from the worker host's filesystem only (give an absolute path, or use "
            "SERVEPLANE_RUNTIME=kubernetes for pvc:// and s3:// models)",
        )
    path = Path(model_path).expanduser()
    if not path.exists():
        raise RuntimeError_(
            "ModelNotFound",
            f"model_path {model_path!r} does not exist on the worker host",
        )
    return path.resolve()


def require_binary(framework: str) -> str | None:
    """The server binary for a framework, or a ModelServerNotInstalled error."""
    if framework == "onnxruntime":
        return None
    if framework not in BINARIES:
        raise RuntimeError_("UnsupportedFramework", f"framework {framework!r} is not supported")
    binary, how = BINARIES[framework]
    found = shutil.which(binary)
    if found is None:
        raise RuntimeError_(
            "ModelServerNotInstalled",
            f"the local runtime runs {framework} models with `{binary}`, which is not on the "
            f"worker's PATH: {how}; or deploy with SERVEPLANE_RUNTIME=kubernetes, which runs "
            "the framework's container image",
        )
    return found


def build_launch(
    framework: str, name: str, model: Path, binary: str | None, port: Callable[[], int]
) -> Launch:
    """The command line that serves `model` as `name` on fresh loopback ports."""
    http_port = port()
    if framework == "onnxruntime":
        command = [
            sys.executable,
            "-m",
            "workers.model_server",
            "--model",
            str(model),
            "--name",
            name,
            "--port",
            str(http_port),
            "--host",
            "127.0.0.1",
        ]
        return Launch(command, [http_port], {})
    assert binary is not None
    if framework == "tfserving":
        grpc = port()
        command = [
            binary,
            f"--port={grpc}",
            f"--rest_api_port={http_port}",
            f"--model_name={name}",
            f"--model_base_path={model}",
        ]
        return Launch(command, [http_port, grpc], {})
    if framework == "triton":
        grpc, metrics = port(), port()
        command = [
            binary,
            f"--model-repository={model}",
            "--strict-model-config=false",
            f"--http-port={http_port}",
            f"--grpc-port={grpc}",
            f"--metrics-port={metrics}",
            "--http-address=127.0.0.1",
            "--grpc-address=127.0.0.1",
        ]
        return Launch(command, [http_port, grpc, metrics], {})
    return _torchserve(binary, name, model, http_port, port)


def _torchserve(
    binary: str, name: str, model: Path, http_port: int, port: Callable[[], int]
) -> Launch:
    if model.is_file():
        store, archive = model.parent, model.name
    else:
        store, archive = model, f"{name}.mar"
        if not (model / archive).exists():
            found = sorted(p.name for p in model.glob("*.mar"))
            if not found:
                raise RuntimeError_(
                    "ModelNotFound", f"no {archive} (or any .mar archive) in model store {model}"
                )
            archive = found[0]
    management, metrics, grpc, grpc_mgmt = port(), port(), port(), port()
    config = "\n".join(
        [
            f"inference_address=http://127.0.0.1:{http_port}",
            f"management_address=http://127.0.0.1:{management}",
            f"metrics_address=http://127.0.0.1:{metrics}",
            f"grpc_inference_port={grpc}",
            f"grpc_management_port={grpc_mgmt}",
            f"model_store={store}",
            "disable_token_authorization=true",
            "",
        ]
    )
    command = [
        binary,
        "--start",
        "--foreground",
        "--ncs",
        "--disable-token-auth",
        "--model-store",
        str(store),
        "--models",
        f"{name}={archive}",
        "--ts-config",
        "config.properties",
    ]
    return Launch(
        command, [http_port, management, metrics, grpc, grpc_mgmt], {"config.properties": config}
    )


def probe_ready(framework: str, name: str, port: int, timeout: float = PROBE_TIMEOUT) -> bool:
    """One quick GET of the server's own model-ready endpoint (never waits longer)."""
    path = {
        "tfserving": f"/v1/models/{name}",
        "torchserve": "/ping",
    }.get(framework, f"/v2/models/{name}/ready")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read(65536)
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()
    if response.status != 200:
        return False
    if framework == "tfserving":
        return _tfserving_available(body)
    if framework == "torchserve":
        return _json(body).get("status") == "Healthy"
    return True


def _json(body: bytes) -> dict[str, object]:
    try:
        value = json.loads(body)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _tfserving_available(body: bytes) -> bool:
    statuses = _json(body).get("model_version_status")
    if not isinstance(statuses, list):
        return False
    return any(isinstance(s, dict) and s.get("state") == "AVAILABLE" for s in statuses)
