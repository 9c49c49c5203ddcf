"""The one table of tasks: what a model is for, as every stage names and detects it.

A task is named once here, with the synonyms people and registries write for it and the
``config.json`` architecture suffixes that imply it. Conversion, validation, benchmarking
and serving each keep their own per-task behaviour (``serve.tasks``, the validate and bench
dispatch tables) keyed by these names, so adding a task is one row here plus one module per
stage that treats it differently (docs/architecture.md, "How to add a task").
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["TASKS", "TaskInfo", "known", "normalize", "task_from_architectures"]


@dataclass(frozen=True)
class TaskInfo:
    name: str
    """The exporter's (optimum's) name for the task; everything else keys on it."""
    aliases: tuple[str, ...] = ()
    """Registry pipeline tags and manifest synonyms that mean this task."""
    architectures: tuple[str, ...] = ()
    """Suffixes of ``config.json`` ``architectures`` class names that imply this task."""
    generative: bool = False
    """Produces tokens step by step (validated by greedy decoding, benchmarked in tokens/s)."""


TASKS: tuple[TaskInfo, ...] = (
    TaskInfo(
        "feature-extraction",
        aliases=("sentence-similarity", "sentence-embeddings", "embeddings", "default"),
    ),
    TaskInfo(
        "text-classification",
        aliases=("sequence-classification", "sentiment-analysis", "zero-shot-classification"),
        architectures=("ForSequenceClassification",),
    ),
    TaskInfo("token-classification", aliases=("ner",), architectures=("ForTokenClassification",)),
    TaskInfo("question-answering", architectures=("ForQuestionAnswering",)),
    TaskInfo("fill-mask", aliases=("masked-lm",), architectures=("ForMaskedLM",)),
    TaskInfo(
        "text-generation",
        aliases=("causal-lm",),
        architectures=("ForCausalLM", "LMHeadModel"),
        generative=True,
    ),
    TaskInfo("multiple-choice", architectures=("ForMultipleChoice",)),
    TaskInfo("image-classification", architectures=("ForImageClassification",)),
    TaskInfo(
        "zero-shot-image-classification",
        aliases=("image-text-embedding", "image-feature-extraction-with-text"),
        architectures=("CLIPModel", "SiglipModel"),
    ),
    TaskInfo("text-to-image", aliases=("stable-diffusion", "image-generation")),
    TaskInfo("audio-classification", architectures=("ForAudioClassification",)),
    TaskInfo("semantic-segmentation", architectures=("ForSemanticSegmentation",)),
    TaskInfo("object-detection", architectures=("ForObjectDetection",)),
    TaskInfo("text2text-generation", aliases=("seq2seq-lm", "summarization", "translation")),
    TaskInfo("tensor"),
)
"""Order matters for detection: the first task whose suffix matches an architecture wins."""

_BY_NAME = {t.name: t for t in TASKS}
_ALIASES = {alias: t.name for t in TASKS for alias in t.aliases}


def normalize(task: str) -> str:
    """A task name or synonym → the task's name (unknown names come back stripped, as is)."""
    task = task.strip()
    return _ALIASES.get(task, task)


def known(task: str) -> TaskInfo | None:
    return _BY_NAME.get(normalize(task))


def task_from_architectures(architectures: Iterable[str]) -> str | None:
    """``…ForCausalLM`` → ``text-generation``; a bare ``…Model`` → ``feature-extraction``."""
    for arch in architectures:
        for task in TASKS:
            if any(arch.endswith(suffix) for suffix in task.architectures):
                return task.name
        if arch.endswith("Model") and "For" not in arch:
            return "feature-extraction"
    return None
