"""PyTorch eager latency of the source model, for side-by-side numbers in bench scripts.

torch is imported inside the function: serving imports ``modelmora.bench`` and must not
pay for (or depend on) torch.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from modelmora.validate.inputs import vocab_size


def torch_reference_latency(
    model_dir: Path,
    batch_size: int,
    seq_len: int,
    iterations: int,
    *,
    task: str = "feature-extraction",
    warmup: int = 2,
    threads: int | None = None,
) -> float:
    """p50 latency (ms) of the transformers model in ``model_dir`` on seeded token ids."""
    import torch

    from modelmora.convert.hf import load_task_model

    if threads:
        torch.set_num_threads(threads)
    model = load_task_model(model_dir, task=task, trust_remote_code=False)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, vocab_size(model_dir) or 2, size=(batch_size, seq_len))
    inputs = {
        "input_ids": torch.from_numpy(ids.astype(np.int64)),
        "attention_mask": torch.ones(batch_size, seq_len, dtype=torch.int64),
    }
    latencies = []
    with torch.inference_mode():
        for _ in range(warmup):
            model(**inputs)
        for _ in range(iterations):
            start = time.perf_counter()
            model(**inputs)
            latencies.append((time.perf_counter() - start) * 1000)
    return float(np.percentile(latencies, 50))
