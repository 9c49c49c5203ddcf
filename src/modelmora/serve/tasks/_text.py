"""What the text tasks share: BYTES ``text`` inputs in v2, and the run through the queue."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
from pydantic import AfterValidator, Field

from modelmora.imaging import is_image_data_url
from modelmora.serve.batching import ItemResult
from modelmora.serve.errors import BadRequest, PayloadTooLarge
from modelmora.serve.params import parse_priority, parse_timeout_ms
from modelmora.serve.tasks.base import V2Call
from modelmora.serve.wire import dumps

if TYPE_CHECKING:
    from modelmora.serve.state import ServeState

__all__ = [
    "MAX_INPUTS",
    "MAX_TEXT_CHARS",
    "TextOrImage",
    "list_reply",
    "openai_call",
    "run_texts",
    "submit_rows",
    "submit_v2_texts",
    "texts_from_v2",
]

MAX_INPUTS = 2048
"""Texts one request may hold (OpenAI's own limit for embeddings)."""
MAX_TEXT_CHARS = 100_000
"""Characters per text: far past any encoder's context (it truncates to its maximum
length), small enough that one text cannot keep the tokenizer busy for seconds."""
MAX_IMAGE_URL_CHARS = 12 * 1024 * 1024
"""Characters per image data URL: about 9 MB of encoded image (the body limit caps the total)."""


def _text_or_image(value: str) -> str:
    if len(value) > MAX_TEXT_CHARS and not is_image_data_url(value):
        raise ValueError(
            f"a text may hold at most {MAX_TEXT_CHARS} characters (this one has {len(value)})"
        )
    return value


TextOrImage = Annotated[
    str,
    Field(
        max_length=MAX_IMAGE_URL_CHARS,
        description=f"A text (at most {MAX_TEXT_CHARS} characters) or, for image models, an "
        "image as a data URL (data:image/png;base64,…; PNG, JPEG or WebP).",
    ),
    AfterValidator(_text_or_image),
]


def texts_from_v2(tensors: dict[str, np.ndarray]) -> list[str]:
    if set(tensors) != {"text"}:
        raise BadRequest(
            f"text models take exactly one BYTES input named 'text' (got {sorted(tensors)})"
        )
    arr = tensors["text"]
    if arr.dtype != np.object_:
        raise BadRequest("input 'text' must have datatype BYTES")
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1 or arr.shape[0] == 0:
        raise BadRequest(
            f"input 'text' must have shape [n] or [n, 1] with n ≥ 1, got {list(arr.shape)}"
        )
    if arr.shape[0] > MAX_INPUTS:
        raise PayloadTooLarge(
            f"input 'text' has {arr.shape[0]} rows; a request may hold at most {MAX_INPUTS}"
        )
    try:
        texts = [item.decode("utf-8") for item in arr]
    except UnicodeDecodeError:
        raise BadRequest("input 'text' holds bytes that are not UTF-8") from None
    longest = max(len(t) for t in texts)
    if longest > MAX_TEXT_CHARS:
        raise PayloadTooLarge(
            f"input 'text' has a text of {longest} characters; at most {MAX_TEXT_CHARS} each"
        )
    return texts


async def submit_v2_texts(call: V2Call) -> ItemResult:
    """A v2 ``infer`` of a text task: its BYTES ``text`` input through the model's queue."""
    return await submit_rows(call, texts_from_v2(call.tensors))


async def submit_rows(call: V2Call, rows: list[Any]) -> ItemResult:
    """``rows`` (texts, images: one row each) through the model's queue, as ``call`` asks."""
    return await call.state.schedulers[call.model].submit(
        rows=len(rows), payload=rows, priority=call.priority, timeout_s=call.timeout_s
    )


def openai_call(
    state: ServeState, model: str, priority: str | None, timeout_ms: str | None
) -> V2Call:
    """An OpenAI-style request's model, ``X-Priority`` and ``X-Timeout-Ms``, as a task call."""
    return V2Call(
        state,
        model,
        {},
        parse_priority(priority, "X-Priority"),
        parse_timeout_ms(timeout_ms, "X-Timeout-Ms"),
    )


async def run_texts(
    state: ServeState,
    model: str,
    task: str,
    texts: list[str],
    priority: str | None,
    timeout_ms: str | None,
) -> tuple[dict[str, np.ndarray], int]:
    """Texts through ``model``'s queue for an OpenAI-style route of ``task``: outputs, tokens."""
    state.require_task(model, task)
    if any(is_image_data_url(t) for t in texts):
        raise BadRequest(f"model {model!r} takes text; images need an image model")
    result = await submit_rows(openai_call(state, model, priority, timeout_ms), texts)
    tokens = int(result.tokens.sum()) if result.tokens is not None else 0
    return result.arrays, tokens


def list_reply(model: str, data: list[dict[str, Any]], tokens: int) -> bytes:
    """An OpenAI-style list answer with its ``usage`` (embeddings, classifications)."""
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return dumps({"object": "list", "data": data, "model": model, "usage": usage})
