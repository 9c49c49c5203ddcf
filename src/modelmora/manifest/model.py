"""The schema of ``modelmora.yml``.

Only ``source`` is required per model; every other field has a default documented in
``docs/manifest.md``. All models forbid unknown keys so that a typo (``atoll:``) is an
error with a location instead of a silently ignored setting.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from modelmora.imaging import DEFAULT_MAX_IMAGE_PIXELS
from modelmora.layout import MODEL_NAME_PATTERN

_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_duration(value: str | int | float) -> float:
    """``10m``, ``1h30m``, ``45s``, ``0`` or a number of seconds → seconds. ``-1`` = forever."""
    if isinstance(value, int | float):
        return float(value)
    text = value.strip()
    if re.fullmatch(r"-?\d+(\.\d+)?", text):
        return float(text)
    m = _DURATION.fullmatch(text)
    if not text or not m:
        raise ValueError(f"invalid duration {value!r}: use e.g. '30s', '10m', '1h30m' or seconds")
    h, mi, s = (int(g) if g else 0 for g in m.groups())
    return float(h * 3600 + mi * 60 + s)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class FilesSpec(_Strict):
    include: list[str] | None = None
    """Glob patterns (fnmatch). ``None`` = the source's default (see docs/sources.md)."""
    exclude: list[str] = []


Backend = Literal["cpu", "cuda", "tensorrt", "openvino", "coreml", "directml", "rocm"]


class ConvertSpec(_Strict):
    opset: int = Field(18, ge=7, le=23)
    optimize: Literal["none", "basic", "extended", "all"] = "none"
    quantize: Literal["none", "dynamic-int8", "weight-int4"] = "none"
    """``dynamic-int8``: int8 weights and activations (``quantize_dynamic``); ``weight-int4``:
    4-bit weights in blocks of 32, float activations (``MatMulNBits``, for decoders)."""
    exporter: Literal["auto", "optimum", "torch", "torch-dynamo", "tf2onnx", "onnx"] = "auto"


class ValidateSpec(_Strict):
    atol: float = Field(1.0e-4, gt=0)
    rtol: float = Field(1.0e-3, ge=0)
    min_cosine: float = Field(0.999, ge=-1, le=1)
    """Minimum cosine similarity per output row (embeddings)."""
    int8_atol: float = Field(0.1, gt=0)
    int8_min_cosine: float = Field(0.98, ge=-1, le=1)
    # Text generation (None = the default in brackets; unset fields stay out of the lock).
    new_tokens: int | None = Field(None, ge=1, le=4096)
    """Greedy tokens generated per fixed prompt; ids must equal PyTorch's [16]."""
    quantized_min_top1: float | None = Field(None, ge=0, le=1)
    """Quantized variants: share of teacher-forced positions (decoders) or test images (image
    classifiers) whose top-1 matches the reference [0.9]."""
    quantized_max_ppl_ratio: float | None = Field(None, ge=1)
    """Quantized decoders: perplexity on a fixed text / the reference's, at most [1.2]."""

    @property
    def generation_new_tokens(self) -> int:
        return self.new_tokens or 16

    @property
    def min_top1(self) -> float:
        return 0.9 if self.quantized_min_top1 is None else self.quantized_min_top1

    @property
    def max_ppl_ratio(self) -> float:
        return self.quantized_max_ppl_ratio or 1.2


DEFAULT_BENCHMARK_SECONDS = 20.0
"""``benchmark.max_seconds`` when unset."""


class BenchmarkSpec(_Strict):
    batch_sizes: list[Annotated[int, Field(ge=1)]] = [1, 8, 32]
    seq_len: int = Field(128, ge=1)
    warmup: int = Field(3, ge=0)
    iterations: int = Field(20, ge=1)
    max_seconds: float | None = Field(None, gt=0)
    """Time budget per artifact and backend [20]: once spent, each batch size still left is
    measured with a few iterations only (the record says so)."""
    # Text generation (None = the default in brackets; unset fields stay out of the lock).
    prompt_tokens: int | None = Field(None, ge=1)
    """Prompt length of the generation benchmark [32]."""
    new_tokens: int | None = Field(None, ge=2)
    """Tokens generated per sequence [32]."""
    sequences: list[Annotated[int, Field(ge=1)]] | None = None
    """Concurrent sequences decoded together [1, 4, 16]."""

    @property
    def budget_s(self) -> float:
        return self.max_seconds or DEFAULT_BENCHMARK_SECONDS

    @property
    def generation(self) -> tuple[int, int, list[int]]:
        """``(prompt tokens, new tokens, sequences)`` with the defaults filled in."""
        return (self.prompt_tokens or 32, self.new_tokens or 32, self.sequences or [1, 4, 16])


class ServeSpec(_Strict):
    max_batch_size: int = Field(32, ge=1)
    max_queue_delay_ms: float = Field(5, ge=0)
    max_queue_size: int = Field(256, ge=1)
    priority: int = 0
    keep_alive: str = "10m"
    priority_aging_ms: float | None = Field(None, ge=0)
    """How much waiting one priority level is worth [1000]: a request of priority p+1 goes
    ahead of priority-p requests that have waited less than this, not of older ones, so a
    low priority is delayed by at most (difference × this) and never starves."""
    max_batch_tokens: int | None = Field(None, ge=1)
    """Text models: rows × padded length one ONNX Runtime call may hold [16384]; a batch
    above it runs in length-sorted parts (TEI's --max-batch-tokens)."""
    # Text generation (None = the default in brackets; unset fields stay out of the lock).
    max_sequences: int | None = Field(None, ge=1, le=1024)
    """Sequences generating at once in the worker (its continuous batch) [8]."""
    max_context: int | None = Field(None, ge=1)
    """Prompt + max_tokens allowed per request [the model's context length]."""
    kv_cache_mb: float | None = Field(None, gt=0)
    """KV-cache memory the running sequences may reserve (prompt + max_tokens each) [no limit]."""
    prefill_chunk: int | None = Field(None, ge=1, le=8192)
    """Prompt tokens processed per decode step of the others, so long prompts never stall
    running streams for longer than one chunk [512]."""
    max_image_pixels: int | None = Field(None, ge=1)
    """Image models: pixels (width × height) one input image may have; larger ones are
    refused from their header, before they are decoded [16777216 = 4096²]."""
    verify: Literal["stat", "full"] | None = None
    """How a worker checks the artifact's files before each load: ``stat`` trusts files
    whose stat is unchanged since they were hashed, ``full`` re-hashes them [stat]."""

    @property
    def sequences_limit(self) -> int:
        return self.max_sequences or 8

    @property
    def prefill_chunk_tokens(self) -> int:
        return self.prefill_chunk or 512

    @property
    def priority_aging_seconds(self) -> float:
        return (1000.0 if self.priority_aging_ms is None else self.priority_aging_ms) / 1000.0

    @property
    def batch_tokens_limit(self) -> int:
        return self.max_batch_tokens or 16384

    @property
    def image_pixels_limit(self) -> int:
        return self.max_image_pixels or DEFAULT_MAX_IMAGE_PIXELS

    @field_validator("keep_alive", mode="before")
    @classmethod
    def _check_duration(cls, v: Any) -> str:
        if isinstance(v, int | float):
            v = f"{int(v)}s" if float(v).is_integer() else str(v)
        if not isinstance(v, str):
            raise ValueError("must be a duration such as '10m' or a number of seconds")
        parse_duration(v)
        return v


class ModelSpec(_Strict):
    source: str = Field(min_length=1)
    """``hf://org/name[@rev]``, ``path:DIR`` (or ``./DIR``), ``https://…``, ``pkg://DIST/SUBDIR``,
    or any scheme a plugin registers."""
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    """Required for single-file ``https://`` sources."""
    registry: str | None = None
    """Name of the registry block to use; defaults to the block named like the scheme."""
    task: str | None = None
    files: FilesSpec = FilesSpec()
    backends: list[Backend] = ["cpu"]
    convert: ConvertSpec = ConvertSpec()
    validate_: ValidateSpec = Field(ValidateSpec(), alias="validate")
    benchmark: BenchmarkSpec = BenchmarkSpec()
    serve: ServeSpec = ServeSpec()
    trust_remote_code: bool = False
    allow_pickle: bool = False
    """Allow pickle-based weights (``*.bin``, ``*.pt``, ``*.pkl``); off because loading them runs
    arbitrary code."""

    model_config = ConfigDict(extra="forbid", validate_default=True, populate_by_name=True)

    def normalized(self) -> dict[str, Any]:
        """The spec as the lock records it: defaults filled in, aliases used, stable order."""
        return self.model_dump(mode="json", by_alias=True)


class RegistrySpec(_Strict):
    endpoint: str | None = None
    token: SecretStr | None = None

    @field_validator("token", mode="before")
    @classmethod
    def _empty_is_none(cls, v: Any) -> Any:
        return None if v == "" else v


_NAME = MODEL_NAME_PATTERN


class Manifest(_Strict):
    registries: dict[str, RegistrySpec] = {}
    models: dict[Annotated[str, Field(pattern=_NAME)], ModelSpec] = {}

    @field_validator("registries", "models", mode="before")
    @classmethod
    def _empty_section(cls, v: Any) -> Any:
        """``models:`` with nothing (or only comments) under it means no models yet."""
        return {} if v is None else v
