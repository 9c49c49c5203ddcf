"""``feature-extraction``: text in, pooled sentence vectors out.

OpenAI ``POST /v1/embeddings``; v2 ``infer`` with a BYTES ``text`` input answers
``embedding`` (FP32 ``[n, dim]``). Pooling follows the artifact's sentence-transformers files.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from modelmora.serve.batching import TextRows
from modelmora.serve.errors import BadRequest
from modelmora.serve.tasks._text import (
    MAX_INPUTS,
    TextOrImage,
    list_reply,
    run_texts,
    submit_v2_texts,
)
from modelmora.serve.tasks.base import JsonRoute, ServeTask, V2Call

if TYPE_CHECKING:
    from modelmora.serve.state import ServeState

__all__ = ["TASK", "EmbeddingsRequest", "embeddings_body", "embeddings_reply"]


class EmbeddingsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, description="A served model name (see GET /v1/models).")
    input: TextOrImage | Annotated[list[TextOrImage], Field(min_length=1, max_length=MAX_INPUTS)]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, description="Not supported: must be omitted.")
    user: str | None = None

    @property
    def inputs(self) -> list[str]:
        """The inputs, after refusing what is not served (400)."""
        if self.dimensions is not None:
            raise BadRequest("`dimensions` is not supported: omit it to get the model's full size")
        return [self.input] if isinstance(self.input, str) else self.input


async def embeddings_reply(
    state: ServeState, body: EmbeddingsRequest, x_priority: str | None, x_timeout_ms: str | None
) -> bytes:
    """The JSON body of a successful ``/v1/embeddings`` answer; failures raise ServeError."""
    with state.observe(body.model, "embeddings"):
        arrays, tokens = await run_texts(
            state, body.model, "feature-extraction", body.inputs, x_priority, x_timeout_ms
        )
        return embeddings_body(body, arrays["embedding"], tokens)


def embeddings_body(body: EmbeddingsRequest, vectors: np.ndarray, tokens: int) -> bytes:
    """An OpenAI embeddings answer: one ``embedding`` object per input, floats or base64."""
    data: list[dict[str, Any]] = []
    for i, row in enumerate(vectors):
        value: Any
        if body.encoding_format == "base64":
            value = base64.b64encode(row.astype("<f4").tobytes()).decode("ascii")
        else:
            value = row
        data.append({"object": "embedding", "index": i, "embedding": value})
    return list_reply(body.model, data, tokens)


async def v2_infer(call: V2Call) -> dict[str, np.ndarray]:
    return dict((await submit_v2_texts(call)).arrays)


TASK = ServeTask(
    name="feature-extraction",
    runner="modelmora.serve.runners.text:EmbeddingRunner",
    endpoint="POST /v1/embeddings",
    v2_infer=v2_infer,
    batching=TextRows(),
    routes={
        "/v1/embeddings": JsonRoute(
            EmbeddingsRequest, embeddings_reply, "Create embeddings of texts (and of images)"
        )
    },
)
