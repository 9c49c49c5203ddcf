"""Fixed, reproducible model inputs: real tokenizer output or seeded tensors.

Shared by validation and benchmarking; no torch here (serving imports the benchmark side).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modelmora.decoding import context_length
from modelmora.onnx_types import numpy_dtype

TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "spiece.model")


def _json_object(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; empty when the file is missing, unreadable or not one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def max_input_length(model_dir: Path) -> int | None:
    """Tokens per sequence the model takes: the smallest limit that
    ``sentence_bert_config.json`` (``max_seq_length``), ``tokenizer_config.json``
    (``model_max_length``, unless it is the "unlimited" sentinel) and ``config.json`` (its
    context length) declare, since a longer input fails in the model itself; None when none
    of them says."""
    declared = [
        _json_object(model_dir / "sentence_bert_config.json").get("max_seq_length"),
        _json_object(model_dir / "tokenizer_config.json").get("model_max_length"),
        context_length(_json_object(model_dir / "config.json")),
    ]
    limits = [v for v in declared if isinstance(v, int) and 0 < v < 100_000]
    return min(limits, default=None)


def text_context(model_dir: Path) -> int | None:
    """Tokens the text side of a model takes: its own context length, or its ``text_config``'s
    (image-text models keep the text settings there)."""
    config = _json_object(model_dir / "config.json")
    text = config.get("text_config")
    found = context_length(text if isinstance(text, dict) else config)
    return found if isinstance(found, int) else None


FULL_LENGTH_TEXT = frozenset({"siglip", "siglip_text_model"})
"""Model types whose text tower pools the last position, padding included: SigLIP was trained
on texts padded to the full context (transformers' docs: "make sure to set
padding='max_length'"), so a text padded any other way gets another vector, one that would
depend on what it was batched with. Both the dual encoder and its text tower on its own."""


def text_pad_length(model_dir: Path) -> int | None:
    """Tokens every text of the model in ``model_dir`` is padded to; None = to the batch's
    longest (the padding is masked, so its length does not matter)."""
    if _json_object(model_dir / "config.json").get("model_type") in FULL_LENGTH_TEXT:
        return text_context(model_dir)
    return None


def _pad_token(directory: Path) -> str:
    """The tokenizer's pad token (``special_tokens_map.json``, ``tokenizer_config.json``)."""
    special = _json_object(directory / "special_tokens_map.json").get("pad_token")
    if isinstance(special, dict):
        special = special.get("content")
    if isinstance(special, str):
        return special
    return str(_json_object(directory / "tokenizer_config.json").get("pad_token") or "[PAD]")


def vocab_size(*dirs: Path) -> int | None:
    """``vocab_size`` from the first ``config.json`` found, so that ids stay in range."""
    for d in dirs:
        if (d / "config.json").is_file():
            value = _json_object(d / "config.json").get("vocab_size")
            if isinstance(value, int) and value > 0:
                return value
    return None


def has_tokenizer(directory: Path) -> bool:
    return any((directory / f).is_file() for f in TOKENIZER_FILES)


def model_tokenizer(directory: Path, max_length: int) -> Any:
    """The directory's fast tokenizer (``tokenizer.json``, ``tokenizers`` only, no torch) set
    up as the model takes texts: truncated to ``max_length`` (or to the fixed length, if
    shorter), padded with its own pad token to the batch's longest or to the fixed length
    (:func:`text_pad_length`). Validation and serving both tokenize through it."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    length, pad = text_pad_length(directory), _pad_token(directory)
    tokenizer.enable_truncation(max_length=min(max_length, length or max_length))
    tokenizer.enable_padding(pad_id=tokenizer.token_to_id(pad) or 0, pad_token=pad, length=length)
    return tokenizer


def encode_texts(tokenizer: Any, texts: Sequence[str]) -> dict[str, np.ndarray]:
    """``input_ids``, ``attention_mask`` and ``token_type_ids`` (int64) for ``texts``."""
    encodings = tokenizer.encode_batch(list(texts))
    return {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
    }


def tokenize(directory: Path, sentences: Sequence[str], *, max_length: int = 512) -> dict[str, Any]:
    """Padded int64 inputs from the directory's own tokenizer (:func:`model_tokenizer`)."""
    return encode_texts(model_tokenizer(directory, max_length), sentences)


def image_input_size(model_dir: Path) -> tuple[int, int] | None:
    """``(height, width)`` of the images the model takes: what its preprocessing produces,
    else ``config.json`` ``image_size``; None for models without image inputs."""
    from modelmora.imaging import PREPROCESSOR_CONFIG, ImageError, ImagePreprocessor

    if (model_dir / PREPROCESSOR_CONFIG).is_file():
        try:
            size = ImagePreprocessor.read(model_dir).output_size
        except ImageError:
            size = None
        if size is not None:
            return size
    side = _json_object(model_dir / "config.json").get("image_size")
    return (side, side) if isinstance(side, int) and side > 0 else None


def is_image_input(spec: Any) -> bool:
    """A batch of images: a 4-D float input (``pixel_values`` ``[N, C, H, W]``)."""
    return len(spec.shape) == 4 and spec.type in ("tensor(float)", "tensor(float16)")


def synthetic_inputs(
    specs: Sequence[Any],
    *,
    batch_size: int,
    seq_len: int,
    vocab: int | None,
    image_size: tuple[int, int] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Seeded inputs for ORT input metadata (``NodeArg``: name, shape, type).

    Symbolic dims: the first is the batch, the others the sequence length — except for
    image inputs (:func:`is_image_input`), which get 3 channels of ``image_size``. Token ids
    stay below the vocabulary size; masks are all ones (a full sequence, the worst case).
    """
    rng = np.random.default_rng(seed)
    feeds: dict[str, Any] = {}
    for spec in specs:
        dtype = numpy_dtype(spec.type)
        if dtype is None or dtype is np.object_:
            raise ValueError(f"input {spec.name!r} has unsupported type {spec.type}")
        fill = [batch_size, *([seq_len] * (len(spec.shape) - 1))]
        if is_image_input(spec) and image_size is not None:
            fill = [batch_size, 3, *image_size]
        shape = [d if isinstance(d, int) and d > 0 else fill[i] for i, d in enumerate(spec.shape)]
        lname = spec.name.lower()
        if np.issubdtype(dtype, np.floating):
            feeds[spec.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype is np.bool_ or "mask" in lname:
            feeds[spec.name] = np.ones(shape, dtype=dtype)
        elif "type" in lname or "position" in lname:
            feeds[spec.name] = np.zeros(shape, dtype=dtype)
        else:
            high = vocab if vocab else 2
            feeds[spec.name] = rng.integers(0, high, size=shape).astype(dtype)
    return feeds
