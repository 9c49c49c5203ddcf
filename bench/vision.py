"""Vision serving benchmark (CPU): every contender in one run, figures side by side.

Image classification, a random ViT (ViT-Tiny shape: 12 layers, hidden 192, 224×224 images),
one PNG image per request, at 1, 8 and 32 concurrent clients:

(a) ``modelmora serve`` (router + ORT worker: decode + preprocess in the worker, dynamic
    batching), ``POST /v1/classify`` with a data URL;
(b) a naive baseline: FastAPI + a transformers ``pipeline("image-classification")`` (the
    PyTorch model), one call per request;
(c) bare ONNX Runtime in this process (decode → our preprocessing → run), at batch 1 and
    batch 32: the limit the server is measured against.

Image generation, a random Stable-Diffusion-style pipeline (UNet 32/64 channels, 64×64
images: ``make_tiny_diffusion(width=32, sample_size=32)``), fixed step count, one image per
request, one request at a time:

(a) ``modelmora serve``, ``POST /v1/images/generations`` through the ``openai`` client;
(b) the same ONNX pipeline in this process (``modelmora.diffusion``): the limit;
(c) the diffusers PyTorch pipeline.

The load generator shares the two cores with the servers; compare ratios within one run::

    .venv/bin/python bench/vision.py                  # ~4 min
    .venv/bin/python bench/vision.py --duration 3     # quicker, noisier
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _procs import free_port, stop, wait_port, wait_ready
from _quiet import library_chatter_dropped

os.environ.setdefault("USE_TF", "0")
CONCURRENCY = (1, 8, 32)
PROMPT = "a watercolor painting of a harbour at dawn"


# -- models -------------------------------------------------------------------------------
def build_classifier(root: Path) -> tuple[Path, Path]:
    import torch
    import transformers

    from modelmora.convert import convert
    from modelmora.manifest.model import ConvertSpec

    with library_chatter_dropped():
        snapshot = root / "vit"
        torch.manual_seed(0)
        config = transformers.ViTConfig(
            image_size=224,
            patch_size=16,
            hidden_size=192,
            num_hidden_layers=12,
            num_attention_heads=3,
            intermediate_size=768,
            num_labels=1000,
        )
        transformers.ViTForImageClassification(config).eval().save_pretrained(str(snapshot))
        transformers.ViTImageProcessor(size={"height": 224, "width": 224}).save_pretrained(snapshot)
        artifact = root / "vit-onnx"
        convert(snapshot, artifact, name="vit", task=None, spec=ConvertSpec())
    return snapshot, artifact


def build_diffusion(root: Path) -> tuple[Path, Path]:
    from modelmora.convert import convert
    from modelmora.manifest.model import ConvertSpec
    from modelmora.testing.tiny_models import make_tiny_diffusion

    with library_chatter_dropped():
        snapshot = make_tiny_diffusion(root / "sd", scheduler="euler", width=32, sample_size=32)
        artifact = root / "sd-onnx"
        convert(snapshot, artifact, name="sd", task=None, spec=ConvertSpec())
    return snapshot, artifact


def png_urls(count: int) -> list[str]:
    from PIL import Image

    from modelmora.imaging import test_images

    urls = []
    for image in test_images(count):
        buffer = io.BytesIO()
        image.resize((224, 224)).save(buffer, "PNG")
        urls.append("data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode())
    del Image
    return urls


# -- servers ------------------------------------------------------------------------------
def naive_server(port: int, snapshot: str) -> None:
    """FastAPI + a transformers ``pipeline("image-classification")``, one call per request
    (a sync endpoint: FastAPI's thread pool runs them): what a team writes first."""
    import transformers
    import uvicorn
    from fastapi import FastAPI
    from PIL import Image

    classify_image = transformers.pipeline("image-classification", model=snapshot, device="cpu")
    app = FastAPI()

    @app.post("/v1/classify")
    def classify(body: dict[str, Any]) -> dict[str, Any]:
        data = base64.b64decode(body["input"].split(",", 1)[1])
        image = Image.open(io.BytesIO(data)).convert("RGB")
        return {"data": classify_image(image, top_k=1)}

    print("ready", flush=True)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def start(cmd: list[str], marker: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = wait_ready(proc, marker)
    return proc, line


async def _load(url: str, model: str, images: list[str], clients: int, duration: float) -> float:
    """Images classified per second by ``clients`` concurrent clients."""
    import aiohttp

    done = errors = 0
    stop_at = time.perf_counter() + duration
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session:

        async def client(k: int) -> None:
            nonlocal done, errors
            i = k
            while time.perf_counter() < stop_at:
                body = {"model": model, "input": images[i % len(images)]}
                async with session.post(url + "/v1/classify", json=body) as r:
                    await r.read()
                    done, errors = (done + 1, errors) if r.status == 200 else (done, errors + 1)
                i += clients

        started = time.perf_counter()
        await asyncio.gather(*(client(k) for k in range(clients)))
        elapsed = time.perf_counter() - started
    if errors:
        print(f"  {errors} failed requests", file=sys.stderr)
    return done / elapsed


def classification(url: str, model: str, images: list[str], duration: float) -> dict[int, float]:
    asyncio.run(_load(url, model, images, 4, 1.0))  # warm-up
    out = {}
    for clients in CONCURRENCY:
        out[clients] = asyncio.run(_load(url, model, images, clients, duration))
        print(f"  {clients:>2} clients: {out[clients]:7.1f} images/s", file=sys.stderr, flush=True)
    return out


def bare_ort_classification(artifact: Path, images: list[str], repeats: int) -> dict[int, float]:
    """Images/s in process: decode + preprocess + ORT, at batch 1 and 32."""
    import numpy as np
    import onnxruntime as ort

    from modelmora.imaging import ImagePreprocessor, decode_data_url, decode_image

    session = ort.InferenceSession(str(artifact / "model.onnx"), providers=["CPUExecutionProvider"])
    preprocess = ImagePreprocessor.read(artifact)
    out = {}
    for batch in (1, 32):
        urls = [images[i % len(images)] for i in range(batch)]
        times = []
        for i in range(repeats + 3):
            t0 = time.perf_counter()
            pixels = np.stack([preprocess.one(decode_image(decode_data_url(u))) for u in urls])
            session.run(None, {"pixel_values": pixels})
            if i >= 3:
                times.append(time.perf_counter() - t0)
        out[batch] = batch / statistics.median(times)
    return out


def generation_serve(url: str, steps: int, repeats: int) -> float:
    import openai

    client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=600)
    args: dict[str, Any] = {"model": "sd", "prompt": PROMPT, "n": 1}
    client.images.generate(**args, extra_body={"seed": 0, "steps": 1})  # warm-up
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        client.images.generate(**args, extra_body={"seed": i, "steps": steps})
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def generation_onnx(artifact: Path, steps: int, repeats: int) -> float:
    import numpy as np

    from modelmora.diffusion import DiffusionConfig, generate, open_sessions

    sessions = open_sessions(artifact, ["CPUExecutionProvider"])
    config = DiffusionConfig.read(artifact)
    shape = (1, config.latent_channels, config.sample_size, config.sample_size)
    generate(artifact, sessions, PROMPT, np.zeros(shape, np.float32), steps=1)
    times = []
    for i in range(repeats):
        noise = np.random.default_rng(i).standard_normal(shape).astype(np.float32)
        t0 = time.perf_counter()
        generate(artifact, sessions, PROMPT, noise, steps=steps)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def generation_diffusers(snapshot: Path, steps: int, repeats: int) -> float:
    import importlib

    import torch

    d: Any = importlib.import_module("diffusers")
    pipe = d.DiffusionPipeline.from_pretrained(str(snapshot))
    pipe.set_progress_bar_config(disable=True)
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    pipe(PROMPT, num_inference_steps=1, height=size, width=size)
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        with torch.inference_mode():
            pipe(
                PROMPT,
                num_inference_steps=steps,
                height=size,
                width=size,
                generator=torch.Generator().manual_seed(i),
            )
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per load level")
    parser.add_argument("--steps", type=int, default=10, help="denoising steps per image")
    parser.add_argument("--repeats", type=int, default=5, help="images per generation figure")
    args = parser.parse_args()
    cli = Path(sys.executable).with_name("modelmora")
    with tempfile.TemporaryDirectory(prefix="modelmora-bench-vision-") as tmp:
        root = Path(tmp)
        print("building and converting the models …", file=sys.stderr, flush=True)
        vit_snapshot, vit = build_classifier(root)
        sd_snapshot, sd = build_diffusion(root)
        images = png_urls(16)

        print("(a) modelmora serve", file=sys.stderr, flush=True)
        serve, line = start(
            [
                str(cli),
                "serve",
                "--port",
                "0",
                "--model",
                f"vit={vit}",
                "--model",
                f"sd={sd}",
                "--set",
                "sd.max_steps=200",
            ],
            "http://",
        )
        url = line.split()[-1].strip()
        try:
            served = classification(url, "vit", images, args.duration)
            served_gen = generation_serve(url, args.steps, args.repeats)
        finally:
            stop(serve)

        print("(b) naive FastAPI + transformers", file=sys.stderr, flush=True)
        port = free_port()
        naive, _ = start(
            [sys.executable, __file__, "--naive-server", str(port), str(vit_snapshot)], "ready"
        )
        try:
            wait_port(port)
            naive_rates = classification(f"http://127.0.0.1:{port}", "vit", images, args.duration)
        finally:
            stop(naive)

        print("(c) in process", file=sys.stderr, flush=True)
        bare = bare_ort_classification(vit, images, repeats=10)
        onnx_gen = generation_onnx(sd, args.steps, args.repeats)
        torch_gen = generation_diffusers(sd_snapshot, args.steps, args.repeats)
    report(served, naive_rates, bare, served_gen, onnx_gen, torch_gen, args.steps)


def report(
    served: dict[int, float],
    naive: dict[int, float],
    bare: dict[int, float],
    served_gen: float,
    onnx_gen: float,
    torch_gen: float,
    steps: int,
) -> None:
    limit = max(bare.values())
    print("\n## Image classification (random ViT-Tiny shape, 224×224 PNG, one image per request)\n")
    print("| clients | modelmora images/s | naive images/s | vs naive | vs bare ORT (batch 32) |")
    print("|---:|---:|---:|---:|---:|")
    for clients in CONCURRENCY:
        print(
            f"| {clients} | {served[clients]:.1f} | {naive[clients]:.1f} | "
            f"{served[clients] / naive[clients]:.2f}× | {served[clients] / limit:.2f}× |"
        )
    print(
        f"\nBare ONNX Runtime in process: {bare[1]:.1f} images/s at batch 1, "
        f"{bare[32]:.1f} at batch 32 (decode + preprocess + run)."
    )
    print(f"\n## Image generation ({steps} steps, one 64×64 image per request)\n")
    print("| pipeline | s/image | vs in-process ONNX |")
    print("|---|---:|---:|")
    for name, value in (
        ("modelmora serve (openai client)", served_gen),
        ("ONNX pipeline in process (modelmora.diffusion)", onnx_gen),
        ("diffusers PyTorch pipeline", torch_gen),
    ):
        print(f"| {name} | {value:.3f} | {value / onnx_gen:.2f}× |")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--naive-server":
        naive_server(int(sys.argv[2]), sys.argv[3])
    else:
        main()
