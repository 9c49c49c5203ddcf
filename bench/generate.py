"""Token generation on a random Llama-family model (CPU), the contenders side by side:

(a) ``modelmora.decoding`` (the chosen runtime): our own KV-cache loop in numpy over the
    optimum export with a plain ONNX Runtime session,
(b) ONNX Runtime GenAI's C++ loop on the same graph (our ``genai_config.json``), the
    alternative it was measured against,
(c) PyTorch eager ``generate`` (transformers, the same weights, the same thread count).

All run in this process, one after another, on the same fixed prompt (seeded ids), greedy,
for a fixed number of new tokens; each figure is the median of ``--repeats`` runs. Decode
tokens/s counts the tokens after the first; TTFT is prompt processing up to the first token.
The ids of (a) and (b) are checked against (c). ``--sequences`` adds aggregate figures for
several sequences decoded together (the ONNX runtimes only). Usage::

    .venv/bin/python bench/generate.py                    # 4 layers, hidden 256, vocab 8192
    .venv/bin/python bench/generate.py --new-tokens 64 --repeats 7
    .venv/bin/python bench/generate.py --serving      # serve vs naive vs limit, 1/8/32 streams
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _quiet import library_chatter_dropped

from modelmora.bench.core import _peak_rss_mb, _reset_peak_rss

os.environ.setdefault("USE_TF", "0")


def build(root: Path, layers: int, hidden: int, vocab: int) -> tuple[Path, Path]:
    from modelmora.convert import convert
    from modelmora.manifest.model import ConvertSpec
    from modelmora.testing.tiny_models import make_tiny_causal_lm

    with library_chatter_dropped():
        snapshot = make_tiny_causal_lm(
            root / "lm",
            vocab_size=vocab,
            hidden_size=hidden,
            layers=layers,
            heads=max(hidden // 64, 1),
            kv_heads=max(hidden // 128, 1),
            max_positions=1024,
        )
        out = root / "onnx"
        convert(snapshot, out, name="lm", task="text-generation", spec=ConvertSpec())
    return snapshot, out


Runner = Callable[[np.ndarray, int], tuple[list[int], float, float]]
"""(prompt ids (1, n), new tokens) → (new ids, ttft seconds, decode seconds)."""


def genai_runner(artifact: Path, threads: int) -> Runner:
    import json

    import onnxruntime_genai as og

    if threads:  # this run's own copy of the artifact: pin GenAI's session threads too
        path = artifact / "genai_config.json"
        config = json.loads(path.read_text())
        config["model"]["decoder"]["session_options"]["intra_op_num_threads"] = threads
        path.write_text(json.dumps(config))
    model = og.Model(str(artifact))

    def run(prompt: np.ndarray, new: int) -> tuple[list[int], float, float]:
        params = og.GeneratorParams(model)
        params.set_search_options(
            max_length=prompt.shape[1] + new, do_sample=False, batch_size=prompt.shape[0]
        )
        gen = og.Generator(model, params)
        t0 = time.perf_counter()
        gen.append_tokens(prompt.astype(np.int32))
        gen.generate_next_token()
        t1 = time.perf_counter()
        for _ in range(new - 1):
            gen.generate_next_token()
        t2 = time.perf_counter()
        ids = [int(t) for t in gen.get_sequence(0)[prompt.shape[1] :]]
        return ids, t1 - t0, t2 - t1

    return run


def numpy_loop_runner(artifact: Path, threads: int) -> Runner:
    from modelmora.decoding import Decoder

    decoder = Decoder.load(artifact / "model.onnx", threads=threads)

    def run(prompt: np.ndarray, new: int) -> tuple[list[int], float, float]:
        run = decoder.greedy_batch(prompt, new)
        return run.ids[0].tolist(), run.prompt_s, float(run.step_s.sum())

    return run


def torch_runner(snapshot: Path, threads: int) -> Runner:
    import torch
    import transformers

    if threads:
        torch.set_num_threads(threads)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(snapshot)).eval()

    def run(prompt: np.ndarray, new: int) -> tuple[list[int], float, float]:
        ids = torch.from_numpy(prompt.astype(np.int64))
        mask = torch.ones_like(ids)
        with torch.inference_mode():
            t0 = time.perf_counter()
            first = model.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=1,
                                   min_new_tokens=1, pad_token_id=0)  # fmt: skip
            t1 = time.perf_counter()
            out = model.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=new,
                                 min_new_tokens=new, pad_token_id=0)  # fmt: skip
            t2 = time.perf_counter()
        del first
        # generate() redoes the prompt: its decode time is the whole call minus one TTFT.
        return out[0, prompt.shape[1] :].tolist(), t1 - t0, (t2 - t1) - (t1 - t0)

    return run


def measure(
    run: Runner, prompt: np.ndarray, new: int, repeats: int
) -> dict[str, float | list[int]]:
    """Median TTFT and aggregate decode tokens/s (all rows of ``prompt`` decode together)."""
    run(prompt, new)  # warm-up
    ttfts, rates, ids = [], [], []
    for _ in range(repeats):
        ids, ttft, decode = run(prompt, new)
        ttfts.append(ttft)
        rates.append(prompt.shape[0] * (new - 1) / decode)
    return {
        "ttft_ms": statistics.median(ttfts) * 1000,
        "tok_s": statistics.median(rates),
        "ids": ids,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads for all three")
    parser.add_argument(
        "--sequences", default="4,16", help="also decode this many sequences together (ONNX only)"
    )
    parser.add_argument(
        "--serving",
        action="store_true",
        help="instead: modelmora serve vs a naive server vs the in-process limit (streams)",
    )
    parser.add_argument("--streams", default="1,8,32", help="--serving: concurrent streams")
    parser.add_argument("--rounds", type=int, default=2, help="--serving: requests per stream")
    parser.add_argument(
        "--passes", type=int, default=3, help="--serving: passes of every level per contender"
    )
    parser.add_argument(
        "--serve-set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="--serving: extra `serve --set lm.FIELD=VALUE` settings (repeatable)",
    )
    parser.add_argument("--naive-server", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.naive_server:
        from _gen_serving import naive_server

        port, snapshot_dir, threads = args.naive_server
        naive_server(int(port), snapshot_dir, int(threads))
        return
    with tempfile.TemporaryDirectory(prefix="modelmora-bench-gen-") as tmp:
        snapshot, artifact = build(Path(tmp), args.layers, args.hidden, args.vocab)
        if args.serving:
            from _gen_serving import run

            run(snapshot, artifact, args)
            return
        rng = np.random.default_rng(0)
        prompt = rng.integers(1, min(args.vocab, 600), size=(1, args.prompt_tokens))
        counts = [int(x) for x in args.sequences.split(",") if x]
        results: dict[str, dict[str, float | list[int]]] = {}
        per_count: dict[str, dict[int, dict[str, float | list[int]]]] = {}
        # One runtime at a time, each freed before the next: an idle ORT session's threads
        # (and PyTorch's OpenMP threads) keep spinning for a while after their last call and
        # would slow whatever runs beside them on 2 cores (measured: batched figures fell 2-3x).
        for name, make in (
            ("ORT GenAI", lambda: genai_runner(artifact, args.threads)),
            ("modelmora (chosen)", lambda: numpy_loop_runner(artifact, args.threads)),
        ):
            _reset_peak_rss()
            runner = make()
            results[name] = measure(runner, prompt, args.new_tokens, args.repeats)
            per_count[name] = {
                n: measure(runner, np.repeat(prompt, n, axis=0), args.new_tokens, args.repeats)
                for n in counts
            }
            results[name]["rss_mb"] = _peak_rss_mb()
            del runner
            gc.collect()
        _reset_peak_rss()
        results["PyTorch eager"] = measure(
            torch_runner(snapshot, args.threads), prompt, args.new_tokens, args.repeats
        )
        results["PyTorch eager"]["rss_mb"] = _peak_rss_mb()
        batched = {
            n: (per_count["ORT GenAI"][n], per_count["modelmora (chosen)"][n]) for n in counts
        }
    report(args, results, batched)


def report(
    args: argparse.Namespace,
    results: dict[str, dict[str, float | list[int]]],
    batched: dict[int, tuple[dict[str, float | list[int]], dict[str, float | list[int]]]],
) -> None:
    torch_rate = _num(results["PyTorch eager"]["tok_s"])
    torch_ids = results["PyTorch eager"]["ids"]
    print(
        f"model: Llama-family, {args.layers} layers, hidden {args.hidden}, vocab {args.vocab}; "
        f"prompt {args.prompt_tokens} tokens, {args.new_tokens} new, 1 sequence, "
        f"{args.threads} threads, median of {args.repeats}"
    )
    print(
        f"{'runtime':<22}{'decode tok/s':>14}{'vs PyTorch':>12}{'TTFT ms':>10}"
        f"{'peak RSS MB':>13}  ids = PyTorch"
    )
    for name, r in results.items():
        rate, ttft, rss = _num(r["tok_s"]), _num(r["ttft_ms"]), _num(r["rss_mb"])
        same = "yes" if r["ids"] == torch_ids else "NO"
        print(
            f"{name:<22}{rate:>14.1f}{rate / torch_rate:>11.2f}x{ttft:>10.2f}{rss:>13.0f}  {same}"
        )
    print("(peak RSS: whole process, reset before each runtime; torch is imported in all)")
    if batched:
        print(
            f"\n{'sequences':<10}{'GenAI tok/s':>13}{'loop tok/s':>12}{'GenAI/loop':>12}"
            f"{'GenAI TTFT ms':>15}{'loop TTFT ms':>14}"
        )
    for n, (g, loop) in batched.items():
        gr, lr = _num(g["tok_s"]), _num(loop["tok_s"])
        print(
            f"{n:<10}{gr:>13.1f}{lr:>12.1f}{gr / lr:>11.2f}x{_num(g['ttft_ms']):>15.2f}"
            f"{_num(loop['ttft_ms']):>14.2f}"
        )


def _num(value: float | list[int]) -> float:
    assert isinstance(value, float | int)
    return float(value)


if __name__ == "__main__":
    main()
