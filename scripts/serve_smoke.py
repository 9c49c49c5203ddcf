"""Serve smoke test: `modelmora serve` on a free port, one OpenAI embeddings call, one
streamed chat completion (the tiny random Llama: gibberish, but really generated) and one
image classified (the tiny random ViT: arbitrary labels, but really computed), stop.

Run by scripts/demo.sh after `modelmora install`; exits non-zero if anything is off.
"""

from __future__ import annotations

import base64
import io
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import openai

from modelmora.imaging import test_images

READY = "modelmora serve: ready on "
REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    cli = Path(sys.executable).with_name("modelmora")
    server = subprocess.Popen(
        [str(cli), "-C", str(REPO), "serve", "--port", "0", "--preload", "minilm"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        url = ""
        for line in server.stdout:
            if line.startswith(READY):
                url = line[len(READY) :].strip()
                break
        if not url:
            print("serve smoke: the server exited before it was ready", file=sys.stderr)
            return 1
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused")
        sentences = ["A man is eating food.", "Someone is having a meal.", "The stock fell."]
        result = client.embeddings.create(model="minilm", input=sentences)
        vectors = np.array([d.embedding for d in result.data])
        sims = vectors @ vectors.T
        print(f"serve smoke: {url} /v1/embeddings -> {vectors.shape[0]} x {vectors.shape[1]}")
        print(f"  similarity(meal, food)  = {sims[0, 1]:.3f}")
        print(f"  similarity(stock, food) = {sims[0, 2]:.3f}")
        print(f"  usage: {result.usage.prompt_tokens} prompt tokens")
        if vectors.shape != (3, 384) or not sims[0, 1] > sims[0, 2]:
            print("serve smoke: unexpected embeddings", file=sys.stderr)
            return 1
        return chat(client, url) or classify(url)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)


def chat(client: openai.OpenAI, url: str) -> int:
    print(f"serve smoke: {url} /v1/chat/completions (stream) -> ", end="", flush=True)
    stream = client.chat.completions.create(
        model="tiny-chat",
        messages=[{"role": "user", "content": "Where is the nearest train station?"}],
        max_tokens=24,
        seed=1,
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage, finish = [], None, None
    for chunk in stream:
        for choice in chunk.choices:
            piece = choice.delta.content or ""
            text.append(piece)
            print(repr(piece)[1:-1], end="", flush=True)
            finish = choice.finish_reason or finish
        usage = chunk.usage or usage
    print()
    if usage is None or finish not in ("stop", "length") or usage.completion_tokens < 1:
        print("serve smoke: the chat stream ended without usage or finish_reason", file=sys.stderr)
        return 1
    print(f"  {usage.completion_tokens} tokens, finish_reason {finish} (random weights: gibberish)")
    return 0


def classify(url: str) -> int:
    """One generated PNG as a data URL through ``/v1/classify``; five labels, softmax scores."""
    buffer = io.BytesIO()
    test_images(1)[0].save(buffer, "PNG")
    image = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    reply = httpx.post(
        f"{url}/v1/classify", json={"model": "tiny-vit", "input": [image]}, timeout=120
    )
    print(f"serve smoke: {url} /v1/classify (one PNG) -> HTTP {reply.status_code}")
    if reply.status_code != 200:
        print(f"serve smoke: {reply.text}", file=sys.stderr)
        return 1
    answer = reply.json()["data"][0]
    scores = {s["label"]: s["score"] for s in answer["scores"]}
    print(f"  label {answer['label']!r} ({answer['score']:.3f}); random weights: arbitrary")
    labels = ["bird", "cat", "dog", "fish", "horse"]
    if sorted(scores) != labels or abs(sum(scores.values()) - 1) > 1e-4:
        print(f"serve smoke: unexpected classification {answer}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
