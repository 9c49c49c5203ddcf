"""``zero-shot-image-classification``: image-text dual encoders (CLIP-style), one space.

``POST /v1/embeddings`` takes texts and images (data URLs) in one ``input`` list, as Infinity
does, and answers one vector per input in its order — comparable across the two (cosine),
as ``get_text_features`` / ``get_image_features`` are. v2 ``infer`` takes BYTES ``text``,
BYTES ``image`` (encoded) or FP32 ``pixel_values`` and answers ``embedding``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from modelmora.serve.batching import ItemRows
from modelmora.serve.tasks._images import items_from_inputs, items_from_v2
from modelmora.serve.tasks._text import openai_call, submit_rows, texts_from_v2
from modelmora.serve.tasks.base import JsonRoute, ServeTask, V2Call
from modelmora.serve.tasks.feature_extraction import EmbeddingsRequest, embeddings_body

if TYPE_CHECKING:
    from modelmora.serve.state import ServeState

__all__ = ["TASK", "image_text_embeddings_reply"]


async def image_text_embeddings_reply(
    state: ServeState, body: EmbeddingsRequest, x_priority: str | None, x_timeout_ms: str | None
) -> bytes:
    """``/v1/embeddings`` for an image-text model: texts and data-URL images, in order."""
    with state.observe(body.model, "embeddings"):
        items = items_from_inputs(state, body.model, body.inputs, texts=True)
        result = await submit_rows(openai_call(state, body.model, x_priority, x_timeout_ms), items)
        tokens = int(result.tokens.sum()) if result.tokens is not None else 0
        return embeddings_body(body, result.arrays["embedding"], tokens)


async def v2_infer(call: V2Call) -> dict[str, np.ndarray]:
    items: list[Any] = (
        list(texts_from_v2(call.tensors)) if set(call.tensors) == {"text"} else items_from_v2(call)
    )
    return {"embedding": (await submit_rows(call, items)).arrays["embedding"]}


TASK = ServeTask(
    name="zero-shot-image-classification",
    runner="modelmora.serve.runners.vision:DualEncoderRunner",
    endpoint="POST /v1/embeddings (texts, and images as data URLs)",
    v2_infer=v2_infer,
    batching=ItemRows(),
    model_file="vision_model.onnx",
    routes={
        "/v1/embeddings": JsonRoute(
            EmbeddingsRequest,
            image_text_embeddings_reply,
            "Create embeddings of texts (and of images)",
        )
    },
)
