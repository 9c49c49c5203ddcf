"""Sentence-transformers pooling and normalization, in numpy, read from the model's own files.

``modules.json`` says which modules follow the transformer (``Pooling``, ``Normalize``) and
``<pooling path>/config.json`` which pooling modes are on. Several modes are concatenated in
the order sentence-transformers uses, so a multi-mode config gives the same vector layout.
A snapshot without ``modules.json`` is not a sentence-transformers model: it gets mean
pooling and no normalization (what feature-extraction users nearly always want).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["PoolingConfig", "pool", "read_pooling_config"]

# sentence_transformers.models.Pooling concatenates in this order.
_MODE_ORDER = ("cls", "max", "mean", "mean_sqrt_len", "weightedmean", "lasttoken")
_MODE_KEYS = {
    "cls": "pooling_mode_cls_token",
    "max": "pooling_mode_max_tokens",
    "mean": "pooling_mode_mean_tokens",
    "mean_sqrt_len": "pooling_mode_mean_sqrt_len_tokens",
    "weightedmean": "pooling_mode_weightedmean_tokens",
    "lasttoken": "pooling_mode_lasttoken",
}


@dataclass(frozen=True)
class PoolingConfig:
    modes: tuple[str, ...] = ("mean",)
    normalize: bool = False


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from exc


def read_pooling_config(artifact_dir: Path) -> PoolingConfig:
    """The pooling recipe of the snapshot in ``artifact_dir`` (see the module docstring)."""
    modules_file = artifact_dir / "modules.json"
    if not modules_file.is_file():
        return PoolingConfig()
    modules = _read_json(modules_file)
    if not isinstance(modules, list):
        raise ValueError(f"{modules_file}: expected a JSON list of modules")
    modes: tuple[str, ...] = ("mean",)
    normalize = False
    for module in modules:
        kind = str(module.get("type", "")) if isinstance(module, dict) else ""
        if kind.endswith(".Normalize"):
            normalize = True
        elif kind.endswith(".Pooling"):
            cfg_file = artifact_dir / str(module.get("path", "")) / "config.json"
            cfg = _read_json(cfg_file)
            modes = tuple(m for m in _MODE_ORDER if cfg.get(_MODE_KEYS[m]))
            if not modes:
                raise ValueError(f"{cfg_file}: no pooling mode is enabled")
    return PoolingConfig(modes=modes, normalize=normalize)


def _one(mode: str, hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.asarray(_pooled(mode, hidden, mask), dtype=hidden.dtype)


def _pooled(mode: str, hidden: np.ndarray, mask: np.ndarray) -> object:
    m = mask[:, :, None].astype(hidden.dtype)
    if mode == "cls":
        return hidden[:, 0]
    if mode == "max":
        return np.where(m > 0, hidden, np.finfo(hidden.dtype).min).max(axis=1)
    if mode == "lasttoken":
        last = np.maximum(mask.sum(axis=1) - 1, 0)
        return hidden[np.arange(hidden.shape[0]), last]
    if mode == "weightedmean":
        weights = np.arange(1, hidden.shape[1] + 1, dtype=hidden.dtype)[None, :, None] * m
        return (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
    summed = (hidden * m).sum(axis=1)
    counts = np.maximum(m.sum(axis=1), 1e-9)
    if mode == "mean":
        return summed / counts
    if mode == "mean_sqrt_len":
        return summed / np.sqrt(counts)
    raise ValueError(f"unknown pooling mode {mode!r}")


def pool(hidden: np.ndarray, mask: np.ndarray, config: PoolingConfig) -> np.ndarray:
    """Pool token states ``[batch, seq, dim]`` into sentence vectors ``[batch, dim * modes]``."""
    parts = [_one(mode, hidden, mask) for mode in config.modes]
    out = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
    if config.normalize:
        out = out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return np.ascontiguousarray(out, dtype=np.float32)
