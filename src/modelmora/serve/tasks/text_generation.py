"""``text-generation``: OpenAI chat/completions and KServe v2 generate, streamed or not.

The router renders the chat template (sandboxed Jinja, the model's own template), tokenizes,
checks the context, and admits the request (``serve.admission``); the worker generates with
continuous batching (``serve.runners.generation``) and streams text back. Streaming is
Server-Sent Events in OpenAI's chunk format ending with ``data: [DONE]``; a failure after
the first token becomes an SSE ``error`` event (the status line is already sent).

Deadlines (``X-Timeout-Ms`` / v2 ``parameters.timeout``): before the first token → 504;
after it, generation ends with what was produced, ``finish_reason: "length"`` and (not
streaming) the header ``X-Modelmora-Deadline: exceeded``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modelmora.serve.errors import BadRequest, DeadlineExceeded, ServeError
from modelmora.serve.ipc import Generate
from modelmora.serve.params import next_before, parse_priority, parse_timeout_ms
from modelmora.serve.sse import DONE, EventStream, event
from modelmora.serve.tasks.base import JsonRoute, ServeTask, V2Call
from modelmora.serve.wire import dumps

if TYPE_CHECKING:
    from modelmora.serve.state import ServeState

__all__ = ["TASK", "ChatCompletionRequest", "CompletionRequest"]

DEADLINE_HEADER = "X-Modelmora-Deadline"
_MAX_TEXT = 1_000_000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextPart(_Strict):
    type: Literal["text"]
    text: Annotated[str, Field(max_length=_MAX_TEXT)]


class ChatMessage(_Strict):
    role: Literal["system", "user", "assistant"]
    content: (
        Annotated[str, Field(max_length=_MAX_TEXT)]
        | Annotated[list[TextPart], Field(min_length=1, max_length=64)]
    )
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(_Strict):
    include_usage: bool = False


Stop = Annotated[str, Field(min_length=1, max_length=256)]


class _Sampling(_Strict):
    model: str = Field(min_length=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0, description="Extension: sample among the k likeliest (0 = all).")
    seed: int | None = Field(None, ge=-(2**63), lt=2**64)
    stop: Stop | Annotated[list[Stop], Field(max_length=4)] | None = None
    n: Literal[1] = Field(1, description="Only 1 choice per request is supported.")
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    ignore_eos: bool = Field(
        False, description="Extension (as vLLM): never stop at end-of-sequence."
    )

    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


class ChatCompletionRequest(_Sampling):
    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=1024)]
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False


class CompletionRequest(_Sampling):
    prompt: Annotated[str, Field(min_length=1, max_length=_MAX_TEXT)]
    max_tokens: int = Field(16, ge=1)
    logprobs: int | None = Field(None, ge=0, le=0, description="0: the chosen token's logprob.")


# -- the model's text side in the router: tokenizer, chat template, context ------------------


@dataclass(frozen=True)
class _Frontend:
    tokenizer: Any
    template: Any | None
    template_source: str
    special: dict[str, str]
    context: int

    def encode(self, text: str, *, add_special_tokens: bool) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids)


def _special(value: Any) -> str:
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else ""


@functools.lru_cache(maxsize=64)
def _frontend(artifact_dir: Path) -> _Frontend:
    """Loaded once per artifact (immutable, content-addressed) and kept for the server's life."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    from tokenizers import Tokenizer

    from modelmora.decoding import DEFAULT_CONTEXT, context_length

    def read(name: str) -> dict[str, Any]:
        path = artifact_dir / name
        data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        return data if isinstance(data, dict) else {}

    tok_config = read("tokenizer_config.json")
    source = "chat_template.jinja"
    text: Any = None
    if (artifact_dir / source).is_file():
        text = (artifact_dir / source).read_text(encoding="utf-8")
    else:
        source, text = "tokenizer_config.json chat_template", tok_config.get("chat_template")
        if isinstance(text, list):  # named templates: [{"name": "default", "template": ...}]
            named = {t.get("name"): t.get("template") for t in text if isinstance(t, dict)}
            text = named.get("default")
    template = None
    if isinstance(text, str) and text:

        def raise_exception(message: str) -> None:
            raise BadRequest(f"the chat template refused the messages: {message}")

        env = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
        )
        env.globals["raise_exception"] = raise_exception
        env.globals["strftime_now"] = lambda fmt: time.strftime(fmt)
        template = env.from_string(text)
    return _Frontend(
        tokenizer=Tokenizer.from_file(str(artifact_dir / "tokenizer.json")),
        template=template,
        template_source=source,
        special={
            "bos_token": _special(tok_config.get("bos_token")),
            "eos_token": _special(tok_config.get("eos_token")),
        },
        context=context_length(read("config.json")) or DEFAULT_CONTEXT,
    )


def _chat_prompt(name: str, artifact_dir: Path, messages: list[ChatMessage]) -> list[int]:
    front = _frontend(artifact_dir)
    if front.template is None:
        raise BadRequest(
            f"model {name!r} has no chat template: neither {artifact_dir / 'chat_template.jinja'}"
            f" nor a chat_template in {artifact_dir / 'tokenizer_config.json'}; use "
            "POST /v1/completions with a prompt instead"
        )
    from jinja2 import TemplateError

    try:
        prompt = front.template.render(
            messages=[{"role": m.role, "content": m.text()} for m in messages],
            add_generation_prompt=True,
            **front.special,
        )
    except TemplateError as exc:
        raise BadRequest(f"model {name!r}: its chat template failed: {exc}") from None
    return front.encode(prompt, add_special_tokens=False)


# -- one generation through the queue and the worker ---------------------------------------


@dataclass
class _Result:
    text: str = ""
    finish_reason: str = "length"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    deadline_hit: bool = False
    logprobs: list[tuple[str, float]] | None = None


@dataclass(frozen=True)
class _Job:
    model: str
    body: Generate
    priority: int | None
    timeout_s: float | None

    @property
    def prompt_tokens(self) -> int:
        return len(self.body.prompt_ids)


def _job(
    state: ServeState,
    model: str,
    prompt_ids: list[int],
    sampling: _Sampling,
    max_tokens: int | None,
    *,
    logprobs: bool,
    priority: int | None,
    timeout_s: float | None,
) -> _Job:
    served = state.model(model)
    front = _frontend(served.artifact_dir)
    limit = min(front.context, served.serve.max_context or front.context)
    tokens = max_tokens if max_tokens is not None else limit - len(prompt_ids)
    if not prompt_ids:
        raise BadRequest("the prompt is empty after tokenization")
    if tokens < 1 or len(prompt_ids) + tokens > limit:
        raise BadRequest(
            f"the prompt ({len(prompt_ids)} tokens) + max_tokens ({tokens}) = "
            f"{len(prompt_ids) + tokens} tokens exceed model {model!r}'s maximum context of "
            f"{limit} tokens; shorten the prompt or lower max_tokens"
        )
    seed = sampling.seed if sampling.seed is None else sampling.seed % (2**64)
    return _Job(
        model=model,
        body=Generate(
            prompt_ids=prompt_ids,
            max_tokens=tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k,
            seed=seed,
            stop=sampling.stops(),
            logprobs=logprobs,
            ignore_eos=sampling.ignore_eos,
        ),
        priority=priority,
        timeout_s=timeout_s,
    )


async def _events(state: ServeState, job: _Job) -> AsyncGenerator[dict[str, Any], None]:
    """The worker's chunks for ``job``; the last one carries ``finish_reason`` and usage."""
    metrics, model = state.metrics, job.model
    started = time.perf_counter()
    deadline = None if job.timeout_s is None else time.monotonic() + job.timeout_s
    info = await state.pool.info(model)
    cost = (job.prompt_tokens + job.body.max_tokens) * (info.kv_bytes_per_token or 0)
    admission = state.admissions[model]
    produced = 0
    async with (
        admission.slot(priority=job.priority, cost=cost, deadline=deadline),
        state.pool.lease(model) as worker,
    ):
        stream = worker.stream(job.body)
        last = started
        # Once per request, not per token: each .labels() call takes a lock and a lookup.
        # (Tokens, batch sizes and the KV cache are observed per worker step, by the pool.)
        inter_token = metrics.inter_token_seconds.labels(model)
        try:
            while True:
                try:
                    reply = await next_before(stream, deadline)
                except StopAsyncIteration:
                    return
                except asyncio.TimeoutError:
                    if produced == 0:
                        metrics.dropped.labels(model, "deadline").inc()
                        raise DeadlineExceeded(
                            f"no token from model {model!r} within the "
                            f"{(job.timeout_s or 0) * 1000:g} ms deadline"
                        ) from None
                    yield {
                        "text": "",
                        "finish_reason": "length",
                        "deadline": True,
                        "prompt_tokens": job.prompt_tokens,
                        "completion_tokens": produced,
                    }
                    return
                if not isinstance(reply, dict):
                    raise ServeError(f"model {model!r} answered {type(reply).__name__}")
                now = time.perf_counter()
                if produced == 0:
                    metrics.ttft_seconds.labels(model).observe(now - started)
                else:
                    inter_token.observe(now - last)
                last = now
                produced += 1
                yield reply
                if "finish_reason" in reply:
                    return
        finally:
            await stream.aclose()


async def _collect(state: ServeState, job: _Job) -> _Result:
    result = _Result(prompt_tokens=job.prompt_tokens, logprobs=[] if job.body.logprobs else None)
    parts: list[str] = []
    async for data in _events(state, job):
        parts.append(data.get("text", ""))
        if result.logprobs is not None and "logprob" in data:
            result.logprobs.append((data.get("token", ""), data["logprob"]))
        if "finish_reason" in data:
            result.finish_reason = data["finish_reason"]
            result.completion_tokens = data["completion_tokens"]
            result.deadline_hit = bool(data.get("deadline"))
    result.text = "".join(parts)
    return result


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _usage_chunk(head: dict[str, Any], include: bool) -> Any:
    """The final chunk ``stream_options.include_usage`` asks for (none without it)."""

    def usage(data: dict[str, Any]) -> dict[str, Any] | None:
        if not include:
            return None
        usage = _usage(data["prompt_tokens"], data["completion_tokens"])
        return {**head, "choices": [], "usage": usage}

    return usage


def _error_event(exc: BaseException) -> bytes:
    if isinstance(exc, ServeError):
        message, code = exc.message, exc.code
    else:
        message, code = "internal server error", "internal_error"
    return event(
        {"error": {"message": message, "type": "server_error", "param": None, "code": code}}
    )


async def _start(
    state: ServeState, job: _Job
) -> tuple[AsyncGenerator[dict[str, Any], None], dict[str, Any] | None]:
    """Run ``job`` up to its first chunk, so failures before it are real HTTP errors."""
    events = _events(state, job)
    try:
        first = await anext(events)
    except StopAsyncIteration:
        return events, None
    return events, first


def _streaming(
    events: AsyncGenerator[dict[str, Any], None],
    first: dict[str, Any] | None,
    chunk: Any,
    final_usage: Any,
) -> EventStream:
    """SSE: ``chunk(data)`` per worker chunk, ``final_usage(data)`` after the last, [DONE]."""

    async def body() -> AsyncGenerator[bytes, None]:
        data = first
        try:
            while data is not None:
                for doc in chunk(data):
                    yield event(doc)
                if "finish_reason" in data:
                    usage = final_usage(data)
                    if usage is not None:
                        yield event(usage)
                    break
                data = await anext(events, None)
        except Exception as exc:  # the worker died or failed after the first token
            yield _error_event(exc)
        finally:
            await events.aclose()
        yield DONE

    return EventStream(body())


def _headers(result: _Result) -> dict[str, str]:
    return {DEADLINE_HEADER: "exceeded"} if result.deadline_hit else {}


async def chat_reply(
    state: ServeState, body: ChatCompletionRequest, x_priority: str | None, x_timeout_ms: str | None
) -> bytes | Response:
    """``POST /v1/chat/completions``: messages through the model's chat template."""
    with state.observe(body.model, "chat_completions"):
        served = state.require_task(body.model, "text-generation")
        job = _job(
            state,
            body.model,
            _chat_prompt(body.model, served.artifact_dir, body.messages),
            body,
            body.max_completion_tokens or body.max_tokens,
            logprobs=body.logprobs,
            priority=parse_priority(x_priority, "X-Priority"),
            timeout_s=parse_timeout_ms(x_timeout_ms, "X-Timeout-Ms"),
        )
        rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        head = {
            "id": rid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": body.model,
        }
        if body.stream:
            events, first = await _start(state, job)
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            role_sent = False

            def chunk(data: dict[str, Any]) -> list[dict[str, Any]]:
                nonlocal role_sent
                docs = []
                delta: dict[str, Any] = {"content": data.get("text", "")}
                if not role_sent:
                    delta["role"], role_sent = "assistant", True
                if delta["content"] or "role" in delta or "finish_reason" not in data:
                    choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": None}
                    if job.body.logprobs and "logprob" in data:
                        choice["logprobs"] = {"content": [_logprob(data)]}
                    docs.append({**head, "choices": [choice]})
                if "finish_reason" in data:
                    docs.append(
                        {
                            **head,
                            "choices": [
                                {"index": 0, "delta": {}, "finish_reason": data["finish_reason"]}
                            ],
                        }
                    )
                return docs

            return _streaming(events, first, chunk, _usage_chunk(head, include_usage))
        result = await _collect(state, job)
        message: dict[str, Any] = {"role": "assistant", "content": result.text}
        choice: dict[str, Any] = {
            "index": 0,
            "message": message,
            "finish_reason": result.finish_reason,
            "logprobs": None,
        }
        if result.logprobs is not None:
            choice["logprobs"] = {
                "content": [
                    {"token": t, "logprob": lp, "top_logprobs": []} for t, lp in result.logprobs
                ]
            }
        doc = {
            "id": rid,
            "object": "chat.completion",
            "created": created,
            "model": body.model,
            "choices": [choice],
            "usage": _usage(result.prompt_tokens, result.completion_tokens),
        }
        return Response(dumps(doc), media_type="application/json", headers=_headers(result))


def _logprob(data: dict[str, Any]) -> dict[str, Any]:
    return {"token": data.get("token", ""), "logprob": data["logprob"], "top_logprobs": []}


async def completion_reply(
    state: ServeState, body: CompletionRequest, x_priority: str | None, x_timeout_ms: str | None
) -> bytes | Response:
    """``POST /v1/completions``: a raw prompt (the tokenizer adds its own special tokens)."""
    with state.observe(body.model, "completions"):
        served = state.require_task(body.model, "text-generation")
        prompt_ids = _frontend(served.artifact_dir).encode(body.prompt, add_special_tokens=True)
        job = _job(
            state,
            body.model,
            prompt_ids,
            body,
            body.max_tokens,
            logprobs=body.logprobs is not None,
            priority=parse_priority(x_priority, "X-Priority"),
            timeout_s=parse_timeout_ms(x_timeout_ms, "X-Timeout-Ms"),
        )
        rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        head = {"id": rid, "object": "text_completion", "created": created, "model": body.model}
        if body.stream:
            events, first = await _start(state, job)
            include_usage = bool(body.stream_options and body.stream_options.include_usage)

            def chunk(data: dict[str, Any]) -> list[dict[str, Any]]:
                finish = data.get("finish_reason")  # one chunk per token, as vLLM: real timing
                choice = {
                    "index": 0,
                    "text": data.get("text", ""),
                    "finish_reason": finish,
                    "logprobs": None,
                }
                return [{**head, "choices": [choice]}]

            return _streaming(events, first, chunk, _usage_chunk(head, include_usage))
        result = await _collect(state, job)
        logprobs = None
        if result.logprobs is not None:
            logprobs = {
                "tokens": [t for t, _ in result.logprobs],
                "token_logprobs": [lp for _, lp in result.logprobs],
                "top_logprobs": None,
                "text_offset": None,
            }
        doc = {
            "id": rid,
            "object": "text_completion",
            "created": created,
            "model": body.model,
            "choices": [
                {
                    "index": 0,
                    "text": result.text,
                    "finish_reason": result.finish_reason,
                    "logprobs": logprobs,
                }
            ],
            "usage": _usage(result.prompt_tokens, result.completion_tokens),
        }
        return Response(dumps(doc), media_type="application/json", headers=_headers(result))


# -- KServe v2 generate extension (what Triton's generate endpoint speaks) -----------------

router = APIRouter(prefix="/v2", tags=["v2"])


class V2Parameters(BaseModel):
    model_config = ConfigDict(extra="allow")

    max_tokens: int = Field(16, ge=1)
    temperature: float = Field(0.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0)
    seed: int | None = None
    stop: Stop | Annotated[list[Stop], Field(max_length=4)] | None = None
    priority: int | None = None
    timeout: float | None = Field(None, description="Microseconds, as Triton.")


class V2GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    text_input: Annotated[str, Field(min_length=1, max_length=_MAX_TEXT)]
    parameters: V2Parameters = V2Parameters()


async def _v2_job(state: ServeState, model: str, request: Request) -> _Job:
    served = state.require_task(model, "text-generation")
    try:
        body = V2GenerateRequest.model_validate_json(await request.body())
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
        )
        raise BadRequest(f"invalid generate request: {problems}") from None
    p = body.parameters
    sampling = _Sampling(
        model=model,
        temperature=p.temperature,
        top_p=p.top_p,
        top_k=p.top_k,
        seed=p.seed,
        stop=p.stop,
    )
    timeout_us = parse_timeout_ms(p.timeout, "parameters.timeout")
    return _job(
        state,
        model,
        _frontend(served.artifact_dir).encode(body.text_input, add_special_tokens=True),
        sampling,
        p.max_tokens,
        logprobs=False,
        priority=parse_priority(p.priority, "parameters.priority"),
        timeout_s=None if timeout_us is None else timeout_us / 1000.0,
    )


@router.post("/models/{model}/generate", summary="Generate text (KServe v2 generate extension)")
async def v2_generate(model: str, request: Request) -> Response:
    state: ServeState = request.app.state.serve
    with state.observe(model, "v2_generate"):
        job = await _v2_job(state, model, request)
        result = await _collect(state, job)
        doc = {
            "model_name": model,
            "model_version": "1",
            "text_output": result.text,
            "finish_reason": result.finish_reason,
        }
        return Response(dumps(doc), media_type="application/json", headers=_headers(result))


@router.post("/models/{model}/generate_stream", summary="Generate text as Server-Sent Events")
async def v2_generate_stream(model: str, request: Request) -> Response:
    state: ServeState = request.app.state.serve
    with state.observe(model, "v2_generate_stream"):
        job = await _v2_job(state, model, request)
        events, first = await _start(state, job)

        def chunk(data: dict[str, Any]) -> list[dict[str, Any]]:
            doc: dict[str, Any] = {
                "model_name": model,
                "model_version": "1",
                "text_output": data.get("text", ""),
            }
            if "finish_reason" in data:
                doc["finish_reason"] = data["finish_reason"]
            return [doc] if doc["text_output"] or "finish_reason" in doc else []

        return _streaming(events, first, chunk, lambda data: None)


async def v2_infer(call: V2Call) -> dict[str, np.ndarray]:
    raise BadRequest(
        f"model {call.model!r} generates text: use POST /v2/models/{call.model}/generate "
        "(or /v1/chat/completions, /v1/completions)"
    )


TASK = ServeTask(
    name="text-generation",
    runner="modelmora.serve.runners.generation:GenerationRunner",
    endpoint="POST /v1/chat/completions or POST /v1/completions",
    v2_infer=v2_infer,
    batching=None,  # the worker batches continuously; the router admits (serve.admission)
    routes={
        "/v1/chat/completions": JsonRoute(
            ChatCompletionRequest, chat_reply, "Create a chat completion (OpenAI-compatible)"
        ),
        "/v1/completions": JsonRoute(
            CompletionRequest, completion_reply, "Create a completion (OpenAI-compatible)"
        ),
    },
    router=router,
)
