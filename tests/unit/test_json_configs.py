"""A model's JSON configs: each way one can be unusable gets its own message naming the file,
and imaging and diffusion surface it as their own error type (a 400 or a failed install
step, not a traceback)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from modelmora.diffusion import DiffusionConfig, DiffusionError
from modelmora.fsutil import JsonObjectError, read_json_object
from modelmora.imaging import PREPROCESSOR_CONFIG, ImageError, ImagePreprocessor

pytestmark = pytest.mark.torch_free


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "is missing"),
        (b"{not json", "is not readable JSON"),
        (b"\xff\xfe", "is not readable JSON"),
        (b"[1, 2]", "does not hold a JSON object"),
    ],
)
def test_each_unusable_file_is_named_with_its_reason(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "config.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(JsonObjectError) as caught:
        read_json_object(path)
    assert str(caught.value).startswith(f"{path} {message}")


def test_an_object_is_returned_as_a_dict(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{"a": [1, 2], "b": {"c": null}}', encoding="utf-8")
    assert read_json_object(path) == {"a": [1, 2], "b": {"c": None}}


def test_image_preprocessor_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="is missing: an image model needs its preprocessor"):
        ImagePreprocessor.read(tmp_path)
    (tmp_path / PREPROCESSOR_CONFIG).write_text('"resize"', encoding="utf-8")
    with pytest.raises(
        ImageError, match=re.escape(f"{PREPROCESSOR_CONFIG} does not hold a JSON object")
    ):
        ImagePreprocessor.read(tmp_path)


def test_a_diffusion_artifact_without_its_scheduler_config_names_it(tmp_path: Path) -> None:
    with pytest.raises(DiffusionError, match=re.escape("scheduler_config.json is missing")):
        DiffusionConfig.read(tmp_path)
