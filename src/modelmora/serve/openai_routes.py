"""OpenAI-compatible routes: ``/v1/embeddings``, ``/v1/models`` and ``/v1/classify``.

``/v1/classify`` is ModelMora's own (OpenAI has no classification endpoint); it follows the
same conventions (``model``, ``input`` string or list, ``usage``). Labels come from the
model's ``config.json`` ``id2label``. The same models answer v2 ``infer`` with a ``label``
output, for clients that speak the Open Inference Protocol.
"""

from __future__ import annotations

import base64
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Header, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from modelmora.serve.errors import BadRequest
from modelmora.serve.state import ServeState, parse_priority, parse_timeout_ms
from modelmora.serve.wire import dumps

__all__ = [
    "ClassifyRequest",
    "EmbeddingsRequest",
    "classify_reply",
    "embeddings_reply",
    "router",
]

router = APIRouter(prefix="/v1", tags=["openai"])

_MAX_INPUTS = 2048
TextInput = Annotated[str, Field(max_length=1_000_000)]


class EmbeddingsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, description="A served model name (see GET /v1/models).")
    input: TextInput | Annotated[list[TextInput], Field(min_length=1, max_length=_MAX_INPUTS)]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, description="Not supported: must be omitted.")
    user: str | None = None


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    input: TextInput | Annotated[list[TextInput], Field(min_length=1, max_length=_MAX_INPUTS)]
    top_k: int | None = Field(
        None, ge=1, description="How many labels per input in `scores` (default: all)."
    )


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


async def _run_texts(
    state: ServeState,
    model: str,
    task: str,
    texts: list[str],
    priority: str | None,
    timeout_ms: str | None,
) -> tuple[dict[str, np.ndarray], int]:
    served = state.model(model)
    if served.task != task:
        raise BadRequest(
            f"model {model!r} is a {served.task} model; "
            + (
                "use POST /v1/classify"
                if served.task == "text-classification"
                else "use POST /v1/embeddings"
                if served.task == "feature-extraction"
                else "use POST /v2/models/{model}/infer"
            )
        )
    result = await state.schedulers[model].submit(
        rows=len(texts),
        texts=texts,
        priority=parse_priority(priority, "X-Priority"),
        timeout_s=parse_timeout_ms(timeout_ms, "X-Timeout-Ms"),
    )
    tokens = int(result.tokens.sum()) if result.tokens is not None else 0
    return result.arrays, tokens


async def embeddings_reply(
    state: ServeState, body: EmbeddingsRequest, x_priority: str | None, x_timeout_ms: str | None
) -> bytes:
    """The JSON body of a successful ``/v1/embeddings`` answer; failures raise ServeError."""
    with state.observe(body.model, "embeddings"):
        if body.dimensions is not None:
            raise BadRequest("`dimensions` is not supported: omit it to get the model's full size")
        texts = [body.input] if isinstance(body.input, str) else body.input
        arrays, tokens = await _run_texts(
            state, body.model, "feature-extraction", texts, x_priority, x_timeout_ms
        )
        vectors = arrays["embedding"]
        data: list[dict[str, Any]] = []
        for i, row in enumerate(vectors):
            value: Any
            if body.encoding_format == "base64":
                value = base64.b64encode(row.astype("<f4").tobytes()).decode("ascii")
            else:
                value = row
            data.append({"object": "embedding", "index": i, "embedding": value})
        return dumps(
            {
                "object": "list",
                "data": data,
                "model": body.model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )


async def classify_reply(
    state: ServeState, body: ClassifyRequest, x_priority: str | None, x_timeout_ms: str | None
) -> bytes:
    """The JSON body of a successful ``/v1/classify`` answer; failures raise ServeError."""
    with state.observe(body.model, "classify"):
        texts = [body.input] if isinstance(body.input, str) else body.input
        arrays, tokens = await _run_texts(
            state, body.model, "text-classification", texts, x_priority, x_timeout_ms
        )
        info = state.pool.cached_info(body.model)
        labels = list(info.labels or ()) if info else []
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
        return dumps(
            {
                "object": "list",
                "data": data,
                "model": body.model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )


# The routes below are what OpenAPI documents and what answers requests the app's hot lane
# hands over (bodies it could not validate, non-JSON content types): see ServeApp.
@router.post("/embeddings", summary="Create embeddings (OpenAI-compatible)")
async def embeddings(
    body: EmbeddingsRequest,
    request: Request,
    x_priority: Annotated[str | None, Header()] = None,
    x_timeout_ms: Annotated[str | None, Header()] = None,
) -> Response:
    reply = await embeddings_reply(_state(request), body, x_priority, x_timeout_ms)
    return Response(content=reply, media_type="application/json")


@router.post("/classify", summary="Classify texts (labels from the model's id2label)")
async def classify(
    body: ClassifyRequest,
    request: Request,
    x_priority: Annotated[str | None, Header()] = None,
    x_timeout_ms: Annotated[str | None, Header()] = None,
) -> Response:
    reply = await classify_reply(_state(request), body, x_priority, x_timeout_ms)
    return Response(content=reply, media_type="application/json")
