"""The table of served tasks: one module per task, each exporting a ``TASK``.

Every serve-side decision that depends on what a model is for (which worker runner loads it,
how its requests batch, which HTTP routes answer it, what v2 ``infer`` takes and returns)
is looked up here instead of being written as an if-chain. A task known to
``modelmora.tasks`` but not served here is served as ``tensor`` (its raw ONNX graph).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modelmora import tasks
from modelmora.errors import UserInputError
from modelmora.serve.errors import BadRequest
from modelmora.serve.tasks import (
    feature_extraction,
    image_classification,
    image_text,
    tensor,
    text_classification,
    text_generation,
    text_to_image,
)
from modelmora.serve.tasks.base import JsonReply, JsonRoute, ServeTask

if TYPE_CHECKING:
    from modelmora.serve.state import ServeState

__all__ = ["SERVE_TASKS", "ServeTask", "json_routes", "serve_task", "served_as"]

SERVE_TASKS: dict[str, ServeTask] = {
    t.name: t
    for t in (
        feature_extraction.TASK,
        text_classification.TASK,
        image_classification.TASK,
        image_text.TASK,
        text_generation.TASK,
        text_to_image.TASK,
        tensor.TASK,
    )
}


def json_routes() -> dict[str, JsonRoute]:
    """Every task's JSON routes by path. Several tasks may answer one path (``/v1/classify``
    for text and images, ``/v1/embeddings`` for text and image-text models) with one request
    schema; the requested model's task picks the reply."""
    owners: dict[str, list[JsonRoute]] = {}
    for task in SERVE_TASKS.values():
        for path, route in task.routes.items():
            owners.setdefault(path, []).append(route)
    routes = {}
    for path, declared in owners.items():
        if len({r.schema for r in declared}) != 1:
            raise TypeError(f"tasks declare {path} with different request schemas")
        routes[path] = JsonRoute(declared[0].schema, _by_model_task(path), declared[0].summary)
    return routes


def _by_model_task(path: str) -> JsonReply:
    async def reply(state: ServeState, body: Any, priority: str | None, timeout: str | None) -> Any:
        served = state.model(body.model)
        route = served.serve_task.routes.get(path)
        if route is None:
            raise BadRequest(
                f"model {body.model!r} serves {served.task}; use {served.serve_task.endpoint}"
            )
        return await route.reply(state, body, priority, timeout)

    return reply


def serve_task(name: str) -> ServeTask:
    try:
        return SERVE_TASKS[tasks.normalize(name)]
    except KeyError:
        raise UserInputError(
            f"task {name!r} cannot be served", hint=f"served tasks: {', '.join(SERVE_TASKS)}"
        ) from None


def served_as(task: str | None) -> str:
    """The serve task for an artifact converted for ``task`` (unknown → ``tensor``)."""
    name = tasks.normalize(task) if task else "tensor"
    return name if name in SERVE_TASKS else "tensor"
