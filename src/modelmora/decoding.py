"""Token generation over an exported decoder graph, with its KV cache, in ONNX Runtime.

The graph is what optimum's ``text-generation-with-past`` export writes: inputs
``input_ids``, ``attention_mask`` (past + new positions), optional ``position_ids`` and
``past_key_values.{i}.key|value``; outputs ``logits`` and ``present.{i}.key|value``. The
first call passes an empty past (length 0), so one graph serves prompt and decode steps.

Validation (greedy ids against PyTorch), the benchmark (tokens/s) and serving all drive the
graph through this one module; it imports numpy and onnxruntime only (never torch).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modelmora.onnx_types import numpy_dtype

__all__ = [
    "DEFAULT_CONTEXT",
    "BatchRun",
    "Decoder",
    "Generation",
    "context_length",
    "eos_ids",
    "log_softmax",
]

DEFAULT_CONTEXT = 2048
"""Context length assumed for a ``config.json`` that states none."""

_PAST = re.compile(r"^past_key_values\.(\d+)\.(key|value)$")


def _json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def eos_ids(model_dir: Path) -> list[int]:
    """End-of-sequence ids: ``generation_config.json``'s, else ``config.json``'s."""
    for name in ("generation_config.json", "config.json"):
        value = _json(model_dir / name).get("eos_token_id")
        if isinstance(value, int):
            return [value]
        if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
            return list(value)
    return []


def context_length(config: dict[str, Any]) -> int | None:
    """Prompt + generated tokens the model accepts, from its ``config.json`` (None: unsaid)."""
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = config.get(key)
        if isinstance(value, int) and value > 0:
            return value
    return None


@dataclass
class Generation:
    """What one greedy run produced (for the validation gate)."""

    prompt_ids: list[int]
    new_ids: list[int] = field(default_factory=list)
    first_logits: np.ndarray | None = None
    """Logits of the last prompt position (the first step's distribution)."""


@dataclass(frozen=True)
class BatchRun:
    ids: np.ndarray
    """New ids, ``(batch, new_tokens)``."""
    prompt_s: float
    """Prompt processing up to the first new token of every sequence."""
    step_s: np.ndarray
    """Seconds of each later decode step."""


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return np.asarray(x - np.log(np.exp(x).sum(axis=-1, keepdims=True)))


class Decoder:
    """One ONNX Runtime session of a decoder graph, and the loop around it."""

    def __init__(self, session: Any) -> None:
        self.session = session
        inputs = {i.name: i for i in session.get_inputs()}
        missing = [n for n in ("input_ids", "attention_mask") if n not in inputs]
        layers = sorted({int(m.group(1)) for n in inputs if (m := _PAST.match(n))})
        if missing or not layers:
            raise ValueError(
                "not a decoder graph with a KV cache: needs input_ids, attention_mask and "
                f"past_key_values.N.key/value inputs (found {sorted(inputs)})"
            )
        self.layers = len(layers)
        past = inputs["past_key_values.0.key"]
        self.kv_heads = int(past.shape[1])
        self.head_dim = int(past.shape[3])
        self.kv_dtype = numpy_dtype(past.type, np.float32)
        self.has_position_ids = "position_ids" in inputs
        self.past_names = [
            f"past_key_values.{i}.{kind}" for i in layers for kind in ("key", "value")
        ]
        self.output_names = ["logits"] + [
            f"present.{i}.{kind}" for i in layers for kind in ("key", "value")
        ]
        vocab = {o.name: o for o in session.get_outputs()}["logits"].shape[-1]
        self.vocab: int | None = vocab if isinstance(vocab, int) and vocab > 0 else None
        """Logits per position (None: the graph leaves it symbolic)."""

    @classmethod
    def load(
        cls,
        onnx_path: Path,
        *,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        threads: int = 0,
        spin: bool = True,
    ) -> Decoder:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        return cls(ort.InferenceSession(str(onnx_path), options, providers=list(providers)))

    def empty_past(self, batch: int) -> list[np.ndarray]:
        shape = (batch, self.kv_heads, 0, self.head_dim)
        return [np.zeros(shape, dtype=self.kv_dtype) for _ in self.past_names]

    def forward(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        past: list[np.ndarray],
        run_options: Any = None,
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """One call: ``(batch, new)`` ids over ``past`` → logits ``(batch, new, vocab)``, present.

        ``attention_mask`` covers past and new positions; positions of the new tokens follow
        from it (left padding counts as no position), as transformers computes them.
        ``run_options``: ONNX Runtime ``RunOptions`` for this call.
        """
        feed: dict[str, np.ndarray] = {
            "input_ids": input_ids.astype(np.int64, copy=False),
            "attention_mask": attention_mask.astype(np.int64, copy=False),
        }
        if self.has_position_ids:
            positions = np.cumsum(attention_mask, axis=1) - 1
            feed["position_ids"] = np.maximum(positions[:, -input_ids.shape[1] :], 0)
        feed.update(zip(self.past_names, past, strict=True))
        logits, *present = self.session.run(self.output_names, feed, run_options)
        return np.asarray(logits), present

    def greedy(
        self, prompt_ids: Sequence[int], max_new_tokens: int, eos_ids: Sequence[int] = ()
    ) -> Generation:
        """Greedy decoding of one prompt; stops after an end-of-sequence id (kept) or the limit."""
        result = Generation(prompt_ids=list(prompt_ids))
        ids = np.asarray([prompt_ids], dtype=np.int64)
        mask = np.ones_like(ids)
        logits, past = self.forward(ids, mask, self.empty_past(1))
        result.first_logits = logits[0, -1].copy()
        stop = set(eos_ids)
        for step in range(max_new_tokens):
            token = int(logits[0, -1].argmax())
            result.new_ids.append(token)
            if token in stop or step == max_new_tokens - 1:
                break
            mask = np.ones((1, mask.shape[1] + 1), dtype=np.int64)
            logits, past = self.forward(np.asarray([[token]], dtype=np.int64), mask, past)
        return result

    def greedy_batch(self, prompts: np.ndarray, new_tokens: int) -> BatchRun:
        """``new_tokens`` greedy steps for equal-length prompts decoded together (no stop ids),
        timed: what the benchmark measures."""
        batch = prompts.shape[0]
        started = time.perf_counter()
        mask = np.ones_like(prompts, dtype=np.int64)
        logits, past = self.forward(prompts, mask, self.empty_past(batch))
        out = np.empty((batch, new_tokens), dtype=np.int64)
        out[:, 0] = logits[:, -1].argmax(axis=-1)
        prompt_s = time.perf_counter() - started
        steps = np.empty(new_tokens - 1, dtype=np.float64)
        for step in range(1, new_tokens):
            t = time.perf_counter()
            mask = np.ones((batch, mask.shape[1] + 1), dtype=np.int64)
            logits, past = self.forward(out[:, step - 1 : step], mask, past)
            out[:, step] = logits[:, -1].argmax(axis=-1)
            steps[step - 1] = time.perf_counter() - t
        return BatchRun(ids=out, prompt_s=prompt_s, step_s=steps)

    def teacher_forced_logits(self, ids: Sequence[int]) -> np.ndarray:
        """Logits at every position of ``ids`` in one call (for agreement and perplexity)."""
        arr = np.asarray([ids], dtype=np.int64)
        logits, _ = self.forward(arr, np.ones_like(arr), self.empty_past(1))
        return np.asarray(logits[0])
