"""``image-classification``: images in, labels from ``config.json`` ``id2label`` out.

``POST /v1/classify`` takes the same request as text classification, with images as data
URLs in ``input``; the answer is the same list of ``classification`` objects (no token
usage). v2 ``infer`` takes BYTES ``image`` (encoded PNG/JPEG/WebP) or FP32 ``pixel_values``
(preprocessed) and answers ``label``, ``scores`` (softmax) and ``logits``. Decoding and the
checkpoint's preprocessing run in the worker (``serve.runners.vision``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from modelmora.serve.batching import ItemRows
from modelmora.serve.tasks._classes import (
    ClassifyRequest,
    classification_data,
    labels_of,
    v2_classes,
)
from modelmora.serve.tasks._images import items_from_inputs, items_from_v2
from modelmora.serve.tasks._text import list_reply, openai_call, submit_rows
from modelmora.serve.tasks.base import JsonRoute, ServeTask, V2Call

if TYPE_CHECKING:
    from modelmora.serve.state import ServeState

__all__ = ["TASK", "classify_images_reply"]


async def classify_images_reply(
    state: ServeState, body: ClassifyRequest, x_priority: str | None, x_timeout_ms: str | None
) -> bytes:
    """The JSON body of a successful ``/v1/classify`` answer for an image classifier."""
    with state.observe(body.model, "classify"):
        items = items_from_inputs(state, body.model, body.inputs, texts=False)
        call = openai_call(state, body.model, x_priority, x_timeout_ms)
        scores = (await submit_rows(call, items)).arrays["scores"]
        data = classification_data(labels_of(state, body.model), scores, body.top_k)
        return list_reply(body.model, data, 0)


async def v2_infer(call: V2Call) -> dict[str, np.ndarray]:
    outputs = (await submit_rows(call, items_from_v2(call))).arrays
    return v2_classes(labels_of(call.state, call.model), outputs)


TASK = ServeTask(
    name="image-classification",
    runner="modelmora.serve.runners.vision:ImageClassifierRunner",
    endpoint="POST /v1/classify (images as data URLs)",
    v2_infer=v2_infer,
    batching=ItemRows(),
    needs_tokenizer=False,
    routes={
        "/v1/classify": JsonRoute(
            ClassifyRequest,
            classify_images_reply,
            "Classify texts or images (labels from id2label)",
        )
    },
)
