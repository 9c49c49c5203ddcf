"""The tiny test models are real, loadable, deterministic Hugging Face checkpoints."""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path

import pytest

from modelmora.testing.tiny_models import (
    TINY_BERT_CONFIG,
    TINY_SENTENCES,
    make_tiny_bert,
    make_tiny_classifier,
)

pytest.importorskip("transformers", reason="tiny models need the [convert] extra")


def _digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


def test_tiny_bert_layout_matches_sentence_transformers(tmp_path: Path) -> None:
    out = make_tiny_bert(tmp_path / "bert")
    files = set(_digests(out))
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "vocab.txt",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "modules.json",
        "1_Pooling/config.json",
        "sentence_bert_config.json",
    } <= files
    modules = json.loads((out / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[-1] for m in modules] == [
        "Transformer",
        "Pooling",
        "Normalize",
    ]
    pooling = json.loads((out / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_mean_tokens"] is True
    assert pooling["word_embedding_dimension"] == TINY_BERT_CONFIG["hidden_size"]
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["BertModel"]
    for p in out.rglob("*"):
        if p.is_file():
            assert stat.S_IMODE(p.stat().st_mode) == 0o644, p


def test_plain_bert_has_no_sentence_transformers_files(tmp_path: Path) -> None:
    out = make_tiny_bert(tmp_path / "bert", sentence_transformers=False)
    assert not (out / "modules.json").exists()
    assert (out / "model.safetensors").is_file()


def test_same_seed_same_bytes_other_seed_other_weights(tmp_path: Path) -> None:
    a = _digests(make_tiny_bert(tmp_path / "a", seed=3))
    b = _digests(make_tiny_bert(tmp_path / "b", seed=3))
    c = _digests(make_tiny_bert(tmp_path / "c", seed=4))
    assert a == b
    assert a["model.safetensors"] != c["model.safetensors"]
    assert a["tokenizer.json"] == c["tokenizer.json"]


def test_fixed_sentences_tokenize_to_known_words(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(make_tiny_bert(tmp_path / "bert"))
    assert len(tok) == TINY_BERT_CONFIG["vocab_size"]
    for sentence in TINY_SENTENCES:
        ids = tok(sentence)["input_ids"]
        assert tok.unk_token_id not in ids, sentence
        assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id


def test_classifier_loads_with_labels(tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    out = make_tiny_classifier(tmp_path / "clf", labels=("bad", "ok", "good"))
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.id2label == {0: "bad", 1: "ok", 2: "good"}
    assert json.loads((out / "config.json").read_text())["architectures"] == [
        "BertForSequenceClassification"
    ]


def test_classifier_rejects_duplicate_labels(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="distinct"):
        make_tiny_classifier(tmp_path / "x", labels=("a", "a"))
