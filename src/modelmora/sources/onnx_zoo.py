"""``onnx-zoo://NAME[@rev]``: ONNX Model Zoo models, which now live on the Hugging Face Hub.

The zoo moved from Git LFS in ``github.com/onnx/models`` to the ``onnxmodelzoo`` organization
on the HF Hub, so this is the ``hf://`` source with a fixed organization, ONNX-oriented
default includes and zoo-scoped search. Everything else (pinning to the commit sha, sha256
from LFS metadata, resumable verified downloads, the error mapping) is ``HfSource``'s.

The old raw GitHub URLs of ``validated/`` models are single files: use an ``https://``
source with ``sha256:`` for those.
"""

from __future__ import annotations

from typing import ClassVar

from modelmora.errors import UserInputError
from modelmora.sources.base import SourceContext
from modelmora.sources.hf import HfSource
from modelmora.sources.search import SearchHit, search_hub

__all__ = ["ZOO_ORG", "OnnxZooSource"]

ZOO_ORG = "onnxmodelzoo"


def default_registry(context: SourceContext) -> str:
    """The ``onnx-zoo`` registry block when the manifest has one, else the ``hf`` block."""
    return "onnx-zoo" if "onnx-zoo" in context.registries else "hf"


class OnnxZooSource(HfSource):
    """``onnx-zoo://NAME[@rev]`` = ``hf://onnxmodelzoo/NAME[@rev]``; ONNX passes through."""

    scheme = "onnx-zoo"
    default_include: ClassVar[tuple[str, ...]] = ("*.onnx", "*.onnx_data", "*.json", "*.txt")

    def configure(self) -> None:
        name = self.location.strip().strip("/")
        if not name or "/" in name.partition("@")[0]:
            raise UserInputError(
                f"invalid onnx-zoo source 'onnx-zoo://{self.location}': expected "
                f"onnx-zoo://NAME[@REVISION] (a repository of huggingface.co/{ZOO_ORG})",
                hint="for another organization use hf://ORG/NAME",
            )
        self.location = f"{ZOO_ORG}/{name}"
        super().configure()
        self.zoo_name = self.repo_id.split("/", 1)[1]

    def default_registry(self) -> str:
        return default_registry(self.context)

    @property
    def origin(self) -> str:
        return f"onnx-zoo://{self.zoo_name}"

    @classmethod
    def search(
        cls, query: str, *, task: str | None, limit: int, context: SourceContext, registry: str
    ) -> list[SearchHit]:
        """Zoo models only (``author=onnxmodelzoo``), named the way a manifest writes them."""
        block = registry if registry in context.registries else default_registry(context)
        prefix = f"{ZOO_ORG}/"

        def to_source(repo_id: str) -> str:
            return f"onnx-zoo://{repo_id.removeprefix(prefix)}"

        hits = search_hub(context, block, registry, query, task, limit, ZOO_ORG, to_source)
        return [h for h in hits if h.id.startswith(prefix)]
