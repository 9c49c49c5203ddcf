"""Tiny, seeded models for tests: built locally, never downloaded.

A tiny BERT (2 layers, hidden 32, 1000-token WordPiece vocab of plain English words) exports
to ONNX and validates in well under a second, so tests can exercise the real pipeline
(save_pretrained → optimum export → ORT) without network or a 90 MB checkpoint.

Building a model costs a torch + transformers import (seconds). The bytes of every model
built in this process are kept in memory, keyed by the arguments, so later calls only write
files; the same arguments always give the same bytes.

:func:`linear_onnx` is smaller still: a three-node ONNX graph for tests of sources and
installs, which need real, loadable model bytes but no tokenizer or framework.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "DIFFUSION_SCHEDULERS",
    "IMAGE_LABELS",
    "LINEAR_B",
    "LINEAR_W",
    "TINY_BERT_CONFIG",
    "TINY_CHAT_TEMPLATE",
    "TINY_PROMPTS",
    "TINY_SENTENCES",
    "linear_onnx",
    "make_tiny_bert",
    "make_tiny_causal_lm",
    "make_tiny_classifier",
    "make_tiny_clip",
    "make_tiny_diffusion",
    "make_tiny_image_classifier",
    "make_tiny_siglip",
]

LINEAR_W: npt.NDArray[np.float32] = (
    np.arange(12, dtype=np.float32).reshape(4, 3) / 10 - 0.5
).astype(np.float32)
"""Default weights of :func:`linear_onnx` (4 inputs → 3 outputs)."""
LINEAR_B: npt.NDArray[np.float32] = np.array([0.1, -0.2, 0.3], dtype=np.float32)
"""Bias of :func:`linear_onnx`: ``y = tanh(x @ w + LINEAR_B)``."""

TINY_BERT_CONFIG: dict[str, Any] = {
    "vocab_size": 1000,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 512,
}

TINY_SENTENCES: tuple[str, ...] = (
    "The quick brown fox jumps over the lazy dog.",
    "A model is only as good as the data it was trained on.",
    "Where is the nearest train station?",
    "I love this movie, it was great!",
)

_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

# Plain English words so that the fixed validation sentences tokenize to real tokens rather
# than a row of [UNK]s (which would make every position identical and hide bugs).
_WORD_LINES = (
    "the a an and or but if then else of to in on at by for with from as is are was were",
    "be been being have has had do does did will would can could should may might must",
    "shall not no yes this that these those it its i you he she we they me him her us",
    "them my your his our their what which who whom whose where when why how all any both",
    "each few more most other some such only own same so than too very just also now here",
    "there up down out over under again further once about above below between into",
    "through during before after off quick brown fox jumps jump lazy dog cat model models",
    "data trained train training test tests good bad great love like hate movie film book",
    "music song station nearest near far city town road street house home car bus time",
    "day night week year people man woman child world life hand part place case point",
    "number group problem fact work school state family student country question company",
    "system program government story water room mother area money month lot right left",
    "new old big small large long short high low early late young important public same",
    "able last first next hello thanks please sorry okay fine happy sad angry calm fast",
    "slow hot cold warm cool light dark red green blue black white yellow one two three",
    "four five six seven eight nine ten make made go went gone get got see saw seen know",
    "knew think thought take took come came give gave find found tell told ask asked use",
    "used want wanted look looked need needed feel felt try tried leave left call called",
    "keep kept let begin began seem seemed help helped show showed hear heard play played",
    "run ran move moved live lived believe bring brought happen write wrote sit sat stand",
    "stood lose lost pay paid meet met include continue set learn change lead understand",
    "watch follow stop create speak read spend grow open walk win offer remember consider",
    "appear buy wait serve die send expect build stay fall cut reach kill remain suggest",
    "raise pass sell require report decide pull embedding embeddings sentence sentences",
    "text word words vector vectors search query document documents similar similarity",
    "language english machine learning neural network onnx runtime fast faster server",
    "serve request response batch",
)


def _vocab() -> list[str]:
    """A deterministic 1000-entry WordPiece vocabulary (specials, words, characters, pieces)."""
    tokens: list[str] = list(_SPECIALS)
    seen = set(tokens)

    def add(tok: str) -> None:
        if tok not in seen:
            seen.add(tok)
            tokens.append(tok)

    for ch in ".,!?;:'\"-()0123456789abcdefghijklmnopqrstuvwxyz":
        add(ch)
    for ch in "abcdefghijklmnopqrstuvwxyz":
        add("##" + ch)
    for suffix in ("s", "es", "ed", "ing", "er", "est", "ly", "tion", "ment", "ness"):
        add("##" + suffix)
    for word in " ".join(_WORD_LINES).split():
        add(word)
    size = int(TINY_BERT_CONFIG["vocab_size"])
    i = 0
    while len(tokens) < size:
        add(f"[unused{i}]")
        i += 1
    return tokens[:size]


_CACHE: dict[tuple[Any, ...], dict[str, bytes]] = {}


def _import_transformers() -> Any:
    # TF (the optional [tf] extra) makes transformers try Keras 3 and fail; we never need it.
    os.environ.setdefault("USE_TF", "0")
    import transformers

    return transformers


def _snapshot(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _materialize(key: tuple[Any, ...], build: Callable[[Path], None], dest: Path) -> Path:
    files = _CACHE.get(key)
    if files is None:
        with tempfile.TemporaryDirectory(prefix="modelmora-tiny-") as tmp:
            build(Path(tmp))
            files = _snapshot(Path(tmp))
        _CACHE[key] = files
    dest.mkdir(parents=True, exist_ok=True)
    for rel, data in files.items():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        # save_pretrained writes 0600; a server running as another user must read them.
        target.chmod(0o644)
    return dest


def _save_tokenizer(tf: Any, out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        vocab_file = Path(tmp) / "vocab.txt"
        vocab_file.write_text("\n".join(_vocab()) + "\n", encoding="utf-8")
        tok = tf.BertTokenizerFast(vocab_file=str(vocab_file), do_lower_case=True)
        tok.model_max_length = int(TINY_BERT_CONFIG["max_position_embeddings"])
        tok.save_pretrained(str(out))


def _write_json(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _sentence_transformers_files(out: Path) -> None:
    """The module layout of sentence-transformers/all-MiniLM-L6-v2 (mean pooling + L2 norm)."""
    _write_json(
        out / "modules.json",
        [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {
                "idx": 1,
                "name": "1",
                "path": "1_Pooling",
                "type": "sentence_transformers.models.Pooling",
            },
            {
                "idx": 2,
                "name": "2",
                "path": "2_Normalize",
                "type": "sentence_transformers.models.Normalize",
            },
        ],
    )
    _write_json(
        out / "1_Pooling" / "config.json",
        {
            "word_embedding_dimension": TINY_BERT_CONFIG["hidden_size"],
            "pooling_mode_cls_token": False,
            "pooling_mode_mean_tokens": True,
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
        },
    )
    _write_json(out / "sentence_bert_config.json", {"max_seq_length": 128, "do_lower_case": False})


def _build_bert(out: Path, seed: int, sentence_transformers: bool) -> None:
    import torch

    tf = _import_transformers()
    torch.manual_seed(seed)
    model = tf.BertModel(tf.BertConfig(**TINY_BERT_CONFIG)).eval()
    model.save_pretrained(str(out), safe_serialization=True)
    _save_tokenizer(tf, out)
    if sentence_transformers:
        _sentence_transformers_files(out)


def _build_classifier(out: Path, seed: int, labels: Sequence[str]) -> None:
    import torch

    tf = _import_transformers()
    torch.manual_seed(seed)
    config = tf.BertConfig(
        **TINY_BERT_CONFIG,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    model = tf.BertForSequenceClassification(config).eval()
    model.save_pretrained(str(out), safe_serialization=True)
    _save_tokenizer(tf, out)


def make_tiny_bert(dest: Path, *, seed: int = 0, sentence_transformers: bool = True) -> Path:
    """Write a tiny ``BertModel`` + tokenizer (+ sentence-transformers config) into ``dest``.

    The layout mirrors sentence-transformers/all-MiniLM-L6-v2 so that task detection,
    pooling and serving code paths see what they would see for the real model.
    """
    key = ("bert", seed, sentence_transformers)
    return _materialize(key, lambda out: _build_bert(out, seed, sentence_transformers), dest)


def make_tiny_classifier(
    dest: Path, *, labels: Sequence[str] = ("negative", "positive"), seed: int = 0
) -> Path:
    """Write a tiny ``BertForSequenceClassification`` (``id2label`` from ``labels``) + tokenizer."""
    if len(labels) < 2 or len(set(labels)) != len(labels):
        raise ValueError(f"labels must be at least two distinct names, got {list(labels)!r}")
    key = ("classifier", seed, tuple(labels))
    return _materialize(key, lambda out: _build_classifier(out, seed, labels), dest)


IMAGE_LABELS = ("cat", "dog", "bird", "fish", "horse")

# Image classifier families, each with a tiny config and the image processor its
# checkpoints ship (the preprocessing differs: exact resize, shortest edge + crop_pct).
_IMAGE_CLASSIFIERS: dict[str, tuple[str, str, dict[str, Any], dict[str, Any]]] = {
    "vit": (
        "ViTForImageClassification",
        "ViTImageProcessor",
        {
            "image_size": 32,
            "patch_size": 8,
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 64,
        },
        {
            "size": {"height": 32, "width": 32},
            "image_mean": [0.5, 0.4, 0.3],
            "image_std": [0.2, 0.25, 0.3],
        },
    ),
    "convnext": (
        "ConvNextForImageClassification",
        "ConvNextImageProcessor",
        {
            "num_channels": 3,
            "hidden_sizes": [8, 16],
            "depths": [1, 1],
            "num_stages": 2,
            "image_size": 32,
        },
        {"size": {"shortest_edge": 32}, "crop_pct": 0.875},
    ),
    "resnet": (
        "ResNetForImageClassification",
        "ConvNextImageProcessor",
        {
            "num_channels": 3,
            "embedding_size": 8,
            "hidden_sizes": [8, 16],
            "depths": [1, 1],
            "layer_type": "basic",
        },
        {"size": {"shortest_edge": 40}, "crop_pct": 0.875, "resample": 3},
    ),
}


def _build_image_classifier(out: Path, family: str, seed: int) -> None:
    import torch

    tf = _import_transformers()
    model_cls, processor_cls, config, processor = _IMAGE_CLASSIFIERS[family]
    torch.manual_seed(seed)
    labels = dict(enumerate(IMAGE_LABELS))
    cfg = getattr(tf, model_cls).config_class(
        **config,
        num_labels=len(labels),
        id2label=labels,
        label2id={v: k for k, v in labels.items()},
    )
    getattr(tf, model_cls)(cfg).eval().save_pretrained(str(out), safe_serialization=True)
    getattr(tf, processor_cls)(**processor).save_pretrained(str(out))


def make_tiny_image_classifier(dest: Path, *, family: str = "vit", seed: int = 0) -> Path:
    """Write a tiny image classifier (``vit``, ``convnext`` or ``resnet``; five labels,
    :data:`IMAGE_LABELS`) and its ``preprocessor_config.json`` into ``dest``."""
    if family not in _IMAGE_CLASSIFIERS:
        raise ValueError(f"family must be one of {', '.join(_IMAGE_CLASSIFIERS)}, got {family!r}")
    key = ("image-classifier", family, seed)
    return _materialize(key, lambda out: _build_image_classifier(out, family, seed), dest)


def _tagged_tokenizer(tf: Any, vocab_size: int, max_length: int) -> Any:
    """The byte-level tokenizer, each text framed as ``<|im_start|> … <|endoftext|>`` and
    padded with ``<|endoftext|>`` (CLIP's convention: the first end token is pooled)."""
    from tokenizers import processors

    tok = _byte_level_tokenizer(vocab_size)
    tok.post_processor = processors.TemplateProcessing(
        single="<|im_start|> $A <|endoftext|>",
        special_tokens=[("<|im_start|>", 1), ("<|endoftext|>", 0)],
    )
    return tf.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        model_max_length=max_length,
    )


_DUAL_TEXT: dict[str, Any] = {
    "vocab_size": 1000,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
}
_DUAL_VISION: dict[str, Any] = {
    "image_size": 32,
    "patch_size": 8,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
}


def _build_clip(out: Path, seed: int) -> None:
    import torch

    tf = _import_transformers()
    torch.manual_seed(seed)
    text = _DUAL_TEXT | {
        "max_position_embeddings": 32,
        "bos_token_id": 1,
        "eos_token_id": 0,
        "pad_token_id": 0,
    }
    config = tf.CLIPConfig(text_config=text, vision_config=_DUAL_VISION, projection_dim=16)
    tf.CLIPModel(config).eval().save_pretrained(str(out), safe_serialization=True)
    _tagged_tokenizer(tf, 1000, 32).save_pretrained(str(out))
    processor = {"size": {"shortest_edge": 32}, "crop_size": {"height": 32, "width": 32}}
    tf.CLIPImageProcessor(**processor).save_pretrained(str(out))


def _build_siglip(out: Path, seed: int) -> None:
    import torch

    tf = _import_transformers()
    torch.manual_seed(seed)
    text = _DUAL_TEXT | {"max_position_embeddings": 16}
    config = tf.SiglipConfig(text_config=text, vision_config=_DUAL_VISION)
    tf.SiglipModel(config).eval().save_pretrained(str(out), safe_serialization=True)
    _tagged_tokenizer(tf, 1000, 16).save_pretrained(str(out))
    tf.SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(str(out))


def make_tiny_clip(dest: Path, *, seed: int = 0) -> Path:
    """Write a tiny CLIP dual encoder (text and image towers, 16-dim shared space), its
    tokenizer (``tokenizer.json``) and ``preprocessor_config.json`` into ``dest``."""
    return _materialize(("clip", seed), lambda out: _build_clip(out, seed), dest)


def make_tiny_siglip(dest: Path, *, seed: int = 0) -> Path:
    """Write a tiny SigLIP dual encoder (its text tower pools the last position, so texts are
    padded to its full 16-token context), a tokenizer and ``preprocessor_config.json``."""
    return _materialize(("siglip", seed), lambda out: _build_siglip(out, seed), dest)


DIFFUSION_SCHEDULERS = ("ddim", "euler", "pndm")


def _build_diffusion(out: Path, scheduler: str, seed: int, width: int, sample_size: int) -> None:
    import importlib

    import torch

    d: Any = importlib.import_module("diffusers")  # untyped to mypy: decorated constructors
    tf = _import_transformers()
    torch.manual_seed(seed)
    channels, groups, hidden = (width, 2 * width), width // 2, 2 * width
    unet = d.UNet2DConditionModel(
        block_out_channels=channels,
        layers_per_block=1,
        sample_size=sample_size,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=hidden,
        norm_num_groups=groups,
        attention_head_dim=width // 4,
    )
    vae = d.AutoencoderKL(
        block_out_channels=channels,
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=groups,
        sample_size=2 * sample_size,
    )
    encoder = tf.CLIPTextModel(
        tf.CLIPTextConfig(
            vocab_size=1000,
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=32,
            bos_token_id=1,
            eos_token_id=0,
            pad_token_id=0,
        )
    )
    common = {
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "steps_offset": 1,
    }
    schedulers = {
        "ddim": lambda: d.DDIMScheduler(**common, clip_sample=False, set_alpha_to_one=False),
        "euler": lambda: d.EulerDiscreteScheduler(**common),
        "pndm": lambda: d.PNDMScheduler(**common, skip_prk_steps=True, set_alpha_to_one=False),
    }
    pipe = d.StableDiffusionPipeline(
        vae=vae,
        text_encoder=encoder,
        tokenizer=_tagged_tokenizer(tf, 1000, 32),
        unet=unet,
        scheduler=schedulers[scheduler](),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(str(out))


def make_tiny_diffusion(
    dest: Path, *, scheduler: str = "ddim", seed: int = 0, width: int = 8, sample_size: int = 8
) -> Path:
    """Write a tiny Stable-Diffusion-style pipeline (text encoder, UNet and VAE; by default
    a few thousand parameters and 16×16 images) with a ``ddim``, ``euler`` or ``pndm``
    scheduler. ``width`` (channels of the first block) and ``sample_size`` (latent side;
    images are twice as large) make a bigger one for benchmarks."""
    if scheduler not in DIFFUSION_SCHEDULERS:
        raise ValueError(f"scheduler must be one of {', '.join(DIFFUSION_SCHEDULERS)}")
    key = ("diffusion", scheduler, seed, width, sample_size)
    return _materialize(
        key, lambda out: _build_diffusion(out, scheduler, seed, width, sample_size), dest
    )


TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""A ChatML template, as Qwen2 checkpoints ship it (``tokenizer_config.json`` ``chat_template``)."""

TINY_PROMPTS: tuple[str, ...] = (
    "Hello",
    "The quick brown fox jumps over the lazy dog.",
    "Where is the nearest train station? I need to get to the city before the night.",
)

_LM_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")

# Families of decoder-only LMs the converter supports, with a tiny config for each.
_CAUSAL_LM_CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "llama": ("LlamaForCausalLM", {"model_type": "llama"}),
    "qwen2": ("Qwen2ForCausalLM", {"model_type": "qwen2"}),
    "mistral": ("MistralForCausalLM", {"model_type": "mistral", "sliding_window": None}),
    "phi3": ("Phi3ForCausalLM", {"model_type": "phi3", "pad_token_id": 0}),
}


def _byte_level_tokenizer(vocab_size: int) -> Any:
    """A byte-level BPE tokenizer trained on this module's word list: deterministic bytes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(_LM_SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [*_WORD_LINES, *TINY_SENTENCES, *TINY_PROMPTS]
    tok.train_from_iterator(corpus * 4, trainer=trainer)
    return tok


def _build_causal_lm(out: Path, family: str, seed: int, size: dict[str, int]) -> None:
    import torch

    tf = _import_transformers()
    arch, extra = _CAUSAL_LM_CONFIGS[family]
    if size["sliding_window"]:
        extra = {**extra, "sliding_window": size["sliding_window"], "use_sliding_window": True}
    tokenizer = _byte_level_tokenizer(min(size["vocab_size"], 600))
    eos = tokenizer.token_to_id("<|endoftext|>")
    config_cls = tf.AutoConfig.for_model(extra["model_type"]).__class__
    config = config_cls(
        **{k: v for k, v in extra.items() if k != "model_type"},
        vocab_size=size["vocab_size"],
        hidden_size=size["hidden_size"],
        intermediate_size=size["hidden_size"] * 2,
        num_hidden_layers=size["layers"],
        num_attention_heads=size["heads"],
        num_key_value_heads=size["kv_heads"],
        max_position_embeddings=size["max_positions"],
        bos_token_id=eos,
        eos_token_id=eos,
        tie_word_embeddings=False,
        architectures=[arch],
    )
    torch.manual_seed(seed)
    model = getattr(tf, arch)(config).eval()
    # Random weights at init scale give near-uniform logits, where greedy decoding hinges on
    # float noise; a larger output head makes the argmax well separated, as in real models.
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)
    model.save_pretrained(str(out), safe_serialization=True)
    fast = tf.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        model_max_length=size["max_positions"],
    )
    fast.chat_template = TINY_CHAT_TEMPLATE
    fast.save_pretrained(str(out))
    tf.GenerationConfig(bos_token_id=eos, eos_token_id=eos, pad_token_id=eos).save_pretrained(
        str(out)
    )


def make_tiny_causal_lm(
    dest: Path,
    *,
    family: str = "llama",
    seed: int = 0,
    vocab_size: int = 512,
    hidden_size: int = 32,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    max_positions: int = 256,
    sliding_window: int | None = None,
) -> Path:
    """Write a tiny random decoder-only LM (``family``: llama, qwen2, mistral, phi3) with a
    byte-level BPE tokenizer and a ChatML chat template into ``dest``.

    Grouped-query attention (``kv_heads`` < ``heads``) is on by default, as in the real
    families. ``bench/generate.py`` builds a larger one (4 layers, hidden 256, vocab 8192)
    so that compute dominates; the tokenizer never has more than 600 tokens (the rest of the
    vocabulary exists in the weights only). ``sliding_window`` (mistral, qwen2) limits
    attention to that many past positions, as Mistral-7B does with 4096.
    """
    if family not in _CAUSAL_LM_CONFIGS:
        raise ValueError(f"family must be one of {sorted(_CAUSAL_LM_CONFIGS)}, got {family!r}")
    size = {
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "layers": layers,
        "heads": heads,
        "kv_heads": kv_heads,
        "max_positions": max_positions,
        "sliding_window": sliding_window or 0,
    }
    key = ("causal-lm", family, seed, tuple(sorted(size.items())))
    return _materialize(key, lambda out: _build_causal_lm(out, family, seed, size), dest)


def linear_onnx(w: npt.NDArray[np.float32] = LINEAR_W) -> bytes:
    """``y = tanh(x @ w + LINEAR_B)``, ``x`` of shape ``(batch, 4)``, opset 18, as bytes.

    Deterministic, so tests can compare digests; pass other weights of the same shape
    (e.g. ``LINEAR_W * 2``) for a file of the same size with other bytes, the case a
    registry that changed behind a lock produces.
    """
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["z"]),
            helper.make_node("Tanh", ["z"], ["y"]),
        ],
        "tiny-linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(LINEAR_B, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def positions_onnx(max_positions: int = 64) -> bytes:
    """A graph that adds a position table of ``max_positions`` entries, sliced to the
    sequence length, to ``input_ids`` (``(batch, seq)``, int64), as a BERT adds its position
    embeddings: a longer sequence makes ONNX Runtime fail (the shapes no longer broadcast),
    the way a real model does."""
    from onnx import TensorProto, helper, numpy_helper

    table = np.arange(max_positions, dtype=np.float32) / max_positions
    graph = helper.make_graph(
        [
            helper.make_node("Shape", ["input_ids"], ["shape"], start=1, end=2),
            helper.make_node("Slice", ["table", "zero", "shape", "zero"], ["positions"]),
            helper.make_node("Cast", ["input_ids"], ["ids"], to=TensorProto.FLOAT),
            helper.make_node("Add", ["ids", "positions"], ["summed"]),
            helper.make_node("ReduceSum", ["summed", "axes"], ["y"], keepdims=0),
        ],
        "tiny-positions",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch"])],
        initializer=[
            numpy_helper.from_array(table, "table"),
            numpy_helper.from_array(np.array([0], dtype=np.int64), "zero"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axes"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def check_linear_install(install_json: str) -> Path:
    """Check what ``modelmora install --json`` reported for a source serving :func:`linear_onnx`.

    The registry tests share the end of their story: convert and validate ok, the ONNX passed
    through byte for byte, and the installed file computes ``tanh(x @ w + b)`` in ONNX
    Runtime. Returns the installed ``model.onnx`` for any further checks.
    """
    import onnxruntime as ort

    model = json.loads(install_json)["models"][0]
    stages = model["stages"]
    assert stages["convert"] == "ok" and stages["validate"] == "ok", model
    artifact = model["artifacts"][0]
    assert artifact["validated"] is True and artifact["max_abs_diff"] == 0.0, artifact
    onnx_path = Path(artifact["path"]) / "model.onnx"
    assert onnx_path.read_bytes() == linear_onnx(), "the ONNX file was not passed through"
    x = np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)
    (y,) = ort.InferenceSession(str(onnx_path)).run(None, {"x": x})
    np.testing.assert_allclose(y, np.tanh(x @ LINEAR_W + LINEAR_B), atol=1e-6)
    return onnx_path
