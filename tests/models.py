"""Tiny ONNX models for tests, built with ``onnx.helper`` (no training framework needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# Conservative versions that every onnxruntime >= 1.14 loads.
OPSET = 17
IR_VERSION = 8

_NP_TO_ONNX = {
    np.dtype(np.float32): TensorProto.FLOAT,
    np.dtype(np.float64): TensorProto.DOUBLE,
    np.dtype(np.int32): TensorProto.INT32,
    np.dtype(np.int64): TensorProto.INT64,
}


def save_model(graph: onnx.GraphProto, path: str | Path) -> Path:
    """Wrap ``graph`` in a model with the module's opset/IR version, check it and save it."""
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="serveplane-tests",
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def build_linear_model(
    path: str | Path,
    W: np.ndarray,
    b: np.ndarray,
    input_name: str = "x",
    output_name: str = "y",
    dtype: type | np.dtype = np.float32,
) -> Path:
    """Write an ONNX model computing ``y = x @ W + b`` to ``path`` and return the path.

    ``W`` has shape ``[in_dim, out_dim]`` and ``b`` shape ``[out_dim]``. The input is
    ``[-1, in_dim]`` (dynamic batch), the output ``[-1, out_dim]``; tensors are float32
    unless ``dtype`` says otherwise (float64, int32 and int64 work too).
    """
    dt = np.dtype(dtype)
    W = np.asarray(W, dtype=dt)
    b = np.asarray(b, dtype=dt).reshape(-1)
    if W.ndim != 2 or b.shape[0] != W.shape[1]:
        raise ValueError(f"W must be [in, out] and b [out], got {W.shape} and {b.shape}")
    in_dim, out_dim = W.shape
    elem = _NP_TO_ONNX[dt]
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", [input_name, "W"], ["xW"]),
            helper.make_node("Add", ["xW", "b"], [output_name]),
        ],
        "linear",
        [helper.make_tensor_value_info(input_name, elem, ["batch", in_dim])],
        [helper.make_tensor_value_info(output_name, elem, ["batch", out_dim])],
        [numpy_helper.from_array(W, "W"), numpy_helper.from_array(b, "b")],
    )
    return save_model(graph, path)
