"""What the text tasks share: BYTES ``text`` inputs in v2, and the run through the queue."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
from pydantic import Field

from modelmora.serve.batching import ItemResult
from modelmora.serve.errors import BadRequest, PayloadTooLarge
from modelmora.serve.params import parse_priority, parse_timeout_ms
from modelmora.serve.wire import dumps

if TYPE_CHECKING:
    from modelmora.serve.state import ServeState
    from modelmora.serve.tasks.base import V2Call

__all__ = [
    "MAX_INPUTS",
    "MAX_TEXT_CHARS",
    "TextInput",
    "list_reply",
    "run_texts",
    "submit_v2_texts",
    "texts_from_v2",
]

MAX_INPUTS = 2048
"""Texts one request may hold (OpenAI's own limit for embeddings)."""
MAX_TEXT_CHARS = 100_000
"""Characters per text: far past any encoder's context (it truncates to its maximum
length), small enough that one text cannot keep the tokenizer busy for seconds."""
TextInput = Annotated[str, Field(max_length=MAX_TEXT_CHARS)]


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
    texts = texts_from_v2(call.tensors)
    return await submit_texts(call.state, call.model, texts, call.priority, call.timeout_s)


async def submit_texts(
    state: ServeState, model: str, texts: list[str], priority: int | None, timeout_s: float | None
) -> ItemResult:
    return await state.schedulers[model].submit(
        rows=len(texts), payload=texts, priority=priority, timeout_s=timeout_s
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
    result = await submit_texts(
        state,
        model,
        texts,
        parse_priority(priority, "X-Priority"),
        parse_timeout_ms(timeout_ms, "X-Timeout-Ms"),
    )
    tokens = int(result.tokens.sum()) if result.tokens is not None else 0
    return result.arrays, tokens


def list_reply(model: str, data: list[dict[str, Any]], tokens: int) -> bytes:
    """An OpenAI-style list answer with its ``usage`` (embeddings, classifications)."""
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return dumps({"object": "list", "data": data, "model": model, "usage": usage})
