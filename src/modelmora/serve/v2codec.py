"""KServe v2 / Open Inference Protocol tensors: JSON and the binary-data extension.

Clients such as ``tritonclient.http`` send tensors as raw bytes after the JSON header
(``Inference-Header-Content-Length``) and ask for binary outputs the same way, so both are
supported; plain JSON ``data`` (flat or nested) works too. Everything a client can get
wrong raises :class:`~modelmora.serve.errors.BadRequest` naming the tensor and the problem.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modelmora.serve.errors import BadRequest
from modelmora.serve.wire import dumps

__all__ = [
    "DTYPES",
    "InferInput",
    "InferRequest",
    "RequestedOutput",
    "decode_request",
    "encode_response",
]

DTYPES: dict[str, Any] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": np.object_,
}
MAX_DATA_DEPTH = 17
"""Nesting of ``data`` lists: one level per dimension (``shape`` has at most 16) plus one."""
_V2_OF = {np.dtype(t): name for name, t in DTYPES.items() if name != "BYTES"}


class InferInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    shape: list[int] = Field(max_length=16)
    datatype: str
    parameters: dict[str, Any] | None = None
    data: Any = None


class RequestedOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    parameters: dict[str, Any] | None = None


class InferRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[InferInput] = Field(min_length=1)
    outputs: list[RequestedOutput] | None = None


def _flatten_json(name: str, data: Any, datatype: str, count: int) -> np.ndarray:
    if datatype == "BYTES":
        flat: list[Any] = []
        stack = [(data, 0)]
        while stack:  # iterative flatten keeps deep nesting from blowing the stack
            value, depth = stack.pop()
            if isinstance(value, list):
                if depth >= MAX_DATA_DEPTH:
                    raise BadRequest(f"input {name!r}: data nested deeper than {MAX_DATA_DEPTH}")
                stack.extend((item, depth + 1) for item in reversed(value))
            elif isinstance(value, str):
                flat.append(value.encode("utf-8"))
            else:
                raise BadRequest(f"input {name!r}: BYTES data must be strings")
            if len(flat) > count:
                break
        arr = np.empty(len(flat), dtype=np.object_)
        arr[:] = flat
        return arr
    try:
        arr = np.asarray(data)
    except (ValueError, TypeError) as exc:
        raise BadRequest(f"input {name!r}: data is not a regular array ({exc})") from None
    if arr.dtype.kind not in "biuf":
        raise BadRequest(f"input {name!r}: {datatype} data must be numbers")
    if datatype == "BOOL" and arr.size and arr.dtype.kind != "b":
        raise BadRequest(f"input {name!r}: BOOL data must be true/false")
    target = np.dtype(DTYPES[datatype])
    if arr.size and target.kind in "iu" and arr.dtype.kind == "f":
        raise BadRequest(f"input {name!r}: {datatype} data must be integers")
    if arr.size and target.kind in "iu":
        info = np.iinfo(target)
        if arr.min() < info.min or arr.max() > info.max:
            raise BadRequest(f"input {name!r}: values do not fit in {datatype}")
    return arr.reshape(-1).astype(target)


def _from_binary(name: str, raw: memoryview, datatype: str, count: int) -> np.ndarray:
    if datatype != "BYTES":
        itemsize = np.dtype(DTYPES[datatype]).itemsize
        if len(raw) != count * itemsize:
            raise BadRequest(
                f"input {name!r}: binary_data_size is {len(raw)} bytes, "
                f"shape and {datatype} need {count * itemsize}"
            )
        return np.frombuffer(raw, dtype=DTYPES[datatype]).copy()
    items: list[bytes] = []
    pos = 0
    while pos < len(raw):
        if pos + 4 > len(raw):
            raise BadRequest(f"input {name!r}: truncated BYTES element length")
        size = int.from_bytes(raw[pos : pos + 4], "little")
        pos += 4
        if pos + size > len(raw):
            raise BadRequest(f"input {name!r}: BYTES element runs past binary_data_size")
        items.append(bytes(raw[pos : pos + size]))
        pos += size
    arr = np.empty(len(items), dtype=np.object_)
    arr[:] = items
    return arr


def decode_request(
    body: bytes, header_length: int | None
) -> tuple[InferRequest, dict[str, np.ndarray]]:
    """Parse an infer request body into the request and one numpy array per input."""
    if header_length is not None and not 0 < header_length <= len(body):
        raise BadRequest(
            f"Inference-Header-Content-Length {header_length} is outside the body "
            f"({len(body)} bytes)"
        )
    head = body[:header_length] if header_length is not None else body
    try:
        # orjson, not json: it refuses lone UTF-16 surrogates (which could not be encoded
        # back) and nesting past 1024 levels with a ValueError instead of a RecursionError.
        request = InferRequest.model_validate(orjson.loads(head))
    except (ValueError, UnicodeDecodeError) as exc:
        if isinstance(exc, ValidationError):
            errors = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
            )
            raise BadRequest(f"invalid inference request: {errors}") from None
        raise BadRequest(f"the request body is not valid JSON: {exc}") from None
    binary = memoryview(body)[len(head) :]
    offset = 0
    tensors: dict[str, np.ndarray] = {}
    for spec in request.inputs:
        if spec.datatype not in DTYPES:
            raise BadRequest(
                f"input {spec.name!r}: unknown datatype {spec.datatype!r} "
                f"(one of {', '.join(DTYPES)})"
            )
        if any(d < 0 for d in spec.shape):
            raise BadRequest(f"input {spec.name!r}: shape {spec.shape} has a negative dimension")
        if spec.name in tensors:
            raise BadRequest(f"input {spec.name!r} is given twice")
        count = math.prod(spec.shape)
        size = (spec.parameters or {}).get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise BadRequest(f"input {spec.name!r}: binary_data_size must be an integer ≥ 0")
            if offset + size > len(binary):
                raise BadRequest(f"input {spec.name!r}: binary data is shorter than announced")
            flat = _from_binary(spec.name, binary[offset : offset + size], spec.datatype, count)
            offset += size
        elif spec.data is None:
            raise BadRequest(f"input {spec.name!r} has neither data nor binary_data_size")
        else:
            flat = _flatten_json(spec.name, spec.data, spec.datatype, count)
        if flat.size != count:
            raise BadRequest(
                f"input {spec.name!r}: shape {spec.shape} needs {count} elements, got {flat.size}"
            )
        tensors[spec.name] = flat.reshape(spec.shape)
    if offset != len(binary):
        raise BadRequest(f"{len(binary) - offset} bytes of binary data belong to no input")
    return request, tensors


def datatype_of(arr: np.ndarray) -> str:
    if arr.dtype == np.object_:
        return "BYTES"
    return _V2_OF[arr.dtype]


def _bytes_payload(arr: np.ndarray) -> bytes:
    parts = []
    for item in arr.reshape(-1):
        raw = item if isinstance(item, bytes) else str(item).encode("utf-8")
        parts.append(len(raw).to_bytes(4, "little") + raw)
    return b"".join(parts)


def _json_data(arr: np.ndarray) -> list[Any] | np.ndarray:
    if arr.dtype == np.object_:
        return [x.decode("utf-8") if isinstance(x, bytes) else str(x) for x in arr.reshape(-1)]
    return np.ascontiguousarray(arr).reshape(-1)


def encode_response(
    *,
    model_name: str,
    request: InferRequest,
    outputs: dict[str, np.ndarray],
) -> tuple[bytes, dict[str, str]]:
    """The response body (JSON, then binary outputs if any were asked for) and its headers."""
    params = request.parameters or {}
    all_binary = bool(params.get("binary_data_output", False))
    wanted: list[tuple[str, bool]]
    if request.outputs:
        wanted = []
        for out in request.outputs:
            if out.name not in outputs:
                raise BadRequest(
                    f"unknown output {out.name!r}; model {model_name!r} has "
                    f"{', '.join(sorted(outputs))}"
                )
            wanted.append((out.name, bool((out.parameters or {}).get("binary_data", all_binary))))
    else:
        wanted = [(name, all_binary) for name in outputs]
    described: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, as_binary in wanted:
        arr = outputs[name]
        entry: dict[str, Any] = {
            "name": name,
            "datatype": datatype_of(arr),
            "shape": list(arr.shape),
        }
        if as_binary:
            blob = (
                _bytes_payload(arr)
                if arr.dtype == np.object_
                else np.ascontiguousarray(arr).tobytes()
            )
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = _json_data(arr)
        described.append(entry)
    doc: dict[str, Any] = {"model_name": model_name, "model_version": "1", "outputs": described}
    if request.id is not None:
        doc["id"] = request.id
    head = dumps(doc)
    if not blobs:
        return head, {"Content-Type": "application/json"}
    return head + b"".join(blobs), {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(head)),
    }
