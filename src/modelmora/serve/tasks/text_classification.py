"""``text-classification``: text in, labels from ``config.json`` ``id2label`` out.

``POST /v1/classify`` is ModelMora's own (OpenAI has no classification endpoint); it follows
the same conventions (``model``, ``input`` string or list, ``usage``). v2 ``infer`` answers
``label`` (BYTES), ``scores`` (softmax, or sigmoid for multi-label models) and ``logits``,
for clients that speak the Open Inference Protocol.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from modelmora.serve.batching import TextRows
from modelmora.serve.tasks._text import (
    MAX_INPUTS,
    TextInput,
    list_reply,
    run_texts,
    submit_v2_texts,
)
from modelmora.serve.tasks.base import JsonRoute, ServeTask, V2Call

if TYPE_CHECKING:
    from modelmora.serve.state import ServeState

__all__ = ["TASK", "ClassifyRequest", "classify_reply"]


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    input: TextInput | Annotated[list[TextInput], Field(min_length=1, max_length=MAX_INPUTS)]
    top_k: int | None = Field(
        None, ge=1, description="How many labels per input in `scores` (default: all)."
    )


def _labels(state: ServeState, model: str) -> list[str]:
    info = state.pool.cached_info(model)
    return list(info.labels or ()) if info else []


async def classify_reply(
    state: ServeState, body: ClassifyRequest, x_priority: str | None, x_timeout_ms: str | None
) -> bytes:
    """The JSON body of a successful ``/v1/classify`` answer; failures raise ServeError."""
    with state.observe(body.model, "classify"):
        texts = [body.input] if isinstance(body.input, str) else body.input
        arrays, tokens = await run_texts(
            state, body.model, "text-classification", texts, x_priority, x_timeout_ms
        )
        labels = _labels(state, body.model)
        data = []
        for i, row in enumerate(arrays["scores"]):
            order = np.argsort(-row, kind="stable")[: body.top_k or len(row)]
            scores = [{"label": labels[j], "score": float(row[j])} for j in order]
            data.append(
                {
                    "object": "classification",
                    "index": i,
                    "label": scores[0]["label"],
                    "score": scores[0]["score"],
                    "scores": scores,
                }
            )
        return list_reply(body.model, data, tokens)


async def v2_infer(call: V2Call) -> dict[str, np.ndarray]:
    outputs = (await submit_v2_texts(call)).arrays
    labels = _labels(call.state, call.model)
    chosen = np.empty(outputs["scores"].shape[0], dtype=np.object_)
    chosen[:] = [labels[int(i)].encode("utf-8") for i in outputs["scores"].argmax(axis=1)]
    return {"label": chosen, "scores": outputs["scores"], "logits": outputs["logits"]}


TASK = ServeTask(
    name="text-classification",
    runner="modelmora.serve.runners.text:ClassifierRunner",
    endpoint="POST /v1/classify",
    v2_infer=v2_infer,
    batching=TextRows(),
    routes={
        "/v1/classify": JsonRoute(
            ClassifyRequest, classify_reply, "Classify texts (labels from the model's id2label)"
        )
    },
)
