"""Images in: decoding with limits, and the preprocessing a checkpoint declares.

Serving decodes and preprocesses images inside the worker with Pillow and numpy only (no
torch). What the preprocessing does comes from the checkpoint's ``preprocessor_config.json``
(resize, center crop, rescale, normalize, RGB), read by :class:`ImagePreprocessor`; the
validation gate checks it against transformers' own image processor on fixed images, so a
mismatch is named as such rather than showing up as wrong logits.

Decoding (:func:`decode_image`) accepts PNG, JPEG and WebP only, and reads the image size
from its header before any pixel is decoded: an image above the pixel limit (a
decompression bomb) is refused without the memory it would take.
"""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modelmora.fsutil import JsonObjectError, read_json_object

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "DEFAULT_MAX_IMAGE_PIXELS",
    "IMAGE_FORMATS",
    "PREPROCESSOR_CONFIG",
    "ImageError",
    "ImagePreprocessor",
    "decode_data_url",
    "decode_image",
    "is_image_data_url",
    "probe_image",
    "test_images",
]

PREPROCESSOR_CONFIG = "preprocessor_config.json"
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP")
DEFAULT_MAX_IMAGE_PIXELS = 16_777_216
"""4096 × 4096: larger images are refused before they are decoded (``serve.max_image_pixels``)."""
_DATA_URL_PREFIX = "data:image/"


class ImageError(ValueError):
    """An image that cannot be used (the message says why, naming the limit if any)."""


def is_image_data_url(text: str) -> bool:
    return text.startswith(_DATA_URL_PREFIX)


def decode_data_url(url: str) -> bytes:
    """The bytes of ``data:image/…;base64,…`` (what OpenAI-style clients send)."""
    head, sep, payload = url.partition(",")
    if not sep or not head.startswith(_DATA_URL_PREFIX) or not head.endswith(";base64"):
        raise ImageError("an image must be a data URL: data:image/<png|jpeg|webp>;base64,<data>")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ImageError("the image data URL is not valid base64") from None


def probe_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> tuple[int, int]:
    """``(width, height)`` from the header alone, after the format and pixel checks of
    :func:`decode_image` (which the router runs before handing an image to a worker)."""
    with _opened(data, max_pixels) as image:
        return image.size


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Image.Image:
    """An RGB image from encoded bytes; :class:`ImageError` for anything else.

    The size is read from the header first, so a decompression bomb costs nothing; Pillow's
    own bomb check stays on as a second line.
    """
    from PIL import Image

    with _opened(data, max_pixels) as image:
        try:
            image.load()
            return image.convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise ImageError(f"undecodable image: {exc}") from None


@contextmanager
def _opened(data: bytes, max_pixels: int) -> Iterator[Image.Image]:
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except (UnidentifiedImageError, OSError, ValueError):
        raise ImageError(
            f"undecodable image ({len(data)} bytes): expected {', '.join(IMAGE_FORMATS)}"
        ) from None
    except Image.DecompressionBombError as exc:
        raise ImageError(f"image refused: {exc}") from None
    with image:
        width, height = image.size
        if width * height > max_pixels:
            raise ImageError(
                f"image of {width}×{height} pixels is above the limit of {max_pixels} pixels"
            )
        yield image


def test_images(count: int = 4, *, seed: int = 0) -> list[Image.Image]:
    """Fixed RGB images of different sizes and aspect ratios (validation, benchmarks,
    tests): smooth gradients with noise, so that resampling filters disagree visibly."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    images = []
    for i in range(count):
        k = i % 8  # sizes cycle, so any count works
        height, width = 40 + 13 * k, 56 - 5 * k + 3 * (k % 2)
        y, x = np.mgrid[0:height, 0:width]
        base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], -1)
        noisy = base + rng.normal(0, 24, size=base.shape)
        images.append(Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB"))
    return images


@dataclass(frozen=True)
class ImagePreprocessor:
    """The preprocessing of ``preprocessor_config.json``, in numpy and Pillow.

    Covers the image processors of ViT, DeiT, BEiT, ConvNeXt/ResNet (``crop_pct``), CLIP and
    SigLIP: an exact or shortest-edge resize, a center crop, rescale, normalize, channels
    first. Anything else in the file is refused when it is read, naming the key.
    """

    resize: tuple[int, int] | None
    """Exact ``(height, width)``."""
    shortest_edge: int | None
    """Resize so the shorter side has this length (aspect kept)."""
    crop: tuple[int, int] | None
    resample: int
    rescale: float | None
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None

    @classmethod
    def read(cls, directory: Path) -> ImagePreprocessor:
        path = directory / PREPROCESSOR_CONFIG
        if not path.is_file():
            raise ImageError(f"{path} is missing: an image model needs its preprocessor")
        try:
            return cls.from_config(read_json_object(path), where=str(path))
        except JsonObjectError as exc:
            raise ImageError(str(exc)) from None

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], *, where: str) -> ImagePreprocessor:
        kind = str(cfg.get("image_processor_type") or cfg.get("feature_extractor_type") or "")
        resize: tuple[int, int] | None = None
        shortest: int | None = None
        crop = (
            _pair(cfg.get("crop_size"), where, "crop_size") if cfg.get("do_center_crop") else None
        )
        if cfg.get("do_resize", True):
            size = cfg.get("size")
            if isinstance(size, int):  # old configs: square for ViT-style, edge for CLIP-style
                size = {"shortest_edge": size} if crop else {"height": size, "width": size}
            if not isinstance(size, Mapping):
                raise ImageError(f"{where}: size must be an object (got {size!r})")
            if "height" in size and "width" in size:
                resize = (_positive(size["height"], where), _positive(size["width"], where))
            elif set(size) == {"shortest_edge"}:
                shortest = _positive(size["shortest_edge"], where)
                if kind.startswith("ConvNext") and shortest < 384:
                    crop = (shortest, shortest)  # ConvNeXt: resize to edge/crop_pct, then crop
                    shortest = int(shortest / float(cfg.get("crop_pct") or 224 / 256))
                elif kind.startswith("ConvNext"):
                    resize, shortest = (shortest, shortest), None
            else:
                raise ImageError(
                    f"{where}: size {dict(size)} is not supported "
                    "(expected height and width, or shortest_edge)"
                )
        mean = std = None
        if cfg.get("do_normalize", True):
            mean = _floats(cfg.get("image_mean"), where, "image_mean")
            std = _floats(cfg.get("image_std"), where, "image_std")
        rescale = float(cfg.get("rescale_factor", 1 / 255)) if cfg.get("do_rescale", True) else None
        return cls(resize, shortest, crop, int(cfg.get("resample", 2)), rescale, mean, std)

    @property
    def output_size(self) -> tuple[int, int] | None:
        """``(height, width)`` of every preprocessed image, when it does not depend on the
        input's aspect ratio."""
        return self.crop or self.resize

    def __call__(self, images: Sequence[Image.Image]) -> np.ndarray:
        """``[N, 3, H, W]`` float32, as the image processor's ``pixel_values``."""
        return np.stack([self.one(image) for image in images])

    def one(self, image: Image.Image) -> np.ndarray:
        from PIL import Image as PILImage

        image = image.convert("RGB")
        if self.resize is not None:
            height, width = self.resize
            image = image.resize((width, height), resample=PILImage.Resampling(self.resample))
        elif self.shortest_edge is not None:
            width, height = image.size
            short, long = (width, height) if width <= height else (height, width)
            new_long = int(self.shortest_edge * long / short)
            size = (
                (self.shortest_edge, new_long)
                if width <= height
                else (new_long, self.shortest_edge)
            )
            image = image.resize(size, resample=PILImage.Resampling(self.resample))
        array = np.asarray(image)
        if self.crop is not None:
            array = _center_crop(array, self.crop)
        pixels = array.astype(np.float32)
        if self.rescale is not None:
            pixels = (array.astype(np.float64) * self.rescale).astype(np.float32)
        if self.mean is not None and self.std is not None:
            mean = np.asarray(self.mean, dtype=np.float32)
            std = np.asarray(self.std, dtype=np.float32)
            pixels = (pixels - mean) / std
        return np.ascontiguousarray(pixels.transpose(2, 0, 1), dtype=np.float32)


def _center_crop(array: np.ndarray, crop: tuple[int, int]) -> np.ndarray:
    """transformers' ``center_crop``: zero-padded where the image is smaller than the crop."""
    height, width = array.shape[:2]
    crop_h, crop_w = crop
    if height < crop_h or width < crop_w:
        padded = np.zeros((max(height, crop_h), max(width, crop_w), array.shape[2]), array.dtype)
        top, left = -(-(padded.shape[0] - height) // 2), -(-(padded.shape[1] - width) // 2)
        padded[top : top + height, left : left + width] = array
        array, height, width = padded, padded.shape[0], padded.shape[1]
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    return array[top : top + crop_h, left : left + crop_w]


def _positive(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ImageError(f"{where}: image sizes must be positive integers (got {value!r})")
    return value


def _pair(value: Any, where: str, key: str) -> tuple[int, int]:
    if isinstance(value, int):
        return (_positive(value, where), _positive(value, where))
    if isinstance(value, Mapping) and "height" in value and "width" in value:
        return (_positive(value["height"], where), _positive(value["width"], where))
    raise ImageError(f"{where}: {key} must be an integer or height and width (got {value!r})")


def _floats(value: Any, where: str, key: str) -> tuple[float, ...]:
    if isinstance(value, (int, float)):
        return (float(value),) * 3
    if (
        isinstance(value, list)
        and len(value) == 3
        and all(isinstance(v, (int, float)) for v in value)
    ):
        return tuple(float(v) for v in value)
    raise ImageError(f"{where}: {key} must be three numbers (got {value!r})")
