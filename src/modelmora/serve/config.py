"""What the server serves and how it runs: validated once at start-up, frozen afterwards."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from modelmora.backends import PROVIDERS
from modelmora.errors import UserInputError
from modelmora.manifest.model import Backend, ServeSpec, parse_duration

__all__ = ["PROVIDERS", "ServedModel", "ServerSettings", "Task", "detect_task"]

Task = Literal["feature-extraction", "text-classification", "tensor"]
"""``feature-extraction``: text in, pooled sentence vectors out (OpenAI embeddings, v2).
``text-classification``: text in, labels from ``config.json`` ``id2label`` out.
``tensor``: any ONNX graph, numeric tensors in and out (v2 only)."""

_TASK_ALIASES = {
    "sentence-similarity": "feature-extraction",
    "sentence-embeddings": "feature-extraction",
    "embeddings": "feature-extraction",
    "sequence-classification": "text-classification",
}


_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


class ServedModel(BaseModel):
    """One model the server can load: an artifact directory holding ONNX + tokenizer files."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_NAME)
    artifact_dir: Path
    onnx_file: str = "model.onnx"
    task: Task
    backend: Backend = "cpu"
    serve: ServeSpec = ServeSpec()
    threads: int = Field(0, ge=0)
    """ONNX Runtime intra-op threads; 0 = ORT's default (one per physical core)."""
    spin: bool = True
    """Let idle ORT intra-op threads busy-wait for the next parallel section (ORT's default).
    Measured with MiniLM on 2 cores (docs/benchmarks.md): 1 ms less per single-sentence
    request and a third more throughput than with spinning off, router and load generator
    included. Turn it off when many busy models share few cores."""

    @field_validator("task", mode="before")
    @classmethod
    def _alias(cls, v: Any) -> Any:
        return _TASK_ALIASES.get(v, v) if isinstance(v, str) else v

    @property
    def onnx_path(self) -> Path:
        return self.artifact_dir / self.onnx_file

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
        if self.task != "tensor" and not (self.artifact_dir / "tokenizer.json").is_file():
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


def detect_task(artifact_dir: Path) -> Task:
    """Guess the task from the snapshot's files (an explicit ``task`` always wins).

    Not from the model's name (GPUX's mistake): ``config.json`` architectures say
    ``...ForSequenceClassification`` for classifiers; any other snapshot with a
    ``tokenizer.json`` is served as a text embedding model; the rest as plain tensors.
    """
    cfg_file = artifact_dir / "config.json"
    if cfg_file.is_file():
        try:
            cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise UserInputError(f"{cfg_file} is not valid JSON: {exc}") from exc
        archs = cfg.get("architectures") or [] if isinstance(cfg, dict) else []
        if any(str(a).endswith("ForSequenceClassification") for a in archs):
            return "text-classification"
    if (artifact_dir / "tokenizer.json").is_file():
        return "feature-extraction"
    return "tensor"
