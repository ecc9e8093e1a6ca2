"""Datatype mapping between the Open Inference Protocol (KServe v2), numpy and ONNX.

Three vocabularies are involved:

* v2 datatype strings ("FP32", "INT64", "BYTES", ...) used on the wire;
* numpy dtypes used to build the arrays handed to onnxruntime;
* ONNX tensor element types, both as ``onnx.TensorProto`` enum values and as the
  ``"tensor(float)"`` strings that onnxruntime reports for session inputs/outputs.
"""

from __future__ import annotations

import numpy as np

# v2 datatype -> numpy dtype. BYTES tensors are numpy object arrays of ``str``.
V2_TO_NUMPY: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}

# numpy dtype -> v2 datatype (str_ / bytes_ arrays map to BYTES as well).
NUMPY_TO_V2: dict[np.dtype, str] = {dt: name for name, dt in V2_TO_NUMPY.items()}

# onnxruntime type string -> v2 datatype.
ORT_TO_V2: dict[str, str] = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
    # Known to the protocol but not representable as a plain numpy array.
    "tensor(bfloat16)": "BF16",
}
V2_TO_ORT: dict[str, str] = {v: k for k, v in ORT_TO_V2.items()}

# v2 datatype <-> ONNX TensorProto element type (values of onnx.TensorProto.DataType).
# Spelled as integers so this module does not need the ``onnx`` package at runtime.
V2_TO_ONNX: dict[str, int] = {
    "FP32": 1,  # FLOAT
    "UINT8": 2,
    "INT8": 3,
    "UINT16": 4,
    "INT16": 5,
    "INT32": 6,
    "INT64": 7,
    "BYTES": 8,  # STRING
    "BOOL": 9,
    "FP16": 10,  # FLOAT16
    "FP64": 11,  # DOUBLE
    "UINT32": 12,
    "UINT64": 13,
    "BF16": 16,  # BFLOAT16
}
ONNX_TO_V2: dict[int, str] = {v: k for k, v in V2_TO_ONNX.items()}


def v2_from_ort_type(ort_type: str) -> str:
    """v2 datatype for an onnxruntime type string; non-tensor types are returned verbatim."""
    return ORT_TO_V2.get(ort_type, ort_type)


def v2_from_numpy(dtype: np.dtype) -> str:
    """v2 datatype for a numpy dtype (unicode/bytes strings are BYTES)."""
    dtype = np.dtype(dtype)
    if dtype.kind in ("U", "S", "O"):
        return "BYTES"
    try:
        return NUMPY_TO_V2[dtype]
    except KeyError:
        raise ValueError(f"numpy dtype {dtype} has no v2 datatype") from None


def numpy_from_v2(datatype: str) -> np.dtype:
    """numpy dtype for a v2 datatype; raises ValueError for unknown/unsupported names."""
    try:
        return V2_TO_NUMPY[datatype]
    except KeyError:
        raise ValueError(
            f"unsupported datatype {datatype!r}; supported: {', '.join(V2_TO_NUMPY)}"
        ) from None
