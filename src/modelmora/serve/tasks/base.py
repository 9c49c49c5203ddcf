"""What one served task provides: its worker runner, batching, routes and v2 behaviour."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from modelmora.serve.batching import BatchPolicy

if TYPE_CHECKING:
    from fastapi import APIRouter
    from pydantic import BaseModel

    from modelmora.serve.state import ServeState

__all__ = ["HotRoute", "ServeTask", "V2Infer"]

HotRoute = tuple[
    "type[BaseModel]", Callable[["ServeState", Any, "str | None", "str | None"], Awaitable[bytes]]
]
"""``(request schema, reply(state, body, x_priority, x_timeout_ms) → JSON bytes)`` for a
route the app answers without FastAPI's machinery (see ``serve.app.ServeApp``)."""

V2Infer = Callable[
    ["ServeState", str, dict[str, np.ndarray], "int | None", "float | None"],
    Awaitable[dict[str, np.ndarray]],
]
"""``(state, model, input tensors, priority, timeout_s) → output tensors`` for v2 ``infer``."""


@dataclass(frozen=True)
class ServeTask:
    name: str
    """A name from ``modelmora.tasks``."""
    runner: str
    """``module:Class`` of the worker-side runner (imported only in the worker process)."""
    endpoint: str
    """Where this task's requests go, for the hint a request to the wrong endpoint gets."""
    v2_infer: V2Infer
    batching: BatchPolicy
    """How requests share a worker call (see ``serve.batching``)."""
    needs_tokenizer: bool = True
    router: APIRouter | None = None
    """The task's own HTTP routes (OpenAI-style), included in the app."""
    hot_routes: Mapping[str, HotRoute] = field(default_factory=dict)
