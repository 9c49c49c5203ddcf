"""How a task's requests share a worker call: the scheduler's per-task batching policy.

The scheduler owns queueing, priorities and deadlines; the policy owns what a batch *is*.
Batch tasks (embeddings, classifiers, plain tensors) concatenate requests along the first
axis and slice the output back, one row out per row in. A task that batches inside its
worker (token generation) uses no router-side batching and streams instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from modelmora.serve.ipc import Output, RunItems, RunTensors, RunText

__all__ = ["BatchPolicy", "ItemResult", "ItemRows", "TensorRows", "TextRows"]


@dataclass(frozen=True)
class ItemResult:
    """One request's share of a batch's output."""

    arrays: dict[str, np.ndarray]
    tokens: np.ndarray | None


class BatchPolicy(Protocol):
    def combine(self, payloads: Sequence[Any]) -> object:
        """The worker request body for these requests' payloads, in order."""

    def split(self, output: Output, rows: Sequence[int]) -> list[ItemResult]:
        """Each request's part of ``output``; ``rows[i]`` is what request ``i`` put in."""

    def part(self, payload: Any, start: int, stop: int) -> Any:
        """Rows ``start:stop`` of one request's payload (a request too big for one batch
        is queued in parts, so other requests get in between)."""

    def merge(self, parts: Sequence[ItemResult]) -> ItemResult:
        """One request's result from the results of its parts, in order."""


class _Rows:
    """Rows in = rows out along the first axis."""

    def merge(self, parts: Sequence[ItemResult]) -> ItemResult:
        if len(parts) == 1:
            return parts[0]
        tokens = [p.tokens for p in parts if p.tokens is not None]
        return ItemResult(
            arrays={k: np.concatenate([p.arrays[k] for p in parts]) for k in parts[0].arrays},
            tokens=np.concatenate(tokens) if len(tokens) == len(parts) else None,
        )

    def split(self, output: Output, rows: Sequence[int]) -> list[ItemResult]:
        results, start = [], 0
        for count in rows:
            stop = start + count
            results.append(
                ItemResult(
                    arrays={k: v[start:stop] for k, v in output.arrays.items()},
                    tokens=None if output.tokens is None else output.tokens[start:stop],
                )
            )
            start = stop
        return results


class TextRows(_Rows):
    """Payloads are lists of texts; the worker tokenizes and pads the whole batch at once."""

    def combine(self, payloads: Sequence[Any]) -> RunText:
        return RunText([text for texts in payloads for text in texts])

    def part(self, payload: Any, start: int, stop: int) -> Any:
        return payload[start:stop]


class ItemRows(_Rows):
    """Payloads are lists of image-model inputs (:class:`~modelmora.serve.ipc.RunItems`)."""

    def combine(self, payloads: Sequence[Any]) -> RunItems:
        return RunItems([item for items in payloads for item in items])

    def part(self, payload: Any, start: int, stop: int) -> Any:
        return payload[start:stop]


class TensorRows(_Rows):
    """Payloads are dicts of named tensors with the same signature, stacked on axis 0."""

    def combine(self, payloads: Sequence[Any]) -> RunTensors:
        first: dict[str, np.ndarray] = payloads[0]
        if len(payloads) == 1:
            return RunTensors(first)
        return RunTensors({k: np.concatenate([p[k] for p in payloads]) for k in first})

    def part(self, payload: Any, start: int, stop: int) -> Any:
        return {k: v[start:stop] for k, v in payload.items()}
