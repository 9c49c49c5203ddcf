"""What one served task provides: its worker runner, batching, routes and v2 behaviour."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from modelmora.serve.batching import BatchPolicy

if TYPE_CHECKING:
    from fastapi import APIRouter, Response
    from pydantic import BaseModel

    from modelmora.serve.state import ServeState

__all__ = ["JsonReply", "JsonRoute", "ServeTask", "V2Call", "V2Infer"]

JsonReply = Callable[["ServeState", Any, "str | None", "str | None"], Awaitable["bytes | Response"]]
"""``reply(state, validated body, X-Priority, X-Timeout-Ms)`` → JSON bytes (200), or a whole
response (streams, extra headers); raises ``ServeError`` for failures."""


@dataclass(frozen=True)
class V2Call:
    """One v2 ``infer`` request as a task sees it: decoded input tensors, the priority and
    the deadline (``parameters.priority`` / ``parameters.timeout``)."""

    state: ServeState
    model: str
    tensors: dict[str, np.ndarray]
    priority: int | None
    timeout_s: float | None


V2Infer = Callable[[V2Call], Awaitable[dict[str, np.ndarray]]]
"""A task's v2 ``infer``: output tensors for a :class:`V2Call`."""


@dataclass(frozen=True)
class JsonRoute:
    """A ``POST`` route taking a JSON body: documented and served by FastAPI, and answered by
    the app's hot lane without FastAPI's machinery when the body validates
    (``serve.app.ServeApp``): the same schema and reply function either way."""

    schema: type[BaseModel]
    reply: JsonReply
    summary: str


@dataclass(frozen=True)
class ServeTask:
    name: str
    """A name from ``modelmora.tasks``."""
    runner: str
    """``module:Class`` of the worker-side runner (imported only in the worker process)."""
    endpoint: str
    """Where this task's requests go, for the hint a request to the wrong endpoint gets."""
    v2_infer: V2Infer
    batching: BatchPolicy | None
    """How requests share a worker call (see ``serve.batching``); ``None``: the worker batches
    itself and the router only admits requests (``serve.admission``)."""
    needs_tokenizer: bool = True
    model_file: str = "model.onnx"
    """The graph a worker of this task loads first, inside the artifact directory."""
    admission_limit: int | None = None
    """Tasks without router batching: requests running in the worker at once (None:
    ``serve.max_sequences``; text-to-image runs one at a time)."""
    routes: Mapping[str, JsonRoute] = field(default_factory=dict)
    """The task's own HTTP routes by path (OpenAI-style, under ``/v1``)."""
    router: APIRouter | None = None
    """Further routes (with path parameters, e.g. v2 ``generate``)."""
