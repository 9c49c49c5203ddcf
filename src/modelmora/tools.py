"""Versions of the tools that shape install's output (standard library only, no imports).

Artifact keys and install's no-op stamp both depend on them; one list keeps them in step.
"""

from __future__ import annotations

from importlib import metadata

_CORE = ("modelmora", "onnx", "onnxruntime", "onnxruntime-gpu")
_BY_FORMAT: dict[str, tuple[str, ...]] = {
    "transformers": ("torch", "transformers", "optimum", "optimum-onnx", "tokenizers"),
    "torch": ("torch", "onnxscript"),
    "tf-savedmodel": ("tensorflow-cpu", "tensorflow", "tf2onnx"),
    "keras": ("tensorflow-cpu", "tensorflow", "tf2onnx", "keras"),
    "onnx": (),
}


def tool_versions(source_format: str | None = None) -> dict[str, str]:
    """Installed versions of the tools that shape an artifact (read from metadata, no imports).

    With ``source_format`` only the tools that format's conversion uses are listed, so that
    installing TensorFlow does not invalidate every transformers artifact.
    """
    if source_format is None:
        names: tuple[str, ...] = _CORE + tuple(n for v in _BY_FORMAT.values() for n in v)
    else:
        names = _CORE + _BY_FORMAT.get(source_format, ())
    found: dict[str, str] = {}
    for name in dict.fromkeys(names):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return dict(sorted(found.items()))
