"""Model registries behind one interface, discovered through entry points.

Built-in schemes: ``hf``, ``path``, ``https``, ``pkg``, ``onnx-zoo``, ``torchhub``,
``mlflow``, ``s3``, ``tfhub``, ``wandb``. A
third-party distribution adds a scheme by declaring an entry point in the
``modelmora.sources`` group whose value is a :class:`~modelmora.sources.base.Source`
subclass (see docs/sources.md).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cache
from importlib import import_module
from importlib.metadata import entry_points
from typing import Any

from modelmora.errors import ModelMoraError, UserInputError
from modelmora.sources.base import (
    RegistryConfig,
    RemoteFile,
    Resolution,
    Source,
    SourceContext,
    safe_relpath,
)

__all__ = [
    "RegistryConfig",
    "RemoteFile",
    "Resolution",
    "Source",
    "SourceContext",
    "is_builtin",
    "make_source",
    "parse_source",
    "safe_relpath",
    "source_schemes",
]

ENTRY_POINT_GROUP = "modelmora.sources"

_BUILTIN: dict[str, str] = {
    "hf": "modelmora.sources.hf:HfSource",
    "path": "modelmora.sources.local:PathSource",
    "https": "modelmora.sources.url:HttpsSource",
    "pkg": "modelmora.sources.pkg:PackageSource",
    "onnx-zoo": "modelmora.sources.onnx_zoo:OnnxZooSource",
    "torchhub": "modelmora.sources.torchhub:TorchHubSource",
    "mlflow": "modelmora.sources.mlflow:MlflowSource",
    "s3": "modelmora.sources.s3:S3Source",
    "tfhub": "modelmora.sources.tfhub:TfHubSource",
    "wandb": "modelmora.sources.wandb:WandbSource",
}

_SCHEME = re.compile(r"^([a-z][a-z0-9+.-]*)(://|:)(.*)$", re.DOTALL)


def parse_source(source: str) -> tuple[str, str]:
    """Split a source string into ``(scheme, location)``.

    ``hf://org/name@rev`` → ``("hf", "org/name@rev")``; ``path:models/x`` and bare local paths
    (``./x``, ``../x``, ``/abs/x``) → ``("path", …)``; ``https://h/f`` → ``("https", "h/f")``.
    """
    text = source.strip()
    if text.startswith(("./", "../", "/", "~")) or text in (".", ".."):
        return "path", text
    m = _SCHEME.match(text)
    if not m:
        raise UserInputError(
            f"cannot parse source {source!r}",
            hint="write SCHEME://LOCATION, e.g. hf://org/name, pkg://DIST/DIR, path:./dir",
        )
    scheme, sep, rest = m.groups()
    if sep == ":" and scheme != "path":
        raise UserInputError(f"cannot parse source {source!r}: expected {scheme}://…")
    return scheme, rest


@cache
def _registered() -> dict[str, str]:
    found = dict(_BUILTIN)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found[ep.name] = ep.value
    return found


def is_builtin(scheme: str) -> bool:
    return _registered().get(scheme) == _BUILTIN.get(scheme)


def source_schemes() -> list[str]:
    return sorted(_registered())


def _load_class(scheme: str) -> type[Source]:
    target = _registered().get(scheme)
    if target is None:
        raise UserInputError(
            f"unknown source scheme {scheme!r}",
            hint=f"known schemes: {', '.join(source_schemes())}; plugins register more "
            f"through the {ENTRY_POINT_GROUP!r} entry-point group",
        )
    module_name, _, attr = target.partition(":")
    try:
        cls = getattr(import_module(module_name), attr)
    except Exception as exc:  # a broken plugin must not look like our bug
        raise ModelMoraError(f"source plugin {scheme!r} ({target}) failed to load: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Source)):
        raise ModelMoraError(f"source plugin {scheme!r} ({target}) is not a Source subclass")
    return cls


def make_source(spec: Mapping[str, Any], context: SourceContext) -> Source:
    """Build the source for a normalized model spec (``ModelSpec.normalized()`` or a lock's)."""
    scheme, location = parse_source(str(spec["source"]))
    cls = _load_class(scheme)
    files = spec.get("files") or {}
    options = {k: v for k, v in spec.items() if k in ("sha256", "registry", "trust_remote_code")}
    return cls(
        location,
        context,
        include=files.get("include"),
        exclude=files.get("exclude") or (),
        options=options,
    )
