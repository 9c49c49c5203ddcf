"""``modelmora.yml``: schema, env interpolation, located errors, comment-preserving edits."""

from modelmora.manifest.load import LoadedManifest, load_manifest
from modelmora.manifest.model import Manifest, ModelSpec

__all__ = ["LoadedManifest", "Manifest", "ModelSpec", "load_manifest"]
