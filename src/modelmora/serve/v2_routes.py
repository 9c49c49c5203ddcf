"""KServe v2 / Open Inference Protocol routes (what ``tritonclient.http`` speaks).

What ``infer`` takes and returns is the model's task's business (``serve.tasks``): text
models take one ``BYTES`` input named ``text`` (shape ``[n]`` or ``[n, 1]``); embedding models
answer ``embedding`` (FP32 ``[n, dim]``), classifiers ``label`` (BYTES), ``scores`` and
``logits``; ``tensor`` models take and return their ONNX graph's own tensors. Request
``parameters.priority`` (larger = sooner) and ``parameters.timeout`` (microseconds, as
Triton) override the model's defaults.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from modelmora import __version__
from modelmora.serve.errors import BadRequest
from modelmora.serve.ipc import ModelInfo
from modelmora.serve.params import parse_priority, parse_timeout_ms
from modelmora.serve.state import ServeState
from modelmora.serve.tasks.base import V2Call
from modelmora.serve.v2codec import InferRequest, decode_request, encode_response
from modelmora.serve.wire import dumps

__all__ = ["router"]

router = APIRouter(prefix="/v2", tags=["v2"])


def _state(request: Request) -> ServeState:
    state: ServeState = request.app.state.serve
    return state


def _json(doc: Any, status: int = 200) -> Response:
    return Response(
        content=dumps(doc),
        status_code=status,
        media_type="application/json",
    )


def _check_version(version: str | None) -> None:
    if version not in (None, "1"):
        raise BadRequest(f"model version {version!r} does not exist: every model has version '1'")


@router.get("", summary="Server metadata")
async def server_metadata() -> Response:
    return _json({"name": "modelmora", "version": __version__, "extensions": ["model_repository"]})


@router.get("/health/live", summary="Liveness (always open, no API key)")
async def live() -> Response:
    return _json({"live": True})


@router.get("/health/ready", summary="Readiness: start-up (and --preload) done, not stopping")
async def ready(request: Request) -> Response:
    ok = _state(request).ready
    return _json({"ready": ok}, 200 if ok else 503)


def _metadata(name: str, info: ModelInfo) -> dict[str, Any]:
    def tensors(specs: Any) -> list[dict[str, Any]]:
        return [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in specs]

    return {
        "name": name,
        "versions": ["1"],
        "platform": "onnxruntime_onnx",
        "inputs": tensors(info.inputs),
        "outputs": tensors(info.outputs),
    }


@router.get("/models/{model}", summary="Model metadata (loads the model once if never loaded)")
async def model_metadata(model: str, request: Request) -> Response:
    return await _metadata_response(model, None, request)


@router.get("/models/{model}/versions/{version}", summary="Model metadata for a version")
async def model_version_metadata(model: str, version: str, request: Request) -> Response:
    return await _metadata_response(model, version, request)


async def _metadata_response(model: str, version: str | None, request: Request) -> Response:
    state = _state(request)
    with state.observe(model, "v2_metadata"):
        state.model(model)
        _check_version(version)
        return _json(_metadata(model, await state.pool.info(model)))


@router.get("/models/{model}/ready", summary="200 while the model's worker is loaded")
async def model_ready(model: str, request: Request) -> Response:
    state = _state(request)
    state.model(model)
    ok = state.pool.is_loaded(model)
    return _json({"name": model, "ready": ok}, 200 if ok else 503)


@router.get("/models/{model}/versions/{version}/ready", summary="Readiness for a version")
async def model_version_ready(model: str, version: str, request: Request) -> Response:
    _check_version(version)
    return await model_ready(model, request)


_INFER_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": InferRequest.model_json_schema()}},
    }
}


@router.post("/models/{model}/infer", summary="Inference", openapi_extra=_INFER_DOC)
async def infer(model: str, request: Request) -> Response:
    return await _infer(model, None, request)


@router.post(
    "/models/{model}/versions/{version}/infer",
    summary="Inference on a version",
    openapi_extra=_INFER_DOC,
)
async def infer_version(model: str, version: str, request: Request) -> Response:
    return await _infer(model, version, request)


def _header_length(request: Request) -> int | None:
    raw = request.headers.get("inference-header-content-length")
    if raw is None:
        return None
    if not raw.strip().isdigit():
        raise BadRequest(f"Inference-Header-Content-Length must be an integer, got {raw!r}")
    return int(raw)


async def _infer(model: str, version: str | None, request: Request) -> Response:
    state = _state(request)
    with state.observe(model, "v2_infer"):
        served = state.model(model)
        _check_version(version)
        if request.headers.get("content-encoding", "identity") not in ("identity", ""):
            raise BadRequest("compressed request bodies are not supported; send it uncompressed")
        body = await request.body()
        req, tensors = decode_request(body, _header_length(request))
        params = req.parameters or {}
        priority = parse_priority(params.get("priority"), "parameters.priority")
        timeout_us = parse_timeout_ms(params.get("timeout"), "parameters.timeout")
        timeout_s = None if timeout_us is None else timeout_us / 1000.0  # µs, as Triton
        call = V2Call(state, model, tensors, priority, timeout_s)
        outputs = await served.serve_task.v2_infer(call)
        body_out, headers = encode_response(model_name=model, request=req, outputs=outputs)
        return Response(content=body_out, headers=headers)


@router.post("/repository/index", summary="Models and their state")
async def repository_index(request: Request) -> Response:
    state = _state(request)
    return _json(
        [
            {
                "name": n,
                "version": "1",
                "state": "READY" if state.pool.is_loaded(n) else "UNAVAILABLE",
                "reason": "",
            }
            for n in sorted(state.models)
        ]
    )


@router.post("/repository/models/{model}/load", summary="Load the model now")
async def load_model(model: str, request: Request) -> Response:
    return await _repository_action(model, request, "load")


@router.post(
    "/repository/models/{model}/unload",
    summary="Unload the model once its running batch is done (a later request reloads it)",
)
async def unload_model(model: str, request: Request) -> Response:
    return await _repository_action(model, request, "unload")


async def _repository_action(model: str, request: Request, action: str) -> Response:
    state = _state(request)
    with state.observe(model, f"v2_{action}"):
        state.model(model)
        await (state.pool.load(model) if action == "load" else state.pool.unload(model))
        return _json({})
