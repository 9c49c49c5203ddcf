"""``modelmora.yml``: schema, env interpolation, located errors, comment-preserving edits."""

from modelmora.manifest.edit import add_model, init_manifest, remove_model, suggest_name
from modelmora.manifest.interpolate import InterpolationError, interpolate
from modelmora.manifest.load import FieldPath, LoadedManifest, load_manifest, load_manifest_text
from modelmora.manifest.model import Manifest, ModelSpec

__all__ = [
    "FieldPath",
    "InterpolationError",
    "LoadedManifest",
    "Manifest",
    "ModelSpec",
    "add_model",
    "init_manifest",
    "interpolate",
    "load_manifest",
    "load_manifest_text",
    "remove_model",
    "suggest_name",
]
