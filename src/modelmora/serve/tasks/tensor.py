"""``tensor``: any ONNX graph, its own named numeric tensors in and out (v2 ``infer`` only).

Requests batch together when every input's first dimension is dynamic and the rest of their
shapes and dtypes agree (the signature); a graph with a fixed batch dimension runs alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from modelmora.serve.batching import TensorRows
from modelmora.serve.errors import BadRequest
from modelmora.serve.ipc import ModelInfo
from modelmora.serve.tasks.base import ServeTask, V2Call
from modelmora.serve.v2codec import DTYPES

if TYPE_CHECKING:
    pass

__all__ = ["TASK"]


def _check_tensors(model: str, info: ModelInfo, tensors: dict[str, np.ndarray]) -> tuple[int, Any]:
    expected = {t.name: t for t in info.inputs}
    if set(tensors) != set(expected):
        raise BadRequest(f"model {model!r} takes inputs {sorted(expected)}, got {sorted(tensors)}")
    rows = -1
    for name, arr in tensors.items():
        spec = expected[name]
        if arr.dtype != np.dtype(DTYPES.get(spec.datatype, np.object_)):
            raise BadRequest(f"input {name!r} must have datatype {spec.datatype}")
        if arr.ndim != len(spec.shape) or any(
            d >= 0 and d != a for d, a in zip(spec.shape, arr.shape, strict=True)
        ):
            raise BadRequest(
                f"input {name!r} must have shape {list(spec.shape)} (-1 = any), "
                f"got {list(arr.shape)}"
            )
        if info.batchable:
            if arr.shape[0] < 1 or (rows >= 0 and arr.shape[0] != rows):
                raise BadRequest("every input needs the same batch size (first dimension) ≥ 1")
            rows = arr.shape[0]
    if not info.batchable:
        return max(rows, 1), ("alone", id(tensors))
    signature = tuple(sorted((n, a.dtype.str, a.shape[1:]) for n, a in tensors.items()))
    return rows, signature


async def v2_infer(call: V2Call) -> dict[str, np.ndarray]:
    info = await call.state.pool.info(call.model)
    rows, signature = _check_tensors(call.model, info, call.tensors)
    result = await call.state.schedulers[call.model].submit(
        rows=rows,
        payload=call.tensors,
        signature=signature,
        priority=call.priority,
        timeout_s=call.timeout_s,
        splittable=info.batchable,
    )
    return result.arrays


TASK = ServeTask(
    name="tensor",
    runner="modelmora.serve.runners.base:TensorRunner",
    endpoint="POST /v2/models/{model}/infer",
    v2_infer=v2_infer,
    batching=TensorRows(),
    needs_tokenizer=False,
)
