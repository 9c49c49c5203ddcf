"""The table of served tasks: one module per task, each exporting a ``TASK``.

Every serve-side decision that depends on what a model is for (which worker runner loads it,
how its requests batch, which HTTP routes answer it, what v2 ``infer`` takes and returns)
is looked up here instead of being written as an if-chain. A task known to
``modelmora.tasks`` but not served here is served as ``tensor`` (its raw ONNX graph).
"""

from __future__ import annotations

from modelmora import tasks
from modelmora.errors import UserInputError
from modelmora.serve.tasks import (
    feature_extraction,
    tensor,
    text_classification,
    text_generation,
)
from modelmora.serve.tasks.base import ServeTask

__all__ = ["SERVE_TASKS", "ServeTask", "serve_task", "served_as"]

SERVE_TASKS: dict[str, ServeTask] = {
    t.name: t
    for t in (feature_extraction.TASK, text_classification.TASK, text_generation.TASK, tensor.TASK)
}


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
