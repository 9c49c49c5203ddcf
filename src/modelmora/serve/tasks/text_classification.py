"""``text-classification``: text in, labels from ``config.json`` ``id2label`` out.

``POST /v1/classify`` is ModelMora's own (OpenAI has no classification endpoint); it follows
the same conventions (``model``, ``input`` string or list, ``usage``). v2 ``infer`` answers
``label`` (BYTES), ``scores`` (softmax, or sigmoid for multi-label models) and ``logits``,
for clients that speak the Open Inference Protocol.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from modelmora.serve.batching import TextRows
from modelmora.serve.tasks._classes import (
    ClassifyRequest,
    classification_data,
    labels_of,
    v2_classes,
)
from modelmora.serve.tasks._text import list_reply, run_texts, submit_v2_texts
from modelmora.serve.tasks.base import JsonRoute, ServeTask, V2Call

if TYPE_CHECKING:
    from modelmora.serve.state import ServeState

__all__ = ["TASK", "classify_reply"]


async def classify_reply(
    state: ServeState, body: ClassifyRequest, x_priority: str | None, x_timeout_ms: str | None
) -> bytes:
    """The JSON body of a successful ``/v1/classify`` answer; failures raise ServeError."""
    with state.observe(body.model, "classify"):
        arrays, tokens = await run_texts(
            state, body.model, "text-classification", body.inputs, x_priority, x_timeout_ms
        )
        data = classification_data(labels_of(state, body.model), arrays["scores"], body.top_k)
        return list_reply(body.model, data, tokens)


async def v2_infer(call: V2Call) -> dict[str, np.ndarray]:
    outputs = (await submit_v2_texts(call)).arrays
    return v2_classes(labels_of(call.state, call.model), outputs)


TASK = ServeTask(
    name="text-classification",
    runner="modelmora.serve.runners.text:ClassifierRunner",
    endpoint="POST /v1/classify",
    v2_infer=v2_infer,
    batching=TextRows(),
    routes={
        "/v1/classify": JsonRoute(
            ClassifyRequest, classify_reply, "Classify texts or images (labels from id2label)"
        )
    },
)
