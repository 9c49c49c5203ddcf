"""What the server serves and how it runs: validated once at start-up, frozen afterwards."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from modelmora import tasks
from modelmora.backends import PROVIDERS
from modelmora.cache.filecheck import FileDigest
from modelmora.errors import UserInputError
from modelmora.layout import MODEL_NAME_PATTERN
from modelmora.manifest.model import Backend, ServeSpec, parse_duration
from modelmora.serve.tasks import SERVE_TASKS, ServeTask, served_as

__all__ = ["PROVIDERS", "ServedModel", "ServerSettings", "detect_task"]


_NAME = MODEL_NAME_PATTERN


class ServedModel(BaseModel):
    """One model the server can load: an artifact directory holding ONNX + tokenizer files."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_NAME)
    artifact_dir: Path
    onnx_file: str | None = None
    """The graph the worker loads first [the task's: ``model.onnx``, ``unet/model.onnx``]."""
    task: str
    """A served task (``modelmora.serve.tasks``), or a synonym of one."""
    backend: Backend = "cpu"
    serve: ServeSpec = ServeSpec()
    files: tuple[FileDigest, ...] = ()
    """The artifact's files as install recorded them; a worker checks them before loading."""
    store_root: Path | None = None
    """The store the artifact is in (its stat cache makes that check a stat per file)."""
    threads: int = Field(0, ge=0)
    """ONNX Runtime intra-op threads; 0 = ORT's default (one per physical core)."""
    spin: bool | None = None
    """Let idle ORT intra-op threads busy-wait for the next parallel section; None = the
    task's default (docs/benchmarks.md, measured on 2 cores with router and load generator):
    on for encoders (ORT's default: 1 ms less per single-sentence request, a third more
    throughput), off for text generation (a decode step is short and the router answers every
    step, so spinning threads took the core the router needed). Turn it off when many busy
    models share few cores."""

    @field_validator("task", mode="before")
    @classmethod
    def _served_task(cls, v: Any) -> Any:
        if not isinstance(v, str):
            return v
        name = tasks.normalize(v)
        if name not in SERVE_TASKS:
            raise ValueError(f"Input should be one of {', '.join(map(repr, SERVE_TASKS))}")
        return name

    @property
    def serve_task(self) -> ServeTask:
        return SERVE_TASKS[self.task]

    @property
    def model_file(self) -> str:
        return self.onnx_file or self.serve_task.model_file

    @property
    def onnx_path(self) -> Path:
        return self.artifact_dir / self.model_file

    @property
    def provider(self) -> str:
        return PROVIDERS[self.backend]

    @property
    def keep_alive_s(self) -> float:
        """Idle seconds before unloading; negative = never."""
        return parse_duration(self.serve.keep_alive)

    def check_files(self) -> None:
        """Fail early, naming the file, instead of on the first request."""
        if not self.artifact_dir.is_dir():
            raise UserInputError(f"model {self.name!r}: {self.artifact_dir} is not a directory")
        if not self.onnx_path.is_file():
            raise UserInputError(
                f"model {self.name!r}: {self.onnx_path} does not exist",
                hint="point --model NAME=DIR at a directory holding model.onnx "
                "(or set NAME.onnx_file=...)",
            )
        if self.serve_task.needs_tokenizer and not (self.artifact_dir / "tokenizer.json").is_file():
            raise UserInputError(
                f"model {self.name!r}: task {self.task} needs "
                f"{self.artifact_dir / 'tokenizer.json'}, which does not exist"
            )


class ServerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    api_key: SecretStr | None = None
    max_loaded_models: int | None = Field(None, ge=1)
    memory_budget_mb: float | None = Field(None, gt=0)
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    preload: tuple[str, ...] = ()
    load_timeout_s: float = Field(300, gt=0)
    graceful_timeout_s: float = Field(30, gt=0)
    """How long shutdown waits for in-flight requests before stopping workers anyway."""
    header_timeout_s: float = Field(10, gt=0)
    """Request line and headers must arrive within this (408 after; slow-loris guard)."""
    body_timeout_s: float = Field(60, gt=0)
    """A request body must arrive within this of its headers (408 after)."""
    max_header_bytes: int = Field(64 * 1024, ge=1024)
    """Request line plus headers larger than this get 431."""
    max_connections: int = Field(1024, ge=1)
    """Open connections (and requests in flight) beyond this get 503."""


def detect_task(artifact_dir: Path) -> str:
    """Guess the task from the artifact's files (an explicit ``task`` always wins).

    Not from the model's name (GPUX's mistake): ``config.json`` architectures name the task
    (``...ForSequenceClassification`` → classifier); a directory whose architecture names no
    served task but has a ``tokenizer.json`` is served as a text embedding model; the rest
    as plain tensors.
    """
    if (artifact_dir / "model_index.json").is_file():
        return "text-to-image"  # a diffusers pipeline, one directory per graph
    cfg_file = artifact_dir / "config.json"
    if cfg_file.is_file():
        try:
            cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise UserInputError(f"{cfg_file} is not valid JSON: {exc}") from exc
        archs = cfg.get("architectures") if isinstance(cfg, dict) else None
        task = tasks.task_from_architectures(map(str, archs if isinstance(archs, list) else []))
        if task is not None and served_as(task) not in ("tensor", "feature-extraction"):
            return served_as(task)
    if (artifact_dir / "tokenizer.json").is_file():
        return "feature-extraction"
    return "tensor"
