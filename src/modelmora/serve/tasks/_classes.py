"""What classification tasks (text, image) share: labels and how scores become answers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from modelmora.serve.tasks._text import MAX_INPUTS, TextOrImage

if TYPE_CHECKING:
    from modelmora.serve.state import ServeState

__all__ = ["ClassifyRequest", "classification_data", "labels_of", "v2_classes"]


class ClassifyRequest(BaseModel):
    """``POST /v1/classify``: texts for a text classifier, data URLs for an image one."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    input: TextOrImage | Annotated[list[TextOrImage], Field(min_length=1, max_length=MAX_INPUTS)]
    top_k: int | None = Field(
        None, ge=1, description="How many labels per input in `scores` (default: all)."
    )

    @property
    def inputs(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else self.input


def labels_of(state: ServeState, model: str) -> list[str]:
    info = state.pool.cached_info(model)
    return list(info.labels or ()) if info else []


def classification_data(
    labels: list[str], scores: np.ndarray, top_k: int | None
) -> list[dict[str, Any]]:
    """One ``classification`` object per input: best label and score, then the ``top_k``."""
    data = []
    for i, row in enumerate(scores):
        order = np.argsort(-row, kind="stable")[: top_k or len(row)]
        ranked = [{"label": labels[j], "score": float(row[j])} for j in order]
        data.append(
            {
                "object": "classification",
                "index": i,
                "label": ranked[0]["label"],
                "score": ranked[0]["score"],
                "scores": ranked,
            }
        )
    return data


def v2_classes(labels: list[str], outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """v2 ``infer`` outputs: the best ``label`` (BYTES), ``scores`` and ``logits``."""
    chosen = np.empty(outputs["scores"].shape[0], dtype=np.object_)
    chosen[:] = [labels[int(i)].encode("utf-8") for i in outputs["scores"].argmax(axis=1)]
    return {"label": chosen, "scores": outputs["scores"], "logits": outputs["logits"]}
