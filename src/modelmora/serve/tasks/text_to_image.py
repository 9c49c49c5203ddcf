"""``text-to-image``: OpenAI ``POST /v1/images/generations`` on a diffusion pipeline.

Request: ``prompt``, ``n``, ``size`` (the pipeline's native square, or a size listed in
``serve.image_sizes``), ``response_format: b64_json``; extensions ``seed`` (same seed, same
images), ``steps`` (at most ``serve.max_steps``), ``guidance_scale`` and
``negative_prompt``. The router checks the prompt against the text encoder's context (400
naming both lengths) and *admits* the request: one generation runs in the worker at a time,
the rest wait by priority (429 when the queue is full). The worker reports every denoising
step, which the router turns into progress metrics; a deadline (``X-Timeout-Ms``) or a
client that leaves cancels the generation within a step (504 once it passed).
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from modelmora.diffusion import DiffusionConfig, DiffusionError, PromptTokenizer
from modelmora.serve.errors import BadRequest, DeadlineExceeded, ServeError
from modelmora.serve.ipc import GenerateImages, Output
from modelmora.serve.params import next_before, parse_priority, parse_timeout_ms
from modelmora.serve.tasks.base import JsonRoute, ServeTask, V2Call
from modelmora.serve.wire import dumps

if TYPE_CHECKING:
    from modelmora.serve.config import ServedModel
    from modelmora.serve.state import ServeState

__all__ = ["TASK", "ImagesRequest", "images_reply"]

MAX_PROMPT_CHARS = 10_000
"""Characters per prompt: far past any text encoder's context (checked in tokens after)."""


class ImagesRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    n: int = Field(1, ge=1, description="Images to generate (at most serve.max_images).")
    size: str | None = Field(
        None, description="WIDTHxHEIGHT: the model's native square (default) or a listed size."
    )
    response_format: Literal["b64_json", "url"] = "b64_json"
    quality: str | None = Field(None, description="Accepted for compatibility; no effect.")
    style: str | None = Field(None, description="Accepted for compatibility; no effect.")
    user: str | None = None
    seed: int | None = Field(None, ge=0, lt=2**63, description="Same seed, same images.")
    steps: int | None = Field(None, ge=1, description="Denoising steps [25].")
    guidance_scale: float = Field(7.5, ge=0, le=100)
    negative_prompt: str | None = Field(None, max_length=MAX_PROMPT_CHARS)


DEFAULT_STEPS = 25


@lru_cache(maxsize=64)
def _pipeline(artifact_dir: Path) -> tuple[DiffusionConfig, PromptTokenizer]:
    config = DiffusionConfig.read(artifact_dir)
    return config, PromptTokenizer(artifact_dir, config.max_tokens)


def sizes(served: ServedModel, config: DiffusionConfig) -> list[str]:
    """The sizes a model generates: its native square first, then ``serve.image_sizes``."""
    native = f"{config.native_size}x{config.native_size}"
    return [native, *(s for s in served.serve.image_sizes or () if s != native)]


def _request(served: ServedModel, body: ImagesRequest) -> GenerateImages:
    """The worker's job for ``body``, or a 400 naming the field that is out of bounds."""
    if body.response_format != "b64_json":
        raise BadRequest("response_format: only b64_json is served (no image hosting)")
    limits = served.serve
    if body.n > limits.images_limit:
        raise BadRequest(f"n: at most {limits.images_limit} images per request (serve.max_images)")
    steps = body.steps or min(DEFAULT_STEPS, limits.steps_limit)
    if steps > limits.steps_limit:
        raise BadRequest(f"steps: at most {limits.steps_limit} (serve.max_steps), got {steps}")
    try:
        config, tokenizer = _pipeline(served.artifact_dir)
        prompt = tokenizer.encode(body.prompt)
        negative = None
        if body.guidance_scale > 1:
            negative = tokenizer.encode(body.negative_prompt or "", what="negative_prompt")
    except DiffusionError as exc:
        raise BadRequest(str(exc)) from None
    allowed = sizes(served, config)
    size = body.size or allowed[0]
    if size not in allowed:
        raise BadRequest(f"size: {size!r} is not served by this model; sizes: {', '.join(allowed)}")
    width, height = (int(v) for v in size.split("x"))
    if width % config.vae_scale or height % config.vae_scale:
        raise BadRequest(f"size: {size} is not a multiple of {config.vae_scale} pixels")
    seed = secrets.randbits(63) if body.seed is None else body.seed
    return GenerateImages(prompt, negative, body.n, height, width, steps, body.guidance_scale, seed)


async def images_reply(
    state: ServeState, body: ImagesRequest, x_priority: str | None, x_timeout_ms: str | None
) -> bytes:
    """The JSON body of a successful ``/v1/images/generations`` answer."""
    with state.observe(body.model, "images"):
        served = state.require_task(body.model, "text-to-image")
        job = _request(served, body)
        timeout = parse_timeout_ms(x_timeout_ms, "X-Timeout-Ms")
        images = await _generate(
            state, body.model, job, parse_priority(x_priority, "X-Priority"), timeout
        )
        data = [{"b64_json": base64.b64encode(png).decode("ascii")} for png in images]
        return dumps({"created": int(time.time()), "data": data})


async def _generate(
    state: ServeState,
    model: str,
    job: GenerateImages,
    priority: int | None,
    timeout_s: float | None,
) -> list[bytes]:
    metrics = state.metrics
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    async with (
        state.admissions[model].slot(priority=priority, cost=0, deadline=deadline),
        state.pool.lease(model) as worker,
    ):
        started = time.perf_counter()
        progress, steps = (
            metrics.image_progress.labels(model),
            metrics.denoising_steps.labels(model),
        )
        stream = worker.stream(job)
        done = 0
        try:
            while True:
                try:
                    reply = await next_before(stream, deadline)
                except asyncio.TimeoutError:
                    metrics.dropped.labels(model, "deadline").inc()
                    raise DeadlineExceeded(
                        f"the {(timeout_s or 0) * 1000:g} ms deadline passed after "
                        f"{done} of {job.steps} denoising steps"
                    ) from None
                if isinstance(reply, dict):  # a progress chunk
                    done = int(reply["done"])
                    progress.set(done / job.steps)
                    steps.inc()
                    continue
                if isinstance(reply, Output):
                    metrics.image_seconds.labels(model).observe(time.perf_counter() - started)
                    return [bytes(b) for b in reply.arrays["images"]]
                raise ServeError(f"model {model!r} answered {type(reply).__name__}")
        finally:
            progress.set(0)
            await stream.aclose()


async def v2_infer(call: V2Call) -> dict[str, np.ndarray]:
    raise BadRequest(f"model {call.model!r} generates images: use POST /v1/images/generations")


TASK = ServeTask(
    name="text-to-image",
    runner="modelmora.serve.runners.diffusion:DiffusionRunner",
    endpoint="POST /v1/images/generations",
    v2_infer=v2_infer,
    batching=None,  # one generation at a time in the worker; the router admits
    needs_tokenizer=False,
    model_file="unet/model.onnx",
    admission_limit=1,
    routes={
        "/v1/images/generations": JsonRoute(
            ImagesRequest, images_reply, "Generate images from a prompt (OpenAI Images API)"
        )
    },
)
