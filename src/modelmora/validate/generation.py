"""The validation gate for decoder-only language models: greedy decoding against PyTorch.

Fixed prompts of several lengths (one longer than the sliding window when the model has
one) are decoded greedily for ``new_tokens`` tokens by the ONNX graph (through
``modelmora.decoding``, with its KV cache) and by PyTorch ``generate(do_sample=False)`` on
the same weights. Float artifacts pass when every prompt's ids are identical and the first
step's logits are within ``atol``/``rtol``/``min_cosine``. Quantized artifacts cannot be
expected to reproduce every id, so they are judged on a fixed text instead: teacher-forced
top-1 agreement ≥ ``quantized_min_top1`` and perplexity ≤ ``quantized_max_ppl_ratio`` × the
reference's, plus logits cosine ≥ ``int8_min_cosine``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelmora.convert.detect import read_config
from modelmora.decoding import DEFAULT_CONTEXT, Decoder, context_length, eos_ids, log_softmax
from modelmora.errors import ModelMoraError
from modelmora.manifest.model import ValidateSpec
from modelmora.records.validation import OutputComparison, PromptCheck

__all__ = ["PROMPTS", "GenerationVerdict", "check_generation"]

PROMPTS: tuple[str, ...] = (
    "Hello",
    "The quick brown fox jumps over the lazy dog.",
    "Where is the nearest train station? I need to get to the city before the night, "
    "and the last bus has already gone.",
)
_FIXED_TEXT = (
    "A model is only as good as the data it was trained on. The quick brown fox jumps over "
    "the lazy dog, and the dog does not seem to mind at all."
)


@dataclass(frozen=True)
class GenerationVerdict:
    passed: bool
    summary: str
    outputs: list[OutputComparison]
    checks: list[PromptCheck]
    top1_agreement: float | None = None
    perplexity_ratio: float | None = None


def _prompt_ids(tokenizer: Any, model_dir: Path, new_tokens: int) -> list[list[int]]:
    config = read_config(model_dir)
    limit = (context_length(config) or DEFAULT_CONTEXT) - new_tokens
    prompts = [tokenizer.encode(p).ids for p in PROMPTS]
    window = config.get("sliding_window")
    if isinstance(window, int) and config.get("use_sliding_window", True) and window < limit:
        long: list[int] = []
        while len(long) <= window:
            long += tokenizer.encode(" " + PROMPTS[-1]).ids
        prompts.append(long[: window + 8])
    return [p[:limit] for p in prompts if p]


def _reference(
    model: Any, ids: list[int], new_tokens: int, eos: list[int]
) -> tuple[list[int], np.ndarray]:
    import torch

    with torch.no_grad():
        prompt = torch.tensor([ids], dtype=torch.long)
        mask = torch.ones_like(prompt)
        logits = model(input_ids=prompt, attention_mask=mask).logits[0, -1].float().numpy()
        out = model.generate(
            prompt,
            attention_mask=mask,
            do_sample=False,
            max_new_tokens=new_tokens,
            eos_token_id=eos or None,
            pad_token_id=eos[0] if eos else 0,
        )
    return [int(t) for t in out[0, len(ids) :]], logits


def _perplexity(logits: np.ndarray, ids: list[int]) -> float:
    logp = log_softmax(logits[:-1])
    nll = -logp[np.arange(len(ids) - 1), ids[1:]]
    return float(np.exp(nll.mean()))


def check_generation(
    reference_dir: Path,
    onnx_path: Path,
    *,
    spec: ValidateSpec,
    quantized: bool,
    trust_remote_code: bool,
) -> GenerationVerdict:
    from tokenizers import Tokenizer

    from modelmora.convert.hf import load_task_model
    from modelmora.validate.core import compare

    tok_file = reference_dir / "tokenizer.json"
    if not tok_file.is_file():
        raise ModelMoraError(f"{reference_dir} has no tokenizer.json: cannot build the prompts")
    tokenizer = Tokenizer.from_file(str(tok_file))
    decoder = Decoder.load(onnx_path)
    model = load_task_model(
        reference_dir, task="text-generation", trust_remote_code=trust_remote_code
    )
    new_tokens = spec.generation_new_tokens
    eos = eos_ids(reference_dir)
    outputs: list[OutputComparison] = []
    checks: list[PromptCheck] = []
    for i, ids in enumerate(_prompt_ids(tokenizer, reference_dir, new_tokens)):
        ours = decoder.greedy(ids, new_tokens, eos)
        ref_ids, ref_logits = _reference(model, ids, new_tokens, eos)
        assert ours.first_logits is not None
        outputs.append(
            compare(
                f"logits[prompt {i}]",
                ours.first_logits[None, :],
                ref_logits[None, :],
                spec=spec,
                quantized=quantized,
            )
        )
        mismatch = next(
            (k for k, (a, b) in enumerate(zip(ours.new_ids, ref_ids, strict=False)) if a != b),
            None if len(ours.new_ids) == len(ref_ids) else min(len(ours.new_ids), len(ref_ids)),
        )
        checks.append(
            PromptCheck(
                prompt_tokens=len(ids),
                onnx_ids=ours.new_ids,
                reference_ids=ref_ids,
                first_mismatch=mismatch,
            )
        )
    top1 = ratio = None
    problems = [o.reason or "" for o in outputs if not o.passed]
    if quantized:
        import torch

        text = tokenizer.encode(_FIXED_TEXT).ids
        ours_logits = decoder.teacher_forced_logits(text)
        with torch.no_grad():
            ref = model(input_ids=torch.tensor([text])).logits[0].float().numpy()
        top1 = float((ours_logits.argmax(-1) == ref.argmax(-1)).mean())
        ratio = _perplexity(ours_logits, text) / _perplexity(ref, text)
        if top1 < spec.min_top1:
            problems.append(f"top-1 agreement {top1:.3f} < quantized_min_top1 {spec.min_top1}")
        if ratio > spec.max_ppl_ratio:
            problems.append(
                f"perplexity ratio {ratio:.3f} > quantized_max_ppl_ratio {spec.max_ppl_ratio}"
            )
    else:
        for i, check in enumerate(checks):
            k = check.first_mismatch
            if k is not None:
                onnx_id = check.onnx_ids[k] if k < len(check.onnx_ids) else "(ended)"
                ref_id = check.reference_ids[k] if k < len(check.reference_ids) else "(ended)"
                problems.append(
                    f"prompt {i} ({check.prompt_tokens} tokens): greedy ids differ at new token "
                    f"{k}: ONNX {onnx_id}, PyTorch {ref_id}"
                )
    if problems:
        summary = "validation failed: " + "; ".join(problems)
    else:
        worst = max(o.max_abs_diff for o in outputs)
        extra = (
            f", top-1 agreement {top1:.3f}, perplexity ratio {ratio:.3f}"
            if top1 is not None and ratio is not None
            else f", {len(checks)} prompt(s) × {new_tokens} greedy tokens identical to PyTorch"
        )
        summary = f"first-step logits max abs diff {worst:.3e}{extra}"
    return GenerationVerdict(
        passed=not problems,
        summary=summary,
        outputs=outputs,
        checks=checks,
        top1_agreement=None if top1 is None else round(top1, 4),
        perplexity_ratio=None if ratio is None else round(ratio, 4),
    )
