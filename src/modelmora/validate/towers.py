"""The validation gate for image-text dual encoders: each ONNX tower against PyTorch.

Texts (``DEFAULT_SENTENCES``, tokenized as serving tokenizes) through ``text_model.onnx``
against ``get_text_features``; the fixed test images through the artifact's preprocessing
and ``vision_model.onnx`` against transformers' image processor and ``get_image_features``,
with the two preprocessings compared apart (``preprocessing``), as for image classifiers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modelmora.convert.towers import load_dual_encoder
from modelmora.imaging import ImagePreprocessor, test_images
from modelmora.names import IMAGE_TOWER, TEXT_TOWER
from modelmora.records.validation import OutputComparison
from modelmora.validate.inputs import text_context, tokenize

__all__ = ["check_dual_encoder"]


def check_dual_encoder(
    snapshot: Path,
    artifact: Path,
    *,
    sentences: Sequence[str],
    compare: Callable[[str, np.ndarray, np.ndarray], OutputComparison],
    session: Callable[[Path], Any],
    trust_remote_code: bool,
) -> list[OutputComparison]:
    import torch

    from modelmora.validate.torch_ref import transformers_pixel_values

    model = load_dual_encoder(snapshot, name=snapshot.name, trust_remote_code=trust_remote_code)
    encoded = tokenize(artifact, sentences, max_length=text_context(artifact) or 512)
    feeds = {k: encoded[k] for k in ("input_ids", "attention_mask")}
    (text,) = session(artifact / TEXT_TOWER).run(["text_embeds"], feeds)
    ours = ImagePreprocessor.read(artifact)(test_images())
    theirs = transformers_pixel_values(snapshot, test_images())
    (image,) = session(artifact / IMAGE_TOWER).run(["image_embeds"], {"pixel_values": ours})
    with torch.no_grad():
        ref_text = model.get_text_features(**{k: torch.from_numpy(v) for k, v in feeds.items()})
        ref_image = model.get_image_features(pixel_values=torch.from_numpy(theirs))
    return [
        compare("preprocessing", ours, theirs),
        compare("text_embeds", np.asarray(text), ref_text.numpy()),
        compare("image_embeds", np.asarray(image), ref_image.numpy()),
    ]
