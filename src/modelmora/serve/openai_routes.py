"""OpenAI-compatible routes every model shares: ``/v1/models``.

Each task's own endpoints (``/v1/embeddings``, ``/v1/classify``, …) live in its module under
``modelmora.serve.tasks``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from modelmora.serve.state import ServeState
from modelmora.serve.wire import dumps

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["openai"])


def _state(request: Request) -> ServeState:
    state: ServeState = request.app.state.serve
    return state


def _json(doc: dict[str, Any]) -> Response:
    return Response(content=dumps(doc), media_type="application/json")


def _model_entry(state: ServeState, name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": state.started_at, "owned_by": "modelmora"}


@router.get("/models", summary="List served models (OpenAI format)")
async def list_models(request: Request) -> Response:
    state = _state(request)
    return _json({"object": "list", "data": [_model_entry(state, n) for n in sorted(state.models)]})


@router.get("/models/{model}", summary="Describe one served model (OpenAI format)")
async def get_model(model: str, request: Request) -> Response:
    state = _state(request)
    state.model(model)
    return _json(_model_entry(state, model))
