"""Serve smoke test: `modelmora serve` on a free port, one OpenAI embeddings call, stop.

Run by scripts/demo.sh after `modelmora install`; exits non-zero if anything is off.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import openai

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
        return 0
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)


if __name__ == "__main__":
    sys.exit(main())
