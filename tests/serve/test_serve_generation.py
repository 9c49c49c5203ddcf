"""Serving a causal LM: the official ``openai`` client against a real server and worker.

The model is a tiny random Llama built and converted by the test (ModelMora's own export).
Where a test must catch the worker mid-generation it uses the worker's test gate (hold
between two decode steps) and waits on metrics, never on sleeps.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import openai
import pytest
from serve_support import Server, run_server, wait_until, worker_pids

from modelmora.testing.tiny_models import make_tiny_causal_lm

if TYPE_CHECKING:
    from modelmora.serve.runners.generation import GenerationRunner

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Where is the nearest train station?"},
]


@pytest.fixture(scope="module")
def lm(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(snapshot, artifact) of a tiny Llama with a ChatML template."""
    from modelmora.convert import convert
    from modelmora.manifest.model import ConvertSpec

    root = tmp_path_factory.mktemp("lm")
    snapshot = make_tiny_causal_lm(root / "snapshot", family="llama")
    convert(snapshot, root / "artifact", name="lm", task=None, spec=ConvertSpec())
    return snapshot, root / "artifact"


@pytest.fixture(scope="module")
def server(lm: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    bare = tmp_path_factory.mktemp("bare") / "artifact"
    shutil.copytree(lm[1], bare)
    (bare / "chat_template.jinja").unlink()  # a model without a chat template
    gate = tmp_path_factory.mktemp("gate")
    with run_server(
        {"lm": lm[1], "bare": bare, "one": lm[1], "big": lm[1]},
        *("--set", "lm.max_sequences=4", "--set", "lm.max_queue_size=1"),
        *("--set", "one.max_sequences=1"),
        *("--set", "big.max_sequences=16", "--set", "big.prefill_chunk=4096"),
        gate=gate,
    ) as srv:
        yield srv


@pytest.fixture
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def _stream_text(stream: Any) -> tuple[str, Any, str | None]:
    parts, usage, finish = [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            parts.append((getattr(choice, "delta", None) and choice.delta.content) or "")
            parts.append(getattr(choice, "text", "") or "")
            finish = choice.finish_reason or finish
    return "".join(parts), usage, finish


def test_greedy_chat_equals_pytorch_generate(client: openai.OpenAI, lm: tuple[Path, Path]) -> None:
    import torch
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(str(lm[0]))
    ids = tok.apply_chat_template(MESSAGES, add_generation_prompt=True, return_tensors="pt")
    model = transformers.AutoModelForCausalLM.from_pretrained(str(lm[0])).eval()
    with torch.no_grad():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=12,
            pad_token_id=tok.eos_token_id,
        )
    expected = tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
    reply = client.chat.completions.create(
        model="lm",
        messages=MESSAGES,
        max_tokens=12,
        temperature=0,  # type: ignore[arg-type]
    )
    assert reply.choices[0].message.content == expected
    assert reply.usage is not None and reply.usage.prompt_tokens == ids.shape[1]
    assert reply.choices[0].finish_reason in ("length", "stop")


def test_streamed_text_equals_the_whole_answer_for_the_same_seed(client: openai.OpenAI) -> None:
    args: dict[str, Any] = {
        "model": "lm",
        "messages": MESSAGES,
        "max_tokens": 24,
        "temperature": 0.9,
        "seed": 7,
    }
    whole = client.chat.completions.create(**args)
    text, usage, finish = _stream_text(
        client.chat.completions.create(**args, stream=True, stream_options={"include_usage": True})
    )
    assert text == whole.choices[0].message.content
    assert finish == whole.choices[0].finish_reason
    assert usage is not None and usage.completion_tokens == whole.usage.completion_tokens  # type: ignore[union-attr]
    again = client.chat.completions.create(**args)
    assert again.choices[0].message.content == text  # same seed, same text


def test_completions_stream_and_not(client: openai.OpenAI) -> None:
    whole = client.completions.create(
        model="lm", prompt="The quick brown", max_tokens=10, temperature=0
    )
    text, _, finish = _stream_text(
        client.completions.create(
            model="lm", prompt="The quick brown", max_tokens=10, temperature=0, stream=True
        )
    )
    assert text == whole.choices[0].text and finish == whole.choices[0].finish_reason
    assert whole.usage is not None and whole.usage.completion_tokens <= 10


def _stop_within(text: str) -> str:
    """Two printable characters from the middle of ``text``, to stop on."""
    printable = [i for i in range(3, len(text) - 3) if text[i : i + 2].isprintable()]
    if not printable:
        pytest.fail(f"the tiny model produced no printable pair to stop on: {text!r}")
    return text[printable[0] : printable[0] + 2]


def test_stop_strings_end_the_text_and_never_leak(client: openai.OpenAI) -> None:
    full = client.completions.create(model="lm", prompt="Hello", max_tokens=30, temperature=0)
    text = full.choices[0].text
    stop = _stop_within(text)
    expected = text[: text.index(stop)]
    cut = client.completions.create(
        model="lm", prompt="Hello", max_tokens=30, temperature=0, stop=[stop]
    )
    assert cut.choices[0].text == expected and cut.choices[0].finish_reason == "stop"
    streamed, _, finish = _stream_text(
        client.completions.create(
            model="lm", prompt="Hello", max_tokens=30, temperature=0, stop=[stop], stream=True
        )
    )
    assert streamed == expected and finish == "stop"


def test_a_stop_string_ends_one_sequence_of_a_batch_and_leaves_the_others_whole(
    client: openai.OpenAI, server: Server
) -> None:
    """A row that its stop string ends leaves the batch at once: the rows batched with it
    keep their own text (as each alone), and nothing is generated beyond the answers."""
    prompts = ["Hello", "Stream 1", "Stream 2"]
    alone = [
        client.completions.create(model="lm", prompt=p, max_tokens=30, temperature=0).choices[0]
        for p in prompts
    ]
    stop = _stop_within(alone[0].text)
    answers: dict[int, Any] = {}

    def one(i: int) -> None:
        answers[i] = client.completions.create(
            model="lm",
            prompt=prompts[i],
            max_tokens=30,
            temperature=0,
            stop=[stop] if i == 0 else None,
        )

    threads = [threading.Thread(target=one, args=(i,)) for i in range(3)]
    tokens = server.metric("modelmora_generated_tokens_total", model="lm")
    server.hold("lm")  # all three reach the worker before it steps: one batch
    try:
        for t in threads:
            t.start()
        wait_until(lambda: server.metric("modelmora_running_sequences", model="lm") == 3, "all in")
    finally:
        server.release("lm")
    for t in threads:
        t.join()
    cut = answers[0].choices[0]
    assert (cut.text, cut.finish_reason) == (alone[0].text[: alone[0].text.index(stop)], "stop")
    for i in (1, 2):
        whole = answers[i].choices[0]
        assert (whole.text, whole.finish_reason) == (alone[i].text, alone[i].finish_reason)
    wait_until(lambda: server.metric("modelmora_kv_cache_bytes", model="lm") == 0, "cache freed")
    # Nothing was generated beyond the answers: the stopped row left the batch.
    produced = server.metric("modelmora_generated_tokens_total", model="lm") - tokens
    assert produced == sum(a.usage.completion_tokens for a in answers.values())


def test_continuous_batching_puts_concurrent_streams_in_one_step(
    client: openai.OpenAI, server: Server
) -> None:
    before = server.metric("modelmora_decode_batch_sequences_bucket", model="lm", le="1.0")
    total_before = server.metric("modelmora_decode_batch_sequences_count", model="lm")
    parts = ("model_calls", "between_calls")
    seconds_before = [_step_seconds(server, part) for part in parts]
    results: list[str] = []

    def one(i: int) -> None:
        r = client.completions.create(
            model="lm", prompt=f"Stream {i}", max_tokens=60, temperature=0
        )
        results.append(r.choices[0].text)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    assert len(results) == 4
    # The worker's time in its steps, split into model calls and its own work between them,
    # fits in the time the requests took (reported once per step, so none is counted twice).
    spent = [_step_seconds(server, part) - b for part, b in zip(parts, seconds_before, strict=True)]
    assert all(s > 0 for s in spent) and sum(spent) < elapsed
    alone = server.metric("modelmora_decode_batch_sequences_bucket", model="lm", le="1.0") - before
    total = server.metric("modelmora_decode_batch_sequences_count", model="lm") - total_before
    assert total >= 4 * 2 and alone < total  # some tokens came from steps carrying >1 sequence


def _step_seconds(server: Server, part: str) -> float:
    return server.metric("modelmora_worker_step_seconds_total", model="lm", part=part)


def _held_steps(server: Server) -> int:
    return sum(1 for e in server.events("lm") if e["event"] == "held" and e["inputs"] == "step")


def test_a_disconnected_stream_is_dropped_from_the_worker(server: Server) -> None:
    tokens = server.metric("modelmora_generated_tokens_total", model="lm")
    held = _held_steps(server)
    body = {"model": "lm", "prompt": "Hello", "max_tokens": 200, "temperature": 0, "stream": True}
    # Held from the start, after the prompt step: a tiny model would otherwise finish all 200
    # tokens before a hold set after the first chunk reaches the worker.
    server.hold("lm", after_steps=1)
    try:
        with httpx.stream("POST", f"{server.url}/v1/completions", json=body, timeout=30) as r:
            lines = r.iter_lines()
            assert next(lines).startswith("data: ")
            wait_until(lambda: _held_steps(server) > held, "the worker held between steps")
        # The client is gone: the router frees the admission slot and sends Cancel.
        wait_until(
            lambda: server.metric("modelmora_running_sequences", model="lm") == 0, "slot freed"
        )
    finally:
        server.release("lm")
    wait_until(lambda: server.metric("modelmora_kv_cache_bytes", model="lm") == 0, "cache freed")
    produced = server.metric("modelmora_generated_tokens_total", model="lm") - tokens
    assert produced < 200 - 150  # far from the 200 asked for: it stopped within a step
    ok = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x").completions.create(
        model="lm", prompt="Hello", max_tokens=3, temperature=0
    )
    assert ok.choices[0].text is not None


def test_a_stream_through_the_framework_lane_runs_to_its_end(server: Server) -> None:
    """A body the hot lane hands to FastAPI (a ``+json`` media type) streams all its tokens:
    the replayed ``receive`` must not tell the stream's disconnect listener the client left."""
    body = {"model": "lm", "prompt": "Hello", "max_tokens": 12, "temperature": 0}
    whole = httpx.post(f"{server.url}/v1/completions", json=body, timeout=30).json()
    raw = json.dumps({**body, "stream": True, "stream_options": {"include_usage": True}})
    events = []
    json_ish = {"content-type": "application/vnd.example+json"}
    url = f"{server.url}/v1/completions"
    with httpx.stream("POST", url, content=raw, headers=json_ish, timeout=30) as r:
        assert r.status_code == 200
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    docs = [json.loads(e) for e in events[:-1]]
    assert "".join(c["text"] for d in docs for c in d["choices"]) == whole["choices"][0]["text"]
    assert docs[-1]["usage"]["completion_tokens"] == 12


def test_context_overflow_is_400_with_both_numbers(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model="lm", prompt="Hello there", max_tokens=10_000)
    message = str(err.value)
    assert "max_tokens (10000)" in message and "maximum context of 256 tokens" in message


def test_full_queue_is_429_and_a_deadline_before_the_first_token_is_504(
    server: Server, client: openai.OpenAI
) -> None:
    """max_sequences=4 and max_queue_size=1: four held streams, one waiting, then 429."""
    server.hold("lm")
    body = {"model": "lm", "prompt": "Hi", "max_tokens": 5, "temperature": 0}
    done: list[int] = []

    def post() -> None:
        done.append(httpx.post(f"{server.url}/v1/completions", json=body, timeout=60).status_code)

    threads = [threading.Thread(target=post) for _ in range(5)]
    try:
        for t in threads:
            t.start()
        wait_until(
            lambda: server.metric("modelmora_waiting_sequences", model="lm") == 1, "1 waiting"
        )
        with pytest.raises(openai.RateLimitError):
            client.completions.create(model="lm", prompt="Hi", max_tokens=5)
        r = httpx.post(
            f"{server.url}/v1/completions", json=body, timeout=30, headers={"X-Timeout-Ms": "200"}
        )
        assert r.status_code in (429, 504)  # queue still full: 429 wins over waiting
    finally:
        server.release("lm")
        for t in threads:
            t.join()
    assert done == [200] * 5
    server.hold("lm")
    try:
        r = httpx.post(
            f"{server.url}/v1/completions", json=body, timeout=30, headers={"X-Timeout-Ms": "300"}
        )
        assert r.status_code == 504 and "deadline" in r.json()["error"]["message"]
    finally:
        server.release("lm")


def test_a_deadline_after_the_first_token_ends_with_length(server: Server) -> None:
    held = _held_steps(server)
    server.hold("lm", after_steps=1)  # the prompt step (first token) runs, then the worker holds
    try:
        r = httpx.post(
            f"{server.url}/v1/completions",
            timeout=60,
            headers={"X-Timeout-Ms": "1000"},
            json={"model": "lm", "prompt": "Hi", "max_tokens": 200, "temperature": 0},
        )
        assert _held_steps(server) > held, (r.text, server.events("lm")[-6:])
    finally:
        server.release("lm")
    assert r.status_code == 200, r.text
    assert r.headers["x-modelmora-deadline"] == "exceeded"
    body = r.json()
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 1


def test_a_worker_killed_mid_stream_sends_an_error_event_then_recovers(
    server: Server, client: openai.OpenAI
) -> None:
    held = _held_steps(server)
    # Held from the start, after the prompt step (see the disconnect test); greedy, so no
    # sampled end-of-sequence can end the stream before the kill.
    server.hold("lm", after_steps=1)
    try:
        stream = client.completions.create(
            model="lm", prompt="Hello", max_tokens=200, temperature=0, stream=True
        )
        chunks = iter(stream)
        next(chunks)
        wait_until(lambda: _held_steps(server) > held, "lm's worker held between steps")
        pid = server.events("lm")[-1]["pid"]
        assert pid in worker_pids(server.proc.pid)
        assert server.metric("modelmora_kv_cache_bytes", model="lm") > 0
        os.kill(pid, signal.SIGKILL)
    finally:
        server.release("lm")
    with pytest.raises(openai.APIError, match="worker"):
        for _ in chunks:
            pass
    # What the dead worker held is not reported as held.
    wait_until(lambda: server.metric("modelmora_kv_cache_bytes", model="lm") == 0, "gauge 0")
    ok = client.completions.create(model="lm", prompt="Hello", max_tokens=3, temperature=0)
    assert ok.choices[0].text is not None


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"messages": [{"role": "robot", "content": "x"}]}, "role"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "user", "content": 3}]}, "content"),
        (
            {"messages": [{"role": "user", "content": "x"}], "stop": ["a", "b", "c", "d", "e"]},
            "stop",
        ),
        ({"messages": [{"role": "user", "content": "x"}], "n": 2}, "n"),
        ({"messages": [{"role": "user", "content": "x"}], "temperature": 5}, "temperature"),
        ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 10**6}, "max_tokens"),
    ],
)
def test_bad_chat_requests_name_the_field(
    server: Server, body: dict[str, Any], fragment: str
) -> None:
    r = server.http.post("/v1/chat/completions", json={"model": "lm", **body})
    assert r.status_code in (400, 422), r.text
    assert fragment in r.json()["error"]["message"]


def test_invalid_utf8_and_a_model_without_template(server: Server) -> None:
    r = server.http.post(
        "/v1/chat/completions",
        content=b'{"model": "lm", "messages": [{"role": "user", "content": "\xff"}]}',
        headers={"content-type": "application/json"},
    )
    assert r.status_code in (400, 422) and "error" in r.json()
    r = server.http.post("/v1/chat/completions", json={"model": "bare", "messages": MESSAGES})
    assert r.status_code == 400
    assert "chat_template.jinja" in r.json()["error"]["message"]
    assert "/v1/completions" in r.json()["error"]["message"]


def test_v2_generate_and_generate_stream(server: Server) -> None:
    body = {"text_input": "The quick brown", "parameters": {"max_tokens": 8}}
    whole = server.http.post("/v2/models/lm/generate", json=body).json()
    assert whole["model_name"] == "lm" and whole["finish_reason"] in ("length", "stop")
    with server.http.stream("POST", "/v2/models/lm/generate_stream", json=body) as r:
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    assert "".join(e["text_output"] for e in events) == whole["text_output"]
    assert events[-1]["finish_reason"] == whole["finish_reason"]
    infer = {"inputs": [{"name": "text_input", "shape": [1], "datatype": "BYTES", "data": ["x"]}]}
    r = server.http.post("/v2/models/lm/infer", json=infer)
    assert r.status_code == 400 and "generate" in r.json()["error"]


def test_priorities_order_admission(server: Server) -> None:
    """One sequence at a time ("one"): the held one runs, then the higher priority goes first."""
    server.hold("one")
    finished: list[str] = []

    def post(tag: str, priority: int) -> None:
        body = {"model": "one", "prompt": "Hi", "max_tokens": 3, "temperature": 0}
        r = httpx.post(
            f"{server.url}/v1/completions",
            json=body,
            timeout=60,
            headers={"X-Priority": str(priority)},
        )
        assert r.status_code == 200, r.text
        finished.append(tag)

    first = threading.Thread(target=post, args=("first", 0))
    first.start()
    wait_until(lambda: server.metric("modelmora_running_sequences", model="one") == 1, "running")
    low = threading.Thread(target=post, args=("low", 0))
    low.start()
    wait_until(lambda: server.metric("modelmora_waiting_sequences", model="one") == 1, "1 waiting")
    high = threading.Thread(target=post, args=("high", 5))
    high.start()
    wait_until(lambda: server.metric("modelmora_waiting_sequences", model="one") == 2, "2 waiting")
    server.release("one")
    for t in (first, low, high):
        t.join()
    assert finished == ["first", "high", "low"]


def test_serving_generation_never_loads_torch(server: Server, client: openai.OpenAI) -> None:
    client.completions.create(model="lm", prompt="Hi", max_tokens=2)
    processes = [server.proc.pid, *worker_pids(server.proc.pid)]
    assert len(processes) >= 2  # the router and at least lm's worker
    for pid in processes:
        maps = Path(f"/proc/{pid}/maps").read_text()
        assert "libtorch" not in maps, f"process {pid} loaded torch"
    assert any("onnxruntime" in Path(f"/proc/{p}/maps").read_text() for p in processes[1:])


def test_the_decoder_reads_its_vocabulary_from_the_graph(lm: tuple[Path, Path]) -> None:
    """What the prompt chunk's logits budget is computed from."""
    from modelmora.decoding import Decoder

    _, artifact = lm
    config = json.loads((artifact / "config.json").read_text())
    assert Decoder.load(artifact / "model.onnx").vocab == config["vocab_size"]


def test_text_stream_deltas_add_up_to_the_full_decode(lm: tuple[Path, Path]) -> None:
    """Incremental detokenization with the model's byte-level BPE: for random ids (many
    invalid UTF-8 byte runs), with and without a stop string, the streamed deltas equal the
    full decode (cut at the stop)."""
    from tokenizers import Tokenizer

    _assert_deltas_add_up(Tokenizer.from_file(str(lm[1] / "tokenizer.json")), 512)


def test_text_stream_deltas_add_up_for_a_sentencepiece_style_tokenizer() -> None:
    """The same for Llama 2's kind of tokenizer: ``▁`` for spaces, byte fallback tokens
    (``<0xE2>``) for characters outside the vocabulary, the leading space stripped from the
    whole text only: a piece decoded alone would differ from its place in the text."""
    from tokenizers import Tokenizer, decoders, models, normalizers, trainers

    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>", fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence(
        [
            decoders.Replace("▁", " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(" ", 1, 0),
        ]
    )
    specials = ["<unk>", "<s>", "</s>", *(f"<0x{i:02X}>" for i in range(256))]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials)
    tok.train_from_iterator(
        ["héllo wörld — the quick brown fox ✓ jumps über the lazy dog"] * 50, trainer
    )
    for text in ("héllo wörld — the quick", "日本語 ✓ fox", " a leading space"):
        _assert_deltas_add_up(tok, 0, tok.encode(text).ids)
    _assert_deltas_add_up(tok, tok.get_vocab_size())


def _assert_deltas_add_up(tok: Any, vocab: int, ids: list[int] | None = None) -> None:
    """``ids``, else 200 random sequences of ids below ``vocab``."""
    import random

    from modelmora.serve.runners.generation import TextStream

    rng = random.Random(0)
    runs = (
        [ids]
        if ids is not None
        else [[rng.randrange(0, vocab) for _ in range(rng.randrange(1, 120))] for _ in range(200)]
    )
    for run in runs:
        full = tok.decode(run, skip_special_tokens=True)
        plain = TextStream(tok, ())
        assert "".join(plain.push(t) for t in run) + plain.finish() == full
        if len(full) < 4:
            continue
        stop = full[len(full) // 2 : len(full) // 2 + 2]
        cut = TextStream(tok, (stop,))
        parts = []
        for t in run:
            parts.append(cut.push(t))
            if cut.stopped:
                break
        text = "".join(parts) + cut.finish()
        assert text == full[: full.index(stop)] and stop not in text


def test_rows_joining_and_leaving_the_batch_keep_their_solo_texts(lm: tuple[Path, Path]) -> None:
    """The worker's batch bookkeeping, in process: sequences with different prompt lengths
    join at different steps (the batch's cache padded on the left, then the newcomer's),
    a long prompt is processed in chunks while others decode, and rows leave from the
    middle, the end and the front (a copy, a slice, a slice with trimmed columns). Each
    greedy text equals the same sequence's text run alone."""
    from modelmora.serve.ipc import Generate

    runner = _runner(lm[1], prefill_chunk=8)
    # (step it arrives at, prompt length, tokens) of each sequence.
    plan = {1: (0, 5, 12), 2: (0, 3, 4), 3: (2, 3, 10), 4: (3, 20, 6), 5: (5, 3, 2)}

    def run(ids: list[int]) -> dict[int, str]:
        texts = dict.fromkeys(ids, "")
        done: set[int] = set()
        step = 0
        while len(done) < len(ids):
            for i in ids:
                arrives, length, tokens = plan[i]
                if (arrives if len(ids) > 1 else 0) == step:
                    prompt = [(7 * i + 3 * k) % 500 + 1 for k in range(length)]
                    runner.admit(i, Generate(prompt, tokens, temperature=0, ignore_eos=True))
            replies = runner.step()
            for rid, body, last in zip(replies.ids, replies.bodies, replies.last, strict=True):
                assert isinstance(body, dict)
                texts[rid] += body["text"]
                if last:
                    done.add(rid)
            step += 1
            assert step < 100
        assert runner.running() == 0 and runner.stats().kv_bytes == 0
        return texts

    together = run(list(plan))
    for i in plan:
        assert together[i] == run([i])[i], f"row {i}"


def test_the_runner_gives_back_what_a_big_batch_grew(lm: tuple[Path, Path]) -> None:
    """ONNX Runtime's arena keeps the peak of the biggest call for the session's life: after
    32 prompts of 240 tokens in one call the worker's memory stays grown until the runner,
    idle, releases it (the worker loop calls ``release_memory`` after ``idle_release_s``)."""
    from modelmora.serve.ipc import Generate
    from modelmora.serve.runners.base import rss_bytes

    runner = _runner(lm[1], prefill_chunk=32 * 240)
    runner.warm_up()
    warm = rss_bytes()
    assert not runner.grown
    for i in range(32):
        prompt = [(7 * i + 3 * k) % 500 + 1 for k in range(240)]
        runner.admit(i, Generate(prompt, 4, temperature=0, ignore_eos=True))
    while runner.running():
        runner.step()
    grown = rss_bytes()
    assert runner.grown and grown - warm > 50 * 2**20, (warm, grown)
    runner.release_memory()
    released = rss_bytes()
    assert released - warm < (grown - warm) / 4, (warm, grown, released)
    assert runner.stats().rss_bytes == released  # measured again for the router


def test_a_generating_worker_reports_the_memory_it_gives_back(
    server: Server, lm: tuple[Path, Path]
) -> None:
    """The router's figure for a generating worker's memory (what ``--memory-budget`` and
    its gauge read) follows the worker: after a big batch and ``idle_release_s`` idle the worker
    gives back what ORT's arena grew and reports its resident memory with its step stats."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(lm[1] / "tokenizer.json"))
    prompt = ""
    while len(tok.encode(prompt).ids) < 220:
        prompt += "the quick brown fox jumps over the lazy dog near the station "
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    before = set(worker_pids(server.proc.pid))
    client.completions.create(model="big", prompt="Hello", max_tokens=1)
    (pid,) = set(worker_pids(server.proc.pid)) - before
    warm = _rss(pid)

    def one() -> None:
        r = client.completions.create(model="big", prompt=prompt, max_tokens=8, temperature=0)
        assert r.usage is not None and r.usage.prompt_tokens >= 220

    threads = [threading.Thread(target=one) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    def reported_and_given_back() -> bool:
        gauge = server.metric("modelmora_worker_rss_bytes", model="big")
        now = _rss(pid)
        return abs(gauge - now) < 2**20 and now - warm < 30 * 2**20

    wait_until(reported_and_given_back, "the worker's memory given back and reported")


def _runner(artifact: Path, prefill_chunk: int) -> GenerationRunner:
    """The worker's generation runner on ``artifact``, in this process (CPU)."""
    from modelmora.serve.ipc import WorkerSpec
    from modelmora.serve.runners.generation import GenerationRunner

    spec = WorkerSpec(
        name="lm",
        artifact_dir=str(artifact),
        onnx_file="model.onnx",
        task="text-generation",
        provider="CPUExecutionProvider",
        prefill_chunk=prefill_chunk,
    )
    return GenerationRunner(spec)


def _rss(pid: int) -> int:
    """Resident memory of ``pid``, as the worker measures its own (``/proc/PID/statm``)."""
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
