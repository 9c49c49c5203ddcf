"""Text generation in the worker: continuous batching over one decoder session.

Every running sequence is a row of one batched KV cache (left-padded, masked), so a decode
step advances all of them in one ONNX Runtime call. Between steps (``SteppingRunner``) new
requests join and cancelled ones leave. New prompts are processed one call each, at most
``prefill_chunk`` prompt tokens per step over all of them, while the running rows keep
decoding; once a prompt is done its cache is merged into the batch. A finished or cancelled
row is dropped at once, and leading cache columns no row uses any more are trimmed, so
memory follows the live sequences.

Text is streamed as whole characters (a token may end inside a multi-byte UTF-8 sequence:
the rest of the character waits for the next), and any tail that could be the start of a
stop string is held back until it is known not to be one, so stop strings never leak.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelmora.decoding import DEFAULT_CONTEXT, Decoder, context_length, eos_ids, log_softmax
from modelmora.serve.ipc import (
    Chunk,
    Generate,
    ModelInfo,
    Replies,
    StepStats,
    TensorSpec,
    WorkerSpec,
)
from modelmora.serve.runners.base import (
    GROWN_TOKENS,
    SteppingRunner,
    arena_shrink_options,
    read_json,
    rss_bytes,
    trim_malloc,
)

__all__ = ["LOGITS_BUDGET_BYTES", "GenerationRunner", "TextStream", "prefill_budget"]


RSS_REPORT_S = 0.5
"""How often at most a step's stats carry the worker's resident memory."""

LOGITS_BUDGET_BYTES = 64 * 2**20
"""What one prompt call's logits may take. The exported graph computes the whole vocabulary's
logits for every prompt position, so the default 512-token chunk of Llama 3 (128,256 tokens
of vocabulary) would be 250 MiB of float32 per call; the chunk shrinks to stay within this
(130 tokens there, the whole default chunk for vocabularies up to 32k)."""


def prefill_budget(requested: int, vocab: int | None) -> int:
    """Prompt tokens per step: ``requested``, fewer if their logits would pass the budget."""
    if not vocab:
        return max(1, requested)
    return max(1, min(requested, LOGITS_BUDGET_BYTES // (vocab * 4)))


class TextStream:
    """Incremental detokenization with stop strings: what to send after each token.

    The tokenizers library's ``DecodeStream`` turns ids into text a piece at a time (it
    decodes a short window of recent ids and holds back a character still incomplete), in
    Rust: a third of the cost of decoding the window from Python, per token of every stream.
    What it has given and this has not sent is kept in ``_unsent``; any end of it that could
    be the start of a stop string waits there until it is known not to be one."""

    def __init__(self, tokenizer: Any, stop: tuple[str, ...]) -> None:
        from tokenizers.decoders import DecodeStream

        self.tokenizer = tokenizer
        self.stop = tuple(s for s in stop if s)
        self.ids: list[int] = []
        self.sent = 0
        """Characters sent so far."""
        self.stopped = False
        self._pieces = DecodeStream(skip_special_tokens=True)
        self._unsent = ""

    def push(self, token: int) -> str:
        """Add a token; the new text that is safe to send (may be empty)."""
        self.ids.append(token)
        piece = self._pieces.step(self.tokenizer, token)
        if piece:
            self._unsent += piece
        unsent, hold = self._unsent, 0
        if self.stop:
            # A stop string starts in the unsent text: any earlier start was held back.
            cut = min((i for s in self.stop if (i := unsent.find(s)) >= 0), default=-1)
            if cut >= 0:
                self.stopped, self._unsent = True, ""
                return self._send(unsent[:cut])
            hold = max(
                (k for s in self.stop for k in range(1, len(s)) if unsent.endswith(s[:k])),
                default=0,
            )
        self._unsent = unsent[len(unsent) - hold :] if hold else ""
        return self._send(unsent[: len(unsent) - hold])

    def finish(self) -> str:
        """Whatever was held back, once no more tokens come (not after a stop string): the
        rest of the whole decode, which also settles bytes that never became a character."""
        if self.stopped or not self.ids:
            return ""
        return self._send(
            str(self.tokenizer.decode(self.ids, skip_special_tokens=True))[self.sent :]
        )

    def _send(self, delta: str) -> str:
        self.sent += len(delta)
        return delta


@dataclass(eq=False)
class _Sequence:
    id: int
    body: Generate
    stream: TextStream
    rng: np.random.Generator
    prefilled: int = 0
    past: list[np.ndarray] | None = None
    completion: int = 0


class GenerationRunner(SteppingRunner):
    idle_release_s = 10.0
    """Longer than an encoder's second: ordinary load grows the arena here (32 sequences
    of ~100 positions pass GROWN_TOKENS), and the first burst after a release pays for
    growing it again (measured on the bench model: a 32-sequence round 8-29 ms slower, 1.5-
    5.5 %), so the memory goes back after a real lull, not between two bursts."""

    def __init__(self, spec: WorkerSpec) -> None:
        super().__init__(spec)
        from tokenizers import Tokenizer

        self.decoder = Decoder(self.session)
        tok_file = self.dir / "tokenizer.json"
        if not tok_file.is_file():
            raise RuntimeError(f"{tok_file} is missing: text generation needs a fast tokenizer")
        self.tokenizer = Tokenizer.from_file(str(tok_file))
        config = read_json(self.dir / "config.json") or {}
        self.context = context_length(config) or DEFAULT_CONTEXT
        self.eos = set(eos_ids(self.dir))
        vocab = self.decoder.vocab or config.get("vocab_size")
        self.chunk = prefill_budget(spec.prefill_chunk, vocab if isinstance(vocab, int) else None)
        self.kv_bytes_per_token = (
            2
            * self.decoder.layers
            * self.decoder.kv_heads
            * self.decoder.head_dim
            * np.dtype(self.decoder.kv_dtype).itemsize
        )
        self.waiting: list[_Sequence] = []  # prompts not fully processed, in arrival order
        self.rows: list[_Sequence] = []  # the decode batch, one row each
        self.past: list[np.ndarray] = []
        self.mask = np.zeros((0, 0), dtype=np.int64)
        self.next_tokens = np.zeros(0, dtype=np.int64)
        # Since the last stats(): sequences in each model call, tokens, time in calls, in steps.
        self._batches: list[int] = []
        self._tokens = 0
        self._model_seconds = 0.0
        self._step_seconds = 0.0
        self._rss_due = 0.0  # time.monotonic() from which stats() measures the RSS again

    # -- the runner interface --------------------------------------------------------------

    def default_spin(self) -> bool:
        """Off: between two decode steps the router must turn every sequence's token into an
        SSE chunk, and idle ORT threads spinning for the next step took the core it needed
        (measured on 2 cores, docs/benchmarks.md: all cores without spinning gave 10-40 % more
        tokens/s at 32 streams than one core fewer with or without spinning, or all cores
        with it). ``spin`` in the model's settings wins."""
        return False

    def info(self) -> ModelInfo:
        return ModelInfo(
            inputs=(TensorSpec("text_input", "BYTES", (1,)),),
            outputs=(TensorSpec("text_output", "BYTES", (1,)),),
            providers=self.providers,
            batchable=False,
            kv_bytes_per_token=int(self.kv_bytes_per_token),
            pid=os.getpid(),
            rss_bytes=rss_bytes(),
        )

    def warm_up(self) -> None:
        self.decoder.greedy([1, 2, 3], 2)

    def release_memory(self) -> None:
        """One one-token call that hands ORT's grown arena back, then glibc's heap: the
        arena keeps the peak of the biggest call (measured on the bench model: 105 MB warm,
        328 MB after 32 sequences of 512 tokens, 103 MB after this). The next stats()
        measures the RSS, so the router's view of the worker falls with it."""
        one = np.ones((1, 1), dtype=np.int64)
        self.decoder.forward(one, one, self.decoder.empty_past(1), arena_shrink_options())
        trim_malloc()
        self._rss_due = 0.0

    def admit(self, request_id: int, body: Any) -> None:
        if not isinstance(body, Generate):
            raise TypeError(f"a text generation model cannot run {type(body).__name__}")
        if not body.prompt_ids or len(body.prompt_ids) + body.max_tokens > self.context:
            raise ValueError(
                f"prompt ({len(body.prompt_ids)} tokens) + max_tokens ({body.max_tokens}) "
                f"must be between 1 and the context length {self.context}"
            )
        self.waiting.append(
            _Sequence(
                id=request_id,
                body=body,
                stream=TextStream(self.tokenizer, body.stop),
                rng=np.random.default_rng(body.seed),
            )
        )

    def cancel(self, request_id: int) -> None:
        self.waiting = [s for s in self.waiting if s.id != request_id]
        keep = [i for i, s in enumerate(self.rows) if s.id != request_id]
        if len(keep) != len(self.rows):
            self._keep(keep)

    def running(self) -> int:
        return len(self.waiting) + len(self.rows)

    def step(self) -> Replies:
        started = time.perf_counter()
        out = Replies()
        if self.rows:
            self._decode(out)
        fresh = self._fresh_prompts()
        if fresh:
            self._prefill_together(fresh, out)
        elif self.waiting:
            seq = self.waiting[0]
            self._prefill(seq, min(self.chunk, len(seq.body.prompt_ids) - seq.prefilled), out)
        self._step_seconds += time.perf_counter() - started
        return out

    def stats(self) -> StepStats:
        # The RSS at most twice a second (reading it costs more than the rest of the stats),
        # and whenever the worker falls idle: the figure it will hold while idle.
        now, rss = time.monotonic(), 0
        if now >= self._rss_due or not self.running():
            rss, self._rss_due = rss_bytes(), now + RSS_REPORT_S
        stats = StepStats(
            tuple(self._batches),
            self._tokens,
            self._kv_bytes(),
            self._model_seconds,
            self._step_seconds,
            rss,
        )
        self._batches, self._tokens, self._model_seconds, self._step_seconds = [], 0, 0.0, 0.0
        return stats

    # -- internals -------------------------------------------------------------------------

    def _forward(
        self, ids: np.ndarray, mask: np.ndarray, past: list[np.ndarray]
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """One model call over ``ids.shape[0]`` sequences, counted and timed for stats()."""
        started = time.perf_counter()
        result = self.decoder.forward(ids, mask, past)
        self._model_seconds += time.perf_counter() - started
        self._batches.append(ids.shape[0])
        if mask.size >= GROWN_TOKENS:  # rows × the positions they attend to
            self.grown = True
        return result

    def _kv_bytes(self) -> int:
        return sum(p.nbytes for p in self.past) + sum(
            sum(p.nbytes for p in s.past or []) for s in self.waiting
        )

    def _sample(self, seq: _Sequence, logits: np.ndarray) -> tuple[int, float | None]:
        body = seq.body
        logp = log_softmax(logits) if body.logprobs or body.temperature > 0 else None
        if body.temperature <= 0:
            token = int(logits.argmax())
        else:
            assert logp is not None
            scores = logp / body.temperature
            if body.top_k > 0 and body.top_k < scores.size:
                kth = np.partition(scores, -body.top_k)[-body.top_k]
                scores = np.where(scores >= kth, scores, -np.inf)
            probs = np.exp(scores - scores.max())
            probs /= probs.sum()
            if body.top_p < 1.0:
                order = np.argsort(-probs, kind="stable")
                cumulative = np.cumsum(probs[order])
                cut = int(np.searchsorted(cumulative, body.top_p)) + 1
                kept = np.zeros_like(probs)
                kept[order[:cut]] = probs[order[:cut]]
                probs = kept / kept.sum()
            token = int(seq.rng.choice(probs.size, p=probs))
        return token, (float(logp[token]) if body.logprobs and logp is not None else None)

    def _sample_rows(
        self, seqs: list[_Sequence], logits: np.ndarray
    ) -> list[tuple[int, float | None]]:
        """``_sample`` for each row of ``logits`` ``(rows, vocab)``; the greedy rows without
        logprobs (the common case) take one argmax over the whole batch, not one each."""
        greedy = logits.argmax(axis=-1).tolist()
        return [
            (greedy[i], None)
            if seq.body.temperature <= 0 and not seq.body.logprobs
            else self._sample(seq, logits[i])
            for i, seq in enumerate(seqs)
        ]

    def _emit(self, out: Replies, seq: _Sequence, token: int, logprob: float | None) -> bool:
        """Account for a sampled token and add its chunk to ``out``; True if it ends ``seq``."""
        seq.completion += 1
        self._tokens += 1
        finish = None
        if token in self.eos and not seq.body.ignore_eos:
            finish, text = "stop", seq.stream.finish()
        else:
            text = seq.stream.push(token)
            if seq.stream.stopped:
                finish = "stop"
            elif seq.completion >= seq.body.max_tokens:
                finish, text = "length", text + seq.stream.finish()
        data: Chunk = {"text": text}
        if logprob is not None:
            data["logprob"] = logprob
            data["token"] = self.tokenizer.id_to_token(token) or ""
        if finish is not None:
            data |= {
                "finish_reason": finish,
                "prompt_tokens": len(seq.body.prompt_ids),
                "completion_tokens": seq.completion,
            }
        out.add(seq.id, data, finish is not None)
        return finish is not None

    def _fresh_prompts(self) -> list[_Sequence]:
        """Whole new prompts that fit in one step's budget together (padded to the longest)."""
        batch: list[_Sequence] = []
        width = 0
        for seq in self.waiting:
            n = len(seq.body.prompt_ids)
            if seq.prefilled or (len(batch) + 1) * max(width, n) > self.chunk:
                break
            batch.append(seq)
            width = max(width, n)
        return batch

    def _prefill_together(self, batch: list[_Sequence], out: Replies) -> None:
        """Several whole prompts in one call (left-padded, masked), then into the batch."""
        width = max(len(s.body.prompt_ids) for s in batch)
        ids = np.zeros((len(batch), width), dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for i, seq in enumerate(batch):
            n = len(seq.body.prompt_ids)
            ids[i, width - n :], mask[i, width - n :] = seq.body.prompt_ids, 1
            self.waiting.remove(seq)
        logits, past = self._forward(ids, mask, self.decoder.empty_past(len(batch)))
        self._first_tokens(batch, logits[:, -1], past, mask, out)

    def _prefill(self, seq: _Sequence, take: int, out: Replies) -> None:
        """The next ``take`` tokens of a prompt too long to go in one step."""
        ids = seq.body.prompt_ids
        chunk = np.asarray([ids[seq.prefilled : seq.prefilled + take]], dtype=np.int64)
        end = seq.prefilled + chunk.shape[1]
        past = seq.past if seq.past is not None else self.decoder.empty_past(1)
        mask = np.ones((1, end), dtype=np.int64)
        logits, seq.past = self._forward(chunk, mask, past)
        seq.prefilled = end
        if end < len(ids):
            return
        self.waiting.remove(seq)
        past, seq.past = seq.past, None
        self._first_tokens([seq], logits[:, -1], past, mask, out)

    def _first_tokens(
        self,
        seqs: list[_Sequence],
        logits: np.ndarray,
        past: list[np.ndarray],
        mask: np.ndarray,
        out: Replies,
    ) -> None:
        """Sample each prompt's first token; the unfinished ones join the decode batch."""
        joining, tokens = [], []
        for i, (token, logprob) in enumerate(self._sample_rows(seqs, logits)):
            if not self._emit(out, seqs[i], token, logprob):
                joining.append(i)
                tokens.append(token)
        if len(joining) < len(seqs):  # some ended at their first token
            index = np.asarray(joining, dtype=np.intp)
            past, mask = [p[index] for p in past], mask[index]
        if joining:
            self._join([seqs[i] for i in joining], tokens, past, mask)

    def _join(
        self, seqs: list[_Sequence], tokens: list[int], past: list[np.ndarray], mask: np.ndarray
    ) -> None:
        """Merge prefilled rows into the decode batch, left-padding the narrower side. Each
        cache is written once into its merged array: with a 32-row batch the cache is several
        MB a layer, and padding then concatenating copied it twice per join."""
        if not self.rows:
            self.past, self.mask = past, mask
        else:
            self.past = [_stack_right(a, b) for a, b in zip(self.past, past, strict=True)]
            self.mask = _stack_right(self.mask, mask)
        self.next_tokens = np.concatenate([self.next_tokens, np.asarray(tokens, dtype=np.int64)])
        self.rows.extend(seqs)

    def _keep(self, keep: list[int]) -> None:
        """Only these rows stay; columns no remaining row attends to are trimmed."""
        self.rows = [self.rows[i] for i in keep]
        if not self.rows:
            self.past, self.mask = [], np.zeros((0, 0), dtype=np.int64)
            self.next_tokens = np.zeros(0, dtype=np.int64)
            return
        # Rows leave in the order they joined, so the rows kept are often one run of them: a
        # slice, which costs no copy while no leading column is trimmed (ONNX Runtime reads a
        # contiguous view as it is); otherwise one copy.
        rows: slice | np.ndarray = (
            slice(keep[0], keep[-1] + 1)
            if keep[-1] - keep[0] + 1 == len(keep)
            else np.asarray(keep, dtype=np.intp)
        )
        mask = self.mask[rows]
        first = int(np.argmax(mask.any(axis=0)))
        self.mask = mask[:, first:]
        self.past = [np.ascontiguousarray(p[rows, :, first:]) for p in self.past]
        self.next_tokens = self.next_tokens[rows]

    def _decode(self, out: Replies) -> None:
        batch = len(self.rows)
        self.mask = np.concatenate([self.mask, np.ones((batch, 1), np.int64)], axis=1)
        logits, self.past = self._forward(self.next_tokens[:, None], self.mask, self.past)
        keep = []
        sampled = self._sample_rows(self.rows, logits[:, -1])
        self.next_tokens[:] = [token for token, _ in sampled]
        for i, (seq, (token, logprob)) in enumerate(zip(self.rows, sampled, strict=True)):
            if not self._emit(out, seq, token, logprob):
                keep.append(i)
        if len(keep) != batch:
            self._keep(keep)


def _stack_right(top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    """``top`` rows over ``bottom`` rows, both aligned right on axis 2 for a cache
    ``(rows, heads, positions, dim)`` or axis 1 for a mask ``(rows, positions)``, zeros left
    of the narrower: one copy of each."""
    axis = 2 if top.ndim == 4 else 1
    width = max(top.shape[axis], bottom.shape[axis])
    shape = list(top.shape)
    shape[0], shape[axis] = top.shape[0] + bottom.shape[0], width
    out = np.empty(shape, dtype=top.dtype)
    for part, rows in ((top, slice(0, top.shape[0])), (bottom, slice(top.shape[0], None))):
        pad = width - part.shape[axis]
        before = (rows,) + (slice(None),) * (axis - 1)
        out[(*before, slice(0, pad))] = 0
        out[(*before, slice(pad, None))] = part
    return out
