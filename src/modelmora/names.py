"""File names of a ModelMora project (standard library only: the CLI's fast paths use them)."""

MANIFEST_NAME = "modelmora.yml"
LOCK_NAME = "modelmora.lock"
STATE_DIR = ".modelmora"
"""Project-local state (Dagster home, install stamp); git-ignored."""

TORCHHUB_DESCRIPTOR = "modelmora_torchhub.json"
"""Written into a torchhub:// snapshot by the source, read by the converter: how to build
the model from the pinned repository."""

TEXT_TOWER = "text_model.onnx"
IMAGE_TOWER = "vision_model.onnx"
"""The two graphs of an image-text dual encoder artifact (written by the converter, loaded
by serve workers)."""
