"""The HTTP app: routes, API-key check, body limit, error rendering, metrics, lifespan.

Errors are rendered in the caller's protocol: OpenAI's ``{"error": {"message", "type",
"code"}}`` under ``/v1`` and the v2 ``{"error": "..."}`` elsewhere. Serve must never import
torch; ``tests/serve/test_no_torch.py`` holds it to that.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import FastAPI, Header, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelmora import __version__
from modelmora.serve import openai_routes, v2_routes
from modelmora.serve.config import ServedModel, ServerSettings
from modelmora.serve.docs import add_docs
from modelmora.serve.errors import ServeError
from modelmora.serve.state import ServeState
from modelmora.serve.tasks import SERVE_TASKS, json_routes
from modelmora.serve.tasks.base import JsonRoute
from modelmora.serve.wire import dumps

__all__ = ["ServeApp", "create_app"]

log = logging.getLogger("modelmora.serve")

OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready"})


def _error_body(path: str, status: int, message: str, code: str) -> bytes:
    if path.startswith("/v1"):
        kind = "invalid_request_error" if status < 500 else "server_error"
        doc: dict[str, Any] = {
            "error": {"message": message, "type": kind, "param": None, "code": code}
        }
    else:
        doc = {"error": message}
    return dumps(doc)


def _error_response(
    path: str, status: int, message: str, code: str, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(
        content=_error_body(path, status, message, code),
        status_code=status,
        media_type="application/json",
        headers=dict(headers or {}),
    )


_RawHeaders = list[tuple[bytes, bytes]]


async def _send_json(send: Send, status: int, body: bytes, extra: _RawHeaders) -> None:
    """A whole JSON response straight through ASGI, for the paths that bypass FastAPI."""
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """Pure ASGI: bearer API key (constant-time compare) and request body limit (413)."""

    def __init__(self, app: ASGIApp, *, api_key: str | None, max_body_bytes: int) -> None:
        self.app = app
        self.api_key = api_key.encode("utf-8") if api_key else None
        self.max_body = max_body_bytes

    async def _reject(
        self, send: Send, path: str, status: int, message: str, code: str, extra: _RawHeaders
    ) -> None:
        await _send_json(send, status, _error_body(path, status, message, code), extra)

    async def _too_large(self, send: Send, path: str) -> None:
        await self._reject(
            send,
            path,
            413,
            f"request body larger than the {self.max_body}-byte limit",
            "body_too_large",
            [(b"connection", b"close")],
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        headers = dict(scope["headers"])
        if self.api_key is not None and path not in OPEN_PATHS:
            scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self.api_key):
                await self._reject(
                    send,
                    path,
                    401,
                    "missing or wrong API key: send 'Authorization: Bearer <key>'",
                    "invalid_api_key",
                    [(b"www-authenticate", b"Bearer")],
                )
                return
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
            await self._too_large(send, path)
            return
        received = 0
        started = rejected = False

        async def limited_receive() -> Message:
            # Bodies without Content-Length are counted as they stream. Past the limit the
            # client gets 413 at once and the app sees a disconnect; what it answers then is
            # dropped (frameworks turn read errors into 400, which would hide the cause).
            nonlocal received, rejected
            if rejected:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body and not started:
                    rejected = True
                    await self._too_large(send, path)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if rejected:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, limited_receive, guarded_send)


_HOT_ROUTES: dict[str, JsonRoute] = json_routes()


def _endpoint(route: JsonRoute) -> Callable[..., Awaitable[Response]]:
    """The FastAPI endpoint of a task's JSON route: what OpenAPI documents, and what answers
    the requests the hot lane hands over (bodies it could not validate, other content types)."""

    async def endpoint(
        body: Any, request: Request, x_priority: Any = None, x_timeout_ms: Any = None
    ) -> Response:
        reply = await route.reply(request.app.state.serve, body, x_priority, x_timeout_ms)
        if isinstance(reply, Response):
            return reply
        return Response(content=reply, media_type="application/json")

    # Real objects, not the strings this module's annotations are: FastAPI reads them.
    endpoint.__annotations__ = {
        "body": route.schema,
        "request": Request,
        "x_priority": Annotated[str | None, Header()],
        "x_timeout_ms": Annotated[str | None, Header()],
        "return": Response,
    }
    return endpoint


class ServeApp(FastAPI):
    """FastAPI, except that valid JSON posts to the OpenAI endpoints skip its machinery.

    Routing, dependency solving and FastAPI's own middlewares cost more CPU per request than
    the rest of the router's path to the worker, and every single-sentence request pays them.
    So :meth:`__call__` validates those bodies with the same pydantic models and calls the
    same reply functions as the routes directly. Anything else, including a body that does
    not validate, goes through FastAPI unchanged (the body is replayed), so error answers
    and the OpenAPI schema stay FastAPI's. :class:`Guard` fronts both paths.
    """

    def __init__(self, *, guard: Callable[[ASGIApp], ASGIApp], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._front = guard(self._dispatch)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._front(scope, receive, send)

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        hot = _HOT_ROUTES.get(scope["path"]) if scope["type"] == "http" else None
        if hot is None or scope["method"] != "POST":
            await super().__call__(scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        headers = dict(scope["headers"])
        schema, reply = hot.schema, hot.reply
        request: BaseModel | None = None
        media_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if media_type == b"application/json":  # media types are case-insensitive
            with contextlib.suppress(ValidationError):
                request = schema.model_validate_json(body)
        if request is None:
            await super().__call__(scope, _replay(bytes(body), receive), send)
            return
        state: ServeState = self.state.serve
        priority, timeout = _header(headers, b"x-priority"), _header(headers, b"x-timeout-ms")
        status, extra = 200, {}
        content: bytes | Response
        try:
            content = await reply(state, request, priority, timeout)
        except ServeError as exc:
            status, extra = exc.status, exc.headers
            content = _error_body(scope["path"], exc.status, exc.message, exc.code)
        except Exception:
            log.exception("unexpected error answering %s", scope["path"])
            status = 500
            content = _error_body(scope["path"], 500, "internal server error", "internal_error")
        if isinstance(content, Response):  # a stream, or an answer with its own headers
            await content(scope, receive, send)
            return
        raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()]
        await _send_json(send, status, content, raw)


def _header(headers: Mapping[bytes, bytes], name: bytes) -> str | None:
    value = headers.get(name)
    return None if value is None else value.decode("latin-1")


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands FastAPI the body the hot lane already read, then the
    connection's own messages (a streamed answer listens there for the client leaving)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def create_app(
    settings: ServerSettings,
    models: Mapping[str, ServedModel],
    *,
    on_ready: Callable[[], Awaitable[None] | None] | None = None,
) -> ServeApp:
    """The ASGI app; workers start lazily (or at start-up for ``settings.preload``)."""
    state = ServeState(settings, models)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            await state.start()
        except ServeError as exc:
            log.error("start-up failed: %s", exc.message)
            await state.stop()
            raise
        if on_ready is not None:
            result = on_ready()
            if result is not None:
                await result
        try:
            yield
        finally:
            await state.stop()

    api_key = settings.api_key.get_secret_value() if settings.api_key else None
    app = ServeApp(
        guard=lambda inner: Guard(inner, api_key=api_key, max_body_bytes=settings.max_body_bytes),
        title="ModelMora serve",
        version=__version__,
        lifespan=lifespan,
        description="OpenAI-compatible embeddings/classification and KServe v2 inference.",
        docs_url=None,
        redoc_url=None,
    )
    add_docs(app)
    app.state.serve = state

    @app.exception_handler(ServeError)
    async def _serve_error(request: Request, exc: ServeError) -> Response:
        return _error_response(request.url.path, exc.status, exc.message, exc.code, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
            problems.append(f"{loc}: {err.get('msg', 'invalid')}")
        message = "invalid request: " + "; ".join(problems[:10])
        return _error_response(request.url.path, 422, message, "invalid_request")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = "not_found" if exc.status_code == 404 else "http_error"
        return _error_response(
            request.url.path, exc.status_code, str(exc.detail), code, exc.headers
        )

    @app.get("/metrics", summary="Prometheus metrics", tags=["metrics"])
    async def metrics() -> Response:
        body, content_type = state.metrics.render()
        return Response(content=body, media_type=content_type)

    app.include_router(openai_routes.router)
    for path, route in _HOT_ROUTES.items():
        app.add_api_route(
            path, _endpoint(route), methods=["POST"], summary=route.summary, tags=["openai"]
        )
    for task in SERVE_TASKS.values():
        if task.router is not None:
            app.include_router(task.router)
    app.include_router(v2_routes.router)
    return app
