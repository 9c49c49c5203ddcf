"""``genai_config.json``: how ONNX Runtime GenAI runs a decoder graph we exported.

ONNX Runtime GenAI's own model builder needs a newer transformers than optimum-onnx allows
(docs/architecture.md, "Text generation"), so the graph comes from optimum's
``text-generation-with-past`` export and this module describes it to GenAI's C++ generation
loop: input/output names of the KV cache, head counts and the context length, and that past
and present are separate buffers (optimum's graph concatenates; it has no shared-buffer
attention op).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from modelmora.decoding import context_length, eos_ids
from modelmora.errors import UserInputError

__all__ = ["GENAI_CONFIG", "genai_config", "write_genai_config"]

GENAI_CONFIG = "genai_config.json"


def _int(config: dict[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = config.get(key)
        if isinstance(value, int) and value > 0:
            return value
    return None


def genai_config(model_dir: Path, *, name: str, model_file: str = "model.onnx") -> dict[str, Any]:
    """The GenAI configuration for the exported graph, from the checkpoint's config files."""
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    gen_file = model_dir / "generation_config.json"
    generation = json.loads(gen_file.read_text(encoding="utf-8")) if gen_file.is_file() else {}
    eos_list = eos_ids(model_dir) or [0]
    eos: int | list[int] = eos_list if len(eos_list) > 1 else eos_list[0]
    first_eos = eos_list[0]
    hidden = _int(config, "hidden_size", "n_embd")
    heads = _int(config, "num_attention_heads", "n_head")
    layers = _int(config, "num_hidden_layers", "n_layer")
    context = context_length(config)
    if not (hidden and heads and layers and context):
        raise UserInputError(
            f"model '{name}': config.json lacks hidden_size, num_attention_heads, "
            "num_hidden_layers or max_position_embeddings; cannot describe the decoder"
        )
    kv_heads = _int(config, "num_key_value_heads") or heads
    head_size = _int(config, "head_dim") or hidden // heads
    pad = generation.get("pad_token_id", config.get("pad_token_id"))
    return {
        "model": {
            "type": str(config.get("model_type") or "llama"),
            "vocab_size": int(config["vocab_size"]),
            "context_length": context,
            "bos_token_id": int(config.get("bos_token_id") or first_eos),
            "eos_token_id": eos,
            "pad_token_id": int(pad) if isinstance(pad, int) else first_eos,
            "decoder": {
                "filename": model_file,
                "session_options": {"log_id": "modelmora", "provider_options": []},
                "head_size": head_size,
                "hidden_size": hidden,
                "num_attention_heads": heads,
                "num_key_value_heads": kv_heads,
                "num_hidden_layers": layers,
                "inputs": {
                    "input_ids": "input_ids",
                    "attention_mask": "attention_mask",
                    "position_ids": "position_ids",
                    "past_key_names": "past_key_values.%d.key",
                    "past_value_names": "past_key_values.%d.value",
                },
                "outputs": {
                    "logits": "logits",
                    "present_key_names": "present.%d.key",
                    "present_value_names": "present.%d.value",
                },
            },
        },
        "search": {
            "do_sample": False,
            "num_beams": 1,
            "num_return_sequences": 1,
            "max_length": context,
            "min_length": 0,
            "top_k": 1,
            "top_p": 1.0,
            "temperature": 1.0,
            "repetition_penalty": 1.0,
            "length_penalty": 1.0,
            "no_repeat_ngram_size": 0,
            "diversity_penalty": 0.0,
            "early_stopping": True,
            "past_present_share_buffer": False,
        },
    }


def write_genai_config(model_dir: Path, out_dir: Path, *, name: str) -> None:
    payload = genai_config(model_dir, name=name)
    (out_dir / GENAI_CONFIG).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
