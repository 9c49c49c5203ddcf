"""What image tasks share on the router side: image inputs checked before any worker sees them.

Images arrive as data URLs (OpenAI-style routes) or as v2 tensors: BYTES ``image`` holding
encoded PNG/JPEG/WebP, or FP32 ``pixel_values`` already preprocessed (``[n, 3, H, W]``).
Encoded images are base64-decoded and their headers checked here (format, pixel limit), so a
bad image is a 400 naming it and a decompression bomb never reaches a worker; the worker
decodes the pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from modelmora.imaging import ImageError, decode_data_url, is_image_data_url, probe_image
from modelmora.serve.errors import BadRequest, PayloadTooLarge
from modelmora.serve.tasks._text import MAX_INPUTS

if TYPE_CHECKING:
    from modelmora.serve.state import ServeState
    from modelmora.serve.tasks.base import V2Call

__all__ = ["image_bytes", "items_from_inputs", "items_from_v2"]


def image_bytes(state: ServeState, model: str, data: bytes, where: str) -> bytes:
    """``data`` if it is an image the model's worker may decode; else 400 naming ``where``."""
    try:
        probe_image(data, max_pixels=state.model(model).serve.image_pixels_limit)
    except ImageError as exc:
        raise BadRequest(f"{where}: {exc}") from None
    return data


def image_from_url(state: ServeState, model: str, url: str, where: str) -> bytes:
    try:
        data = decode_data_url(url)
    except ImageError as exc:
        raise BadRequest(f"{where}: {exc}") from None
    return image_bytes(state, model, data, where)


def items_from_inputs(
    state: ServeState, model: str, inputs: Sequence[str], *, texts: bool
) -> list[str | bytes]:
    """OpenAI-style ``input`` strings: data URLs become checked image bytes; other strings
    stay texts where the model has a text tower (``texts``), else they are refused."""
    items: list[str | bytes] = []
    for i, value in enumerate(inputs):
        if is_image_data_url(value):
            items.append(image_from_url(state, model, value, f"input[{i}]"))
        elif texts:
            items.append(value)
        else:
            raise BadRequest(
                f"input[{i}]: model {model!r} takes images, as data URLs "
                "(data:image/png;base64,…); got text"
            )
    return items


def items_from_v2(call: V2Call) -> list[Any]:
    """v2 inputs of an image model: BYTES ``image`` (encoded) or FP32 ``pixel_values``."""
    tensors = call.tensors
    if set(tensors) == {"image"}:
        arr = tensors["image"]
        if arr.dtype != np.object_:
            raise BadRequest("input 'image' must have datatype BYTES (encoded PNG, JPEG or WebP)")
        if arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr[:, 0]
        _check_rows("image", arr, 1)
        model = call.model
        return [image_bytes(call.state, model, bytes(b), f"image[{i}]") for i, b in enumerate(arr)]
    if set(tensors) == {"pixel_values"}:
        arr = tensors["pixel_values"]
        if arr.dtype != np.float32:
            raise BadRequest("input 'pixel_values' must have datatype FP32")
        _check_rows("pixel_values", arr, 4)
        if arr.shape[1] != 3:
            raise BadRequest(f"input 'pixel_values' must be [n, 3, H, W], got {list(arr.shape)}")
        return list(arr)
    raise BadRequest(
        "image models take one input: BYTES 'image' (encoded images) or FP32 'pixel_values' "
        f"(preprocessed, [n, 3, H, W]); got {sorted(tensors)}"
    )


def _check_rows(name: str, arr: np.ndarray, ndim: int) -> None:
    if arr.ndim != ndim or arr.shape[0] == 0:
        raise BadRequest(f"input '{name}' must have {ndim} dimension(s) and at least one row")
    if arr.shape[0] > MAX_INPUTS:
        raise PayloadTooLarge(
            f"input '{name}' has {arr.shape[0]} rows; a request may hold at most {MAX_INPUTS}"
        )
