"""Text encoders in the worker: tokenize (``tokenizers``), pad to the batch's longest row,
run, then pool (embeddings) or score (classifiers)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from modelmora.onnx_types import numpy_dtype
from modelmora.serve.ipc import ModelInfo, Output, RunText, TensorSpec, WorkerSpec
from modelmora.serve.pooling import PoolingConfig, pool, read_pooling_config
from modelmora.serve.runners.base import (
    GROWN_TOKENS,
    Classes,
    Runner,
    arena_shrink_options,
    rss_bytes,
    trim_malloc,
)
from modelmora.validate.inputs import encode_texts, max_input_length, model_tokenizer

__all__ = [
    "ClassifierRunner",
    "EmbeddingRunner",
    "TextRunner",
    "TextTokenizer",
    "max_seq_length",
    "run_within_budget",
]


def max_seq_length(artifact_dir: Path) -> int:
    """The model's own maximum, else 512 (as sentence-transformers)."""
    return max_input_length(artifact_dir) or 512


def run_within_budget(
    feed: dict[str, np.ndarray],
    mask: np.ndarray,
    budget: int,
    run: Callable[[dict[str, np.ndarray], np.ndarray], dict[str, np.ndarray]],
    *,
    keep_width: bool,
) -> dict[str, np.ndarray]:
    """``run`` over a tokenized batch in parts of at most ``budget`` rows × padded length,
    the outputs put back in the rows' order.

    One padded batch of long and short texts costs the longest text's length per row;
    splitting length-sorted keeps each ONNX Runtime call — and so the worker's peak memory —
    within the budget whatever the request holds. Each part is cut to its own longest row,
    unless ``keep_width``: the model's padding is part of its input (texts padded to a fixed
    length) and every part keeps the batch's width.
    """
    if len(mask) * mask.shape[1] <= budget:
        return run(feed, mask)
    lengths = mask.sum(axis=1)
    order = np.argsort(lengths, kind="stable")

    def width_of(row: int) -> int:
        return mask.shape[1] if keep_width else max(int(lengths[row]), 1)

    outputs: list[dict[str, np.ndarray]] = []
    start = 0
    while start < len(order):
        stop = start + 1
        # Rows sorted by length: a part's padded length is its last row's.
        while stop < len(order) and (stop + 1 - start) * width_of(order[stop]) <= budget:
            stop += 1
        rows, width = order[start:stop], width_of(order[stop - 1])
        part = {k: np.ascontiguousarray(v[rows, :width]) for k, v in feed.items()}
        outputs.append(run(part, np.ascontiguousarray(mask[rows, :width])))
        start = stop
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    return {k: np.concatenate([o[k] for o in outputs])[inverse] for k in outputs[0]}


class TextTokenizer:
    """The artifact's fast tokenizer (``tokenizers``) for one text graph: truncation to the
    model's maximum, padding as the model was trained (to the batch's longest row, or to a
    fixed length: :func:`~modelmora.validate.inputs.model_tokenizer`), the graph's own input
    dtypes."""

    KNOWN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")

    def __init__(self, directory: Path, session: Any) -> None:
        tok_file = directory / "tokenizer.json"
        if not tok_file.is_file():
            raise RuntimeError(f"{tok_file} is missing: text models need a fast tokenizer")
        self.tokenizer = model_tokenizer(directory, max_seq_length(directory))
        self.max_seq_length = int(self.tokenizer.truncation["max_length"])
        self.fixed_length = self.tokenizer.padding["length"] is not None
        """Texts are padded to one length, and the padding is part of the model's input."""
        inputs = session.get_inputs()
        self.np_types = {i.name: numpy_dtype(i.type, np.float32) for i in inputs}
        unknown = [i.name for i in inputs if i.name not in self.KNOWN_INPUTS]
        if unknown or "input_ids" not in self.np_types:
            raise RuntimeError(
                f"a text model's ONNX inputs must be among {list(self.KNOWN_INPUTS)} "
                f"(found {[i.name for i in inputs]})"
            )

    def encode(self, texts: list[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """``(feed, attention mask)`` for ``texts``, padded to the longest (or to the model's
        fixed length)."""
        arrays = encode_texts(self.tokenizer, texts)
        feed = {
            k: v.astype(self.np_types[k], copy=False)
            for k, v in arrays.items()
            if k in self.np_types
        }
        return feed, arrays["attention_mask"]


class TextRunner(Runner):
    """Tokenize in the worker (``tokenizers``), pad to the batch's longest sequence."""

    def text_info(self, outputs: tuple[TensorSpec, ...]) -> ModelInfo:
        """What a text task serves: a BYTES ``text`` input, any number of rows."""
        inputs = (TensorSpec("text", "BYTES", (-1,)),)
        return replace(
            super().info(),
            inputs=inputs,
            outputs=outputs,
            batchable=True,
            max_seq_length=self.max_seq_length,
        )

    def __init__(self, spec: WorkerSpec) -> None:
        super().__init__(spec)
        self.text = TextTokenizer(self.dir, self.session)
        self.max_seq_length = self.text.max_seq_length

    def encode(self, texts: list[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        return self.text.encode(texts)

    def warm_up(self) -> None:
        self.run_text(["warm up"])

    def handle(self, body: Any) -> Output:
        if not isinstance(body, RunText):
            raise TypeError(f"a text model cannot run {type(body).__name__}")
        return self.run_text(body.texts)

    def run_text(self, texts: list[str]) -> Output:
        """Tokenize, then run in parts within ``max_batch_tokens`` (:func:`run_within_budget`)."""
        feed, mask = self.encode(texts)
        arrays = run_within_budget(
            feed,
            mask,
            self.spec.max_batch_tokens,
            lambda part, part_mask: self.run_encoded(part, part_mask).arrays,
            keep_width=self.text.fixed_length,
        )
        return Output(arrays=arrays, tokens=mask.sum(axis=1), rss_bytes=rss_bytes())

    def run_encoded(
        self, feed: dict[str, np.ndarray], mask: np.ndarray, *, shrink: bool = False
    ) -> Output:
        """One ONNX Runtime call; ``shrink`` hands what ORT's arena grew back to the system at
        the end of the call (see :meth:`release_memory`)."""
        raise NotImplementedError

    def release_memory(self) -> None:
        """One tiny call with arena shrinkage, then glibc's ``malloc_trim``: after a big batch
        the worker's memory returns to about its warm size (MiniLM: 0.5 GB grown for 32 × 256
        tokens, back within tens of MB)."""
        feed, mask = self.encode(["release"])
        self.run_encoded(feed, mask, shrink=True)
        trim_malloc()

    def _run(self, names: list[str], feed: dict[str, np.ndarray], shrink: bool) -> list[Any]:
        if feed["input_ids"].size >= GROWN_TOKENS:
            self.grown = True
        return list(self.session.run(names, feed, arena_shrink_options() if shrink else None))


class EmbeddingRunner(TextRunner):
    def __init__(self, spec: WorkerSpec) -> None:
        super().__init__(spec)
        self.pooling: PoolingConfig = read_pooling_config(self.dir)
        names = [o.name for o in self.outputs]
        # An export of the whole sentence-transformers pipeline already pools.
        self.output_name = "sentence_embedding" if "sentence_embedding" in names else names[0]
        self.dim = 0

    def run_encoded(
        self, feed: dict[str, np.ndarray], mask: np.ndarray, *, shrink: bool = False
    ) -> Output:
        (hidden,) = self._run([self.output_name], feed, shrink)
        hidden = np.asarray(hidden, dtype=np.float32)
        if hidden.ndim == 3:
            vectors = pool(hidden, mask, self.pooling)
        elif self.pooling.normalize:
            vectors = pool(
                hidden[:, None, :], np.ones((len(mask), 1)), PoolingConfig(("mean",), True)
            )
        else:
            vectors = np.ascontiguousarray(hidden)
        return Output(arrays={"embedding": vectors}, tokens=mask.sum(axis=1), rss_bytes=rss_bytes())

    def info(self) -> ModelInfo:
        outputs = (TensorSpec("embedding", "FP32", (-1, self.dim)),)
        return replace(self.text_info(outputs), embedding_dim=self.dim)

    def warm_up(self) -> None:
        self.dim = int(self.run_text(["warm up"]).arrays["embedding"].shape[1])


class ClassifierRunner(TextRunner):
    def __init__(self, spec: WorkerSpec) -> None:
        super().__init__(spec)
        self.classes = Classes.read(self.dir, self.outputs[0])

    def run_encoded(
        self, feed: dict[str, np.ndarray], mask: np.ndarray, *, shrink: bool = False
    ) -> Output:
        (logits,) = self._run([self.outputs[0].name], feed, shrink)
        return self.classes.outputs(logits, tokens=mask.sum(axis=1))

    def info(self) -> ModelInfo:
        return replace(self.text_info(self.classes.specs()), labels=self.classes.labels)
