"""ONNX Runtime's tensor type strings (``NodeArg.type``, e.g. ``"tensor(float)"``) as numpy
dtypes and as KServe v2 datatype names.

One table, so the decoder (its KV cache dtype), the validation and benchmark inputs and
serving (model metadata, feeds) agree on every type a graph can declare.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["ONNX_TENSOR_TYPES", "numpy_dtype", "v2_datatype"]

ONNX_TENSOR_TYPES: dict[str, tuple[str, Any]] = {
    "tensor(bool)": ("BOOL", np.bool_),
    "tensor(uint8)": ("UINT8", np.uint8),
    "tensor(uint16)": ("UINT16", np.uint16),
    "tensor(uint32)": ("UINT32", np.uint32),
    "tensor(uint64)": ("UINT64", np.uint64),
    "tensor(int8)": ("INT8", np.int8),
    "tensor(int16)": ("INT16", np.int16),
    "tensor(int32)": ("INT32", np.int32),
    "tensor(int64)": ("INT64", np.int64),
    "tensor(float16)": ("FP16", np.float16),
    "tensor(float)": ("FP32", np.float32),
    "tensor(double)": ("FP64", np.float64),
    "tensor(string)": ("BYTES", np.object_),
}
"""ONNX type → (v2 datatype, numpy dtype)."""


def numpy_dtype(onnx_type: str, default: Any = None) -> Any:
    """The numpy dtype of ``onnx_type`` (``np.object_`` for strings), else ``default``."""
    known = ONNX_TENSOR_TYPES.get(onnx_type)
    return default if known is None else known[1]


def v2_datatype(onnx_type: str) -> str:
    """The v2 datatype name of ``onnx_type``; an unknown type is reported as ONNX names it."""
    known = ONNX_TENSOR_TYPES.get(onnx_type)
    return onnx_type if known is None else known[0]
