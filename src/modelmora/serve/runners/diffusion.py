"""Text-to-image in the worker: one request at a time, one denoising step per loop turn.

A :class:`~modelmora.serve.runners.base.SteppingRunner`: between two steps the worker reads
the pipe, so a cancelled request (client gone, deadline) stops within a step, and after
each step it reports progress (a chunk), which the router turns into metrics. The last
reply carries the images, PNG-encoded. The graphs run through :mod:`modelmora.diffusion`,
the code the validation gate compared with the diffusers pipeline.
"""

from __future__ import annotations

import io
from collections import OrderedDict
from typing import Any

import numpy as np

from modelmora.diffusion import (
    DiffusionConfig,
    Generation,
    PromptTokenizer,
    prompt_embeddings,
    to_uint8,
)
from modelmora.serve.ipc import GenerateImages, ModelInfo, Output, Replies, WorkerSpec
from modelmora.serve.runners.base import SteppingRunner, rss_bytes

__all__ = ["DiffusionRunner"]


class DiffusionRunner(SteppingRunner):
    def __init__(self, spec: WorkerSpec) -> None:
        super().__init__(spec)  # the UNet (the artifact's model_file)
        self.text_encoder = self.open_session("text_encoder/model.onnx")
        self.vae_decoder = self.open_session("vae_decoder/model.onnx")
        self.config = DiffusionConfig.read(self.dir)
        self.waiting: OrderedDict[int, GenerateImages] = OrderedDict()
        self.current: tuple[int, Generation] | None = None

    def warm_up(self) -> None:
        tokenizer = PromptTokenizer(self.dir, self.config.max_tokens)
        side = self.config.sample_size
        run = self._start(
            GenerateImages(tokenizer.encode("warm up"), None, 1, side, side, 1, 1.0, 0)
        )
        run.step(self.session)
        run.decode(self.vae_decoder)

    def info(self) -> ModelInfo:
        return ModelInfo(
            inputs=(),
            outputs=(),
            providers=self.providers,
            batchable=False,
            max_seq_length=self.config.max_tokens,
            pid=super().info().pid,
            rss_bytes=rss_bytes(),
        )

    def _start(self, body: GenerateImages) -> Generation:
        scale = self.config.vae_scale
        shape = (body.n, self.config.latent_channels, body.height // scale, body.width // scale)
        noise = np.random.default_rng(body.seed).standard_normal(shape).astype(np.float32)
        embeds = prompt_embeddings(self.text_encoder, body.prompt_ids, body.negative_ids)
        return Generation.start(
            self.config, embeds, noise, steps=body.steps, guidance=body.guidance
        )

    def admit(self, request_id: int, body: Any) -> None:
        if not isinstance(body, GenerateImages):
            raise TypeError(f"a text-to-image model cannot run {type(body).__name__}")
        self.waiting[request_id] = body

    def cancel(self, request_id: int) -> None:
        self.waiting.pop(request_id, None)
        if self.current is not None and self.current[0] == request_id:
            self.current = None

    def running(self) -> int:
        return len(self.waiting) + (self.current is not None)

    def step(self) -> Replies:
        if self.current is None:
            request_id, body = self.waiting.popitem(last=False)
            self.current = (request_id, self._start(body))
        request_id, run = self.current
        run.step(self.session)
        out = Replies()
        out.add(request_id, {"done": run.done, "steps": run.steps}, last=False)
        if run.finished:
            self.current = None
            images = np.empty(run.latents.shape[0], dtype=np.object_)
            images[:] = [_png(image) for image in to_uint8(run.decode(self.vae_decoder))]
            out.add(request_id, Output(arrays={"images": images}, rss_bytes=rss_bytes()), True)
        return out


def _png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, "PNG")
    return buffer.getvalue()
