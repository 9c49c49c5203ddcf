"""Hand installed models to other serving stacks (Triton model repositories)."""

from __future__ import annotations

from modelmora.export.triton import ExportedModel, export_triton

__all__ = ["ExportedModel", "export_triton"]
