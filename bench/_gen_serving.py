"""Serving side of ``bench/generate.py --serving``: concurrent streams against three contenders.

(a) ``modelmora serve`` (router + worker, continuous batching), streamed ``/v1/completions``;
(b) a naive baseline: FastAPI + transformers ``generate``, one request at a time (a lock),
    no streaming (its TTFT is its whole answer, which is what a client of it waits for);
(c) the limit: ``modelmora.decoding`` in this process, all N sequences in one batch from the
    first step (no router, no HTTP, no arrivals), the same thread count as (b); a pass of it
    is at least three runs and at least ``MIN_REQUESTS`` prompts (their prompt times are its
    TTFTs), its tokens/s all their tokens over all their time, as a pass of (a) over its
    rounds;
(c1) the same with the worker's session settings (ORT's default threads, spinning off, or
    what ``--serve-set threads=… spin=…`` gives it), which splits the gap between (a) and
    (c) into what serving costs and what the worker's settings cost.

For (a) the bench also prints where its worker's time went in its fastest pass, from the
server's own metrics (``modelmora_worker_step_seconds_total``, ``modelmora_decode_batch_
sequences``): the share of the wall time inside model calls, between them (sampling,
detokenizing, joining and dropping rows) and neither (waiting for requests, sending), and
the sequences per model call, which (c) keeps at N throughout.

Every request generates exactly ``new_tokens`` tokens (``ignore_eos``), so all three do the
same work. Aggregate tokens/s = all generated tokens / wall time of the level (first request
sent → last answer read). The load generator (asyncio + aiohttp) shares the 2 cores.

Each contender runs ``--passes`` passes of every level, (a), (c) and (c1) interleaved (one
pass of each level in turn), so a slow spell of the shared VM falls on all of them rather
than on whichever ran then; a contender's tokens/s is its fastest pass (a pass of each is
measured the same way, so like is compared with like), its TTFT percentiles are over the
requests of all its passes, and the ratio of the medians of the passes is printed beside it.
(Before passes, (c) was the fastest of its runs against one pass of (a): the fastest single
batch against every round of (a), arrivals and all.)
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from _procs import free_port, stop, wait_port, wait_ready
from pydantic import TypeAdapter

PROMPT = "Stream {i}: the quick brown fox jumps over the lazy dog near the station"
MIN_REQUESTS = 8
"""Requests per level at least, so the TTFT percentiles at 1 stream rest on more than two."""


def naive_server(port: int, snapshot: str, threads: int) -> None:
    import threading

    import torch
    import transformers
    import uvicorn
    from fastapi import FastAPI

    torch.set_num_threads(threads)
    tok = transformers.AutoTokenizer.from_pretrained(snapshot)
    model = transformers.AutoModelForCausalLM.from_pretrained(snapshot).eval()
    lock = threading.Lock()
    app = FastAPI()

    @app.post("/v1/completions")
    def complete(body: dict[str, Any]) -> dict[str, Any]:  # sync: FastAPI's thread pool
        ids = tok(body["prompt"], return_tensors="pt").input_ids
        n = int(body["max_tokens"])
        with lock, torch.inference_mode():
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                max_new_tokens=n,
                min_new_tokens=n,
                pad_token_id=0,
            )
        text = tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
        return {
            "choices": [{"text": text, "index": 0, "finish_reason": "length"}],
            "usage": {"prompt_tokens": ids.shape[1], "completion_tokens": n},
        }

    print("ready", flush=True)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


async def _one(session: Any, url: str, i: int, new: int, stream: bool) -> tuple[float, int]:
    """One request; (time to its first token, tokens generated). The client shares the 2
    cores with the server it measures, so it does as little per token as it can: it reads
    what the socket has (not line by line), notes when the first event arrived and parses
    only the usage event at the end."""
    body = {
        "model": "lm",
        "prompt": PROMPT.format(i=i),
        "max_tokens": new,
        "temperature": 0,
        "ignore_eos": True,
        "stream": stream,
        "stream_options": {"include_usage": True} if stream else None,
    }
    started = time.perf_counter()
    async with session.post(f"{url}/v1/completions", json=body) as r:
        r.raise_for_status()
        if not stream:
            doc = await r.json()
            return time.perf_counter() - started, int(doc["usage"]["completion_tokens"])
        ttft, parts = None, []
        async for data in r.content.iter_any():
            parts.append(data)
            if ttft is None and b"data: {" in b"".join(parts):  # the first token's event
                ttft = time.perf_counter() - started
    events = b"".join(parts).split(b"\n\n")
    usage = next(e for e in reversed(events) if e.startswith(b"data: {") and b'"usage"' in e)
    tokens = int(json.loads(usage[6:])["usage"]["completion_tokens"])
    return (ttft if ttft is not None else time.perf_counter() - started), tokens


class Worker(NamedTuple):
    """Where (a)'s worker spent a level, from the server's own metrics."""

    in_calls: float
    """Share of the level's wall time inside model calls."""
    between_calls: float
    """Share in the worker's own work between them (sampling, detokenizing, rows)."""
    rows_per_call: float
    """Sequences per model call, on average."""


class Pass(NamedTuple):
    tok_s: float
    ttfts: list[float]
    """Seconds, one per request (or, in process, per prompt run)."""
    worker: Worker | None = None


_WORKER_METRICS = (
    ("modelmora_worker_step_seconds_total", "model_calls"),
    ("modelmora_worker_step_seconds_total", "between_calls"),
    ("modelmora_decode_batch_sequences_sum", None),
    ("modelmora_decode_batch_sequences_count", None),
)


async def _worker_metrics(session: Any, url: str) -> list[float]:
    from prometheus_client.parser import text_string_to_metric_families

    async with session.get(f"{url}/metrics") as r:
        text = await r.text()
    samples = {
        (s.name, s.labels.get("part")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    return [samples.get(key, 0.0) for key in _WORKER_METRICS]


async def _level(
    url: str, streams: int, rounds: int, new: int, stream: bool, ours: bool = False
) -> Pass:
    """``ours``: also read where the worker's time went from the server's metrics."""
    import aiohttp

    connector = aiohttp.TCPConnector(limit=streams + 4)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await _one(session, url, 0, 4, stream)  # warm-up: the worker loads
        before = await _worker_metrics(session, url) if ours else []
        ttfts: list[float] = []
        started = time.perf_counter()

        async def user(u: int) -> int:
            total = 0
            for k in range(rounds):
                ttft, tokens = await _one(session, url, u * rounds + k, new, stream)
                ttfts.append(ttft)
                total += tokens
            return total

        tokens = sum(await asyncio.gather(*(user(u) for u in range(streams))))
        wall = time.perf_counter() - started
        if not ours:
            return Pass(tokens / wall, ttfts)
        in_calls, between, rows, calls = (
            b - a for a, b in zip(before, await _worker_metrics(session, url), strict=True)
        )
    return Pass(tokens / wall, ttfts, Worker(in_calls / wall, between / wall, rows / max(calls, 1)))


def in_process(
    artifact: Path, streams: int, new: int, threads: int, prompt_tokens: int, spin: bool = True
) -> Pass:
    from modelmora.decoding import Decoder

    decoder = Decoder.load(artifact / "model.onnx", threads=threads, spin=spin)
    prompts = np.random.default_rng(0).integers(1, 600, size=(streams, prompt_tokens))
    decoder.greedy_batch(prompts, 4)
    # As many prompts as (a) and (b) answer at least, for the TTFT percentiles (each run's
    # prompt time is the TTFT of all its sequences).
    runs = [decoder.greedy_batch(prompts, new) for _ in range(max(3, -(-MIN_REQUESTS // streams)))]
    wall = sum(r.prompt_s + float(r.step_s.sum()) for r in runs)
    return Pass(streams * new * len(runs) / wall, [r.prompt_s for r in runs])


class Figures(NamedTuple):
    """A contender at one level over its passes."""

    tok_s: float
    """The fastest pass."""
    median_tok_s: float
    ttft_p50_ms: float
    ttft_p95_ms: float

    @classmethod
    def of(cls, passes: list[Pass]) -> Figures:
        ttfts = [t for p in passes for t in p.ttfts]
        q = statistics.quantiles(ttfts, n=20) if len(ttfts) > 1 else [ttfts[0]] * 19
        rates = [p.tok_s for p in passes]
        p50, p95 = statistics.median(ttfts) * 1000, q[18] * 1000
        return cls(max(rates), statistics.median(rates), p50, p95)


def run(snapshot: Path, artifact: Path, args: Any) -> None:
    levels = [int(x) for x in args.streams.split(",")]
    new, threads, passes = args.new_tokens, args.threads, range(args.passes)
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(artifact / "tokenizer.json"))
    tok_len = len(tokenizer.encode(PROMPT.format(i=10)).ids)

    def rounds(streams: int) -> int:
        return max(args.rounds, -(-MIN_REQUESTS // streams))

    settings = dict(kv.split("=", 1) for kv in args.serve_set)
    worker_threads = int(settings.get("threads", 0))  # 0: ORT's default, as in the worker
    # As `serve --set` reads it (pydantic's bool); unset: the generation runner's default, off.
    worker_spin = TypeAdapter(bool).validate_python(settings.get("spin", False))
    worker = f"{worker_threads or 'default'} thr, spin {'on' if worker_spin else 'off'}"

    cli = Path(sys.executable).with_name("modelmora")
    mm = subprocess.Popen(
        [
            str(cli),
            "serve",
            "--port",
            "0",
            "--model",
            f"lm={artifact}",
            "--set",
            f"lm.max_sequences={max(levels)}",
            "--set",
            "lm.max_queue_size=4096",
            *(a for kv in args.serve_set for a in ("--set", f"lm.{kv}")),
            "--preload",
            "lm",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    url = wait_ready(mm, "ready on").split("ready on ")[1].strip()
    ours: dict[int, list[Pass]] = {n: [] for n in levels}
    limit: dict[int, list[Pass]] = {n: [] for n in levels}
    limit_worker: dict[int, list[Pass]] = {n: [] for n in levels}
    try:
        # In turn; each in-process session is freed before the server's next level (an ORT
        # session that spun for its last call would otherwise slow what runs beside it).
        for _ in passes:
            for n in levels:
                limit[n].append(in_process(artifact, n, new, threads, tok_len))
                limit_worker[n].append(
                    in_process(artifact, n, new, worker_threads, tok_len, worker_spin)
                )
                ours[n].append(asyncio.run(_level(url, n, rounds(n), new, True, ours=True)))
    finally:
        stop(mm)

    port = free_port()
    naive = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).with_name("generate.py")),
            "--naive-server",
            str(port),
            str(snapshot),
            str(threads),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    wait_ready(naive, "ready")
    wait_port(port)
    theirs: dict[int, list[Pass]] = {n: [] for n in levels}
    try:
        for _ in passes:
            for n in levels:
                naive_url = f"http://127.0.0.1:{port}"
                theirs[n].append(asyncio.run(_level(naive_url, n, rounds(n), new, False)))
    finally:
        stop(naive)

    print(
        f"serving: {new} new tokens per request (ignore_eos), prompt ~{tok_len} tokens, "
        f"{args.rounds} requests per stream (at least {MIN_REQUESTS} per level), {threads} "
        f"threads for (b) and (c), the worker of (a) and (c1): {worker}; "
        f"{args.passes} passes each: tokens/s of the fastest, TTFT over all requests"
    )
    print(
        f"{'streams':<8}{'contender':<26}{'tokens/s':>10}{'TTFT p50 ms':>13}{'TTFT p95 ms':>13}"
        f"{'vs naive':>10}{'vs limit':>10}"
    )
    for n in levels:
        a, b, c = Figures.of(ours[n]), Figures.of(theirs[n]), Figures.of(limit[n])
        c1 = Figures.of(limit_worker[n])
        for name, r in (
            ("(a) modelmora serve", a),
            ("(b) naive FastAPI+HF", b),
            ("(c) in-process limit", c),
            (f"(c1) {worker}", c1),
        ):
            print(
                f"{n:<8}{name:<26}{r.tok_s:>10.1f}{r.ttft_p50_ms:>13.2f}{r.ttft_p95_ms:>13.2f}"
                f"{r.tok_s / b.tok_s:>9.2f}x{r.tok_s / c.tok_s:>9.2f}x"
            )
        print(
            f"{'':<8}(a) / (c1): {a.tok_s / c1.tok_s:.2f}x (serving's own cost at the worker's "
            f"settings); medians of the passes: (a) / (c) {a.median_tok_s / c.median_tok_s:.2f}x"
        )
        passes_of = {"a": ours[n], "c": limit[n]}
        print(
            f"{'':<8}passes, tokens/s: "
            + "; ".join(
                f"({k}) " + ", ".join(f"{p.tok_s:.0f}" for p in v) for k, v in passes_of.items()
            )
        )
        fastest = max(ours[n], key=lambda p: p.tok_s).worker
        if fastest is not None:
            waiting = max(0.0, 1 - fastest.in_calls - fastest.between_calls)
            print(
                f"{'':<8}(a)'s worker in that pass: {fastest.in_calls:.0%} of the wall time in "
                f"model calls, {fastest.between_calls:.0%} between them, {waiting:.0%} waiting "
                f"or sending; {fastest.rows_per_call:.1f} sequences per model call ((c): {n})"
            )
