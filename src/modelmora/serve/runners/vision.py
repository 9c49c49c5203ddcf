"""Image models in the worker: decode, preprocess (numpy + Pillow), run, post-process.

The router has already checked each image's header (format, pixel limit); the worker decodes
the pixels and applies the checkpoint's own preprocessing (``preprocessor_config.json``, see
:mod:`modelmora.imaging`), the same code the validation gate compared with transformers'.
Images go through ONNX Runtime in chunks of :data:`IMAGES_PER_CALL`, so a request of many
images never holds more than one chunk's pixels at once.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from modelmora.imaging import ImagePreprocessor, decode_image, test_images
from modelmora.names import TEXT_TOWER
from modelmora.serve.ipc import ModelInfo, Output, RunItems, TensorSpec, WorkerSpec
from modelmora.serve.runners.base import GROWN_TOKENS, Classes, Runner, rss_bytes, trim_malloc
from modelmora.serve.runners.text import TextTokenizer, run_within_budget

__all__ = ["IMAGES_PER_CALL", "DualEncoderRunner", "ImageClassifierRunner", "ImageRunner"]

IMAGES_PER_CALL = 32


class ImageRunner(Runner):
    """A graph taking one image batch (``pixel_values`` ``[N, 3, H, W]``)."""

    def __init__(self, spec: WorkerSpec) -> None:
        super().__init__(spec)
        self.preprocess = ImagePreprocessor.read(self.dir)
        self.image_input = self.inputs[0].name

    def pixels(self, items: list[Any]) -> np.ndarray:
        """``[N, 3, H, W]`` from encoded images (decoded here) or preprocessed arrays."""
        arrays = []
        for item in items:
            if isinstance(item, bytes):
                image = decode_image(item, max_pixels=self.spec.max_image_pixels)
                arrays.append(self.preprocess.one(image))
            elif isinstance(item, np.ndarray):
                arrays.append(item.astype(np.float32, copy=False))
            else:
                raise TypeError(f"an image model cannot take {type(item).__name__} inputs")
        return np.stack(arrays)

    def run_images(self, items: list[Any], names: list[str]) -> dict[str, np.ndarray]:
        """``names`` outputs for ``items``, one ONNX Runtime call per chunk."""
        parts = []
        for start in range(0, len(items), IMAGES_PER_CALL):
            pixels = self.pixels(items[start : start + IMAGES_PER_CALL])
            parts.append(self.session.run(names, {self.image_input: pixels}))
        if len(items) > IMAGES_PER_CALL:
            self.grown = True
        return {name: np.concatenate([p[i] for p in parts]) for i, name in enumerate(names)}

    def release_memory(self) -> None:
        trim_malloc()

    def image_info(self, outputs: tuple[TensorSpec, ...]) -> ModelInfo:
        """What an image task serves: encoded images as BYTES ``image``, any number of rows."""
        return replace(
            super().info(),
            inputs=(TensorSpec("image", "BYTES", (-1,)),),
            outputs=outputs,
            batchable=True,
        )


class ImageClassifierRunner(ImageRunner):
    """Logits → softmax scores, labels from ``config.json`` ``id2label``."""

    def __init__(self, spec: WorkerSpec) -> None:
        super().__init__(spec)
        self.classes = Classes.read(self.dir, self.outputs[0])

    def warm_up(self) -> None:
        self.classify(list(self.preprocess(test_images(1))))

    def handle(self, body: Any) -> Output:
        if not isinstance(body, RunItems):
            raise TypeError(f"an image classifier cannot run {type(body).__name__}")
        return self.classify(body.items)

    def classify(self, items: list[Any]) -> Output:
        name = self.outputs[0].name
        return self.classes.outputs(self.run_images(items, [name])[name])

    def info(self) -> ModelInfo:
        return replace(self.image_info(self.classes.specs()), labels=self.classes.labels)


class DualEncoderRunner(ImageRunner):
    """An image-text model (CLIP-style): texts through the text tower, images through the
    image tower, one embedding space; a request may mix both, answered in its order."""

    def __init__(self, spec: WorkerSpec) -> None:
        super().__init__(spec)  # the image tower (the artifact's model_file)
        self.text_session = self.open_session(TEXT_TOWER)
        self.text = TextTokenizer(self.dir, self.text_session)
        self.dim = int(self.outputs[0].shape[-1])

    def warm_up(self) -> None:
        self.embed(["warm up", *self.preprocess(test_images(1))])

    def handle(self, body: Any) -> Output:
        if not isinstance(body, RunItems):
            raise TypeError(f"an image-text model cannot run {type(body).__name__}")
        return self.embed(body.items)

    def embed(self, items: list[Any]) -> Output:
        """``embedding`` ``[n, dim]`` in the items' order; ``tokens`` counts text tokens."""
        texts = [i for i, item in enumerate(items) if isinstance(item, str)]
        images = [i for i, item in enumerate(items) if not isinstance(item, str)]
        vectors = np.empty((len(items), self.dim), dtype=np.float32)
        tokens = np.zeros(len(items), dtype=np.int64)
        if texts:
            feed, mask = self.text.encode([items[i] for i in texts])
            if mask.size >= GROWN_TOKENS:  # as text encoders: give the memory back when idle
                self.grown = True
            # Within the budget as text encoders run, each part at the batch's width (the
            # model's padding kept): the worker's memory stays bounded whatever the request.
            embeds = run_within_budget(
                feed,
                mask,
                self.spec.max_batch_tokens,
                lambda part, _: {"text_embeds": self.text_session.run(["text_embeds"], part)[0]},
                keep_width=True,
            )
            vectors[texts], tokens[texts] = embeds["text_embeds"], mask.sum(axis=1)
        if images:
            name = self.outputs[0].name
            vectors[images] = self.run_images([items[i] for i in images], [name])[name]
        return Output(arrays={"embedding": vectors}, tokens=tokens, rss_bytes=rss_bytes())

    def info(self) -> ModelInfo:
        outputs = (TensorSpec("embedding", "FP32", (-1, self.dim)),)
        return replace(
            self.image_info(outputs),
            embedding_dim=self.dim,
            max_seq_length=self.text.max_seq_length,
        )
