"""Inference through the gateway versus straight to the model server, same run, same load.

A real ONNX model (y = xW + b, tests.models.build_linear_model) is deployed through the API
on the LOCAL runtime (the worker starts a model-server process). Then `--seconds` of
closed-loop `POST /v2/models/{name}/infer` at `--concurrency`: first directly against the
model server's port, then through `{endpoint_url}` with the service API key.

    python -m bench.gateway [--concurrency 16] [--seconds 10]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.common import client_session, emit, load, machine, run
from bench.profiling import Profiler
from bench.stack import Stack, StackConfig, log

MODEL_NAME = "linear"


def deploy(stack: Stack, model: Path) -> dict[str, Any]:
    """Deploy the model through the API and wait until it runs; the POST's answer."""
    body = {
        "name": MODEL_NAME,
        "model_path": str(model),
        "framework": "onnxruntime",
        "replicas": 1,
        "min_replicas": 1,
        "max_replicas": 1,
    }
    created = httpx.post(
        f"{stack.api_url}/api/inference/services", json=body, headers=stack.headers, timeout=30
    )
    created.raise_for_status()
    accepted: dict[str, Any] = created.json()
    url = f"{stack.api_url}/api/inference/services/{accepted['service_id']}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = httpx.get(url, headers=stack.headers, timeout=10).json()["status"]
        if status == "running":
            return accepted
        if status == "failed":
            raise RuntimeError(f"deploy failed:\n{stack.tail('worker0')}")
        time.sleep(0.2)
    raise RuntimeError(f"deploy did not finish:\n{stack.tail('worker0')}")


def replica(stack: Stack) -> tuple[int, int]:
    """The model server's (port, pid), from the local runtime's replica record."""
    records = sorted((stack.workdir / "local" / "replicas").glob("*.json"))
    if len(records) != 1:
        raise RuntimeError(f"expected one replica record, found {len(records)}")
    record = json.loads(records[0].read_text())
    return int(record["port"]), int(record["pid"])


async def drive(
    url: str,
    headers: dict[str, str],
    payload: bytes,
    expected: list[float],
    concurrency: int,
    seconds: float,
    cpu_of: dict[str, int],
) -> dict[str, Any]:
    """Warm up 2 s, then measure `seconds` of closed-loop inference requests."""
    all_headers = {**headers, "Content-Type": "application/json"}
    async with client_session(limit=concurrency) as http:

        async def request() -> bool:
            async with http.post(url, data=payload, headers=all_headers) as resp:
                body = await resp.read()
                if resp.status != 200:
                    return False
                data = json.loads(body)["outputs"][0]["data"]
                return bool(np.allclose(data, expected, atol=1e-4))

        await load(request, concurrency, 2.0)
        return await load(request, concurrency, seconds, cpu_of)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.gateway")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()

    from tests.models import build_linear_model

    rng = np.random.default_rng(7)
    w = rng.standard_normal((4, 3)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    x = rng.standard_normal((1, 4)).astype(np.float32)
    expected = (x @ w + b).reshape(-1).tolist()
    payload = json.dumps(
        {
            "inputs": [
                {"name": "x", "shape": [1, 4], "datatype": "FP32", "data": x.reshape(-1).tolist()}
            ]
        }
    ).encode()

    config = StackConfig(workers=1, runtime="local", fake_cluster=False)
    with Stack(config) as stack:
        model = build_linear_model(stack.workdir / "linear.onnx", w, b)
        accepted = deploy(stack, model)
        port, server_pid = replica(stack)
        api_pid = stack.api_pids()[-1]
        log(f"model server on port {port}; endpoint {accepted['endpoint_url']}")
        infer = f"/v2/models/{MODEL_NAME}/infer"
        direct = run(
            lambda: drive(
                f"http://127.0.0.1:{port}{infer}",
                {},
                payload,
                expected,
                args.concurrency,
                args.seconds,
                {"model_server": server_pid},
            )
        )
        profiler = Profiler("gateway", {"api": api_pid}, args.seconds + 2)
        gateway = run(
            lambda: drive(
                f"{accepted['endpoint_url']}{infer}",
                {"Authorization": f"Bearer {accepted['api_key']}"},
                payload,
                expected,
                args.concurrency,
                args.seconds,
                {"model_server": server_pid, "api": api_pid},
            )
        )
        profiler.wait()
    d, g = direct["latency_ms"], gateway["latency_ms"]
    emit(
        {
            "benchmark": "gateway",
            "concurrency": args.concurrency,
            "direct": direct,
            "gateway": gateway,
            "rps_ratio": round(gateway["rps"] / direct["rps"], 3) if direct["rps"] else None,
            "added_latency_ms": {
                "p50": round(g["p50"] - d["p50"], 2),
                "p99": round(g["p99"] - d["p99"], 2),
            },
            "machine": machine(),
        }
    )


if __name__ == "__main__":
    main()
