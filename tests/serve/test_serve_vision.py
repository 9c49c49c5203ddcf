"""Vision models through the real CLI: lock → install → `modelmora serve`, then real clients.

One project holds a tiny ViT classifier, a tiny CLIP dual encoder and a tiny
Stable-Diffusion-style pipeline (all built here from configs). ``install`` converts,
validates and benchmarks them; the server is queried with the official ``openai`` client
(embeddings with images, image generation), ``tritonclient`` (v2 with BYTES images) and
httpx, and the answers are checked against PyTorch references computed in the test.
Deadlines and progress are caught with the worker's test gate, never with sleeps.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from serve_support import CLI, Server, cosine, run_server, wait_until

from modelmora.imaging import test_images
from modelmora.testing.tiny_models import (
    IMAGE_LABELS,
    make_tiny_clip,
    make_tiny_diffusion,
    make_tiny_image_classifier,
)

pytestmark = pytest.mark.timeout(900)

FAST = "benchmark: {batch_sizes: [1], warmup: 1, iterations: 2, steps: [2]}"
MANIFEST = f"""\
models:
  vit:
    source: ./models/vit
    {FAST}
  clip:
    source: ./models/clip
    {FAST}
  sd:
    source: ./models/sd
    validate: {{steps: 2}}
    serve: {{max_steps: 30, max_images: 2}}
    {FAST}
"""


def data_url(image: Any, fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("vision-project")
    make_tiny_image_classifier(root / "models" / "vit", family="vit")
    make_tiny_clip(root / "models" / "clip")
    make_tiny_diffusion(root / "models" / "sd", scheduler="euler")
    (root / "modelmora.yml").write_text(MANIFEST)
    home = root / "home"
    env = {**os.environ, "MODELMORA_HOME": str(home)}
    done = subprocess.run(
        [str(CLI), "-C", str(root), "install", "--json"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert {m["name"]: m["installed"] for m in report["models"]} == {
        "vit": True,
        "clip": True,
        "sd": True,
    }
    return root, home


@pytest.fixture(scope="module")
def server(
    project: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    root, home = project
    gate = tmp_path_factory.mktemp("gate")
    with run_server({}, project=root, gate=gate, env={"MODELMORA_HOME": str(home)}) as srv:
        yield srv


@pytest.fixture
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def test_list_shows_the_vision_models_installed(project: tuple[Path, Path]) -> None:
    root, home = project
    env = {**os.environ, "MODELMORA_HOME": str(home)}
    shown = subprocess.run(
        [str(CLI), "-C", str(root), "show", "sd"], env=env, capture_output=True, text=True
    )
    assert shown.returncode == 0, shown.stderr
    assert "steps" in shown.stdout and "ms/image p50" in shown.stdout
    # A local source's revision is a 71-character digest: on one line, whole, at 80 columns.
    assert re.search(r"revision sha256:[0-9a-f]{64}\n", shown.stdout), shown.stdout


def test_images_are_classified_like_pytorch_over_http_and_v2(
    server: Server, project: tuple[Path, Path]
) -> None:
    import torch
    import transformers
    import tritonclient.http as triton

    root, _ = project
    snapshot = root / "models" / "vit"
    images = test_images(3)
    processor = transformers.AutoImageProcessor.from_pretrained(str(snapshot), use_fast=False)
    model = transformers.AutoModelForImageClassification.from_pretrained(str(snapshot)).eval()
    with torch.no_grad():
        logits = model(**processor(images, return_tensors="pt")).logits.numpy()
    expected = [IMAGE_LABELS[i] for i in logits.argmax(axis=1)]

    formats = ["PNG", "WEBP", "PNG"]  # lossless, so the pixels are the reference's
    body = {"model": "vit", "input": [data_url(i, f) for i, f in zip(images, formats, strict=True)]}
    r = server.http.post("/v1/classify", json={**body, "top_k": 2})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert [d["label"] for d in data] == expected
    assert all(len(d["scores"]) == 2 for d in data)

    encoded = []
    for image in images:
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        encoded.append(buffer.getvalue())
    v2 = triton.InferenceServerClient(server.url.removeprefix("http://"))
    image_input = triton.InferInput("image", [len(encoded)], "BYTES")
    image_input.set_data_from_numpy(np.array(encoded, dtype=np.object_))
    answer = v2.infer("vit", [image_input])
    assert [b.decode() for b in answer.as_numpy("label")] == expected
    np.testing.assert_allclose(answer.as_numpy("logits"), logits, atol=1e-4)


def test_clip_embeds_texts_and_images_in_one_space_like_pytorch(
    client: openai.OpenAI, project: tuple[Path, Path]
) -> None:
    import torch
    import transformers

    root, _ = project
    snapshot = root / "models" / "clip"
    images, texts = test_images(2), ["a photo of a cat", "two dogs on a beach"]
    reply = client.embeddings.create(
        model="clip", input=[texts[0], data_url(images[0]), texts[1], data_url(images[1])]
    )
    served = np.array([d.embedding for d in reply.data], dtype=np.float32)
    assert reply.usage.prompt_tokens > 0  # the texts' tokens
    model = transformers.CLIPModel.from_pretrained(str(snapshot)).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(snapshot))
    processor = transformers.CLIPImageProcessor.from_pretrained(str(snapshot))
    with torch.no_grad():
        text = model.get_text_features(**tokenizer(texts, padding=True, return_tensors="pt"))
        image = model.get_image_features(**processor(images, return_tensors="pt"))
    expected = np.stack([text[0], image[0], text[1], image[1]])
    assert cosine(served, expected).min() > 0.9999


def test_images_are_generated_through_the_openai_client_like_diffusers(
    client: openai.OpenAI, project: tuple[Path, Path]
) -> None:
    import torch
    from diffusers import DiffusionPipeline
    from PIL import Image

    args: dict[str, Any] = {"model": "sd", "prompt": "a red bicycle", "n": 2}
    extra = {"seed": 11, "steps": 6}
    first = client.images.generate(**args, response_format="b64_json", extra_body=extra)
    again = client.images.generate(**args, extra_body=extra)
    assert [d.b64_json for d in first.data] == [d.b64_json for d in again.data]  # same seed
    assert first.data[0].b64_json != first.data[1].b64_json  # two different images
    pngs = [Image.open(io.BytesIO(base64.b64decode(d.b64_json or ""))) for d in first.data]
    assert [p.size for p in pngs] == [(16, 16), (16, 16)]

    # The same noise through the diffusers PyTorch pipeline gives the same images.
    root, _ = project
    pipe = DiffusionPipeline.from_pretrained(str(root / "models" / "sd"))
    pipe.set_progress_bar_config(disable=True)
    noise = np.random.default_rng(11).standard_normal((2, 4, 8, 8)).astype(np.float32)
    reference = pipe(
        ["a red bicycle"] * 2,
        num_inference_steps=6,
        height=16,
        width=16,
        latents=torch.from_numpy(noise),
        output_type="np",
    ).images
    served = np.stack([np.asarray(p, dtype=np.float32) / 255 for p in pngs])
    mse = float(((served - reference) ** 2).mean())
    assert 10 * np.log10(1 / max(mse, 1e-12)) > 35  # only the 8-bit rounding differs


@pytest.mark.parametrize(
    ("model", "path", "body", "fragment"),
    [
        ("vit", "/v1/classify", {"input": "data:image/png;base64,AAAA"}, "undecodable image"),
        ("vit", "/v1/classify", {"input": "data:image/png;base64,@@"}, "not valid base64"),
        ("vit", "/v1/classify", {"input": "a cat"}, "takes images"),
        ("vit", "/v1/classify", {"input": "GIF"}, "expected PNG, JPEG, WEBP"),
        ("vit", "/v1/classify", {"input": "BOMB"}, "above the limit of 16777216 pixels"),
        ("vit", "/v1/embeddings", {"input": "x"}, "serves image-classification"),
        ("sd", "/v1/images/generations", {"prompt": "x " * 40}, "at most 32"),
        ("sd", "/v1/images/generations", {"prompt": "x", "size": "64x64"}, "sizes: 16x16"),
        ("sd", "/v1/images/generations", {"prompt": "x", "steps": 31}, "at most 30"),
        ("sd", "/v1/images/generations", {"prompt": "x", "n": 3}, "at most 2 images"),
        ("sd", "/v1/images/generations", {"prompt": "x", "response_format": "url"}, "b64_json"),
    ],
)
def test_bad_inputs_are_400_naming_the_problem(
    server: Server, model: str, path: str, body: dict[str, Any], fragment: str
) -> None:
    from PIL import Image

    if body.get("input") == "GIF":
        body = {"input": data_url(Image.new("RGB", (8, 8)), "GIF")}
    if body.get("input") == "BOMB":  # 5000 × 4000 pixels in a few kB: refused from its header
        body = {"input": data_url(Image.new("L", (5000, 4000)))}
    r = server.http.post(path, json={"model": model, **body})
    assert r.status_code == 400, r.text
    assert fragment in r.json()["error"]["message"]
    assert server.http.get("/v2/health/ready").status_code == 200  # nothing crashed


def _generate(server: Server, result: list[httpx.Response], **headers: str) -> None:
    body = {"model": "sd", "prompt": "a lighthouse", "n": 1, "steps": 20, "seed": 1}
    result.append(
        httpx.post(f"{server.url}/v1/images/generations", json=body, headers=headers, timeout=120)
    )


def test_progress_is_visible_and_a_deadline_ends_generation_saying_how_far_it_got(
    server: Server,
) -> None:
    # Held after 3 steps: the running generation's progress is visible in the metrics.
    server.hold("sd", after_steps=3)
    answers: list[httpx.Response] = []
    worker = threading.Thread(target=_generate, args=(server, answers))
    try:
        worker.start()
        wait_until(
            lambda: server.metric("modelmora_image_progress_ratio", model="sd") == 3 / 20,
            "3 of 20 steps in the metrics",
        )
    finally:
        server.release("sd")
        worker.join()
    assert answers[0].status_code == 200, answers[0].text
    assert server.metric("modelmora_image_progress_ratio", model="sd") == 0  # none running
    assert server.metric("modelmora_denoising_steps_total", model="sd") >= 20

    # A deadline that passes while the worker is held after one step: 504, saying so.
    server.hold("sd", after_steps=1)
    late: list[httpx.Response] = []
    try:
        _generate(server, late, **{"X-Timeout-Ms": "500"})
    finally:
        server.release("sd")
    assert late[0].status_code == 504, late[0].text
    assert "after 1 of 20 denoising steps" in late[0].json()["error"]["message"]
    ok: list[httpx.Response] = []
    _generate(server, ok)  # the cancelled generation left the worker free
    assert ok[0].status_code == 200
